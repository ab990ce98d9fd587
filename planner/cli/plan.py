"""``planner plan PATIENT --out DIR [--protocol NAME|FILE] [--device auto|cpu|cuda]``.

The whole plan (:func:`planner.plan.plan_patient`): one line per step with its time on
stderr (and in ``plan.log``), the optimiser's iterations on one overwritten line when stderr is
a terminal, and the summary (goals before and after sequencing, segments, MU, time per step) on
stdout (as JSON too with ``--json FILE``: the content of ``DIR/summary.json``). A protocol that
conflicts with the structures stops the run with exit code 1 and the overlap volumes, unless
``--allow-conflicts``; unmet goals do not change the exit code (the plan is written and they are
reported as NOT MET).
"""

from __future__ import annotations

import argparse
import sys

from planner.cli._numbers import positive, whole
from planner.cli._output import add_json_option, add_out_option, check_outputs, write_json
from planner.cli.protocol import (
    add_protocol_options,
    choose_protocol,
    command_line_prescriptions,
)
from planner.io import load_patient
from planner.plan import plan_patient, summary_text


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="plan a patient: beams, Dij, optimisation, sequencing, DICOM and report",
        description="From a patient and a protocol to a deliverable step-and-shoot IMRT plan: "
                    "equispaced coplanar beams at the targets' centre, beamlet doses, learned "
                    "seed where it applies, fluence optimisation, leaf sequencing, segment "
                    "weights on the segments' own dose, then RT Plan + RT Dose (+ CT and "
                    "RTSTRUCT when the patient did not come from DICOM) in OUT/dicom, the review "
                    "report in OUT/report, summary.json and plan.log in OUT.")
    add_protocol_options(parser)
    add_out_option(parser, "dicom/, report/, summary.json and plan.log")
    add_json_option(parser)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where the dose engine and optimiser run (default: CUDA when cupy "
                             "finds a GPU)")
    parser.add_argument("--beams", type=whole(1), default=9, metavar="N",
                        help="number of equispaced coplanar beams (default 9)")
    parser.add_argument("--beamlet-mm", type=positive, default=5.0, metavar="MM",
                        help="beamlet size at the isocentre (default 5)")
    parser.add_argument("--dose-grid-mm", type=positive, default=3.0, metavar="MM",
                        help="dose grid spacing (default 3)")
    parser.add_argument("--max-segments", type=whole(1), default=15, metavar="N",
                        help="most MLC segments per beam (default 15)")
    parser.add_argument("--time-limit", type=positive, default=None, metavar="S",
                        help="wall-time budget of the fluence optimisation, seconds")
    parser.add_argument("--seed", action=argparse.BooleanOptionalAction, default=True,
                        help="shape the plan with the dose prediction where the network applies "
                             "(head and neck; default): the predicted dose bounds the organs' "
                             "sparing and pulls the dose outside the targets down towards it; "
                             "--no-seed plans without it")
    parser.add_argument("--allow-conflicts", action="store_true",
                        help="plan even when a target overlaps an organ whose hard limit is "
                             "below its prescription (reported in the summary and report)")
    parser.set_defaults(run=run)


def _show(line: str, transient: bool) -> None:
    """Step lines on stderr; iteration lines only on a terminal, overwriting each other."""
    if transient:
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line[:119].ljust(119))
            sys.stderr.flush()
        return
    if sys.stderr.isatty():
        sys.stderr.write("\r" + " " * 119 + "\r")
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    check_outputs(args)  # before the import and minutes of planning
    out = args.out
    patient, protocol = args.patient, args.protocol
    prescriptions = command_line_prescriptions(args)
    if prescriptions:
        patient = load_patient(args.patient)
        protocol = choose_protocol(args, patient, prescriptions).protocol()
    result = plan_patient(patient, protocol, out_dir=out, device=args.device,
                          beam_count=args.beams, beamlet_mm=args.beamlet_mm,
                          dose_grid_mm=args.dose_grid_mm,
                          max_segments_per_beam=args.max_segments, time_limit_s=args.time_limit,
                          seed=args.seed, allow_conflicts=args.allow_conflicts, overwrite=args.force,
                          progress=_show)
    print(summary_text(result.summary, result.goals_fluence, result.goals_plan))
    print(f"wrote {out}/: dicom/ (RT Plan, RT Dose"
          f"{', CT, RTSTRUCT' if result.files.wrote_images else ''}), report/report.html, "
          f"summary.json, plan.log")
    write_json(args, result.summary)
    return 0
