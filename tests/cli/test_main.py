"""The ``planner`` command as a whole: ``--version``, descriptions, and the output options every
subcommand spells the same way (planner/cli/_output.py; README, "Output")."""

from __future__ import annotations

import argparse
import json

import pytest

import planner
from planner.cli.main import build_parser, main


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every subcommand's parser by its name (``protocol init`` as one)."""
    found = {}

    def walk(parser: argparse.ArgumentParser, prefix: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{prefix} {name}".strip())
                return
        found[prefix] = parser

    walk(build_parser(), "")
    return found


SUBCOMMANDS = _subcommands()


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action | None:
    return next((a for a in parser._actions if flag in a.option_strings), None)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"planner {planner.__version__}\n"


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_help_shows_no_doubled_percent(name):
    """argparse formats help strings with %, not descriptions: a description's '%%' showed."""
    assert "%%" not in SUBCOMMANDS[name].format_help()


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_output_options_mean_the_same_everywhere(name):
    """--out is a required folder (DIR), --json a file (FILE); either comes with --force."""
    parser = SUBCOMMANDS[name]
    out, as_json = _option(parser, "--out"), _option(parser, "--json")
    if out is not None:
        assert out.required and out.metavar == "DIR", name
    if as_json is not None:
        assert not as_json.required and as_json.metavar == "FILE", name
    if out is not None or as_json is not None:
        assert _option(parser, "--force") is not None, name


def test_every_subcommand_that_prints_results_has_json():
    printing = {"info", "plan", "check", "dvh", "review", "optimize", "commission",
                "evaluate-prediction"}
    assert {n for n, p in SUBCOMMANDS.items() if _option(p, "--json")} == printing


def test_info_json_refuses_an_existing_file(tmp_path, capsys):
    target = tmp_path / "info.json"
    assert main(["info", "example:water", "--json", str(target)]) == 0
    written = json.loads(target.read_text())
    assert written["patient"] == "water_box" and written["grid"]["shape_zyx"] == [96, 96, 96]
    assert {s["name"]: s["volume_cc"] for s in written["structures"]} == pytest.approx(
        {"BODY": 8000.0, "PTV": 64.0})
    assert written["prescriptions"] == [{"target": "PTV", "dose_gy": 50.0, "fractions": 25}]
    assert capsys.readouterr().out.endswith(f"wrote {target}\n")
    target.write_text("mine")
    assert main(["info", "example:water", "--json", str(target)]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"planner: error: {target}: already exists (use --force to overwrite)\n"
    assert captured.out == "" and target.read_text() == "mine"
    assert main(["info", "example:water", "--json", str(target), "--force"]) == 0
    assert json.loads(target.read_text())["patient"] == "water_box"
