"""Synthetic phantoms built by code: a water box, a water/lung/water slab stack, the TG-119 C-shape.

Every phantom is centred laterally on the patient origin, uses DICOM patient coordinates (LPS,
head-first supine: +x patient left, +y posterior, +z superior) and comes with its structures and a
prescription, so each one can go through the whole pipeline. Structure masks are decided by voxel
centres; grids are anchored so that the phantom's anterior (-y), right (-x) and inferior (-z)
faces lie on voxel edges, which puts every face on an edge when the phantom's dimensions are
multiples of the voxel size.
"""

from __future__ import annotations

import math

import numpy as np

from dose.grid import Grid
from planner.density import hu_density_table, hu_to_density
from planner.patient import Patient, Prescription, Structure

#: CT numbers of the media the phantoms are made of, HU.
WATER_HU = 0.0
AIR_HU = -1000.0
#: Mass density of inflated lung used in heterogeneity benchmarks (e.g. the water/lung/water slab
#: tests of the collapsed-cone literature), g/cm^3.
LUNG_DENSITY_G_CM3 = 0.26
#: TG-119 C-shape geometry (see ``cshape_phantom``), mm.
CORE_RADIUS_MM = 10.0
CORE_LENGTH_MM = 100.0
PTV_INNER_RADIUS_MM = 15.0
PTV_OUTER_RADIUS_MM = 37.0
PTV_LENGTH_MM = 80.0
#: The C opens posteriorly: target voxels keep ``y <=`` this (mm from the core axis), as in CORT.
PTV_OPEN_ABOVE_Y_MM = 5.0


def density_to_hu(density_g_cm3: float) -> float:
    """CT number (HU) that ``planner.density.hu_to_density`` maps to ``density_g_cm3``.

    Inverts the piecewise-linear calibration table (``data/hu_density.csv``), which is strictly
    increasing, so the inverse is the same interpolation with the columns swapped.

    Parameters
    ----------
    density_g_cm3 : float
        Mass density in g/cm^3, within the table's range.

    Returns
    -------
    float
        CT number, HU.
    """
    points_hu, points_rho = hu_density_table()
    if not points_rho[0] <= density_g_cm3 <= points_rho[-1]:
        raise ValueError(f"density {density_g_cm3} g/cm^3 outside the calibration table "
                         f"[{points_rho[0]}, {points_rho[-1]}]")
    return float(np.interp(density_g_cm3, points_rho, points_hu))


def _voxel_zyx(voxel_mm: float | tuple[float, float, float]) -> tuple[float, float, float]:
    if np.ndim(voxel_mm) == 0:
        voxel = (float(voxel_mm),) * 3  # type: ignore[arg-type]
    else:
        voxel = tuple(float(v) for v in voxel_mm)  # type: ignore[union-attr]
    if len(voxel) != 3 or min(voxel) <= 0:
        raise ValueError(f"voxel_mm must be a positive size or (dz, dy, dx), got {voxel_mm}")
    return voxel  # type: ignore[return-value]


def _grid_around(low_mm: tuple[float, float, float], high_mm: tuple[float, float, float],
                 voxel_mm: tuple[float, float, float], margin_mm: float) -> Grid:
    """Grid covering the box ``[low, high]`` (z, y, x, mm) plus at least ``margin_mm`` of air.

    ``low`` lies on a voxel edge; the grid extends past ``high`` by at least the margin.
    """
    origin, shape = [], []
    for lo, hi, v in zip(low_mm, high_mm, voxel_mm):
        n_margin = math.ceil(margin_mm / v - 1e-9)
        n_inside = math.ceil((hi - lo) / v - 1e-9)
        origin.append(lo - (n_margin - 0.5) * v)
        shape.append(n_inside + 2 * n_margin)
    return Grid(tuple(origin), voxel_mm, tuple(shape))  # type: ignore[arg-type]


def _centres(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates, mm, broadcastable: z (nz,1,1), y (1,ny,1), x (1,1,nx)."""
    z, y, x = grid.axes_mm()
    return z[:, None, None], y[None, :, None], x[None, None, :]


def _box_mask(grid: Grid, low_mm: tuple[float, float, float],
              high_mm: tuple[float, float, float]) -> np.ndarray:
    """Voxels whose centres lie in ``[low, high)`` along z, y and x (mm)."""
    mask = np.ones(grid.shape, dtype=bool)
    for centre, lo, hi in zip(_centres(grid), low_mm, high_mm):
        mask &= (centre >= lo) & (centre < hi)
    return mask


def _water_block(low_mm: tuple[float, float, float], high_mm: tuple[float, float, float],
                 voxel_mm: float | tuple[float, float, float], margin_mm: float
                 ) -> tuple[Grid, np.ndarray, np.ndarray]:
    """A block of water ``[low, high)`` (z, y, x, mm) in air: the grid around it (see
    :func:`_grid_around`), the block's mask and the CT numbers (water inside, air outside)."""
    grid = _grid_around(low_mm, high_mm, _voxel_zyx(voxel_mm), margin_mm)
    body = _box_mask(grid, low_mm, high_mm)
    return grid, body, np.where(body, WATER_HU, AIR_HU)


def _patient(name: str, grid: Grid, hu: np.ndarray, structures: list[Structure],
             prescription_gy: float, fractions: int) -> Patient:
    """The phantom ``name`` as a Patient, ``prescription_gy`` in ``fractions`` to its ``PTV``."""
    hu = hu.astype(np.float32)
    return Patient(name=name, grid=grid, hu=hu, density=hu_to_density(hu),
                   structures=tuple(structures),
                   prescriptions=(Prescription("PTV", prescription_gy, fractions),),
                   source=f"phantom:{name}")


def water_box(*, size_mm: float = 200.0, target_size_mm: float = 40.0,
              voxel_mm: float | tuple[float, float, float] = 2.5, margin_mm: float = 20.0,
              prescription_gy: float = 50.0, fractions: int = 25) -> Patient:
    """A cube of water in air, centred on the origin, with a cubic target at its centre.

    Parameters
    ----------
    size_mm : float
        Edge of the water cube, mm.
    target_size_mm : float
        Edge of the central cubic target ``PTV``, mm.
    voxel_mm : float or (dz, dy, dx) tuple of float
        Voxel size, mm.
    margin_mm : float
        Air around the cube on every side (at least), mm.
    prescription_gy : float
        Total dose prescribed to ``PTV``, Gy.
    fractions : int
        Number of fractions.

    Returns
    -------
    Patient
        Structures ``BODY`` (external: the water cube) and ``PTV`` (target); water 0 HU, air
        -1000 HU.
    """
    half, half_target = size_mm / 2, target_size_mm / 2
    grid, body, hu = _water_block((-half,) * 3, (half,) * 3,  # type: ignore[arg-type]
                                  voxel_mm, margin_mm)
    target = _box_mask(grid, (-half_target,) * 3, (half_target,) * 3)  # type: ignore[arg-type]
    structures = [Structure("BODY", "external", body), Structure("PTV", "target", target)]
    return _patient("water_box", grid, hu, structures, prescription_gy, fractions)


def slab_phantom(*, width_mm: float = 300.0, water_before_mm: float = 50.0,
                 lung_mm: float = 100.0, depth_mm: float = 300.0, target_size_mm: float = 40.0,
                 target_depth_mm: float = 200.0, lung_density_g_cm3: float = LUNG_DENSITY_G_CM3,
                 voxel_mm: float | tuple[float, float, float] = 2.5, margin_mm: float = 10.0,
                 prescription_gy: float = 50.0, fractions: int = 25) -> Patient:
    """Water / lung / water slabs stacked from anterior to posterior, for heterogeneity tests.

    A gantry-0 beam (IEC 61217: from above a supine head-first patient, travelling along +y)
    meets, in this order: ``water_before_mm`` of water, ``lung_mm`` of lung, then water down to
    ``depth_mm``. The anterior surface is the plane ``y = -depth_mm / 2``, so the depth below it
    is ``y + depth_mm / 2``. The defaults (30 x 30 cm laterally, water 5 cm / lung 10 cm / water
    to 30 cm, lung 0.26 g/cm^3) follow the usual slab benchmarks of heterogeneity corrections.

    Parameters
    ----------
    width_mm : float
        Lateral (x) and cranio-caudal (z) size of the slabs, mm.
    water_before_mm : float
        Thickness of the first water slab, mm.
    lung_mm : float
        Thickness of the lung slab, mm.
    depth_mm : float
        Total thickness of the stack along y, mm.
    target_size_mm : float
        Edge of the cubic target ``PTV`` in the distal water, mm.
    target_depth_mm : float
        Depth of the target's centre below the anterior surface, mm.
    lung_density_g_cm3 : float
        Mass density of the lung slab, g/cm^3; its CT number is taken from the HU-density table.
    voxel_mm : float or (dz, dy, dx) tuple of float
        Voxel size, mm.
    margin_mm : float
        Air around the stack on every side (at least), mm.
    prescription_gy : float
        Total dose prescribed to ``PTV``, Gy.
    fractions : int
        Number of fractions.

    Returns
    -------
    Patient
        Structures ``BODY`` (external), ``Lung`` (organ) and ``PTV`` (target).
    """
    if water_before_mm < 0 or lung_mm < 0 or water_before_mm + lung_mm > depth_mm:
        raise ValueError(f"slabs do not fit: water {water_before_mm} mm + lung {lung_mm} mm > "
                         f"depth {depth_mm} mm")
    half_width, surface_y = width_mm / 2, -depth_mm / 2
    grid, body, hu = _water_block((-half_width, surface_y, -half_width),
                                  (half_width, surface_y + depth_mm, half_width), voxel_mm,
                                  margin_mm)
    lung_top = surface_y + water_before_mm
    lung = _box_mask(grid, (-half_width, lung_top, -half_width),
                     (half_width, lung_top + lung_mm, half_width))
    half_target, target_y = target_size_mm / 2, surface_y + target_depth_mm
    target = _box_mask(grid, (-half_target, target_y - half_target, -half_target),
                       (half_target, target_y + half_target, half_target))
    hu[lung] = density_to_hu(lung_density_g_cm3)
    structures = [Structure("BODY", "external", body), Structure("Lung", "organ", lung),
                  Structure("PTV", "target", target)]
    return _patient("slab_phantom", grid, hu, structures, prescription_gy, fractions)


def cshape_phantom(*, voxel_mm: float | tuple[float, float, float] = (2.5, 3.0, 3.0),
                   body_size_mm: tuple[float, float, float] = (200.0, 150.0, 300.0),
                   margin_mm: float = 15.0, prescription_gy: float = 50.0,
                   fractions: int = 25) -> Patient:
    """The AAPM TG-119 C-shape test: a C-shaped target wrapped around a central core, in water.

    Geometry (Ezzell et al., "IMRT commissioning: multiple institution planning and dosimetry
    comparisons, a report from AAPM Task Group 119", Med Phys 36:5359, 2009): a core cylinder of
    radius 10 mm and length 100 mm along the cranio-caudal axis; the target ``PTV`` is the
    annulus of radii 15 mm to 37 mm around it (a 5 mm gap to the core), 80 mm long, with its
    posterior part open. The open side follows the CORT digitisation of the same case (Craft et
    al., GigaScience 3:37, 2014; ``TG119.mat``), where the target keeps only voxels with
    ``y <= +5 mm`` from the core axis, i.e. the anterior half and two arms reaching just past the
    axis; the dimensions above were checked against that file (core radius 9.5 mm, target radii
    15.3-38.4 mm between voxel centres, lengths 100 and 82.5 mm). The body is a water block of
    the CORT phantom's size, 30 cm wide (x) and 15 cm thick (y), here 20 cm long (z). Goals
    (TG-119): PTV D95 >= 50 Gy, D10 <= 55 Gy, core D10 <= 25 Gy (easier) or 10 Gy (harder), with
    9 fields at 0, 40, ..., 320 deg.

    Parameters
    ----------
    voxel_mm : float or (dz, dy, dx) tuple of float
        Voxel size, mm (default the CORT grid's 2.5 x 3 x 3 mm).
    body_size_mm : (3,) tuple of float
        Size ``(z, y, x)`` of the water block, mm.
    margin_mm : float
        Air around the block on every side (at least), mm.
    prescription_gy : float
        Total dose prescribed to ``PTV``, Gy (TG-119: 50 Gy).
    fractions : int
        Number of fractions (25, i.e. 2 Gy per fraction).

    Returns
    -------
    Patient
        Structures ``PTV`` (target), ``Core`` (organ) and ``BODY`` (external); the core axis is
        the z axis through the origin.
    """
    half = tuple(s / 2 for s in body_size_mm)
    low = tuple(-h for h in half)
    grid, body, hu = _water_block(low, half, voxel_mm, margin_mm)  # type: ignore[arg-type]
    z, y, x = _centres(grid)
    radius = np.hypot(x, y)
    core = (radius <= CORE_RADIUS_MM) & (np.abs(z) <= CORE_LENGTH_MM / 2)
    target = ((radius >= PTV_INNER_RADIUS_MM) & (radius <= PTV_OUTER_RADIUS_MM)
              & (y <= PTV_OPEN_ABOVE_Y_MM) & (np.abs(z) <= PTV_LENGTH_MM / 2))
    structures = [Structure("PTV", "target", target), Structure("Core", "organ", core),
                  Structure("BODY", "external", body)]
    return _patient("cshape_phantom", grid, hu, structures, prescription_gy, fractions)

