"""Patient-level fluence optimisation: protocol mapping, overlap rule, ring, dose on the grid."""

from __future__ import annotations

import numpy as np
import pytest

from planner.errors import InputError
from planner.optimize import fluence_problem, optimise_patient
from planner.protocol import read_protocol

PROTOCOL = """name = "line"
[[prescriptions]]
target = "PTV"
dose_gy = 60.0
fractions = 30
[structures.PTV]
kind = "target"
[structures.Organ]
kind = "organ"
synonyms = ["OAR"]
[[goals]]
structure = "PTV"
metric = "D95%"
min = 100
unit = "%"
[[goals]]
structure = "Organ"
metric = "Dmean"
max = 30
unit = "Gy"
"""


# Target 40-60 mm; organ "OAR" 58-75 mm overlaps it at 58-60 mm (see the line_patient fixture).
LINE = {"PTV": ("target", 40, 60), "OAR": ("organ", 58, 75), "Body": ("external", 5, 95)}


def test_problem_mapping_overlap_and_ring(protocol_file, line_patient):
    protocol = read_protocol(protocol_file(PROTOCOL))
    patient, _ = line_patient(LINE)
    problem = fluence_problem(patient, protocol, ring_step=1, ring_mm=20.0)
    assert problem.mapping.mapping == {"PTV": "PTV", "Organ": "OAR"}
    assert problem.mapping.unmapped == ("Body",)
    (target,) = problem.targets
    # Every other target voxel, as on a 3-D checkerboard (the line is one row along x).
    assert target.dose_gy == 60.0 and target.indices.tolist() == list(range(40, 61, 2))
    d95, mean, hot, maximum, outside_mean = problem.goals
    assert d95.limit == 60.0 and d95.is_target and d95.indices.tolist() == list(range(40, 61, 2))
    # Goal on the whole organ; its objective only where no target is (targets win).
    assert mean.indices.tolist() == list(range(58, 76))
    assert mean.objective_indices.tolist() == list(range(61, 76))
    # The implicit goals outside the PTV (ring_step 1: every voxel). The hot-spot and maximum
    # goals on the body 2-20 mm from the target (the voxel touching it, at 1 mm, left out):
    # 20-38 and 62-80 mm; 110 % and 115 % of 60 Gy; 1 cc is more than the 38 voxels of
    # 0.001 cc, so the volume limit is all of them. The mean on all of the body outside it.
    shell = list(range(20, 39)) + list(range(62, 81))
    assert (hot.label, hot.metric, hot.indices.tolist(), hot.parameter, hot.limit, hot.hard) == (
        "Outside PTVs V110% <= 1 cc", "volume_at_dose", shell, pytest.approx(66.0), 1.0, True)
    assert (maximum.metric, maximum.indices.tolist(), maximum.parameter, maximum.limit,
            maximum.hard) == ("dose_at_volume", shell, 0.0, pytest.approx(69.0), True)
    assert (outside_mean.metric, outside_mean.indices.tolist(), outside_mean.limit,
            outside_mean.hard) == ("mean_dose", list(range(5, 40)) + list(range(61, 96)),
                                   np.inf, False)
    assert hot.objective_indices is None and outside_mean.objective_indices is None
    ring = problem.normal_tissue
    assert ring.indices.tolist() == list(range(20, 40)) + list(range(61, 81))
    np.testing.assert_allclose(ring.distance_mm, [40 - i for i in range(20, 40)]
                               + [i - 60 for i in range(61, 81)])


def test_optimise_patient_meets_goals(protocol_file, line_patient):
    patient, D = line_patient(LINE)
    plan = optimise_patient(patient, D, read_protocol(protocol_file(PROTOCOL)))
    assert plan.dose_gy.shape == patient.grid.shape
    dose = plan.dose_gy.ravel()
    assert all(r.met for r in plan.result.goals), plan.result.goals
    # The goal table matches the dose handed back (float32 grid: 1e-5 relative).
    assert np.sort(dose[40:61])[1] == pytest.approx(plan.result.goals[0].value, rel=1e-5)
    assert dose[58:76].mean() == pytest.approx(plan.result.goals[1].value, rel=1e-5)


def test_missing_structure_is_an_input_error(protocol_file, line_patient):
    path = protocol_file(PROTOCOL.replace('synonyms = ["OAR"]', "synonyms = []"))
    patient, D = line_patient(LINE)
    with pytest.raises(InputError, match=r"p\.toml: structure 'Organ'"):
        optimise_patient(patient, D, read_protocol(path))


def test_smoothness_regulariser_is_passed_through(protocol_file, line_patient):
    """With a strong smoothness term the beamlet weights vary less from neighbour to neighbour."""
    from optim.objectives import FluenceSmoothness, neighbour_pairs

    protocol = read_protocol(protocol_file(PROTOCOL))
    patient, D = line_patient(LINE)
    n = D.shape[1]
    pairs = neighbour_pairs(np.zeros(n, int), np.zeros(n, int), np.arange(n))
    rough = optimise_patient(patient, D, protocol).result.x
    smooth = optimise_patient(patient, D, protocol,
                              regularisers=[FluenceSmoothness(pairs, 10.0)]).result.x
    # 172 -> 64 (sum of |x_i - x_i+1|) in development; ask for a clear drop, not those numbers.
    assert np.abs(np.diff(smooth)).sum() < 0.7 * np.abs(np.diff(rough)).sum()
