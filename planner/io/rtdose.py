"""DICOM RT Dose: write the plan's dose grid, and read one back.

The dose of the whole plan (all fractions, ``DoseSummationType`` PLAN) on the patient grid,
32-bit unsigned pixels times ``DoseGridScaling``, referencing its RT Plan and sharing the CT's
patient, study and frame of reference.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dose.grid import Grid
from planner.errors import InputError
from planner.io._atomic import write_file_atomic
from planner.io._dicom import first_line, format_ds, new_dataset, read_modality, save
from planner.io.ct import AXIAL_ORIENTATION, ORIENTATION_TOLERANCE
from planner.io.rtplan import RT_PLAN_STORAGE
from planner.patient import DicomReferences

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"  # DICOM PS3.4 Annex B.5


def write_rt_dose(path: str | Path, dose_gy: np.ndarray, grid: Grid, refs: DicomReferences, *,
                  rt_plan_sop_instance_uid: str, sop_instance_uid: str | None = None,
                  series_number: int = 1, bits_allocated: int = 32,
                  overwrite: bool = False) -> str:
    """Write the plan dose as a DICOM RT Dose file (atomically).

    Parameters
    ----------
    path : str or Path
        The file to write.
    dose_gy : (nz, ny, nx) float array, Gy
        Dose of the whole plan (all fractions), non-negative, on ``grid``.
    grid : Grid
        Voxel centres; ``origin_mm`` is (z, y, x) and becomes ImagePositionPatient (x, y, z).
    refs : DicomReferences
        Patient, study and frame of reference of the CT the dose belongs to.
    rt_plan_sop_instance_uid : str
        SOP Instance UID of the RT Plan that delivers this dose (ReferencedRTPlanSequence).
    sop_instance_uid : str, optional
        UID of the new RT Dose (a new one by default).
    series_number : int
    bits_allocated : {32, 16}
        Unsigned pixel size. 32 bits resolve 70 Gy to 2e-8 Gy; 16 bits to about 1e-3 Gy, and
        suit readers that cannot take 32-bit pixels (dicom3tools' dciodvfy stops on them).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    str
        The RT Dose's SOP Instance UID.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is false.
    ValueError
        ``dose_gy`` does not match ``grid`` or holds negative or non-finite values, or
        ``bits_allocated`` is neither 16 nor 32.
    """
    if bits_allocated not in (16, 32):
        raise ValueError(f"bits_allocated must be 16 or 32, got {bits_allocated}")
    max_pixel = 2**bits_allocated - 1
    dose = np.asarray(dose_gy, dtype=np.float64)
    if dose.shape != grid.shape:
        raise ValueError(f"dose shape {dose.shape} differs from grid {grid.shape}")
    if not np.all(np.isfinite(dose)) or dose.min() < 0:
        raise ValueError("dose must be finite and non-negative")
    uid = sop_instance_uid or generate_uid()
    ds = new_dataset(refs, sop_class_uid=RT_DOSE_STORAGE, sop_instance_uid=uid, modality="RTDOSE",
                     series_instance_uid=generate_uid(), series_number=series_number,
                     created=datetime.now())
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = refs.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1

    (z0, y0, x0), (dz, dy, dx), (nz, ny, nx) = grid.origin_mm, grid.spacing_mm, grid.shape
    ds.ImagePositionPatient = [format_ds(x0), format_ds(y0), format_ds(z0)]
    ds.ImageOrientationPatient = list(AXIAL_ORIENTATION)  # the only orientation Grid describes
    ds.PixelSpacing = [format_ds(dy), format_ds(dx)]  # row spacing (y), column spacing (x)
    ds.SliceThickness = format_ds(dz)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns, ds.NumberOfFrames = ny, nx, nz
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    # Relative offsets (first value 0), the form every reader must accept (PS3.3 C.8.8.3.2).
    ds.GridFrameOffsetVector = [format_ds(k * dz) for k in range(nz)]
    ds.BitsAllocated = ds.BitsStored = bits_allocated
    ds.HighBit = bits_allocated - 1
    ds.PixelRepresentation = 0

    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    # The scaling is written as a decimal string first and the pixels are quantised with the
    # value a reader will parse back, so a round trip loses at most half a quantum.
    peak = float(dose.max())
    scaling = float(format_ds(peak / max_pixel)) if peak > 0 else 1.0
    while np.rint(peak / scaling) > max_pixel:  # DS rounding made the quantum a hair too small
        scaling = float(format_ds(scaling * (1 + 1e-6)))
    ds.DoseGridScaling = format_ds(scaling)
    plan = Dataset()
    plan.ReferencedSOPClassUID = RT_PLAN_STORAGE
    plan.ReferencedSOPInstanceUID = rt_plan_sop_instance_uid
    ds.ReferencedRTPlanSequence = [plan]
    ds.PixelData = np.rint(dose / scaling).astype(f"<u{bits_allocated // 8}").tobytes()

    write_file_atomic(Path(path), lambda tmp: save(ds, tmp), overwrite=overwrite)
    return uid


def read_rt_dose(path: str | Path) -> tuple[np.ndarray, Grid]:
    """Read an axial RT Dose file into a dose array and its grid.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    dose_gy : (nz, ny, nx) float64 array, Gy
        Pixels times DoseGridScaling, slices in increasing z.
    grid : Grid

    Raises
    ------
    InputError
        ``"<path>: ..."`` when the file is not a readable RT Dose in Gy on an axial grid with
        evenly spaced frames.
    """
    path = Path(path)
    ds = read_modality(path, "RTDOSE", "RT Dose")
    if ds.get("DoseUnits") != "GY":
        raise InputError(f"{path}: dose units {ds.get('DoseUnits')!r}, planner reads GY only")
    orientation = np.asarray(ds.ImageOrientationPatient, dtype=float)
    if not np.allclose(orientation, AXIAL_ORIENTATION, atol=ORIENTATION_TOLERANCE):
        raise InputError(f"{path}: image orientation {orientation.tolist()} is not axial "
                         f"{list(AXIAL_ORIENTATION)}")
    try:
        pixels = ds.pixel_array
    except Exception as error:
        raise InputError(f"{path}: unreadable dose pixels ({first_line(error)})") from error
    dose = pixels.reshape(-1, int(ds.Rows), int(ds.Columns)) * float(ds.DoseGridScaling)
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    offsets = np.asarray(ds.get("GridFrameOffsetVector", [0.0]), dtype=float)
    if offsets.size != dose.shape[0]:
        raise InputError(f"{path}: {offsets.size} frame offsets for {dose.shape[0]} frames")
    # A first offset of 0 means offsets relative to the image position, else absolute z.
    z = z0 + offsets if offsets[0] == 0 else offsets
    order = np.argsort(z)
    dose, z = dose[order], z[order]
    steps = np.diff(z)
    dz = float(steps.mean()) if steps.size else float(ds.get("SliceThickness") or 1.0)
    if steps.size and (dz <= 0 or not np.allclose(steps, dz, atol=1e-3)):
        raise InputError(f"{path}: frames are not evenly spaced in z ({np.unique(steps)} mm)")
    dy, dx = (float(v) for v in ds.PixelSpacing)
    grid = Grid((float(z[0]), y0, x0), (dz, dy, dx), dose.shape)
    return dose, grid
