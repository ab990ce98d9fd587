"""``planner convert INPUT --out DIR [--force]``: write any supported input as DICOM CT and
RTSTRUCT."""

from __future__ import annotations

import argparse

from planner.cli._output import add_out_option, check_outputs
from planner.io import load_patient


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="write a patient as DICOM CT + RTSTRUCT",
        description="Read a patient (example:NAME, matRad .mat, OpenKBP or DICOM folder) and "
                    "write it as a DICOM CT series and RT Structure Set into DIR. DIR "
                    "appears complete or not at all.")
    parser.add_argument("input", metavar="INPUT",
                        help="example:cshape|water|slab, a matRad .mat file, an OpenKBP patient "
                             "folder or a DICOM folder")
    add_out_option(parser, "the CT series and RT Structure Set")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # Refuse before reading the input: reading a patient can take seconds.
    check_outputs(args)
    patient = load_patient(args.input)
    from planner.io.dicom_patient import write_dicom_patient  # pydicom only where DICOM is written

    # The writer fills a temporary folder and renames it onto DIR (atomic_directory).
    references = write_dicom_patient(patient, args.out, overwrite=args.force)
    print(f"wrote {len(references.ct_sop_instance_uids)} CT slices and an RT Structure Set "
          f"({len(patient.structures)} structures) to {args.out}")
    return 0
