"""``planner commission``: the files it writes and their numbers against BJR Supplement 25."""

import csv
import json

import pytest

from planner.cli.main import main


def test_commission_writes_plots_and_table(tmp_path, capsys):
    out = tmp_path / "commissioning"
    assert main(["commission", "--out", str(out), "--device", "cpu", "--json",
                 str(tmp_path / "commissioning.json")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["commissioning.csv", "pdd.png", "profiles.png"]
    for name in ("pdd.png", "profiles.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = [line for line in (out / "commissioning.csv").read_text().splitlines()
             if not line.startswith("#")]
    rows = {row["field_cm"]: row for row in csv.DictReader(lines)}
    assert list(rows) == ["4x4", "6x6", "7x7", "10x10", "20x20"]
    for field in ("6x6", "7x7", "10x10"):  # BJR 25 within 2 % of the local value
        row = rows[field]
        assert float(row["pdd10_percent"]) == pytest.approx(float(row["pdd10_bjr25"]), rel=0.02)
        assert float(row["pdd20_percent"]) == pytest.approx(float(row["pdd20_bjr25"]), rel=0.02)
    assert float(rows["10x10"]["dose_dmax_cgy_per_mu"]) == pytest.approx(1.0, rel=0.01)
    assert "10x10" in capsys.readouterr().out
    assert json.loads((tmp_path / "commissioning.json").read_text()) == list(rows.values())


def test_commission_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "existing"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["commission", "--out", str(out), "--device", "cpu"]) == 2
    assert "existing" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
