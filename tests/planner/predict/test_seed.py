"""Seeding: mimicking objectives and warm start from a prediction; a poor prediction stays safe;
patients outside the model's reach run unseeded and say why."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from optim.autoplan import plan_automatically
from planner.optimize import fluence_problem
from planner.patient import Prescription
from planner.phantoms import cshape_phantom
from planner.predict.data import CHANNELS
from planner.predict.infer import save_model
from planner.predict.model import DoseUNet
from planner.predict.seed import Seed, mimicking_objectives, seed_from_dose, seed_optimiser
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


def _plan(patient, D, protocol, seed: Seed | None = None):
    problem = fluence_problem(patient, protocol, ring_step=1)
    return plan_automatically(D, problem.targets, problem.goals,
                              normal_tissue=problem.normal_tissue,
                              extra_objectives=seed.objectives if seed else (),
                              x0=seed.x0 if seed else None)


@pytest.fixture
def protocol(protocol_file):
    return read_protocol(protocol_file(PROTOCOL))


def test_mimicking_objectives_cover_organs_and_rest_outside_targets(line_patient):
    patient, _ = line_patient(LINE, LINE_RX)
    predicted = np.linspace(0, 50, 101).reshape(patient.grid.shape)
    objectives = mimicking_objectives(patient, predicted)
    assert [o.indices.tolist() for o in objectives[:2]] == [list(range(62, 76)),
                                                             list(range(20, 36))]
    rest = objectives[2].indices.tolist()  # body outside targets and organs, every 2nd voxel
    assert rest == [i for i in range(5, 96) if i % 2 == 0 and not (40 <= i <= 60)
                    and not (62 <= i <= 75) and not (20 <= i <= 35)]
    for o in objectives:
        assert (o.under, o.over) == (0.0, 1.0)
        np.testing.assert_array_equal(o.reference_gy, predicted.ravel()[o.indices])
        # at or below the prediction the objective is 0: it never asks for more dose
        assert o.value(predicted.ravel()) == 0.0 and o.value(0.5 * predicted.ravel()) == 0.0


def test_good_prediction_seeds_a_plan_meeting_goals(protocol, line_patient):
    """The unseeded plan's own dose as the 'prediction': the warm start reproduces it closely and
    the seeded plan meets every goal too."""
    patient, D = line_patient(LINE, LINE_RX)
    unseeded = _plan(patient, D, protocol)
    assert all(g.met for g in unseeded.goals)
    predicted = (D @ unseeded.x).reshape(patient.grid.shape)
    seed = seed_from_dose(patient, D, predicted, "seeded")
    assert seed.seeded and seed.x0 is not None
    body = patient.structure("Body").mask.ravel()
    fitted = D @ seed.x0
    # the least-squares fit of the plan's own dose (50 L-BFGS-B iterations): within 2 Gy
    assert np.abs(fitted[body] - predicted.ravel()[body]).max() < 2.0
    seeded = _plan(patient, D, protocol, seed)
    assert all(g.met for g in seeded.goals), seeded.goals


@pytest.mark.parametrize("poor", ["zero", "organs_at_70"])
def test_poor_prediction_keeps_hard_goals(protocol, poor, line_patient):
    """A prediction of 0 Gy everywhere (the warm start falls back to the default, the mimicking
    asks for no dose anywhere outside the target) or of 70 Gy in the organs (mimicking inactive
    below it) cannot cost a hard goal."""
    patient, D = line_patient(LINE, LINE_RX)
    predicted = np.zeros(patient.grid.shape)
    if poor == "organs_at_70":
        predicted[patient.structure("SpinalCord").mask | patient.structure("Parotid_L").mask] = 70
    seed = seed_from_dose(patient, D, predicted, "seeded")
    assert (seed.x0 is None) == (poor == "zero")
    seeded = _plan(patient, D, protocol, seed)
    assert all(g.met for g in seeded.goals if g.hard), seeded.goals
    if poor == "zero":  # the mimicking does act: less dose outside the target than unseeded
        outside = (patient.structure("Body").mask & ~patient.structure("PTV70").mask).ravel()
        unseeded = _plan(patient, D, protocol)
        assert (D @ seeded.x)[outside].mean() < (D @ unseeded.x)[outside].mean()


def test_outside_the_model_runs_unseeded_and_says_why(tmp_path: Path, line_patient):
    phantom = cshape_phantom()
    D = scipy.sparse.csr_matrix((phantom.grid.size, 3))
    seed = seed_optimiser(phantom, D, tmp_path / "model.pt")
    assert not seed.seeded and seed.x0 is None
    assert seed.note.startswith("unseeded: not head and neck")
    patient, D = line_patient(LINE, LINE_RX)
    seed = seed_optimiser(patient, D, tmp_path / "missing.pt", device="cpu")
    assert not seed.seeded and "missing.pt: no model weights" in seed.note


def test_model_seeds_a_head_and_neck_patient(tmp_path: Path, line_patient):
    """With weights available (an untrained tiny network here) the patient is predicted and
    seeded; the note names the organs the network recognised."""
    torch.manual_seed(0)
    path = save_model(DoseUNet(len(CHANNELS), 4, 3), tmp_path / "tiny.pt", {"epochs": 0})
    patient, D = line_patient(LINE, LINE_RX)
    seed = seed_optimiser(patient, D, path, device="cpu")
    assert seed.seeded and seed.note.startswith("seeded")
    assert "LeftParotid=Parotid_L" in seed.note and "SpinalCord=SpinalCord" in seed.note
    with pytest.raises(ValueError, match="Dij has 5 rows"):
        seed_from_dose(patient, D[:5], np.zeros(patient.grid.shape), "x")
