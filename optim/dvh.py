"""Dose-volume metrics of one structure from plain arrays: the one definition every report uses.

The optimiser's goal table and the review report both call these functions, so a goal is "met"
by the same arithmetic everywhere. Inputs are the doses of the structure's voxels (``dose[mask]``);
all voxels have the same volume (one grid), so volume fractions are voxel-count fractions.

Definitions (voxel-count DVH, no interpolation between voxels):

- ``dose_at_volume(d, v)`` (D_v): the highest dose that at least the fraction ``v`` of the
  voxels receive, i.e. the k-th highest voxel dose with ``k = ceil(v * n)`` (at least 1).
  ``v -> 0`` gives the maximum dose, ``v = 1`` the minimum.
- ``volume_at_dose(d, x)`` (V_x): the fraction of voxels with dose ``>= x``.
- ``mean_dose(d)``.

With these definitions ``volume_at_dose(d, dose_at_volume(d, v)) >= v`` always holds.
"""

from __future__ import annotations

import math
from typing import Any

from optim._xp import array_module


def _check(dose: Any) -> None:
    if dose.ndim != 1 or dose.shape[0] == 0:
        raise ValueError(f"dose must be a non-empty 1-D array of voxel doses, got shape {dose.shape}")


def rank_at_volume(n_voxels: int, volume_fraction: float) -> int:
    """1-based rank ``k = ceil(v * n)`` (clipped to ``1..n``) of the voxel that defines D_v."""
    if not 0.0 <= volume_fraction <= 1.0:
        raise ValueError(f"volume fraction must be in [0, 1], got {volume_fraction}")
    # The small tolerance keeps 0.95 * 100 = 95.00000000000001 at rank 95, not 96.
    return min(max(math.ceil(volume_fraction * n_voxels - 1e-9), 1), n_voxels)


def dose_at_volume(dose: Any, volume_fraction: float) -> float:
    """D_v: the dose that the hottest fraction ``volume_fraction`` of the voxels receives at least.

    Parameters
    ----------
    dose : (n,) float array, Gy
        Doses of the structure's voxels (numpy or cupy).
    volume_fraction : float
        In [0, 1]; for a volume in cm^3 pass ``cc / (n * voxel_volume_cc)`` (clipped at 1).

    Returns
    -------
    float, Gy
    """
    _check(dose)
    xp = array_module(dose)
    k = rank_at_volume(dose.shape[0], volume_fraction)
    # partition puts the k-th highest at position n - k of an ascending order.
    n = dose.shape[0]
    return float(xp.partition(dose, n - k)[n - k])


def volume_at_dose(dose: Any, dose_gy: float) -> float:
    """V_x: fraction (0..1) of the voxels receiving at least ``dose_gy`` Gy."""
    _check(dose)
    return float((dose >= dose_gy).sum()) / dose.shape[0]


def mean_dose(dose: Any) -> float:
    """Mean dose of the voxels, Gy."""
    _check(dose)
    return float(dose.mean())
