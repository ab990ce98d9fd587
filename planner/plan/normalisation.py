"""Delivery, normalisation: every segment's MU scaled so that the main target's D95 is at its
prescription, as far as the hard goals allow (a stated rule, as planning systems have); a plan
that misses a hard goal which a uniform factor can restore (e.g. PTV D1 % 0.3 % over its limit
with D99 to spare) is scaled to the nearest factor that meets every hard goal instead."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from dose.grid import Grid
from optim import dvh
from planner.patient import Patient
from planner.plan.delivery import DeliveredPlan, Delivery
from planner.plan.goal_repair import hard_goals_lost, hard_goals_met
from planner.plan.log import StepLog
from planner.plan.sequencing import MIN_MU_PER_SEGMENT
from planner.planning_structures import PlanningStructures
from planner.protocol import Protocol
from planner.review.dvh import resample_dose
from planner.review.goals import GoalRow, evaluate_protocol

#: A main target's D95 at most this far above its prescription is left there: a factor of 0.995
#: or more changes no figure a dosimetrist reads, and where a segment sits at the least MU it
#: costs a whole dose calculation (benchmarks/results/design_history.md, "Normalisation tolerance").
NORMALISATION_TOLERANCE = 0.005
#: A factor that restores a hard goal is kept this far (relative) inside the goals' bounds.
RESTORE_INSIDE = 2e-4


def normalise(delivery: Delivery, mu: np.ndarray, planned: DeliveredPlan, *, log: StepLog
              ) -> tuple[DeliveredPlan, str]:
    """The step "normalisation" of the deliverable plan ``planned`` (segment MU ``mu`` over all
    fractions), unless the protocol says ``normalise = false``: the plan scaled by
    :func:`normalisation_scale`, and a line saying what was done.

    The dose is linear in the MU, so a scaled plan's dose is the dose scaled; where the factor
    takes a segment below the least MU, that segment stays at the least MU and the dose is
    recomputed, and the plan is kept only if it keeps the hard goals ``planned`` meets.
    """
    case, grids = delivery.case, delivery.grids
    if not case.protocol.planning.normalise:
        return planned, "none (optimised to the goals; normalise = false in the protocol)"
    scale, note = normalisation_scale(case.patient, grids.dose_grid, planned.dose_gy,
                                      case.protocol, grids.ct_structures, planned.goals)
    mu = mu * scale
    min_weight = delivery.fields.min_weight
    floored = (mu > 0) & (mu < min_weight)
    if scale != 1.0 and not floored.any():
        dose = planned.dose_gy * np.float32(scale)
        planned = DeliveredPlan(tuple(dataclasses.replace(b, segments=tuple(
            dataclasses.replace(seg, mu=seg.mu * scale) for seg in b.segments))
            for b in planned.beams), dose, delivery.goals_of(dose))
    elif scale != 1.0:
        mu[floored] = min_weight
        scaled = delivery.plan(mu)
        if keeps_hard_goals(planned.goals, scaled.goals):
            planned = scaled
            note += (f"; {int(floored.sum())} segments kept at the least "
                     f"{MIN_MU_PER_SEGMENT:g} MU, the dose recomputed")
        else:
            note = (f"not scaled: x{scale:.3f} with {int(floored.sum())} segments "
                    f"kept at the least {MIN_MU_PER_SEGMENT:g} MU loses or worsens a hard goal")
    log.step("normalisation", note)
    return planned, note


def keeps_hard_goals(before: Sequence[GoalRow], after: Sequence[GoalRow]) -> bool:
    """Whether goal table ``after`` keeps every hard goal met in ``before`` met, and takes none
    that ``before`` misses further from its limit (an organ over its limit is not scaled
    hotter)."""
    missed = {r.goal.label: r.margin for r in before if r.goal.hard and not r.met}
    return not hard_goals_lost(before, after) and all(
        r.margin >= missed[r.goal.label] for r in after if r.goal.label in missed)


def hard_goal_scale(goals: Sequence[GoalRow], wanted: float) -> float | None:
    """Where goal table ``goals`` misses a hard goal: the factor on the dose nearest to
    ``wanted`` at which every hard dose goal (Gy) is met, or None where no factor is.

    A dose metric (D95 %, D0.1cc, the mean, the maximum) scales with the dose, so each hard dose
    goal bounds the factor by its limit over its value: a maximum from above, a minimum from
    below. Volume goals are not bounded here; the caller evaluates the
    plan at the factor. The factor is kept ``RESTORE_INSIDE`` inside the bounds, so a goal on
    its limit in float32 stays met.
    """
    if all(r.met for r in goals if r.goal.hard):
        return None
    low, high = 0.0, np.inf
    for r in goals:
        if not (r.goal.hard and r.unit == "Gy" and r.value > 0 and np.isfinite(r.limit)):
            continue
        bound = r.limit / r.value
        if r.goal.bound == "max":
            high = min(high, bound * (1.0 - RESTORE_INSIDE))
        else:
            low = max(low, bound * (1.0 + RESTORE_INSIDE))
    if low > high:
        return None
    return float(np.clip(wanted, low, high))


def normalisation_scale(patient: Patient, dose_grid: Grid, dose_gy: np.ndarray,
                        protocol: Protocol, structures: PlanningStructures,
                        goals: Sequence[GoalRow], *, bisections: int = 6) -> tuple[float, str]:
    """The factor on every segment's MU that puts the main target's D95 at its prescription,
    and a line saying what was done; where the plan misses a hard goal, the factor nearest to
    that one which meets every hard goal instead (hard goals come before the D95 rule, a soft
    goal: :func:`hard_goal_scale`), if there is one and it loses no hard goal met.

    The main target is the one with the highest prescription; its D95 is taken on its optimised
    volume (:mod:`planner.planning_structures`) on the CT grid, as the goal table does. The
    D95 already up to ``NORMALISATION_TOLERANCE`` above the prescription is left as it is. The
    factor is applied only as far as it keeps every hard goal that ``goals`` meets met and takes
    none that it misses further from its limit (:func:`keeps_hard_goals`): where the full factor
    would, the largest step towards it that does not is found by
    bisection (``bisections`` halvings), so a plan is never left hot (or cold) by more than its
    hard goals demand. (A segment the factor would take below the least MU a segment may carry
    is the caller's to keep there: :func:`normalise` recomputes the dose then.)

    Parameters
    ----------
    patient : Patient
        On the CT grid, as imported.
    dose_grid : Grid
    dose_gy : (nz, ny, nx) float array, Gy, on ``dose_grid``
        The deliverable plan's dose (linear in the MU).
    protocol : Protocol
    structures : PlanningStructures
        ``planning_structures(patient, protocol)``.
    goals : sequence of GoalRow
        The goal table of ``dose_gy``.
    """
    main = max(protocol.prescriptions, key=lambda p: p.dose_gy)
    if main.target not in structures.mapping:
        return 1.0, "none (the main target is not delineated)"
    name = structures.mapping[main.target]
    dose_ct = resample_dose(dose_gy, dose_grid, patient.grid)
    d95 = dvh.dose_at_volume(dose_ct[structures.mask(main.target)].astype(np.float64), 0.95)
    if d95 <= 0:
        return 1.0, f"none ({name} receives no dose)"
    wanted = main.dose_gy / d95 * (1.0 + 1e-5)  # a hair above: float32 must not leave D95 < Rx
    rule = f"{name} D95 at its prescription {main.dose_gy:g} Gy"

    def evaluate(scale: float) -> list[GoalRow]:
        return evaluate_protocol(patient, dose_ct * np.float32(scale), protocol,
                                 structures=structures)

    restoring = hard_goal_scale(goals, wanted)
    if restoring is not None:
        restored = evaluate(restoring)
        if (not hard_goals_lost(goals, restored)
                and hard_goals_met(restored) > hard_goals_met(goals)):
            labels = [r.goal.label for r in goals if r.goal.hard and not r.met]
            return restoring, (f"{rule} needs x{wanted:.3f}; scaled x{restoring:.3f} instead, the "
                               f"nearest factor that meets every hard goal ({', '.join(labels)} "
                               f"restored; D95 {d95:.2f} -> {d95 * restoring:.2f} Gy)")
    if 1.0 / (1.0 + NORMALISATION_TOLERANCE) <= wanted <= 1.0:
        return 1.0, (f"{rule}, or up to {100 * NORMALISATION_TOLERANCE:g} % above it: D95 "
                     f"{d95:.2f} Gy, not scaled")
    def keeps(scale: float) -> bool:
        return keeps_hard_goals(goals, evaluate(scale))

    done = wanted
    if not keeps(wanted):
        low, high = 1.0, wanted
        for _ in range(bisections):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if keeps(middle) else (low, middle)
        done = low
    if done == 1.0:
        return 1.0, (f"{rule} would need x{wanted:.3f}, which loses or worsens a hard goal; "
                     f"not scaled (D95 {d95:.2f} Gy)")
    if done != wanted:
        return done, (f"{rule} needs x{wanted:.3f}; scaled x{done:.3f}, as far as the hard goals "
                      f"allow (D95 {d95:.2f} -> {d95 * done:.2f} Gy)")
    return done, f"{rule}: every segment's MU x{done:.3f} (D95 {d95:.2f} Gy before)"
