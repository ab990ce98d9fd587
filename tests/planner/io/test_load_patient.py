"""load_patient: one string to a Patient, by example name, file type or folder content."""

from __future__ import annotations

import numpy as np
import pytest

import planner.io.openkbp
from planner.errors import InputError
from planner.io import load_patient
from planner.phantoms import water_box

ACCEPTED = r"accepted: example:cshape\|water\|slab, a matRad .mat file, an OpenKBP patient folder"


@pytest.mark.parametrize("name, phantom, target", [
    ("cshape", "cshape_phantom", "PTV"), ("water", "water_box", "PTV"),
    ("slab", "slab_phantom", "PTV")])
def test_examples(name, phantom, target):
    patient = load_patient(f"example:{name}")
    assert patient.name == phantom and patient.source == f"example:{name}"
    assert patient.prescriptions[0].target == target
    assert patient.structure(target).mask.any()


@pytest.mark.parametrize("spec, message", [
    ("example:prostate", r"example:prostate: unknown example 'prostate'; " + ACCEPTED),
    ("no/such/folder", r"no/such/folder: no such file or folder; " + ACCEPTED),
])
def test_bad_specs_list_what_is_accepted(spec, message):
    with pytest.raises(InputError, match=message):
        load_patient(spec)


def test_other_files_are_refused(tmp_path):
    path = tmp_path / "plan.txt"
    path.write_text("x")
    with pytest.raises(InputError, match=r"plan.txt: not a supported input file; " + ACCEPTED):
        load_patient(path)


def test_matrad_file(tg119_mat):
    patient = load_patient(str(tg119_mat))
    assert patient.source == str(tg119_mat)
    assert [s.name for s in patient.structures] == ["Core", "OuterTarget", "BODY"]


def test_openkbp_folder(openkbp_dir):
    folder = openkbp_dir / "train-pats" / "pt_1"
    patient = load_patient(folder)
    assert patient.grid.shape == (128, 128, 128)
    assert {p.target for p in patient.prescriptions} <= {"PTV56", "PTV63", "PTV70"}
    assert patient.possible_dose_mask is not None and patient.source == str(folder)


def test_folder_with_plain_ct_csv_goes_to_the_openkbp_reader(tmp_path, monkeypatch):
    """OpenKBP folders may hold ct.csv uncompressed; the loader must not take them for DICOM."""
    (tmp_path / "ct.csv").write_text(",data\n")
    seen = []
    monkeypatch.setattr(planner.io.openkbp, "read_openkbp_patient",
                        lambda folder: seen.append(folder) or water_box(voxel_mm=10.0))
    assert load_patient(tmp_path).source == str(tmp_path)
    assert seen == [tmp_path]


def test_dicom_folder_round_trip(tmp_path):
    dicom_patient = pytest.importorskip("planner.io.dicom_patient",
                                        reason="planner.io.dicom_patient not in this checkout")
    original = water_box(size_mm=100.0, target_size_mm=20.0, voxel_mm=5.0, margin_mm=10.0)
    dicom_patient.write_dicom_patient(original, tmp_path / "dicom")
    patient = load_patient(tmp_path / "dicom")
    assert patient.source == str(tmp_path / "dicom") and patient.dicom is not None
    assert patient.grid == original.grid
    np.testing.assert_array_equal(patient.hu, original.hu)  # integer HU survive exactly
    assert patient.volume_cc("BODY") == pytest.approx(1000.0, rel=0.02)  # contours, not masks


def test_folder_that_is_neither_is_a_dicom_error(tmp_path):
    pytest.importorskip("planner.io.dicom_patient",
                        reason="planner.io.dicom_patient not in this checkout")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(InputError, match=str(tmp_path)):
        load_patient(tmp_path)
