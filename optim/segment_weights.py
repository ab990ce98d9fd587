"""Segment-weight optimisation: the MU of each MLC segment, from the segments' own dose.

After leaf sequencing the plan is a set of apertures; their dose, computed by the dose engine
from the leaf and jaw positions (not from the beamlets), forms the matrix ``S`` (voxels x
segments, Gy per MU). Re-optimising the segment MU against the clinical objectives recovers most
of what the stratification and the aperture dose (penumbra, transmission) cost.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optim._xp import array_module
from optim.fluence import FluenceResult, Objective, optimise_fluence


@dataclass(frozen=True)
class _Offset:
    """An objective of ``dose + offset``: the optimiser sees only the weights above the minimum."""

    objective: Objective
    offset: Any = field(repr=False)

    def value(self, dose: Any) -> float:
        return self.objective.value(dose + self.offset)

    def gradient(self, dose: Any) -> Any:
        return self.objective.gradient(dose + self.offset)


def optimise_segment_weights(S: Any, objectives: Sequence[Objective], w0: np.ndarray, *,
                             min_weight: float = 0.0, max_iter: int = 200,
                             rel_tol: float = 1e-5) -> FluenceResult:
    """Segment MU minimising the objectives, each segment either 0 or at least ``min_weight``.

    The constraint "0 or >= min_weight" is not convex; it is met in two L-BFGS-B passes of
    :func:`optim.fluence.optimise_fluence`:

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
    max_iter : int
        Maximum L-BFGS-B iterations per pass.
    rel_tol : float
        Relative change of the objective that stops a pass.

    Returns
    -------
    FluenceResult
        ``x`` the segment MU ``(n_segments,)``: each 0 or ``>= min_weight``; ``value`` the
        objective at ``x``; iterations, evaluations and history of both passes together.
    """
    first = optimise_fluence(S, objectives, w0, max_iter=max_iter, rel_tol=rel_tol)
    if min_weight <= 0:
        return first
    keep = first.x >= min_weight / 2
    if not keep.any():
        keep[np.argmax(first.x)] = True  # a beam with no segment left would be no beam at all
    xp = array_module(S)
    kept = np.flatnonzero(keep)
    S_kept = S[:, xp.asarray(kept)]
    offset = S_kept @ xp.full(kept.size, min_weight, dtype=S.dtype)
    second = optimise_fluence(S_kept, [_Offset(o, offset) for o in objectives],
                              np.clip(first.x[kept] - min_weight, 0.0, None),
                              max_iter=max_iter, rel_tol=rel_tol)
    weights = np.zeros_like(first.x)
    weights[kept] = second.x + min_weight
    return FluenceResult(
        x=weights, value=second.value, iterations=first.iterations + second.iterations,
        evaluations=first.evaluations + second.evaluations,
        elapsed_s=first.elapsed_s + second.elapsed_s, stop_reason=second.stop_reason,
        history=first.history + second.history)
