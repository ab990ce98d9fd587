"""Dose-level geometry and heterogeneity checks: rotation invariance, inverse square (Mayneord),
and a water / lung / water slab (radiological depth, lateral density scaling of the primary)."""

import numpy as np
import pytest

from dose import Beam, Grid, load_beam_model, load_machine, open_field, segment_dose
from dose.commissioning import water_field

N = 41  # voxels per side of the square (x, y) cross-section, odd so the grid is centred


@pytest.fixture(scope="module")
def model():
    return load_beam_model()


def phantom():
    """A 164 mm water cylinder-like block with an off-axis bone insert and a lung insert, on a
    grid centred on the isocentre (x, y) so that a 90 degree turn maps voxels onto voxels."""
    grid = Grid((-8.0, -80.0, -80.0), (4.0, 4.0, 4.0), (5, N, N))
    z, y, x = np.meshgrid(*grid.axes_mm(), indexing="ij")
    density = np.where(np.hypot(x, y) < 75.0, 1.0, 0.0012).astype(np.float32)
    density[(np.abs(x - 20) < 12) & (np.abs(y + 30) < 10)] = 1.8   # bone, anterior left
    density[(np.abs(x + 25) < 15) & (np.abs(y - 10) < 20)] = 0.25  # lung, right
    return density, grid


def turn(array):
    """The phantom turned by +90 degrees about the patient's z axis so that what was anterior
    (-y, facing the gantry-0 source) faces the gantry-90 source (+x): new(x, y) = old(y, -x)."""
    return np.ascontiguousarray(np.transpose(array[:, ::-1, :], (0, 2, 1)))


def test_gantry_90_on_turned_phantom_equals_gantry_0(model):
    """Issue 3: a beam at gantry 90 on the phantom turned by 90 degrees gives the gantry-0 dose
    on the original phantom, voxel by voxel, within 1 % of the maximum (ray sampling differs)."""
    machine = load_machine()
    density, grid = phantom()
    leaves = np.tile([-30.0, 20.0], (machine.n_leaf_pairs, 1))
    leaves[25:35] = [-10.0, 40.0]  # an irregular aperture, not symmetric in u
    from dose import Segment

    segment = Segment((-30.0, 40.0), (-20.0, 25.0), leaves, 100.0)
    upright = segment_dose(density, grid, grid, [Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0))],
                           [[segment]], machine, model)
    turned = segment_dose(turn(density), grid, grid, [Beam(90.0, 0.0, 0.0, (0.0, 0.0, 0.0))],
                          [[segment]], machine, model)
    np.testing.assert_allclose(turned, turn(upright), atol=0.01 * upright.max())
    assert upright.max() > 0.5  # 100 MU: about 1 Gy in the build-up region


def test_inverse_square_mayneord(model):
    """PDD at SSD 90 cm from PDD at SSD 100 cm by the Mayneord F factor
    F = ((SSD1 + d) / (SSD1 + dm))^2 ((SSD2 + dm) / (SSD2 + d))^2 (Khan, The Physics of Radiation
    Therapy, ch. 9): within 1 % for a 5 x 5 cm field where the scatter change is small."""
    machine = load_machine()
    far = water_field(model, machine, 50.0, ssd_mm=1000.0)
    # The field is defined at the isocentre: 55.6 mm there is 50 mm at the 900 mm surface.
    near = water_field(model, machine, 50.0 * 1000.0 / 900.0, ssd_mm=900.0)
    dm = 15.0
    for depth in (50.0, 100.0, 200.0):
        factor = ((1000 + depth) / (1000 + dm)) ** 2 * ((900 + dm) / (900 + depth)) ** 2
        assert near.pdd_percent(depth) == pytest.approx(far.pdd_percent(depth) * factor, rel=0.01)


def slab_dose(model, lung_density, field_mm):
    """Central-axis dose behind 30 mm water, 80 mm slab of ``lung_density``, then water."""
    machine = load_machine()
    spacing = (4.0, 2.0, 4.0)
    grid = Grid((-4.0, 1.0, -150.0), spacing, (3, 150, 76))
    depth = grid.axes_mm()[1][:, None] + 0.0 * grid.axes_mm()[2][None, :]
    density = np.ones(grid.shape, np.float32)
    density[:, (depth[:, 0] > 30) & (depth[:, 0] < 110), :] = lung_density
    axis = Grid((0.0, 1.0, 0.0), (1.0, 2.0, 1.0), (1, 150, 1))
    field = open_field(machine, (-field_mm / 2, field_mm / 2), (-field_mm / 2, field_mm / 2), 1.0)
    dose = segment_dose(density, grid, axis, [Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0))], [[field]],
                        machine, model)
    return axis.axes_mm()[1], dose.ravel()


@pytest.fixture(scope="module")
def slab_ratios(model):
    """Central-axis dose with an 80 mm lung slab (0.25 g/cm^3) over the dose of the lung replaced
    by water, taken at the same radiological depth and moved to the real distance from the
    source (inverse square): 1 where radiological-depth scaling alone holds."""
    ratios = {}
    for field_mm in (50.0, 100.0):
        depth, lung = slab_dose(model, 0.25, field_mm)
        _, water = slab_dose(model, 1.0, field_mm)
        radiological = np.where(depth <= 30, depth,
                                np.where(depth < 110, 30 + 0.25 * (depth - 30), depth - 60.0))
        expected = (np.interp(radiological, depth, water)
                    * ((1000 + radiological) / (1000 + depth)) ** 2)
        ratios[field_mm] = (depth, lung / expected, lung, water)
    return ratios


@pytest.mark.parametrize("field_mm", [50.0, 100.0])
def test_dose_beyond_lung_follows_radiological_depth(slab_ratios, field_mm):
    """Issue 3: beyond the lung the dose is within 3 % (MPPG 5.b distal-to-lung tolerance) of the
    dose with the lung replaced by water and scaled by radiological depth; beyond the lung the
    dose exceeds the all-water dose at the same geometric depth (less attenuation)."""
    depth, ratio, lung, water = slab_ratios[field_mm]
    beyond = (depth > 120) & (depth < 250)
    np.testing.assert_allclose(ratio[beyond], 1.0, atol=0.03)
    assert np.all(lung[beyond] > water[beyond])


def test_lower_dose_inside_lung_for_small_fields(slab_ratios):
    """Physics expected: lateral density scaling of the primary (electron) kernel. Inside lung
    the electrons spread four times further sideways, so a 5 x 5 cm field loses lateral electron
    equilibrium: its dose falls clearly (> 5 %) below the radiological-depth estimate, which
    over-doses small fields in lung (DESIGN.md: up to 10 % against Monte Carlo), while a
    10 x 10 cm field stays within 3 % of it (near equilibrium)."""
    depth, small, _, _ = slab_ratios[50.0]
    _, large, _, _ = slab_ratios[100.0]
    inside = (depth > 50) & (depth < 100)
    assert np.all(small[inside] < 0.95)
    np.testing.assert_allclose(large[inside], 1.0, atol=0.03)
    assert np.all(small[inside] < large[inside])
