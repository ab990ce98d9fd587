"""``planner dvh RTDOSE RTSTRUCT``: DVH statistics of every structure, or the curves as CSV."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from planner.cli._output import add_force_option, add_json_option, check_outputs, write_json
from planner.cli._warnings import warnings_to_stderr
from planner.errors import InputError
from planner.io._atomic import check_writable
from planner.review.dvh import (
    DEFAULT_BIN_GY,
    format_statistics_table,
    structure_dvhs,
    write_dvh_csv,
)
from planner.review.inputs import read_dose_and_structures


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dvh", help="DVH table (or CSV curves) of an RT Dose and an RT Structure Set",
        description="Print volume, Dmin, Dmean, Dmax, D95, D2 and D0.1cc of every structure, or "
                    "write the cumulative DVH curves as CSV. The structures are rasterised on the "
                    "dose grid's rows and columns at the contour planes (a voxel counts when its "
                    "centre is inside), the dose interpolated along z where needed.")
    parser.add_argument("rtdose", metavar="RTDOSE", help="RT Dose file (Gy)")
    parser.add_argument("rtstruct", metavar="RTSTRUCT", help="RT Structure Set file")
    parser.add_argument("--csv", type=Path, metavar="FILE",
                        help="write the cumulative DVH curves (cc and %% per structure) here")
    parser.add_argument("--bin-gy", type=float, default=DEFAULT_BIN_GY, metavar="GY",
                        help="dose step of the CSV curves (default %(default)s Gy)")
    add_json_option(parser)
    add_force_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not 0.001 <= args.bin_gy <= 1.0:
        raise InputError(f"--bin-gy: {args.bin_gy:g} Gy is outside 0.001-1 Gy")
    check_outputs(args)
    if args.csv:
        check_writable(args.csv, args.force)
    with warnings_to_stderr():
        dose, grid, structures = read_dose_and_structures(args.rtdose, args.rtstruct)
    dvhs, stats = structure_dvhs(dose, grid, structures, bin_width_gy=args.bin_gy)
    if args.csv:
        path = write_dvh_csv(args.csv, dvhs, overwrite=args.force)
        print(f"wrote {path}: cumulative DVHs of {len(dvhs)} structures, {args.bin_gy:g} Gy bins")
    else:
        print(format_statistics_table(stats))
    write_json(args, [dataclasses.asdict(s) for s in stats])
    return 0
