"""The exported folder: RT Plan and RT Dose linked to the CT and RT Structure Set beside them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest

from dose.beams import Beam
from dose.machine import load_machine
from dose.segments import open_field
from planner.errors import InputError
from planner.io.dicom_patient import read_dicom_patient
from planner.io.plan_dicom import write_plan_dicom
from planner.io.rtdose import read_rt_dose
from planner.io.rtplan import PlanBeam, read_rt_plan
from planner.phantoms import water_box

MACHINE = load_machine()


@pytest.fixture
def phantom():
    return water_box(size_mm=60.0, target_size_mm=20.0, voxel_mm=5.0, margin_mm=10.0)


def plan_beams():
    segments = (open_field(MACHINE, (-20.0, 20.0), (-20.0, 20.0), 60.0),
                open_field(MACHINE, (-10.0, 10.0), (-10.0, 10.0), 25.0))
    return [PlanBeam(f"G{g}", Beam(g, 0.0, 0.0, (0.0, 0.0, 0.0)), segments) for g in (0, 180)]


def dose_of(patient):
    return np.full(patient.grid.shape, 2.0)


def test_phantom_gets_ct_and_structures_beside_the_plan(tmp_path, phantom):
    out = tmp_path / "plan"
    files = write_plan_dicom(out, phantom, plan_beams(), MACHINE, dose_of(phantom), phantom.grid,
                             fractions=25)
    assert files.wrote_images
    names = sorted(p.name for p in out.iterdir())
    assert names[-3:] == ["RD.dcm", "RP.dcm", "RS.dcm"]
    assert len(names) == 3 + phantom.grid.shape[0]  # one CT file per slice
    # The folder reads back as a patient (CT + RTSTRUCT) whose identity the plan and dose share.
    back = read_dicom_patient(out)
    plan = read_rt_plan(out / "RP.dcm")
    rd = pydicom.dcmread(out / "RD.dcm")
    for uid in (plan.frame_of_reference_uid, rd.FrameOfReferenceUID):
        assert uid == back.dicom.frame_of_reference_uid
    assert plan.study_instance_uid == rd.StudyInstanceUID == back.dicom.study_instance_uid
    assert plan.patient_id == rd.PatientID == back.dicom.patient_id
    assert plan.structure_set_sop_instance_uid == back.dicom.structure_set_sop_instance_uid
    assert rd.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.sop_instance_uid
    assert plan.mu == pytest.approx(2 * 85.0)
    dose, grid = read_rt_dose(out / "RD.dcm")
    assert grid == phantom.grid
    np.testing.assert_allclose(dose, 2.0, atol=1e-8)


def test_dicom_patient_gets_plan_and_dose_only(tmp_path, phantom):
    images = write_plan_dicom(tmp_path / "first", phantom, plan_beams(), MACHINE,
                              dose_of(phantom), phantom.grid, fractions=25)
    patient = dataclasses.replace(phantom, dicom=images.references)
    files = write_plan_dicom(tmp_path / "second", patient, plan_beams(), MACHINE,
                             dose_of(patient), patient.grid, fractions=25, machine_name="LinacB")
    assert not files.wrote_images
    assert sorted(p.name for p in (tmp_path / "second").iterdir()) == ["RD.dcm", "RP.dcm"]
    plan = read_rt_plan(tmp_path / "second" / "RP.dcm")
    assert plan.machine_name == "LinacB"
    assert (plan.structure_set_sop_instance_uid
            == images.references.structure_set_sop_instance_uid)


def test_existing_folder_is_kept(tmp_path, phantom):
    out = tmp_path / "plan"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="plan: already exists"):
        write_plan_dicom(out, phantom, plan_beams(), MACHINE, dose_of(phantom), phantom.grid,
                         fractions=25)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_failure_leaves_nothing(tmp_path, phantom):
    # A dose on the wrong grid fails after the CT and plan were written: nothing may remain.
    with pytest.raises(ValueError, match="dose shape"):
        write_plan_dicom(tmp_path / "plan", phantom, plan_beams(), MACHINE,
                         dose_of(phantom)[1:], phantom.grid, fractions=25)
    assert list(tmp_path.iterdir()) == []
