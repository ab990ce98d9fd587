"""``planner convert``: DICOM written atomically, never over an existing folder without --force."""

from __future__ import annotations

import pydicom
import pytest

from planner.cli.main import main
from planner.io import load_patient

dicom_patient = pytest.importorskip("planner.io.dicom_patient",
                                    reason="planner.io.dicom_patient not in this checkout")


def _leftovers(folder):
    """Hidden temporary folders or files that atomic writes leave behind when they fail."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_convert_example_then_read_it_back(tmp_path, capsys):
    out = tmp_path / "cshape"
    assert main(["convert", "example:cshape", "--out", str(out)]) == 0
    assert f"to {out}" in capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    original = load_patient("example:cshape")
    ct_files = [f for f in files if f.startswith("CT.")]
    assert len(ct_files) == original.grid.shape[0]
    # Third-party reader: pydicom sees one RT Structure Set naming the phantom's structures.
    modalities = {pydicom.dcmread(out / f, stop_before_pixels=True).Modality for f in files}
    assert modalities == {"CT", "RTSTRUCT"}
    structure_set = next(pydicom.dcmread(out / f) for f in files if not f.startswith("CT."))
    assert sorted(r.ROIName for r in structure_set.StructureSetROISequence) == [
        "BODY", "Core", "PTV"]
    # And planner reads it back on the same grid.
    again = load_patient(out)
    assert again.grid == original.grid
    assert again.volume_cc("PTV") == pytest.approx(original.volume_cc("PTV"), rel=0.03)
    assert _leftovers(tmp_path) == []


def test_existing_outdir_needs_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["convert", "example:water", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"planner: error: {out}: already exists (use --force to overwrite)\n"
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["convert", "example:water", "--out", str(out), "--force"]) == 0
    names = [p.name for p in out.iterdir()]
    assert "keep.txt" not in names and "RS.dcm" in names
    assert _leftovers(tmp_path) == []


def test_bad_input_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "absent.mat"), "--out", str(out)]) == 2
    assert "absent.mat: no such file or folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A writer that dies half way (the 11th DICOM file): no output folder, no temporary folder left,
    exit 3 (an unexpected error)."""
    save_as = pydicom.dataset.Dataset.save_as
    calls = []

    def failing_save_as(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 10:
            raise RuntimeError("disk full")
        return save_as(self, *args, **kwargs)

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", failing_save_as)
    out = tmp_path / "out"
    assert main(["convert", "example:water", "--out", str(out)]) == 3
    assert "disk full" in capsys.readouterr().err
    assert len(calls) == 11
    assert list(tmp_path.iterdir()) == []


def test_missing_arguments_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "example:water"])
    assert exit_info.value.code == 2
    assert "the following arguments are required: --out" in capsys.readouterr().err
