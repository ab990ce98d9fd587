"""Beamlet dose influence matrix (Dij): sparse voxels x beamlets, Gy per MU of each beamlet."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from dose._xp import array_module, ndimage_module, sparse_module, to_device
from dose.beam_model import (BeamModel, centred_square, density_planes, depth_terms,
                             lateral_planes, magnification_planes)
from dose.beams import BeamSet
from dose.grid import Grid
from dose.raytrace import (LATERAL_STEP_MM, STEP_MM, beam_voxels, density_at,
                           voxel_positions_xyz)
from dose.segments import dose_voxels

TABLE_SPACING_MM = 0.25
CHUNK_PAIRS = 250_000  # voxel-beamlet candidates at once: temporaries of ~2 MB stay in cache


@dataclass(frozen=True)
class DoseInfluence:
    """The beamlet dose influence matrix and what its rows and columns mean.

    Attributes
    ----------
    matrix : (n_voxels, n_beamlets) float32 sparse CSR matrix, Gy/MU
        scipy.sparse (numpy) or cupyx.scipy.sparse (cupy). Row ``i`` is dose-grid voxel ``i`` in C
        order (``dose_grid.shape``); only voxels in the computed mask have entries. Column ``j``
        is beamlet ``j`` of ``beamset``: ``matrix @ x`` is the dose (Gy) of beamlet weights ``x``
        (MU through each beamlet's square).
    dose_grid : Grid
    beamset : BeamSet
    truncation_mm : float, mm
        Lateral truncation: a voxel has an entry for a beamlet when the beamlet-lattice cell
        holding the voxel's projection (isocentre plane) comes within this distance of the
        beamlet's centre, so entries reach between ``truncation_mm`` and ``truncation_mm`` plus a
        cell diagonal.
    dropped_fraction : float
        Share of a beamlet's dose integrated over the plane at 100 mm depth in water (SSD
        ~ 1000 mm) that falls beyond ``truncation_mm``: the dose the truncation leaves out.
    """

    matrix: Any
    dose_grid: Grid
    beamset: BeamSet
    truncation_mm: float
    dropped_fraction: float

    def dose(self, weights: Any) -> Any:
        """Dose ``(nz, ny, nx)`` in Gy of beamlet weights ``(n_beamlets,)`` in MU."""
        return (self.matrix @ weights).reshape(self.dose_grid.shape)


def beamlet_table(model: BeamModel, beamlet_size_mm: float, reach_mm: float,
                  magnifications: np.ndarray, xp: Any = np,
                  densities: np.ndarray = np.array([1.0])) -> tuple[Any, Any, float, float]:
    """The dose planes of one beamlet (a square of 1 MU fluence) on a fine square table.

    The same source blur and kernels as :func:`dose.segments.segment_dose` (through
    :func:`dose.beam_model.lateral_planes`); the smooth scatter plane is interpolated
    (bilinear) from its coarse pixels onto the table's.

    Returns
    -------
    primary : (n_m * n_pairs, n, n) complex64 array, MU
        Primary convolution of the beamlet centred in the table, at lateral densities
        ``densities[i]`` (real part) and ``densities[i + 1]`` (imaginary part) in plane
        ``i_m * n_pairs + i`` (``n_pairs = max(1, n_rho - 1)``): one gather fetches the two
        densities a voxel's lies between.
    scatter : (n_m, n, n) float32 array, MU
        Scatter convolution (independent of the lateral density).
    u0_mm : float, mm
        Lower edge of the table along u and v (the table is square and centred on the beamlet).
    spacing_mm : float, mm
        Table pixel: about ``TABLE_SPACING_MM``, dividing the beamlet size a whole number of times
        so that lattice offsets are whole numbers of pixels.
    """
    h = beamlet_size_mm / max(1, round(beamlet_size_mm / TABLE_SPACING_MM))
    n = 2 * int(np.ceil(reach_mm / h)) + 2  # even: pixel edges at 0 and at +-width/2
    edges = (np.arange(n + 1) - n / 2) * h
    planes = lateral_planes(xp.asarray(centred_square(edges, beamlet_size_mm / 2)), h, edges[0],
                            edges[0], magnifications, model, densities=densities)
    centres = xp.asarray((0.5 * (edges[1:] + edges[:-1]) - edges[0]) / (h * planes.scatter_factor)
                         - 0.5)
    coords = xp.stack(xp.meshgrid(centres, centres, indexing="ij")).reshape(2, -1)
    n_rho = planes.densities.size
    n_pairs = max(1, n_rho - 1)
    primary = xp.empty((magnifications.size * n_pairs, n, n), dtype=xp.complex64)
    scatter = xp.empty((magnifications.size, n, n), dtype=xp.float32)
    ndimage = ndimage_module(xp)
    for index in range(magnifications.size):
        scatter[index] = ndimage.map_coordinates(planes.scatter[index], coords, order=1,
                                                 mode="nearest").reshape(n, n)
        for pair in range(n_pairs):
            primary[index * n_pairs + pair] = (planes.primary[index, pair]
                                               + 1j * planes.primary[index, min(pair + 1,
                                                                                n_rho - 1)])
    return primary, scatter, float(edges[0]), float(h)


def compute_dij(density: Any, density_grid: Grid, dose_grid: Grid, beamset: BeamSet,
                model: BeamModel, *, dose_mask: Any = None, truncation_mm: float = 40.0,
                lateral_step_mm: float = LATERAL_STEP_MM, step_mm: float = STEP_MM,
                threads: int | None = None) -> DoseInfluence:
    """Dose influence matrix of the beamlets of a beam set.

    Column ``j`` holds the dose of beamlet ``j`` with 1 MU: the same physics as
    :func:`dose.segments.segment_dose` for a square aperture of the beamlet's size (radiological
    depth by ray tracing, inverse square, source blur, primary and scatter kernels at the voxel's
    magnification, primary kernel scaled by the voxel's lateral density), read from a
    precomputed beamlet table (primary: bilinear between table pixels of 0.25 mm and linear
    between lateral-density planes; scatter: nearest table pixel; nearest magnification plane in
    steps of 0.025) and truncated laterally at ``truncation_mm``.

    Parameters
    ----------
    density : (nz, ny, nx) float array, g/cm^3 (numpy or cupy; sets the backend)
    density_grid : Grid
    dose_grid : Grid
        Grid of the rows (e.g. ``ct_grid.resampled((3.0, 3.0, 3.0))``).
    beamset : BeamSet
    model : BeamModel
    dose_mask : (nz, ny, nx) bool array on ``dose_grid``, optional
        Voxels to compute (by default those with density >= 0.05 g/cm^3).
    truncation_mm : float, mm
        Lateral radius (isocentre plane) of each beamlet's entries (see ``DoseInfluence``). The
        default, 40 mm, keeps an open 10 x 10 cm field's summed beamlets within gamma 3 %/2 mm
        of its segment dose (tests/dose/test_dij.py); 30 mm loses about 9 % on its axis at
        10 cm depth, 50 mm needs about 1.5 times the entries.
    lateral_step_mm, step_mm : float, mm
        Ray-tracing resolution (:func:`dose.raytrace.radiological_depth`).
    threads : int, optional
        Beams computed side by side on the CPU (numpy); all cores by default (at most 4).

    Returns
    -------
    DoseInfluence
    """
    xp = array_module(density)
    width = beamset.beamlet_size_mm
    sad = beamset.sad_mm
    voxel_index = dose_voxels(density, density_grid, dose_grid, dose_mask)
    # One beamlet table serves every beam: its magnifications span the dose grid seen from all.
    low, high = dose_grid.extent_mm()
    corners = np.array([[x, y, z] for z in (low[0], high[0]) for y in (low[1], high[1])
                        for x in (low[2], high[2])])
    t_corners = np.concatenate([
        sad - (corners - np.asarray(beam.isocenter_xyz_mm)) @ beam.rotation()[2]
        for beam in beamset.beams])
    magnifications = magnification_planes(max(float(t_corners.min()), 1.0),
                                          float(t_corners.max()), sad)
    reach = truncation_mm + _table_margin_mm(width)
    densities = density_planes(
        density_at(density, density_grid, voxel_positions_xyz(dose_grid, voxel_index)))
    table = beamlet_table(model, width, reach, magnifications, xp, densities)

    def beam_entries(b: int) -> tuple[Any, Any, Any]:
        cols = beamset.beamlets_of(b)
        u_b, v_b = beamset.u_mm[cols], beamset.v_mm[cols]
        reach = width / 2 + truncation_mm
        window = (u_b.min() - reach, u_b.max() + reach, v_b.min() - reach, v_b.max() + reach)
        voxels = beam_voxels(density, density_grid, dose_grid, voxel_index, beamset.beams[b],
                             model, sad_mm=sad, uv_window_mm=window,
                             lateral_step_mm=lateral_step_mm, step_mm=step_mm)
        return _beam_block(voxels, u_b, v_b, int(cols[0]), width, truncation_mm, table,
                           magnifications, densities, sad, dose_grid.size, xp)

    beams_with_beamlets = [b for b in range(len(beamset.beams)) if beamset.beamlets_of(b).size]
    # numpy releases the GIL in its array loops: beams run side by side on the CPU cores.
    workers = 1 if xp is not np else max(1, min(threads or os.cpu_count() or 1, 4))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        entries = dict(zip(beams_with_beamlets, pool.map(beam_entries, beams_with_beamlets)))
    matrix = _stack_blocks(entries, beamset, dose_grid.size, xp, workers)
    dropped = _dropped_fraction(model, width, truncation_mm, xp)
    return DoseInfluence(matrix, dose_grid, beamset, float(truncation_mm), dropped)


def _stack_blocks(entries: dict[int, tuple[Any, Any, Any]], beamset: BeamSet, n_rows: int,
                  xp: Any, workers: int = 1) -> Any:
    """One CSR matrix from each beam's row-ordered entries (disjoint column ranges).

    Row ``i`` of the result is beam 0's entries of row ``i``, then beam 1's, ...: every entry is
    written straight to its place (linear time, no sort and no COO detour). ``workers`` threads
    fill disjoint ranges of rows.
    """
    sparse = sparse_module(xp)
    counts = {b: xp.asarray(c, dtype=xp.int64) for b, (_, _, c) in entries.items()}
    total = sum(counts.values()) if counts else xp.zeros(n_rows, dtype=xp.int64)
    indptr = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(total)])
    nnz = int(indptr[-1])
    data = xp.empty(nnz, dtype=xp.float32)
    indices = xp.empty(nnz, dtype=xp.int32)
    # int32 positions (nnz < 2**31) halve the memory traffic of this pass.
    index_type = xp.int32 if nnz < 2**31 else xp.int64

    def fill(row_range: tuple[int, int]) -> None:
        low, high = row_range
        free = indptr[low:high].copy()  # next free slot of each row
        for b in sorted(entries):
            values, columns, _ = entries[b]
            count = counts[b][low:high]
            first = int(counts[b][:low].sum())  # the beam's entries before row ``low``
            rows = xp.flatnonzero(count)
            local_start = xp.cumsum(count[rows]) - count[rows]  # row starts within the range
            n = int(count.sum())
            dest = _repeat((free[rows] - local_start).astype(index_type), count[rows], xp)
            dest += xp.arange(n, dtype=index_type)
            data[dest] = values[first:first + n]
            indices[dest] = columns[first:first + n]
            free += count

    bounds = np.linspace(0, n_rows, workers + 1).astype(int)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, zip(bounds[:-1], bounds[1:])))
    entries.clear()
    if nnz < 2**31:  # cuSPARSE wants int32 row pointers; scipy keeps them smaller too
        indptr = indptr.astype(xp.int32)
    return sparse.csr_matrix((data, indices, indptr), shape=(n_rows, beamset.n_beamlets))


def _repeat(values: Any, counts: Any, xp: Any) -> Any:
    """``values[i]`` repeated ``counts[i]`` times (cupy.repeat takes no array of counts)."""
    if xp is np:
        return np.repeat(values, counts)
    return _repeat_by_search(values, counts, xp)


def _repeat_by_search(values: Any, counts: Any, xp: Any) -> Any:
    """:func:`_repeat` for any array module: each output slot finds its owner by binary search."""
    ends = xp.cumsum(counts)
    owner = xp.searchsorted(ends, xp.arange(int(ends[-1]) if ends.size else 0), side="right")
    return values[owner]


def _beam_block(voxels: Any, u_b: np.ndarray, v_b: np.ndarray, first_column: int, width: float,
                radius: float, table: tuple[Any, Any, float, float], magnifications: np.ndarray,
                densities: np.ndarray, sad: float, n_rows: int, xp: Any) -> Any:
    """The entries of one beam: ``(values, columns, per-row counts (n_rows,))``; the beam's
    beamlets are the columns from ``first_column`` on.

    Beamlets sit on a lattice of cells of side ``width``; a voxel is paired with the beamlet of
    its own cell and those of the neighbouring cells whose centre lies within ``radius`` of the
    nearest point of the voxel's cell. The work grows with the entries kept, not with the grid.
    Entries come out ordered by voxel (row), as CSR needs.
    """
    primary_table, scatter_table, table_u0, table_h = table
    n_pairs = max(1, densities.size - 1)
    n_m, n_t = scatter_table.shape[0], scatter_table.shape[1]
    # Beamlet lattice: cell (iv, iu) -> local column, -1 where no beamlet. Padded by 2k cells so
    # that the whole neighbourhood of any voxel within k cells of a beamlet lies inside it.
    iu_b = np.rint(u_b / width - 0.5).astype(np.int64)
    iv_b = np.rint(v_b / width - 0.5).astype(np.int64)
    k = int(np.ceil(radius / width + 0.5))
    iu0, iv0 = iu_b.min() - 2 * k, iv_b.min() - 2 * k
    n_u, n_v = iu_b.max() + 2 * k - iu0 + 1, iv_b.max() + 2 * k - iv0 + 1
    lattice = np.full((n_v, n_u), -1, dtype=np.int32)
    lattice[iv_b - iv0, iu_b - iu0] = first_column + np.arange(u_b.size, dtype=np.int32)
    du, dv = np.meshgrid(np.arange(-k, k + 1), np.arange(-k, k + 1))
    near = (np.clip(np.abs(du) * width - width / 2, 0, None) ** 2
            + np.clip(np.abs(dv) * width - width / 2, 0, None) ** 2) <= radius**2
    du, dv = du[near], dv[near]
    lattice_flat = xp.asarray(lattice.ravel())
    cell_offsets = xp.asarray((dv * n_u + du).astype(np.int32))[None, :]
    # The beamlet at cell + (du, dv) is offset by (fu - du w, fv - dv w) from the voxel: with w a
    # whole number of table pixels, its table index is the voxel's own minus (du, dv) w / h.
    pixels_per_cell = int(round(width / table_h))
    table_offsets = xp.asarray((-(dv * n_t + du) * pixels_per_cell).astype(np.int32))[None, :]
    primary_flat, scatter_flat = primary_table.ravel(), scatter_table.ravel()

    iu = xp.floor(voxels.u_mm / width).astype(xp.int64)
    iv = xp.floor(voxels.v_mm / width).astype(xp.int64)
    inside = xp.flatnonzero((iu - k >= iu0) & (iu + k < iu0 + n_u) & (iv - k >= iv0)
                            & (iv + k < iv0 + n_v))
    iu, iv = iu[inside], iv[inside]
    scatter_gy = voxels.scatter_gy[inside][:, None]
    cell = ((iv - iv0) * n_u + (iu - iu0)).astype(xp.int32)[:, None]
    m_step = magnifications[1] - magnifications[0]
    plane = xp.clip(xp.rint((voxels.t_mm[inside] / sad - magnifications[0]) / m_step), 0, n_m - 1)
    # Linear in lateral density: the pair of planes around the voxel's density, and its weight.
    rho_position = xp.interp(voxels.lateral_density[inside], xp.asarray(densities),
                             xp.arange(densities.size, dtype=xp.float64))
    pair = xp.clip(xp.floor(rho_position), 0, n_pairs - 1)
    w_rho = (rho_position - pair).astype(xp.float32) if densities.size > 1 else 0.0 * rho_position
    primary_low = (voxels.primary_gy[inside] * (1 - w_rho)).astype(xp.float32)[:, None]
    primary_high = (voxels.primary_gy[inside] * w_rho).astype(xp.float32)[:, None]
    # Bilinear in the table: the voxel's fractional pixel position is the same for every beamlet
    # (offsets are whole pixels), so the four weights are per voxel.
    pu = (voxels.u_mm[inside] - (iu + 0.5) * width - table_u0) / table_h - 0.5
    pv = (voxels.v_mm[inside] - (iv + 0.5) * width - table_u0) / table_h - 0.5
    tu, tv = xp.floor(pu), xp.floor(pv)
    wu, wv = (pu - tu).astype(xp.float32), (pv - tv).astype(xp.float32)
    corner_weights = [((1 - wv) * (1 - wu))[:, None], ((1 - wv) * wu)[:, None],
                      (wv * (1 - wu))[:, None], (wv * wu)[:, None]]
    corners = (0, 1, n_t, n_t + 1)
    base = (((plane * n_pairs + pair) * n_t + tv) * n_t + tu).astype(xp.int32)[:, None]
    # The smooth scatter: nearest table pixel (0.25 mm).
    scatter_base = ((plane * n_t + xp.rint(pv)) * n_t + xp.rint(pu)).astype(xp.int32)[:, None]
    n_vox = inside.size
    chunk = max(1, CHUNK_PAIRS // du.size)
    data, indices, counts = [], [], []
    for start in range(0, n_vox, chunk):
        s = slice(start, start + chunk)
        col = lattice_flat[cell[s] + cell_offsets]
        index = base[s] + table_offsets
        both = primary_flat[index] * corner_weights[0][s]
        for corner, weight in zip(corners[1:], corner_weights[1:]):
            both += primary_flat[index + corner] * weight[s]
        value = (primary_low[s] * both.real + primary_high[s] * both.imag
                 + scatter_gy[s] * scatter_flat[scatter_base[s] + table_offsets])
        keep = col >= 0
        data.append(value[keep])
        indices.append(col[keep])
        counts.append(keep.sum(axis=1))
    row_counts = xp.zeros(n_rows, dtype=xp.int32)
    if counts:
        row_counts[voxels.index[inside]] = xp.concatenate(counts)
    return (xp.concatenate(data) if data else xp.zeros(0, xp.float32),
            xp.concatenate(indices) if indices else xp.zeros(0, xp.int32), row_counts)


def _dropped_fraction(model: BeamModel, width: float, radius: float, xp: Any) -> float:
    """Share of a beamlet's planar dose integral beyond ``radius`` at 100 mm depth in water (a
    circle; the kept lattice neighbourhood reaches at least this far, so this is an upper bound)."""
    depth = 100.0
    magnifications = np.array([1.0 + depth / 1000.0, 1.0 + depth / 1000.0 + 0.025])
    primary_table, scatter_table, u0, h = beamlet_table(
        model, width, radius + _table_margin_mm(width), magnifications, xp)
    primary_plane = to_device(primary_table[0].real, "cpu")
    scatter_plane = to_device(scatter_table[0], "cpu")
    primary, scatter = depth_terms(model, np.array([depth]))
    centres = u0 + h * (np.arange(primary_plane.shape[0]) + 0.5)
    inside = np.hypot(centres[:, None], centres[None, :]) <= radius
    kept = primary[0] * primary_plane[inside].sum() + scatter[0] * scatter_plane[inside].sum()
    total = (primary[0] + scatter[0]) * width**2 / h**2  # kernels and source integrate to 1
    return float(1.0 - kept / total)


def _table_margin_mm(width: float) -> float:
    """How far the table reaches beyond the truncation radius: a voxel's cell may lie up to a
    cell diagonal beyond it."""
    return width * np.sqrt(2.0) + 1.0
