"""``planner check RTPLAN``: table on stdout, JSON file, exit codes 0 (pass), 1 (fail), 2 (bad
input), each error one line on stderr."""

from __future__ import annotations

import json

import pydicom
import pytest

from check_case import cshape_plan, write_plan
from planner.cli.main import main


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """The C-shape plan exported twice: with its own dose, and with a dose 5 % too high."""
    patient, beams, dose = cshape_plan()
    root = tmp_path_factory.mktemp("check_cli")
    return (write_plan(root / "good" / "plan", patient, beams, dose),
            write_plan(root / "bad" / "plan", patient, beams, dose * 1.05))


def test_passing_plan(plans, tmp_path, capsys):
    good, _ = plans
    out = tmp_path / "check.json"
    assert main(["check", str(good), "--json", str(out), "--device", "cpu"]) == 0
    stdout = capsys.readouterr().out
    assert "PASS: 100.0 % of the points pass gamma 3 %/2 mm" in stdout
    assert "PTV" in stdout and "D0.1cc" in stdout
    data = json.loads(out.read_text())
    assert data["passed"] is True and data["gamma"]["pass_rate"] >= 0.98
    assert [p.name for p in tmp_path.iterdir()] == ["check.json"]  # no temporary left


def test_failing_plan_exits_1(plans, capsys):
    _, bad = plans
    assert main(["check", str(bad)]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert "check failed" in lines[0] and "below the TG-218 tolerance of 95 %" in lines[0]


def test_explicit_files(plans, capsys):
    """The files given explicitly are used; the RT Dose of the other export (another plan's
    UID) is refused."""
    good, bad = plans
    folder = good.parent
    assert main(["check", str(good), "--rtdose", str(folder / "RD.dcm"), "--rtstruct",
                 str(folder / "RS.dcm"), "--ct", str(folder)]) == 0
    capsys.readouterr()
    assert main(["check", str(good), "--rtdose", str(bad.parent / "RD.dcm")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "RD.dcm: the RT Dose references plan" in err[0]


def test_existing_json_is_kept_without_force(plans, tmp_path, capsys):
    good, _ = plans
    out = tmp_path / "check.json"
    out.write_text("keep")
    assert main(["check", str(good), "--json", str(out)]) == 2
    assert "already exists (use --force to overwrite)" in capsys.readouterr().err
    assert out.read_text() == "keep"
    assert main(["check", str(good), "--json", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["passed"] is True


def test_bad_input_exits_2(plans, tmp_path, capsys):
    """An electron plan: one line on stderr naming the file, exit 2."""
    good, _ = plans
    folder = tmp_path / "plan"
    folder.mkdir()
    for path in good.parent.iterdir():
        folder.joinpath(path.name).write_bytes(path.read_bytes())
    ds = pydicom.dcmread(folder / "RP.dcm")
    ds.BeamSequence[2].RadiationType = "ELECTRON"
    ds.save_as(folder / "RP.dcm")
    assert main(["check", str(folder / "RP.dcm")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"planner: error: {folder / 'RP.dcm'}: beam 'G144': RadiationType")
    assert main(["check", str(tmp_path / "missing.dcm")]) == 2
    assert f"{tmp_path / 'missing.dcm'}: no such file" in capsys.readouterr().err
    assert main(["check", str(good), "--rtstruct", str(tmp_path / "RS.dcm")]) == 2
    assert f"{tmp_path / 'RS.dcm'}: no such file (--rtstruct)" in capsys.readouterr().err
