"""Seed the fluence optimiser with a predicted dose (knowledge-based planning, issue 6 point 5).

The prediction enters in two ways (DESIGN.md, "Knowledge-based seeding"):

- **dose-mimicking objectives**, added to every step of :func:`optim.autoplan.plan_automatically`:
  one :class:`optim.objectives.DoseMimicking` per organ and one for the remaining normal tissue
  (every second voxel along each axis), on voxels outside the targets, penalising only dose
  *above* the prediction (``under=0``). They can only pull dose down outside the targets, never
  raise it, and the targets keep their own prescription objectives; the clinical hard goals are
  enforced on top by the optimiser's adaptive weights, so a poor prediction cannot buy an unsafe
  plan (at worst it costs sparing or time).
- **a warm start**: beamlet weights fitted by least squares (``x >= 0``) of ``D x`` to the
  prediction over the voxels where dose is possible (every second voxel along each axis).

Where the network does not apply (:func:`planner.predict.infer.unsupported_reason`) or no model is
available, :func:`seed_optimiser` returns an empty :class:`Seed` whose ``note`` says why, and the
optimiser runs unseeded.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optim.fluence import optimise_fluence
from optim.objectives import DoseMimicking
from planner.errors import InputError
from planner.patient import Patient
from planner.predict.infer import (
    dose_possible_mask,
    load_model,
    predict_dose,
    torch_device,
    unsupported_reason,
)

#: Weight of each mimicking objective: that of the optimiser's dose fall-off ring
#: (``optim.autoplan.FALLOFF_WEIGHT``), 100x below the targets' prescription objectives.
MIMIC_WEIGHT = 1.0
#: L-BFGS-B iterations of the warm-start fit (a start, not a plan).
WARM_START_ITERATIONS = 50
SUBSAMPLE = 2


@dataclass(frozen=True)
class Seed:
    """What a prediction adds to the fluence optimisation.

    objectives : DoseMimicking objectives over rows of ``D`` (empty when unseeded)
    x0 : (n_beamlets,) float64 array, or None (the optimiser's default start)
    note : one line for the user: seeded, or unseeded and why
    """

    objectives: tuple[DoseMimicking, ...] = field(repr=False)
    x0: np.ndarray | None = field(repr=False)
    note: str

    @property
    def seeded(self) -> bool:
        return bool(self.objectives)


def _array_module_of(D: Any) -> Any:
    """cupy for a cupyx sparse matrix (the GPU), else numpy."""
    cupy = sys.modules.get("cupy")
    return cupy if cupy is not None and type(D).__module__.startswith("cupyx") else np


def _subsample(shape: tuple[int, ...]) -> np.ndarray:
    keep = np.zeros(shape, dtype=bool)
    keep[::SUBSAMPLE, ::SUBSAMPLE, ::SUBSAMPLE] = True
    return keep


def mimicking_objectives(patient: Patient, predicted_gy: np.ndarray, *, xp: Any = np,
                         weight: float = MIMIC_WEIGHT) -> tuple[DoseMimicking, ...]:
    """Over-dose-only mimicking of ``predicted_gy`` (patient grid, Gy) outside the targets.

    One objective per organ (all its voxels outside targets) and one for the other voxels where
    dose is possible (subsampled); rows are flat C-order voxel indices of the patient grid, on
    ``xp``'s device.
    """
    flat = np.asarray(predicted_gy, dtype=np.float64).ravel()
    targets = np.zeros(patient.grid.shape, dtype=bool)
    for s in patient.targets():
        targets |= s.mask
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
    rest = dose_possible_mask(patient) & ~targets & ~organs & _subsample(patient.grid.shape)
    rows = np.flatnonzero(rest.ravel())
    if rows.size:
        objectives.append(DoseMimicking(xp.asarray(rows), xp.asarray(flat[rows]), weight,
                                        under=0.0, over=1.0))
    return tuple(objectives)


def warm_start(D: Any, patient: Patient, predicted_gy: np.ndarray,
               iterations: int = WARM_START_ITERATIONS) -> np.ndarray | None:
    """Beamlet weights ``x >= 0`` whose dose ``D x`` fits ``predicted_gy`` in least squares.

    Over every second voxel (along each axis) where dose is possible. Starts from uniform weights
    scaled to the prediction's mean there. None when the prediction is 0 everywhere there.

    Parameters
    ----------
    D : (n_voxels, n_beamlets) sparse matrix, Gy per unit weight (scipy or cupyx)
    patient : Patient
    predicted_gy : (nz, ny, nx) float array, Gy, on the patient grid
    iterations : int
    """
    xp = _array_module_of(D)
    rows = np.flatnonzero((dose_possible_mask(patient) & _subsample(patient.grid.shape)).ravel())
    reference = np.asarray(predicted_gy, dtype=np.float64).ravel()[rows]
    if rows.size == 0 or not reference.any():
        return None
    rows_xp = xp.asarray(rows)
    unit = D[rows_xp] @ xp.ones(D.shape[1], dtype=D.dtype)
    scale = float(reference.mean()) / max(float(unit.mean()), 1e-12)
    # D restricted to the fitted rows: the same fit, without carrying the other rows.
    fit = DoseMimicking(xp.arange(rows.size), xp.asarray(reference), 1.0)
    result = optimise_fluence(D[rows_xp], [fit], np.full(D.shape[1], scale),
                              max_iter=iterations)
    return np.asarray(result.x, dtype=np.float64)


def seed_from_dose(patient: Patient, D: Any, predicted_gy: np.ndarray, note: str) -> Seed:
    """The :class:`Seed` of a dose on the patient grid (rows of ``D`` = grid voxels, C order)."""
    if D.shape[0] != patient.grid.size:
        raise ValueError(f"Dij has {D.shape[0]} rows, the patient grid {patient.grid.size} voxels")
    xp = _array_module_of(D)
    return Seed(mimicking_objectives(patient, predicted_gy, xp=xp),
                warm_start(D, patient, predicted_gy), note)


def seed_optimiser(patient: Patient, D: Any, model_path: Path | None = None,
                   device: str = "auto") -> Seed:
    """Predict ``patient``'s dose and turn it into a :class:`Seed`, or say why not.

    Parameters
    ----------
    patient : Patient
    D : (n_voxels, n_beamlets) sparse matrix, Gy per unit weight; rows are the patient grid's
        voxels in C order.
    model_path : Path, optional
        Network weights (default: those shipped in ``data/models``).
    device : {"auto", "cpu", "cuda"}
        Where the network runs.

    Returns
    -------
    Seed
        Empty, with ``note`` starting ``"unseeded:"``, when the patient is outside what the
        network was trained on or no weights are available.
    """
    reason = unsupported_reason(patient)
    if reason is not None:
        return Seed((), None, f"unseeded: {reason}")
    try:
        model = load_model(model_path, torch_device(device))
    except InputError as error:
        return Seed((), None, f"unseeded: {error}")
    prediction = predict_dose(patient, model)
    organs = ", ".join(f"{k}={v}" for k, v in prediction.organs.items())
    return seed_from_dose(patient, D, prediction.dose_gy,
                          f"seeded by the dose prediction (organs recognised: {organs})")
