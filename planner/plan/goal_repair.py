"""Delivery, goal repair: a hard goal that the fluence plan met and the segment weights lost
(mimicking a dose penalises an organ's over-dose by its square, so a maximum with little margin
can slip) is pushed back inside its limit by :func:`optim.restore_goals`."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dose._xp import array_module, to_device
from optim import GoalResult, PlanGoal, evaluate_goals, restore_goals
from optim.fluence import FluenceResult
from planner.patient import Patient
from planner.plan.delivery import DeliveredPlan, Delivery
from planner.plan.fluence import FluencePlan
from planner.plan.log import StepLog
from planner.plan.segment_weights import SEGMENT_WEIGHT_ITERATIONS, SegmentWeights, row_of_voxel
from planner.review.goals import GoalRow


@dataclass(frozen=True)
class GoalRepairReport:
    """The hard goals the fluence plan met and the segment weights lost (``lost``, labels), the
    repair's re-optimisations (``rounds``) and the lost goals met again (``restored``)."""

    lost: tuple[str, ...]
    rounds: int
    restored: tuple[str, ...]

    @property
    def still_lost(self) -> tuple[str, ...]:
        """The lost hard goals the repair did not restore."""
        return tuple(label for label in self.lost if label not in self.restored)


def repair_goals(delivery: Delivery, weights: SegmentWeights, fluence: FluencePlan,
                 planned: DeliveredPlan, *, log: StepLog
                 ) -> tuple[FluenceResult, DeliveredPlan, GoalRepairReport]:
    """The step "goal repair", run when the deliverable plan ``planned`` (from ``weights``) lost
    a hard goal that ``fluence`` met on the CT grid or on the optimiser's voxels. The repaired
    weights are kept only where their plan loses no hard goal that ``planned`` meets.

    Returns
    -------
    result : FluenceResult
        The segment weights kept (``weights.result`` where the repair did not improve them on
        the segment-dose rows, or lost a hard goal on the patient grid).
    planned : DeliveredPlan
        The deliverable plan of ``result``.
    report : GoalRepairReport
    """
    fluence_met = ({r.goal.label for r in fluence.goals if r.met}
                   | {r.label for r in fluence.result.goals if r.met})
    lost = [r for r in planned.goals if r.goal.hard and not r.met and r.goal.label in fluence_met]
    result = weights.result
    if not lost:
        return result, planned, GoalRepairReport((), 0, ())
    S = weights.S
    xp = array_module(S)
    hard = segment_weight_goals([g for g in fluence.problem.goals if g.hard],
                                delivery.grids.dose_grid.size, weights.voxel_index, xp=xp)
    on_rows = evaluate_goals(S @ xp.asarray(result.x, dtype=S.dtype), hard)
    repair = restore_goals(S, weights.objectives, result,
                           goals_to_restore(hard, on_rows, delivery.grids.ct_structures.patient,
                                            fluence.goals, planned.goals,
                                            met_on_dose_grid=fluence_met),
                           min_weight=delivery.fields.min_weight, mu_weight=weights.mu_price,
                           max_iter=SEGMENT_WEIGHT_ITERATIONS)
    before = {r.goal.label: r for r in planned.goals}
    rejected = ""
    if repair.result is not result:
        repaired = delivery.plan(repair.result.x)
        newly_lost = hard_goals_lost(planned.goals, repaired.goals)
        if newly_lost:
            # The rows sample the dose grid: a repair that looks better there can lose a hard
            # goal on the patient grid. Kept only where it loses none.
            rejected = f"; not kept: it loses {', '.join(newly_lost)}"
        else:
            result, planned = repair.result, repaired
    after = {r.goal.label: r for r in planned.goals}
    log.step("goal repair", f"{repair.rounds} rounds of segment weights with the goals: "
             + "; ".join(f"{r.goal.label} {before[r.goal.label].value:.2f} -> "
                         f"{after[r.goal.label].value:.2f} {r.unit} "
                         f"({'restored' if after[r.goal.label].met else 'still lost'})"
                         for r in lost)
             + rejected + f"; {planned.goals_met}, {int(np.count_nonzero(result.x))} segments")
    return result, planned, GoalRepairReport(
        tuple(r.goal.label for r in lost), repair.rounds,
        tuple(r.goal.label for r in lost if after[r.goal.label].met))


def hard_goals_met(goals: Sequence[GoalRow]) -> int:
    """How many of a plan's hard goals it meets."""
    return sum(r.met for r in goals if r.goal.hard)


def hard_goals_lost(before: Sequence[GoalRow], after: Sequence[GoalRow]) -> list[str]:
    """Labels of the hard goals met in ``before`` and not in ``after`` (two goal tables of the
    same protocol)."""
    met_after = {r.goal.label for r in after if r.met}
    return [r.goal.label for r in before if r.goal.hard and r.met and r.goal.label not in met_after]


def segment_weight_goals(goals: Sequence[PlanGoal], n_voxels: int, voxel_index: np.ndarray, *,
                         xp: Any = np) -> tuple[PlanGoal, ...]:
    """``goals`` on the dose grid's voxels (e.g. the fluence optimiser's hard goals,
    :attr:`planner.optimize.FluenceProblem.goals`) moved onto the rows of the segment-dose
    matrix, for :func:`optim.restore_goals`.

    Parameters
    ----------
    goals : sequence of PlanGoal
        Indices are flat dose-grid voxels (numpy or cupy).
    n_voxels : int
        Voxels of the dose grid.
    voxel_index : (n_rows,) int numpy array
        The flat dose-grid voxel of each row (rows for every structure voxel:
        :func:`planner.plan.grid.needed_voxels`).
    xp : module
        Where the returned indices live (the matrix's device).
    """
    row_of = row_of_voxel(n_voxels, voxel_index)

    def rows(indices: Any) -> Any:
        found = row_of[to_device(indices, "cpu")]
        return xp.asarray(found[found >= 0])

    return tuple(dataclasses.replace(g, indices=rows(g.indices), objective_indices=(
                     None if g.objective_indices is None else rows(g.objective_indices)))
                 for g in goals)


def goals_to_restore(goals: Sequence[PlanGoal], on_rows: Sequence[GoalResult], patient: Patient,
                     goals_fluence: Sequence[GoalRow], goals_plan: Sequence[GoalRow], *,
                     met_on_dose_grid: Collection[str] = ()) -> tuple[PlanGoal, ...]:
    """The hard goals (on the segment-dose rows) that the fluence plan met, each lost one with
    its limit moved by how much the rows overrate it.

    The goal table is read on the patient grid; the rows sample the dose grid (3 mm voxels, a
    D0.1cc of a few voxels), where a goal can look met that the patient grid calls lost. A lost
    goal's limit on the rows moves by the difference of its two margins, so that meeting it on
    the rows meets it on the patient grid, as far as the difference holds for the new weights
    (cases: benchmarks/results/design_history.md, "Goal repair").

    Parameters
    ----------
    goals : sequence of PlanGoal
        :func:`segment_weight_goals`.
    on_rows : sequence of GoalResult
        ``goals`` evaluated on the segments' dose (rows of the segment-dose matrix).
    patient : Patient
        The patient on its own grid (for a cc volume's structure size).
    goals_fluence, goals_plan : sequence of GoalRow
        The fluence plan's and the deliverable plan's goal tables (patient grid).
    met_on_dose_grid : collection of str
        Labels of goals the fluence optimiser met on its own grid: counted as met by the fluence
        plan too (a goal met there by a few tenths of a Gy can read as missed on the patient
        grid; it is the deliverable plan's to restore).
    """
    fluence_met = {r.goal.label for r in goals_fluence if r.met} | set(met_on_dose_grid)
    plan = {r.goal.label: r for r in goals_plan}
    kept = []
    for g, r in zip(goals, on_rows):
        if g.label not in fluence_met or g.label not in plan:
            continue
        row = plan[g.label]
        if not row.met:
            # GoalRow margins are in the protocol's units; PlanGoal's in Gy or a volume fraction
            # of the goal's own rows (cc per fraction: the limit's ratio, which holds for a goal
            # on sampled rows too, e.g. the hot-spot goal on every 2nd voxel of Outside PTVs).
            scale = {"Gy": 1.0, "%": 100.0}.get(row.unit) or (
                row.limit / g.limit if g.limit > 0 else
                patient.structure(row.structure).mask.sum() * patient.grid.voxel_volume_cc)
            overrated = r.margin - row.margin / scale
            g = dataclasses.replace(g, limit=g.limit - overrated if g.bound == "max"
                                    else g.limit + overrated)
        kept.append(g)
    return tuple(kept)
