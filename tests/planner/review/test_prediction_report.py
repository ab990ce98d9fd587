"""The report's "Plan against the predicted dose": per organ the planned and predicted Dmean and
D0.1cc, a flag where the plan is worse than predicted by more than the margin, both DVHs.

The predicted doses are made by hand from the case's synthetic plan dose (review_case.py, 10 Gy
added): the plan's dose less a constant in one structure shifts that structure's Dmean and
D0.1cc by exactly that constant, so which rows must be flagged is known without the network.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from planner.patient import Structure
from planner.review.dvh import DoseStatistics, dvh_csv_text, structure_dvhs
from planner.review.report import (
    PREDICTED_DVH_FILE,
    PREDICTION_MARGIN_GY,
    prediction_rows,
    write_report,
)

# Plan minus prediction in each structure (Gy): Core worse than predicted by more than the
# margin, Lower worse by less, Upper better than predicted, the target far hotter (not a fault).
EXCESS_GY = {"Core": 5.0, "Lower": 2.0, "Upper": -5.0, "PTV": 10.0}


def _with_two_more_organs(patient):
    """The C-shape with two organs cut from the body below and above the target."""
    body = patient.structure("BODY").mask
    taken = patient.structure("PTV").mask | patient.structure("Core").mask
    slab = np.zeros(patient.grid.shape, dtype=bool)
    lower, upper = slab.copy(), slab.copy()
    lower[:8] = True
    upper[-8:] = True
    organs = (Structure("Lower", "organ", lower & body & ~taken),
              Structure("Upper", "organ", upper & body & ~taken))
    assert all(o.mask.any() for o in organs)
    return dataclasses.replace(patient, structures=patient.structures + organs)


@pytest.fixture(scope="module")
def predicted_case(case, tmp_path_factory):
    patient = _with_two_more_organs(case.patient)
    planned = case.dose_gy + np.float32(10.0)  # at least 10 Gy: the prediction stays positive
    predicted = planned.copy()
    for name, excess in EXCESS_GY.items():
        mask = patient.structure(name).mask
        predicted[mask] = planned[mask] - excess
    assert all(predicted[patient.structure(n).mask].min() > 0 for n in EXCESS_GY)
    out = tmp_path_factory.mktemp("prediction") / "review"
    review = write_report(out, patient, planned, patient.grid,
                          predicted_dose_gy=predicted,
                          prediction_note="hand-made prediction for the test")
    return patient, predicted, out, review


def test_flag_is_set_for_the_organ_worse_than_predicted_only(predicted_case):
    _, _, _, review = predicted_case
    rows = {r.structure: r for r in review.prediction}
    assert list(rows) == ["PTV", "Core", "Lower", "Upper"]  # targets and organs, no BODY
    for name, excess in EXCESS_GY.items():
        # float32 doses: the shift is exact to about 1e-5 Gy at 60 Gy.
        np.testing.assert_allclose(rows[name].planned_mean_gy - rows[name].predicted_mean_gy,
                                   excess, atol=1e-3)
        np.testing.assert_allclose(rows[name].planned_d0_1cc_gy
                                   - rows[name].predicted_d0_1cc_gy, excess, atol=1e-3)
    assert [r.structure for r in review.worse_than_predicted] == ["Core"]
    assert review.prediction_note == "hand-made prediction for the test"


def test_report_shows_the_section_flagged_row_and_predicted_dvh(predicted_case):
    patient, predicted, out, review = predicted_case
    page = (out / "report.html").read_text()
    assert "<h2>Plan against the predicted dose</h2>" in page
    assert "Dose prediction: hand-made prediction for the test." in page
    # The flagged organ's row is styled like an unmet goal, and it is the only one.
    flagged = re.findall(r'<tr class="worse">(.*?)</tr>', page)
    assert len(flagged) == 1 and "<td>Core</td>" in flagged[0]
    assert "plan worse than predicted" in flagged[0] and "+5.00" in flagged[0]
    assert "tr.worse td" in page  # the CSS gives it the unmet goals' colours
    core = review.prediction[1]
    assert f"<td>{core.planned_mean_gy:.2f}</td><td>{core.predicted_mean_gy:.2f}</td>" in page
    assert "1 organ where the plan is worse than predicted: Core" in page
    assert page.count("target (not flagged)") == 1 and page.count("not worse than predicted") == 2
    assert "dvh_predicted.png" in page
    # The predicted curves beside dvh.csv, in its format.
    dvhs, _ = structure_dvhs(predicted, patient.grid, patient.structures)
    assert (out / PREDICTED_DVH_FILE).read_text() == dvh_csv_text(dvhs)
    assert ((out / PREDICTED_DVH_FILE).read_text().splitlines()[0]
            == (out / "dvh.csv").read_text().splitlines()[0])
    assert (out / "dvh_predicted.png").read_bytes()[:4] == b"\x89PNG"


def test_without_a_prediction_the_section_gives_the_note_and_no_table(case, tmp_path):
    note = "unseeded: not head and neck: none of the organs found"
    review = write_report(tmp_path / "r", case.patient, case.dose_gy, case.patient.grid,
                          prediction_note=note)
    page = (tmp_path / "r" / "report.html").read_text()
    section = page.split("<h2>Plan against the predicted dose</h2>", 1)[1].split("<h2>", 1)[0]
    assert f"Dose prediction: {note}." in section
    assert "applies to head-and-neck patients: a CT, at least one target" in section  # the rule
    assert "<table" not in section and "<img" not in section
    assert review.prediction == () and review.worse_than_predicted == ()
    assert not (tmp_path / "r" / PREDICTED_DVH_FILE).exists()
    assert not (tmp_path / "r" / "dvh_predicted.png").exists()


def test_prediction_on_another_dose_grid_is_sampled_as_the_plan(case, tmp_path):
    """The plan's own dose given as the prediction, on a coarser shifted grid: both are
    interpolated onto the CT grid alike, so every difference is 0 and nothing is flagged."""
    from planner.io.rtdose import read_rt_dose

    dose, grid = read_rt_dose(case.rtdose_coarse)
    review = write_report(tmp_path / "r", case.patient, dose, grid, predicted_dose_gy=dose.copy())
    assert [r.structure for r in review.prediction] == ["PTV", "Core"]
    for r in review.prediction:
        assert r.planned_mean_gy == r.predicted_mean_gy and not r.worse
    with pytest.raises(ValueError, match=r"predicted dose shape \(3, 4, 5\) differs"):
        write_report(tmp_path / "s", case.patient, dose, grid,
                     predicted_dose_gy=np.zeros((3, 4, 5)))
    assert not (tmp_path / "s").exists()


def _stats(name: str, mean_gy: float, d0_1cc_gy: float) -> DoseStatistics:
    return DoseStatistics(name, 10.0, 0.0, mean_gy, d0_1cc_gy, 0.0, 0.0, d0_1cc_gy)


def test_margin_is_one_sided_and_counts_mean_or_d0_1cc(case):
    """Flag only where the plan exceeds the prediction by more than the margin, in Dmean or in
    D0.1cc; a plan cooler than predicted is never flagged."""
    m = PREDICTION_MARGIN_GY
    assert m == 3.0
    planned = [_stats("PTV", 50.0, 60.0), _stats("Core", 20.0 + m, 30.0)]
    cases = {  # predicted Core (mean, D0.1cc) -> flagged
        (20.0, 30.0): False,               # mean exceeds by exactly the margin
        (20.0 - 0.01, 30.0): True,         # mean by a little more
        (20.0 + m, 30.0 - m - 0.01): True,  # D0.1cc alone
        (40.0, 50.0): False,               # the plan is better than predicted
    }
    for (mean, d01), flagged in cases.items():
        rows = prediction_rows(case.patient, planned,
                               [_stats("PTV", 30.0, 40.0), _stats("Core", mean, d01)])
        assert [(r.structure, r.worse) for r in rows] == [("PTV", False), ("Core", flagged)]
