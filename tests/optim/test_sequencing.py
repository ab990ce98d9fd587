"""Leaf sequencing: exact decomposition and machine limits in every control point.

The machine is a 120-leaf Millennium-type MLC (60 pairs: 10 x 10 mm, 40 x 5 mm, 10 x 10 mm,
symmetric about the axis; Varian's published leaf geometry), as DESIGN.md describes it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from optim.sequencing import leaf_pair_fluence, sequence_leaves

BOUNDARIES = np.concatenate([-200 + 10.0 * np.arange(10), -100 + 5.0 * np.arange(40),
                             100 + 10.0 * np.arange(11)])
GAP = 0.5
TRAVEL = (-200.0, 200.0)
SPAN = 150.0
OVERTRAVEL = (20.0, 100.0)  # X jaws 20 mm, Y jaws 100 mm past the axis, as data/machines
# Stratified fluence = whole levels times one step: the sum of segments may differ from it only
# by float rounding of a few additions.
RTOL = 1e-9


def delivered(seq, col_edges):
    """Sum of weight x aperture on leaf rows x beamlet columns, from the leaf positions alone.

    A beamlet column is open when its centre lies between the two leaf tips of its pair.
    """
    centres = (col_edges[:-1] + col_edges[1:]) / 2
    total = np.zeros((BOUNDARIES.size - 1, centres.size))
    for leaves, w in zip(seq.leaf_positions_mm, seq.weights):
        total += w * ((leaves[:, :1] < centres) & (centres < leaves[:, 1:]))
    return total


def check_limits(seq, *, interdigitation, span=None, overtravel=(np.inf, np.inf)):
    """Every machine limit in every segment (both control points of a segment share them)."""
    eps = 1e-9
    over_x, over_y = overtravel
    for leaves, (x1, x2, y1, y2) in zip(seq.leaf_positions_mm, seq.jaws_mm):
        a, b = leaves[:, 0], leaves[:, 1]
        assert np.all(b - a >= GAP - eps), "minimum gap"
        assert leaves.min() >= TRAVEL[0] - eps and leaves.max() <= TRAVEL[1] + eps, "travel"
        if span is not None:
            assert np.ptp(a) <= span + eps and np.ptp(b) <= span + eps, "leaf span"
        if not interdigitation:
            assert np.all(a[:-1] + GAP <= b[1:] + eps) and np.all(a[1:] + GAP <= b[:-1] + eps)
        is_open = b - a > GAP + eps
        assert is_open.any()
        lower, upper = BOUNDARIES[:-1], BOUNDARIES[1:]
        # Jaws track the open leaves exactly, as far as their overtravel lets them ...
        assert x1 == min(a[is_open].min(), over_x) and x2 == max(b[is_open].max(), -over_x)
        assert y1 == min(lower[is_open].min(), over_y) and y2 == max(upper[is_open].max(), -over_y)
        # ... and every closed pair's gap lies behind a jaw. The one exception: without
        # interdigitation, closed pairs between a Y jaw held back by its overtravel and the open
        # pairs must line up with the open leaves (documented in sequence_leaves).
        closed = ~is_open
        behind_y = (upper <= y1 + eps) | (lower >= y2 - eps)
        behind_x = (b <= x1 + eps) | (a >= x2 - eps)
        held_back = (lower < lower[is_open].min()) | (upper > upper[is_open].max())
        allowed = behind_y | behind_x | (held_back & (not interdigitation))
        assert np.all(allowed[closed]), "closed pair in the field"


def grid(n_rows, n_cols, row0=-30.0, col0=-40.0, size=5.0):
    return row0 + size * np.arange(n_rows + 1), col0 + size * np.arange(n_cols + 1)


fluences = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=14),
    # Zeros (closed leaves) and values over four decades; not denormal floats, whose fractions
    # of the peak underflow.
    elements=st.one_of(st.just(0.0), st.floats(1e-3, 10.0)),
)


@settings(max_examples=60, deadline=None)
@given(fluence=fluences, method=st.sampled_from(["xia", "sweep"]),
       n_levels=st.integers(1, 12), interdigitation=st.booleans(),
       row0=st.sampled_from([-130.0, -105.0, -30.0, 90.0]),
       col0=st.sampled_from([-60.0, 25.0]))
def test_random_fluence_exact_and_within_limits(fluence, method, n_levels, interdigitation, row0,
                                                col0):
    # row0 -130 / -105 / 90 put beamlet rows under the 10 mm outer leaves (two 5 mm rows each)
    # and beyond the Y jaws' overtravel; col0 25 puts every column beyond the X1 jaw's.
    rows, cols = grid(*fluence.shape, row0=row0, col0=col0)
    seq = sequence_leaves(fluence, rows, cols, BOUNDARIES, method=method, n_levels=n_levels,
                          min_gap_mm=GAP, leaf_travel_mm=TRAVEL, jaw_overtravel_mm=OVERTRAVEL,
                          max_leaf_span_mm=SPAN, interdigitation=interdigitation)
    if fluence.max() == 0:
        assert seq.n_segments == 0
        return
    np.testing.assert_allclose(delivered(seq, cols), seq.stratified_fluence, rtol=RTOL, atol=1e-12)
    check_limits(seq, interdigitation=interdigitation, span=SPAN, overtravel=OVERTRAVEL)
    # The stratified fluence is the leaf-pair fluence rounded to the nearest level.
    step = leaf_pair_fluence(fluence, rows, BOUNDARIES).max() / seq.n_levels
    np.testing.assert_array_less(
        np.abs(seq.stratified_fluence - leaf_pair_fluence(fluence, rows, BOUNDARIES)),
        step / 2 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(fluence=fluences, max_segments=st.integers(3, 15), min_fraction=st.floats(0.0, 0.4))
def test_limits_on_segment_count_and_weight(fluence, max_segments, min_fraction):
    rows, cols = grid(*fluence.shape)
    min_weight = min_fraction * fluence.max()
    try:
        seq = sequence_leaves(fluence, rows, cols, BOUNDARIES, n_levels=10,
                              max_segments=max_segments, min_weight=min_weight)
    except ValueError as error:
        # Only when even one level needs more apertures than allowed (many runs in a row).
        assert "even at 1 intensity level" in str(error)
        return
    assert seq.n_segments <= max_segments
    assert np.all(seq.weights >= min_weight * (1 - 1e-12))
    np.testing.assert_allclose(delivered(seq, cols), seq.stratified_fluence, rtol=RTOL, atol=1e-12)


def test_outer_leaf_takes_mean_of_two_beamlet_rows():
    # Rows 100-105 and 105-110 mm both lie under the 10 mm leaf 100-110 mm; the 5 mm leaf at
    # 95-100 mm sees only the first row. Overlap weights by hand: 1.0 and (0.5, 0.5).
    rows = np.array([95.0, 100.0, 105.0, 110.0])
    fluence = np.array([[2.0, 0.0], [4.0, 1.0], [8.0, 3.0]])
    pair = leaf_pair_fluence(fluence, rows, BOUNDARIES)
    np.testing.assert_allclose(pair[49], [2.0, 0.0])
    np.testing.assert_allclose(pair[50], [6.0, 2.0])
    assert not np.delete(pair, [49, 50], axis=0).any()


def test_sweep_uses_the_fewest_monitor_units_of_a_sweep():
    # Bortfeld et al. 1994: a unidirectional sweep needs max over pairs of the sum of the
    # positive level increments; computed here from the level map directly.
    fluence = np.array([[1, 3, 2, 4, 0], [0, 2, 2, 1, 3], [4, 0, 4, 0, 4]], dtype=float)
    rows, cols = grid(3, 5)
    seq = sequence_leaves(fluence, rows, cols, BOUNDARIES, method="sweep", n_levels=4)
    rises = np.clip(np.diff(fluence, prepend=0, axis=1), 0, None).sum(axis=1)  # 5, 4, 12
    assert seq.weights.sum() == pytest.approx(rises.max())
    np.testing.assert_allclose(seq.stratified_fluence[24:27], fluence)


def test_two_level_pyramid_by_hand():
    # One row [0.5, 1, 0.5] at 2 levels is [1, 2, 1] in steps of 0.5. Reducing level: d = 2
    # opens column 1 (residual [1, 0, 1]); d = 1 then opens columns 0 and 2, two runs of the
    # same pair, hence two apertures.
    rows, cols = grid(1, 3, row0=0.0, col0=0.0)
    seq = sequence_leaves(np.array([[0.5, 1.0, 0.5]]), rows, cols, BOUNDARIES, method="xia",
                          n_levels=2)
    pair = 30  # leaf pair 0-5 mm
    np.testing.assert_allclose(seq.weights, [1.0, 0.5, 0.5])
    np.testing.assert_allclose(seq.leaf_positions_mm[:, pair], [[5, 10], [0, 5], [10, 15]])
    np.testing.assert_allclose(seq.jaws_mm[0], [5, 10, 0, 5])


def test_segment_count_falls_with_levels():
    # A smooth two-peak fluence (typical of IMRT maps): coarser levels, fewer segments.
    y, x = np.mgrid[-20:20:5.0, -40:40:5.0] + 2.5
    fluence = np.exp(-((x - 15) ** 2 + y ** 2) / 300) + 0.6 * np.exp(-((x + 20) ** 2) / 100)
    rows, cols = grid(*fluence.shape, row0=-20.0)
    for method in ("xia", "sweep"):
        counts = [sequence_leaves(fluence, rows, cols, BOUNDARIES, method=method,
                                  n_levels=n).n_segments for n in (2, 4, 8, 16)]
        assert counts == sorted(counts) and counts[0] < counts[-1], (method, counts)


@pytest.mark.parametrize("method", ["xia", "sweep"])
def test_max_segments_lowers_the_levels(method):
    y, x = np.mgrid[-20:20:5.0, -40:40:5.0] + 2.5
    fluence = np.exp(-(x ** 2 + y ** 2) / 400)
    rows, cols = grid(*fluence.shape, row0=-20.0)
    free = sequence_leaves(fluence, rows, cols, BOUNDARIES, method=method, n_levels=20)
    capped = sequence_leaves(fluence, rows, cols, BOUNDARIES, method=method, n_levels=20,
                             max_segments=8)
    assert free.n_segments > 8 >= capped.n_segments
    assert capped.n_levels < free.n_levels == 20


def test_min_weight_caps_the_levels():
    rows, cols = grid(1, 4)
    seq = sequence_leaves(np.array([[1.0, 4.0, 10.0, 7.0]]), rows, cols, BOUNDARIES,
                          n_levels=10, min_weight=2.6)
    assert seq.n_levels == 3  # floor(10 / 2.6)
    assert seq.weights.min() >= 2.6


def test_closed_pair_between_open_ones():
    # Pair 2 of 3 has no fluence. With interdigitation its leaves hide behind the X1 jaw;
    # without, the aperture splits in two so that the closed pair lies outside the Y jaws.
    fluence = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    rows, cols = grid(3, 3, row0=0.0, col0=0.0)
    allowed = sequence_leaves(fluence, rows, cols, BOUNDARIES, n_levels=1)
    assert allowed.n_segments == 1
    np.testing.assert_allclose(allowed.leaf_positions_mm[0, 31], [-GAP, 0.0])
    split = sequence_leaves(fluence, rows, cols, BOUNDARIES, n_levels=1, interdigitation=False)
    assert split.n_segments == 2
    np.testing.assert_allclose(split.jaws_mm, [[0, 10, 0, 5], [5, 15, 10, 15]])
    check_limits(split, interdigitation=False)


def test_zero_fluence_has_no_segments():
    rows, cols = grid(2, 2)
    assert sequence_leaves(np.zeros((2, 2)), rows, cols, BOUNDARIES).n_segments == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"method": "engel"}, "unknown sequencing method 'engel'; valid: xia, sweep"),
    ({"n_levels": 0}, "n_levels must be >= 1"),
    ({"max_leaf_span_mm": 10.0}, "exceeds the maximum leaf span 10.0 mm"),
    ({"leaf_travel_mm": (-5.0, 200.0)}, "beyond the leaf travel"),
    ({"min_gap_mm": 6.0}, "narrower than the minimum leaf gap"),
])
def test_bad_arguments(kwargs, message):
    rows, cols = grid(2, 3)
    with pytest.raises(ValueError, match=message):
        sequence_leaves(np.ones((2, 3)), rows, cols, BOUNDARIES, **kwargs)


def test_rows_beyond_the_mlc():
    with pytest.raises(ValueError, match="beyond the leaf pairs"):
        sequence_leaves(np.ones((1, 1)), [198.0, 203.0], [0.0, 5.0], BOUNDARIES)
