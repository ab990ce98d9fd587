"""Score dose predictions patient by patient, leaving out (with the reason) the patients that
cannot be scored instead of stopping at them.

:func:`evaluate_patient` turns one OpenKBP patient folder into one :class:`Evaluation` (a plain
function of plain arguments, so a cohort can be mapped over processes or workers);
:func:`summarise` pools the scored ones as the challenge does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from planner.errors import InputError
from planner.io.openkbp import read_openkbp_case, read_openkbp_dose
from planner.predict.metrics import PatientScores, overall_scores, score_patient

if TYPE_CHECKING:  # torch is imported only when the network predicts
    from planner.predict.model import DoseModel


@dataclass(frozen=True)
class Evaluation:
    """One patient's row: its scores, or why it has none.

    name : the patient folder's name
    scores : PatientScores, None when the patient could not be scored
    reason : one line (naming the file or what the model lacks); empty when scored
    """

    name: str
    scores: PatientScores | None
    reason: str = ""


@dataclass(frozen=True)
class Summary:
    """The challenge's overall scores over the ``scored`` of ``patients`` patients (NaN when
    none was scored); ``left_out`` maps each other patient to its reason."""

    dose_score_gy: float
    dvh_score_gy: float
    scored: int
    patients: int
    left_out: dict[str, str]


def prediction_file(folder: Path, name: str) -> Path:
    """Patient ``name``'s predicted dose in a submission folder: ``name.csv[.gz]`` or
    ``name/dose.csv[.gz]``."""
    for candidate in (folder / f"{name}.csv", folder / f"{name}.csv.gz",
                      folder / name / "dose.csv", folder / name / "dose.csv.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"{folder / (name + '.csv')}: missing (no prediction for {name})")


def evaluate_patient(folder: Path, *, model: DoseModel | None = None,
                     predictions: Path | None = None) -> Evaluation:
    """Score one OpenKBP patient folder (with its reference ``dose.csv``).

    Parameters
    ----------
    folder : Path
        The patient folder.
    model : DoseUNet or DoseEnsemble, optional
        Predicts the dose (:func:`planner.predict.infer.predict_dose`) ...
    predictions : Path, optional
        ... or the dose is read from this submission folder (:func:`prediction_file`).
        Exactly one of the two.

    Returns
    -------
    Evaluation
        Without scores, and with the reason, where a file is missing or unreadable or the
        network does not apply to the patient (:func:`planner.predict.infer.unsupported_reason`).
    """
    if (model is None) == (predictions is None):
        raise ValueError("give exactly one of model and predictions")
    folder = Path(folder)
    try:
        patient, reference = read_openkbp_case(
            folder, needed_for="no reference dose to score against")
        if model is None:
            predicted = read_openkbp_dose(prediction_file(predictions, folder.name))
        else:
            from planner.predict.infer import predict_dose

            predicted = predict_dose(patient, model).dose_gy
    except InputError as error:
        return Evaluation(folder.name, None, str(error))
    scores = score_patient(folder.name, reference, predicted, patient.possible_dose_mask,
                           {s.name: s.mask for s in patient.structures},
                           [s.name for s in patient.targets()],
                           patient.grid.voxel_volume_cc * 1e3)
    return Evaluation(folder.name, scores)


def summarise(rows: Sequence[Evaluation]) -> Summary:
    """Pool the scored rows (:func:`planner.predict.metrics.overall_scores`)."""
    scored = [r.scores for r in rows if r.scores is not None]
    dose, dvh = overall_scores(scored) if scored else (float("nan"), float("nan"))
    return Summary(dose, dvh, len(scored), len(rows),
                   {r.name: r.reason for r in rows if r.scores is None})
