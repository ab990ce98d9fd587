"""Machine description and aperture fluence against hand-computed areas."""

import numpy as np
import pytest

from dose.machine import load_machine
from dose.segments import Segment, open_field, segments_fluence


def test_millennium_120_geometry():
    machine = load_machine()
    assert machine.sad_mm == 1000.0
    assert machine.n_leaf_pairs == 60
    widths = machine.leaf_widths_mm
    np.testing.assert_array_equal(widths[:10], 10.0)
    np.testing.assert_array_equal(widths[10:50], 5.0)
    np.testing.assert_array_equal(widths[50:], 10.0)
    assert machine.leaf_boundaries_mm[0] == -200.0 and machine.leaf_boundaries_mm[30] == 0.0


def test_open_field_fluence_is_its_area():
    machine = load_machine()
    edges = np.arange(-100.0, 100.01, 2.5)
    field = open_field(machine, (-50.0, 30.0), (-20.0, 40.0), mu=3.0)
    fluence = segments_fluence([field], machine, edges, edges)
    # 80 x 60 mm open at 3 MU; closed pairs sit under the X1 jaw, so no transmission is added
    assert fluence.sum() * 2.5**2 == pytest.approx(3.0 * 80 * 60)
    assert fluence.max() == pytest.approx(3.0)


def test_partial_pixels_and_transmission():
    machine = load_machine()
    leaves = np.tile([-10.0, 10.0], (60, 1))
    leaves[30] = [-3.0, 7.0]  # the pair spanning y 0..5 mm is narrower
    segment = Segment((-20.0, 20.0), (0.0, 5.0), leaves, mu=1.0)
    edges = np.arange(-20.0, 20.01, 2.0)
    fluence = segments_fluence([segment], machine, edges, np.array([-5.0, 0.0, 5.0]))
    assert fluence[0].sum() == 0.0  # blocked by the Y1 jaw
    t = machine.leaf_transmission
    open_mm = 10.0
    expected = (open_mm + t * (40.0 - open_mm)) * 1.0  # one 5 mm row of pixels, 2 mm wide
    assert fluence[1].sum() * 2.0 == pytest.approx(expected)
    assert fluence[1, 8] == pytest.approx(0.5 + 0.5 * t)  # pixel -4..-2 half open by the A leaf


def test_segment_validation():
    with pytest.raises(ValueError, match="bank A"):
        Segment((-5, 5), (-5, 5), np.tile([5.0, -5.0], (60, 1)), 1.0)


def test_segment_dose_matrix_columns_sum_to_segment_dose():
    """Per-segment doses (1 MU each) weighted by the MUs equal the summed segment dose: the two
    paths share the physics but not the fluence map (one per segment vs one per beam)."""
    from dose import Beam, Grid, load_beam_model, segment_dose, segment_dose_matrix

    machine, model = load_machine(), load_beam_model()
    grid = Grid((-40.0, 2.0, -40.0), (4.0, 4.0, 4.0), (21, 30, 21))
    density = np.ones(grid.shape, np.float32)
    beams = [Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0)), Beam(90.0, 0.0, 0.0, (0.0, 60.0, 0.0))]
    leaves = np.tile([-10.0, 15.0], (machine.n_leaf_pairs, 1))
    segments = [[open_field(machine, (-20.0, 20.0), (-20.0, 20.0), 2.0),
                 Segment((-20.0, 20.0), (-10.0, 10.0), leaves, 3.0)],
                [open_field(machine, (-15.0, 15.0), (-30.0, 30.0), 1.5)]]
    index, matrix = segment_dose_matrix(density, grid, grid, beams, segments, machine, model)
    mu = np.array([2.0, 3.0, 1.5])
    total = segment_dose(density, grid, grid, beams, segments, machine, model).ravel()
    np.testing.assert_allclose(matrix @ mu, total[index], rtol=1e-4, atol=1e-6 * total.max())
    assert matrix.shape == (index.size, 3) and index.size == grid.size


def test_traced_fields_reused_at_other_mu_give_the_same_dose():
    """``field_voxels`` traced once and passed to ``segment_dose`` for two sets of MU (one with a
    segment at 0 MU) give the doses traced afresh; the dose is linear in the MU, and a field
    whose segments are all at 0 MU gives none."""
    from dose import Beam, Grid, field_voxels, load_beam_model, segment_dose

    machine, model = load_machine(), load_beam_model()
    grid = Grid((-40.0, 2.0, -40.0), (4.0, 4.0, 4.0), (21, 30, 21))
    density = np.ones(grid.shape, np.float32)
    density[:, 10:14, :] = 0.3  # a slab of lung: the tracing matters
    beams = [Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0)), Beam(90.0, 0.0, 0.0, (0.0, 60.0, 0.0))]
    leaves = np.tile([-10.0, 15.0], (machine.n_leaf_pairs, 1))
    shapes = [[open_field(machine, (-20.0, 20.0), (-20.0, 20.0), 1.0),
               Segment((-20.0, 20.0), (-10.0, 10.0), leaves, 1.0)],
              [open_field(machine, (-15.0, 15.0), (-30.0, 30.0), 1.0)]]
    traced = field_voxels(density, grid, grid, beams, shapes, machine, model)

    def at(mu):
        return [[Segment(s.jaw_x_mm, s.jaw_y_mm, s.leaf_positions_mm, m)
                 for s, m in zip(field, field_mu)] for field, field_mu in zip(shapes, mu)]

    for mu in ([[2.0, 3.0], [1.5]], [[0.0, 3.0], [0.0]]):
        fresh = segment_dose(density, grid, grid, beams, at(mu), machine, model)
        reused = segment_dose(density, grid, grid, beams, at(mu), machine, model, voxels=traced)
        np.testing.assert_array_equal(reused, fresh)
    doubled = segment_dose(density, grid, grid, beams, at([[4.0, 6.0], [3.0]]), machine, model,
                           voxels=traced)
    once = segment_dose(density, grid, grid, beams, at([[2.0, 3.0], [1.5]]), machine, model,
                        voxels=traced)
    np.testing.assert_allclose(doubled, 2.0 * once, rtol=1e-5, atol=1e-7 * once.max())
    only_first = segment_dose(density, grid, grid, beams[:1], at([[2.0, 3.0]]), machine, model)
    np.testing.assert_allclose(
        segment_dose(density, grid, grid, beams, at([[2.0, 3.0], [0.0]]), machine, model,
                     voxels=traced), only_first, rtol=1e-6)


def test_segment_dose_matrix_from_traced_fields_matches_their_final_dose():
    """Rows of ``segment_dose_matrix`` taken from ``field_voxels`` traced for the whole grid (the
    plan traces once for the segment doses and the final dose) are those voxels' dose: weighted
    by the MU, the final dose of the same trace; voxels outside ``dose_mask`` are left out."""
    from dose import (Beam, Grid, field_voxels, load_beam_model, segment_dose,
                      segment_dose_matrix)

    machine, model = load_machine(), load_beam_model()
    grid = Grid((-40.0, 2.0, -40.0), (4.0, 4.0, 4.0), (21, 30, 21))
    density = np.ones(grid.shape, np.float32)
    density[:, 10:14, :] = 0.3
    beams = [Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0)), Beam(90.0, 0.0, 0.0, (0.0, 60.0, 0.0))]
    leaves = np.tile([-10.0, 15.0], (machine.n_leaf_pairs, 1))
    segments = [[open_field(machine, (-20.0, 20.0), (-20.0, 20.0), 2.0),
                 Segment((-20.0, 20.0), (-10.0, 10.0), leaves, 3.0)],
                [open_field(machine, (-15.0, 15.0), (-30.0, 30.0), 1.5)]]
    traced = field_voxels(density, grid, grid, beams, segments, machine, model)
    wanted = np.zeros(grid.shape, bool)
    wanted[::2, ::3, :] = True
    index, matrix = segment_dose_matrix(density, grid, grid, beams, segments, machine, model,
                                        dose_mask=wanted, voxels=traced)
    np.testing.assert_array_equal(index, np.flatnonzero(wanted))
    total = segment_dose(density, grid, grid, beams, segments, machine, model,
                         voxels=traced).ravel()
    np.testing.assert_allclose(matrix @ np.array([2.0, 3.0, 1.5]), total[index], rtol=1e-4,
                               atol=1e-6 * total.max())


def test_carriages_of_one_direction_share_a_tracing():
    """Two fields of one direction with different windows (a split field's carriages) traced
    together in ``field_voxels`` (once, over their union) give each field the voxels, depths and
    depth terms it gets traced alone: the rays lie on a lattice fixed to the beam axis."""
    from dose import Beam, Grid, field_voxels, load_beam_model

    machine, model = load_machine(), load_beam_model()
    grid = Grid((-60.0, -40.0, -60.0), (4.0, 4.0, 4.0), (31, 21, 31))
    density = np.ones(grid.shape, np.float32)
    density[:, 8:12, 10:20] = 0.25  # an air-like pocket: depths differ between neighbours
    beam = Beam(30.0, 0.0, 0.0, (0.0, 0.0, 0.0))
    left = [open_field(machine, (-50.0, -5.0), (-20.0, 20.0), 1.0)]
    right = [open_field(machine, (5.0, 45.0), (-20.0, 20.0), 1.0)]
    together = field_voxels(density, grid, grid, [beam, beam], [left, right], machine, model,
                            reach_mm=10.0)
    alone = [field_voxels(density, grid, grid, [beam], [s], machine, model, reach_mm=10.0)[0]
             for s in (left, right)]
    for shared, single in zip(together, alone):
        np.testing.assert_array_equal(shared.index, single.index)
        np.testing.assert_allclose(shared.depth_mm, single.depth_mm, rtol=1e-6, atol=1e-3)
        np.testing.assert_allclose(shared.primary_gy, single.primary_gy, rtol=1e-5)
    assert not np.array_equal(together[0].index, together[1].index)  # the windows differ


def test_magnification_planes_interpolated_0_05_apart_match_finer_planes(monkeypatch):
    """Segment doses interpolate linearly between magnification planes 0.05 apart
    (``INTERPOLATED_MAGNIFICATION_STEP``): through a long, heterogeneous path (300 mm of depth,
    lung and bone slabs) the dose is within 3e-4 (measured 1.2e-4) of its maximum of planes four
    times closer."""
    import dose.segments
    from dose import Beam, Grid, load_beam_model, segment_dose

    machine, model = load_machine(), load_beam_model()
    grid = Grid((-60.0, -150.0, -60.0), (5.0, 5.0, 5.0), (25, 61, 25))  # 300 mm along the beam
    density = np.ones(grid.shape, np.float32)
    density[:, 20:30] = 0.3
    density[:, 40:44] = 1.8
    beam = Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0))
    leaves = np.tile([-25.0, 10.0], (machine.n_leaf_pairs, 1))
    segments = [[Segment((-30.0, 30.0), (-30.0, 30.0), leaves, 100.0)]]
    coarse = segment_dose(density, grid, grid, [beam], segments, machine, model)
    monkeypatch.setattr(dose.segments, "INTERPOLATED_MAGNIFICATION_STEP", 0.0125)
    fine = segment_dose(density, grid, grid, [beam], segments, machine, model)
    assert np.abs(coarse - fine).max() <= 3e-4 * fine.max()
    assert not np.array_equal(coarse, fine)


@pytest.mark.parametrize("step", [0.0125, 0.025, 0.05, 0.1])
def test_magnification_planes_are_fixed_and_cover_points_on_a_plane(step):
    """The planes are multiples of ``step`` (the same for any set of voxels between them), and a
    depth range that starts or ends exactly on one (the entry voxel at 850 mm from the source)
    lies strictly inside them: rounding must not drop its voxels (they would get no dose)."""
    from dose.beam_model import magnification_planes

    planes = magnification_planes(850.0, 1150.0, 1000.0, step)
    np.testing.assert_allclose(planes / step, np.round(planes / step), atol=1e-9)
    assert planes[0] < 0.85 and planes[-1] > 1.15
    inner = magnification_planes(900.0, 1000.0, 1000.0, step)
    assert set(np.round(inner / step).astype(int)) <= set(np.round(planes / step).astype(int))
