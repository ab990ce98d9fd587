"""Gamma index of two dose distributions on one grid (Low et al., Med Phys 25:656, 1998).

For each reference voxel ``r`` the gamma is the smallest combined distance, over points ``r + s``
of the evaluated dose, of ``|s|^2 / dta^2 + (D_e(r + s) - D_r(r))^2 / delta^2``, square-rooted;
``delta`` is a dose-difference criterion in per cent of a normalisation dose (global gamma; the
reference maximum by default). A voxel passes when its gamma is at most 1. Plan QA (AAPM TG-218,
Miften et al., Med Phys 45:e53, 2018) uses 3 % (global) / 2 mm with a 10 % low-dose threshold and
asks for at least 95 % of the voxels to pass.

The search is brute force over offsets ``s`` on a cubic lattice of ``step_mm`` within the sphere
of radius ``dta_mm``; the evaluated dose between voxel centres is trilinear, computed as three
one-dimensional interpolations (trilinear interpolation is separable), each a shifted copy of
the array, so that no coordinate arrays are built. Because the search stops at ``dta_mm``, a
voxel reported above 1 is a failing voxel (any point further away already exceeds 1 by distance
alone) but its value is only an upper bound of its true gamma. The lattice makes every gamma an
upper bound as well, by at most what a distance error of ``step_mm * sqrt(3) / 2`` adds: the
pass rate errs on the strict side.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dose._xp import array_module, to_device

# A quarter of the 2 mm distance criterion: the nearest lattice point is at most 0.43 mm from
# any offset. On a head-and-neck dose moved by 1.4 mm and scaled by 1.01, the 3 %/2 mm pass rate
# rose by 0.1 % (3 and 2 mm grids) with a 0.25 mm lattice, at 7x the time
# (benchmarks/bench_gamma.py prints both).
DEFAULT_STEP_MM = 0.5


def _shift(array: Any, axis: int, offset_voxels: float, keep: slice) -> Any:
    """``array`` sampled at ``index + offset_voxels`` along ``axis`` for the indices of ``keep``
    (linear interpolation; beyond the array its edge values)."""
    xp = array_module(array)
    n = array.shape[axis]
    low = math.floor(offset_voxels)
    weight = offset_voxels - low
    index = np.arange(keep.start, keep.stop) + low
    lower = xp.take(array, xp.asarray(np.clip(index, 0, n - 1)), axis=axis)
    if weight < 1e-9:
        return lower
    upper = xp.take(array, xp.asarray(np.clip(index + 1, 0, n - 1)), axis=axis)
    # In place on the fresh copies ``take`` returns: this loop body runs hundreds of times.
    lower *= 1 - weight
    upper *= weight
    lower += upper
    return lower


def _offsets_mm(dta_mm: float, step_mm: float) -> np.ndarray:
    """One axis of the search lattice: ``0, ±step, ±2 step, ...`` up to ``dta_mm``, mm."""
    n = int(math.floor(dta_mm / step_mm + 1e-9))
    return step_mm * np.arange(-n, n + 1)


def gamma_index(reference: Any, evaluated: Any, spacing_mm: tuple[float, float, float], *,
                dose_percent: float = 3.0, dta_mm: float = 2.0, threshold: float = 0.10,
                normalisation_gy: float | None = None, step_mm: float = DEFAULT_STEP_MM) -> Any:
    """Global gamma index of ``evaluated`` against ``reference`` at the reference voxels.

    Parameters
    ----------
    reference, evaluated : (nz, ny, nx) float arrays, Gy (numpy or cupy, on one grid)
        The dose checked against (e.g. the planning system's RT Dose) and the dose checked
        (e.g. an independent recomputation).
    spacing_mm : (3,) tuple of float, mm
        Voxel size ``(dz, dy, dx)`` of the grid.
    dose_percent : float, %
        Dose-difference criterion in per cent of ``normalisation_gy``.
    dta_mm : float, mm
        Distance-to-agreement criterion; also the search radius.
    threshold : float
        Voxels where the reference is below ``threshold * normalisation_gy`` get no gamma.
    normalisation_gy : float, Gy, optional
        Dose that ``dose_percent`` and ``threshold`` refer to; the reference maximum by default.
    step_mm : float, mm
        Spacing of the lattice of search offsets.

    Returns
    -------
    (nz, ny, nx) float32 array
        Gamma per reference voxel (same backend as ``reference``); NaN below the threshold.
        Values above 1 are upper bounds (see the module notes).

    Examples
    --------
    A dose error of 1 Gy on a flat 50 Gy field is 2/3 of the 1.5 Gy (3 %) criterion:

    >>> import numpy as np
    >>> gamma = gamma_index(np.full((5, 5, 5), 50.0), np.full((5, 5, 5), 51.0), (2.0, 2.0, 2.0))
    >>> round(float(gamma[2, 2, 2]), 4)
    0.6667
    """
    xp = array_module(reference, evaluated)
    if reference.shape != evaluated.shape or len(reference.shape) != 3:
        raise ValueError(f"reference {reference.shape} and evaluated {evaluated.shape} must be "
                         "3D arrays of one shape")
    if not (dose_percent > 0 and dta_mm > 0 and step_mm > 0):
        raise ValueError(f"dose_percent, dta_mm and step_mm must be positive, got {dose_percent}, "
                         f"{dta_mm}, {step_mm}")
    reference = xp.asarray(reference, dtype=xp.float32)
    evaluated = xp.asarray(evaluated, dtype=xp.float32)
    norm = float(reference.max()) if normalisation_gy is None else float(normalisation_gy)
    gamma = xp.full(reference.shape, xp.nan, dtype=xp.float32)
    if not norm > 0:
        return gamma
    inside = reference >= threshold * norm
    if not bool(inside.any()):
        return gamma
    where = to_device(xp.argwhere(inside), "cpu")
    # Work on the box of the thresholded voxels, widened by the search reach plus one voxel (the
    # interpolation's upper neighbour), so that every sample comes from the uncropped array.
    spacing = np.asarray(spacing_mm, dtype=float)
    reach = np.ceil(dta_mm / spacing).astype(int) + 1
    low, high = where.min(axis=0), where.max(axis=0) + 1
    outer_low = np.maximum(low - reach, 0)
    outer_high = np.minimum(high + reach, reference.shape)
    region = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    block = evaluated[tuple(slice(int(a), int(b)) for a, b in zip(outer_low, outer_high))]
    inner = tuple(slice(int(a - o), int(b - o)) for a, b, o in zip(low, high, outer_low))
    ref = reference[region]
    inverse_delta = 1.0 / (dose_percent / 100.0 * norm)
    best = xp.full(ref.shape, xp.inf, dtype=xp.float32)
    axis_offsets = _offsets_mm(dta_mm, step_mm)
    limit = dta_mm**2 * (1 + 1e-9)
    for sx in axis_offsets:
        shifted_x = _shift(block, 2, sx / spacing[2], inner[2])
        for sy in axis_offsets:
            if sx * sx + sy * sy > limit:
                continue
            shifted_xy = _shift(shifted_x, 1, sy / spacing[1], inner[1])
            for sz in axis_offsets:
                distance2 = sx * sx + sy * sy + sz * sz
                if distance2 > limit:
                    continue
                term = _shift(shifted_xy, 0, sz / spacing[0], inner[0])
                term -= ref
                term *= inverse_delta
                term *= term
                term += distance2 / dta_mm**2
                xp.minimum(best, term, out=best)
    gamma[region] = xp.where(inside[region], xp.sqrt(best), xp.nan)
    return gamma


def gamma_pass_rate(reference: Any, evaluated: Any, spacing_mm: tuple[float, float, float], *,
                    dose_percent: float = 3.0, dta_mm: float = 2.0, threshold: float = 0.10,
                    normalisation_gy: float | None = None,
                    step_mm: float = DEFAULT_STEP_MM) -> float:
    """Share (0..1) of the reference voxels above the threshold whose gamma is at most 1.

    Parameters and criteria as :func:`gamma_index`. Returns NaN when no voxel is above the
    threshold.
    """
    gamma = gamma_index(reference, evaluated, spacing_mm, dose_percent=dose_percent,
                        dta_mm=dta_mm, threshold=threshold, normalisation_gy=normalisation_gy,
                        step_mm=step_mm)
    return gamma_statistics(gamma)[0]


def gamma_statistics(gamma: Any) -> tuple[float, int]:
    """Pass rate (share of gamma <= 1, 0..1; NaN if empty) and count of the voxels with a gamma.

    Parameters
    ----------
    gamma : float array
        As :func:`gamma_index` returns (NaN where no gamma was computed).
    """
    xp = array_module(gamma)
    valid = ~xp.isnan(gamma)
    count = int(valid.sum())
    if count == 0:
        return float("nan"), 0
    return float((gamma[valid] <= 1.0).sum()) / count, count
