"""Beams (IEC 61217 angles about an isocentre) and the beamlet grid of a beam set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dose.geometry import patient_to_beam_matrix, project_to_beam
from dose.grid import Grid


@dataclass(frozen=True)
class Beam:
    """One static beam direction.

    Parameters
    ----------
    gantry_deg, collimator_deg, couch_deg : float, degrees
        IEC 61217 gantry, beam-limiting-device and patient-support angles.
    isocenter_xyz_mm : (3,) tuple of float, mm
        Isocentre in DICOM patient coordinates, in the order **(x, y, z)** of DICOM
        IsocenterPosition, unlike :class:`dose.grid.Grid` whose tuples are (z, y, x).
    """

    gantry_deg: float
    collimator_deg: float
    couch_deg: float
    isocenter_xyz_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.isocenter_xyz_mm) != 3:
            raise ValueError(f"isocenter_xyz_mm needs 3 values, got {self.isocenter_xyz_mm}")
        object.__setattr__(self, "isocenter_xyz_mm", tuple(float(v) for v in self.isocenter_xyz_mm))

    def rotation(self) -> np.ndarray:
        """Patient LPS offsets to beam-limiting-device coordinates, ``(3, 3)``."""
        return patient_to_beam_matrix(self.gantry_deg, self.collimator_deg, self.couch_deg)


@dataclass(frozen=True)
class BeamSet:
    """Beams and their beamlets (square pencils of fluence at the isocentre plane).

    Beamlet ``j`` belongs to beam ``beam_index[j]`` and is the square of side ``beamlet_size_mm``
    centred on ``(u_mm[j], v_mm[j])`` in the beam-limiting-device frame at the isocentre plane
    (u along X_b, the leaf travel direction; v along Y_b, across the leaves). Beamlets are ordered
    by beam, then v, then u; they are the columns of the dose influence matrix.

    Parameters
    ----------
    beams : tuple of Beam
    beamlet_size_mm : float, mm
    beam_index : (n_beamlets,) int array
    u_mm, v_mm : (n_beamlets,) float arrays, mm
    sad_mm : float, mm
    """

    beams: tuple[Beam, ...]
    beamlet_size_mm: float
    beam_index: np.ndarray = field(repr=False)
    u_mm: np.ndarray = field(repr=False)
    v_mm: np.ndarray = field(repr=False)
    sad_mm: float = 1000.0

    @property
    def n_beamlets(self) -> int:
        return int(self.beam_index.size)

    def beamlets_of(self, beam: int) -> np.ndarray:
        """Indices of the beamlets of beam ``beam``."""
        return np.flatnonzero(self.beam_index == beam)


def coplanar_beams(gantry_deg: Sequence[float], isocenter_xyz_mm: tuple[float, float, float],
                   *, collimator_deg: float = 0.0, couch_deg: float = 0.0) -> tuple[Beam, ...]:
    """Beams at the given gantry angles sharing one isocentre, collimator and couch angle."""
    return tuple(Beam(float(g), collimator_deg, couch_deg, isocenter_xyz_mm) for g in gantry_deg)


def equispaced_beams(n_beams: int, isocenter_xyz_mm: tuple[float, float, float], *,
                     start_deg: float = 0.0) -> tuple[Beam, ...]:
    """``n_beams`` coplanar beams at ``start_deg + k * 360 / n_beams`` (e.g. 9: 0, 40, ..., 320)."""
    return coplanar_beams([(start_deg + k * 360.0 / n_beams) % 360.0 for k in range(n_beams)],
                          isocenter_xyz_mm)


def beamlets_covering(beams: Sequence[Beam], target_mask: np.ndarray, grid: Grid, *,
                      beamlet_size_mm: float = 5.0, margin_mm: float = 5.0,
                      sad_mm: float = 1000.0) -> BeamSet:
    """The beamlets of each beam that cover the target's projection plus a margin.

    The beamlet grid is aligned on the beam axis (beamlet edges at multiples of
    ``beamlet_size_mm``), so 5 mm beamlets match the 5 mm MLC leaves. A beamlet is kept when
    its square, grown by ``margin_mm`` on each side, contains the projection of a target voxel
    centre; voxel centres are first grown by half a voxel so that thin targets are not missed.

    Parameters
    ----------
    beams : sequence of Beam
    target_mask : (nz, ny, nx) bool array
        Target voxels on ``grid``.
    grid : Grid
    beamlet_size_mm, margin_mm, sad_mm : float, mm

    Returns
    -------
    BeamSet
    """
    if target_mask.shape != grid.shape:
        raise ValueError(f"target mask shape {target_mask.shape} differs from grid {grid.shape}")
    index = np.argwhere(target_mask)
    if index.size == 0:
        raise ValueError("target mask is empty: no beamlets to cover it")
    zyx = grid.index_to_position_mm(index)
    points = zyx[:, ::-1].copy()
    reach = margin_mm + 0.5 * max(grid.spacing_mm)
    steps = int(np.ceil(2 * reach / beamlet_size_mm)) + 1
    offsets = np.linspace(-reach, reach, steps + 1)
    beam_index, u_all, v_all = [], [], []
    for b, beam in enumerate(beams):
        u, v, _ = project_to_beam(points, beam.rotation(), np.asarray(beam.isocenter_xyz_mm),
                                  sad_mm)
        keys = []
        for du in offsets:
            iu = np.floor((u + du) / beamlet_size_mm).astype(np.int64)
            for dv in offsets:
                iv = np.floor((v + dv) / beamlet_size_mm).astype(np.int64)
                keys.append(np.unique((iv << 32) + (iu + (1 << 31))))
        cells = np.unique(np.concatenate(keys))  # sorted by v cell, then u cell
        ordered = np.stack([cells >> 32, (cells & 0xFFFFFFFF) - (1 << 31)], axis=1)
        beam_index.append(np.full(len(ordered), b))
        v_all.append((ordered[:, 0] + 0.5) * beamlet_size_mm)
        u_all.append((ordered[:, 1] + 0.5) * beamlet_size_mm)
    return BeamSet(tuple(beams), float(beamlet_size_mm), np.concatenate(beam_index),
                   np.concatenate(u_all), np.concatenate(v_all), float(sad_mm))
