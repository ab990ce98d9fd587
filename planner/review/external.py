"""The review of a plan from any planning system, given as DICOM files (``planner review``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dose.grid import Grid
from planner.check import check_plan
from planner.errors import InputError
from planner.io._atomic import check_writable
from planner.io.dicom_patient import read_dicom_patient
from planner.io.rtdose import read_rt_dose
from planner.io.rtplan import read_rt_plan
from planner.patient import Patient
from planner.protocol import Protocol, read_protocol
from planner.review.report import Review, ReviewPlan, aperture_fluences, write_report


def review_plan(rtplan: str | Path, rtdose: str | Path, rtstruct: str | Path, ct: str | Path,
                out_dir: str | Path, *, protocol: Protocol | str | Path | None = None,
                predict: bool = True, check: bool = False, device: str = "auto",
                overwrite: bool = False) -> Review:
    """Write the review report of a step-and-shoot plan made by any system.

    The RT Dose is reviewed as given (interpolated onto the CT grid): DVHs with the protocol's
    goals, dose on the CT, beams, fluences and segments. Where the head-and-neck
    dose-prediction network applies (prescriptions from ``protocol``), the plan is set beside
    the predicted dose, organ by organ.

    Parameters
    ----------
    rtplan, rtdose, rtstruct : str or Path
        The RT Plan (static beams with MLC), its RT Dose (Gy) and the RT Structure Set.
    ct : str or Path
        The folder holding the CT series.
    out_dir : str or Path
        The report folder to create (``report.html`` inside), complete or not at all.
    protocol : Protocol, str or Path, optional
        Its goals are evaluated; a file or a bundled name such as ``"head_and_neck"``.
    predict : bool
        Predict the dose where the network applies (the report says why where it does not).
    check : bool
        Run the independent dose check (:func:`planner.check.check_plan`: the plan recomputed
        by planner's engine against its RT Dose) and show its result in the report.
    device : {"auto", "cpu", "cuda"}
        Where the network and the check run.
    overwrite : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    Review
        The numbers the report shows: goals, conflicts, statistics, plan against prediction.

    Raises
    ------
    InputError
        An unreadable or mismatched file (a plan on another frame of reference than the CT),
        or ``out_dir`` exists and ``overwrite`` is false.

    Examples
    --------
    >>> review = review_plan("RP.dcm", "RD.dcm", "RS.dcm", "ct/", "review",
    ...                      protocol="head_and_neck")  # doctest: +SKIP
    >>> [g.goal.label for g in review.unmet_goals]  # doctest: +SKIP
    """
    check_writable(Path(out_dir), overwrite)  # before seconds of reading and predicting
    if isinstance(protocol, (str, Path)):
        protocol = read_protocol(protocol)
    plan = read_rt_plan(rtplan)
    dose, dose_grid = read_rt_dose(rtdose)
    patient = read_dicom_patient(ct, structure_set=rtstruct)
    frame = patient.dicom.frame_of_reference_uid if patient.dicom else ""
    if plan.frame_of_reference_uid and frame and plan.frame_of_reference_uid != frame:
        raise InputError(f"{rtplan}: frame of reference {plan.frame_of_reference_uid} "
                         f"differs from {frame} of the CT in {ct}")
    shown = ReviewPlan(
        label=plan.label or Path(rtplan).name, beams=plan.beams,
        leaf_boundaries_mm=plan.leaf_boundaries_mm,
        fluences=aperture_fluences(plan.beams, plan.leaf_boundaries_mm),
        fractions=plan.fractions,
        normalisation="as exported by the planning system (the RT Dose is reviewed as given)",
        source=f"{rtplan}, {rtdose}", sop_instance_uid=plan.sop_instance_uid,
        patient_id=plan.patient_id)
    if predict:
        from planner.predict.seed import prediction_patient  # torch: only when predicting

        predicted, note = predicted_dose(prediction_patient(patient, protocol), dose_grid, device)
    else:
        predicted, note = None, "not predicted (prediction turned off)"
    checked = (check_plan(rtplan, rtdose=rtdose, ct=ct, rtstruct=rtstruct, device=device)
               if check else None)
    return write_report(out_dir, patient, dose, dose_grid, protocol=protocol, plan=shown,
                        predicted_dose_gy=predicted, prediction_note=note, check=checked,
                        overwrite=overwrite)


def predicted_dose(patient: Patient, dose_grid: Grid, device: str
                   ) -> tuple[np.ndarray | None, str]:
    """The predicted dose of ``patient`` on ``dose_grid`` (Gy) and a note, or None and why not.

    The network predicts on its own 128^3 grid (:func:`planner.predict.infer.network_grid`,
    resampled from the CT) and the dose comes back on the RT Dose's grid, so the report samples
    plan and prediction alike.
    """
    # Imported here: torch takes seconds to import and only the prediction needs it.
    from planner.predict.infer import (
        DEFAULT_MODEL,
        load_model,
        predict_dose,
        torch_device,
        unsupported_reason,
    )

    reason = unsupported_reason(patient)
    if reason is not None:
        hint = " (prescriptions come from the protocol)" if not patient.prescriptions else ""
        return None, f"not predicted: {reason}{hint}"
    torch_dev = torch_device(device)  # InputError for device "cuda" without a GPU
    try:
        model = load_model(None, torch_dev)
    except InputError as error:
        return None, f"not predicted: {error}"
    prediction = predict_dose(patient, model, dose_grid)
    organs = ", ".join(f"{k}={v}" for k, v in prediction.organs.items())
    return prediction.dose_gy, (f"predicted by the head-and-neck network {DEFAULT_MODEL.name} "
                                f"(OpenKBP) on {torch_dev.type}; organs recognised: {organs}")
