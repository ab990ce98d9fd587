"""Set-up, grid: the dose grid, the patient and the optimisation structures on it, and the
voxels whose dose each later step computes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dose.grid import Grid
from dose.segments import MIN_DOSE_DENSITY_G_CM3
from planner.errors import InputError
from planner.optimize import planning_voxels
from planner.patient import Patient, Structure
from planner.plan.setup import PlanCase
from planner.planning_structures import PlanningStructures, planning_structures
from planner.protocol import Protocol
from planner.review.dvh import resample_dose
from planner.review.goals import GoalRow, evaluate_protocol

#: A target keeps every dose-grid voxel a quarter of which it covers (other structures: half).
#: The goal table reads the dose interpolated onto the CT grid, where a CT voxel at the
#: target's edge takes part of its dose from dose-grid voxels whose centres lie outside the
#: target; keeping them makes the optimiser cover that edge. (Measured: benchmarks/results/
#: design_history.md, "Dose grid".)
TARGET_LEAST_FRACTION = 0.25
#: The Dij and the segment doses are computed on every structure voxel and on every
#: ``SAMPLE_STEP``-th voxel along each axis of the rest of the body: there the dose only shapes
#: the fall-off. The exported dose is computed on every voxel. (benchmarks/results/
#: design_history.md, "Segment weights on sampled voxels".)
SAMPLE_STEP = 2


@dataclass(frozen=True)
class PlanGrids:
    """The patient on the CT grid and on the dose grid, as the optimisation sees it.

    Attributes
    ----------
    ct_structures : PlanningStructures
        The optimisation structures on the CT grid (the goal tables' grid).
    dose_grid : Grid
    dose_patient : Patient
        The patient resampled onto ``dose_grid`` (:func:`resample_patient`).
    dose_structures : PlanningStructures
        The optimisation structures on ``dose_grid``.
    calculated : (dose_grid.shape) bool array
        Where the dose is calculated (:func:`dose_calculation_mask`).
    needed : (dose_grid.shape) bool array
        Where the beamlet and segment doses are calculated (:func:`needed_voxels`).
    """

    ct_structures: PlanningStructures = field(repr=False)
    dose_grid: Grid
    dose_patient: Patient = field(repr=False)
    dose_structures: PlanningStructures = field(repr=False)
    calculated: np.ndarray = field(repr=False)
    needed: np.ndarray = field(repr=False)


def prepare_grids(case: PlanCase, spacing_mm: float) -> PlanGrids:
    """The dose grid of ``spacing_mm`` over ``case``'s patient (:func:`dose_grid_for`) and the
    patient and structures on both grids."""
    dose_grid = dose_grid_for(case.patient, spacing_mm)
    dose_patient = resample_patient(case.patient, dose_grid)
    dose_structures = planning_structures(dose_patient, case.protocol, case.names)
    return PlanGrids(planning_structures(case.patient, case.protocol, case.names), dose_grid,
                     dose_patient, dose_structures, dose_calculation_mask(dose_patient),
                     needed_voxels(dose_patient, case.protocol, dose_structures))


def _overlap_weights(source: np.ndarray, source_step: float, target: np.ndarray,
                     target_step: float) -> np.ndarray:
    """``(n_target, n_source)``: the share of each target voxel (one axis) covered by each source
    voxel, rows normalised over the covered part (zero rows where nothing covers it)."""
    lo = np.maximum(target[:, None] - target_step / 2, source[None, :] - source_step / 2)
    hi = np.minimum(target[:, None] + target_step / 2, source[None, :] + source_step / 2)
    weights = np.clip(hi - lo, 0.0, None)
    covered = weights.sum(axis=1, keepdims=True)
    return (weights / np.where(covered > 0, covered, 1.0)).astype(np.float32)


def _box_average(volume: np.ndarray, weights: Sequence[np.ndarray]) -> np.ndarray:
    """Apply the per-axis overlap weights ``(z, y, x)`` to ``volume`` (separable)."""
    out = np.asarray(volume, dtype=np.float32)
    for axis, w in enumerate(weights):
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return out


def resample_patient(patient: Patient, grid: Grid) -> Patient:
    """``patient`` on another grid of the same orientation (e.g. the dose grid).

    Every new voxel takes the volume-weighted average of the old voxels it overlaps (exact box
    overlaps, separable along z, y and x): HU and density are averaged, and a structure (and the
    possible-dose mask) keeps a new voxel when at least half of that voxel lies inside it, a
    target when a quarter of it does (``TARGET_LEAST_FRACTION``). A structure smaller than half
    a new voxel everywhere keeps its single most-covered voxel, so that no delineated structure
    vanishes (its goals still have voxels to act on). Parts of ``grid`` outside the patient's
    grid get density 0 and no structure.

    Parameters
    ----------
    patient : Patient
    grid : Grid
        Target grid (mm, (z, y, x) like every Grid).

    Returns
    -------
    Patient
        Same name and prescriptions; ``dicom`` is None (the new grid is no DICOM image) and
        ``source`` says it was resampled.
    """
    weights = [_overlap_weights(s, d, t, e) for s, d, t, e in
               zip(patient.grid.axes_mm(), patient.grid.spacing_mm, grid.axes_mm(),
                   grid.spacing_mm)]

    def mask(values: np.ndarray, least: float = 0.5) -> np.ndarray:
        fraction = _box_average(values, weights)
        kept = fraction >= least
        if not kept.any() and values.any() and fraction.max() > 0:
            kept.flat[np.argmax(fraction)] = True
        return kept

    structures = tuple(Structure(s.name, s.kind, mask(
        s.mask, TARGET_LEAST_FRACTION if s.kind == "target" else 0.5))
        for s in patient.structures)
    possible = (None if patient.possible_dose_mask is None else mask(patient.possible_dose_mask))
    return Patient(patient.name, grid, _box_average(patient.hu, weights),
                   _box_average(patient.density, weights), structures, patient.prescriptions,
                   possible, None, f"{patient.source} (resampled to {grid.spacing_mm} mm)")


def dose_grid_for(patient: Patient, spacing_mm: float) -> Grid:
    """An isotropic dose grid over the patient: the CT grid's extent cropped to the body.

    The body is the external contour, else the possible-dose mask (OpenKBP), else the voxels of
    density >= ``MIN_DOSE_DENSITY_G_CM3``; its bounding box (voxel edges) is covered by voxels of
    ``spacing_mm``, the first one's edge on the box's. No dose is computed in the air around the
    patient anyway, and a grid no wider than the body keeps the dose engine's work (ray tracing
    and the distances from the source it tabulates) to the patient.

    Parameters
    ----------
    patient : Patient
    spacing_mm : float, mm

    Returns
    -------
    Grid

    Raises
    ------
    InputError
        No voxel of the patient is dense enough to receive a dose.
    """
    body = patient.body_mask()
    if body is None:
        body = patient.density >= MIN_DOSE_DENSITY_G_CM3
    if not body.any():
        raise InputError(f"{patient.source}: no voxel of the patient has density >= "
                         f"{MIN_DOSE_DENSITY_G_CM3} g/cm^3")
    index = np.argwhere(body)
    spacing = np.asarray(patient.grid.spacing_mm)
    low = patient.grid.index_to_position_mm(index.min(axis=0)) - spacing / 2
    high = patient.grid.index_to_position_mm(index.max(axis=0)) + spacing / 2
    shape = np.maximum(1, np.ceil((high - low) / spacing_mm - 1e-6)).astype(int)
    return Grid(tuple(low + spacing_mm / 2), (spacing_mm,) * 3, tuple(shape))


def dose_calculation_mask(dose_patient: Patient) -> np.ndarray:
    """Dose-grid voxels whose dose is calculated: ``(nz, ny, nx)`` bool.

    The patient (density >= ``MIN_DOSE_DENSITY_G_CM3``, the dose engine's default) and every
    voxel of every structure: a target or organ voxel in an air cavity (the oral cavity or a
    sinus inside a head-and-neck PTV) must get a dose, or a goal on it sees 0 Gy there and the
    optimiser chases coverage that no fluence can give.
    """
    mask = dose_patient.density >= MIN_DOSE_DENSITY_G_CM3
    for s in dose_patient.structures:
        mask |= s.mask
    return mask


def needed_voxels(dose_patient: Patient, protocol: Protocol,
                  structures: PlanningStructures | None = None) -> np.ndarray:
    """Dose-grid voxels whose beamlet and segment doses the optimisation needs: ``(nz, ny, nx)``
    bool.

    :func:`planner.optimize.planning_voxels` (every structure voxel, every other target voxel,
    every ``SAMPLE_STEP``-th voxel along each axis of the rest) where the dose is calculated
    (:func:`dose_calculation_mask`).
    """
    return dose_calculation_mask(dose_patient) & planning_voxels(
        dose_patient, protocol, step=SAMPLE_STEP, structures=structures)


def protocol_goals(case: PlanCase, grids: PlanGrids, dose_gy: np.ndarray) -> tuple[GoalRow, ...]:
    """The protocol's goals on a dose of the dose grid, read on the CT grid (as the report reads
    them)."""
    return evaluate_protocol(case.patient, resample_dose(dose_gy, grids.dose_grid,
                                                         case.patient.grid),
                             case.protocol, structures=grids.ct_structures)
