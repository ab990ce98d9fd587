"""``planner dvh``: the table printed, the CSV written atomically, bad input as exit code 2."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from review_files import write_review_files

from planner.cli.main import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_review_files(tmp_path_factory.mktemp("dvh_cli"))


def test_prints_one_row_per_structure(files, capsys, tmp_path):
    assert main(["dvh", str(files.rtdose), str(files.rtstruct), "--json",
                 str(tmp_path / "dvh.json")]) == 0
    out = capsys.readouterr().out.splitlines()[:-1]  # the last: wrote dvh.json
    assert out[0].split()[:3] == ["structure", "volume", "cc"]
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in out[1:]}
    assert set(rows) == {"PTV", "Core", "BODY"}
    # The dose is on the CT grid: volumes and the maximum are those of the masks and the array
    # (2-decimal print, 32-bit RT Dose quantisation far below that).
    ptv = files.dose_gy[files.patient.structure("PTV").mask]
    assert rows["PTV"][0] == pytest.approx(files.patient.volume_cc("PTV"), abs=0.005)
    assert rows["PTV"][3] == pytest.approx(float(ptv.max()), abs=0.005)
    assert rows["PTV"][2] == pytest.approx(float(ptv.mean()), abs=0.005)
    written = {s["name"]: s for s in json.loads((tmp_path / "dvh.json").read_text())}
    assert set(written) == set(rows)
    assert written["PTV"]["mean_gy"] == pytest.approx(rows["PTV"][2], abs=0.005)


def test_writes_csv_and_refuses_to_overwrite(files, tmp_path, capsys):
    target = tmp_path / "dvh.csv"
    assert main(["dvh", str(files.rtdose), str(files.rtstruct), "--csv", str(target),
                 "--bin-gy", "0.1"]) == 0
    with open(target, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:3] == ["dose_gy", "PTV cc", "PTV %"]
    doses = np.array([float(r[0]) for r in rows[1:]])
    np.testing.assert_allclose(np.diff(doses), 0.1)
    ptv_percent = np.array([float(r[2]) for r in rows[1:]])
    assert ptv_percent[0] == 100.0 and ptv_percent[-1] == 0.0
    assert np.all(np.diff(ptv_percent) <= 0)  # cumulative: never increases with dose
    capsys.readouterr()
    assert main(["dvh", str(files.rtdose), str(files.rtstruct), "--csv", str(target)]) == 2
    assert "already exists (use --force" in capsys.readouterr().err
    assert main(["dvh", str(files.rtdose), str(files.rtstruct), "--csv", str(target),
                 "--force"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["dvh.csv"]


def test_bad_input_names_the_file(files, tmp_path, capsys):
    assert main(["dvh", str(files.rtstruct), str(files.rtstruct)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RS.dcm: not an RT Dose" in err
    assert main(["dvh", str(files.rtdose), str(files.rtdose)]) == 2
    assert "RD.dcm: not an RT Structure Set" in capsys.readouterr().err
    assert main(["dvh", str(files.rtdose), str(files.rtstruct), "--bin-gy", "5"]) == 2
    assert "--bin-gy: 5 Gy is outside" in capsys.readouterr().err
