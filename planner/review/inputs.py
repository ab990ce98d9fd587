"""Read what a review needs from DICOM files of any planning system.

Two ways to put dose and structures on one grid (both used by ``planner``):

- :func:`read_dose_and_structures` (``planner dvh RTDOSE RTSTRUCT``, no CT): the structures are
  rasterised on a grid with the dose grid's rows and columns and one slice per contour plane of
  the structure set (contours are drawn on the CT slices), and the dose is interpolated onto it
  along z where its frames lie elsewhere. This is the sampling dicompyler-core uses.
- :func:`read_review_patient` + :func:`planner.review.dvh.resample_dose` (``planner review``):
  the structures are rasterised on the CT grid and the dose is resampled onto the CT.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from dose.grid import Grid
from planner.density import hu_to_density
from planner.errors import InputError
from planner.io._dicom import CT_IMAGE_STORAGE, read_header
from planner.io.ct import read_ct_series
from planner.io.rtdose import read_rt_dose
from planner.io.rtstruct import (
    Z_MATCH_FRACTION,
    StructureSet,
    rasterise_contours,
    read_structure_set,
    structure_kind,
)
from planner.patient import DicomReferences, Patient, Structure
from planner.review.dvh import resample_dose


def _contour_planes(structure_set: StructureSet) -> np.ndarray:
    """Distinct z (mm) of the structure set's contour planes, increasing."""
    z = sorted(float(np.mean(c[:, 2])) for roi in structure_set.rois for c in roi.contours
               if len(c) >= 3)
    planes: list[float] = []
    for value in z:
        if not planes or value - planes[-1] > 1e-3:
            planes.append(value)
    return np.asarray(planes)


def contour_grid(structure_set: StructureSet, dose_grid: Grid) -> Grid:
    """Rows and columns of ``dose_grid``, slices at the contour planes inside the dose grid.

    Raises
    ------
    InputError
        No contour plane lies within the dose grid, or the planes are not evenly spaced.
    """
    planes = _contour_planes(structure_set)
    low, high = dose_grid.extent_mm()
    planes = planes[(planes >= low[0] - 1e-3) & (planes <= high[0] + 1e-3)]
    where = structure_set.path
    if planes.size == 0:
        raise InputError(f"{where}: no contour lies within the dose grid (z {low[0]:g} to "
                         f"{high[0]:g} mm)")
    steps = np.diff(planes)
    dz = float(steps.min()) if steps.size else float(dose_grid.spacing_mm[0])
    # Contours drawn on evenly spaced CT slices; a structure may skip slices (a multiple).
    ratio = steps / dz
    if np.any(np.abs(ratio - np.rint(ratio)) > Z_MATCH_FRACTION):
        raise InputError(f"{where}: contour planes are not evenly spaced "
                         f"({np.unique(np.round(steps, 3)).tolist()} mm)")
    n = int(np.rint((planes[-1] - planes[0]) / dz)) + 1
    _, y0, x0 = dose_grid.origin_mm
    _, dy, dx = dose_grid.spacing_mm
    return Grid((float(planes[0]), y0, x0), (dz, dy, dx), (n, dose_grid.shape[1],
                                                            dose_grid.shape[2]))


def _structures(structure_set: StructureSet, grid: Grid, frame_of_reference_uid: str | None,
                *, keep_outside_z: bool) -> tuple[Structure, ...]:
    """Rasterise every ROI with contours on ``grid`` (empty or outside ROIs warned and skipped)."""
    path = structure_set.path
    for frame in structure_set.frame_of_reference_uids:
        if frame_of_reference_uid and frame != frame_of_reference_uid:
            raise InputError(f"{path}: frame of reference {frame} differs from "
                             f"{frame_of_reference_uid} of the CT")
    low, high = grid.extent_mm()
    structures = []
    for roi in structure_set.rois:
        label = f"{path}: ROI {roi.name!r}"
        contours = roi.contours
        if not keep_outside_z:
            inside = [c for c in contours if low[0] <= float(np.mean(c[:, 2])) <= high[0]]
            if len(inside) < len(contours):
                dropped = len(contours) - len(inside)
                warnings.warn(f"{label}: {dropped} contour{'s' * (dropped != 1)} outside the dose "
                              f"grid not counted", UserWarning, stacklevel=3)
            contours = tuple(inside)
        if not contours:
            warnings.warn(f"{label} has no closed contours here; skipped", UserWarning,
                          stacklevel=3)
            continue
        mask = rasterise_contours(contours, grid, label=label)
        if not mask.any():
            warnings.warn(f"{label} encloses no voxel centre of the grid; skipped", UserWarning,
                          stacklevel=3)
            continue
        structures.append(Structure(roi.name, structure_kind(roi.interpreted_type, roi.name),
                                    mask))
    return tuple(structures)


def read_dose_and_structures(rtdose: str | Path, rtstruct: str | Path
                             ) -> tuple[np.ndarray, Grid, tuple[Structure, ...]]:
    """The dose and the structures of an RT Dose and an RT Structure Set on one grid.

    Parameters
    ----------
    rtdose, rtstruct : str or Path

    Returns
    -------
    dose_gy : (nz, ny, nx) float32 array, Gy
        The RT Dose on ``grid`` (interpolated along z where the planes differ).
    grid : Grid
        See :func:`contour_grid`.
    structures : tuple of Structure
        Masks on ``grid``. Contours outside the dose grid are dropped with a warning.

    Raises
    ------
    InputError
        Unreadable or inconsistent files (naming the file).
    """
    dose, dose_grid = read_rt_dose(rtdose)
    structure_set = read_structure_set(Path(rtstruct))
    grid = contour_grid(structure_set, dose_grid)
    structures = _structures(structure_set, grid, None, keep_outside_z=False)
    return resample_dose(dose, dose_grid, grid), grid, structures


def _ct_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    paths = [p for p in sorted(folder.rglob("*")) if p.is_file()]
    found = []
    for path in paths:
        ds = read_header(path)
        if ds is not None and ds.SOPClassUID == CT_IMAGE_STORAGE:
            found.append(path)
    if not found:
        raise InputError(f"{folder}: no CT images found")
    return found


def read_review_patient(ct_folder: str | Path, rtstruct: str | Path) -> Patient:
    """The CT in ``ct_folder`` (one series) with the structures of ``rtstruct`` on its grid.

    Contours are rasterised as :func:`planner.io.dicom_patient.read_dicom_patient` does
    (:func:`planner.io.rtstruct.rasterise_contours`); the structure set may live anywhere.

    Raises
    ------
    InputError
        No CT in the folder, a bad CT series (:func:`planner.io.ct.read_ct_series`), an
        unreadable structure set, or a structure set in another frame of reference.
    """
    ct = read_ct_series(_ct_files(Path(ct_folder)))
    structure_set = read_structure_set(Path(rtstruct))
    structures = _structures(structure_set, ct.grid, ct.references.frame_of_reference_uid,
                             keep_outside_z=True)
    refs = ct.references
    references = DicomReferences(
        refs.patient_id, refs.patient_name, refs.study_instance_uid, refs.frame_of_reference_uid,
        refs.ct_series_instance_uid, refs.ct_sop_instance_uids,
        structure_set_sop_instance_uid=structure_set.sop_instance_uid,
        patient_position=refs.patient_position)
    return Patient(name=refs.patient_id or Path(ct_folder).resolve().name, grid=ct.grid,
                   hu=ct.hu, density=hu_to_density(ct.hu), structures=structures,
                   dicom=references, source=str(ct_folder))
