"""The batched segment dose (one beam's segments share the kernels' transforms and the plane
interpolation) against the per-segment dose, and the plane interpolation against scipy's."""

import numpy as np
import pytest
from scipy import ndimage

import dose.segments
from dose import Beam, Grid, load_beam_model, load_machine, open_field
from dose.beam_model import _corners
from dose.segments import Segment, segment_dose, segment_dose_matrix


def to_numpy(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def test_corners_match_map_coordinates(xp):
    """Multilinear weights of ``_corners`` reproduce ``map_coordinates(order=1, mode='constant')``
    (scipy's own interpolation, the former sampling) at random points, points on the last
    index and points outside (0 there), for 4-D planes with a size-1 axis as in one density.
    Tolerance: float32 weights vs scipy's float64 arithmetic, 1e-6 of values of order 1."""
    rng = np.random.default_rng(3)
    array = rng.random((3, 1, 7, 9)).astype(np.float32)
    n = 400
    coords = [rng.uniform(-0.2, 2.2, n), np.zeros(n), rng.uniform(-0.5, 6.5, n),
              rng.uniform(-0.5, 8.5, n)]
    coords[2][:20] = 6.0  # exactly on the last index: inside
    coords[3][20:40] = -1e-3  # just outside
    coords = [c.astype(np.float32) for c in coords]
    expected = ndimage.map_coordinates(array, np.stack(coords), order=1, mode="constant",
                                       cval=0.0)
    index, weight = _corners(array.shape, [xp.asarray(c) for c in coords])
    got = to_numpy((xp.take(xp.asarray(array).ravel(), index) * weight).sum(axis=0))
    assert np.count_nonzero(expected == 0) > 20 and np.count_nonzero(expected) > 100
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("batch_bytes", [1, 2**40])
def test_batched_matrix_equals_per_segment_dose(xp, monkeypatch, batch_bytes):
    """Each column of ``segment_dose_matrix`` (segments one at a time, or a beam's five in one
    batch) equals ``segment_dose`` of that segment alone at 1 MU, in water with a
    lung slab (several lateral-density planes) and two beams. Tolerance 1e-5 of the maximum
    dose: float32 planes summed in a different order, nothing else differs."""
    machine, model = load_machine(), load_beam_model()
    grid = Grid((-60.0, 2.0, -60.0), (4.0, 4.0, 4.0), (31, 40, 31))
    density = np.ones(grid.shape, np.float32)
    depth = grid.axes_mm()[1]
    density[:, (depth > 40) & (depth < 90), :] = 0.25
    density = xp.asarray(density)
    beams = [Beam(0.0, 0.0, 0.0, (0.0, 60.0, 0.0)), Beam(60.0, 0.0, 0.0, (0.0, 60.0, 0.0))]
    rng = np.random.default_rng(7)
    segments = []
    for _ in beams:
        # Same jaws for all: segment_dose of one segment then uses the same fluence pixels.
        per_beam = [open_field(machine, (-30.0, 30.0), (-25.0, 20.0), 2.0)]
        for _ in range(4):
            a = rng.uniform(-30.0, 0.0, machine.n_leaf_pairs)
            leaves = np.stack([a, a + rng.uniform(0.0, 30.0, machine.n_leaf_pairs)], axis=1)
            per_beam.append(Segment((-30.0, 30.0), (-25.0, 20.0), leaves, 3.0))
        segments.append(per_beam)
    monkeypatch.setattr(dose.segments, "PLANE_BATCH_BYTES", batch_bytes)
    index, matrix = segment_dose_matrix(density, grid, grid, beams, segments, machine, model)
    matrix = to_numpy(matrix)
    column = 0
    for beam, per_beam in zip(beams, segments):
        for segment in per_beam:
            alone = Segment(segment.jaw_x_mm, segment.jaw_y_mm, segment.leaf_positions_mm, 1.0)
            expected = to_numpy(segment_dose(density, grid, grid, [beam], [[alone]], machine,
                                             model)).ravel()[to_numpy(index)]
            assert expected.max() > 0
            np.testing.assert_allclose(matrix[:, column], expected, rtol=0,
                                       atol=1e-5 * expected.max())
            column += 1
    assert column == matrix.shape[1] == 10
