"""``planner evaluate-prediction``: scores of submissions with known answers, errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from planner.cli.main import main
from planner.io.openkbp import read_openkbp_dose, read_openkbp_patient, write_openkbp_dose
from planner.predict.infer import save_model
from planner.predict.model import DoseUNet


@pytest.fixture
def two_patients(openkbp_dir: Path, tmp_path: Path) -> Path:
    """Two test patients in an OpenKBP split folder of our own (symbolic links, no copies)."""
    split = tmp_path / "test-pats"
    split.mkdir()
    for folder in sorted((openkbp_dir / "test-pats").iterdir())[:2]:
        (split / folder.name).symlink_to(folder)
    return split


def test_reference_as_prediction_scores_zero_and_offset_scores_it(two_patients: Path,
                                                                    tmp_path: Path, capsys):
    """The reference itself scores 0 / 0; the reference + 1 Gy inside the possible-dose mask
    scores a dose score of exactly 1 Gy."""
    exact, shifted = tmp_path / "exact", tmp_path / "shifted"
    for folder in sorted(two_patients.iterdir()):
        dose = read_openkbp_dose(folder)
        mask = read_openkbp_patient(folder).possible_dose_mask
        write_openkbp_dose(exact / f"{folder.name}.csv", dose)
        write_openkbp_dose(shifted / f"{folder.name}.csv.gz", np.where(mask, dose + 1.0, 0.0))
    assert main(["evaluate-prediction", str(two_patients), "--predictions", str(exact)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].split()[:3] == ["overall", "0.000", "0.000"]
    csv = tmp_path / "scores.csv"
    assert main(["evaluate-prediction", str(two_patients), "--predictions", str(shifted),
                 "--csv", str(csv)]) == 0
    rows = [line.split(",") for line in csv.read_text().splitlines()]
    assert rows[0] == ["patient", "dose_score_gy", "dvh_score_gy", "reason"] and len(rows) == 4
    assert rows[-1][3] == "2 of 2 patients" and all(row[3] == "" for row in rows[1:-1])
    # 1 Gy everywhere in the mask (1e-4: the CSV keeps 6 significant digits); DVH metrics shift
    # by 1 Gy, except where an organ reaches outside the mask (e.g. the cord below the fields)
    for row in rows[1:]:
        assert float(row[1]) == pytest.approx(1.0, abs=1e-4)
        assert 0.9 < float(row[2]) < 1.0 + 1e-4
    assert main(["evaluate-prediction", str(two_patients), "--predictions", str(shifted),
                 "--csv", str(csv)]) == 2
    assert "scores.csv: already exists" in capsys.readouterr().err


def test_no_patient_scored_is_bad_input(two_patients: Path, tmp_path: Path, capsys):
    """Every patient lacks its prediction: each is left out, and with none scored the run
    fails with one line."""
    (tmp_path / "empty").mkdir()
    assert main(["evaluate-prediction", str(two_patients), "--predictions",
                 str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty/pt_" in err and "missing (no prediction" in err


def test_network_predictions_on_one_patient(two_patients: Path, tmp_path: Path, capsys):
    """With --model the network predicts; an untrained tiny network scores badly but runs."""
    model = save_model(DoseUNet(9, 4, 3), tmp_path / "tiny.pt", {"epochs": 0})
    one = sorted(two_patients.iterdir())[0]
    assert main(["evaluate-prediction", str(one), "--model", str(model), "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == one.name and float(lines[1].split()[1]) > 0
    assert main(["evaluate-prediction", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such folder" in capsys.readouterr().err


def test_unusable_patients_are_left_out_with_their_reason(two_patients: Path, tmp_path: Path,
                                                          capsys):
    """A folder with a patient without targets and one with an unreadable CT: the other two are
    scored, the two are listed with their reasons (CSV and JSON) and left out of the means."""
    source = sorted(two_patients.iterdir())[0]
    no_targets, unreadable = two_patients / "pt_900", two_patients / "pt_901"
    for folder in (no_targets, unreadable):
        folder.mkdir()
        for f in source.resolve().iterdir():
            if not (folder is no_targets and f.name.startswith("PTV")):
                (folder / f.name).symlink_to(f)
    (unreadable / "ct.csv.gz").unlink()
    (unreadable / "ct.csv.gz").write_bytes(b"not gzip")
    model = save_model(DoseUNet(9, 4, 3), tmp_path / "tiny.pt", {"epochs": 0})
    csv = tmp_path / "scores.csv"
    assert main(["evaluate-prediction", str(two_patients), "--model", str(model), "--device",
                 "cpu", "--threads", "1", "--csv", str(csv), "--json",
                 str(tmp_path / "scores.json")]) == 0
    out = capsys.readouterr().out
    assert "pt_900" in out and "left out: pt_900: dose prediction not possible: no target" in out
    assert "pt_901/ct.csv.gz: cannot read" in out
    overall, wrote = out.splitlines()[-2:]
    assert "(2 of 4 patients; left out: pt_900, pt_901;" in overall
    assert wrote == f"wrote {tmp_path / 'scores.json'}"
    rows = {row[0]: row for row in (line.split(",", 3) for line in
                                       csv.read_text().splitlines()[1:])}
    assert rows["pt_900"][1:3] == ["", ""] and "no target" in rows["pt_900"][3]
    assert rows["overall"][3] == "2 of 4 patients"
    scored = [rows[f.name] for f in sorted(two_patients.iterdir())[:2]]
    report = json.loads((tmp_path / "scores.json").read_text())
    assert report["overall"]["patients_scored"] == 2 and report["overall"]["patients"] == 4
    assert set(report["overall"]["left_out"]) == {"pt_900", "pt_901"}
    # the means cover the scored patients only
    assert report["overall"]["dose_score_gy"] == pytest.approx(
        np.mean([float(row[1]) for row in scored]), abs=1e-5)
    by_name = {p["patient"]: p for p in report["patients"]}
    assert by_name["pt_901"]["dose_score_gy"] is None and by_name["pt_900"]["dvh_errors_gy"] is None
    (tmp_path / "other.json").write_text("{}")
    assert main(["evaluate-prediction", str(two_patients), "--model", str(model), "--device",
                 "cpu", "--csv", str(tmp_path / "other.csv"), "--json",
                 str(tmp_path / "other.json")]) == 2
    assert "other.json: already exists" in capsys.readouterr().err
    assert not (tmp_path / "other.csv").exists()
