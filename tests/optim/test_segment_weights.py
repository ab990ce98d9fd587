"""Segment-weight optimisation on toy matrices whose optimum is known independently.

With squared under- and overdose terms to a per-voxel dose, the objective is a (scaled) linear
least-squares residual, so scipy.optimize.lsq_linear with the same bounds gives the optimum.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse

from optim.objectives import SquaredOverdose, SquaredUnderdose
from optim.segment_weights import optimise_segment_weights

# L-BFGS-B stops on a relative change of the objective; on these small well-conditioned problems
# the weights then agree with the exact optimum to well under 1 % of a 1-5 MU weight.
ATOL_MU = 0.02


def toy(n_voxels=40, n_segments=5, seed=0):
    """A dense positive dose matrix, Gy per MU (about 0.01, like 1 cGy/MU)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 0.02, size=(n_voxels, n_segments))


def objectives_to(dose_gy, xp=np):
    indices = xp.arange(dose_gy.size)
    target = xp.asarray(dose_gy)
    return [SquaredUnderdose(indices, target), SquaredOverdose(indices, target)]


def test_recovers_known_weights(xp):
    S = toy()
    w_true = np.array([3.0, 5.0, 2.0, 4.0, 1.5])
    result = optimise_segment_weights(xp.asarray(S), objectives_to(S @ w_true, xp),
                                      np.ones(5), min_weight=1.0)
    np.testing.assert_allclose(result.x, w_true, atol=ATOL_MU)
    assert result.value < 1e-8


def test_sparse_matrix_gives_the_same_weights():
    S = toy()
    w_true = np.array([3.0, 5.0, 2.0, 4.0, 1.5])
    result = optimise_segment_weights(scipy.sparse.csr_matrix(S), objectives_to(S @ w_true),
                                      np.ones(5), min_weight=1.0)
    np.testing.assert_allclose(result.x, w_true, atol=ATOL_MU)


def test_minimum_mu_drops_or_raises_small_segments():
    # Segment 1 wants 0.2 MU (< 0.5 of the 1 MU minimum: dropped); segment 3 wants 0.8 MU
    # (kept, raised to the minimum). The others re-balance: the optimum of the bounded
    # least-squares problem over the kept segments with w >= 1 is computed by lsq_linear.
    S = toy(seed=1)
    target = S @ np.array([3.0, 0.2, 5.0, 0.8, 2.0])
    result = optimise_segment_weights(S, objectives_to(target), np.full(5, 2.0), min_weight=1.0)
    kept = [0, 2, 3, 4]
    expected = scipy.optimize.lsq_linear(S[:, kept], target, bounds=(1.0, np.inf), tol=1e-12).x
    assert result.x[1] == 0.0
    np.testing.assert_allclose(result.x[kept], expected, atol=ATOL_MU)
    assert result.x[3] >= 1.0
    assert np.all((result.x == 0) | (result.x >= 1.0))


def test_without_minimum_weights_are_only_non_negative():
    S = toy(seed=2)
    target = S @ np.array([3.0, 0.2, 5.0, 0.0, 2.0])
    result = optimise_segment_weights(S, objectives_to(target), np.ones(5))
    expected = scipy.optimize.lsq_linear(S, target, bounds=(0.0, np.inf), tol=1e-12).x
    np.testing.assert_allclose(result.x, expected, atol=ATOL_MU)
    assert result.x.min() >= 0.0


@pytest.mark.parametrize("min_weight", [0.5, 2.0, 5.0])
def test_every_segment_zero_or_above_minimum(min_weight):
    # An unreachable target (a uniform dose the segments cannot make exactly).
    S = toy(n_voxels=60, n_segments=8, seed=3)
    result = optimise_segment_weights(S, objectives_to(np.full(60, 0.05)), np.ones(8),
                                      min_weight=min_weight)
    assert np.all((result.x == 0) | (result.x >= min_weight))
    assert result.x.max() > 0
