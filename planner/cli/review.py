"""``planner review RTPLAN RTDOSE RTSTRUCT CT --out DIR``: the review report of a plan from any
system."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from planner.cli._output import add_json_option, add_out_option, check_outputs, write_json
from planner.review import Review
from planner.review.external import review_plan
from planner.review.goals import goal_rows_json
from planner.review.report import REPORT_FILE


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
    add_out_option(parser, "report.html")
    add_json_option(parser)
    parser.add_argument("--no-predict", action="store_true",
                        help="do not predict the dose (the report says so)")
    parser.add_argument("--check", action="store_true",
                        help="run the independent dose check as planner check does and show "
                             "its result in the report")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the dose-prediction network and the check run (default: "
                             "CUDA where there is a GPU)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_outputs(args)  # before seconds of reading and predicting
    review = review_plan(args.rtplan, args.rtdose, args.rtstruct, args.ct, args.out,
                         protocol=args.protocol, predict=not args.no_predict,
                         check=args.check, device=args.device, overwrite=args.force)
    for conflict in review.conflicts:
        print(f"impossible protocol: {conflict.explanation}")
    if args.protocol is not None:
        unmet = review.unmet_goals
        print(f"{len(review.goals) - len(unmet)} of {len(review.goals)} goals met")
        for g in unmet:
            print(f"  NOT MET  {g.goal.label}: {g.value:.2f} {g.unit} (margin {g.margin:+.2f} "
                  f"{g.unit})")
    print(f"dose prediction: {review.prediction_note}")
    for r in review.worse_than_predicted:
        print(f"  could be better: {r.structure} mean {r.planned_mean_gy:.1f} Gy, predicted "
              f"{r.predicted_mean_gy:.1f} Gy; D0.1cc {r.planned_d0_1cc_gy:.1f} Gy, predicted "
              f"{r.predicted_d0_1cc_gy:.1f} Gy")
    print(f"wrote {args.out / REPORT_FILE}")
    write_json(args, results_json(review))
    return 0


def results_json(review: Review) -> dict[str, Any]:
    """What ``planner review`` prints, as plain data for JSON."""
    return {"report": str(review.folder / REPORT_FILE), "goals": goal_rows_json(review.goals),
            "conflicts": [c.explanation for c in review.conflicts],
            "prediction": review.prediction_note,
            "plan_against_prediction": [dataclasses.asdict(r) for r in review.prediction]}
