"""MLC segments (jaws + leaf positions + MU) and the fluence they deliver at the isocentre plane."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from dose._xp import array_module
from dose.beam_model import (INTERPOLATED_MAGNIFICATION_STEP, REACH_MM, BeamModel,
                             density_planes, lateral_planes, magnification_planes,
                             plane_lookup, sample_lookup, sample_planes)
from dose.beams import Beam
from dose.grid import Grid
from dose.machine import Machine
from dose.raytrace import BeamVoxels, beam_voxels, density_at, in_window, voxel_positions_xyz

MIN_DOSE_DENSITY_G_CM3 = 0.05  # below this a voxel is air around the patient: no dose computed
# Memory for the planes of the fluences convolved together (one beam's segments share the
# kernels' transforms and the interpolation); more fluences are done in several batches.
PLANE_BATCH_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Segment:
    """One static aperture of a step-and-shoot beam and its monitor units.

    All positions are mm at the isocentre plane in IEC beam-limiting-device coordinates.

    Parameters
    ----------
    jaw_x_mm : (2,) tuple of float, mm
        X1, X2 jaw positions (X1 <= X2; X1 is on the -X side).
    jaw_y_mm : (2,) tuple of float, mm
        Y1, Y2 jaw positions (Y1 <= Y2).
    leaf_positions_mm : (n_pairs, 2) float array, mm
        Tip positions of bank A (column 0, X1 side) and bank B (column 1, X2 side) for each leaf
        pair, ordered like the machine's leaf boundaries (from -Y to +Y); A <= B.
    mu : float
        Monitor units delivered through this aperture.
    """

    jaw_x_mm: tuple[float, float]
    jaw_y_mm: tuple[float, float]
    leaf_positions_mm: np.ndarray = field(repr=False)
    mu: float

    def __post_init__(self) -> None:
        leaves = np.asarray(self.leaf_positions_mm, dtype=float)
        if leaves.ndim != 2 or leaves.shape[1] != 2:
            raise ValueError(f"leaf positions must be (n_pairs, 2), got {leaves.shape}")
        if np.any(leaves[:, 0] > leaves[:, 1] + 1e-9):
            raise ValueError("bank A leaf beyond its bank B partner in pairs "
                             f"{np.flatnonzero(leaves[:, 0] > leaves[:, 1]).tolist()}")
        if self.jaw_x_mm[0] > self.jaw_x_mm[1] or self.jaw_y_mm[0] > self.jaw_y_mm[1]:
            raise ValueError(f"jaws must satisfy X1 <= X2 and Y1 <= Y2, got {self.jaw_x_mm}, "
                             f"{self.jaw_y_mm}")
        if self.mu < 0:
            raise ValueError(f"segment MU must be >= 0, got {self.mu}")
        leaves.setflags(write=False)
        object.__setattr__(self, "leaf_positions_mm", leaves)
        object.__setattr__(self, "jaw_x_mm", (float(self.jaw_x_mm[0]), float(self.jaw_x_mm[1])))
        object.__setattr__(self, "jaw_y_mm", (float(self.jaw_y_mm[0]), float(self.jaw_y_mm[1])))


def open_field(machine: Machine, x_mm: tuple[float, float], y_mm: tuple[float, float],
               mu: float) -> Segment:
    """A rectangular field: jaws at ``x_mm``/``y_mm``, leaves of pairs inside the jaws at the X
    jaws, the others closed under the X1 jaw (gap ``min_leaf_gap_mm``)."""
    lower, upper = machine.leaf_boundaries_mm[:-1], machine.leaf_boundaries_mm[1:]
    inside = (upper > y_mm[0]) & (lower < y_mm[1])
    closed_a = x_mm[0] - machine.min_leaf_gap_mm
    leaves = np.where(inside[:, None], np.array(x_mm)[None, :],
                      np.array([closed_a, x_mm[0]])[None, :])
    return Segment(x_mm, y_mm, leaves, mu)


def _overlap(low: np.ndarray, high: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Overlap length ``(n, n_cells)`` of intervals ``[low, high]`` (n,) with cells between
    consecutive ``edges`` (n_cells + 1,)."""
    upper = np.minimum(high[:, None], edges[None, 1:])
    lower = np.maximum(low[:, None], edges[None, :-1])
    return np.clip(upper - lower, 0.0, None)


def segments_fluence(segments: list[Segment] | tuple[Segment, ...], machine: Machine,
                     u_edges_mm: np.ndarray, v_edges_mm: np.ndarray) -> np.ndarray:
    """MU-weighted fluence of segments on a pixel grid at the isocentre plane.

    Each pixel gets the open fraction of its area (exact overlap with the rectangles left open by
    the jaws and each leaf pair), times the segment's MU, summed over segments. Leaf-blocked area
    inside the jaws transmits ``machine.leaf_transmission`` of the open fluence; the jaws are
    taken as opaque.

    Parameters
    ----------
    segments : sequence of Segment
    machine : Machine
    u_edges_mm : (nu + 1,) float array, mm
        Pixel edges along X_b (leaf travel), increasing.
    v_edges_mm : (nv + 1,) float array, mm
        Pixel edges along Y_b, increasing.

    Returns
    -------
    (nv, nu) float64 array, MU
        Fluence in MU (an open pixel of a 1 MU segment holds 1).
    """
    du, dv = np.diff(u_edges_mm), np.diff(v_edges_mm)
    lower, upper = machine.leaf_boundaries_mm[:-1], machine.leaf_boundaries_mm[1:]
    fluence = np.zeros((dv.size, du.size))
    for segment in segments:
        if segment.leaf_positions_mm.shape[0] != machine.n_leaf_pairs:
            raise ValueError(f"segment has {segment.leaf_positions_mm.shape[0]} leaf pairs, "
                             f"machine {machine.name!r} has {machine.n_leaf_pairs}")
        (x1, x2), (y1, y2) = segment.jaw_x_mm, segment.jaw_y_mm
        # Rows: each pair's strip cut by the Y jaws; columns: each pair's opening cut by X jaws.
        rows = _overlap(np.maximum(lower, y1), np.minimum(upper, y2), v_edges_mm) / dv
        a = np.maximum(segment.leaf_positions_mm[:, 0], x1)
        b = np.minimum(segment.leaf_positions_mm[:, 1], x2)
        opening = _overlap(a, b, u_edges_mm) / du
        in_jaws = _overlap(np.full(lower.size, x1), np.full(lower.size, x2), u_edges_mm) / du
        columns = opening + machine.leaf_transmission * (in_jaws - opening)
        fluence += segment.mu * (rows.T @ columns)
    return fluence


def field_voxels(density: Any, density_grid: Grid, dose_grid: Grid, beams: Sequence[Beam],
                 segments: Sequence[Sequence[Segment]], machine: Machine, model: BeamModel, *,
                 dose_mask: Any = None, fluence_spacing_mm: float = 1.0,
                 reach_mm: float = REACH_MM) -> list[BeamVoxels | None]:
    """Each beam's voxels, traced once (:func:`dose.raytrace.beam_voxels` over its fluence map's
    window), for :func:`segment_dose` of the same segments at other MU (``voxels=``): the ray
    tracing is about 40 % of a dose calculation and does not depend on the MU.

    Parameters and defaults as for :func:`segment_dose`; None for a beam without segments.
    Beams of one direction (e.g. the carriage positions of a split field) are traced once, over
    the union of their windows, and each takes the voxels in its own window.
    """
    voxel_index = dose_voxels(density, density_grid, dose_grid, dose_mask)
    windows: list[tuple[float, float, float, float] | None] = []
    for beam_segments in segments:
        if beam_segments:
            u_edges, v_edges = _fluence_edges(beam_segments, fluence_spacing_mm, reach_mm)
            windows.append((u_edges[0], u_edges[-1], v_edges[0], v_edges[-1]))
        else:
            windows.append(None)
    directions: dict[Beam, tuple[float, float, float, float]] = {}
    for beam, w in zip(beams, windows):
        if w is not None:
            union = directions.get(beam, w)
            directions[beam] = (min(union[0], w[0]), max(union[1], w[1]),
                                min(union[2], w[2]), max(union[3], w[3]))

    def trace(beam: Beam, window: tuple[float, float, float, float]) -> BeamVoxels:
        return beam_voxels(density, density_grid, dose_grid, voxel_index, beam, model,
                           sad_mm=machine.sad_mm, uv_window_mm=window)

    traced = dict(zip(directions, _per_beam(trace, array_module(density), list(directions),
                                            list(directions.values()))))

    def in_own_window(beam: Beam, window: tuple[float, float, float, float] | None
                      ) -> BeamVoxels | None:
        if window is None:
            return None
        voxels = traced[beam]
        if window == directions[beam]:
            return voxels
        return _subset(voxels, in_window(voxels.u_mm, voxels.v_mm, window))

    return [in_own_window(beam, window) for beam, window in zip(beams, windows)]


def segment_dose(density: Any, density_grid: Grid, dose_grid: Grid, beams: Sequence[Beam],
                 segments: Sequence[Sequence[Segment]], machine: Machine, model: BeamModel, *,
                 dose_mask: Any = None, fluence_spacing_mm: float = 1.0,
                 reach_mm: float = REACH_MM,
                 voxels: Sequence[BeamVoxels | None] | None = None) -> Any:
    """Dose (Gy) of MLC segments, computed from the apertures themselves.

    Each beam's segments are rasterised into one MU fluence map at the isocentre plane (exact
    pixel overlap, leaf transmission), blurred by the source and convolved with the untruncated
    lateral kernels at the magnifications of the voxels (the primary kernel scaled by the
    voxel's density, see :func:`dose.beam_model.lateral_planes`), then scaled per voxel by the
    depth terms at the radiological depth and by the inverse square of the distance to the
    source. The map covers every segment given, those at 0 MU too (they add no fluence), so
    that the same segments at other MU reuse one ray tracing (``voxels``).

    Parameters
    ----------
    density : (nz, ny, nx) float array, g/cm^3 (numpy or cupy; sets the backend)
        Mass density on ``density_grid`` (e.g. the CT).
    density_grid, dose_grid : Grid
    beams : sequence of Beam
    segments : sequence (one per beam) of sequences of Segment
    machine : Machine
    model : BeamModel
    dose_mask : (nz, ny, nx) bool array on ``dose_grid``, optional
        Voxels to compute; by default those where the density is at least 0.05 g/cm^3 (the
        patient, not the air around it).
    fluence_spacing_mm : float, mm
        Pixel size of the fluence map at the isocentre plane.
    reach_mm : float, mm
        How far beyond the jaws the fluence map (and so the dose) extends; voxels projecting
        further out get no dose from that beam.
    voxels : sequence of BeamVoxels or None, optional
        :func:`field_voxels` of the same beams and segments (with the same ``dose_mask``,
        ``fluence_spacing_mm`` and ``reach_mm``); traced here when not given.

    Returns
    -------
    (nz, ny, nx) float32 array, Gy (same backend as ``density``)
    """
    xp = array_module(density)
    if len(segments) != len(beams):
        raise ValueError(f"{len(segments)} segment lists for {len(beams)} beams")
    if voxels is None:
        voxels = field_voxels(density, density_grid, dose_grid, beams, segments, machine, model,
                              dose_mask=dose_mask, fluence_spacing_mm=fluence_spacing_mm,
                              reach_mm=reach_mm)
    dose = xp.zeros(dose_grid.size, dtype=xp.float32)

    def beam_dose(beam_segments: Sequence[Segment], traced: BeamVoxels | None
                  ) -> tuple[Any, Any] | None:
        active = [s for s in beam_segments if s.mu > 0]
        if not active or traced is None or not traced.index.size:
            return None
        u_edges, v_edges = _fluence_edges(beam_segments, fluence_spacing_mm, reach_mm)
        fluence = segments_fluence(active, machine, u_edges, v_edges)
        return traced.index, _fluence_doses(traced, fluence[None], u_edges, v_edges, machine,
                                            model)[0]

    for done in _per_beam(beam_dose, xp, segments, voxels):
        if done is not None:
            dose[done[0]] += done[1]
    return dose.reshape(dose_grid.shape)


def _per_beam(function: Any, xp: Any, *per_beam: Sequence[Any]) -> list[Any]:
    """``function(*items)`` for each beam's items of ``per_beam``, side by side on the CPU cores
    (numpy releases the GIL in its array loops and FFTs; two beams' planes in flight,
    ``PLANE_BATCH_BYTES`` each), one after the other on a GPU."""
    workers = 1 if xp is not np else max(1, min(len(os.sched_getaffinity(0)), 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, *per_beam))


def segment_dose_matrix(density: Any, density_grid: Grid, dose_grid: Grid,
                        beams: Sequence[Beam], segments: Sequence[Sequence[Segment]],
                        machine: Machine, model: BeamModel, *, dose_mask: Any = None,
                        fluence_spacing_mm: float = 1.0, reach_mm: float = REACH_MM,
                        voxels: Sequence[BeamVoxels | None] | None = None
                        ) -> tuple[Any, Any]:
    """Dose per MU of each segment separately (for segment-weight optimisation).

    The same computation as :func:`segment_dose`, with one fluence map per segment; the ray
    tracing, the kernels' transforms and the interpolation of the planes at the voxels are
    done once per beam. Segment MUs are ignored: column ``k`` is the dose of 1 MU.

    Parameters
    ----------
    See :func:`segment_dose`. ``voxels`` may be traced for more voxels than ``dose_mask``
    (e.g. :func:`field_voxels` of the whole dose for the final dose of the same segments): the
    rows are taken from them (they must include ``dose_mask``'s voxels), and the ray tracing is
    not repeated.

    Returns
    -------
    voxel_index : (n_voxels,) int array
        C-order flat indices on ``dose_grid`` of the rows (the computed voxels).
    matrix : (n_voxels, n_segments) float32 array, Gy/MU
        Columns in the order of the segments, beam by beam; ``matrix @ mu`` is the dose of the
        voxels for segment weights ``mu`` (MU).
    """
    xp = array_module(density)
    if len(segments) != len(beams):
        raise ValueError(f"{len(segments)} segment lists for {len(beams)} beams")
    voxel_index = dose_voxels(density, density_grid, dose_grid, dose_mask)
    row_of = xp.zeros(dose_grid.size, dtype=xp.int64)
    row_of[voxel_index] = xp.arange(voxel_index.size)
    wanted = xp.zeros(dose_grid.size, dtype=bool)
    wanted[voxel_index] = True
    matrix = xp.zeros((voxel_index.size, sum(len(s) for s in segments)), dtype=xp.float32)
    columns = np.cumsum([0] + [len(s) for s in segments])

    def beam_columns(k: int) -> None:
        """Columns of beam ``k`` (each thread writes its own columns)."""
        if not segments[k]:
            return
        unit = [Segment(s.jaw_x_mm, s.jaw_y_mm, s.leaf_positions_mm, 1.0) for s in segments[k]]
        u_edges, v_edges = _fluence_edges(unit, fluence_spacing_mm, reach_mm)
        if voxels is None:
            traced = beam_voxels(density, density_grid, dose_grid, voxel_index, beams[k], model,
                                 sad_mm=machine.sad_mm,
                                 uv_window_mm=(u_edges[0], u_edges[-1], v_edges[0], v_edges[-1]))
        else:
            traced = _subset(voxels[k], wanted[voxels[k].index])
        if traced.index.size:
            fluences = np.stack([segments_fluence([s], machine, u_edges, v_edges) for s in unit])
            doses = _fluence_doses(traced, fluences, u_edges, v_edges, machine, model)
            matrix[row_of[traced.index], columns[k]:columns[k + 1]] = doses.T

    _per_beam(beam_columns, xp, range(len(beams)))
    return voxel_index, matrix


def _subset(voxels: BeamVoxels, keep: Any) -> BeamVoxels:
    """The voxels of ``voxels`` where ``keep`` (a bool array over them) is True."""
    return BeamVoxels(*(getattr(voxels, f.name)[keep] for f in fields(voxels)))


def _fluence_edges(segments: Sequence[Segment], spacing_mm: float, reach_mm: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pixel edges (u, v) of a fluence map covering the segments' jaws plus ``reach_mm``."""
    u_lo = min(s.jaw_x_mm[0] for s in segments) - reach_mm
    u_hi = max(s.jaw_x_mm[1] for s in segments) + reach_mm
    v_lo = min(s.jaw_y_mm[0] for s in segments) - reach_mm
    v_hi = max(s.jaw_y_mm[1] for s in segments) + reach_mm
    u_edges = u_lo + spacing_mm * np.arange(int(np.ceil((u_hi - u_lo) / spacing_mm)) + 1)
    v_edges = v_lo + spacing_mm * np.arange(int(np.ceil((v_hi - v_lo) / spacing_mm)) + 1)
    return u_edges, v_edges


def _fluence_doses(voxels: Any, fluences: np.ndarray, u_edges: np.ndarray, v_edges: np.ndarray,
                   machine: Machine, model: BeamModel) -> Any:
    """Dose (Gy) of MU fluence maps at the voxels of one beam.

    Parameters
    ----------
    voxels : BeamVoxels
    fluences : (n_f, nv, nu) float array, MU
        Maps on the pixels with edges ``u_edges``, ``v_edges``.
    u_edges, v_edges : float arrays, mm
    machine : Machine
    model : BeamModel

    Returns
    -------
    (n_f, n_voxels) float32 array, Gy
        Same backend as ``voxels``.
    """
    xp = array_module(voxels.t_mm)
    spacing = float(u_edges[1] - u_edges[0])
    magnifications = magnification_planes(float(xp.min(voxels.t_mm)),
                                          float(xp.max(voxels.t_mm)), machine.sad_mm,
                                          INTERPOLATED_MAGNIFICATION_STEP)
    densities = density_planes(voxels.lateral_density)
    # Primary planes dominate the memory; padded spectra and scatter planes add less than it.
    per_fluence = 3 * 4 * magnifications.size * densities.size * fluences[0].size
    batch = max(1, PLANE_BATCH_BYTES // per_fluence)
    doses = xp.empty((len(fluences), voxels.index.size), dtype=xp.float32)
    lookup = None
    for start in range(0, len(fluences), batch):
        planes = lateral_planes(xp.asarray(fluences[start:start + batch]), spacing, u_edges[0],
                                v_edges[0], magnifications, model, densities=densities)
        if len(fluences) == 1:  # used once: map_coordinates is faster than building a lookup
            primary, scatter = (v[None] for v in sample_planes(
                planes, voxels.t_mm, voxels.u_mm, voxels.v_mm, machine.sad_mm,
                voxels.lateral_density))
        else:
            if lookup is None:
                lookup = plane_lookup(planes, voxels.t_mm, voxels.u_mm, voxels.v_mm,
                                      machine.sad_mm, voxels.lateral_density)
            primary, scatter = sample_lookup(planes, lookup)
        doses[start:start + len(primary)] = (voxels.primary_gy * primary
                                             + voxels.scatter_gy * scatter)
    return doses


def dose_voxels(density: Any, density_grid: Grid, dose_grid: Grid, dose_mask: Any = None) -> Any:
    """C-order flat indices of the dose-grid voxels to compute (``dose_mask``, or density >= 0.05
    g/cm^3 at the voxel centre)."""
    xp = array_module(density)
    if dose_mask is not None:
        if tuple(dose_mask.shape) != dose_grid.shape:
            raise ValueError(f"dose mask shape {dose_mask.shape} differs from grid "
                             f"{dose_grid.shape}")
        return xp.flatnonzero(xp.asarray(dose_mask))
    every = xp.arange(dose_grid.size)
    rho = density_at(density, density_grid, voxel_positions_xyz(dose_grid, every))
    return every[rho >= MIN_DOSE_DENSITY_G_CM3]
