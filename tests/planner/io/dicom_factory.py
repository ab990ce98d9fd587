"""Small DICOM CT series and RT Structure Sets for tests, written with pydicom directly.

Independent of planner's own writer, so that reader tests do not only check the writer against
itself. Broken cases are made by editing one written file (:func:`edit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from planner.io._dicom import save  # the file writing only (pydicom 2 and 3 name it apart)

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
PATIENT_ID = "FACTORY-1"


@dataclass(frozen=True)
class FactoryCt:
    """What :func:`write_ct_folder` wrote, in slice order (increasing z)."""

    paths: tuple[Path, ...]
    hu: np.ndarray  # (nz, ny, nx) HU the files encode
    origin_zyx: tuple[float, float, float]
    spacing_zyx: tuple[float, float, float]
    study_uid: str
    series_uid: str
    frame_uid: str
    sop_uids: tuple[str, ...]


def _file_dataset(sop_class: str, sop_uid: str) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.PatientID = PATIENT_ID
    ds.PatientName = "Factory^Test"
    return ds


def write_ct_folder(folder: Path, *, shape: tuple[int, int, int] = (6, 12, 16),
                    origin_zyx: tuple[float, float, float] = (-10.0, -5.5, -8.0),
                    spacing_zyx: tuple[float, float, float] = (2.5, 1.0, 0.5),
                    rescale: Sequence[tuple[float, float]] | None = None,
                    frame_uid: str | None = None, patient_id: str = PATIENT_ID) -> FactoryCt:
    """Write a CT series, one file per slice, named and numbered against the z order.

    Slice ``k`` (z order) is ``CT.<nz - 1 - k>.dcm`` with InstanceNumber ``nz - k``, so a reader
    that sorted by name or instance number would reverse the volume. HU are
    ``-1000 + 100 k + 7 j + i`` (distinct per voxel row and slice), stored as unsigned integers
    through ``rescale[k] = (slope, intercept)`` (default ``(1, -1024)``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    nz, ny, nx = shape
    kk, jj, ii = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    hu = (-1000.0 + 100 * kk + 7 * jj + ii).astype(np.float32)
    rescale = rescale or [(1.0, -1024.0)] * nz
    study, series = generate_uid(), generate_uid()
    frame = frame_uid or generate_uid()
    sops = tuple(generate_uid() for _ in range(nz))
    paths = []
    for k in range(nz):
        slope, intercept = rescale[k]
        stored = (hu[k] - intercept) / slope
        assert np.all(stored == np.rint(stored)) and stored.min() >= 0, "factory HU not storable"
        ds = _file_dataset(CT_IMAGE, sops[k])
        ds.PatientID = patient_id
        ds.Modality = "CT"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.FrameOfReferenceUID = frame
        ds.PatientPosition = "HFS"
        ds.InstanceNumber = nz - k  # deliberately not the z order
        ds.ImagePositionPatient = [origin_zyx[2], origin_zyx[1], origin_zyx[0] + k * spacing_zyx[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing_zyx[1], spacing_zyx[2]]
        ds.SliceThickness = spacing_zyx[0]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept
        ds.PixelData = stored.astype("<u2").tobytes()
        path = folder / f"CT.{nz - 1 - k}.dcm"
        save(ds, path)
        paths.append(path)
    return FactoryCt(tuple(paths), hu, origin_zyx, spacing_zyx, study, series, frame, sops)


def write_structure_set(path: Path, ct: FactoryCt | None, rois: Sequence[tuple],
                        *, frame_uid: str | None = None, patient_id: str = PATIENT_ID) -> Path:
    """Write an RT Structure Set.

    Parameters
    ----------
    path : Path
    ct : FactoryCt or None
        Gives the frame of reference (unless ``frame_uid``) and the referenced study.
    rois : sequence of (name, interpreted_type or None, contours)
        ``contours`` a list of (n, 3) arrays of (x, y, z) mm, written as CLOSED_PLANAR.
    """
    frame = frame_uid or ct.frame_uid
    ds = _file_dataset(RT_STRUCTURE_SET, generate_uid())
    ds.PatientID = patient_id
    ds.Modality = "RTSTRUCT"
    ds.StudyInstanceUID = ct.study_uid if ct else generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "factory"
    referenced = Dataset()
    referenced.FrameOfReferenceUID = frame
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([referenced])
    roi_items, contour_items, observations = [], [], []
    for number, (name, kind, contours) in enumerate(rois, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = frame
        roi.ROIName = name
        roi_items.append(roi)
        item = Dataset()
        item.ReferencedROINumber = number
        sequence = []
        for points in contours:
            contour = Dataset()
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [f"{v:.4f}" for v in np.asarray(points, float).ravel()]
            sequence.append(contour)
        if sequence:
            item.ContourSequence = DicomSequence(sequence)
        contour_items.append(item)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        if kind is not None:
            observation.RTROIInterpretedType = kind
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    save(ds, path)
    return path


def rectangle(x: tuple[float, float], y: tuple[float, float], z: float) -> np.ndarray:
    """The corners (4, 3) of an axis-aligned rectangle at height ``z``, mm."""
    return np.array([[x[0], y[0], z], [x[1], y[0], z], [x[1], y[1], z], [x[0], y[1], z]])


def edit(path: Path, **attributes) -> None:
    """Set DICOM attributes of the file ``path`` (``None`` deletes one) and save it in place."""
    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
