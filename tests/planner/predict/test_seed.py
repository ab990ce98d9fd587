"""Seeding: the floors of the first sparing push and the mimicking objectives of a prediction in
the sparing step; the way to the hard goals is the unseeded one; a poor prediction stays safe;
patients outside the model's reach run unseeded and say why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from optim.autoplan import plan_automatically
from planner.optimize import fluence_problem, optimise_patient
from planner.patient import Prescription
from planner.phantoms import cshape_phantom
from planner.predict.data import CHANNELS
from planner.predict.infer import save_model
from planner.predict.model import DoseUNet
from planner.predict.seed import (MIMIC_MARGIN_MM, MIMIC_WEIGHT, Seed, mimicking_objectives,
                                  predict_seed, seed_arguments)
from planner.protocol import read_protocol

PROTOCOL = """name = "line head and neck"
[[prescriptions]]
target = "PTV70"
dose_gy = 70.0
fractions = 35
[structures.PTV70]
kind = "target"
[structures.SpinalCord]
kind = "organ"
[structures.LeftParotid]
kind = "organ"
synonyms = ["Parotid_L"]
[[goals]]
structure = "PTV70"
metric = "D95%"
min = 100
unit = "%"
[[goals]]
structure = "SpinalCord"
metric = "Dmean"
max = 30
unit = "Gy"
[[goals]]
structure = "LeftParotid"
metric = "Dmean"
max = 26
unit = "Gy"
"""


# PTV70 40-60 mm, cord 62-75 mm, left parotid 20-35 mm (see the line_patient fixture).
LINE = {"PTV70": ("target", 40, 60), "SpinalCord": ("organ", 62, 75),
        "Parotid_L": ("organ", 20, 35), "Body": ("external", 5, 95)}
LINE_RX = (Prescription("PTV70", 70.0, 35),)


def _plan(patient, D, protocol, predicted_gy: np.ndarray | None = None):
    """The plan with the mimicking of ``predicted_gy`` alone (no floors)."""
    problem = fluence_problem(patient, protocol, ring_step=1)
    return plan_automatically(D, problem.targets, problem.goals,
                              normal_tissue=problem.normal_tissue,
                              sparing_objectives=() if predicted_gy is None
                              else mimicking_objectives(patient, predicted_gy))


@pytest.fixture
def protocol(protocol_file):
    return read_protocol(protocol_file(PROTOCOL))


def test_mimicking_objectives_cover_organs_and_rest_outside_targets(line_patient):
    patient, _ = line_patient(LINE, LINE_RX)
    predicted = np.linspace(0, 50, 101).reshape(patient.grid.shape)
    objectives = mimicking_objectives(patient, predicted)
    # Voxels within MIMIC_MARGIN_MM = 5 mm of the target (35-65 mm: 1 mm voxels) are left to the
    # target's objectives: the cord keeps 66-75, the parotid 20-34.
    assert MIMIC_MARGIN_MM == 5.0
    assert [o.indices.tolist() for o in objectives[:2]] == [list(range(66, 76)),
                                                             list(range(20, 35))]
    rest = objectives[2].indices.tolist()  # body outside targets and organs, every 2nd voxel
    assert rest == [i for i in range(5, 96) if i % 2 == 0 and not (35 <= i <= 65)
                    and not (62 <= i <= 75) and not (20 <= i <= 35)]
    assert len(objectives) == 3
    for o in objectives:
        assert (o.under, o.over, o.weight) == (0.0, 1.0, MIMIC_WEIGHT) and MIMIC_WEIGHT == 10.0
        np.testing.assert_array_equal(o.reference_gy, predicted.ravel()[o.indices])
        # at or below the prediction the objective is 0: it never asks for more dose
        assert o.value(predicted.ravel()) == 0.0 and o.value(0.5 * predicted.ravel()) == 0.0


def test_mimicking_acts_only_in_the_sparing_step(protocol, line_patient):
    """A 'prediction' of 80 % of the unseeded plan's dose outside the target: the steps up to the
    sparing are the unseeded ones, iteration for iteration; the mimicking is tried in the
    sparing step, and the seeded plan meets every goal (the protocol's and the three implicit
    ones outside the PTV)."""
    patient, D = line_patient(LINE, LINE_RX)
    unseeded = _plan(patient, D, protocol)
    assert all(g.met for g in unseeded.goals)
    assert len(unseeded.goals) == 6
    seeded = _plan(patient, D, protocol, (0.8 * D @ unseeded.x).reshape(patient.grid.shape))

    def before_sparing(result):
        return [(s.step, s.iterations, s.goals_met) for s in result.steps
                if not s.step.startswith("sparing")]

    assert before_sparing(seeded) == before_sparing(unseeded)
    assert any(s.step.startswith("sparing") and "with sparing objectives" in s.step
               for s in seeded.steps)
    assert all(g.met for g in seeded.goals), seeded.goals


def test_achievable_dose_sets_the_first_sparing_floor(protocol, line_patient):
    """optimise_patient's achievable dose bounds the first sparing push at each organ goal's
    value on it: a dose of 28 Gy in the cord and 24 Gy in the parotid (their Dmean goals, 30 and
    26 Gy) gives the plan of those two floors, and not the plan without them."""
    patient, D = line_patient(LINE, LINE_RX)
    achievable = np.zeros(patient.grid.shape)
    achievable[patient.structure("SpinalCord").mask] = 28.0
    achievable[patient.structure("Parotid_L").mask] = 24.0
    problem = fluence_problem(patient, protocol)
    assert [g.label for g in problem.goals] == [
        "PTV70 D95% >= 100 %", "SpinalCord Dmean <= 30 Gy", "LeftParotid Dmean <= 26 Gy",
        "Outside PTVs V110% <= 1 cc", "Outside PTVs Dmax <= 115 %",
        "Outside PTVs Dmean as low as possible"]

    def direct(floor):
        return plan_automatically(D, problem.targets, problem.goals,
                                  normal_tissue=problem.normal_tissue, sparing_floor=floor).x

    # The implicit goals' floors on the achievable dose: nothing above 77 Gy; the maximum over
    # the hot-spot rows (every 2nd voxel 2-20 mm from the target: 20-38 and 62-80 mm) is the
    # cord's 28 Gy; the mean over every 2nd body voxel outside the target (5-95 mm less 40-60).
    x = np.arange(101)
    outside = (x % 2 == 0) & (x >= 5) & (x <= 95) & ((x < 40) | (x > 60))
    mean = achievable.ravel()[outside].mean()
    seeded = optimise_patient(patient, D, protocol, achievable_dose_gy=achievable).result
    np.testing.assert_array_equal(seeded.x, direct([None, 28.0, 24.0, 0.0, 28.0, mean]))
    assert not np.array_equal(seeded.x, direct(None))
    assert all(g.met for g in seeded.goals)


@pytest.mark.parametrize("poor", ["zero", "organs_at_70"])
def test_poor_prediction_keeps_hard_goals(protocol, poor, line_patient):
    """A prediction of 0 Gy everywhere (the mimicking asks for no dose anywhere outside the
    target: a step with it that costs a goal is kept only as far as it loses none, and its
    weight halves) or
    of 70 Gy in the organs (mimicking inactive below it) cannot cost a hard goal, nor can all
    the seed gives the optimiser (the floors too, seed_arguments)."""
    patient, D = line_patient(LINE, LINE_RX)
    predicted = np.zeros(patient.grid.shape)
    if poor == "organs_at_70":
        predicted[patient.structure("SpinalCord").mask | patient.structure("Parotid_L").mask] = 70
    seeded = _plan(patient, D, protocol, predicted)
    assert all(g.met for g in seeded.goals if g.hard), seeded.goals
    if poor == "zero":
        factors = [s.step.rsplit(" x", 1)[1] for s in seeded.steps
                   if "with sparing objectives" in s.step and "(repair)" not in s.step]
        assert factors[:2] == ["1", "0.5"]  # the first step lost a goal: the weight halved
    arguments = seed_arguments(patient, D, Seed(predicted, "seeded"))
    assert set(arguments) == {"achievable_dose_gy", "sparing_objectives"}
    full = optimise_patient(patient, D, protocol, **arguments).result
    assert all(g.met for g in full.goals if g.hard), full.goals


def test_outside_the_model_runs_unseeded_and_says_why(tmp_path: Path, line_patient):
    phantom = cshape_phantom()
    D = scipy.sparse.csr_matrix((phantom.grid.size, 3))
    seed = predict_seed(phantom, tmp_path / "model.pt")
    assert not seed.seeded and seed.dose_gy is None and seed_arguments(phantom, D, seed) == {}
    assert seed.note.startswith("unseeded: not head and neck")
    patient, D = line_patient(LINE, LINE_RX)
    seed = predict_seed(patient, tmp_path / "missing.pt", device="cpu")
    assert not seed.seeded and "missing.pt: no model weights" in seed.note


def test_model_seeds_a_head_and_neck_patient(tmp_path: Path, line_patient):
    """With weights available (an untrained tiny network here) the patient is predicted and
    seeded; the note names the organs the network recognised."""
    torch.manual_seed(0)
    path = save_model(DoseUNet(len(CHANNELS), 4, 3), tmp_path / "tiny.pt", {"epochs": 0})
    patient, D = line_patient(LINE, LINE_RX)
    seed = predict_seed(patient, path, device="cpu")
    assert seed.seeded and seed.note.startswith("seeded") and seed.dose_gy.shape == patient.grid.shape
    assert "LeftParotid=Parotid_L" in seed.note and "SpinalCord=SpinalCord" in seed.note
    with pytest.raises(ValueError, match="Dij has 5 rows"):
        seed_arguments(patient, D[:5], seed)
