"""The voxel grid shared by every part of planner.

Arrays on a grid are indexed ``[z, y, x]`` (slice, row, column). The grid's
origin and spacing are given in the same order, in mm, in DICOM patient
coordinates (LPS) for an axial, head-first image orientation
``ImageOrientationPatient = [1, 0, 0, 0, 1, 0]``: voxel ``[k, j, i]`` sits at
``x = origin_x + i * dx``, ``y = origin_y + j * dy``, ``z = origin_z + k * dz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dose._xp import array_module


@dataclass(frozen=True)
class Grid:
    """A regular axial voxel grid.

    Parameters
    ----------
    origin_mm : (3,) tuple of float, mm
        Patient coordinates ``(z, y, x)`` of the centre of voxel ``[0, 0, 0]``.
    spacing_mm : (3,) tuple of float, mm
        Voxel size ``(dz, dy, dx)``; all positive.
    shape : (3,) tuple of int
        Number of voxels ``(nz, ny, nx)``.
    """

    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    shape: tuple[int, int, int]

    def __post_init__(self) -> None:
        if len(self.origin_mm) != 3 or len(self.spacing_mm) != 3 or len(self.shape) != 3:
            raise ValueError(f"Grid needs 3 values per field, got {self}")
        if min(self.spacing_mm) <= 0:
            raise ValueError(f"Grid spacing must be positive, got {self.spacing_mm} mm")
        if min(self.shape) <= 0:
            raise ValueError(f"Grid shape must be positive, got {self.shape}")
        object.__setattr__(self, "origin_mm", tuple(float(v) for v in self.origin_mm))
        object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))
        object.__setattr__(self, "shape", tuple(int(v) for v in self.shape))

    @property
    def voxel_volume_cc(self) -> float:
        """Volume of one voxel in cm^3."""
        dz, dy, dx = self.spacing_mm
        return dz * dy * dx / 1000.0

    @property
    def size(self) -> int:
        """Number of voxels."""
        nz, ny, nx = self.shape
        return nz * ny * nx

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates ``(z, y, x)`` along each axis, mm."""
        return tuple(  # type: ignore[return-value]
            o + s * np.arange(n) for o, s, n in zip(self.origin_mm, self.spacing_mm, self.shape)
        )

    def extent_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Outer bounds ``(low, high)`` of the grid, each ``(z, y, x)`` in mm (voxel edges)."""
        origin = np.asarray(self.origin_mm)
        spacing = np.asarray(self.spacing_mm)
        low = origin - spacing / 2
        high = origin + spacing * (np.asarray(self.shape) - 0.5)
        return low, high

    def index_to_position_mm(self, index_zyx: np.ndarray) -> np.ndarray:
        """Patient coordinates ``(..., 3)`` (z, y, x) in mm of fractional voxel indices ``(..., 3)``."""
        return np.asarray(self.origin_mm) + np.asarray(index_zyx) * np.asarray(self.spacing_mm)

    def position_to_index(self, position_zyx_mm: np.ndarray) -> np.ndarray:
        """Fractional voxel indices ``(..., 3)`` of patient coordinates ``(..., 3)`` (z, y, x) in mm."""
        return (np.asarray(position_zyx_mm) - np.asarray(self.origin_mm)) / np.asarray(self.spacing_mm)

    def resampled(self, spacing_mm: tuple[float, float, float]) -> Grid:
        """A grid covering the same extent with another spacing (the first voxel centres coincide)."""
        low, high = self.extent_mm()
        spacing = np.asarray(spacing_mm, dtype=float)
        shape = np.maximum(1, np.floor((high - low) / spacing + 1e-6)).astype(int)
        origin = low + spacing / 2
        return Grid(tuple(origin), tuple(spacing), tuple(shape))


def resample(volume: Any, source: Grid, target: Grid, *, fill: float = 0.0) -> Any:
    """``volume`` at the voxel centres of ``target``, interpolated trilinearly from ``source``.

    The grids share their axes' directions, so the interpolation is separable: one linear
    interpolation along z, then y, then x, and memory stays at the size of the volumes. Within
    half a voxel beyond the outer voxel centres of ``source`` the edge value is kept (the source's
    voxels cover that region); further out the value is ``fill``.

    Parameters
    ----------
    volume : (source.shape) float array (numpy or cupy)
    source, target : Grid
    fill : float
        Value outside ``source``'s voxels.

    Returns
    -------
    (target.shape) float32 array, on ``volume``'s device
    """
    if volume.shape != source.shape:
        raise ValueError(f"volume shape {volume.shape} differs from grid {source.shape}")
    xp = array_module(volume)
    out = xp.asarray(volume, dtype=xp.float32)
    if source == target:
        return out
    for axis, (origin, spacing, n, positions) in enumerate(zip(
            source.origin_mm, source.spacing_mm, source.shape, target.axes_mm())):
        index = (positions - origin) / spacing
        inside = (index >= -0.5 - 1e-6) & (index <= n - 0.5 + 1e-6)
        index = np.clip(index, 0.0, n - 1)
        lower = np.floor(index).astype(np.int64)
        upper = np.minimum(lower + 1, n - 1)
        shape = [1, 1, 1]
        shape[axis] = -1
        w = xp.asarray((index - lower).astype(np.float32).reshape(shape))
        blended = (xp.take(out, xp.asarray(lower), axis=axis) * (1 - w)
                   + xp.take(out, xp.asarray(upper), axis=axis) * w)
        out = xp.where(xp.asarray(inside.reshape(shape)), blended, xp.float32(fill))
    return out
