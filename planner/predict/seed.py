"""Shape the plan with a predicted dose (knowledge-based planning; issues 6 and 16).

``planner plan`` seeds by default wherever the network applies. The prediction enters the
sparing step of :func:`optim.autoplan.plan_automatically` twice (the keyword arguments of
:func:`planner.optimize.optimise_patient` that :func:`seed_arguments` returns):

- as **the floor of the first sparing push** (``achievable_dose_gy``): each organ goal's value on
  the predicted dose, the normal tissue's mean included. The unseeded first push aims every met
  organ goal 25 % below its value at once, which on most head-and-neck patients loses a goal and
  is kept only in part; aimed no lower than what the prediction says is achievable, it is more
  often kept whole (without the floors the seeded plans met fewer criteria: ``design_history.md``,
  "Seeding").
- as **dose-mimicking objectives** (``sparing_objectives``): one
  :class:`optim.objectives.DoseMimicking` per organ and one for the remaining normal tissue
  (every second voxel along each axis), on voxels more than ``MIMIC_MARGIN_MM`` outside the
  targets (where the predicted fall-off is smoother than a plan's), penalising only dose
  *above* the prediction (``under=0``), each weighing ``MIMIC_WEIGHT``: a tenth of the targets'
  prescription objectives, as much as a clinical goal's objective starts with, so that they move
  the dose outside the targets. They can only pull dose down outside the targets; the targets keep their own prescription objectives.
  A sparing step that loses a hard or organ goal met before is kept only as far as it loses
  none (a half or a quarter of it, or nothing) and their weight halves;
  a kept step doubles it again (up to ``MIMIC_WEIGHT``); below a tenth they are dropped. A
  target's soft goal (D95) may be traded: the deliverable plan's normalisation restores it as
  far as the hard goals allow.

Neither can buy an unsafe plan: the hard goals are reached before the sparing, and no part of a
sparing step that loses a goal is kept. A poor prediction costs at most a few optimisations
(failed steps with the mimicking and their repairs), a first step held back by pessimistic
floors, or a kept step that settles the soft goals still unmet differently.

Only from the sparing step, and without a warm start of the fluence: the way to the hard goals
is the unseeded one, iteration for iteration, because the mimicking in every step, or the
prediction as the starting fluence, reached the hard goals later or less reliably (measured:
``benchmarks/results/seeding_openkbp.md`` and ``design_history.md``, "Seeding"). The network
needs no Dij: :func:`predict_seed` can run while the Dij is computed (as
:func:`planner.plan.plan_patient` does).

Where the network does not apply (:func:`planner.predict.infer.unsupported_reason`) or no model is
available, :func:`predict_seed` returns a :class:`Seed` without a dose whose ``note`` says why,
and the optimiser runs unseeded.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

from dose._xp import array_module
from optim.objectives import DoseMimicking
from planner.errors import InputError
from planner.optimize import sample_lattice
from planner.patient import Patient, Prescription
from planner.predict.infer import (
    BODY_HU,
    dose_possible_mask,
    load_model,
    predict_dose,
    torch_device,
    unsupported_reason,
)
from planner.protocol import Protocol, map_structures

#: Weight of each mimicking objective: a clinical goal's first weight (``optim.autoplan.
#: GOAL_WEIGHT``), 10x below the targets' prescription objectives (module docstring).
MIMIC_WEIGHT = 10.0
SUBSAMPLE = 2
#: Voxels this close to a target are not mimicked (see :func:`mimicking_objectives`).
MIMIC_MARGIN_MM = 5.0


@dataclass(frozen=True)
class Seed:
    """A predicted dose to seed the optimiser with, or why there is none.

    dose_gy : (nz, ny, nx) float32 array on the patient grid, Gy; None when unseeded
    note : one line for the user: seeded, or unseeded and why
    """

    dose_gy: np.ndarray | None = field(repr=False)
    note: str

    @property
    def seeded(self) -> bool:
        return self.dose_gy is not None


def mimicking_objectives(patient: Patient, predicted_gy: np.ndarray, *, xp: Any = np,
                         weight: float = MIMIC_WEIGHT) -> tuple[DoseMimicking, ...]:
    """Over-dose-only mimicking of ``predicted_gy`` (patient grid, Gy) outside the targets and
    more than ``MIMIC_MARGIN_MM`` from them.

    One objective per organ (all its voxels outside targets) and one for the other voxels where
    dose is possible (subsampled); rows are flat C-order voxel indices of the patient grid, on
    ``xp``'s device.
    """
    flat = np.asarray(predicted_gy, dtype=np.float64).ravel()
    targets = np.zeros(patient.grid.shape, dtype=bool)
    for s in patient.targets():
        targets |= s.mask
    # The band next to the targets is left to their own objectives: the predicted fall-off there
    # is smoother than a plan's, and pulling the plan down to it costs coverage.
    if targets.any():
        targets |= scipy.ndimage.distance_transform_edt(
            ~targets, sampling=patient.grid.spacing_mm) <= MIMIC_MARGIN_MM
    organs = np.zeros(patient.grid.shape, dtype=bool)
    objectives = []
    for s in patient.structures:
        if s.kind != "organ":
            continue
        rows = np.flatnonzero((s.mask & ~targets).ravel())
        organs |= s.mask
        if rows.size:
            objectives.append(DoseMimicking(xp.asarray(rows), xp.asarray(flat[rows]), weight,
                                            under=0.0, over=1.0))
    rest = dose_possible_mask(patient) & ~targets & ~organs & sample_lattice(patient.grid.shape, SUBSAMPLE)
    rows = np.flatnonzero(rest.ravel())
    if rows.size:
        objectives.append(DoseMimicking(xp.asarray(rows), xp.asarray(flat[rows]), weight,
                                        under=0.0, over=1.0))
    return tuple(objectives)


def prediction_patient(patient: Patient, protocol: Protocol | None) -> Patient:
    """``patient`` as the dose prediction needs it.

    - The protocol's prescriptions, named as the patient's structures: a DICOM patient has none
      of its own, and the network needs its targets' doses. Without a protocol, unchanged.
    - Where there is no external contour, a body outline as the possible-dose mask: the voxels
      above -500 HU with the holes of each axial slice filled. The prediction is set to 0
      outside the mask, and without the filling that would be the airway and the oral cavity
      inside the targets and the larynx (``design_history.md``, "Seeding").
    """
    if protocol is not None:
        mapping = map_structures(protocol, [s.name for s in patient.structures]).mapping
        patient = dataclasses.replace(patient, prescriptions=tuple(
            Prescription(mapping[p.target], p.dose_gy, p.fractions)
            for p in protocol.prescriptions if p.target in mapping))
    if patient.body_mask() is None:
        body = np.stack([scipy.ndimage.binary_fill_holes(axial) for axial in patient.hu > BODY_HU])
        patient = dataclasses.replace(patient, possible_dose_mask=body)
    return patient


def seed_arguments(patient: Patient, D: Any, seed: Seed) -> dict[str, Any]:
    """What ``seed`` gives :func:`planner.optimize.optimise_patient`, as its keyword arguments
    (``achievable_dose_gy`` and ``sparing_objectives``, see the module docstring), for a Dij whose
    rows are ``patient``'s grid voxels (C order); empty when unseeded."""
    if D.shape[0] != patient.grid.size:
        raise ValueError(f"Dij has {D.shape[0]} rows, the patient grid {patient.grid.size} voxels")
    if seed.dose_gy is None:
        return {}
    return {"achievable_dose_gy": seed.dose_gy,
            "sparing_objectives": mimicking_objectives(patient, seed.dose_gy,
                                                       xp=array_module(D))}


def predict_seed(patient: Patient, model_path: Path | None = None, device: str = "auto") -> Seed:
    """Predict ``patient``'s dose for seeding, or say why not.

    Parameters
    ----------
    patient : Patient
        On the grid the Dij will have (the dose grid).
    model_path : Path, optional
        Network weights (default: those shipped in ``data/models``).
    device : {"auto", "cpu", "cuda"}
        Where the network runs.

    Returns
    -------
    Seed
        Without a dose, and with ``note`` starting ``"unseeded:"``, when the patient is outside
        what the network was trained on or no weights are available.
    """
    reason = unsupported_reason(patient)
    if reason is not None:
        return Seed(None, f"unseeded: {reason}")
    try:
        model = load_model(model_path, torch_device(device))
    except InputError as error:
        return Seed(None, f"unseeded: {error}")
    prediction = predict_dose(patient, model)
    organs = ", ".join(f"{k}={v}" for k, v in prediction.organs.items())
    return Seed(prediction.dose_gy, f"seeded: the dose prediction shapes the sparing "
                                    f"(organs recognised: {organs})")
