"""Strict import, one clear line (issue 18): each malformed-input class exits 2 with one stderr
line naming the file, leaves no output and the input unchanged; warnings are one line each;
``info`` prints what it can read before saying what is missing or ambiguous; every numeric
option is checked before any work. The DICOM patients are written here (tests/planner/io/
dicom_factory.py, independent of planner's writer)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from planner.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "planner" / "io"))
from dicom_factory import edit, rectangle, write_ct_folder, write_structure_set  # noqa: E402

RESCALE_SLOPE = 0x00281053


def _patient(folder: Path, names=("PTV", "Cord")) -> Path:
    """A 6-slice CT (z -10 to 2.5 mm) and a structure set of rectangles named ``names``."""
    ct = write_ct_folder(folder)
    rois = [(name, "PTV" if name.startswith("PTV") else "ORGAN",
             [rectangle((-7.0 + 2 * k, -5.0 + 2 * k), (-3.0, 3.0), z) for z in (-5.0, -2.5)])
            for k, name in enumerate(names)]
    write_structure_set(folder / "RS.dcm", ct, rois)
    return folder


def _digest(folder: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))}


def _non_numeric_slope(path: Path) -> None:
    ds = pydicom.dcmread(path)
    ds[RESCALE_SLOPE] = RawDataElement(Tag(RESCALE_SLOPE), "DS", 4, b"abc ", 0, False, True)
    ds.save_as(path)


MALFORMED = {
    "slope missing": (lambda p: edit(p, RescaleSlope=None), "missing RescaleSlope"),
    "intercept missing": (lambda p: edit(p, RescaleIntercept=None), "missing RescaleIntercept"),
    "slope zero": (lambda p: edit(p, RescaleSlope=0), "RescaleSlope is 0"),
    "slope not numeric": (_non_numeric_slope, "RescaleSlope 'abc' is not a number"),
}


@pytest.mark.parametrize("command", ["convert", "plan"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_ct_rescale_is_one_line_exit_2_nothing_written(tmp_path, capsys, case,
                                                                 command):
    folder = _patient(tmp_path / "in")
    broken = sorted(folder.glob("CT.*.dcm"))[2]
    damage, message = MALFORMED[case]
    damage(broken)
    before = _digest(folder)
    out = tmp_path / "out"
    argv = (["convert", str(folder), "--out", str(out)] if command == "convert" else
            ["plan", str(folder), "--prescription", "PTV=60/30", "--out", str(out)])
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"planner: error: {broken}: {message}" + captured.err.split(message)[1]
    assert captured.err.count("\n") == 1 and captured.out == ""
    assert not out.exists() and list(tmp_path.iterdir()) == [folder]
    assert _digest(folder) == before


def test_warnings_are_one_line_naming_the_file(tmp_path, capsys):
    """A structure without contours is skipped with one warning line in the command's style
    (not Python's three-line ``file:line`` form), for any subcommand (here info and convert)."""
    ct = write_ct_folder(tmp_path / "in")
    rs = write_structure_set(tmp_path / "in" / "RS.dcm", ct, [
        ("PTV", "PTV", [rectangle((-7.0, -3.0), (-3.0, 3.0), -5.0)]), ("Empty", "ORGAN", [])])
    line = f"planner: warning: {rs}: ROI 'Empty' has no closed contours; skipped\n"
    assert main(["info", str(tmp_path / "in")]) == 0
    assert capsys.readouterr().err == line
    assert main(["convert", str(tmp_path / "in"), "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err == line


def test_info_without_a_structure_set_prints_the_grid_then_the_error(tmp_path, capsys):
    folder = tmp_path / "in"
    write_ct_folder(folder)
    assert main(["info", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "  shape    6 x 12 x 16 voxels" in captured.out
    assert "  spacing  2.500 x 1.000 x 0.500 mm" in captured.out
    assert "RT Structure Set: none that reads" in captured.out
    assert captured.err == f"planner: error: {folder}: no RT Structure Set found\n"


def test_info_with_two_structures_of_one_name_prints_both_then_the_error(tmp_path, capsys):
    folder = _patient(tmp_path / "in", names=("PTV", "Cord", "Cord"))
    assert main(["info", str(folder)]) == 2
    captured = capsys.readouterr()
    assert "  shape    6 x 12 x 16 voxels" in captured.out
    rows = [line.split() for line in captured.out.splitlines()]
    assert ["2", "Cord", "ORGAN", "2"] in rows and ["3", "Cord", "ORGAN", "2"] in rows
    assert captured.err == (f"planner: error: {folder / 'RS.dcm'}: ROI name 'Cord' appears "
                            f"twice (ROI numbers 2 and 3): which one is meant is ambiguous\n")


@pytest.mark.parametrize("argv, option", [
    (["plan", "example:cshape", "--beams", "0"], "--beams"),
    (["plan", "example:cshape", "--beams", "2.5"], "--beams"),
    (["plan", "example:cshape", "--beamlet-mm", "0"], "--beamlet-mm"),
    (["plan", "example:cshape", "--dose-grid-mm", "-3"], "--dose-grid-mm"),
    (["plan", "example:cshape", "--max-segments", "0"], "--max-segments"),
    (["plan", "example:cshape", "--time-limit", "nan"], "--time-limit"),
    (["optimize", "example:cshape", "--dij", "d.npz", "--protocol", "p", "--out", "o",
      "--time-limit", "0"], "--time-limit"),
    (["train", "data", "--out", "o", "--epochs", "0"], "--epochs"),
    (["train", "data", "--out", "o", "--lr", "inf"], "--lr"),
    (["train", "data", "--out", "o", "--crop", "-1"], "--crop"),
    (["train", "data", "--out", "o", "--threads", "0"], "--threads"),
    (["train", "data", "--out", "o", "--dvh-weight", "-1"], "--dvh-weight"),
    (["train", "data", "--out", "o", "--limit-train", "0"], "--limit-train"),
    (["evaluate-prediction", "data", "--threads", "0"], "--threads"),
])
def test_numeric_options_are_checked_first(tmp_path, capsys, monkeypatch, argv, option):
    """A bad number is a usage error (exit 2) in one line naming the option, before any work
    (``--beams 0`` once ended as an unexpected error, exit 3)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"planner: error: {argv[0]}: argument {option}: must be a ")
    assert err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_pydicom_warnings_name_the_file(tmp_path, capsys):
    """An odd value pydicom warns of (InstanceNumber 1.5, not an integer string) is a warning
    line naming the file, and the slice still reads."""
    folder = _patient(tmp_path / "in")
    odd = sorted(folder.glob("CT.*.dcm"))[1]
    ds = pydicom.dcmread(odd)
    ds[0x00200013] = RawDataElement(Tag(0x00200013), "IS", 4, b"1.5 ", 0, False, True)
    ds.save_as(odd)
    assert main(["info", str(folder)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err and all(line.startswith(f"planner: warning: {odd}: ") for line in err)
