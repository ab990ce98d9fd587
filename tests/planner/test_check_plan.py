"""``planner.check``: the independent dose check of an RT Plan (issue 5, point 5).

Round trips: a plan is exported (RT Plan, RT Dose, CT, RTSTRUCT), read back with pydicom and
recomputed by :func:`planner.check.check_plan`; the gamma 3 %/2 mm must pass in >= 98 % of the
points (the issue's criterion). Dose errors a check exists to catch (a 5 % output error, one
beam's MU changed) must fail the TG-218 tolerance. Step-and-shoot labelled BeamType DYNAMIC
passes like the STATIC original; plans a step-and-shoot recomputation cannot reproduce (sliding
window, arcs, ...) are refused with one line naming the file.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from check_case import GANTRY_DEG, MACHINE, cshape_plan, write_plan
from dose import Beam, load_beam_model, open_field, segment_dose
from dynamic_encoding import as_dynamic_step_and_shoot
from planner.check import DVH_METRICS, check_plan, format_check, write_check_json
from planner.errors import InputError
from planner.review.external import review_plan
from planner.io.openkbp import read_openkbp_patient
from planner.io.plan_dicom import write_plan_dicom
from planner.io.rtplan import PlanBeam, read_rt_plan
from planner.plan import DICOM_FOLDER, plan_patient


@pytest.fixture(scope="module")
def case():
    return cshape_plan()


@pytest.fixture(scope="module")
def exported(case, tmp_path_factory):
    patient, beams, dose = case
    return write_plan(tmp_path_factory.mktemp("check") / "plan", patient, beams, dose)


@pytest.fixture
def copy(exported, tmp_path):
    """A private copy of the exported folder, to edit."""
    folder = tmp_path / "plan"
    shutil.copytree(exported.parent, folder)
    return folder


def edit(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_round_trip_passes(exported, case):
    """The exported plan recomputes to its own RT Dose: gamma >= 98 %; per-structure DVH
    statistics within 0.5 % of the prescription (the CT is exported as integer HU and the dose
    as 32-bit integers: the recomputation differs by far less than that)."""
    result = check_plan(exported)
    assert result.pass_rate >= 0.98 and result.passed
    assert result.points > 1000
    assert result.files.rtdose == exported.parent / "RD.dcm"
    assert result.files.rtstruct == exported.parent / "RS.dcm"
    assert result.files.ct == exported.parent.resolve()
    assert [s.name for s in result.structures] == ["PTV", "Core", "BODY"]
    assert result.normalisation == "prescription" and result.normalisation_gy == 50.0
    for s in result.structures:
        for _, attribute in DVH_METRICS:
            assert abs(result.difference_percent(s, attribute)) < 0.5
    # The recomputed dose is the plan's dose (the same engine on the exported CT).
    _, _, dose = case
    np.testing.assert_allclose(result.recomputed_dose_gy, dose, atol=0.005 * dose.max())
    text = format_check(result)
    assert "PASS" in text and "D0.1cc" in text
    # planner's own RT Dose: the output says the same engine recomputed it.
    assert result.same_engine
    assert "engine    The RT Dose was computed by planner, the engine of this check" in text


def test_review_with_the_check_shows_its_result(exported, tmp_path):
    """review_plan(check=True) runs the check and the report gives its verdict, its engine
    and the plan's identifiers."""
    folder = exported.parent
    review_plan(exported, folder / "RD.dcm", folder / "RS.dcm", folder, tmp_path / "review",
                predict=False, check=True)
    page = (tmp_path / "review" / "report.html").read_text()
    plan = read_rt_plan(exported)
    assert "PASS: " in page and "The RT Dose was computed by planner, the engine" in page
    assert f"<td>RT Plan SOP Instance UID</td><td>{plan.sop_instance_uid}</td>" in page


def test_another_systems_dose_is_an_independent_check(copy):
    edit(copy / "RD.dcm", lambda ds: setattr(ds, "Manufacturer", "Other TPS"))
    result = check_plan(copy / "RP.dcm")
    assert not result.same_engine
    assert ("The RT Dose was computed by 'Other TPS'; planner's engine recomputed it (an "
            "independent dose algorithm)") in format_check(result)


def test_output_error_fails(case, tmp_path):
    """An RT Dose 5 % too high (an output calibration error) fails the check; the DVH
    differences show the -1/21 of every structure's mean."""
    patient, beams, dose = case
    rtplan = write_plan(tmp_path / "plan", patient, beams, dose * 1.05)
    result = check_plan(rtplan)
    assert result.pass_rate < 0.95 and not result.passed
    ptv = result.structures[0]
    # Linear interpolation commutes with scaling: exact up to the 32-bit dose quantisation.
    assert ptv.recomputed.mean_gy / ptv.planned.mean_gy == pytest.approx(1 / 1.05, rel=1e-3)


def test_changed_beam_meterset_fails(copy):
    """The RT Plan's meterset of one beam raised by 20 % after the dose was computed (a
    transcription error): the recomputed dose no longer matches."""
    def raise_mu(ds):
        item = ds.FractionGroupSequence[0].ReferencedBeamSequence[1]
        item.BeamMeterset = f"{float(item.BeamMeterset) * 1.2:.4f}"

    edit(copy / "RP.dcm", raise_mu)
    result = check_plan(copy / "RP.dcm")
    assert result.pass_rate < 0.95 and not result.passed


def test_json_round_trip(exported, tmp_path):
    result = check_plan(exported)
    path = write_check_json(tmp_path / "check.json", result)
    data = json.loads(path.read_text())
    assert data["passed"] is True
    assert data["gamma"]["pass_rate"] == pytest.approx(result.pass_rate)
    assert data["gamma"]["points"] == result.points
    assert [s["name"] for s in data["structures"]] == ["PTV", "Core", "BODY"]
    assert set(data["structures"][0]) == {"name", "volume_cc", "Dmean", "D95", "D2", "D0.1cc"}
    with pytest.raises(InputError, match="already exists"):
        write_check_json(path, result)


def test_files_in_sibling_folders_are_found(exported, tmp_path):
    """A layout of one folder per object: the plan's parent and its subfolders are searched."""
    root = tmp_path / "patient"
    for sub in ("CT", "RTPLAN", "RTDOSE", "RTSTRUCT"):
        (root / sub).mkdir(parents=True)
    for path in exported.parent.iterdir():
        sub = {"RP.dcm": "RTPLAN", "RD.dcm": "RTDOSE", "RS.dcm": "RTSTRUCT"}.get(path.name, "CT")
        shutil.copy(path, root / sub / path.name)
    result = check_plan(root / "RTPLAN" / "RP.dcm")
    assert result.files.ct == (root / "CT").resolve()
    assert result.files.rtdose.parent.name == "RTDOSE" and result.passed


def test_dynamic_step_and_shoot_passes(copy, case):
    """The exported plan rewritten (pydicom) as BeamType DYNAMIC step-and-shoot, as e.g. Eclipse
    exports it (tests/dynamic_encoding.py: the same control point pairs, the leaves travelling
    between them at equal cumulative weight, jaws listed only where they change): read as the
    same segments, recomputed to the same dose as the STATIC original, and it passes like it."""
    edit(copy / "RP.dcm", as_dynamic_step_and_shoot)
    result = check_plan(copy / "RP.dcm")
    assert {b.BeamType for b in pydicom.dcmread(copy / "RP.dcm").BeamSequence} == {"DYNAMIC"}
    assert result.pass_rate >= 0.98 and result.passed
    _, beams, dose = case
    for wrote, read in zip(beams, result.plan.beams, strict=True):
        assert [s.mu for s in read.segments] == pytest.approx([s.mu for s in wrote.segments],
                                                              rel=1e-8)
    # As test_round_trip_passes: the same engine on the exported CT.
    np.testing.assert_allclose(result.recomputed_dose_gy, dose, atol=0.005 * dose.max())


def first_beam(ds):
    return ds.BeamSequence[0]


def set_rotation(ds):
    first_beam(ds).ControlPointSequence[0].GantryRotationDirection = "CW"


def set_arc(ds):
    first_beam(ds).ControlPointSequence[1].GantryAngle = "10"


def set_electron(ds):
    first_beam(ds).RadiationType = "ELECTRON"


def set_ion(ds):
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.8"


def set_energy(ds):
    first_beam(ds).ControlPointSequence[0].NominalBeamEnergy = "10"


def set_fff(ds):
    mode = pydicom.Dataset()
    mode.FluenceMode = "NON_STANDARD"
    mode.FluenceModeID = "FFF"
    first_beam(ds).PrimaryFluenceModeSequence = [mode]


def add_wedge(ds):
    first_beam(ds).NumberOfWedges = 1


def drop_mlc(ds):
    beam = first_beam(ds)
    beam.BeamLimitingDeviceSequence = [d for d in beam.BeamLimitingDeviceSequence
                                       if d.RTBeamLimitingDeviceType != "MLCX"]


def mlcy(ds):
    for d in first_beam(ds).BeamLimitingDeviceSequence:
        if d.RTBeamLimitingDeviceType == "MLCX":
            d.RTBeamLimitingDeviceType = "MLCY"


def drop_leaf_positions(ds):
    point = first_beam(ds).ControlPointSequence[0]
    point.BeamLimitingDevicePositionSequence = [
        d for d in point.BeamLimitingDevicePositionSequence if d.RTBeamLimitingDeviceType != "MLCX"]


def sliding_window(ds):
    beam = first_beam(ds)
    beam.BeamType = "DYNAMIC"
    for d in beam.ControlPointSequence[1].BeamLimitingDevicePositionSequence:
        if d.RTBeamLimitingDeviceType == "MLCX":
            d.LeafJawPositions = [f"{float(v) + 5.0:.2f}" for v in d.LeafJawPositions]


def unknown_beam_type(ds):
    first_beam(ds).BeamType = "SETUP"


@pytest.mark.parametrize(("change", "message"), [
    (set_rotation, r"RP.dcm: beam 'G000': control point 0 rotates the gantry \(CW\): an arc"),
    (set_arc, r"RP.dcm: beam 'G000': gantry angle changes from 0 to 10 deg at control point 1"),
    (set_electron, r"RP.dcm: beam 'G000': RadiationType 'ELECTRON'; .* PHOTON beams only"),
    (set_ion, r"RP.dcm: an RT Ion Plan"),
    (set_energy, r"RP.dcm: beam 'G000': nominal energy 10 MV; .* 6 MV only"),
    (set_fff, r"RP.dcm: beam 'G000': fluence mode FFF \(e.g. flattening-filter free\)"),
    (add_wedge, r"RP.dcm: beam 'G000': NumberOfWedges is 1; .* jaws and MLC only"),
    (drop_mlc, r"RP.dcm: beam 'G000': no MLC \(devices: ASYMX, ASYMY\)"),
    (mlcy, r"RP.dcm: beam 'G000': an MLCY"),
    (drop_leaf_positions, r"RP.dcm: beam 'G000': control point 0 has no MLCX leaf positions"),
    (sliding_window, r"RP.dcm: beam 'G000': DYNAMIC .* moves while the beam is on .*sliding"),
    (unknown_beam_type, r"RP.dcm: beam 'G000': BeamType 'SETUP', expected STATIC or DYNAMIC"),
])
def test_plans_that_cannot_be_recomputed_are_refused(copy, change, message):
    edit(copy / "RP.dcm", change)
    with pytest.raises(InputError, match=message):
        check_plan(copy / "RP.dcm")


def test_missing_structure_set(copy):
    (copy / "RS.dcm").unlink()
    with pytest.raises(InputError, match=r"RP.dcm: missing structure set: .* --rtstruct"):
        check_plan(copy / "RP.dcm")


def test_missing_rt_dose(copy):
    (copy / "RD.dcm").unlink()
    with pytest.raises(InputError, match=r"RP.dcm: no RT Dose referencing this plan .* --rtdose"):
        check_plan(copy / "RP.dcm")


def test_rt_dose_of_another_frame_of_reference(copy):
    edit(copy / "RD.dcm", lambda ds: setattr(ds, "FrameOfReferenceUID", generate_uid()))
    with pytest.raises(InputError, match=r"RD.dcm: frame of reference .* differs from .* of the "
                                         r"plan"):
        check_plan(copy / "RP.dcm")


def test_rt_dose_of_another_plan(copy, tmp_path):
    other = tmp_path / "other.dcm"
    shutil.copy(copy / "RD.dcm", other)
    edit(other, lambda ds: setattr(ds.ReferencedRTPlanSequence[0], "ReferencedSOPInstanceUID",
                                   generate_uid()))
    with pytest.raises(InputError, match=r"other.dcm: the RT Dose references plan .*, not "):
        check_plan(copy / "RP.dcm", rtdose=other)


def test_per_beam_dose_is_refused(copy):
    edit(copy / "RD.dcm", lambda ds: setattr(ds, "DoseSummationType", "BEAM"))
    with pytest.raises(InputError, match=r"RD.dcm: DoseSummationType 'BEAM'"):
        check_plan(copy / "RP.dcm")


@pytest.mark.slow
def test_openkbp_round_trip(openkbp_dir, tmp_path):
    """An OpenKBP head-and-neck patient (CT and structures written as DICOM beside the plan),
    five beams of two open fields each around the targets, dose on an 8 mm grid: >= 98 %."""
    patient = read_openkbp_patient(openkbp_dir / "validation-pats" / "pt_201")
    targets = np.any([s.mask for s in patient.structures if s.kind == "target"], axis=0)
    z, y, x = patient.grid.index_to_position_mm(np.argwhere(targets).mean(axis=0))
    segments = (open_field(MACHINE, (-50.0, 50.0), (-50.0, 50.0), 60.0),
                open_field(MACHINE, (-30.0, 30.0), (-40.0, 20.0), 40.0))
    beams = [PlanBeam(f"G{g:03.0f}", Beam(g, 0.0, 0.0, (x, y, z)), segments) for g in GANTRY_DEG]
    dose_grid = patient.grid.resampled((8.0, 8.0, 8.0))
    fractions = patient.prescriptions[0].fractions
    dose = np.asarray(segment_dose(patient.density, patient.grid, dose_grid,
                                   [b.beam for b in beams], [b.segments for b in beams], MACHINE,
                                   load_beam_model())) * fractions
    write_plan_dicom(tmp_path / "plan", patient, beams, MACHINE, dose, dose_grid,
                     fractions=fractions, prescriptions=patient.prescriptions)
    result = check_plan(tmp_path / "plan" / "RP.dcm")
    assert result.pass_rate >= 0.98 and result.passed
    assert {s.name for s in result.structures} >= {"PTV70", "SpinalCord"}
    assert result.normalisation_gy == 70.0


@pytest.mark.slow
def test_planner_plan_output_passes(tmp_path):
    """The folder ``planner plan`` writes (CI-sized C-shape plan, as tests/planner/
    test_plan_patient.py runs it) passes its own check."""
    out = tmp_path / "run"
    plan_patient("example:cshape", "tg119_c_shape", out_dir=out, device="cpu", beam_count=5,
                 beamlet_mm=10.0, dose_grid_mm=8.0, max_segments_per_beam=5)
    result = check_plan(out / DICOM_FOLDER / "RP.dcm")
    assert result.pass_rate >= 0.98 and result.passed
    assert result.files.rtdose == out / DICOM_FOLDER / "RD.dcm"


def test_zero_dose_and_unknown_device(copy):
    edit(copy / "RD.dcm", lambda ds: setattr(ds, "PixelData", bytes(len(ds.PixelData))))
    with pytest.raises(InputError, match=r"RD.dcm: the dose is zero everywhere"):
        check_plan(copy / "RP.dcm")
    with pytest.raises(InputError, match=r"device 'gpu': device must be auto, cpu or cuda"):
        check_plan(copy / "RP.dcm", device="gpu")
