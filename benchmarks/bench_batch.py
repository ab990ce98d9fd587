"""Benchmark: ``planner batch`` on Dask (issue 20): scheduler overhead, 1 against 2 workers, and a
model of 300 patients on a cluster.

1. Overhead per task: ``--tasks`` trivial tasks (a function returning at once) submitted to a
   LocalCluster of 2 single-thread workers and gathered as they complete, as
   :func:`planner.cohort.run_tasks` does (the wall time over the count: scheduling, transfer and
   bookkeeping per task); and the fixed cost each patient pays for its own process
   (:func:`planner.cohort.run_isolated` of the same trivial function: starting Python and
   importing planner), the median of ``--isolated`` runs.
2. Cohort: ``.venv/bin/planner batch MANIFEST --out WORK/workers_N --device cpu --workers N``
   for each N of ``--workers`` (a fresh folder each time), the manifest listing the patients of
   ``--patients`` in the OpenKBP split: the command's wall time, the sum of the patients' own
   wall times (each patient's process, from ``cohort.csv``) and of their plans' own totals
   (``summary.json``), the largest peak memory, patients planned and failed.
3. The paper model: T(M) = ceil(P / (M w)) t_w + P o + t_0 for P patients on M machines each
   planning w patients at once, t_w the wall time of one patient when w share a machine
   (measured here with the most workers), o the overhead per task (1.) and t_0 the cluster's
   start (measured here). It assumes patients like these, that the scheduler handles tasks one
   after another (o adds up), and a file system that keeps up.

Run on an otherwise idle machine (one OpenKBP plan takes 1-3 minutes and up to 6 GB)::

    .venv/bin/python benchmarks/bench_batch.py --patients pt_201,pt_202,pt_203 --workers 1,2

Options: ``--split`` (validation), ``--tasks`` (1000), ``--isolated`` (5), ``--model-patients``
(300), ``--work`` (``out/bench_batch``); the Markdown goes to ``WORK/table.md``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from planner.cohort import run_isolated

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "openkbp" / "provided-data"
PLANNER = REPO / ".venv" / "bin" / "planner"


def nothing() -> dict[str, Any]:
    """The trivial task."""
    return {}


def scheduler_overhead(tasks: int) -> dict[str, float]:
    """Seconds per trivial task on a 2-worker LocalCluster, and the cluster's start and close."""
    from distributed import Client, LocalCluster, as_completed

    start = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        started = time.perf_counter()
        client.submit(nothing, pure=False).result()  # the function shipped once, as warm-up
        begin = time.perf_counter()
        futures = [client.submit(nothing, pure=False) for _ in range(tasks)]
        for future in as_completed(futures):
            future.result()
        end = time.perf_counter()
    return {"start_s": started - start, "per_task_s": (end - begin) / tasks,
            "close_s": time.perf_counter() - end}


def isolated_overhead(runs: int) -> float:
    """Median seconds of a trivial task in a process of its own (:func:`run_isolated`)."""
    return statistics.median(run_isolated(nothing, ()).wall_s for _ in range(runs))


def run_cohort(folders: Sequence[Path], workers: int, work: Path) -> dict[str, Any]:
    """``planner batch`` of the patients with ``workers`` workers; its figures (module doc)."""
    out = work / f"workers_{workers}"
    manifest = work / "manifest.csv"
    manifest.write_text("patient\n" + "".join(f"{f}\n" for f in folders))
    command = [str(PLANNER), "batch", str(manifest), "--out", str(out), "--device", "cpu",
               "--workers", str(workers), "--force"]
    start = time.perf_counter()
    with open(work / f"workers_{workers}.log", "w") as log:
        rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO).returncode
    wall = time.perf_counter() - start
    with open(out / "cohort.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    ok = [r for r in rows if r["status"] == "ok"]
    return {"workers": workers, "rc": rc, "wall_s": wall, "planned": len(ok),
            "failed": len(rows) - len(ok),
            # A patient that failed after planning (its row) still spent its time.
            "sum_patient_wall_s": sum(float(r["wall_s"]) for r in rows if r["wall_s"]),
            "sum_plan_total_s": sum(float(r["total_s"]) for r in ok),
            "max_patient_wall_s": max((float(r["wall_s"]) for r in ok), default=math.nan),
            "peak_memory_gb": max((float(r["peak_memory_gb"]) for r in ok), default=math.nan),
            "command": " ".join(command[1:]).replace(str(REPO) + "/", "")}


def model(patients: int, per_patient_s: float, per_machine: int, overhead_s: float,
          start_s: float, machines: Sequence[int]) -> list[tuple[int, float]]:
    """T(M) of the module docstring, seconds, for each machine count."""
    return [(m, math.ceil(patients / (m * per_machine)) * per_patient_s
             + patients * overhead_s + start_s) for m in machines]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--patients", default=None,
                        help="comma-separated patient folders (default: every one of the split)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--isolated", type=int, default=5)
    parser.add_argument("--model-patients", type=int, default=300)
    parser.add_argument("--work", type=Path, default=REPO / "out" / "bench_batch")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the overhead per task (1.)")
    args = parser.parse_args(argv)
    split_dir = DATA / f"{args.split}-pats"
    names = ([p.strip() for p in args.patients.split(",")] if args.patients
             else sorted(p.name for p in split_dir.iterdir() if p.is_dir()))
    folders = [split_dir / n for n in names]
    missing = [str(f) for f in folders if not f.is_dir()]
    if missing and not args.overhead_only:
        parser.error(f"--patients: no such folders {missing}")
    args.work.mkdir(parents=True, exist_ok=True)

    overhead = scheduler_overhead(args.tasks)
    isolated = isolated_overhead(args.isolated)
    lines = ["# planner batch on Dask", "",
             f"## Overhead ({args.tasks} trivial tasks, LocalCluster of 2 single-thread workers)",
             "", f"- cluster start: {overhead['start_s']:.1f} s, close: "
                 f"{overhead['close_s']:.1f} s",
             f"- per task (submit to result, gathered as completed): "
             f"{1e3 * overhead['per_task_s']:.2f} ms",
             f"- a task in a process of its own (run_isolated, median of {args.isolated}): "
             f"{isolated:.2f} s"]
    cohorts = []
    if not args.overhead_only:
        for workers in (int(w) for w in args.workers.split(",")):
            result = run_cohort(folders, workers, args.work)
            cohorts.append(result)
            print(result, flush=True)
        lines += ["", f"## {len(folders)} OpenKBP {args.split} patients ({', '.join(names)})",
                  "", "| workers | wall s | sum of patients' wall s | sum of plans' own s "
                      "| longest patient s | peak GB | planned | failed |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {c['workers']} | {c['wall_s']:.0f} | {c['sum_patient_wall_s']:.0f} | "
                  f"{c['sum_plan_total_s']:.0f} | {c['max_patient_wall_s']:.0f} | "
                  f"{c['peak_memory_gb']:.2f} | {c['planned']} | {c['failed']} |"
                  for c in cohorts]
        lines += ["", "Commands: " + "; ".join(f"`planner {c['command']}`" for c in cohorts)]
        widest = max(cohorts, key=lambda c: c["workers"])
        if widest["planned"]:
            # One patient's wall time when `workers` share this machine: the batch's wall time
            # per round of `workers` patients.
            rounds = math.ceil(widest["planned"] / widest["workers"])
            per_patient = widest["wall_s"] / rounds
            machines = (1, 2, 5, 10, 20, 50, 100, 150)
            rows = model(args.model_patients, per_patient, widest["workers"],
                         overhead["per_task_s"], overhead["start_s"], machines)
            lines += ["", f"## Model: {args.model_patients} patients on M machines like this "
                          f"one ({widest['workers']} patients at once each)", "",
                      f"T(M) = ceil({args.model_patients} / ({widest['workers']} M)) x "
                      f"{per_patient:.0f} s + {args.model_patients} x "
                      f"{1e3 * overhead['per_task_s']:.2f} ms + {overhead['start_s']:.1f} s", "",
                      "| machines | hours |", "|---|---|"]
            lines += [f"| {m} | {t / 3600:.2f} |" for m, t in rows]
    text = "\n".join(lines) + "\n"
    (args.work / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
