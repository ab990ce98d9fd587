"""Read what a review needs from DICOM files of any planning system.

Two ways to put dose and structures on one grid (both used by ``planner``):

- :func:`read_dose_and_structures` (``planner dvh RTDOSE RTSTRUCT``, no CT): the structures are
  rasterised on a grid with the dose grid's rows and columns and one slice per contour plane of
  the structure set (contours are drawn on the CT slices), and the dose is interpolated onto it
  along z where its frames lie elsewhere. This is the sampling dicompyler-core uses.
- :func:`planner.io.dicom_patient.read_dicom_patient` with its ``structure_set`` +
  :func:`planner.review.dvh.resample_dose` (``planner review``): the structures are rasterised
  on the CT grid and the dose is resampled onto the CT.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import numpy as np

from dose.grid import Grid
from planner.errors import InputError
from planner.io.rtdose import read_rt_dose
from planner.io.rtstruct import (
    Z_MATCH_FRACTION,
    StructureSet,
    rasterise_structure_set,
    read_structure_set,
)
from planner.patient import Structure
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


def _inside_planes(structure_set: StructureSet, grid: Grid) -> StructureSet:
    """``structure_set`` without the contours outside ``grid``'s z range (warned per ROI)."""
    low, high = grid.extent_mm()
    rois = []
    for roi in structure_set.rois:
        inside = tuple(c for c in roi.contours if low[0] <= float(np.mean(c[:, 2])) <= high[0])
        if len(inside) < len(roi.contours):
            dropped = len(roi.contours) - len(inside)
            warnings.warn(f"{structure_set.path}: ROI {roi.name!r}: {dropped} "
                          f"contour{'s' * (dropped != 1)} outside the dose grid not counted",
                          UserWarning, stacklevel=3)
        rois.append(dataclasses.replace(roi, contours=inside))
    return dataclasses.replace(structure_set, rois=tuple(rois))


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
    structures = rasterise_structure_set(_inside_planes(structure_set, grid), grid,
                                         outside="the dose grid")
    return resample_dose(dose, dose_grid, grid), grid, structures
