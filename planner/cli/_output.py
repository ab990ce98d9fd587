"""The output options, spelled and meaning the same in every subcommand (README, "Output").

``--out DIR`` is a folder the command creates, written complete or not at all; an existing one
is refused unless ``--force``, which replaces it. ``--json FILE`` writes the results the command
prints as JSON too; an existing FILE is refused unless ``--force``. Both are checked before any
work, so that a refusal comes at once, not after minutes of computing.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from planner.io._atomic import check_writable, write_json_atomic


def add_out_option(parser: argparse.ArgumentParser, contents: str) -> None:
    """``--out DIR`` (required) holding ``contents``, and ``--force``."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help=f"folder to create, holding {contents}")
    add_force_option(parser)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json FILE``: the printed results as JSON too."""
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the results as JSON to FILE")


def add_force_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output folder or file")


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse an existing ``--out`` or ``--json`` without ``--force`` (InputError)."""
    for target in (getattr(args, "out", None), getattr(args, "json", None)):
        if target is not None:
            check_writable(Path(target), args.force)


def write_json(args: argparse.Namespace, results: Any) -> None:
    """``results`` to ``--json FILE`` when given, and say so."""
    if args.json is not None:
        print(f"wrote {write_json_atomic(args.json, results, overwrite=args.force)}")
