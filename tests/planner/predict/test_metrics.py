"""OpenKBP scores on hand-made volumes whose answers are worked out by hand in each docstring."""

from __future__ import annotations

import numpy as np
import pytest

from planner.predict.metrics import (
    PatientScores,
    dose_score,
    dvh_metrics,
    overall_scores,
    score_patient,
)


def _ramp_roi():
    """A 10x10x1 ROI holding doses 0, 1, ..., 99 Gy on a 1x12x12 grid."""
    dose = np.zeros((1, 12, 12))
    mask = np.zeros((1, 12, 12), bool)
    mask[0, 1:11, 1:11] = True
    dose[mask] = np.arange(100.0)
    return dose, mask


def test_dose_score_counts_prediction_only_inside_mask():
    """8 mask voxels at 10 Gy predicted 12 Gy: |error| 2 Gy each -> 2.0; a 50 Gy prediction
    outside the mask is masked away; a reference of 3 Gy outside adds 3/8."""
    mask = np.zeros((4, 4, 4), bool)
    mask[:2, :2, :2] = True
    reference = np.where(mask, 10.0, 0.0)
    predicted = np.where(mask, 12.0, 50.0)
    assert dose_score(reference, predicted, mask) == 2.0
    reference[3, 3, 3] = 3.0
    assert dose_score(reference, predicted, mask) == 2.0 + 3.0 / 8


def test_target_metrics_linear_percentiles():
    """Doses 0..99 (n=100): the q-th percentile with linear interpolation is 0.99 q, so
    D99 = P1 = 0.99, D95 = P5 = 4.95, D1 = P99 = 98.01 Gy."""
    dose, mask = _ramp_roi()
    m = dvh_metrics(dose, {"PTV70": mask}, ["PTV70"], voxel_volume_mm3=1.0)
    assert m.keys() == {("D99", "PTV70"), ("D95", "PTV70"), ("D1", "PTV70")}
    np.testing.assert_allclose([m[("D99", "PTV70")], m[("D95", "PTV70")], m[("D1", "PTV70")]],
                               [0.99, 4.95, 98.01], rtol=0, atol=1e-12)  # float64 round-off


@pytest.mark.parametrize(
    ("voxel_mm3", "expected"),
    [
        (10.0, 89.1),   # 0.1 cc = 10 voxels: P(100 - 10) = 0.99 * 90 = 89.1
        (40.0, 97.02),  # 100/40 = 2.5 rounds half-to-even to 2 voxels: P98 = 97.02
        (30.0, 96.03),  # 100/30 = 3.33 -> 3 voxels: P97 = 96.03
        (1.0, 0.0),     # 0.1 cc = 100 voxels = the whole ROI: P0 = min = 0
        (500.0, 98.01),  # under one voxel: at least 1 voxel, P99 = 98.01
    ],
)
def test_oar_d01cc_uses_challenge_voxel_count(voxel_mm3: float, expected: float):
    dose, mask = _ramp_roi()
    m = dvh_metrics(dose, {"SpinalCord": mask}, [], voxel_volume_mm3=voxel_mm3)
    assert m[("Dmean", "SpinalCord")] == pytest.approx(49.5, abs=1e-12)
    assert m[("D0.1cc", "SpinalCord")] == pytest.approx(expected, abs=1e-9)


def test_absent_roi_skipped_and_scores_pooled():
    """Patient A: cord off by 1 Gy everywhere -> D0.1cc and Dmean errors 1, 1; PTV off by 2 ->
    three errors of 2. Patient B: only a cord off by 4 -> 4, 4. Pooled DVH score over the 7 errors:
    (1+1+2+2+2+4+4)/7 = 16/7; per-patient A = 8/5, B = 4. Dose scores A, B average."""
    dose, mask = _ramp_roi()
    ptv = np.zeros_like(mask)
    ptv[0, 1:11, 11] = True  # 10 voxels beside the cord
    ref = np.where(ptv, 70.0, dose)
    pred = np.where(ptv, 72.0, np.where(mask, dose + 1.0, 0.0))
    union = mask | ptv
    rois = {"SpinalCord": mask, "PTV70": ptv, "Larynx": np.zeros_like(mask)}
    a = score_patient("A", ref, pred, union, rois, ["PTV70"], 10.0)
    assert set(a.dvh_errors_gy) == {("D0.1cc", "SpinalCord"), ("Dmean", "SpinalCord"),
                                    ("D99", "PTV70"), ("D95", "PTV70"), ("D1", "PTV70")}
    assert a.dvh_score_gy == pytest.approx(8 / 5)
    assert a.dose_score_gy == pytest.approx((100 * 1 + 10 * 2) / 110)
    b = score_patient("B", dose, np.where(mask, dose + 4.0, 0.0), mask, {"SpinalCord": mask}, [],
                      10.0)
    assert b.dvh_score_gy == pytest.approx(4.0) and b.dose_score_gy == pytest.approx(4.0)
    overall_dose, overall_dvh = overall_scores([a, b])
    assert overall_dvh == pytest.approx(16 / 7)
    assert overall_dose == pytest.approx((a.dose_score_gy + 4.0) / 2)


def test_perfect_prediction_scores_zero():
    dose, mask = _ramp_roi()
    s = score_patient("p", dose, dose.copy(), mask, {"SpinalCord": mask}, [], 10.0)
    assert s.dose_score_gy == 0.0 and s.dvh_score_gy == 0.0


def test_overall_needs_patients():
    with pytest.raises(ValueError, match="no patients"):
        overall_scores([])
    nan_only = PatientScores("x", 1.0, float("nan"), {})
    assert overall_scores([nan_only])[0] == 1.0 and np.isnan(overall_scores([nan_only])[1])
