"""``planner check RTPLAN``: independent dose check of an RT Plan against its RT Dose."""

from __future__ import annotations

import argparse

from planner.check import (GAMMA_DOSE_PERCENT, GAMMA_DTA_MM, TG218_TOLERANCE, check_plan,
                           format_check, write_check_json)
from planner.cli._output import add_force_option, add_json_option, check_outputs
from planner.cli._warnings import warnings_to_stderr
from planner.errors import PlannerError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check", help="independent dose check: recompute an RT Plan, compare with its RT Dose",
        description="Recompute the dose of a 6 MV photon step-and-shoot RT Plan from its control "
                    "points on its CT and compare it with its RT Dose: gamma 3 % (global) / 2 mm "
                    "above 10 % of the maximum, and Dmean, D95, D2 and D0.1cc of every structure. "
                    "The check passes when at least 95 % of the points pass (AAPM TG-218). By "
                    "default the RT Dose referencing the plan, the RT Structure Set it references "
                    "and the CT of its frame of reference are looked for in the plan's folder, "
                    "then in its parent folder. Exit code 0: pass; 1: fail; 2: bad input.")
    parser.add_argument("rtplan", metavar="RTPLAN", help="RT Plan file")
    parser.add_argument("--rtdose", metavar="FILE", help="RT Dose file of the plan")
    parser.add_argument("--ct", metavar="DIR", help="folder holding the plan's CT series")
    parser.add_argument("--rtstruct", metavar="FILE", help="RT Structure Set file")
    add_json_option(parser)
    add_force_option(parser)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where to compute the dose and the gamma (default %(default)s)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_outputs(args)
    with warnings_to_stderr():
        result = check_plan(args.rtplan, rtdose=args.rtdose, ct=args.ct, rtstruct=args.rtstruct,
                            device=args.device)
    print(format_check(result))
    if args.json:
        print(f"wrote {write_check_json(args.json, result, overwrite=args.force)}")
    if not result.passed:
        raise PlannerError(f"check failed: {args.rtplan}: {100 * result.pass_rate:.1f} % of the "
                           f"points pass gamma {GAMMA_DOSE_PERCENT:g} %/{GAMMA_DTA_MM:g} mm, below "
                           f"the TG-218 tolerance of {100 * TG218_TOLERANCE:g} %")
    return 0
