"""``planner review RTPLAN RTDOSE RTSTRUCT CT``: the review report of a plan from any system."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dose.grid import Grid
from planner.cli._warnings import warnings_to_stderr
from planner.errors import InputError
from planner.io._atomic import check_writable
from planner.io.dicom_patient import read_dicom_patient
from planner.io.rtdose import read_rt_dose
from planner.io.rtplan import read_rt_plan
from planner.patient import Patient
from planner.protocol import read_protocol
from planner.review.report import REPORT_FILE, ReviewPlan, aperture_fluences, write_report


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "review", help="review report (DVH, dose on the CT, goals, beams) of any RT Plan",
        description="Write a self-contained HTML review report of a plan made by any system: "
                    "DVHs with the protocol's goals, dose colour-wash and isodoses on the CT, the "
                    "goal table (unmet goals in red with their margin), beams, fluences and "
                    "segments. The dose is interpolated onto the CT grid. Where the "
                    "head-and-neck dose-prediction network applies (prescriptions from "
                    "--protocol), the plan is set beside the predicted dose, organ by organ.")
    parser.add_argument("rtplan", metavar="RTPLAN", help="RT Plan file (static beams with MLC)")
    parser.add_argument("rtdose", metavar="RTDOSE", help="RT Dose file of the plan (Gy)")
    parser.add_argument("rtstruct", metavar="RTSTRUCT", help="RT Structure Set file")
    parser.add_argument("ct", metavar="CT", help="folder holding the CT series")
    parser.add_argument("--protocol", metavar="PROTOCOL",
                        help="protocol TOML file or bundled name (e.g. head_and_neck); its goals "
                             "are evaluated")
    parser.add_argument("--out", metavar="DIR", default="review",
                        help="report folder (default %(default)s)")
    parser.add_argument("--no-predict", action="store_true",
                        help="do not predict the dose (the report says so)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the dose-prediction network runs (default: CUDA when torch "
                             "finds a GPU)")
    parser.add_argument("--force", action="store_true", help="replace an existing report folder")
    parser.set_defaults(run=run)


#: CT numbers of the body where no external contour is given (as planner.predict.infer).


def predict_for_review(patient: Patient, dose_grid: Grid, device: str
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
        hint = (" (prescriptions come from --protocol)" if not patient.prescriptions else "")
        return None, f"not predicted: {reason}{hint}"
    torch_dev = torch_device(device)  # InputError for --device cuda without a GPU
    try:
        model = load_model(None, torch_dev)
    except InputError as error:
        return None, f"not predicted: {error}"
    prediction = predict_dose(patient, model, dose_grid)
    organs = ", ".join(f"{k}={v}" for k, v in prediction.organs.items())
    return prediction.dose_gy, (f"predicted by the head-and-neck network {DEFAULT_MODEL.name} "
                                f"(OpenKBP) on {torch_dev.type}; organs recognised: {organs}")


def run(args: argparse.Namespace) -> int:
    check_writable(Path(args.out), args.force)  # before seconds of reading and predicting
    protocol = read_protocol(args.protocol) if args.protocol else None
    plan = read_rt_plan(args.rtplan)
    dose, dose_grid = read_rt_dose(args.rtdose)
    with warnings_to_stderr():
        patient = read_dicom_patient(args.ct, structure_set=args.rtstruct)
    frame = patient.dicom.frame_of_reference_uid if patient.dicom else ""
    if plan.frame_of_reference_uid and frame and plan.frame_of_reference_uid != frame:
        raise InputError(f"{args.rtplan}: frame of reference {plan.frame_of_reference_uid} "
                         f"differs from {frame} of the CT in {args.ct}")
    review_plan = ReviewPlan(
        label=plan.label or Path(args.rtplan).name, beams=plan.beams,
        leaf_boundaries_mm=plan.leaf_boundaries_mm,
        fluences=aperture_fluences(plan.beams, plan.leaf_boundaries_mm),
        fractions=plan.fractions,
        normalisation="as exported by the planning system (the RT Dose is reviewed as given)",
        source=f"{args.rtplan}, {args.rtdose}")
    if args.no_predict:
        predicted, note = None, "not predicted (--no-predict)"
    else:
        from planner.predict.seed import prediction_patient  # torch: only when predicting

        predicted, note = predict_for_review(prediction_patient(patient, protocol), dose_grid,
                                             args.device)
    review = write_report(args.out, patient, dose, dose_grid, protocol=protocol,
                          plan=review_plan, predicted_dose_gy=predicted, prediction_note=note,
                          overwrite=args.force)
    for conflict in review.conflicts:
        print(f"impossible protocol: {conflict.explanation}")
    if protocol is not None:
        unmet = review.unmet_goals
        print(f"{len(review.goals) - len(unmet)} of {len(review.goals)} goals met")
        for g in unmet:
            print(f"  NOT MET  {g.goal.label}: {g.value:.2f} {g.unit} (margin {g.margin:+.2f} "
                  f"{g.unit})")
    print(f"dose prediction: {note}")
    for r in review.worse_than_predicted:
        print(f"  could be better: {r.structure} mean {r.planned_mean_gy:.1f} Gy, predicted "
              f"{r.predicted_mean_gy:.1f} Gy; D0.1cc {r.planned_d0_1cc_gy:.1f} Gy, predicted "
              f"{r.predicted_d0_1cc_gy:.1f} Gy")
    print(f"wrote {Path(args.out) / REPORT_FILE}")
    return 0
