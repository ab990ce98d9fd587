"""``planner protocol init PATIENT [--protocol P] [--prescription NAME=DOSE/FRACTIONS ...]``.

Writes the TOML protocol that ``planner plan`` would use for the patient with the same options
(to standard output, or to ``--toml FILE``), the mapping to the patient's structures and each
limit's source as comments, for the user to adjust and pass back with ``--protocol``. The
patient and protocol options are shared with ``planner plan`` (:func:`add_protocol_options`,
:func:`choose_protocol`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from planner.io import load_patient
from planner.io._atomic import check_writable, write_file_atomic
from planner.patient import Patient
from planner.plan import default_protocol
from planner.prescription import (
    CommandLinePrescription,
    ProtocolDraft,
    parse_prescription,
    protocol_draft,
    protocol_toml,
)
from planner.protocol import protocol_table, read_protocol


def add_protocol_options(parser: argparse.ArgumentParser) -> None:
    """``PATIENT``, ``--protocol`` and ``--prescription``, as ``plan`` and ``protocol init``
    take them."""
    parser.add_argument("patient", metavar="PATIENT",
                        help="example:cshape|water|slab, a matRad .mat file, an OpenKBP patient "
                             "folder or a DICOM folder")
    parser.add_argument("--protocol", default=None, metavar="NAME|FILE",
                        help="protocol TOML file, or a bundled one (tg119_c_shape, "
                             "head_and_neck, prostate); default: the first bundled protocol "
                             "whose structures the patient has, or with --prescription the "
                             "standard organ limits (data/organ_limits.toml)")
    parser.add_argument("--prescription", action="append", default=[],
                        metavar="NAME=DOSE/FRACTIONS",
                        help="prescribe DOSE Gy in FRACTIONS fractions to the structure NAME "
                             "(TG-263 names and common variants match: PTV_7000, PTV70, "
                             "PTV_70Gy); repeatable. Alone: the named targets with the usual "
                             "target goals and standard limits on every organ recognised; with "
                             "--protocol: overrides that target's prescription")


def command_line_prescriptions(args: argparse.Namespace) -> list[CommandLinePrescription]:
    """The ``--prescription`` options, read (before the patient is: a typo fails at once)."""
    return [parse_prescription(text) for text in args.prescription]


def choose_protocol(args: argparse.Namespace, patient: Patient,
                    prescriptions: list[CommandLinePrescription] | None = None
                    ) -> ProtocolDraft:
    """The protocol ``args`` ask for, as a draft (notes printed on stderr as ``protocol:``);
    ``prescriptions``: ``args``' own, read already (:func:`command_line_prescriptions`)."""
    if prescriptions is None:
        prescriptions = command_line_prescriptions(args)
    base = read_protocol(args.protocol) if args.protocol else None
    if prescriptions:
        draft = protocol_draft(patient, prescriptions, base=base)
    else:
        protocol = base or default_protocol(patient)
        table = protocol_table(protocol)
        draft = ProtocolDraft(table, (protocol.source,) * len(table["goals"]), (),
                              protocol.source)
    for note in draft.notes:
        print(f"protocol: {note}", file=sys.stderr)
    return draft


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "protocol", help="write the protocol planner plan would use, to edit",
        description="Protocol files for a patient.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init", help="write the TOML protocol plan would use for PATIENT",
        description="Write the TOML protocol that planner plan would use for PATIENT with the "
                    "same --protocol and --prescription options, with the mapping to the "
                    "patient's structures and each limit's source as comments; edit it and "
                    "plan with --protocol FILE.")
    add_protocol_options(init)
    init.add_argument("--toml", type=Path, default=None, metavar="FILE",
                      help="write the protocol to FILE (default: standard output)")
    init.add_argument("--force", action="store_true", help="overwrite an existing FILE")
    init.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    prescriptions = command_line_prescriptions(args)
    if args.toml is not None:
        check_writable(args.toml, args.force)
    patient = load_patient(args.patient)
    text = protocol_toml(choose_protocol(args, patient, prescriptions), patient) + "\n"
    if args.toml is None:
        sys.stdout.write(text)
        return 0
    write_file_atomic(args.toml, lambda tmp: tmp.write_text(text), overwrite=args.force)
    print(f"wrote {args.toml}")
    return 0
