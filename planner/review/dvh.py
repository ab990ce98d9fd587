"""Dose-volume histograms of structures: cumulative curves, summary statistics, CSV tables.

Voxel handling: a structure is the set of voxels of its mask (a voxel is in or out, decided by
its centre, see :mod:`planner.io.rtstruct`); every voxel counts with its full volume and no
partial-volume weighting is applied. The dose of a voxel is the dose at its centre. Where the
dose grid differs from the grid of the masks, the dose is interpolated (trilinear) onto the
mask grid by :func:`resample_dose`, so the structures keep the shape they were drawn with.

The curve is binned (:func:`cumulative_dvh`, 0.01 Gy by default); the statistics
(:func:`dose_statistics`) are computed from the voxel doses themselves with :mod:`optim.dvh`, the
same arithmetic the optimiser's goals use, so they carry no binning error.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dose.grid import Grid, resample
from optim import dvh
from planner.io._atomic import write_file_atomic
from planner.patient import Structure

DEFAULT_BIN_GY = 0.01  # the bin of dicompyler-core and most treatment systems (1 cGy)


@dataclass(frozen=True)
class Dvh:
    """Cumulative DVH of one structure.

    Attributes
    ----------
    name : str
    volume_cc : float, cm^3
        Structure volume (voxel count times voxel volume).
    bin_width_gy : float, Gy
    fraction : (n,) float array
        ``fraction[k]`` is the fraction (0..1) of the structure's volume receiving at least
        ``k * bin_width_gy``; ``fraction[0] = 1`` and the last value is 0.
    """

    name: str
    volume_cc: float
    bin_width_gy: float
    fraction: np.ndarray = field(repr=False)

    @property
    def dose_gy(self) -> np.ndarray:
        """Dose of each point of the curve, ``(n,)`` Gy."""
        return np.arange(self.fraction.size) * self.bin_width_gy

    @property
    def percent(self) -> np.ndarray:
        """Volume receiving at least :attr:`dose_gy`, % of the structure."""
        return 100.0 * self.fraction

    @property
    def cc(self) -> np.ndarray:
        """Volume receiving at least :attr:`dose_gy`, cm^3."""
        return self.volume_cc * self.fraction


@dataclass(frozen=True)
class DoseStatistics:
    """Summary of one structure's dose (Gy) and volume (cm^3); see :mod:`optim.dvh`.

    ``d95_gy`` and ``d2_gy`` are the doses received by at least 95 % and 2 % of the volume,
    ``d0_1cc_gy`` the dose received by the hottest 0.1 cm^3; for a structure smaller than
    0.1 cm^3 that is its minimum (the whole structure), as goals are evaluated
    (:func:`planner.protocol.plan_goal` clips the volume fraction at 1).
    """

    name: str
    volume_cc: float
    min_gy: float
    mean_gy: float
    max_gy: float
    d95_gy: float
    d2_gy: float
    d0_1cc_gy: float


def cumulative_dvh(voxel_dose_gy: np.ndarray, voxel_volume_cc: float, *, name: str,
                   bin_width_gy: float = DEFAULT_BIN_GY) -> Dvh:
    """Cumulative DVH of the voxel doses of one structure.

    Parameters
    ----------
    voxel_dose_gy : (n,) float array, Gy
        Dose of each voxel of the structure (``dose[mask]``); n >= 1.
    voxel_volume_cc : float, cm^3
    name : str
    bin_width_gy : float, Gy
        Dose step of the curve, 0.01-0.1 Gy in practice.

    Returns
    -------
    Dvh
        ``fraction[k]`` counts the voxels with ``dose >= k * bin_width_gy``.
    """
    dose = np.asarray(voxel_dose_gy, dtype=np.float64).ravel()
    if dose.size == 0:
        raise ValueError(f"structure {name!r} has no voxels")
    if not bin_width_gy > 0:
        raise ValueError(f"bin width must be positive, got {bin_width_gy} Gy")
    # floor(d / w) >= k  <=>  d >= k w: each voxel counts in every point up to its bin.
    bins = np.floor(np.clip(dose, 0.0, None) / bin_width_gy).astype(np.int64)
    counts = np.bincount(bins, minlength=bins.max() + 2)
    at_least = np.cumsum(counts[::-1])[::-1]
    return Dvh(name, dose.size * voxel_volume_cc, bin_width_gy, at_least / dose.size)


def dose_statistics(voxel_dose_gy: np.ndarray, voxel_volume_cc: float, *, name: str
                    ) -> DoseStatistics:
    """Volume, Dmin, Dmean, Dmax, D95, D2 and D0.1cc of one structure (see :class:`DoseStatistics`).

    Parameters
    ----------
    voxel_dose_gy : (n,) float array, Gy
    voxel_volume_cc : float, cm^3
    name : str
    """
    dose = np.asarray(voxel_dose_gy, dtype=np.float64).ravel()
    if dose.size == 0:
        raise ValueError(f"structure {name!r} has no voxels")
    volume_cc = dose.size * voxel_volume_cc
    return DoseStatistics(
        name=name, volume_cc=volume_cc, min_gy=dvh.dose_at_volume(dose, 1.0),
        mean_gy=dvh.mean_dose(dose), max_gy=dvh.dose_at_volume(dose, 0.0),
        d95_gy=dvh.dose_at_volume(dose, 0.95), d2_gy=dvh.dose_at_volume(dose, 0.02),
        d0_1cc_gy=dvh.dose_at_volume(dose, min(0.1 / volume_cc, 1.0)))


def structure_dvhs(dose_gy: np.ndarray, grid: Grid, structures: Sequence[Structure], *,
                   bin_width_gy: float = DEFAULT_BIN_GY
                   ) -> tuple[tuple[Dvh, ...], tuple[DoseStatistics, ...]]:
    """DVH and statistics of every non-empty structure, with dose and masks on one grid.

    Parameters
    ----------
    dose_gy : (nz, ny, nx) float array, Gy
        On ``grid`` (use :func:`resample_dose` first when the dose has its own grid).
    grid : Grid
    structures : sequence of Structure
        Masks on ``grid``; empty masks are skipped.
    bin_width_gy : float, Gy

    Returns
    -------
    dvhs : tuple of Dvh
    statistics : tuple of DoseStatistics
        In the order of ``structures``.
    """
    if dose_gy.shape != grid.shape:
        raise ValueError(f"dose shape {dose_gy.shape} differs from grid {grid.shape}")
    curves, stats = [], []
    for s in structures:
        if s.mask.shape != grid.shape:
            raise ValueError(f"structure {s.name!r}: mask shape {s.mask.shape} differs from "
                             f"grid {grid.shape}")
        if not s.mask.any():
            continue
        voxels = dose_gy[s.mask]
        curves.append(cumulative_dvh(voxels, grid.voxel_volume_cc, name=s.name,
                                     bin_width_gy=bin_width_gy))
        stats.append(dose_statistics(voxels, grid.voxel_volume_cc, name=s.name))
    return tuple(curves), tuple(stats)


def resample_dose(dose_gy: np.ndarray, dose_grid: Grid, grid: Grid) -> np.ndarray:
    """The dose at the voxel centres of ``grid``, interpolated trilinearly from ``dose_grid``
    (:func:`dose.grid.resample`): within half a voxel beyond the outer dose voxel centres the
    edge value is kept, further out the dose is 0 (not calculated there).

    Parameters
    ----------
    dose_gy : (nz, ny, nx) float array, Gy
        On ``dose_grid``.
    dose_grid, grid : Grid

    Returns
    -------
    (grid.shape) float32 array, Gy
    """
    return resample(np.asarray(dose_gy), dose_grid, grid)


def format_statistics_table(stats: Sequence[DoseStatistics]) -> str:
    """A plain-text table: structure, volume (cc), Dmin, Dmean, Dmax, D95, D2, D0.1cc (Gy)."""
    width = max([len(s.name) for s in stats] + [len("structure")])
    heads = ("volume cc", "Dmin Gy", "Dmean Gy", "Dmax Gy", "D95 Gy", "D2 Gy", "D0.1cc Gy")
    lines = [f"{'structure':<{width}}  " + "  ".join(f"{h:>9}" for h in heads)]
    for s in stats:
        values = (s.volume_cc, s.min_gy, s.mean_gy, s.max_gy, s.d95_gy, s.d2_gy, s.d0_1cc_gy)
        lines.append(f"{s.name:<{width}}  " + "  ".join(f"{v:9.2f}" for v in values))
    return "\n".join(lines)


def dvh_csv_text(dvhs: Sequence[Dvh]) -> str:
    """The cumulative DVH curves as CSV text on one dose axis.

    Columns: ``dose_gy``, then ``<name> cc`` and ``<name> %`` per structure; rows every
    bin width from 0 Gy to the highest structure maximum (a curve is 0 beyond its own maximum).
    All curves must share one bin width.
    """
    if not dvhs:
        raise ValueError("no DVH to write")
    widths = {d.bin_width_gy for d in dvhs}
    if len(widths) != 1:
        raise ValueError(f"DVHs have different bin widths {sorted(widths)} Gy")
    n = max(d.fraction.size for d in dvhs)
    width = widths.pop()
    decimals = max(0, -int(np.floor(np.log10(width))) + 1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dose_gy"] + [f"{d.name} {unit}" for d in dvhs for unit in ("cc", "%")])
    padded = [np.pad(d.fraction, (0, n - d.fraction.size)) for d in dvhs]
    for k in range(n):
        row = [f"{k * width:.{decimals}f}"]
        for d, f in zip(dvhs, padded):
            row += [f"{d.volume_cc * f[k]:.4f}", f"{100.0 * f[k]:.4f}"]
        writer.writerow(row)
    return buffer.getvalue()


def write_dvh_csv(path: str | Path, dvhs: Sequence[Dvh], *, overwrite: bool = False) -> Path:
    """Write :func:`dvh_csv_text` to ``path`` atomically.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is false.
    """
    text = dvh_csv_text(dvhs)
    return write_file_atomic(Path(path), lambda tmp: tmp.write_text(text, encoding="utf-8"),
                             overwrite=overwrite)
