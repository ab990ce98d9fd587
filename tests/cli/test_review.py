"""``planner review``: a report from RT Plan, RT Dose, RTSTRUCT and CT files, goals reported."""

from __future__ import annotations

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
    assert main(_args(files, "--protocol", "tg119_c_shape", "--out", str(out))) == 0
    stdout = capsys.readouterr().out
    page = (out / "report.html").read_text()
    # The plan's beams as read back from the RT Plan: 3 beams of 20 + 21 + 22 MU.
    assert page.count("<td>63.0</td>") == 3 and "<b>189.0</b>" in page
    assert "C-shape" in page and "PTV: 50 Gy in 25 fractions" in page
    met = re.search(r"(\d) of (\d) goals met", stdout)
    assert met and met.group(2) == "4"
    # Every unmet goal is printed with its margin and shown in red in the report.
    unmet = re.findall(r"NOT MET  (.*?):", stdout)
    assert len(unmet) == 4 - int(met.group(1))
    assert page.count('<tr class="unmet">') == len(unmet)
    assert {p.name for p in out.iterdir()} >= {"report.html", "dvh.png", "fluence.png",
                                                "segments.png", "slices_isocentre.png"}
    assert str(out / "report.html") in stdout


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
