"""``planner evaluate-prediction DATA_DIR``: OpenKBP dose and DVH scores, per patient and overall.

torch is imported only when the network is used.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from planner.cli._output import add_force_option, add_json_option, check_outputs, write_json
from planner.cli.train import add_threads_option, set_threads
from planner.cohort import (ClusterOptions, Task, add_cluster_options, cluster_options,
                            dask_client, run_tasks)
from planner.errors import InputError
from planner.io._atomic import check_writable, write_file_atomic
from planner.predict.data import patient_folders
from planner.predict.evaluate import Evaluation, Summary, evaluate_patient, summarise


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate-prediction", help="score predicted doses with the OpenKBP challenge's metrics",
        description="Score dose predictions against the reference doses of an OpenKBP-format "
                    "folder (a split folder of pt_* patients, or one patient folder) with the "
                    "challenge's dose score and DVH score. Predictions come from --predictions "
                    "(challenge submission files pt_N.csv) or, by default, from the network "
                    "(--model, default the shipped weights). A patient that cannot be scored (a "
                    "missing or unreadable file, a patient the network does not apply to) is "
                    "listed with the reason and left out of the overall scores, which say how "
                    "many patients they cover.")
    parser.add_argument("data_dir", metavar="DATA_DIR", type=Path)
    parser.add_argument("--predictions", type=Path, default=None,
                        help="folder of predicted doses pt_N.csv[.gz] (or pt_N/dose.csv[.gz])")
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="model weights (default: data/models/openkbp_unet.pt); given more "
                             "than once, the mean of their doses (an ensemble) is scored")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add_threads_option(parser)
    parser.add_argument("--csv", type=Path, default=None,
                        help="also write per-patient scores and reasons here")
    add_json_option(parser)
    add_force_option(parser)
    add_cluster_options(parser, threads=False)
    parser.set_defaults(run=run)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}"


def _report(rows: list[Evaluation], summary: Summary, source: str) -> dict:
    """The ``--json`` results: the overall scores, then every patient's row with its DVH
    errors."""
    def patient(r: Evaluation) -> dict:
        s = r.scores
        return {"patient": r.name, "dose_score_gy": None if s is None else s.dose_score_gy,
                "dvh_score_gy": None if s is None else s.dvh_score_gy, "reason": r.reason,
                "dvh_errors_gy": None if s is None else {f"{metric} {roi}": error for
                                                         (metric, roi), error in
                                                         s.dvh_errors_gy.items()}}

    scored = summary.scored > 0
    return {"predictions": source,
            "overall": {"dose_score_gy": summary.dose_score_gy if scored else None,
                        "dvh_score_gy": summary.dvh_score_gy if scored else None,
                        "patients_scored": summary.scored, "patients": summary.patients,
                        "left_out": summary.left_out},
            "patients": [patient(r) for r in rows]}


def _load_model(paths: list[Path] | None, device_name: str) -> Any:
    """The network (an ensemble when several weights are given) on its device."""
    from planner.predict.infer import load_model, torch_device
    from planner.predict.model import DoseEnsemble

    device = torch_device(device_name)
    models = [load_model(path, device) for path in paths or [None]]
    return models[0] if len(models) == 1 else DoseEnsemble(models)


def _evaluate_task(folder: Path, args: argparse.Namespace) -> dict[str, Evaluation]:
    """One patient as a Dask task (:mod:`planner.cohort`), in a process of its own."""
    if args.threads is not None:  # else torch keeps the share planner.cohort gave the process
        set_threads(args.threads)
    model = None if args.predictions else _load_model(args.model, args.device)
    return {"evaluation": evaluate_patient(folder, model=model, predictions=args.predictions)}


def _on_dask(folders: list[Path], args: argparse.Namespace, options: ClusterOptions
             ) -> Iterator[Evaluation]:
    """The patients' rows as they finish on the cluster; a task that failed (a crash, a
    killed worker) is a row without scores, its error the reason."""
    tasks = [Task(f.name, _evaluate_task, (f, args)) for f in folders]
    say = functools.partial(print, file=sys.stderr, flush=True)
    with dask_client(options, say) as (client, limits):
        for row in run_tasks(client, tasks, limits, say):
            yield row.get("evaluation") or Evaluation(row["name"], None, row["error"])


def run(args: argparse.Namespace) -> int:
    folders = patient_folders(args.data_dir)
    check_outputs(args)
    if args.csv is not None:
        check_writable(args.csv, args.force)
    options = cluster_options(args)
    if args.predictions is None:
        source = " + ".join(p.name for p in args.model) if args.model else "shipped weights"
    else:
        source = str(args.predictions)
    if options.workers is not None or options.scheduler is not None:
        evaluations = _on_dask(folders, args, options)
    else:
        set_threads(args.threads)
        model = None if args.predictions else _load_model(args.model, args.device)
        evaluations = (evaluate_patient(f, model=model, predictions=args.predictions)
                       for f in folders)
    rows: list[Evaluation] = []
    print(f"{'patient':<12} {'dose score (Gy)':>15} {'DVH score (Gy)':>14}")
    for row in evaluations:
        rows.append(row)
        if row.scores is None:
            print(f"{row.name:<12} {'-':>15} {'-':>14}  left out: {row.reason}", flush=True)
        else:
            print(f"{row.name:<12} {row.scores.dose_score_gy:15.3f} "
                  f"{row.scores.dvh_score_gy:14.3f}", flush=True)
    order = [f.name for f in folders]
    rows.sort(key=lambda r: order.index(r.name))  # on Dask they come as they finish
    summary = summarise(rows)
    left_out = (f"; left out: {', '.join(summary.left_out)}" if summary.left_out else "")
    print(f"{'overall':<12} {summary.dose_score_gy:15.3f} {summary.dvh_score_gy:14.3f}  "
          f"({summary.scored} of {summary.patients} patients{left_out}; DVH score pooled over "
          f"all patient, ROI and metric errors)")
    if args.csv is not None:
        text = io.StringIO()
        table = csv.writer(text, lineterminator="\n")
        table.writerow(["patient", "dose_score_gy", "dvh_score_gy", "reason"])
        for r in rows:
            s = r.scores
            table.writerow([r.name, _number(None if s is None else s.dose_score_gy),
                            _number(None if s is None else s.dvh_score_gy), r.reason])
        overall = summary.scored > 0
        table.writerow(["overall", _number(summary.dose_score_gy if overall else None),
                        _number(summary.dvh_score_gy if overall else None),
                        f"{summary.scored} of {summary.patients} patients"])
        write_file_atomic(args.csv, lambda tmp: tmp.write_text(text.getvalue()),
                          overwrite=args.force)
    write_json(args, _report(rows, summary, source))
    if not summary.scored:
        first = rows[0]
        raise InputError(f"{args.data_dir}: none of the {summary.patients} patients could be "
                         f"scored (first, {first.name}: {first.reason})")
    return 0
