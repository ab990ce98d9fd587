"""The OpenKBP challenge's scores: dose score and DVH score.

Definitions (Babier et al., Med Phys 48:5549, 2021, and the challenge's evaluation code,
``ababier/open-kbp`` ``provided_code/dose_evaluation_class.py``, re-implemented here):

- dose score of a patient: ``sum(|reference - prediction|) / count(possible_dose_mask)`` over the
  whole grid, the prediction having been set to 0 outside the possible-dose mask (the challenge's
  pipeline masked predictions before writing them); the overall dose score is the mean over
  patients.
- DVH metrics on the ROIs present: organs D0.1cc and Dmean, targets D99, D95 and D1, each as
  ``np.percentile`` (linear interpolation) of the ROI's voxel doses. D0.1cc is the percentile
  ``100 - 100 * n / n_roi`` with ``n = max(1, round(100 mm^3 / voxel volume))`` voxels (numpy's
  round: half to even).
- DVH score: mean absolute difference over all (patient, ROI, metric) present, pooled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

OAR_METRICS = ("D0.1cc", "Dmean")
TARGET_METRICS = ("D99", "D95", "D1")
TENTH_CC_MM3 = 100.0


def _masked_prediction(predicted_gy: np.ndarray, possible_dose_mask: np.ndarray) -> np.ndarray:
    return np.where(possible_dose_mask, predicted_gy, 0.0)


def dose_score(reference_gy: np.ndarray, predicted_gy: np.ndarray,
               possible_dose_mask: np.ndarray) -> float:
    """Mean absolute dose error (Gy) of one patient over its possible-dose mask.

    Parameters
    ----------
    reference_gy, predicted_gy : (nz, ny, nx) float arrays, Gy
    possible_dose_mask : (nz, ny, nx) bool array
        The prediction counts only inside it; the reference counts everywhere (it is 0 outside in
        OpenKBP data).
    """
    masked = _masked_prediction(predicted_gy, possible_dose_mask)
    return float(np.abs(np.asarray(reference_gy, np.float64) - masked).sum()
                 / np.count_nonzero(possible_dose_mask))


def dvh_metrics(dose_gy: np.ndarray, rois: Mapping[str, np.ndarray], targets: Iterable[str],
                voxel_volume_mm3: float) -> dict[tuple[str, str], float]:
    """The challenge's DVH metrics of one dose.

    Parameters
    ----------
    dose_gy : (nz, ny, nx) float array, Gy
    rois : mapping of ROI name to (nz, ny, nx) bool mask
        Empty masks are skipped (the ROI is absent).
    targets : names in ``rois`` that are targets (D99, D95, D1); the others are organs
        (D0.1cc, Dmean).
    voxel_volume_mm3 : float
        Volume of one voxel, mm^3.

    Returns
    -------
    dict mapping ``(metric, roi)`` to Gy
    """
    targets = set(targets)
    tenth_cc_voxels = max(1.0, float(np.round(TENTH_CC_MM3 / voxel_volume_mm3)))
    out: dict[tuple[str, str], float] = {}
    for name, mask in rois.items():
        values = np.asarray(dose_gy)[mask].astype(np.float64)
        if values.size == 0:
            continue
        if name in targets:
            for metric, q in zip(TARGET_METRICS, (1.0, 5.0, 99.0)):
                out[(metric, name)] = float(np.percentile(values, q))
        else:
            # clipped at 0 only for ROIs smaller than 0.1 cc, where the challenge's code would fail
            q = max(0.0, 100.0 - tenth_cc_voxels / values.size * 100.0)
            out[("D0.1cc", name)] = float(np.percentile(values, q))
            out[("Dmean", name)] = float(values.mean())
    return out


@dataclass(frozen=True)
class PatientScores:
    """Scores of one predicted dose against its reference.

    ``dvh_errors_gy`` maps ``(metric, roi)`` to the absolute difference, Gy; ``dvh_score_gy`` is
    their mean (NaN where no ROI is present).
    """

    name: str
    dose_score_gy: float
    dvh_score_gy: float
    dvh_errors_gy: dict[tuple[str, str], float] = field(repr=False)


def score_patient(name: str, reference_gy: np.ndarray, predicted_gy: np.ndarray,
                  possible_dose_mask: np.ndarray, rois: Mapping[str, np.ndarray],
                  targets: Iterable[str], voxel_volume_mm3: float) -> PatientScores:
    """Dose score and DVH errors of one patient (the prediction masked as in :func:`dose_score`)."""
    targets = tuple(targets)
    masked = _masked_prediction(predicted_gy, possible_dose_mask)
    reference = dvh_metrics(reference_gy, rois, targets, voxel_volume_mm3)
    predicted = dvh_metrics(masked, rois, targets, voxel_volume_mm3)
    errors = {key: abs(predicted[key] - reference[key]) for key in reference}
    dvh = float(np.mean(list(errors.values()))) if errors else float("nan")
    return PatientScores(name, dose_score(reference_gy, predicted_gy, possible_dose_mask), dvh,
                         errors)


def overall_scores(patients: Iterable[PatientScores]) -> tuple[float, float]:
    """``(dose score, DVH score)`` in Gy of a set of patients, as the challenge pools them."""
    patients = list(patients)
    if not patients:
        raise ValueError("no patients to score")
    dose = float(np.mean([p.dose_score_gy for p in patients]))
    errors = [e for p in patients for e in p.dvh_errors_gy.values()]
    return dose, float(np.mean(errors)) if errors else float("nan")
