"""Dose and fluence objectives: each a frozen dataclass with ``value`` and its exact ``gradient``.

Dose objectives act on the dose vector ``d = D x`` (Gy, one entry per row of the dose-influence
matrix ``D``) and look only at their own voxels ``indices``; ``gradient(d)`` is the derivative with
respect to ``d`` (full length, zero outside ``indices``). The chain rule through ``D^T`` is applied
once, in :func:`optim.fluence.optimise_fluence`. Fluence objectives (:class:`FluenceSmoothness`)
act on the beamlet weights ``x`` directly.

Every dose objective is normalised by its number of voxels (a mean over the structure), so that a
weight means the same for a 10-voxel organ and a 10^5-voxel target. Every objective is >= 0 and is
zero when its goal is met. The array module (numpy or cupy) is inferred from ``dose``; ``indices``
(and per-voxel arrays) must live on the same device as ``dose``.

Overlapping structures: an organ's objectives do not act on voxels that belong to a target
("targets win"); :func:`resolve_overlaps` applies this rule once, before objectives are built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optim._xp import array_module
from optim.dvh import rank_at_volume


def _scatter(dose: Any, indices: Any, values: Any) -> Any:
    """Full-length gradient: ``values`` at ``indices`` (unique), zero elsewhere."""
    grad = array_module(dose).zeros_like(dose)
    grad[indices] = values
    return grad


@dataclass(frozen=True)
class SquaredUnderdose:
    """``weight * mean(max(0, dose_gy - d)^2)`` over the voxels ``indices``.

    Parameters
    ----------
    indices : (n,) int array
        Voxels (rows of ``D``) of the structure, unique.
    dose_gy : float or (n,) float array, Gy
        Minimum dose; an array gives one limit per voxel (dose mimicking).
    weight : float
    """

    indices: Any = field(repr=False)
    dose_gy: Any
    weight: float = 1.0

    def value(self, dose: Any) -> float:
        short = (self.dose_gy - dose[self.indices]).clip(0.0, None)
        return self.weight * float((short * short).mean())

    def gradient(self, dose: Any) -> Any:
        short = (self.dose_gy - dose[self.indices]).clip(0.0, None)
        return _scatter(dose, self.indices, (-2.0 * self.weight / short.shape[0]) * short)


@dataclass(frozen=True)
class SquaredOverdose:
    """``weight * mean(max(0, d - dose_gy)^2)`` over the voxels ``indices``.

    Parameters
    ----------
    indices : (n,) int array
    dose_gy : float or (n,) float array, Gy
        Maximum dose; an array gives one limit per voxel.
    weight : float
    """

    indices: Any = field(repr=False)
    dose_gy: Any
    weight: float = 1.0

    def value(self, dose: Any) -> float:
        excess = (dose[self.indices] - self.dose_gy).clip(0.0, None)
        return self.weight * float((excess * excess).mean())

    def gradient(self, dose: Any) -> Any:
        excess = (dose[self.indices] - self.dose_gy).clip(0.0, None)
        return _scatter(dose, self.indices, (2.0 * self.weight / excess.shape[0]) * excess)


def _soft_max(values: Any, smoothing_gy: float) -> tuple[float, Any]:
    """``s * log(sum(exp(v / s)))`` and its gradient (the softmax weights).

    The log-sum-exp lies between ``max(v)`` and ``max(v) + s * ln(n)``, so it bounds the maximum
    from above: a limit met by it is met by the true maximum.
    """
    xp = array_module(values)
    top = values.max()
    w = xp.exp((values - top) / smoothing_gy)
    total = w.sum()
    return float(top + smoothing_gy * xp.log(total)), w / total


@dataclass(frozen=True)
class MaxDose:
    """``weight * max(0, M(d) - dose_gy)^2`` with ``M`` a smooth maximum (log-sum-exp).

    ``M(d) = s * ln(sum exp(d_i / s))`` is an upper bound of ``max(d)`` within ``s * ln(n)``, with
    an exact gradient (the softmax of ``d / s``); ``s = smoothing_gy``.

    Parameters
    ----------
    indices : (n,) int array
    dose_gy : float, Gy
    weight : float
    smoothing_gy : float, Gy
        Smaller is closer to the true maximum, larger is smoother for the optimiser.
    """

    indices: Any = field(repr=False)
    dose_gy: float
    weight: float = 1.0
    smoothing_gy: float = 0.5

    def value(self, dose: Any) -> float:
        m, _ = _soft_max(dose[self.indices], self.smoothing_gy)
        return self.weight * max(0.0, m - self.dose_gy) ** 2

    def gradient(self, dose: Any) -> Any:
        m, p = _soft_max(dose[self.indices], self.smoothing_gy)
        return _scatter(dose, self.indices, (2.0 * self.weight * max(0.0, m - self.dose_gy)) * p)


@dataclass(frozen=True)
class MinDose:
    """``weight * max(0, dose_gy - m(d))^2`` with ``m(d) = -M(-d)`` a smooth minimum (lower bound)."""

    indices: Any = field(repr=False)
    dose_gy: float
    weight: float = 1.0
    smoothing_gy: float = 0.5

    def value(self, dose: Any) -> float:
        neg_m, _ = _soft_max(-dose[self.indices], self.smoothing_gy)
        return self.weight * max(0.0, self.dose_gy + neg_m) ** 2

    def gradient(self, dose: Any) -> Any:
        neg_m, p = _soft_max(-dose[self.indices], self.smoothing_gy)
        # d(-M(-d))/dd = softmax(-d / s), so the penalty's derivative carries a minus sign.
        return _scatter(dose, self.indices,
                        (-2.0 * self.weight * max(0.0, self.dose_gy + neg_m)) * p)


@dataclass(frozen=True)
class MeanDose:
    """``weight * max(0, mean(d) - dose_gy)^2``: an upper limit on the mean dose."""

    indices: Any = field(repr=False)
    dose_gy: float
    weight: float = 1.0

    def value(self, dose: Any) -> float:
        return self.weight * max(0.0, float(dose[self.indices].mean()) - self.dose_gy) ** 2

    def gradient(self, dose: Any) -> Any:
        d = dose[self.indices]
        excess = max(0.0, float(d.mean()) - self.dose_gy)
        xp = array_module(dose)
        return _scatter(dose, self.indices,
                        xp.full_like(d, 2.0 * self.weight * excess / d.shape[0]))


def _dose_at_rank(d: Any, volume_fraction: float) -> float:
    n = d.shape[0]
    k = rank_at_volume(n, volume_fraction)
    return float(array_module(d).partition(d, n - k)[n - k])


@dataclass(frozen=True)
class MaxDVH:
    """Upper DVH limit ``D_v <= dose_gy`` (``V(dose_gy) <= v`` up to the one boundary voxel).

    The usual differentiable form (Wu & Mohan, Med Phys 27:701, 2000): with ``D_v`` the current
    dose at volume ``v`` (:func:`optim.dvh.dose_at_volume`), the voxels whose dose lies in
    ``(dose_gy, D_v]`` are the ones that must come down, and each is pulled towards the limit:
    ``weight * sum((d_i - dose_gy)^2 over those voxels) / n``. The set changes only where two
    voxel doses cross, so the gradient (set held fixed) is exact almost everywhere.

    Parameters
    ----------
    indices : (n,) int array
    dose_gy : float, Gy
    volume_fraction : float
        In [0, 1]; ``v -> 0`` makes it a maximum-dose limit on the hottest voxel.
    weight : float
    """

    indices: Any = field(repr=False)
    dose_gy: float
    volume_fraction: float
    weight: float = 1.0

    def _excess(self, d: Any) -> Any:
        d_v = _dose_at_rank(d, self.volume_fraction)
        return ((d - self.dose_gy) * ((d > self.dose_gy) & (d <= d_v))).clip(0.0, None)

    def value(self, dose: Any) -> float:
        e = self._excess(dose[self.indices])
        return self.weight * float((e * e).mean())

    def gradient(self, dose: Any) -> Any:
        e = self._excess(dose[self.indices])
        return _scatter(dose, self.indices, (2.0 * self.weight / e.shape[0]) * e)


@dataclass(frozen=True)
class MinDVH:
    """Lower DVH limit ``D_v >= dose_gy`` (at least the fraction ``v`` gets ``dose_gy``).

    Voxels whose dose lies in ``[D_v, dose_gy)`` are pushed up towards the limit (Wu & Mohan 2000):
    ``weight * sum((dose_gy - d_i)^2 over those voxels) / n``.
    """

    indices: Any = field(repr=False)
    dose_gy: float
    volume_fraction: float
    weight: float = 1.0

    def _shortfall(self, d: Any) -> Any:
        d_v = _dose_at_rank(d, self.volume_fraction)
        return ((self.dose_gy - d) * ((d < self.dose_gy) & (d >= d_v))).clip(0.0, None)

    def value(self, dose: Any) -> float:
        s = self._shortfall(dose[self.indices])
        return self.weight * float((s * s).mean())

    def gradient(self, dose: Any) -> Any:
        s = self._shortfall(dose[self.indices])
        return _scatter(dose, self.indices, (-2.0 * self.weight / s.shape[0]) * s)


@dataclass(frozen=True)
class GEUD:
    """Upper limit on the generalised equivalent uniform dose (Niemierko, Med Phys 26:1100, 1999).

    ``gEUD(d) = mean(d^a)^(1/a)``; value ``weight * max(0, gEUD - dose_gy)^2``. ``a >= 1`` (organs:
    1 is the mean dose, large ``a`` approaches the maximum). Doses must be >= 0 (they are: x >= 0).
    """

    indices: Any = field(repr=False)
    dose_gy: float
    a: float
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.a < 1.0:
            raise ValueError(f"gEUD exponent a must be >= 1 for an upper limit, got {self.a}")

    def _eud(self, d: Any) -> tuple[float, float, Any]:
        """gEUD, ``mean(r^a)`` and ``r = d / max(d)``: scaling by the maximum keeps ``d^a``
        finite for large ``a`` (60 Gy ** 200 overflows float64)."""
        top = float(d.max())
        if top <= 0.0:
            return 0.0, 0.0, d * 0.0
        r = d.clip(0.0, None) / top
        mean_power = float((r**self.a).mean())
        return top * mean_power ** (1.0 / self.a), mean_power, r

    def value(self, dose: Any) -> float:
        eud, _, _ = self._eud(dose[self.indices])
        return self.weight * max(0.0, eud - self.dose_gy) ** 2

    def gradient(self, dose: Any) -> Any:
        d = dose[self.indices]
        eud, mean_power, r = self._eud(d)
        excess = max(0.0, eud - self.dose_gy)
        if excess == 0.0:
            return array_module(dose).zeros_like(dose)
        # d gEUD / d d_i = r_i^(a-1) * mean(r^a)^(1/a - 1) / n, with r = d / max(d)
        scale = 2.0 * self.weight * excess * mean_power ** (1.0 / self.a - 1.0) / d.shape[0]
        return _scatter(dose, self.indices, scale * r ** (self.a - 1.0))


def falloff_limit_gy(distance_mm: Any, dose_high_gy: float, dose_low_gy: float,
                     falloff_mm: float) -> Any:
    """Per-voxel maximum dose of a dose fall-off: linear from ``dose_high_gy`` at the target edge
    (distance 0) to ``dose_low_gy`` at ``falloff_mm``, constant beyond.

    Parameters
    ----------
    distance_mm : (n,) float array, mm
        Distance of each voxel from the nearest target voxel.
    """
    t = (distance_mm / falloff_mm).clip(0.0, 1.0)
    return dose_high_gy + (dose_low_gy - dose_high_gy) * t


@dataclass(frozen=True)
class DoseFalloff:
    """Dose fall-off ring: squared overdose above :func:`falloff_limit_gy` around the targets.

    Keeps the dose conformal: normal-tissue voxels near a target may receive up to
    ``dose_high_gy``, those ``falloff_mm`` or further away at most ``dose_low_gy``.
    Value ``weight * mean(max(0, d_i - limit_i)^2)``.

    Parameters
    ----------
    indices : (n,) int array
        Normal-tissue voxels (outside every target).
    distance_mm : (n,) float array, mm
        Distance of each of those voxels from the nearest target voxel.
    dose_high_gy, dose_low_gy : float, Gy
    falloff_mm : float, mm
    weight : float
    """

    indices: Any = field(repr=False)
    distance_mm: Any = field(repr=False)
    dose_high_gy: float
    dose_low_gy: float
    falloff_mm: float
    weight: float = 1.0

    def _overdose(self) -> SquaredOverdose:
        limit = falloff_limit_gy(self.distance_mm, self.dose_high_gy, self.dose_low_gy,
                                 self.falloff_mm)
        return SquaredOverdose(self.indices, limit, self.weight)

    def value(self, dose: Any) -> float:
        return self._overdose().value(dose)

    def gradient(self, dose: Any) -> Any:
        return self._overdose().gradient(dose)


@dataclass(frozen=True)
class DoseMimicking:
    """Follow a reference dose voxel by voxel (the learned prediction's seed).

    ``weight * mean(under * max(0, ref - d)^2 + over * max(0, d - ref)^2)``: ``under`` and
    ``over`` weigh dose below and above the reference (e.g. ``over > under`` in organs, where
    less dose than predicted is welcome).

    Parameters
    ----------
    indices : (n,) int array
    reference_gy : (n,) float array, Gy
        Reference dose at those voxels.
    weight, under, over : float
    """

    indices: Any = field(repr=False)
    reference_gy: Any = field(repr=False)
    weight: float = 1.0
    under: float = 1.0
    over: float = 1.0

    def _parts(self) -> tuple[SquaredUnderdose, SquaredOverdose]:
        return (SquaredUnderdose(self.indices, self.reference_gy, self.weight * self.under),
                SquaredOverdose(self.indices, self.reference_gy, self.weight * self.over))

    def value(self, dose: Any) -> float:
        return sum(part.value(dose) for part in self._parts())

    def gradient(self, dose: Any) -> Any:
        low, high = self._parts()
        return low.gradient(dose) + high.gradient(dose)


@dataclass(frozen=True)
class FluenceSmoothness:
    """``weight * mean((x_i - x_j)^2)`` over neighbouring beamlets ``(i, j)`` of the same beam.

    Acts on the beamlet weights ``x``, not on dose: smooth fluence maps need fewer MLC segments.

    Parameters
    ----------
    pairs : (m, 2) int array
        Neighbouring beamlet indices, from :func:`neighbour_pairs`.
    weight : float
    """

    pairs: Any = field(repr=False)
    weight: float = 1.0

    def value(self, x: Any) -> float:
        diff = x[self.pairs[:, 0]] - x[self.pairs[:, 1]]
        return self.weight * float((diff * diff).mean())

    def gradient(self, x: Any) -> Any:
        xp = array_module(x)
        diff = (2.0 * self.weight / self.pairs.shape[0]) * (x[self.pairs[:, 0]] - x[self.pairs[:, 1]])
        # A beamlet appears in several pairs: accumulate (bincount sums, on numpy and cupy alike).
        n = x.shape[0]
        return (xp.bincount(self.pairs[:, 0], weights=diff, minlength=n)
                - xp.bincount(self.pairs[:, 1], weights=diff, minlength=n)).astype(x.dtype)


@dataclass(frozen=True)
class FluenceVariation:
    """``weight * mean(sqrt((x_i - x_j)^2 + s^2) - s)`` over beamlet pairs ``(i, j)``: a smoothed
    total variation of the beamlet weights (``s = smoothing``).

    Over neighbours along the leaf travel it prices MU: a sweep delivers a row of the map with
    MU equal to the sum of its rises (Bortfeld et al., Int J Radiat Oncol Biol Phys 28:723,
    1994), half the row's total variation when the row starts and ends at 0. Unlike :class:`FluenceSmoothness`, whose
    squared differences grow fastest for the large steps at a target's edges, every unit of
    variation costs the same, so it flattens the many small ripples that add MU to a plan
    (total-variation regularisation of IMRT maps: Zhu et al., Phys Med Biol 53:6653, 2008).

    Parameters
    ----------
    pairs : (m, 2) int array
        Beamlet index pairs, e.g. from :func:`neighbour_pairs`.
    weight : float
    smoothing : float, units of ``x``
        The absolute difference is rounded off below about this size (differentiable at 0).
    """

    pairs: Any = field(repr=False)
    weight: float = 1.0
    smoothing: float = 1.0

    def value(self, x: Any) -> float:
        diff = x[self.pairs[:, 0]] - x[self.pairs[:, 1]]
        s = self.smoothing
        return self.weight * float(((diff * diff + s * s) ** 0.5 - s).mean())

    def gradient(self, x: Any) -> Any:
        xp = array_module(x)
        diff = x[self.pairs[:, 0]] - x[self.pairs[:, 1]]
        slope = (self.weight / self.pairs.shape[0]) * diff / (diff * diff
                                                               + self.smoothing ** 2) ** 0.5
        n = x.shape[0]
        return (xp.bincount(self.pairs[:, 0], weights=slope, minlength=n)
                - xp.bincount(self.pairs[:, 1], weights=slope, minlength=n)).astype(x.dtype)


@dataclass(frozen=True)
class DoseOffset:
    """``objective`` of ``dose + offset``: a dose the weights do not change, added to theirs
    (e.g. the dose of segments' fixed minimum MU, or what a delivered plan adds to the fluence
    plan's dose).

    Parameters
    ----------
    objective : dose objective
    offset : (n_voxels,) float array, Gy
        Over the same rows as the dose.
    """

    objective: Any
    offset: Any = field(repr=False)

    def value(self, dose: Any) -> float:
        return self.objective.value(dose + self.offset)

    def gradient(self, dose: Any) -> Any:
        return self.objective.gradient(dose + self.offset)


@dataclass(frozen=True)
class LinearCost:
    """``weight * sum(costs * x)``: a price per unit of each weight (e.g. per monitor unit).

    Acts on the weights ``x`` (>= 0 in the optimiser, so it is an L1 penalty there). With every
    cost 1 it is the weights' total: on segment weights in MU, the plan's MU; the optimiser then
    gives up a segment's MU where the dose objectives change less than the price.

    Parameters
    ----------
    costs : (n,) float array
        Cost of one unit of each weight (the objective's units per unit weight, over ``weight``).
    weight : float
    """

    costs: Any = field(repr=False)
    weight: float = 1.0

    def value(self, x: Any) -> float:
        return self.weight * float((self.costs * x).sum())

    def gradient(self, x: Any) -> Any:
        return (self.weight * self.costs).astype(x.dtype)


def neighbour_pairs(beam: np.ndarray, row: np.ndarray, col: np.ndarray) -> np.ndarray:
    """Pairs of beamlets that touch on the same beam's beamlet grid (4-neighbourhood).

    Parameters
    ----------
    beam, row, col : (n_beamlets,) int arrays
        Beam number and integer position of each beamlet on that beam's grid (row along the
        leaf direction's normal, column along leaf travel, as the dose engine lays them out).

    Returns
    -------
    (m, 2) int64 array
        Each unordered pair once, ``i < j`` not guaranteed.
    """
    beam, row, col = (np.asarray(a, dtype=np.int64) for a in (beam, row, col))
    index = {key: i for i, key in enumerate(zip(beam.tolist(), row.tolist(), col.tolist()))}
    pairs = [(i, index[(b, r + dr, c + dc)])
             for i, (b, r, c) in enumerate(zip(beam.tolist(), row.tolist(), col.tolist()))
             for dr, dc in ((1, 0), (0, 1)) if (b, r + dr, c + dc) in index]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def resolve_overlaps(masks: Sequence[np.ndarray], is_target: Sequence[bool],
                     priority: Sequence[float] | None = None) -> list[np.ndarray]:
    """Give each voxel to one structure for the objectives: targets win over organs.

    Rule: a voxel inside any target is removed from every organ's mask; a voxel inside several
    targets stays only in the one with the highest ``priority`` (e.g. the prescription dose, so
    a boost keeps its voxels and the elective target's upper limits do not pull them down); among
    organs, overlaps are kept (an organ voxel shared by two organs serves both limits). Goals are
    still evaluated on the full structures; only the objectives use the resolved masks.

    Parameters
    ----------
    masks : sequence of bool arrays, all the same shape
    is_target : sequence of bool
    priority : sequence of float, optional
        Among targets, higher wins; ties go to the earlier target. Default: list order.

    Returns
    -------
    list of bool arrays
        New masks, in the input order.
    """
    if priority is None:
        priority = [-i for i in range(len(masks))]
    order = sorted((i for i in range(len(masks)) if is_target[i]),
                   key=lambda i: (-priority[i], i))
    taken = np.zeros_like(masks[0], dtype=bool)
    resolved = [m.copy() for m in masks]
    for i in order:
        resolved[i] &= ~taken
        taken |= masks[i]
    for i in range(len(masks)):
        if not is_target[i]:
            resolved[i] &= ~taken
    return resolved
