"""Radiological depth along divergent rays, and the per-voxel depth terms of a beam."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dose._xp import array_module, ndimage_module
from dose.beam_model import LATERAL_DENSITIES, BeamModel, depth_terms
from dose.beams import Beam
from dose.geometry import project_to_beam
from dose.grid import Grid

# Ray-tracing resolution shared by the beamlet and the segment dose (so that both see the same
# radiological depths): rays every 2.5 mm at the isocentre plane, density sampled every 2 mm
# along the axis (finer than the 2.5-3 mm CT voxels it interpolates).
LATERAL_STEP_MM = 2.5
STEP_MM = 2.0


def voxel_positions_xyz(grid: Grid, flat_index: Any) -> Any:
    """Patient LPS coordinates ``(n, 3)`` (x, y, z), mm, of voxels given by C-order flat indices."""
    xp = array_module(flat_index)
    k, j, i = xp.unravel_index(flat_index, grid.shape)
    oz, oy, ox = grid.origin_mm
    dz, dy, dx = grid.spacing_mm
    return xp.stack([ox + i * dx, oy + j * dy, oz + k * dz], axis=1).astype(xp.float64)


def density_at(density: Any, density_grid: Grid, points_xyz: Any) -> Any:
    """Density (g/cm^3) at points ``(n, 3)`` (x, y, z, mm), trilinear; 0 outside the grid."""
    xp = array_module(density, points_xyz)
    index = (points_xyz[:, ::-1] - xp.asarray(density_grid.origin_mm)) / xp.asarray(
        density_grid.spacing_mm)
    return ndimage_module(xp).map_coordinates(density, index.T, order=1, mode="constant", cval=0.0)


def radiological_depth(density: Any, density_grid: Grid, beam: Beam, u_mm: Any, v_mm: Any,
                       t_mm: Any, *, sad_mm: float = 1000.0, lateral_step_mm: float = 2.5,
                       step_mm: float = 1.0) -> Any:
    """Water-equivalent depth (mm) of points along the divergent rays from the source.

    Rays are cast from the source through a beam's-eye-view grid of ``lateral_step_mm`` at the
    isocentre plane covering the points; density is sampled trilinearly every ``step_mm`` of
    axial distance and summed along each ray (midpoint rule), then the cumulative depth is
    interpolated trilinearly to the points in (u, v, t). Outside the density grid the density
    is 0 (vacuum).

    Parameters
    ----------
    density : (nz, ny, nx) float array, g/cm^3 (numpy or cupy)
        Mass density relative to water's 1 g/cm^3.
    density_grid : Grid
    beam : Beam
    u_mm, v_mm, t_mm : (n,) arrays, mm
        The points in beam's-eye-view coordinates (:func:`dose.geometry.project_to_beam`).
    sad_mm, lateral_step_mm, step_mm : float, mm

    Returns
    -------
    (n,) float32 array, mm
    """
    xp = array_module(density, u_mm)
    ndimage = ndimage_module(xp)
    rotation = beam.rotation()
    iso = np.asarray(beam.isocenter_xyz_mm)
    # The ray parameter starts where the first ray could enter the density grid.
    low, high = density_grid.extent_mm()
    corners = np.array([[x, y, z] for z in (low[0], high[0]) for y in (low[1], high[1])
                        for x in (low[2], high[2])])
    t_enter = float(np.min(sad_mm - (corners - iso) @ rotation[2])) - step_mm
    t_enter = max(t_enter, step_mm)
    t_stop = float(xp.max(t_mm)) + step_mm
    # The rays lie on a lattice fixed to the beam axis, so a point's depth does not depend on
    # which other points are traced with it (e.g. a field's voxels or a carriage's).
    u0 = (np.floor(float(xp.min(u_mm)) / lateral_step_mm) - 1) * lateral_step_mm
    v0 = (np.floor(float(xp.min(v_mm)) / lateral_step_mm) - 1) * lateral_step_mm
    nu = int(np.ceil((float(xp.max(u_mm)) + lateral_step_mm - u0) / lateral_step_mm)) + 1
    nv = int(np.ceil((float(xp.max(v_mm)) + lateral_step_mm - v0) / lateral_step_mm)) + 1
    nt = int(np.ceil((t_stop - t_enter) / step_mm)) + 1
    u_ray = xp.asarray(u0 + lateral_step_mm * np.arange(nu))
    v_ray = xp.asarray(v0 + lateral_step_mm * np.arange(nv))
    t_ray = xp.asarray(t_enter + step_mm * np.arange(nt))
    # Sample points: source + t * (axis direction + (u e_x + v e_y) / SAD), in voxel indices.
    source = iso + sad_mm * rotation[2]
    to_index = 1.0 / np.asarray(density_grid.spacing_mm)[::-1]  # per x, y, z
    start = (source - np.asarray(density_grid.origin_mm)[::-1]) * to_index
    axis = -rotation[2] * to_index
    ex = rotation[0] * to_index / sad_mm
    ey = rotation[1] * to_index / sad_mm
    depth = xp.empty((nv, nu, nt), dtype=xp.float32)
    for row in range(nv):  # one row of rays at a time bounds memory to nu * nt samples
        direction = (xp.asarray(axis)[None, :] + u_ray[:, None] * xp.asarray(ex)[None, :]
                     + v_ray[row] * xp.asarray(ey)[None, :])  # (nu, 3) per unit t, x y z
        points = xp.asarray(start)[None, None, :] + t_ray[None, :, None] * direction[:, None, :]
        coords = points.reshape(-1, 3)[:, ::-1].T  # z, y, x indices
        rho = ndimage.map_coordinates(density, coords, order=1, mode="constant", cval=0.0)
        rho = rho.reshape(nu, nt).astype(xp.float32)
        path = step_mm * xp.sqrt(1.0 + (u_ray**2 + v_ray[row] ** 2) / sad_mm**2)
        depth[row] = (xp.cumsum(rho, axis=1) - 0.5 * rho) * path[:, None].astype(xp.float32)
    coords = xp.stack([(v_mm - v0) / lateral_step_mm, (u_mm - u0) / lateral_step_mm,
                       (t_mm - t_enter) / step_mm]).astype(xp.float32)
    return ndimage.map_coordinates(depth, coords, order=1, mode="nearest")


@dataclass(frozen=True)
class BeamVoxels:
    """Per-voxel terms of one beam: where each voxel projects and what multiplies the planes.

    ``dose = primary_gy * Cp(u, v, m) + scatter_gy * Cs(u, v, m)`` with ``Cp, Cs`` the lateral
    planes (MU) of :func:`dose.beam_model.lateral_planes`.

    Attributes
    ----------
    index : (n,) int array
        C-order flat indices of the voxels on the dose grid.
    u_mm, v_mm, t_mm : (n,) float arrays, mm
    primary_gy, scatter_gy : (n,) float32 arrays, Gy per MU of plane value
        ``gy_per_mu * (SAD / t)^2 * P(d)`` and the same with ``S(d)``.
    depth_mm : (n,) float32 array, mm
        Radiological depth.
    lateral_density : (n,) float array, g/cm^3
        Density at the voxel (trilinear), clipped to the range of the lateral-density planes:
        it scales the primary kernel's lateral range.
    """

    index: Any
    u_mm: Any
    v_mm: Any
    t_mm: Any
    primary_gy: Any
    scatter_gy: Any
    depth_mm: Any
    lateral_density: Any


def in_window(u_mm: Any, v_mm: Any, window_mm: tuple[float, float, float, float]) -> Any:
    """Which points (u, v at the isocentre plane) lie in ``(u_min, u_max, v_min, v_max)``."""
    u_min, u_max, v_min, v_max = window_mm
    return (u_mm >= u_min) & (u_mm <= u_max) & (v_mm >= v_min) & (v_mm <= v_max)


def beam_voxels(density: Any, density_grid: Grid, dose_grid: Grid, voxel_index: Any, beam: Beam,
                model: BeamModel, *, sad_mm: float = 1000.0,
                uv_window_mm: tuple[float, float, float, float] | None = None,
                lateral_step_mm: float = LATERAL_STEP_MM, step_mm: float = STEP_MM) -> BeamVoxels:
    """Project voxels into a beam, trace their radiological depth and evaluate the depth terms.

    Parameters
    ----------
    density, density_grid : see :func:`radiological_depth`
    dose_grid : Grid
    voxel_index : (n,) int array
        C-order flat indices of the dose-grid voxels to compute.
    beam : Beam
    model : BeamModel
    uv_window_mm : (u_min, u_max, v_min, v_max), optional
        Keep only voxels projecting inside this window at the isocentre plane.
    sad_mm, lateral_step_mm, step_mm : float, mm
    """
    xp = array_module(density, voxel_index)
    points = voxel_positions_xyz(dose_grid, voxel_index)
    u, v, t = project_to_beam(points, beam.rotation(), np.asarray(beam.isocenter_xyz_mm), sad_mm)
    keep = t > 0
    if uv_window_mm is not None:
        keep &= in_window(u, v, uv_window_mm)
    index, u, v, t = voxel_index[keep], u[keep], v[keep], t[keep]
    if index.size == 0:
        empty = xp.zeros(0, dtype=xp.float32)
        return BeamVoxels(index, u, v, t, empty, empty, empty, empty)
    depth = radiological_depth(density, density_grid, beam, u, v, t, sad_mm=sad_mm,
                               lateral_step_mm=lateral_step_mm, step_mm=step_mm)
    primary, scatter = depth_terms(model, depth)
    scale = model.gy_per_mu * (sad_mm / t) ** 2
    lateral = xp.clip(density_at(density, density_grid, points[keep]),
                      float(LATERAL_DENSITIES[0]), float(LATERAL_DENSITIES[-1]))
    return BeamVoxels(index, u, v, t, (scale * primary).astype(xp.float32),
                      (scale * scatter).astype(xp.float32), depth, lateral)
