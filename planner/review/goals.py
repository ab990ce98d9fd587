"""A protocol's clinical goals on a dose, and the conflicts that make a protocol impossible.

Goals are evaluated by :func:`optim.autoplan.evaluate_goal` on the optimiser's form of each goal
(:func:`planner.protocol.plan_goal`), so the review and the optimiser call a goal met by the same
arithmetic; this module only puts the results in the goal's own units for people to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from optim.autoplan import evaluate_goal
from planner.patient import Patient
from planner.planning_structures import PlanningStructures, planning_structures
from planner.protocol import Goal, Protocol, StructureMapping, map_structures, plan_goal


@dataclass(frozen=True)
class GoalRow:
    """One clinical goal evaluated on a plan, in the units the protocol states it.

    Attributes
    ----------
    goal : Goal
    structure : str
        The patient's structure that plays ``goal.structure``.
    value, limit, margin : float
        Achieved value, limit and distance inside the limit (negative: unmet), in ``unit``.
    unit : str
        ``"Gy"`` for dose metrics (a limit given in % of the prescription is converted), ``"%"``
        or ``"cc"`` for volume metrics.
    met : bool
    dvh_point : (float, float) or None
        Where the goal sits on the DVH plot: (dose Gy, volume %) of its limit; None for a mean
        dose goal.
    """

    goal: Goal
    structure: str
    value: float
    limit: float
    margin: float
    unit: str
    met: bool
    dvh_point: tuple[float, float] | None


def goal_rows_json(rows: Sequence[GoalRow]) -> list[dict[str, Any]]:
    """``rows`` as plain data for JSON (``summary.json``, ``planner review --json``); a value
    without a finite number (a goal without a limit) is null, which JSON can hold."""
    def number(value: float) -> float | None:
        return round(float(value), 4) if np.isfinite(value) else None

    return [{"goal": g.goal.label, "structure": g.structure, "priority": g.goal.priority,
             "value": number(g.value), "limit": number(g.limit),
             "margin": number(g.margin), "unit": g.unit, "met": bool(g.met)} for g in rows]


def evaluate_protocol(patient: Patient, dose_gy: np.ndarray, protocol: Protocol, *,
                      structures: PlanningStructures | None = None) -> tuple[GoalRow, ...]:
    """Every goal of ``protocol`` whose structure the patient has, evaluated on ``dose_gy``.

    Target goals are evaluated on each target's optimised volume and the goals on ``Outside
    PTVs`` on the body outside the targets (:mod:`planner.planning_structures`).

    Parameters
    ----------
    patient : Patient
    dose_gy : (nz, ny, nx) float array, Gy
        On ``patient.grid``.
    protocol : Protocol
    structures : PlanningStructures, optional
        ``planning_structures(patient, protocol)``, when the caller has it already.

    Returns
    -------
    tuple of GoalRow
        In protocol order; goals on missing optional structures are left out.

    Raises
    ------
    InputError
        A structure needed by a non-optional goal is missing (from
        :func:`planner.protocol.map_structures`).
    """
    if dose_gy.shape != patient.grid.shape:
        raise ValueError(f"dose shape {dose_gy.shape} differs from grid {patient.grid.shape}")
    if structures is None:
        structures = planning_structures(patient, protocol)
    mapping = structures.mapping
    flat = np.asarray(dose_gy, dtype=np.float64).ravel()
    voxel_cc = patient.grid.voxel_volume_cc
    rows = []
    for goal in protocol.goals:
        if goal.structure not in mapping:
            continue
        name = mapping[goal.structure]
        indices = np.flatnonzero(structures.patient.structure(name).mask.ravel())
        result = evaluate_goal(flat, plan_goal(protocol, goal, indices, voxel_cc))
        structure_cc = indices.size * voxel_cc
        if goal.kind == "volume_at_dose":
            # The optimiser's volumes are fractions; show them as the protocol states them.
            scale = 100.0 if goal.unit == "%" else structure_cc
            unit = goal.unit
            dose_gy_at = _threshold_gy(protocol, goal)
            point = (dose_gy_at, 100.0 * result.limit)
        else:
            scale, unit = 1.0, "Gy"
            point = (None if goal.kind == "mean_dose" else
                     (result.limit, 100.0 * min(_volume_fraction(goal, structure_cc), 1.0)))
        rows.append(GoalRow(goal, name, result.value * scale, result.limit * scale,
                            result.margin * scale, unit, result.met, point))
    return tuple(rows)


def _threshold_gy(protocol: Protocol, goal: Goal) -> float:
    """The dose threshold of a V metric in Gy (a % dose refers to the reference dose)."""
    assert goal.dose is not None
    if goal.dose_unit == "%":
        return goal.dose * protocol.reference_dose_gy(goal.structure) / 100.0
    return goal.dose


def _volume_fraction(goal: Goal, structure_cc: float) -> float:
    assert goal.volume is not None
    return goal.volume / 100.0 if goal.volume_unit == "%" else goal.volume / structure_cc


@dataclass(frozen=True)
class Conflict:
    """A target overlapping an organ whose hard maximum-dose limit is below its prescription.

    Attributes
    ----------
    target, organ : str
        Patient structure names.
    overlap_cc : float, cm^3
    target_fraction : float
        Overlap as a fraction of the target's volume.
    prescription_gy, limit_gy : float, Gy
    goal : Goal
        The organ's goal that cannot be met together with the prescription.
    explanation : str
        One line for the user, with the numbers and what to change.
    """

    target: str
    organ: str
    overlap_cc: float
    target_fraction: float
    prescription_gy: float
    limit_gy: float
    goal: Goal
    explanation: str


def protocol_conflicts(patient: Patient, protocol: Protocol,
                       names: StructureMapping | None = None) -> tuple[Conflict, ...]:
    """Targets that overlap an organ whose hard maximum-dose limit is below their prescription.

    A maximum-dose limit is a hard ``D<v>`` goal with an upper bound (``Dmax``, ``D0.1cc``,
    ``D2%``, ...). It conflicts with a target's prescription when the limit is below the
    prescribed dose and the overlap of target and organ is larger than the volume ``v`` the goal
    lets exceed the limit: then more than ``v`` of the organ sits inside a target that should
    receive its prescription. Such a protocol cannot be met by any plan; the fix is in the
    structures (crop the target from the organ, or give the overlap its own target) or in the
    goal (make it soft).

    Parameters
    ----------
    patient : Patient
    protocol : Protocol
    names : StructureMapping, optional
        ``map_structures(protocol, <the patient's structure names>)``, when the caller has it.

    Returns
    -------
    tuple of Conflict
        Empty when the protocol is free of such conflicts.

    Raises
    ------
    InputError
        A structure needed by a non-optional goal is missing (from
        :func:`planner.protocol.map_structures`).
    """
    if names is None:
        names = map_structures(protocol, [s.name for s in patient.structures])
    mapping = names.mapping
    voxel_cc = patient.grid.voxel_volume_cc
    conflicts = []
    for rx in protocol.prescriptions:
        if rx.target not in mapping:
            continue
        target_name = mapping[rx.target]
        target = patient.structure(target_name).mask
        target_cc = float(target.sum()) * voxel_cc
        for goal in protocol.goals:
            if not (goal.hard and goal.bound == "max" and goal.kind == "dose_at_volume"
                    and goal.structure in mapping
                    and protocol.structure(goal.structure).kind == "organ"):
                continue
            limit_gy = (goal.value * protocol.reference_dose_gy(goal.structure) / 100.0
                        if goal.unit == "%" else goal.value)
            if limit_gy >= rx.dose_gy:
                continue
            organ_name = mapping[goal.structure]
            organ = patient.structure(organ_name).mask
            organ_cc = float(organ.sum()) * voxel_cc
            overlap_cc = float((target & organ).sum()) * voxel_cc
            allowed_cc = min(_volume_fraction(goal, organ_cc), 1.0) * organ_cc
            if overlap_cc <= allowed_cc:
                continue
            fraction = overlap_cc / target_cc
            explanation = (
                f"{target_name} (prescribed {rx.dose_gy:g} Gy) overlaps {organ_name} by "
                f"{overlap_cc:.2f} cc ({100 * fraction:.1f} % of {target_name}), but the hard goal "
                f"{goal.label} allows only {allowed_cc:.2f} cc of {organ_name} above "
                f"{limit_gy:g} Gy: no plan can meet both; crop {target_name} from {organ_name} "
                f"(or give the overlap its own lower prescription) or make the goal soft")
            conflicts.append(Conflict(target_name, organ_name, overlap_cc, fraction, rx.dose_gy,
                                      limit_gy, goal, explanation))
    return tuple(conflicts)
