"""The ``planner`` command: a thin argparse layer over the Python API.

Exit codes: 0 success, 1 a planner error, 2 bad input (one line on stderr, no traceback),
130 interrupted (Ctrl-C), 3 an unexpected error (with traceback, a bug to report).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from planner import __version__
from planner.cli import (batch, check, commission, convert, dvh, evaluate_prediction, info,
                         optimize, plan, protocol, review, train)
from planner.cli._warnings import warnings_to_stderr
from planner.errors import InputError, PlannerError

SUBCOMMANDS = (info, convert, plan, protocol, batch, train, evaluate_prediction, optimize, dvh,
               review, commission, check)


class _Parser(argparse.ArgumentParser):
    """Usage errors (a missing argument, a bad option value) as one line, like bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.partition(" ")[2]  # "planner plan" -> "plan"
        where = f"{command}: " if command else ""
        self.exit(2, f"planner: error: {where}{message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="planner",
        description="Open-source 6 MV IMRT treatment planning from CT and RT Structure Set.",
    )
    parser.add_argument("--version", action="version", version=f"planner {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings_to_stderr():
            return int(args.run(args) or 0)
    except InputError as error:
        print(f"planner: error: {error}", file=sys.stderr)
        return 2
    except PlannerError as error:
        print(f"planner: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("planner: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("planner: unexpected error (a bug: please report it with the traceback above)",
              file=sys.stderr)
        return 3
