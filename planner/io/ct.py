"""Read and write a DICOM CT series (one file per axial slice).

Supported images: CT Image Storage, one frame per file, axial and head-first with
``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]`` (rows along +x, columns along +y), no gantry
tilt, evenly spaced slices without gaps, the same size and pixel spacing in every slice. Anything
else is an :class:`~planner.errors.InputError` naming the file and the problem; planner does not
resample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from dose.grid import Grid
from planner.errors import InputError
from planner.io._dicom import (
    CT_IMAGE_STORAGE,
    first_line,
    format_ds,
    new_dataset,
    read_dicom,
    save,
)
from planner.patient import DicomReferences

AXIAL_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
# Direction cosines are written with about 6 decimals; 1e-4 allows that rounding and nothing
# else (1e-4 rad is 0.006 degrees).
ORIENTATION_TOLERANCE = 1e-4
# Positions and spacings are compared to 0.01 mm: scanners write them with 0.001 mm or finer,
# and 0.01 mm is far below any voxel size.
POSITION_TOLERANCE_MM = 0.01
HU_STORAGE_RANGE = (-32768, 32767)  # int16 pixels, slope 1, intercept 0


@dataclass(frozen=True)
class CtSeries:
    """A CT series read from DICOM.

    Parameters
    ----------
    grid : Grid
        The voxel grid; slice ``k`` of ``hu`` is the slice read from ``paths[k]``.
    hu : (nz, ny, nx) float32 array, HU
        Stored pixel values times RescaleSlope plus RescaleIntercept, slice by slice.
    paths : tuple of Path
        The file of each slice, in slice order (increasing z).
    references : DicomReferences
        Patient, study, frame of reference, series and slice SOP Instance UIDs.
    """

    grid: Grid
    hu: np.ndarray = field(repr=False)
    paths: tuple[Path, ...]
    references: DicomReferences


def _get(ds: Dataset, keyword: str, path: Path):
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError(f"{path}: missing {keyword}")
    return value


def _floats(ds: Dataset, keyword: str, path: Path, count: int) -> np.ndarray:
    value = _get(ds, keyword, path)
    try:
        values = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: {keyword} {value!r} is not numeric") from error
    if values.size != count:
        raise InputError(f"{path}: {keyword} has {values.size} values, expected {count}")
    return values


def _mm(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _rescale(ds: Dataset, path: Path) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept (type 1 in the CT Image module): a missing, zero or
    non-numeric one would turn every pixel into a wrong HU, and so a wrong dose."""
    values = []
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = _get(ds, keyword, path)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise InputError(f"{path}: {keyword} {str(value)!r} is not a number")
        values.append(number)
    if values[0] == 0.0:
        raise InputError(f"{path}: RescaleSlope is 0 (every pixel would read as "
                         f"{values[1]:g} HU)")
    return values[0], values[1]


@dataclass(frozen=True)
class _Slice:
    path: Path
    ds: Dataset
    position: np.ndarray  # ImagePositionPatient (x, y, z), mm
    rescale: tuple[float, float]  # (RescaleSlope, RescaleIntercept)


def _check_slice(path: Path, ds: Dataset) -> _Slice:
    """One file's own checks: class, orientation, tilt, patient position, rescale."""
    sop_class = _get(ds, "SOPClassUID", path)
    if sop_class != CT_IMAGE_STORAGE:
        raise InputError(f"{path}: not a CT image (SOP Class {sop_class})")
    if int(ds.get("NumberOfFrames", 1) or 1) != 1:
        raise InputError(f"{path}: multi-frame CT images are not supported")
    orientation = _floats(ds, "ImageOrientationPatient", path, 6)
    if np.max(np.abs(orientation - AXIAL_ORIENTATION)) > ORIENTATION_TOLERANCE:
        raise InputError(f"{path}: ImageOrientationPatient {_mm(orientation)} is not axial "
                         f"head-first [1, 0, 0, 0, 1, 0], the only orientation supported")
    tilt = float(ds.get("GantryDetectorTilt", 0) or 0)
    if abs(tilt) > ORIENTATION_TOLERANCE:
        raise InputError(f"{path}: gantry tilt {tilt:g} degrees (GantryDetectorTilt) is not "
                         f"supported")
    position = str(ds.get("PatientPosition", "") or "")
    if position and not position.startswith("HF"):
        raise InputError(f"{path}: patient position {position} is not head-first, the only "
                         f"position supported")
    return _Slice(path, ds, _floats(ds, "ImagePositionPatient", path, 3), _rescale(ds, path))


def _check_series(slices: Sequence[_Slice]) -> float:
    """Checks across slices (sorted by z); returns the slice spacing in mm."""
    first = slices[0]
    for key in ("SeriesInstanceUID", "FrameOfReferenceUID"):
        expected = _get(first.ds, key, first.path)
        for s in slices[1:]:
            if _get(s.ds, key, s.path) != expected:
                raise InputError(f"{s.path}: {key} {s.ds.get(key)} differs from {expected} of "
                                 f"{first.path} (mixed series)")
    size = (int(_get(first.ds, "Rows", first.path)), int(_get(first.ds, "Columns", first.path)))
    spacing = _floats(first.ds, "PixelSpacing", first.path, 2)
    for s in slices[1:]:
        other = (int(_get(s.ds, "Rows", s.path)), int(_get(s.ds, "Columns", s.path)))
        if other != size:
            raise InputError(f"{s.path}: image size {other[0]} x {other[1]} differs from "
                             f"{size[0]} x {size[1]} of {first.path}")
        other_spacing = _floats(s.ds, "PixelSpacing", s.path, 2)
        if np.max(np.abs(other_spacing - spacing)) > POSITION_TOLERANCE_MM / 10:
            raise InputError(f"{s.path}: pixel spacing {_mm(other_spacing)} mm differs from "
                             f"{_mm(spacing)} mm of {first.path}")
        # With the axial orientation the slice normal is z: every slice must sit on the
        # first one's (x, y), or the stack is sheared (tilted gantry, shifted slices).
        shift = s.position[:2] - first.position[:2]
        if np.max(np.abs(shift)) > POSITION_TOLERANCE_MM:
            raise InputError(f"{s.path}: slice position {_mm(s.position)} mm is not along the "
                             f"slice normal from {_mm(first.position)} mm of {first.path} "
                             f"(tilted or shifted slice)")
    if len(slices) == 1:
        thickness = first.ds.get("SpacingBetweenSlices") or first.ds.get("SliceThickness")
        if not thickness or float(thickness) <= 0:
            raise InputError(f"{first.path}: a single slice without SliceThickness")
        return float(thickness)
    z = np.array([s.position[2] for s in slices])
    steps = np.diff(z)
    duplicates = np.flatnonzero(steps < POSITION_TOLERANCE_MM)
    if duplicates.size:
        k = duplicates[0]
        raise InputError(f"{slices[k + 1].path}: same slice position z = {z[k + 1]:g} mm as "
                         f"{slices[k].path}")
    step = float(np.median(steps))
    for k, value in enumerate(steps):
        if abs(value - step) <= POSITION_TOLERANCE_MM:
            continue
        later = slices[k + 1].path
        missing = round(value / step) - 1
        if missing >= 1 and abs(value - (missing + 1) * step) <= POSITION_TOLERANCE_MM:
            raise InputError(f"{later}: {missing} missing slice(s) before it: gap of {value:g} mm "
                             f"from z = {z[k]:g} mm, slices are {step:g} mm apart")
        raise InputError(f"{later}: slice spacing {value:g} mm differs from {step:g} mm")
    return float((z[-1] - z[0]) / (len(z) - 1))


def _hu(s: _Slice) -> np.ndarray:
    try:
        pixels = s.ds.pixel_array
    except Exception as error:  # decoders raise many types on truncated or odd pixel data
        raise InputError(f"{s.path}: cannot read the pixel data ({first_line(error)})") from error
    slope, intercept = s.rescale
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept))


def read_ct_series(paths: Sequence[Path]) -> CtSeries:
    """Read the CT slices ``paths`` (any order) into one grid of HU.

    Parameters
    ----------
    paths : sequence of Path
        One file per slice, all of one series.

    Returns
    -------
    CtSeries
        Slices sorted by position along the slice normal (z, increasing); HU as float32.
        ``references.patient_position`` is the series' PatientPosition, "HFS" when empty.

    Raises
    ------
    InputError
        Naming the file: unreadable, not CT, not axial head-first, gantry tilt, RescaleSlope or
        RescaleIntercept missing, non-numeric or (the slope) zero, slices from
        several series or frames of reference, differing image size or pixel spacing, slices
        off the slice normal, duplicate positions, a gap (missing slices), uneven spacing,
        undecodable pixel data.
    """
    if not paths:
        raise InputError("no CT slices given")
    slices = []
    for path in paths:
        slices.append(_check_slice(Path(path), read_dicom(Path(path))))
    slices.sort(key=lambda s: s.position[2])
    dz = _check_series(slices)
    first = slices[0]
    dy, dx = (float(v) for v in first.ds.PixelSpacing)  # (row spacing, column spacing)
    x0, y0, z0 = first.position
    shape = (len(slices), int(first.ds.Rows), int(first.ds.Columns))
    grid = Grid((z0, y0, x0), (dz, dy, dx), shape)
    hu = np.empty(grid.shape, dtype=np.float32)
    for k, s in enumerate(slices):
        hu[k] = _hu(s)
    references = DicomReferences(
        patient_id=str(first.ds.get("PatientID", "") or ""),
        patient_name=str(first.ds.get("PatientName", "") or ""),
        study_instance_uid=str(_get(first.ds, "StudyInstanceUID", first.path)),
        frame_of_reference_uid=str(first.ds.FrameOfReferenceUID),
        ct_series_instance_uid=str(first.ds.SeriesInstanceUID),
        ct_sop_instance_uids=tuple(str(_get(s.ds, "SOPInstanceUID", s.path)) for s in slices),
        patient_position=str(first.ds.get("PatientPosition", "") or "HFS"),
    )
    return CtSeries(grid, hu, tuple(s.path for s in slices), references)


def ct_file_name(index: int) -> str:
    """File name of slice ``index`` (0-based) in a series planner writes."""
    return f"CT.{index + 1:04d}.dcm"


def write_ct_series(folder: Path, grid: Grid, hu: np.ndarray, references: DicomReferences,
                    *, created: datetime | None = None) -> tuple[Path, ...]:
    """Write ``hu`` as one CT Image file per slice into the existing ``folder``.

    Pixels are stored as int16 with RescaleSlope 1 and RescaleIntercept 0, so HU are rounded to
    the nearest integer.

    Parameters
    ----------
    folder : Path
        Existing folder; files are named by :func:`ct_file_name`.
    grid : Grid
    hu : (nz, ny, nx) float array, HU
    references : DicomReferences
        Identity to write: patient, study, frame of reference, ``ct_series_instance_uid`` and one
        SOP Instance UID per slice in ``ct_sop_instance_uids``; ``patient_position``.
    created : datetime, optional
        Instance creation and content date/time; now when omitted.

    Returns
    -------
    tuple of Path
        The written files, in slice order.

    Raises
    ------
    ValueError
        If ``hu`` does not match the grid, its values do not fit int16, or the number of SOP
        Instance UIDs is not the number of slices.
    """
    if hu.shape != grid.shape:
        raise ValueError(f"hu shape {hu.shape} differs from grid {grid.shape}")
    if len(references.ct_sop_instance_uids) != grid.shape[0]:
        raise ValueError(f"{len(references.ct_sop_instance_uids)} SOP Instance UIDs for "
                         f"{grid.shape[0]} slices")
    stored = np.rint(hu)
    low, high = HU_STORAGE_RANGE
    if stored.size and (stored.min() < low or stored.max() > high):
        raise ValueError(f"HU from {stored.min():g} to {stored.max():g} do not fit int16 storage")
    stored = stored.astype("<i2")
    created = created or datetime.now()
    z_axis, _, _ = grid.axes_mm()
    _, y0, x0 = grid.origin_mm
    dz, dy, dx = grid.spacing_mm
    paths = []
    for k, uid in enumerate(references.ct_sop_instance_uids):
        ds = new_dataset(references, sop_class_uid=CT_IMAGE_STORAGE, sop_instance_uid=uid,
                         modality="CT", series_instance_uid=references.ct_series_instance_uid,
                         series_number=1, created=created)
        ds.PatientPosition = references.patient_position
        # Laterality of the imaged part is unknown: ImageLaterality (type 3) is sent empty, which
        # also settles General Series' type 2C Laterality condition.
        ds.ImageLaterality = ""
        ds.ContentDate = created.strftime("%Y%m%d")
        ds.ContentTime = created.strftime("%H%M%S")
        ds.FrameOfReferenceUID = references.frame_of_reference_uid
        ds.PositionReferenceIndicator = ""
        # Values re-rounded from the stored integers: DERIVED, SECONDARY.
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = ""
        ds.KVP = ""
        ds.ImagePositionPatient = [format_ds(x0), format_ds(y0), format_ds(z_axis[k])]
        ds.ImageOrientationPatient = [format_ds(v) for v in AXIAL_ORIENTATION]
        ds.SliceLocation = format_ds(z_axis[k])
        ds.SliceThickness = format_ds(dz)
        ds.PixelSpacing = [format_ds(dy), format_ds(dx)]  # (between rows, between columns)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1  # signed
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.PixelData = stored[k].tobytes()
        path = Path(folder) / ct_file_name(k)
        save(ds, path)
        paths.append(path)
    return tuple(paths)
