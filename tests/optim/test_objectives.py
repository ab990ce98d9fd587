"""Objectives: exact gradients (finite differences), hand-computed values, invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import check_grad

from optim import dvh
from optim.objectives import (
    GEUD, DoseFalloff, DoseMimicking, FluenceSmoothness, FluenceVariation, LinearCost, MaxDose, MaxDVH, MeanDose,
    MinDose, MinDVH, SquaredOverdose, SquaredUnderdose, falloff_limit_gy, neighbour_pairs,
    resolve_overlaps,
)

N = 40
IDX = np.arange(5, 35)  # the structure: 30 of the 40 voxels, so zeros outside are checked too
RNG_DOSE = np.random.default_rng(7).uniform(20.0, 60.0, N)  # continuous: no ties, no kinks


def _objectives(xp):
    idx = xp.asarray(IDX)
    ref = xp.asarray(np.linspace(30.0, 50.0, IDX.size))
    dist = xp.asarray(np.linspace(0.0, 40.0, IDX.size))
    # Limits inside the dose range, so every objective is active (non-zero gradient) at RNG_DOSE.
    return [
        SquaredUnderdose(idx, 45.0, 2.0),
        SquaredUnderdose(idx, ref),
        SquaredOverdose(idx, 35.0, 0.5),
        MaxDose(idx, 50.0, 1.0, smoothing_gy=2.0),
        MinDose(idx, 30.0, 1.0, smoothing_gy=2.0),
        MeanDose(idx, 30.0, 3.0),
        MaxDVH(idx, 30.0, 0.3),
        MinDVH(idx, 50.0, 0.6),
        GEUD(idx, 30.0, a=8.0),
        DoseFalloff(idx, dist, 50.0, 25.0, 20.0, 1.5),
        DoseMimicking(idx, ref, 1.0, under=2.0, over=0.5),
    ]


def _assert_fluence_gradient(objective, x, xp):
    """The analytic gradient of a fluence objective at ``x`` matches finite differences."""
    def grad(v):
        return _host(objective.gradient(xp.asarray(v)))

    err = check_grad(lambda v: objective.value(xp.asarray(v)), grad, x, epsilon=1e-7)
    assert err <= 1e-5 * np.linalg.norm(grad(x))


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


@pytest.mark.parametrize("k", range(11))
def test_gradient_matches_finite_differences(xp, k):
    objective = _objectives(xp)[k]

    def f(d):
        return objective.value(xp.asarray(d))

    def g(d):
        return _host(objective.gradient(xp.asarray(d)))

    grad = g(RNG_DOSE)
    assert np.linalg.norm(grad) > 1e-6, "objective inactive at the test point: check is vacuous"
    assert np.all(grad[:5] == 0) and np.all(grad[35:] == 0), "gradient outside the structure"
    # Central differences are not available in check_grad; forward differences with step 1e-6 Gy
    # on values ~1e2 give ~1e-6 relative error (float64), far below an error in the formula.
    err = check_grad(f, g, RNG_DOSE, epsilon=1e-6)
    assert err <= 1e-4 * np.linalg.norm(grad)


@pytest.mark.parametrize("k", range(11))
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_never_negative(k, seed):
    objective = _objectives(np)[k]
    dose = np.random.default_rng(seed).uniform(0.0, 80.0, N)
    assert objective.value(dose) >= 0.0


def test_zero_and_flat_when_met():
    idx = IDX
    dose = np.full(N, 40.0)
    dose[idx] = np.linspace(38.0, 42.0, idx.size)
    met = [
        SquaredUnderdose(idx, 38.0), SquaredOverdose(idx, 42.0),
        # smooth maximum <= 42 + 0.1 ln 30 = 42.34 Gy; smooth minimum >= 38 - 0.34 Gy
        MaxDose(idx, 42.5, smoothing_gy=0.1), MinDose(idx, 37.5, smoothing_gy=0.1),
        MeanDose(idx, 40.0 + 1e-9), MaxDVH(idx, 42.0, 0.5), MinDVH(idx, 38.0, 0.9),
        GEUD(idx, 42.0, a=4.0),
        DoseFalloff(idx, np.zeros(idx.size), 42.0, 10.0, 10.0),
        DoseMimicking(idx, dose[idx]),
    ]
    for objective in met:
        assert objective.value(dose) == 0.0, objective
        assert not np.any(objective.gradient(dose)), objective


def test_hand_values():
    """Values computed by hand (matRad's squared overdose example: (2^2 + 5^2) / 5 = 5.8)."""
    d = np.array([55.0, 58.0, 60.0, 62.0, 65.0])
    idx = np.arange(5)
    assert SquaredOverdose(idx, 60.0).value(d) == pytest.approx(5.8, rel=1e-12)
    assert SquaredUnderdose(idx, 60.0).value(d) == pytest.approx((25 + 4) / 5, rel=1e-12)
    assert MeanDose(idx, 58.0, 2.0).value(d) == pytest.approx(2.0 * 2.0**2, rel=1e-12)
    # D40% of [55..65] is the 2nd highest, 62 Gy; voxels in (57, 62]: 58, 60, 62.
    assert MaxDVH(idx, 57.0, 0.4).value(d) == pytest.approx((1 + 9 + 25) / 5, rel=1e-12)
    # D80% is the 4th highest, 58 Gy; voxels in [58, 61): 58, 60.
    assert MinDVH(idx, 61.0, 0.8).value(d) == pytest.approx((9 + 1) / 5, rel=1e-12)
    # gEUD with a = 1 is the mean dose (60 Gy): (60 - 59)^2.
    assert GEUD(idx, 59.0, a=1.0).value(d) == pytest.approx(1.0, rel=1e-12)
    # A large exponent approaches the maximum (65 Gy) from below.
    assert 64.0 < GEUD(idx, 0.0, a=200.0).value(d) ** 0.5 <= 65.0


def test_smooth_max_bounds_the_maximum():
    """Log-sum-exp lies in [max, max + s ln n]: the penalty starts before the true maximum."""
    d = np.array([10.0, 20.0, 30.0])
    idx = np.arange(3)
    s = 1.0
    soft = 30.0 + MaxDose(idx, 30.0, smoothing_gy=s).value(d) ** 0.5
    assert 30.0 < soft <= 30.0 + s * np.log(3)


def test_falloff_limit():
    limit = falloff_limit_gy(np.array([0.0, 10.0, 20.0, 50.0]), 50.0, 20.0, 20.0)
    np.testing.assert_allclose(limit, [50.0, 35.0, 20.0, 20.0], rtol=0, atol=1e-12)


def test_fluence_smoothness_gradient_and_value(xp):
    beam = np.array([0, 0, 0, 0, 1, 1])
    row = np.array([0, 0, 1, 1, 0, 0])
    col = np.array([0, 1, 0, 1, 0, 1])
    pairs = neighbour_pairs(beam, row, col)
    as_sets = {frozenset(p) for p in pairs.tolist()}
    # 2x2 grid on beam 0: 4 edges; 1x2 on beam 1: 1 edge; no edge across beams.
    assert as_sets == {frozenset(p) for p in [(0, 1), (2, 3), (0, 2), (1, 3), (4, 5)]}
    reg = FluenceSmoothness(xp.asarray(pairs), 2.0)
    x = np.array([1.0, 2.0, 4.0, 8.0, 3.0, 3.0])
    assert reg.value(xp.asarray(x)) == pytest.approx(2.0 * (1 + 16 + 9 + 36 + 0) / 5, rel=1e-12)
    assert reg.value(xp.full(6, 5.0)) == 0.0

    _assert_fluence_gradient(reg, x, xp)


def test_fluence_variation_gradient_and_value(xp):
    pairs = np.array([[0, 1], [1, 2], [2, 3], [4, 5]])
    x = np.array([1.0, 4.0, 4.0, 0.0, 3.0, 3.0])
    # Without smoothing it is the mean absolute difference: 2 * (3 + 0 + 4 + 0) / 4 = 3.5.
    sharp = FluenceVariation(xp.asarray(pairs), 2.0, smoothing=1e-9)
    assert sharp.value(xp.asarray(x)) == pytest.approx(3.5, rel=1e-9)
    # With smoothing s: sqrt(d^2 + s^2) - s, here s = 4: (5 - 4) + 0 + (sqrt(32) - 4) + 0.
    smooth = FluenceVariation(xp.asarray(pairs), 2.0, smoothing=4.0)
    assert smooth.value(xp.asarray(x)) == pytest.approx(2.0 * (1.0 + np.sqrt(32.0) - 4.0) / 4,
                                                        rel=1e-12)
    assert smooth.value(xp.full(6, 5.0)) == 0.0

    _assert_fluence_gradient(smooth, x, xp)


def test_linear_cost_gradient_and_value(xp):
    costs = np.array([1.0, 0.5, 2.0, 0.25])
    cost = LinearCost(xp.asarray(costs), 3.0)
    x = np.array([2.0, 4.0, 1.0, 8.0])
    # 3 * (2 + 2 + 2 + 2) by hand
    assert cost.value(xp.asarray(x)) == pytest.approx(24.0, rel=1e-12)
    assert cost.value(xp.zeros(4)) == 0.0

    def grad(v):
        return _host(cost.gradient(xp.asarray(v)))

    np.testing.assert_array_equal(grad(x), 3.0 * costs)
    # Linear: forward differences are exact up to rounding (values ~1e1, step 1e-7).
    err = check_grad(lambda v: cost.value(xp.asarray(v)), grad, x, epsilon=1e-7)
    assert err <= 1e-5 * np.linalg.norm(grad(x))


def test_dvh_metrics():
    d = np.arange(1.0, 101.0)  # 100 voxels, 1..100 Gy
    assert dvh.dose_at_volume(d, 0.95) == 6.0  # the 95th highest
    assert dvh.dose_at_volume(d, 0.0) == 100.0
    assert dvh.dose_at_volume(d, 1.0) == 1.0
    assert dvh.volume_at_dose(d, 70.0) == pytest.approx(0.31)
    assert dvh.mean_dose(d) == pytest.approx(50.5)
    with pytest.raises(ValueError, match="volume fraction"):
        dvh.dose_at_volume(d, 1.1)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), v=st.floats(0.0, 1.0))
def test_dvh_consistency(seed, v):
    """V(D_v) >= v: at least the fraction v receives D_v."""
    d = np.random.default_rng(seed).uniform(0.0, 70.0, 57)
    assert dvh.volume_at_dose(d, dvh.dose_at_volume(d, v)) >= v - 1e-12


def test_resolve_overlaps_targets_win():
    ptv70 = np.array([1, 1, 0, 0, 0, 0], bool)
    ptv56 = np.array([1, 1, 1, 1, 0, 0], bool)
    parotid = np.array([0, 0, 0, 1, 1, 0], bool)
    cord = np.array([0, 0, 0, 0, 1, 1], bool)
    out = resolve_overlaps([parotid, ptv56, ptv70, cord], [False, True, True, False],
                           priority=[0, 56, 70, 0])
    np.testing.assert_array_equal(out[2], ptv70)                       # boost keeps its voxels
    np.testing.assert_array_equal(out[1], [0, 0, 1, 1, 0, 0])          # elective loses the boost
    np.testing.assert_array_equal(out[0], [0, 0, 0, 0, 1, 0])          # organ loses target voxels
    np.testing.assert_array_equal(out[3], cord)                        # organ overlap kept
    np.testing.assert_array_equal(parotid, [0, 0, 0, 1, 1, 0])         # inputs untouched
