"""Segment-weight optimisation on toy matrices whose optimum is known independently.

With squared under- and overdose terms to a per-voxel dose, the objective is a (scaled) linear
least-squares residual, so scipy.optimize.lsq_linear with the same bounds gives the optimum.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse

from optim.autoplan import PlanGoal
from optim.objectives import DoseMimicking, SquaredOverdose, SquaredUnderdose
from optim.segment_weights import optimise_segment_weights, restore_goals

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


def test_segment_doses_from_the_dose_engine():
    """A water box, three beams sequenced from a dome-shaped fluence; S from dose.segment_dose.

    The PTV aim (uniform 2 Gy, squared under- and overdose) is a bounded least-squares problem:
    scipy's lsq_linear on the same matrix gives the optimum the L-BFGS-B passes must reach.
    """
    from dose.beam_model import load_beam_model
    from dose.beams import Beam
    from dose.machine import load_machine
    from dose.segments import Segment, segment_dose
    from optim.sequencing import sequence_leaves
    from planner.phantoms import water_box

    patient = water_box(size_mm=100.0, target_size_mm=30.0, voxel_mm=5.0, margin_mm=10.0)
    machine, model = load_machine(), load_beam_model()
    ptv = np.flatnonzero(patient.structure("PTV").mask)
    edges = np.arange(-25.0, 26.0, 5.0)
    v, u = np.meshgrid(edges[:-1] + 2.5, edges[:-1] + 2.5, indexing="ij")
    dome = 1.0 + (u ** 2 + v ** 2) / 600.0  # more fluence at the edges, as IMRT maps have
    columns, w0 = [], []
    for gantry in (0.0, 120.0, 240.0):
        beam = Beam(gantry, 0.0, 0.0, (0.0, 0.0, 0.0))
        seq = sequence_leaves(dome, edges, edges, machine.leaf_boundaries_mm, n_levels=4)
        for leaves, jaws, weight in zip(seq.leaf_positions_mm, seq.jaws_mm, seq.weights):
            segment = Segment((jaws[0], jaws[1]), (jaws[2], jaws[3]), leaves, 1.0)
            dose = segment_dose(patient.density, patient.grid, patient.grid, [beam], [[segment]],
                                machine, model)
            columns.append(np.asarray(dose, dtype=np.float64).ravel()[ptv])
            w0.append(weight * 50.0)
    S = np.stack(columns, axis=1)  # PTV voxels x segments, Gy per MU
    target = np.full(ptv.size, 2.0)
    objectives = objectives_to(target)

    best = scipy.optimize.lsq_linear(S, target, bounds=(0.0, np.inf), tol=1e-12).x
    best_value = sum(o.value(S @ best) for o in objectives)
    # At the default stop (relative change 1e-5) the dose is the optimum's dose within 0.5 % of
    # the 2 Gy aim in every voxel (measured 0.1 %): S is ill-conditioned (condition ~2e4) and the
    # optimum's objective is a tiny residual (~2e-5), so its value is still a few % above it.
    result = optimise_segment_weights(S, objectives, np.array(w0))
    np.testing.assert_allclose(S @ result.x, S @ best, rtol=0, atol=0.005 * 2.0)
    assert np.mean(S @ result.x) == pytest.approx(2.0, rel=0.01)
    # Run to a tight stop, the objective reaches the optimum's value within 1 %.
    tight = optimise_segment_weights(S, objectives, np.array(w0), rel_tol=1e-9)
    assert best_value * (1 - 1e-6) <= tight.value <= best_value * 1.01 + 1e-9

    constrained = optimise_segment_weights(S, objectives, np.array(w0), min_weight=5.0)
    assert np.all((constrained.x == 0) | (constrained.x >= 5.0))
    assert np.mean(S @ constrained.x) == pytest.approx(2.0, rel=0.02)

    # A price on MU: the flat 2 Gy needs far less modulation than the dome's segments carry, so
    # the MU fall (measured 274 -> 237 MU, 13 %) while the PTV dose stays at its aim: mean within
    # 0.5 % (measured 0.03 %), every voxel within 2 % (measured 1.4 %). Both run to a tight stop:
    # the price is a small share of the objective, and where the default stop ends a pass
    # depends on the path (moving the rays' lattice moved the priced MU there from 237 to 251).
    converged = optimise_segment_weights(S, objectives, np.array(w0), min_weight=5.0,
                                         rel_tol=1e-9)
    priced = optimise_segment_weights(S, objectives, np.array(w0), min_weight=5.0,
                                      mu_weight=1e-5, rel_tol=1e-9)
    assert np.all((priced.x == 0) | (priced.x >= 5.0))
    assert priced.x.sum() <= 0.9 * converged.x.sum()
    assert np.mean(S @ priced.x) == pytest.approx(2.0, rel=0.005)
    np.testing.assert_allclose(S @ priced.x, 2.0, rtol=0.02)


def test_mu_weight_takes_the_cheapest_segments_for_the_same_dose():
    """Three segments: an open field (dose ``a``) and its two halves (``b + c = a``, each half's
    voxels only). A uniform 2 Gy is made by 200 MU of the open field or by 200 MU of each half
    (400 MU): the dose objective cannot tell them apart, so without a price on MU the optimiser
    stays at the 400 MU it starts from, and with one it moves to the 200 MU of the open field.
    The price also pulls the dose below the aim, where the objective's slope balances it:
    ``mu_weight = 2 * under * shortfall * mean(a)`` gives 1.25e-3 Gy (0.06 %) here; the dose is
    checked to 0.5 %."""
    n = 20
    half = np.zeros((n, 2))
    half[: n // 2, 0] = half[n // 2:, 1] = 0.01  # Gy per MU
    S = np.column_stack([half.sum(axis=1), half])
    objectives = [SquaredUnderdose(np.arange(n), 2.0, 4.0), SquaredOverdose(np.arange(n), 2.0)]
    w0 = np.array([0.0, 200.0, 200.0])
    free = optimise_segment_weights(S, objectives, w0, min_weight=5.0)
    assert free.x.sum() == pytest.approx(400.0, rel=0.01)
    priced = optimise_segment_weights(S, objectives, w0, min_weight=5.0, mu_weight=1e-4)
    # The halves drop below half the 5 MU minimum and are removed; the open field carries all.
    np.testing.assert_allclose(priced.x, [200.0, 0.0, 0.0], atol=1.0)
    np.testing.assert_allclose(S @ priced.x, 2.0, rtol=0.005)


def organ_beside_target():
    """Segment A covers target voxels 0-4 and the organ (voxels 10-14) at 0.4 times the target's
    dose; segment B covers target voxels 5-9 only. Gy per MU, about 1 cGy/MU."""
    S = np.zeros((15, 2))
    S[0:5, 0] = 0.01
    S[10:15, 0] = 0.004
    S[5:10, 1] = 0.01
    target, organ = np.arange(10), np.arange(10, 15)
    # The fluence plan gave the target 50 Gy and the organ 17.9 Gy, inside its 18 Gy limit.
    objectives = [DoseMimicking(target, np.full(10, 50.0), 10.0, under=2.0, over=1.0),
                  DoseMimicking(organ, np.full(5, 17.9), 3.0, under=0.0, over=1.0)]
    cord = PlanGoal("organ Dmax <= 18 Gy", organ, "dose_at_volume", 0.0, "max", 18.0)
    return S, objectives, cord


def test_restore_goals_brings_a_lost_max_dose_back_inside_its_limit():
    """Mimicking trades a little organ over-dose for target coverage: for segment A's target dose
    d (Gy) the objective is 10 (50 - d)^2 (weight 10, under 2, half the 10 target voxels) plus
    3 (0.4 d - 17.9)^2, least where 20 (50 - d) = 2.4 (0.4 d - 17.9): d = 1042.96 / 20.96 = 49.76
    Gy and the organ 19.90 Gy, over the 18 Gy limit. The organ's goal needs d <= 45 Gy (18 / 0.4); segment B does not reach the
    organ, so its 50 Gy target mimicking has nothing to give up (5000 MU)."""
    S, objectives, cord = organ_beside_target()
    start = optimise_segment_weights(S, objectives, np.full(2, 4000.0))
    # Precondition, from the analytic optimum above: plain mimicking loses the goal.
    np.testing.assert_allclose(S[10, 0] * start.x[0], 0.4 * 1042.96 / 20.96, rtol=1e-3)
    repair = restore_goals(S, objectives, start, [cord])
    assert not repair.before[0].met and repair.after[0].met
    assert repair.rounds == 3
    assert (S[10:15] @ repair.result.x).max() <= 18.0
    # The rounds by hand, adding w (0.4 d - aim)^2 (MaxDVH at volume 0: every organ voxel above
    # the aim) to the objective above: w 10, aim 17.46 (3 % inside): d = 1182.64 / 24.16 = 48.95,
    # organ 19.58 Gy; w 40, aim moved by the shortfall 1.58 + 0.54 to 15.34: d = 45.43, organ
    # 18.17 Gy; w 160, aim 14.63: d = 2915.6 / 72.16 = 40.40 Gy, organ 16.16 Gy, met.
    # rtol 0.5 %: L-BFGS-B's relative-change stop in each of the three rounds.
    np.testing.assert_allclose(S[0, 0] * repair.result.x[0], 2915.6 / 72.16, rtol=5e-3)
    # Segment B is untouched by the repair (0.1 % of its MU: L-BFGS-B's stop, as ATOL_MU).
    np.testing.assert_allclose(repair.result.x[1], start.x[1], rtol=1e-3)


def test_restore_goals_keeps_the_start_when_every_goal_is_met():
    S, objectives, cord = organ_beside_target()
    start = optimise_segment_weights(S, objectives, np.full(2, 4000.0))
    loose = dataclasses.replace(cord, limit=25.0)
    repair = restore_goals(S, objectives, start, [loose], min_weight=1.0)
    assert repair.rounds == 0 and repair.result is start and repair.after[0].met
