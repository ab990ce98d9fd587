"""RT Structure Sets: read contours, rasterise them onto a grid, trace masks back into contours.

Rasterisation rules (what :func:`rasterise_contours` does with the contours of one ROI):

- A voxel belongs to a contour when its centre lies inside the polygon. The contours of one
  slice combine by the even-odd rule: a voxel inside two contours (a hole drawn inside an
  outline) is outside the structure.
- A contour is matched to the CT slice whose z is within 10 % of the slice spacing of the
  contour's plane. A contour that lies on no CT slice (between two slices, or beyond the first
  or last slice) is an :class:`~planner.errors.InputError`: the structure set was drawn on
  other images, and silently dropping or moving part of a target is not acceptable in planning.
  ContourImageSequence references are not used for matching (z is).
- Parts of a contour outside the CT's field of view in x or y are cut off at the image edge.
- A voxel centre exactly on a contour may fall either side.
- Only CLOSED_PLANAR contours make volumes; POINT and OPEN_* contours are ignored.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import contourpy
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from dose.grid import Grid
from planner.errors import InputError
from planner.io._dicom import (
    CT_IMAGE_STORAGE,
    RT_STRUCTURE_SET_STORAGE,
    first_line,
    mark_as_encoded,
    new_dataset,
    raw_ds_element,
    read_dicom,
)
from planner.patient import DicomReferences, Structure, StructureKind

# A contour plane matches a CT slice within this fraction of the slice spacing (allows for
# rounding of exported coordinates; a contour further off was drawn on other images).
Z_MATCH_FRACTION = 0.1
# Contour coordinates are written with 3 decimals (0.001 mm): traced contours pass half a voxel
# from every voxel centre, so this rounding can never move a centre across a contour.
CONTOUR_DECIMALS = 3
CONTOUR_DATA = 0x30060050  # (3006,0050) ContourData
TARGET_TYPES = frozenset({"PTV", "CTV", "GTV"})
# Names that mean the patient outline when RTROIInterpretedType is empty (lower case prefixes).
BODY_NAMES = ("body", "external", "skin", "outline", "patient")
# Display colours (RGB) cycled over the ROIs planner writes.
_COLOURS = ((255, 0, 0), (0, 160, 255), (0, 200, 0), (255, 160, 0), (200, 0, 255),
            (255, 255, 0), (0, 255, 200), (255, 100, 150))
# Referenced SOP Class of the study in RTReferencedStudySequence: the (retired) Study Component
# Management class, the value the RT Structure Set IOD's examples use.
_STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"


@dataclass(frozen=True)
class RoiContours:
    """The closed planar contours of one ROI.

    Parameters
    ----------
    number : int
        ROINumber.
    name : str
        ROIName.
    interpreted_type : str
        RTROIInterpretedType ("PTV", "ORGAN", "EXTERNAL", ...), "" when absent.
    frame_of_reference_uid : str
        ReferencedFrameOfReferenceUID of the ROI.
    contours : tuple of (n, 3) float arrays, mm
        Points (x, y, z) in patient coordinates, one array per CLOSED_PLANAR contour.
    """

    number: int
    name: str
    interpreted_type: str
    frame_of_reference_uid: str
    contours: tuple[np.ndarray, ...] = field(repr=False)


@dataclass(frozen=True)
class StructureSet:
    """An RT Structure Set as read from a file: identity and the ROIs' contours."""

    path: Path
    sop_instance_uid: str
    patient_id: str
    frame_of_reference_uids: tuple[str, ...]
    rois: tuple[RoiContours, ...]


def structure_kind(interpreted_type: str, name: str) -> StructureKind:
    """The planner kind of an ROI from its RTROIInterpretedType, or its name when that is empty.

    PTV, CTV, GTV -> "target"; EXTERNAL -> "external"; any other type -> "organ". With no type,
    names starting with a body word (BODY, External, Skin, Outline, Patient) -> "external",
    names starting with PTV/CTV/GTV -> "target", others -> "organ".
    """
    kind = interpreted_type.strip().upper()
    if kind in TARGET_TYPES:
        return "target"
    if kind == "EXTERNAL":
        return "external"
    if kind:
        return "organ"
    lowered = name.strip().lower()
    if lowered.startswith(BODY_NAMES):
        return "external"
    if lowered[:3].upper() in TARGET_TYPES:
        return "target"
    return "organ"


def interpreted_type(structure: Structure) -> str:
    """RTROIInterpretedType to write for ``structure`` (inverse of :func:`structure_kind`)."""
    if structure.kind == "external":
        return "EXTERNAL"
    if structure.kind == "target":
        prefix = structure.name.strip()[:3].upper()
        return prefix if prefix in TARGET_TYPES else "PTV"
    return "ORGAN"


def _contour_points(item: Dataset, label: str) -> np.ndarray:
    # ContourData holds most of a structure set's bytes; parsing the raw decimal string in one
    # numpy call is far faster than pydicom's one Python object per value.
    element = item.get_item(CONTOUR_DATA)
    if element is None:
        raise InputError(f"{label}: contour without ContourData")
    raw = element.value
    try:
        if isinstance(raw, bytes):
            text = raw.decode("ascii").strip(" \x00")
            values = np.array(text.split("\\"), dtype=float) if text else np.empty(0)
        else:
            values = np.asarray(raw if isinstance(raw, Sequence) else [raw], dtype=float)
    except (UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{label}: ContourData is not numeric ({first_line(error)})") from error
    if values.size % 3:
        raise InputError(f"{label}: ContourData has {values.size} values, not a multiple of 3")
    if not np.all(np.isfinite(values)):
        raise InputError(f"{label}: ContourData holds values that are not finite")
    return values.reshape(-1, 3)


def read_structure_set(path: Path, *, unique_names: bool = True) -> StructureSet:
    """Read an RT Structure Set file.

    Parameters
    ----------
    path : Path
    unique_names : bool
        Refuse two ROIs of one name (planning could not tell them apart); false to read such a
        file anyway (``planner info`` shows both).

    Returns
    -------
    StructureSet
        One :class:`RoiContours` per item of StructureSetROISequence, in file order; ROIs
        without closed contours have ``contours == ()``.

    Raises
    ------
    InputError
        Naming the file: not DICOM or unreadable, not an RT Structure Set, missing sequences,
        duplicate ROI numbers or (``unique_names``) names, malformed ContourData.
    """
    path = Path(path)
    ds = read_dicom(path)
    if ds.get("SOPClassUID") != RT_STRUCTURE_SET_STORAGE:
        raise InputError(f"{path}: not an RT Structure Set (SOP Class {ds.get('SOPClassUID')})")
    frames = []
    if ds.get("FrameOfReferenceUID"):
        frames.append(str(ds.FrameOfReferenceUID))
    for item in ds.get("ReferencedFrameOfReferenceSequence", []):
        if item.get("FrameOfReferenceUID") and str(item.FrameOfReferenceUID) not in frames:
            frames.append(str(item.FrameOfReferenceUID))
    types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "")
             for o in ds.get("RTROIObservationsSequence", []) if "ReferencedROINumber" in o}
    contours: dict[int, list[np.ndarray]] = {}
    for roi in ds.get("ROIContourSequence", []):
        number = int(roi.ReferencedROINumber)
        label = f"{path}: ROI number {number}"
        closed = [_contour_points(c, label) for c in roi.get("ContourSequence", [])
                  if str(c.get("ContourGeometricType", "")).upper() == "CLOSED_PLANAR"]
        contours.setdefault(number, []).extend(closed)
    if "StructureSetROISequence" not in ds:
        raise InputError(f"{path}: no StructureSetROISequence")
    rois = []
    for item in ds.StructureSetROISequence:
        number = int(item.ROINumber)
        name = str(item.get("ROIName", "") or f"ROI {number}").strip()
        if any(r.number == number for r in rois):
            raise InputError(f"{path}: ROI number {number} appears twice")
        same = [r.number for r in rois if r.name == name]
        if same and unique_names:
            raise InputError(f"{path}: ROI name {name!r} appears twice (ROI numbers {same[0]} "
                             f"and {number}): which one is meant is ambiguous")
        rois.append(RoiContours(number, name, types.get(number, ""),
                                str(item.get("ReferencedFrameOfReferenceUID", "") or ""),
                                tuple(contours.get(number, ()))))
    return StructureSet(path, str(ds.get("SOPInstanceUID", "")), str(ds.get("PatientID", "") or ""),
                        tuple(frames), tuple(rois))


def _row_crossings(polygon: np.ndarray, ny: int, nx: int) -> np.ndarray:
    """Where a closed polygon's edges cross the rows of voxel centres, as toggle positions.

    ``polygon`` is (n, 2) in voxel-index units (u along x, v along y), so voxel centres are the
    integer points. An edge crosses row ``j`` when ``j`` lies in ``[min(v), max(v))`` of its
    ends (half-open, so a vertex on a row counts once). A crossing at ``u`` toggles the parity
    of every centre ``i > u`` of that row: the flat index ``j * (nx + 1) + floor(u) + 1`` is
    returned (column ``nx`` collects crossings right of the last centre).
    """
    start = polygon
    end = np.roll(polygon, -1, axis=0)
    low = np.minimum(start[:, 1], end[:, 1])
    high = np.maximum(start[:, 1], end[:, 1])
    first = np.maximum(np.ceil(low), 0).astype(np.int64)
    last = np.minimum(np.ceil(high) - 1, ny - 1).astype(np.int64)
    counts = np.maximum(last - first + 1, 0)
    edge = np.repeat(np.arange(len(polygon)), counts)
    row = first[edge] + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    du = end[edge, 0] - start[edge, 0]
    dv = end[edge, 1] - start[edge, 1]  # never 0: horizontal edges cross no row
    u = start[edge, 0] + (row - start[edge, 1]) * du / dv
    column = np.clip(np.floor(u).astype(np.int64) + 1, 0, nx)
    return row * (nx + 1) + column


def rasterise_contours(contours: Sequence[np.ndarray], grid: Grid, *, label: str) -> np.ndarray:
    """Voxels of ``grid`` whose centres lie inside the contours (even-odd rule per slice).

    A scanline fill: along each row of voxel centres, a centre is inside when an odd number of
    contour edges (of all the slice's contours together) cross the row to its left. The cost
    grows with the contours' length, not their area. A centre exactly on a contour may fall
    either side.

    Parameters
    ----------
    contours : sequence of (n, 3) float arrays, mm
        Closed planar contours, points (x, y, z) in patient coordinates.
    grid : Grid
        An axial grid (see :mod:`dose.grid`).
    label : str
        Names the ROI in error messages (e.g. ``"RS.dcm: ROI 'PTV'"``).

    Returns
    -------
    (nz, ny, nx) bool array

    Raises
    ------
    InputError
        ``"<label>: contour at z = ... mm lies on no CT slice ..."`` for a contour plane further
        than 10 % of the slice spacing from every slice; ``"... not in an axial plane"`` for a
        contour whose points differ in z by more than that.
    """
    nz, ny, nx = grid.shape
    z0, y0, x0 = grid.origin_mm
    dz, dy, dx = grid.spacing_mm
    tolerance = Z_MATCH_FRACTION * dz
    toggles: dict[int, list[np.ndarray]] = {}
    for points in contours:
        if len(points) < 3:
            continue  # encloses no area
        z = points[:, 2]
        if np.ptp(z) > tolerance:
            raise InputError(f"{label}: contour not in an axial plane (z from {z.min():g} to "
                             f"{z.max():g} mm)")
        plane = float(np.mean(z))
        k = int(np.rint((plane - z0) / dz))
        if not (0 <= k < nz) or abs(z0 + k * dz - plane) > tolerance:
            raise InputError(f"{label}: contour at z = {plane:g} mm lies on no CT slice (slices "
                             f"every {dz:g} mm from {z0:g} to {z0 + (nz - 1) * dz:g} mm)")
        polygon = np.column_stack([(points[:, 0] - x0) / dx, (points[:, 1] - y0) / dy])
        toggles.setdefault(k, []).append(_row_crossings(polygon, ny, nx))
    mask = np.zeros(grid.shape, dtype=bool)
    for k, flat in toggles.items():
        counts = np.bincount(np.concatenate(flat), minlength=ny * (nx + 1))
        parity = np.cumsum(counts.reshape(ny, nx + 1), axis=1) & 1
        mask[k] = parity[:, :nx].astype(bool)
    return mask


def rasterise_structure_set(structure_set: StructureSet, grid: Grid, *,
                            outside: str = "the CT's field of view") -> tuple[Structure, ...]:
    """One boolean-mask Structure per ROI of ``structure_set``, rasterised on ``grid``.

    Each ROI's contours go through :func:`rasterise_contours`; its kind comes from
    :func:`structure_kind`. Frames of reference are not checked here (the caller knows which
    grid the contours must share).

    Parameters
    ----------
    structure_set : StructureSet
    grid : Grid
        An axial grid whose slices carry the contours' planes.
    outside : str
        Names ``grid`` in the warning for an ROI that encloses no voxel centre.

    Returns
    -------
    tuple of Structure
        In the structure set's ROI order, skipped ROIs left out.

    Raises
    ------
    InputError
        See :func:`rasterise_contours`.

    Warns
    -----
    UserWarning
        For each ROI that has no closed contours, or whose contours enclose no voxel centre of
        ``grid``: the ROI is skipped (structure sets often carry empty placeholder ROIs). The
        warning points at the caller's caller (the public reader that called this).
    """
    structures = []
    for roi in structure_set.rois:
        label = f"{structure_set.path}: ROI {roi.name!r}"
        if not roi.contours:
            warnings.warn(f"{label} has no closed contours; skipped", UserWarning, stacklevel=3)
            continue
        mask = rasterise_contours(roi.contours, grid, label=label)
        if not mask.any():
            warnings.warn(f"{label} lies outside {outside}; skipped", UserWarning, stacklevel=3)
            continue
        structures.append(Structure(roi.name, structure_kind(roi.interpreted_type, roi.name),
                                    mask))
    return tuple(structures)


def trace_mask(mask: np.ndarray, grid: Grid) -> list[np.ndarray]:
    """Closed contours around a mask, slice by slice (contourpy, level 0.5).

    Holes come out as separate contours, so :func:`rasterise_contours` (even-odd rule) gives the
    mask back exactly: the level-0.5 lines cross every edge between an inside and an outside
    voxel centre once, at its midpoint, and no other edge.

    Parameters
    ----------
    mask : (nz, ny, nx) bool array
    grid : Grid

    Returns
    -------
    list of (n, 3) float arrays, mm
        Points (x, y, z) in patient coordinates; the closing point is not repeated.
    """
    z_axis, _, _ = grid.axes_mm()
    _, y0, x0 = grid.origin_mm
    _, dy, dx = grid.spacing_mm
    contours = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        rows = np.flatnonzero(mask[k].any(axis=1))
        cols = np.flatnonzero(mask[k].any(axis=0))
        j0, i0 = rows[0], cols[0]
        # One empty voxel of padding around the bounding box closes lines at the image edge.
        crop = np.pad(mask[k, j0:rows[-1] + 1, i0:cols[-1] + 1], 1).astype(np.float64)
        generator = contourpy.contour_generator(z=crop, line_type=contourpy.LineType.Separate)
        for line in generator.lines(0.5):
            xy = line[:-1] if np.array_equal(line[0], line[-1]) else line
            x = x0 + (xy[:, 0] + i0 - 1) * dx
            y = y0 + (xy[:, 1] + j0 - 1) * dy
            contours.append(np.column_stack([x, y, np.full(len(xy), z_axis[k])]))
    return contours


def structure_set_dataset(structures: Sequence[Structure], grid: Grid,
                          references: DicomReferences, *, created: datetime | None = None,
                          label: str = "planner") -> Dataset:
    """An RT Structure Set of ``structures`` drawn on the CT series ``references`` describes.

    Parameters
    ----------
    structures : sequence of Structure
        Masks on ``grid``; an empty mask gives an ROI without contours.
    grid : Grid
        The CT grid; slice ``k`` is ``references.ct_sop_instance_uids[k]``.
    references : DicomReferences
        Patient, study, frame of reference and CT identity;
        ``structure_set_sop_instance_uid`` must be set (the new object's UID).
    created : datetime, optional
        Structure set date and time; now when omitted.
    label : str
        StructureSetLabel (at most 16 characters).

    Returns
    -------
    pydicom.dataset.Dataset
        With FrameOfReferenceUID at the top level and in ReferencedFrameOfReferenceSequence,
        ContourImageSequence referencing the CT slice of every contour.
    """
    if not references.structure_set_sop_instance_uid:
        raise ValueError("references.structure_set_sop_instance_uid is not set")
    if len(references.ct_sop_instance_uids) != grid.shape[0]:
        raise ValueError(f"{len(references.ct_sop_instance_uids)} CT SOP Instance UIDs for "
                         f"{grid.shape[0]} slices")
    created = created or datetime.now()
    # The series UID follows from the instance UID, so equal inputs give equal files.
    series_uid = generate_uid(entropy_srcs=[references.structure_set_sop_instance_uid, "series"])
    ds = new_dataset(references, sop_class_uid=RT_STRUCTURE_SET_STORAGE,
                     sop_instance_uid=references.structure_set_sop_instance_uid,
                     modality="RTSTRUCT", series_instance_uid=series_uid, series_number=2,
                     created=created)
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = references.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate = created.strftime("%Y%m%d")
    ds.StructureSetTime = created.strftime("%H%M%S")

    def image_reference(uid: str) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = CT_IMAGE_STORAGE
        item.ReferencedSOPInstanceUID = uid
        return item

    series = Dataset()
    series.SeriesInstanceUID = references.ct_series_instance_uid
    series.ContourImageSequence = DicomSequence(
        [image_reference(uid) for uid in references.ct_sop_instance_uids])
    study = Dataset()
    study.ReferencedSOPClassUID = _STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = references.study_instance_uid
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = references.frame_of_reference_uid
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    z0 = grid.origin_mm[0]
    dz = grid.spacing_mm[0]
    roi_items, contour_items, observation_items = [], [], []
    for number, structure in enumerate(structures, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = references.frame_of_reference_uid
        roi.ROIName = structure.name
        roi.ROIGenerationAlgorithm = ""
        roi_items.append(roi)

        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(_COLOURS[(number - 1) % len(_COLOURS)])
        items = []
        for points in trace_mask(structure.mask, grid):
            item = Dataset()
            k = int(np.rint((points[0, 2] - z0) / dz))
            item.ContourImageSequence = DicomSequence(
                [image_reference(references.ct_sop_instance_uids[k])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(points)
            item.ContourNumber = len(items) + 1
            item[CONTOUR_DATA] = raw_ds_element(CONTOUR_DATA, points, CONTOUR_DECIMALS)
            items.append(item)
        if items:
            roi_contour.ContourSequence = DicomSequence(items)
        roi_contour.ReferencedROINumber = number
        contour_items.append(roi_contour)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = interpreted_type(structure)
        observation.ROIInterpreter = ""
        observation_items.append(observation)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observation_items)
    # An RT Structure Set has no attribute of ambiguous VR: writing need not decode the raw
    # ContourData elements to look for one.
    mark_as_encoded(ds)
    return ds
