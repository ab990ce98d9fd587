"""``planner plan``: progress and summary, a DICOM patient's plan, exit codes, nothing half-written.

The plans are CI-sized (few coarse beams and segments); tests/planner/test_plan_patient.py checks the
exported files against the reported goals and with dciodvfy.
"""

from __future__ import annotations

import json

import pydicom
import pytest

import planner.plan.fluence
import planner.plan.output
from planner.cli.main import main
from planner.io.dicom_patient import STRUCTURE_SET_FILE, write_dicom_patient
from planner.phantoms import cshape_phantom
from plan_steps import STEPS, steps_run

COARSE = ["--device", "cpu", "--beams", "5", "--beamlet-mm", "10", "--dose-grid-mm", "8",
          "--max-segments", "3"]

@pytest.fixture(scope="module")
def dicom_patient(tmp_path_factory):
    """A small C-shape (6 mm voxels) as a DICOM CT series + RTSTRUCT."""
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    folder = tmp_path_factory.mktemp("patient") / "ct"
    refs = write_dicom_patient(patient, folder)
    return folder, refs


def test_plan_of_a_dicom_patient(tmp_path, capsys, dicom_patient):
    folder, refs = dicom_patient
    out = tmp_path / "plan"
    assert main(["plan", str(folder), "--out", str(out), "--json", str(tmp_path / "plan.json")]
                + COARSE) == 0
    captured = capsys.readouterr()
    err_lines = captured.err.splitlines()
    for step in STEPS:  # one line per step with its time, on stderr
        assert any(line.startswith(step) and " s " in line for line in err_lines), step
    # Seeded by default where the network applies; the C-shape is not head and neck (what the
    # note gives as the reason: test_the_seed_gets_the_protocol_prescriptions).
    assert "unseeded: " in captured.err
    # The default protocol is the bundled one the structures fit: TG-119.
    assert "protocol TG-119 C-shape" in captured.err
    assert "goals, fluence plan (before sequencing):" in captured.out
    assert "goals, deliverable plan (after sequencing and segment weights):" in captured.out
    assert "MU/cGy" in captured.out and "time: import" in captured.out
    # A DICOM patient gets only RT Plan and RT Dose, referring to its own CT and structure set.
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["RD.dcm", "RP.dcm"]
    plan = pydicom.dcmread(out / "dicom" / "RP.dcm")
    assert (plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
            == pydicom.dcmread(folder / STRUCTURE_SET_FILE).SOPInstanceUID)
    assert plan.FrameOfReferenceUID == refs.frame_of_reference_uid
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads((tmp_path / "plan.json").read_text()) == summary
    assert list(summary["times_s"]) == steps_run(summary) and summary["device"] == "cpu"
    assert summary["seed"].startswith("unseeded: ")
    assert any(line.startswith("seed ") and line.endswith(summary["seed"]) for line in err_lines)
    assert all(b["segments"] <= 3 for b in summary["beams"])
    assert (out / "plan.log").read_text().splitlines()[0].startswith("import")


def test_no_seed_plans_unseeded_and_says_so(tmp_path, capsys, monkeypatch):
    """--no-seed: the network is not even asked (its entry point raises here), and the summary,
    the progress line and the log say the plan is unseeded because of --no-seed."""
    def no_network(*args, **kwargs):
        raise AssertionError("the dose prediction was run under --no-seed")

    monkeypatch.setattr(planner.plan.fluence, "_predict_seed", no_network)
    out = tmp_path / "plan"
    assert main(["plan", "example:cshape", "--out", str(out), "--no-seed"] + COARSE[:2]
                + ["--beams", "3"] + COARSE[4:]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == "unseeded: --no-seed"
    assert any(line.startswith("seed ") and line.endswith("unseeded: --no-seed")
               for line in capsys.readouterr().err.splitlines())
    assert "unseeded: --no-seed" in (out / "plan.log").read_text()


def test_the_seed_gets_the_protocol_prescriptions(tmp_path, monkeypatch, dicom_patient):
    """A DICOM patient (here the C-shape) has no prescriptions of its own: the patient the dose
    prediction is asked about carries the protocol's (TG-119: the PTV, 50 Gy in 25 fractions),
    so that the network's own checks decide whether it applies."""
    import planner.predict.seed
    from planner.predict.seed import Seed

    folder, _ = dicom_patient
    asked = []

    def predict(patient, device="auto"):
        asked.append(patient)
        return Seed(None, "unseeded: recorded")

    monkeypatch.setattr(planner.predict.seed, "predict_seed", predict)
    assert main(["plan", str(folder), "--out", str(tmp_path / "plan")] + COARSE[:2]
                + ["--beams", "3"] + COARSE[4:]) == 0
    (patient,) = asked
    assert [(p.target, p.dose_gy, p.fractions) for p in patient.prescriptions] == [
        ("PTV", 50.0, 25)]


def test_seed_flags_parse():
    """--seed is the default; --no-seed turns it off (argparse BooleanOptionalAction)."""
    import argparse

    from planner.cli import plan as plan_cli

    parser = argparse.ArgumentParser()
    plan_cli.add_parser(parser.add_subparsers())
    assert parser.parse_args(["plan", "p", "--out", "o"]).seed is True
    assert parser.parse_args(["plan", "p", "--out", "o", "--seed"]).seed is True
    assert parser.parse_args(["plan", "p", "--out", "o", "--no-seed"]).seed is False


def test_refuses_an_existing_folder_at_once(tmp_path, capsys):
    out = tmp_path / "plan"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["plan", "example:cshape", "--out", str(out)] + COARSE) == 2
    err = capsys.readouterr().err
    assert "already exists (use --force" in err and err.count("\n") == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_bad_patient_and_device(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p")]) == 2
    assert "nowhere" in capsys.readouterr().err
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return  # a GPU is present: --device cuda is valid here
    except Exception:  # cupy missing or no driver: no GPU
        pass
    assert main(["plan", "example:cshape", "--out", str(tmp_path / "p"), "--device",
                 "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and err.count("\n") == 1
    assert not (tmp_path / "p").exists()


def test_impossible_protocol_exits_1_with_the_overlap(tmp_path, capsys):
    """BODY as an organ with a hard maximum below the prescription: the PTV lies inside it, so
    no plan can meet both; the run stops before any dose calculation."""
    (tmp_path / "p.toml").write_text(
        'name = "impossible"\n[[prescriptions]]\ntarget = "PTV"\ndose_gy = 50.0\n'
        'fractions = 25\n[structures.PTV]\nkind = "target"\n[structures.BODY]\nkind = "organ"\n'
        '[[goals]]\nstructure = "BODY"\nmetric = "D1cc"\nmax = 45.0\nunit = "Gy"\n'
        'priority = "hard"\n')
    out = tmp_path / "plan"
    code = main(["plan", "example:cshape", "--protocol", str(tmp_path / "p.toml"), "--out",
                 str(out)] + COARSE)
    assert code == 1
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    assert last.startswith("planner: error: the protocol cannot be met as delineated: PTV")
    assert "overlaps BODY by" in last and "cc" in last and "--allow-conflicts" in last
    assert "CONFLICT:" in err  # also on the progress lines (and so in a log)
    assert not out.exists()


def test_interrupted_run_leaves_nothing(tmp_path, capsys, monkeypatch, dicom_patient):
    """Ctrl-C while the report is written (the DICOM files already in the temporary folder):
    exit 130 and no folder, temporary or final."""
    folder, _ = dicom_patient

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(planner.plan.output, "write_report", interrupt)
    out = tmp_path / "plan"
    assert main(["plan", str(folder), "--out", str(out)] + COARSE[:2] + ["--beams", "3"]
                + COARSE[4:]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
