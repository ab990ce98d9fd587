"""``planner batch INPUT --out DIR [plan options] [--workers N] [--scheduler ADDRESS]``.

Plans a cohort on Dask (:mod:`planner.cohort`): each patient exactly as ``planner plan`` plans
it (its own ``run`` on the plan options, which are the plan subcommand's own argument
definitions, so that every option ``plan`` has passes through), into ``DIR/<patient>/``, written
atomically. ``DIR/cohort.csv`` (and Parquet), ``DIR/cohort.html`` and ``DIR/logs/<patient>.log``
say how each went (:mod:`planner.batch`). A rerun keeps the patients planned before (their
``summary.json`` exists) and plans the failed and the unfinished ones again; ``--force`` plans
every patient again. Exit code 1 when a patient failed (the others are planned).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from planner.batch import (COHORT_CSV, SUMMARY_FILE, plan_row, read_cohort_csv, reference_dose,
                           write_cohort)
from planner.cli import plan
from planner.cli.protocol import choose_protocol
from planner.cohort import Task, add_cluster_options, cluster_options, dask_client, run_tasks
from planner.errors import InputError
from planner.io import load_patient

#: Options of ``planner plan`` that the batch sets itself (per patient) rather than passing on.
OWN_OPTIONS = ("patient", "out", "json", "force", "help")
LOGS = "logs"


class _RaisingParser(argparse.ArgumentParser):
    """An argument parser that raises InputError instead of printing usage and exiting (for the
    manifest's per-patient options)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def plan_parser() -> argparse.ArgumentParser:
    """The ``planner plan`` subcommand's own parser (raising InputError on bad options)."""
    subparsers = _RaisingParser(prog="planner").add_subparsers(parser_class=_RaisingParser)
    plan.add_parser(subparsers)
    return subparsers.choices["plan"]


def plan_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options of ``planner plan`` that shape a plan (all but :data:`OWN_OPTIONS`)."""
    return [a for a in parser._actions if a.dest not in OWN_OPTIONS]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch", help="plan a cohort on Dask, a row per patient in cohort.csv",
        description="Plan every patient of INPUT as 'planner plan' would, into DIR/<patient>/, "
                    "on a local Dask cluster sized to the machine or on an existing one "
                    "(--scheduler). INPUT is a folder of patients (each subfolder a DICOM or "
                    "OpenKBP patient, each .mat file a matRad one) or a CSV manifest: a "
                    "'patient' column (a path relative to the CSV, or example:NAME), an "
                    "optional 'name' column (the output folder) and any plan option as a column "
                    "(e.g. 'protocol', 'beams', 'seed' with yes/no, 'prescription' with several "
                    "separated by ';') for that patient. Writes "
                    "DIR/cohort.csv (and .parquet with pyarrow), DIR/cohort.html and "
                    "DIR/logs/. A rerun plans only the patients not yet planned.")
    parser.add_argument("input", metavar="INPUT", type=Path,
                        help="a folder of patients or a CSV manifest")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="folder of the plans, cohort.csv and the report")
    parser.add_argument("--force", action="store_true",
                        help="plan again the patients already planned in DIR (and plan into a "
                             "DIR that is not a batch folder)")
    group = parser.add_argument_group("plan options (those of planner plan; a manifest's "
                                      "columns override them per patient)")
    for action in plan_options(plan_parser()):
        group._add_action(action)
    add_cluster_options(parser)
    parser.set_defaults(run=run)


@dataclass(frozen=True)
class Entry:
    """One patient of the cohort: its output folder's name, what ``planner plan`` reads, and
    its own plan options (from the manifest)."""

    name: str
    source: str
    argv: tuple[str, ...] = ()


def _is_patient(path: Path) -> bool:
    return not path.name.startswith(".") and (path.is_dir() or path.suffix.lower() == ".mat")


def cohort_entries(input_path: Path, out_dir: Path) -> list[Entry]:
    """The patients of a folder or a CSV manifest (module docstring), checked for names."""
    if input_path.is_file() and input_path.suffix.lower() == ".csv":
        entries = read_manifest(input_path)
    elif input_path.is_dir():
        entries = [Entry(p.stem if p.is_file() else p.name, str(p.resolve()))
                   for p in sorted(input_path.iterdir())
                   if _is_patient(p) and p.resolve() != out_dir.resolve()]
    else:
        raise InputError(f"{input_path}: not a folder of patients or a CSV manifest")
    if not entries:
        raise InputError(f"{input_path}: no patients (subfolders, .mat files or manifest rows)")
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen or entry.name in (LOGS, "") or entry.name.startswith("."):
            raise InputError(f"{input_path}: patient name {entry.name!r} is taken or not "
                             f"allowed (give a 'name' column)")
        seen.add(entry.name)
    return entries


def read_manifest(path: Path) -> list[Entry]:
    """A manifest's patients: each row's plan options as ``planner plan`` arguments."""
    actions = {opt: a for a in plan_options(plan_parser()) for opt in a.option_strings}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        if "patient" not in fields:
            raise InputError(f"{path}: no 'patient' column (columns: {', '.join(fields)})")
        options = [c for c in fields if c not in ("patient", "name")]
        for column in options:
            if f"--{column.replace('_', '-')}" not in actions:
                raise InputError(f"{path}: column {column!r} is no planner plan option")
        entries = []
        for number, raw in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            source = _absolute(row["patient"], path.parent)
            argv: list[str] = []
            for column in options:
                value = row[column]
                flag = f"--{column.replace('_', '-')}"
                if value == "":
                    continue
                if actions[flag].nargs == 0:  # a switch: yes/no
                    yes = value.lower() in ("1", "yes", "true", "y")
                    if not yes and value.lower() not in ("0", "no", "false", "n"):
                        raise InputError(f"{path}: line {number}: {column} {value!r} is "
                                         f"not yes or no")
                    negative = f"--no-{column.replace('_', '-')}"
                    argv += [flag] if yes else [negative] if negative in actions else []
                elif isinstance(actions[flag].default, list):  # repeatable: values split at ;
                    for part in value.split(";"):
                        argv += [flag, _absolute(part.strip(), path.parent)]
                else:
                    argv += [flag, _absolute(value, path.parent)]
            name = row.get("name") or Path(source.replace(":", "_")).stem
            entries.append(Entry(name, source, tuple(argv)))
    return entries


def _absolute(value: str, folder: Path) -> str:
    """A value naming an existing file or folder relative to ``folder``, made absolute (the
    task may run elsewhere); other values as given."""
    path = folder / value
    return str(path.resolve()) if value and path.exists() else value


def patient_arguments(entry: Entry, out_dir: Path, batch: dict[str, Any], force: bool
                      ) -> dict[str, Any]:
    """The arguments ``planner plan`` gets for one patient: the batch's plan options, the
    manifest's in their place; raises InputError naming the patient for a bad option."""
    parser = plan_parser()
    given = {a.dest for a in plan_options(parser) if set(a.option_strings) & set(entry.argv)}
    namespace = argparse.Namespace(**{k: v for k, v in batch.items() if k not in given})
    try:
        parser.parse_args([entry.source, "--out", str(out_dir), *entry.argv],
                          namespace=namespace)
    except InputError as error:
        raise InputError(f"{entry.name}: {error}") from None
    namespace.force = force
    return {k: v for k, v in vars(namespace).items() if k != "run"}


def plan_task(arguments: dict[str, Any]) -> dict[str, Any]:
    """One patient, in its own process: ``planner plan``'s run, then its row."""
    plan.run(argparse.Namespace(**arguments))
    return patient_row(arguments)


def patient_row(arguments: dict[str, Any]) -> dict[str, Any]:
    """The row of a planned patient; where it has a reference dose, scored against it with the
    protocol ``planner plan`` chose for these arguments."""
    reference = reference_dose(arguments["patient"])
    if reference is None:
        return plan_row(Path(arguments["out"]))
    patient = load_patient(arguments["patient"])
    protocol = choose_protocol(argparse.Namespace(**arguments), patient).protocol()
    return plan_row(Path(arguments["out"]), (patient, protocol, reference))


def _remove_leftovers(out_dir: Path) -> None:
    """The temporary files and folders of a killed run (``.NAME.*.tmp``, ``.NAME.old``)."""
    for path in [*out_dir.glob(".*.tmp"), *out_dir.glob(".*.old")]:
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def _report(name: str) -> str:
    """The link to a patient's report, relative to the batch folder."""
    return f"{name}/report/report.html"


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    out = args.out.resolve()
    entries = cohort_entries(args.input, out)
    parser_options = plan_options(plan_parser())
    batch = {a.dest: getattr(args, a.dest) for a in parser_options}
    batch = {k: _absolute(v, Path.cwd()) if isinstance(v, str) else v for k, v in batch.items()}
    arguments = {e.name: patient_arguments(e, out / e.name, batch, args.force) for e in entries}
    options = cluster_options(args)
    if out.is_dir() and any(out.iterdir()) and not (out / COHORT_CSV).is_file() \
            and not args.force:
        raise InputError(f"{out}: exists and is not a planner batch folder (no {COHORT_CSV}); "
                         f"use --force to plan into it")
    out.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out)
    earlier = read_cohort_csv(out / COHORT_CSV)
    rows: dict[str, dict[str, Any]] = {}
    tasks = []
    for e in entries:
        head = {"name": e.name, "input": e.source, "log": f"{LOGS}/{e.name}.log"}
        if (out / e.name / SUMMARY_FILE).is_file() and not args.force:
            before = earlier.get(e.name, {})
            rows[e.name] = before if before.get("status") == "ok" else {
                **head, "status": "ok", "error": "", "report": _report(e.name),
                **patient_row(arguments[e.name])}
        else:
            rows[e.name] = {**head, "status": "not run", "error": ""}
            tasks.append(Task(e.name, plan_task, (arguments[e.name],),
                              log=out / LOGS / f"{e.name}.log"))
    _say(f"{len(entries)} patients: {len(entries) - len(tasks)} planned before (kept), "
         f"{len(tasks)} to plan")
    write_cohort(out, list(rows.values()))
    if tasks:
        (out / LOGS).mkdir(exist_ok=True)
        with dask_client(options, _say) as (client, limits):
            for row in run_tasks(client, tasks, limits, _say):
                name = row["name"]
                report = {"report": _report(name)} if row["status"] == "ok" else {}
                rows[name] = {k: rows[name][k] for k in ("name", "input", "log")} | report | row
                write_cohort(out, list(rows.values()))
    failed = [n for n, r in rows.items() if r["status"] != "ok"]
    print(f"{len(rows) - len(failed)} of {len(rows)} patients planned"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + f"; wrote {out}/{COHORT_CSV}, cohort.html")
    return 1 if failed else 0
