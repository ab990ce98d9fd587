"""``planner info``: exit codes and what it prints, called through ``planner.cli.main.main``."""

from __future__ import annotations

import pytest

from planner.cli.main import main


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "info" in out and "convert" in out


def test_info_water_box(capsys):
    """Default water box: 200 mm cube of 2.5 mm voxels, 20 mm of air: 96^3 voxels, 8000 cc."""
    assert main(["info", "example:water"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert lines[0] == "Patient water_box (example:water)"
    assert "  shape    96 x 96 x 96 voxels" in lines
    assert "  spacing  2.500 x 2.500 x 2.500 mm" in lines
    assert "  origin   (-118.75, -118.75, -118.75) mm, centre of voxel [0, 0, 0]" in lines
    assert ("  extent   z -120.00 to 120.00, y -120.00 to 120.00, x -120.00 to 120.00 mm"
            in lines)
    assert "  BODY  external      8000.00" in lines
    assert "  PTV   target          64.00" in lines
    assert "  PTV: 50 Gy in 25 fractions (2 Gy per fraction)" in lines


def test_info_tg119(capsys, tg119_mat):
    assert main(["info", str(tg119_mat)]) == 0
    out = capsys.readouterr().out
    assert "  shape    129 x 167 x 167 voxels" in out
    assert "  OuterTarget  target         167.81" in out
    assert "  OuterTarget: 50 Gy in 25 fractions (2 Gy per fraction)" in out


def test_info_openkbp(capsys, openkbp_dir):
    assert main(["info", str(openkbp_dir / "train-pats" / "pt_1")]) == 0
    out = capsys.readouterr().out
    assert "  PTV70: 70 Gy in 35 fractions (2 Gy per fraction)" in out
    assert "SpinalCord" in out


@pytest.mark.parametrize("spec, message", [
    ("example:nothing", "example:nothing: unknown example 'nothing'"),
    ("missing.mat", "missing.mat: no such file or folder"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, spec, message):
    assert main(["info", spec]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(f"planner: error: {message}")
