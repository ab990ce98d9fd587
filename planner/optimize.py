"""Fluence optimisation of one patient from a protocol: masks and goals in, fluence and dose out.

The glue between the patient model and :mod:`optim`: structure names are mapped to the protocol's
(:func:`planner.protocol.map_structures`), overlaps resolved (targets win, see
:func:`optim.objectives.resolve_overlaps`), goals converted to absolute units, a normal-tissue
ring built for the dose fall-off, then :func:`optim.autoplan.plan_automatically` runs. Rows of the
dose-influence matrix are the grid's voxels in C order (flat index of ``[z, y, x]``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.ndimage

from dose._xp import array_module
from optim.autoplan import (
    AutoPlanResult, NormalTissue, PlanGoal, TargetDose, evaluate_goals, plan_automatically,
)
from optim.fluence import Progress
from optim.objectives import resolve_overlaps
from planner.patient import Patient
from planner.planning_structures import PlanningStructures, body_or_dense, planning_structures
from planner.protocol import (
    OUTSIDE_TARGETS, Goal, Protocol, StructureMapping, plan_goal,
)

RING_MM = 50.0      # normal tissue within 50 mm of a target shapes the fall-off (it ends at 30 mm)
RING_STEP = 2       # every 2nd voxel along each axis: 1/8 of the ring's rows, same fall-off shape
#: The hot-spot and maximum goals outside the PTVs act on the voxels this close to a target:
#: beyond it 9 fields give far below 110 % of the highest prescription.
HOT_SPOT_SHELL_MM = 20.0


@dataclass(frozen=True)
class FluenceProblem:
    """What :func:`optim.autoplan.plan_automatically` needs, built from a patient and a protocol."""

    targets: tuple[TargetDose, ...]
    goals: tuple[PlanGoal, ...]
    normal_tissue: NormalTissue | None
    mapping: StructureMapping
    structures: PlanningStructures = field(repr=False)


@dataclass(frozen=True)
class PatientPlan:
    """A fluence plan of one patient.

    Attributes
    ----------
    result : AutoPlanResult
        Fluence ``x`` (one weight per column of the Dij), goal table, steps, what stopped it.
    dose_gy : (nz, ny, nx) float32 array, Gy
        The planned dose ``D x`` on the patient grid.
    mapping : StructureMapping
    """

    result: AutoPlanResult
    dose_gy: np.ndarray = field(repr=False)
    mapping: StructureMapping


def fluence_problem(patient: Patient, protocol: Protocol, *, xp: Any = np,
                    ring_mm: float = RING_MM, ring_step: int = RING_STEP,
                    structures: PlanningStructures | None = None) -> FluenceProblem:
    """Targets, goals and normal-tissue ring of ``patient`` under ``protocol``.

    Targets and their goals act on every other voxel (:func:`target_samples`) of the optimised
    volumes, the goals on ``Outside PTVs`` on the
    body outside the targets (:mod:`planner.planning_structures`): its hot-spot and maximum goals
    on the voxels within ``HOT_SPOT_SHELL_MM`` of a target (where such doses can occur) but not
    touching one, and its mean over all of it, each on every ``ring_step``-th voxel along each
    axis (:func:`sampled_outside`: each sample stands for ``ring_step**3`` voxels; the goal table
    on the CT grid counts every voxel).

    Parameters
    ----------
    patient : Patient
    protocol : Protocol
    xp : module
        ``numpy`` or ``cupy``: where the index arrays should live (the Dij's device).
    ring_mm : float, mm
        Normal tissue (inside the external contour, or the possible-dose mask where there is
        none, and outside every target) up to this distance from a target enters the fall-off
        objective.
    ring_step : int
        Keep every ``ring_step``-th ring voxel along each axis.
    structures : PlanningStructures, optional
        ``planning_structures(patient, protocol)``, when the caller has it already.

    Raises
    ------
    InputError
        A structure needed by a non-optional goal is missing (from ``map_structures``).
    """
    if structures is None:
        structures = planning_structures(patient, protocol)
    names = [n for n in structures.mapping if n != OUTSIDE_TARGETS]
    masks = [structures.mask(n) for n in names]
    is_target = [protocol.structure(n).kind == "target" for n in names]
    priority = [protocol.prescription_gy(n) or 0.0 for n in names]
    resolved = dict(zip(names, resolve_overlaps(masks, is_target, priority)))
    full = dict(zip(names, masks))
    in_target = target_samples(patient.grid.shape)
    for name, target in zip(names, is_target):
        if target:
            resolved[name] = resolved[name] & in_target
            full[name] = full[name] & in_target
    distance = distance_from_targets(patient, structures)
    sampled = sampled_outside(structures, ring_step)
    # Voxels next to a target on a coarse grid are partly target (a resampled mask keeps a voxel
    # at half its volume): the hot-spot goals on the optimiser's grid skip that first layer.
    adjacent = distance <= max(patient.grid.spacing_mm) * 1.01
    full[OUTSIDE_TARGETS] = sampled & (distance <= HOT_SPOT_SHELL_MM) & ~adjacent
    sample_cc = patient.grid.voxel_volume_cc * ring_step**3  # the volume one sample stands for

    def rows(mask: np.ndarray) -> Any:
        return xp.asarray(np.flatnonzero(mask.ravel()))

    def goal_rows(goal: Goal) -> tuple[Any, Any, float]:
        if goal.structure != OUTSIDE_TARGETS:
            return (rows(full[goal.structure]), rows(resolved[goal.structure]),
                    patient.grid.voxel_volume_cc)
        mask = sampled if goal.kind == "mean_dose" else full[OUTSIDE_TARGETS]
        return rows(mask), None, sample_cc

    targets = tuple(TargetDose(n, rows(resolved[n]), protocol.prescription_gy(n))  # type: ignore
                    for n in names if protocol.prescription_gy(n) is not None)
    goals = []
    for g in protocol.goals:
        if g.structure in full:
            indices, objective_indices, voxel_cc = goal_rows(g)
            goals.append(plan_goal(protocol, g, indices, voxel_cc, objective_indices))
    ring = sampled & (distance <= ring_mm)
    normal = (NormalTissue(rows(ring), xp.asarray(distance[ring])) if ring.any() else None)
    return FluenceProblem(targets, tuple(goals), normal, structures.names, structures)


def distance_from_targets(patient: Patient, structures: PlanningStructures) -> np.ndarray:
    """Distance (mm) of every voxel from the nearest voxel of a whole prescribed target (in the
    body)."""
    targets = ~structures.mask(OUTSIDE_TARGETS) & body_or_dense(patient)
    if not targets.any():
        return np.full(patient.grid.shape, np.inf)
    return scipy.ndimage.distance_transform_edt(~targets, sampling=patient.grid.spacing_mm)


def sample_lattice(shape: tuple[int, ...], step: int) -> np.ndarray:
    """``shape`` bool, True on every ``step``-th voxel along each axis (from the first)."""
    lattice = np.zeros(shape, dtype=bool)
    lattice[::step, ::step, ::step] = True
    return lattice


def target_samples(shape: tuple[int, ...]) -> np.ndarray:
    """``shape`` bool, True on every other voxel as on a 3-D checkerboard: the target voxels the
    optimiser and the Dij keep. A target's dose varies little from one 3 mm voxel to the next, so
    half of them give its DVH for about two thirds of the products' cost and of the Dij's rows
    (measured: ``benchmarks/results/design_history.md``, "Automatic planning")."""
    z, y, x = np.ogrid[tuple(slice(0, n) for n in shape)]
    return (z + y + x) % 2 == 0


def sampled_outside(structures: PlanningStructures, step: int = RING_STEP) -> np.ndarray:
    """``Outside PTVs`` on every ``step``-th voxel along each axis: the normal tissue as the
    optimiser samples it (its dose only shapes the fall-off and the mean)."""
    return structures.mask(OUTSIDE_TARGETS) & sample_lattice(structures.patient.grid.shape, step)


def planning_voxels(patient: Patient, protocol: Protocol, *, step: int = RING_STEP,
                    structures: PlanningStructures | None = None) -> np.ndarray:
    """``(nz, ny, nx)`` bool: the voxels whose beamlet dose the plan needs.

    Every voxel of every organ the protocol names, every other voxel of its targets
    (:func:`target_samples`) and every ``step``-th voxel along each axis of the rest of the grid.
    The Dij needs no other rows: the final dose is computed from the segments.
    """
    if structures is None:
        structures = planning_structures(patient, protocol)
    keep = sample_lattice(patient.grid.shape, step)
    in_target = target_samples(patient.grid.shape)
    for name, patient_name in structures.delineated.items():  # an optimised target lies
        mask = patient.structure(patient_name).mask            # within its own
        keep |= mask & in_target if protocol.structure(name).kind == "target" else mask
    return keep


def optimise_patient(patient: Patient, D: Any, protocol: Protocol, *,
                     regularisers: Sequence[Any] = (), sparing_objectives: Sequence[Any] = (),
                     achievable_dose_gy: np.ndarray | None = None,
                     time_limit_s: float | None = None,
                     progress: Callable[[str, Progress], None] | None = None,
                     problem: FluenceProblem | None = None) -> PatientPlan:
    """Automatic fluence plan of ``patient`` from ``protocol`` and its dose-influence matrix.

    Parameters
    ----------
    patient : Patient
    D : (n_voxels, n_beamlets) sparse matrix, Gy per unit beamlet weight
        scipy.sparse or cupyx.scipy.sparse; ``n_voxels`` is ``patient.grid.size`` (C order).
    protocol : Protocol
    regularisers : sequence of fluence objectives, optional
        E.g. ``optim.FluenceSmoothness(optim.neighbour_pairs(beamset.beam_index, row, col))``
        with the beamlets' integer grid positions, for smoother maps and fewer segments.
    sparing_objectives : sequence of dose objectives, optional
        Added from the sparing step on, over rows of ``D`` (e.g. a seed's dose mimicking,
        :func:`planner.predict.seed.seed_arguments`).
    achievable_dose_gy : (nz, ny, nx) float array, Gy, optional
        A dose thought achievable on the patient grid (e.g. a prediction): each organ goal's
        value on it is the floor of the first sparing push (``sparing_floor`` of
        :func:`optim.autoplan.plan_automatically`).
    time_limit_s : float, optional
        Wall-time budget of the optimisation.
    progress : callable, optional
        Called with the step name and each iteration's progress.
    problem : FluenceProblem, optional
        ``fluence_problem(patient, protocol, xp=...)`` on ``D``'s device, when the caller has it
        already.

    Returns
    -------
    PatientPlan
    """
    if D.shape[0] != patient.grid.size:
        raise ValueError(f"Dij has {D.shape[0]} rows, the patient grid {patient.grid.size} voxels")
    xp = array_module(D)
    if problem is None:
        problem = fluence_problem(patient, protocol, xp=xp)
    floor = None
    if achievable_dose_gy is not None:
        achievable = xp.asarray(np.asarray(achievable_dose_gy, dtype=np.float64).ravel())
        floor = [r.value for r in evaluate_goals(achievable, problem.goals)]
    result = plan_automatically(D, problem.targets, problem.goals,
                                normal_tissue=problem.normal_tissue, regularisers=regularisers,
                                sparing_objectives=sparing_objectives, sparing_floor=floor,
                                time_limit_s=time_limit_s, progress=progress)
    dose = D @ xp.asarray(result.x, dtype=D.dtype)
    if xp is not np:
        dose = xp.asnumpy(dose)
    return PatientPlan(result, np.asarray(dose, dtype=np.float32).reshape(patient.grid.shape),
                       problem.mapping)
