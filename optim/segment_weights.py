"""Segment-weight optimisation: the MU of each MLC segment, from the segments' own dose.

After leaf sequencing the plan is a set of apertures; their dose, computed by the dose engine
from the leaf and jaw positions (not from the beamlets), forms the matrix ``S`` (voxels x
segments, Gy per MU). Re-optimising the segment MU against the clinical objectives recovers most
of what the stratification and the aperture dose (penumbra, transmission) cost.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse

from optim._xp import array_module
from optim.autoplan import (GOAL_WEIGHT, HARD_GROWTH, GoalResult, PlanGoal, aim_inside,
                            evaluate_goals, goal_objective, insisted_aim)
from optim.fluence import FluenceResult, Objective, optimise_fluence
from optim.objectives import DoseOffset, LinearCost


def _scaled_columns(S: Any) -> tuple[Any, np.ndarray]:
    """``S`` with every column divided by its Euclidean norm, and the norms ``(n_segments,)``.

    Segment doses overlap heavily (nested apertures), and their sizes differ by orders of
    magnitude; scaling the columns brings the condition number of a small test case from
    about 24,000 to about 1,000, and L-BFGS-B then reaches the optimum instead of stalling on its
    relative-change stop (tests/optim/test_segment_weights.py).
    """
    xp = array_module(S)
    sparse = hasattr(S, "tocsr")  # a scipy or cupyx sparse matrix
    squares = S.multiply(S).sum(axis=0) if sparse else (S * S).sum(axis=0)
    norms = np.sqrt(np.asarray(xp.asnumpy(squares) if xp is not np else squares,
                               dtype=np.float64).ravel())
    norms[norms == 0] = 1.0  # a segment that reaches none of the voxels: leave it unscaled
    factors = xp.asarray(1.0 / norms, dtype=S.dtype)
    if sparse:
        module = scipy.sparse if xp is np else importlib.import_module("cupyx.scipy.sparse")
        return (S @ module.diags(factors)).tocsr(), norms
    return S * factors[None, :], norms


def _solve(S: Any, objectives: Sequence[Objective], w0: np.ndarray, max_iter: int,
           rel_tol: float, mu_weight: float) -> FluenceResult:
    """:func:`optimise_fluence` over ``w >= 0`` in column-scaled variables, ``x`` back in MU;
    ``mu_weight * sum(w)`` added (in the scaled variables ``v = w * norms``: cost ``1 / norms``)."""
    scaled, norms = _scaled_columns(S)
    regularisers = []
    if mu_weight > 0:
        xp = array_module(S)
        regularisers.append(LinearCost(xp.asarray(1.0 / norms, dtype=S.dtype), mu_weight))
    result = optimise_fluence(scaled, objectives, w0 * norms, regularisers=regularisers,
                              max_iter=max_iter, rel_tol=rel_tol)
    return dataclasses.replace(result, x=result.x / norms)


def optimise_segment_weights(S: Any, objectives: Sequence[Objective], w0: np.ndarray, *,
                             min_weight: float = 0.0, mu_weight: float = 0.0,
                             max_iter: int = 200, rel_tol: float = 1e-5) -> FluenceResult:
    """Segment MU minimising the objectives, each segment either 0 or at least ``min_weight``.

    The constraint "0 or >= min_weight" is not convex; it is met in two L-BFGS-B passes of
    :func:`optim.fluence.optimise_fluence`, each over weights scaled by the norm of their
    segment's dose column:

    1. all weights free above 0;
    2. segments that ended below ``min_weight / 2`` are dropped (weight 0, the nearer of the two
       allowed values), the others are re-optimised with ``w >= min_weight``, written as
       ``w = min_weight + u`` with ``u >= 0`` and the dose of ``min_weight`` on every kept
       segment added to each objective's dose.

    Parameters
    ----------
    S : (n_voxels, n_segments) array or sparse matrix, Gy per MU
        Dose of each segment per MU (numpy/scipy or cupy/cupyx; dense is fine for the few
        hundred segments of a plan).
    objectives : sequence of dose objectives
        As for :func:`optim.fluence.optimise_fluence` (``value(dose)``, ``gradient(dose)``).
    w0 : (n_segments,) float array, MU
        Starting weights (the sequencer's weights converted to MU).
    min_weight : float, MU
        Minimum MU of a segment that is delivered.
    mu_weight : float, objective units per MU
        Price of the plan's MU: ``mu_weight * sum(w)`` (:class:`optim.objectives.LinearCost`) is
        added to the objectives, so MU are given up where the dose objectives gain less than
        the price (segments that add modulation, not dose); 0 (default) leaves them out. In
        the second pass it prices the MU above the minimum (the minimum's are fixed there).
    max_iter : int
        Maximum L-BFGS-B iterations per pass.
    rel_tol : float
        Relative change of the objective that stops a pass.

    Returns
    -------
    FluenceResult
        ``x`` the segment MU ``(n_segments,)``: each 0 or ``>= min_weight``; ``value`` the
        objective at ``x`` (with the MU price of the last pass); iterations, evaluations and
        history of both passes together.
    """
    first = _solve(S, objectives, np.asarray(w0, dtype=np.float64), max_iter, rel_tol, mu_weight)
    if min_weight <= 0:
        return first
    keep = first.x >= min_weight / 2
    if not keep.any():
        keep[np.argmax(first.x)] = True  # a beam with no segment left would be no beam at all
    xp = array_module(S)
    kept = np.flatnonzero(keep)
    S_kept = S[:, xp.asarray(kept)]
    offset = S_kept @ xp.full(kept.size, min_weight, dtype=S.dtype)
    second = _solve(S_kept, [DoseOffset(o, offset) for o in objectives],
                    np.clip(first.x[kept] - min_weight, 0.0, None), max_iter, rel_tol, mu_weight)
    weights = np.zeros_like(first.x)
    weights[kept] = second.x + min_weight
    return FluenceResult(
        x=weights, value=second.value, iterations=first.iterations + second.iterations,
        evaluations=first.evaluations + second.evaluations,
        elapsed_s=first.elapsed_s + second.elapsed_s, stop_reason=second.stop_reason,
        history=first.history + second.history)


@dataclass(frozen=True)
class GoalRepair:
    """Outcome of :func:`restore_goals`.

    Attributes
    ----------
    result : FluenceResult
        The segment weights kept: the repaired ones if they meet more of the goals than the
        start did, else the start unchanged.
    before, after : tuple of GoalResult
        The goals on the start's and on ``result``'s dose (rows of ``S``), in the order given.
    rounds : int
        Re-optimisations made (0: every goal was met at the start).
    """

    result: FluenceResult
    before: tuple[GoalResult, ...]
    after: tuple[GoalResult, ...]
    rounds: int


def restore_goals(S: Any, objectives: Sequence[Objective], start: FluenceResult,
                  goals: Sequence[PlanGoal], *, min_weight: float = 0.0, mu_weight: float = 0.0,
                  rounds: int = 3, max_iter: int = 200, rel_tol: float = 1e-5) -> GoalRepair:
    """Re-optimise segment weights until ``goals`` are met again, or the rounds run out.

    Mimicking a fluence plan's dose penalises an organ's over-dose by its square, so a
    maximum-dose goal that the fluence plan met with little margin can slip a little after
    sequencing. Each round adds, for every goal unmet on ``S @ w``, the goal's own objective
    (``MaxDVH`` / ``MinDVH`` / ``MeanDose`` at the goal, as the fluence optimiser's hard-goal
    step builds it) to ``objectives`` and re-runs :func:`optimise_segment_weights` from the last
    weights, with the same MU price and minimum. The objective aims inside the limit
    (:func:`optim.autoplan.aim_inside`) at weight ``GOAL_WEIGHT``; a goal still unmet gets
    ``HARD_GROWTH`` times the weight and its aim moved by the shortfall
    (:func:`optim.autoplan.insisted_aim`).

    Parameters
    ----------
    S : (n_voxels, n_segments) array or sparse matrix, Gy per MU
        As for :func:`optimise_segment_weights`.
    objectives : sequence of dose objectives
        The segment-weight problem's own objectives (kept in every round).
    start : FluenceResult
        :func:`optimise_segment_weights`' result; ``start.x`` (n_segments,) MU.
    goals : sequence of PlanGoal
        Goals to hold, indexed on the rows of ``S`` (typically the hard goals the fluence plan
        met).
    min_weight, mu_weight, max_iter, rel_tol
        As for :func:`optimise_segment_weights`.
    rounds : int
        Most re-optimisations.

    Returns
    -------
    GoalRepair
        The repaired weights only where they meet more of ``goals`` than ``start``.
    """
    xp = array_module(S)

    def achieved(w: np.ndarray) -> tuple[GoalResult, ...]:
        return evaluate_goals(S @ xp.asarray(w, dtype=S.dtype), goals)

    def met(results: Sequence[GoalResult]) -> int:
        return sum(r.met for r in results)

    before = achieved(start.x)
    best, best_goals, current, results = start, before, start, before
    weights = [0.0] * len(goals)
    aims = [aim_inside(g, g.limit) for g in goals]
    done = 0
    while done < rounds and met(results) < len(goals):
        for i, r in enumerate(results):
            if r.met:
                continue
            if weights[i] == 0.0:
                weights[i] = GOAL_WEIGHT
            else:  # still unmet with its objective on: insist, as the fluence optimiser does
                weights[i] *= HARD_GROWTH
                aims[i] = insisted_aim(goals[i], aims[i], r)
        extra = [goal_objective(g, a, w) for g, a, w in zip(goals, aims, weights) if w > 0.0]
        current = optimise_segment_weights(S, list(objectives) + extra, current.x,
                                           min_weight=min_weight, mu_weight=mu_weight,
                                           max_iter=max_iter, rel_tol=rel_tol)
        results = achieved(current.x)
        done += 1
        if met(results) > met(best_goals):
            best, best_goals = current, results
    return GoalRepair(best, before, best_goals, done)
