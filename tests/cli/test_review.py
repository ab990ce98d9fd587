"""``planner review``: a report from RT Plan, RT Dose, RTSTRUCT and CT files, goals reported."""

from __future__ import annotations

import json
import re

import pytest
from review_files import write_review_files

from planner.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_review_files(tmp_path_factory.mktemp("review_cli"))


def _args(files, *extra):
    return ["review", str(files.rtplan), str(files.rtdose), str(files.rtstruct), str(files.ct),
            *extra]


def test_review_report_with_protocol(files, tmp_path, capsys):
    out = tmp_path / "rev"
    assert main(_args(files, "--protocol", "tg119_c_shape", "--out", str(out), "--json",
                      str(tmp_path / "review.json"), "--check", "--device", "cpu")) == 0
    stdout = capsys.readouterr().out
    page = (out / "report.html").read_text()
    # The plan's beams as read back from the RT Plan: 3 beams of 20 + 21 + 22 MU.
    assert page.count("<td>63.0</td>") == 3 and "<b>189.0</b>" in page
    assert "C-shape" in page and "PTV: 50 Gy in 25 fractions" in page
    # TG-119's 4 goals and the 3 every protocol gets outside the PTVs (at TG-119's 115 / 120 %).
    met = re.search(r"(\d+) of (\d+) goals met", stdout)
    assert met and met.group(2) == "7"
    for label in ("Outside PTVs V115% &lt;= 1 cc", "Outside PTVs Dmax &lt;= 120 %",
                  "Outside PTVs Dmean as low as possible"):
        assert f"<td>{label}</td>" in page
    # Every unmet goal is printed with its margin and shown in red in the report.
    unmet = re.findall(r"NOT MET  (.*?):", stdout)
    assert len(unmet) == 7 - int(met.group(1))
    assert page.count('<tr class="unmet">') == len(unmet)
    assert {p.name for p in out.iterdir()} >= {"report.html", "dvh.png", "fluence.png",
                                                "segments.png", "slices_isocentre.png"}
    assert str(out / "report.html") in stdout
    assert "No check was run" not in page and "points pass gamma" in page
    written = json.loads((tmp_path / "review.json").read_text())
    assert len(written["goals"]) == 7
    assert sorted(g["goal"] for g in written["goals"] if not g["met"]) == sorted(unmet)


def test_existing_report_needs_force(files, tmp_path, capsys):
    out = tmp_path / "rev"
    assert main(_args(files, "--out", str(out))) == 0
    before = (out / "report.html").stat().st_mtime_ns
    assert main(_args(files, "--out", str(out))) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert (out / "report.html").stat().st_mtime_ns == before
    assert main(_args(files, "--out", str(out), "--force")) == 0


def test_swapped_files_are_bad_input(files, tmp_path, capsys):
    args = ["review", str(files.rtdose), str(files.rtplan), str(files.rtstruct), str(files.ct),
            "--out", str(tmp_path / "rev")]
    assert main(args) == 2
    assert "RD.dcm: not an RT Plan" in capsys.readouterr().err
    assert not (tmp_path / "rev").exists()


def test_no_predict_says_so_and_writes_no_prediction(files, tmp_path, capsys):
    out = tmp_path / "rev"
    assert main(_args(files, "--protocol", "tg119_c_shape", "--no-predict", "--out",
                      str(out))) == 0
    stdout = capsys.readouterr().out
    assert "dose prediction: not predicted (prediction turned off)" in stdout
    page = (out / "report.html").read_text()
    assert "Dose prediction: not predicted (prediction turned off)." in page
    assert "Dmean predicted" not in page and not (out / "dvh_predicted.csv").exists()
    assert re.search(r"\d+ of \d+ goals met", stdout)  # the rest of the review as before


@pytest.mark.parametrize("protocol, note", [
    # TG-119 prescribes 50 Gy to the PTV, but the C-shape has none of the OpenKBP organs.
    (("--protocol", "tg119_c_shape"), "not predicted: not head and neck: none of the organs"),
    # A DICOM patient has no prescriptions of its own.
    ((), "not predicted: no target with a prescription (prescriptions come from the protocol)"),
])
def test_prediction_where_the_model_does_not_apply(files, tmp_path, capsys, protocol, note):
    out = tmp_path / "rev"
    assert main(_args(files, *protocol, "--device", "cpu", "--out", str(out))) == 0
    stdout = capsys.readouterr().out
    assert f"dose prediction: {note}" in stdout and "could be better" not in stdout
    section = (out / "report.html").read_text().split("the predicted dose</h2>")[1]
    assert f"Dose prediction: {note}" in section.split("<h2>")[0]
    assert "<table" not in section.split("<h2>")[0]
    assert not (out / "dvh_predicted.csv").exists()


@pytest.mark.slow
def test_head_and_neck_plan_beside_its_prediction(openkbp_dir, tmp_path, capsys):
    """An OpenKBP patient as DICOM (no external contour), its reference plan's dose as the RT
    Dose with 15 Gy added in the left parotid: the network predicts the dose (on CPU), and the
    parotid, 15 Gy above the reference (whose organ means the prediction knows to about 2 Gy,
    its DVH score), is flagged. The other structures' plan-minus-prediction differences stay
    near the network's error, which they would not with the prediction misplaced on the grid or
    zeroed in the airway."""
    from dose.beams import Beam
    from dose.machine import load_machine
    from dose.segments import open_field
    from planner.io.dicom_patient import STRUCTURE_SET_FILE, write_dicom_patient
    from planner.io.openkbp import read_openkbp_dose, read_openkbp_patient
    from planner.io.rtdose import write_rt_dose
    from planner.io.rtplan import PlanBeam, write_rt_plan
    from planner.predict.infer import DEFAULT_MODEL

    if not DEFAULT_MODEL.is_file():
        pytest.skip(f"no network weights at {DEFAULT_MODEL}")
    folder = openkbp_dir / "validation-pats" / "pt_201"
    patient = read_openkbp_patient(folder)
    dose = read_openkbp_dose(folder).astype("float32")
    dose[patient.structure("LeftParotid").mask] += 15.0
    refs = write_dicom_patient(patient, tmp_path / "ct")
    machine = load_machine()
    beams = [PlanBeam(f"G{g:03d}", Beam(g, 0.0, 0.0, (0.0, 0.0, 0.0)),
                      (open_field(machine, (-40.0, 40.0), (-40.0, 40.0), 50.0),))
             for g in (0, 120, 240)]
    uid = write_rt_plan(tmp_path / "RP.dcm", beams, machine, refs, fractions=35, label="ref")
    write_rt_dose(tmp_path / "RD.dcm", dose, patient.grid, refs, rt_plan_sop_instance_uid=uid)
    out = tmp_path / "rev"
    args = ["review", str(tmp_path / "RP.dcm"), str(tmp_path / "RD.dcm"),
            str(tmp_path / "ct" / STRUCTURE_SET_FILE), str(tmp_path / "ct"),
            "--protocol", "head_and_neck", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "dose prediction: predicted by the head-and-neck network" in stdout
    flagged = re.findall(r"could be better: (\S+) mean ([\d.]+) Gy, predicted ([\d.]+) Gy", stdout)
    assert "LeftParotid" in [name for name, _, _ in flagged]
    page = (out / "report.html").read_text()
    rows = re.findall(r"<tr(?: class=\"worse\")?><td>([^<]+)</td><td>([\d.]+)</td>"
                      r"<td>([\d.]+)</td>",
                      page.split("the predicted dose</h2>")[1].split("<h2>")[0])
    differences = {name: float(plan) - float(predicted) for name, plan, predicted in rows}
    assert differences["LeftParotid"] > 10.0
    # Every other target and organ within 8 Gy (at most 4.8 Gy, the right parotid's mean, when
    # written); with the airway outside the possible-dose mask the larynx was 20.6 Gy off.
    others = {name: d for name, d in differences.items() if name != "LeftParotid"}
    assert len(others) == 9 and max(map(abs, others.values())) < 8.0, others
    assert (out / "dvh_predicted.csv").exists()
