"""Benchmark: ``planner plan``'s deliverable plans against the OpenKBP reference plans (issue 16).

For each OpenKBP patient folder of a split
(``../shared/openkbp/provided-data/{validation,test}-pats``) and each arm (``seeded``,
``unseeded``: the flags of :data:`ARM_FLAGS`), ``.venv/bin/planner plan PATIENT --out DIR
--force --device cpu`` runs as a subprocess under ``/usr/bin/time`` (wall time and peak resident
memory of the whole run: prediction, Dij, optimisation, sequencing, DICOM and report). The plan's
RT Dose (``DIR/dicom/RD.dcm``, on the plan's 3 mm dose grid) is resampled trilinearly onto the
OpenKBP grid and scored beside the reference ``dose.csv``, with :mod:`planner.review.quality` and
the goal table's evaluation (:func:`optim.autoplan.evaluate_goal`):

- cc above 107 % and 110 % of 70 Gy outside the PTVs (inside the possible-dose mask), the
  maximum dose (and whether it lies in PTV70), the normal tissue's (possible-dose mask less the
  PTVs) mean dose and V35Gy, the Paddick conformity index of PTV70 at 70 Gy and its R50;
- the plan's dose score against the reference (the challenge's: mean absolute difference over the
  possible-dose mask, Gy);
- the OpenKBP-Opt criteria met (every goal that ``data/protocols/head_and_neck.toml`` states;
  not those planner adds to every protocol, whose hot spots and normal tissue are the figures
  above), on the delineated PTVs (not planner's cropped optimisation targets), with the PTVs'
  coverage goals (D99, D95) taken on the PTV less its air (HU < -400) and, beside it, on the
  whole PTV; the hard goals of that file met;
- from the plan's ``summary.json``: MU per fraction, segments, time per step, the seed's note.

The Markdown table has a row per patient and arm, medians, criteria totals (plan vs reference)
and the bars of issue 16, each PASS or FAIL with its numbers. Results are appended to
``WORK/results.jsonl`` as each plan is scored (a patient and arm already there is skipped unless
``--again``; the last row of a patient and arm wins), so an interrupted run resumes.

Run (one patient at a time, on an otherwise idle machine; a plan takes 1-3 minutes and up to
6 GB)::

    .venv/bin/python benchmarks/bench_plan_quality_openkbp.py --split validation
    .venv/bin/python benchmarks/bench_plan_quality_openkbp.py --split test      # once, at the end
    .venv/bin/python benchmarks/bench_plan_quality_openkbp.py --split validation --table-only

Options: ``--patients pt_201,pt_202``, ``--arms seeded,unseeded``, ``--work DIR`` (default
``out/bench_plan_quality``; the plans stay in ``WORK/plans/SPLIT/ARM/PATIENT``, about 6 MB each,
their output in ``WORK/logs``), ``--table FILE`` (default ``WORK/table.md``), ``--again``.
``--from-batch DIR`` scores the plans ``planner batch`` wrote in DIR (one arm, the batch's;
each time and peak memory is the patient's own process's, from ``DIR/cohort.csv``).
``--workers N`` or ``--scheduler ADDRESS`` score the patients and arms as Dask tasks
(:mod:`planner.cohort`, as ``planner batch`` plans; several at once, so their times are not an
idle machine's); a task that fails is reported and left for the next run.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from optim.autoplan import evaluate_goal
from planner.batch import plan_dose_on_patient_grid
from planner.cohort import Task, add_cluster_options, cluster_options, dask_client, run_tasks
from planner.io.openkbp import read_openkbp_dose, read_openkbp_patient
from planner.patient import Patient
from planner.protocol import Goal, Protocol, map_structures, plan_goal, read_protocol
from planner.review.quality import (
    AIR_HU, BODY, NORMAL_TISSUE, QualityFigure, air_mask, figure_value, quality_figures,
)

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "openkbp" / "provided-data"
PLANNER = REPO / ".venv" / "bin" / "planner"
TIME = "/usr/bin/time"
PROTOCOL = "head_and_neck"
MAIN_TARGET, MAIN_RX_GY = "PTV70", 70.0

#: The ``planner plan`` flags of each arm, beyond ``--out DIR --force --device cpu`` (seeding is
#: the default).
ARM_FLAGS: dict[str, tuple[str, ...]] = {"seeded": (), "unseeded": ("--no-seed",)}
ARMS = ("seeded", "unseeded")

# The bars of issue 16 ("How it is checked").
HOT_CC_MAX = 1.0                 # every patient: cc above 110 % outside the PTVs
NT_MEAN_RATIO_MAX = 1.10         # median normal-tissue mean / the reference's
DOSE_SCORE_MAX_GY = 5.0          # median plan dose score
SEED_GAIN = 0.05                 # seeded medians (normal-tissue mean, dose score) this much lower
TIME_MAX_S, TIME_MEDIAN_S = 120.0, 90.0
MEMORY_MAX_GB = 4.0              # peak resident memory, 10^9 bytes


# -- scoring -----------------------------------------------------------------------------------

def file_goals(protocol: Protocol) -> tuple[Goal, ...]:
    """The goals the protocol file states (the OpenKBP-Opt criteria for ``head_and_neck``), not
    those planner adds to every protocol on structures the file does not declare."""
    with open(protocol.source, "rb") as f:
        declared = set(tomllib.load(f)["structures"])
    return tuple(g for g in protocol.goals if g.structure in declared)


def criteria(patient: Patient, dose_gy: np.ndarray, protocol: Protocol, air: np.ndarray
             ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Every criterion (:func:`file_goals`) whose structure the patient has, evaluated as the
    goal table evaluates it (:func:`optim.autoplan.evaluate_goal`) but on the delineated
    structures: with the targets' coverage goals (lower bounds: D99, D95) on the PTV less its air
    (the other goals on the whole PTV), and all on the whole PTVs. Each ``{label: {"value"
    (Gy, or a volume fraction), "met", "hard"}}``."""
    mapping = map_structures(protocol, [s.name for s in patient.structures]).mapping
    flat = np.asarray(dose_gy, dtype=np.float64).ravel()
    voxel_cc = patient.grid.voxel_volume_cc
    tissue: dict[str, dict[str, Any]] = {}
    whole: dict[str, dict[str, Any]] = {}
    for goal in file_goals(protocol):
        if goal.structure not in mapping:
            continue
        mask = patient.structure(mapping[goal.structure]).mask
        coverage = goal.bound == "min" and protocol.structure(goal.structure).kind == "target"
        less_air = mask & ~air if coverage and np.any(mask & ~air) else mask
        for out, m in ((whole, mask), (tissue, less_air)):
            r = evaluate_goal(flat, plan_goal(protocol, goal, np.flatnonzero(m.ravel()), voxel_cc))
            out[goal.label] = {"value": round(float(r.value), 4), "met": bool(r.met),
                               "hard": goal.hard}
    return tissue, whole


def score_dose(patient: Patient, dose_gy: np.ndarray, protocol: Protocol, air: np.ndarray
               ) -> dict[str, Any]:
    """The figures of one dose (plan or reference) on the OpenKBP grid (module docstring)."""
    figures: tuple[QualityFigure, ...] = quality_figures(patient, dose_gy, protocol,
                                                         air_hu=AIR_HU)

    def value(name: str, structure: str) -> float:
        return round(figure_value(figures, name, structure), 4)

    goals_tissue, goals_whole = criteria(patient, dose_gy, protocol, air)
    return {
        "hot107_cc": value("volume > 107 %", NORMAL_TISSUE),
        "hot110_cc": value("volume > 110 %", NORMAL_TISSUE),
        "max_gy": value("Dmax", BODY),
        "max_in_ptv70": bool(value("Dmax in target", MAIN_TARGET)),
        "nt_max_gy": value("Dmax", NORMAL_TISSUE),
        "nt_mean_gy": value("Dmean", NORMAL_TISSUE),
        "nt_v35_cc": value("V35Gy", NORMAL_TISSUE),
        "ci_ptv70": value("Paddick CI", MAIN_TARGET),
        "r50_ptv70": value("R50", MAIN_TARGET),
        "ptv70_d99_gy": value("D99%", MAIN_TARGET),
        "ptv70_d99_tissue_gy": value("D99% tissue", MAIN_TARGET),
        "ptv70_air_cc": value("air", MAIN_TARGET),
        "goals_tissue": goals_tissue,
        "goals_whole": goals_whole,
    }


# -- running -----------------------------------------------------------------------------------

def run_plan(folder: Path, arm: str, plan_dir: Path, log: Path) -> dict[str, Any]:
    """``planner plan`` of one patient and arm under ``/usr/bin/time``: exit code, wall time (s),
    peak resident memory (KiB), and the last line of its output when it failed."""
    timing = log.with_suffix(".time")
    command = [TIME, "-f", "%e %M", "-o", str(timing), str(PLANNER), "plan", str(folder),
               "--out", str(plan_dir), "--force", "--device", "cpu", *ARM_FLAGS[arm]]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO).returncode
    # /usr/bin/time writes "Command exited with non-zero status N" first when the command fails.
    last = timing.read_text().split("\n")
    wall_s, rss_kib = (float(v) for v in [line for line in last if line.strip()][-1].split())
    result = {"rc": rc, "time_s": wall_s, "peak_rss_kib": int(rss_kib)}
    if rc != 0:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        result["error"] = lines[-1] if lines else ""
    return result


def batch_run(batch: Path, patient: str) -> dict[str, Any]:
    """What :func:`run_plan` says of a patient that ``planner batch --out BATCH`` planned, from
    ``BATCH/cohort.csv``: the patient's own process's wall time and peak memory."""
    with open(batch / "cohort.csv", newline="") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    if patient not in rows:
        raise SystemExit(f"{batch / 'cohort.csv'}: no row for {patient}")
    row = rows[patient]
    result = {"rc": 0 if row["status"] == "ok" else 1, "time_s": float(row["wall_s"] or "nan"),
              "peak_rss_kib": int(float(row["peak_memory_gb"] or 0) * 1e9 / 1024)}
    if result["rc"]:
        result["error"] = row["error"]
    return result


def score_patient(folder: Path, arm: str, work: Path, batch: Path | None = None
                  ) -> dict[str, Any]:
    """Plan one patient in one arm and score plan and reference (one JSON-lines row); with
    ``batch``, score the plan ``planner batch`` made there instead of planning it."""
    split = folder.parent.name.removesuffix("-pats")
    if batch is None:
        plan_dir = work / "plans" / split / arm / folder.name
        run = run_plan(folder, arm, plan_dir, work / "logs" / split / arm / f"{folder.name}.log")
    else:
        plan_dir, run = batch / folder.name, batch_run(batch, folder.name)
    start = time.perf_counter()
    protocol = read_protocol(PROTOCOL)
    patient = read_openkbp_patient(folder)
    reference = read_openkbp_dose(folder)
    if reference is None or patient.possible_dose_mask is None:
        raise SystemExit(f"{folder}: dose.csv and possible_dose_mask.csv are needed")
    air = air_mask(patient.hu, AIR_HU)
    row: dict[str, Any] = {"split": split, "patient": folder.name, "arm": arm,
                           "flags": list(ARM_FLAGS[arm]), **run,
                           "reference": score_dose(patient, reference, protocol, air)}
    if run["rc"] != 0:
        row["scored_s"] = round(time.perf_counter() - start, 1)
        return row
    summary = json.loads((plan_dir / "summary.json").read_text())
    dose = plan_dose_on_patient_grid(plan_dir, patient)
    pdm = patient.possible_dose_mask
    seed = str(summary.get("seed"))
    row.update({
        "seed": seed,
        # The note starts "seeded: ..." or "unseeded: ..."; another arm means wrong ARM_FLAGS.
        "seed_as_arm": seed.split(":")[0].strip() == arm,
        "mu_per_fraction": summary["mu"]["total_per_fraction"],
        "segments": summary["segments"]["total"],
        "times_s": summary.get("times_s", {}),
        "dose_score_gy": round(float(np.abs(dose[pdm] - reference[pdm]).mean()), 4),
        "plan": score_dose(patient, dose, protocol, air),
        "scored_s": round(time.perf_counter() - start, 1),
    })
    return row


# -- results and table -------------------------------------------------------------------------

def read_rows(path: Path) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The rows of ``results.jsonl`` by (split, patient, arm); the last one of each wins."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows[(r["split"], r["patient"], r["arm"])] = r
    return rows


def _met(goals: dict[str, dict[str, Any]], hard_only: bool = False) -> tuple[int, int]:
    chosen = [g for g in goals.values() if g["hard"] or not hard_only]
    return sum(g["met"] for g in chosen), len(chosen)


def _ok(row: dict[str, Any]) -> bool:
    return row["rc"] == 0 and "plan" in row


def line(row: dict[str, Any]) -> str:
    """One line for the terminal as a patient and arm finishes."""
    head = (f"{row['patient']} {row['arm']:<8} {row['time_s']:5.0f} s "
            f"{row['peak_rss_kib'] * 1024 / 1e9:4.1f} GB")
    if not _ok(row):
        return f"{head}  FAILED (exit {row['rc']}): {row.get('error', '')}"
    p, r = row["plan"], row["reference"]
    cp, n = _met(p["goals_tissue"])
    cr, _ = _met(r["goals_tissue"])
    hp, nh = _met(p["goals_tissue"], True)
    hr, _ = _met(r["goals_tissue"], True)
    warning = "" if row.get("seed_as_arm", True) else f"  WARNING: seed note {row['seed']!r}"
    return (f"{head}  >110% {p['hot110_cc']:.1f}/{r['hot110_cc']:.1f} cc  "
            f"max {p['max_gy']:.1f}/{r['max_gy']:.1f} Gy  "
            f"NT mean {p['nt_mean_gy']:.2f}/{r['nt_mean_gy']:.2f} Gy  "
            f"CI {p['ci_ptv70']:.2f}/{r['ci_ptv70']:.2f}  score {row['dose_score_gy']:.2f} Gy  "
            f"criteria {cp}/{cr} of {n} (hard {hp}/{hr} of {nh})  "
            f"{row['mu_per_fraction']:.0f} MU  {row['segments']} segments  (plan/reference)"
            + warning)


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if values else float("nan")


def _pair(p: float, r: float, fmt: str = ".1f") -> str:
    return f"{p:{fmt}} / {r:{fmt}}"


TABLE_HEADER = (
    "| patient | arm | time s | peak GB | MU/fx | segments | >110 % cc | >107 % cc | max Gy "
    "| max in PTV70 | NT mean Gy | NT V35Gy cc | CI PTV70 | R50 PTV70 | dose score Gy "
    "| criteria (tissue) | criteria (whole PTV) | hard (tissue) |")


def table_row(row: dict[str, Any]) -> str:
    """One row of the table: plan / reference where both exist."""
    if not _ok(row):
        return (f"| {row['patient']} | {row['arm']} | {row['time_s']:.0f} | "
                f"{row['peak_rss_kib'] * 1024 / 1e9:.1f} | FAILED (exit {row['rc']}): "
                f"{row.get('error', '')} |" + " |" * 13)
    p, r = row["plan"], row["reference"]
    yes = {True: "yes", False: "no"}
    crit = []
    for key, hard in (("goals_tissue", False), ("goals_whole", False), ("goals_tissue", True)):
        a, n = _met(p[key], hard)
        b, _ = _met(r[key], hard)
        crit.append(f"{a} / {b} of {n}")
    return (f"| {row['patient']} | {row['arm']} | {row['time_s']:.0f} | "
            f"{row['peak_rss_kib'] * 1024 / 1e9:.1f} | {row['mu_per_fraction']:.0f} | "
            f"{row['segments']} | {_pair(p['hot110_cc'], r['hot110_cc'])} | "
            f"{_pair(p['hot107_cc'], r['hot107_cc'])} | {_pair(p['max_gy'], r['max_gy'])} | "
            f"{yes[p['max_in_ptv70']]} / {yes[r['max_in_ptv70']]} | "
            f"{_pair(p['nt_mean_gy'], r['nt_mean_gy'], '.2f')} | "
            f"{_pair(p['nt_v35_cc'], r['nt_v35_cc'], '.0f')} | "
            f"{_pair(p['ci_ptv70'], r['ci_ptv70'], '.2f')} | "
            f"{_pair(p['r50_ptv70'], r['r50_ptv70'], '.2f')} | {row['dose_score_gy']:.2f} | "
            + " | ".join(crit) + " |")


def _verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def arm_summary(arm: str, rows: list[dict[str, Any]]) -> tuple[str, list[str]]:
    """The medians row of one arm and its bars (issue 16) as list items."""
    done = [r for r in rows if _ok(r)]
    failed = [r["patient"] for r in rows if not _ok(r)]
    bars: list[str] = []
    if failed:
        bars.append(f"{arm}: {_verdict(False)} plans failed: {', '.join(failed)}")
    if not done:
        return "", bars

    def med(side: str, key: str) -> float:
        return _median([r[side][key] for r in done])

    medians = (f"| median | {arm} | {_median([r['time_s'] for r in rows]):.0f} | "
               f"{_median([r['peak_rss_kib'] * 1024 / 1e9 for r in rows]):.1f} | "
               f"{_median([r['mu_per_fraction'] for r in done]):.0f} | "
               f"{_median([r['segments'] for r in done]):.0f} | "
               f"{_pair(med('plan', 'hot110_cc'), med('reference', 'hot110_cc'))} | "
               f"{_pair(med('plan', 'hot107_cc'), med('reference', 'hot107_cc'))} | "
               f"{_pair(med('plan', 'max_gy'), med('reference', 'max_gy'))} | "
               f"{sum(r['plan']['max_in_ptv70'] for r in done)} / "
               f"{sum(r['reference']['max_in_ptv70'] for r in done)} of {len(done)} | "
               f"{_pair(med('plan', 'nt_mean_gy'), med('reference', 'nt_mean_gy'), '.2f')} | "
               f"{_pair(med('plan', 'nt_v35_cc'), med('reference', 'nt_v35_cc'), '.0f')} | "
               f"{_pair(med('plan', 'ci_ptv70'), med('reference', 'ci_ptv70'), '.2f')} | "
               f"{_pair(med('plan', 'r50_ptv70'), med('reference', 'r50_ptv70'), '.2f')} | "
               f"{_median([r['dose_score_gy'] for r in done]):.2f} | "
               + " | ".join(
                   f"{sum(_met(r['plan'][k], h)[0] for r in done)} / "
                   f"{sum(_met(r['reference'][k], h)[0] for r in done)} of "
                   f"{sum(_met(r['plan'][k], h)[1] for r in done)} (total)"
                   for k, h in (("goals_tissue", False), ("goals_whole", False),
                                ("goals_tissue", True))) + " |")

    hot = {r["patient"]: r["plan"]["hot110_cc"] for r in done}
    over = {k: v for k, v in hot.items() if v > HOT_CC_MAX}
    bars.append(f"{arm}: every patient <= {HOT_CC_MAX:g} cc above 110 % of 70 Gy outside the "
                f"PTVs: {_verdict(not over and not failed)} (worst {max(hot.values()):.2f} cc; "
                f"over: {', '.join(f'{k} {v:.1f} cc' for k, v in over.items()) or 'none'})")
    ratio = _median([r["plan"]["nt_mean_gy"] / r["reference"]["nt_mean_gy"] for r in done])
    bars.append(f"{arm}: median normal-tissue mean <= {NT_MEAN_RATIO_MAX:.2f} x the reference's: "
                f"{_verdict(ratio <= NT_MEAN_RATIO_MAX)} (median of plan / reference per "
                f"patient {ratio:.3f}; medians {med('plan', 'nt_mean_gy'):.2f} Gy against "
                f"{med('reference', 'nt_mean_gy'):.2f} Gy)")
    score = _median([r["dose_score_gy"] for r in done])
    bars.append(f"{arm}: median plan dose score <= {DOSE_SCORE_MAX_GY:g} Gy: "
                f"{_verdict(score <= DOSE_SCORE_MAX_GY)} ({score:.2f} Gy; aim <= 3 Gy)")
    for key, what in (("goals_tissue", "PTV coverage on tissue"),
                      ("goals_whole", "PTV coverage on the whole PTV")):
        plan_total = sum(_met(r["plan"][key])[0] for r in done)
        ref_total = sum(_met(r["reference"][key])[0] for r in done)
        n = sum(_met(r["plan"][key])[1] for r in done)
        decisive = "" if key == "goals_tissue" else " (beside it, not a bar)"
        bars.append(f"{arm}: criteria met >= the reference's in total, {what}{decisive}: "
                    f"{_verdict(plan_total >= ref_total)} ({plan_total} against {ref_total} "
                    f"of {n})")
    times = [r["time_s"] for r in rows]
    bars.append(f"{arm}: every time <= {TIME_MAX_S:g} s, median <= {TIME_MEDIAN_S:g} s: "
                f"{_verdict(max(times) <= TIME_MAX_S and _median(times) <= TIME_MEDIAN_S)} "
                f"(max {max(times):.0f} s, median {_median(times):.0f} s)")
    peak = max(r["peak_rss_kib"] for r in rows) * 1024 / 1e9
    bars.append(f"{arm}: peak memory <= {MEMORY_MAX_GB:g} GB: "
                f"{_verdict(peak <= MEMORY_MAX_GB)} (max {peak:.2f} GB)")
    return medians, bars


def seed_bars(rows: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """The bars that compare the arms, over the patients planned in both."""
    both = sorted({p for p, a in rows if a == "seeded"} & {p for p, a in rows if a == "unseeded"})
    both = [p for p in both if _ok(rows[(p, "seeded")]) and _ok(rows[(p, "unseeded")])]
    if not both:
        return []
    lost = []
    for p in both:
        seeded = rows[(p, "seeded")]["plan"]["goals_tissue"]
        for label, g in rows[(p, "unseeded")]["plan"]["goals_tissue"].items():
            if g["hard"] and g["met"] and not seeded[label]["met"]:
                lost.append(f"{p} {label} ({g['value']:.2f} -> {seeded[label]['value']:.2f})")
    bars = [f"no hard goal met unseeded is lost seeded ({len(both)} patients, PTV coverage on "
            f"tissue): {_verdict(not lost)} ({'; '.join(lost) or 'none lost'})"]
    for key, what in (("nt_mean_gy", "normal-tissue mean"), ("dose_score_gy", "plan dose score")):
        def value(p: str, arm: str) -> float:
            r = rows[(p, arm)]
            return r[key] if key in r else r["plan"][key]
        s = _median([value(p, "seeded") for p in both])
        u = _median([value(p, "unseeded") for p in both])
        bars.append(f"seeded median {what} >= {100 * SEED_GAIN:.0f} % below unseeded: "
                    f"{_verdict(s <= (1 - SEED_GAIN) * u)} ({s:.2f} against {u:.2f} Gy, "
                    f"{100 * (s / u - 1):+.1f} %)")
    return bars


def time_lines(rows: list[dict[str, Any]], arm: str) -> str:
    """Median seconds of each step of ``planner plan`` (its ``times_s``) in one arm."""
    done = [r for r in rows if _ok(r) and r.get("times_s")]
    if not done:
        return ""
    steps = list(done[0]["times_s"])
    parts = [f"{s} {_median([r['times_s'].get(s, 0.0) for r in done]):.1f}" for s in steps]
    return f"- {arm} ({len(done)} plans): " + ", ".join(parts)


def write_table(path: Path, all_rows: dict[tuple[str, str, str], dict[str, Any]], split: str,
                command: str) -> str:
    """The Markdown table of every scored patient and arm of ``split``; returns its text."""
    rows = {(p, a): r for (s, p, a), r in sorted(all_rows.items()) if s == split}
    arms = [a for a in ARMS if any(k[1] == a for k in rows)]
    n_patients = len({p for p, _ in rows})
    lines = [f"# Deliverable plans against the OpenKBP reference plans, {split} "
             f"({n_patients} patients)", "",
             f"Command: `{command}`", "",
             "Each cell: plan / reference. Outside the PTVs and normal tissue (NT): inside the "
             "possible-dose mask, outside every PTV. Hot spots: cc above 107 % / 110 % of 70 Gy. "
             "CI: Paddick conformity index of PTV70 at 70 Gy (PIV in the possible-dose mask); "
             "R50: volume at >= 35 Gy over PTV70's. Dose score: mean |plan - reference| over the "
             "possible-dose mask. Criteria: the goals of data/protocols/head_and_neck.toml "
             f"(OpenKBP-Opt), the PTVs' D99/D95 on the PTV less its air (HU < {AIR_HU:g}) or "
             "on the whole PTV; hard: priority hard there. Time and peak memory: the whole "
             "`planner plan` under /usr/bin/time (GB = 10^9 bytes).", "",
             "Arm flags: " + "; ".join(f"{a}: `{' '.join(ARM_FLAGS[a]) or '(none)'}`"
                                        for a in ARMS), "",
             TABLE_HEADER, "|" + "---|" * (TABLE_HEADER.count("|") - 1)]
    bars: list[str] = []
    medians: list[str] = []
    for arm in arms:
        arm_rows = [r for (p, a), r in rows.items() if a == arm]
        lines += [table_row(r) for r in arm_rows]
        m, b = arm_summary(arm, arm_rows)
        if m:
            medians.append(m)
        bars += b
    lines += medians
    bars += seed_bars(rows)
    lines += ["", "## Bars (issue 16)", ""] + [f"- {b}" for b in bars]
    steps = [t for t in (time_lines([r for (p, a), r in rows.items() if a == arm], arm)
                         for arm in arms) if t]
    if steps:
        lines += ["", "## Where the time goes (median s per step of `planner plan`)", ""] + steps
    seeds = sorted({f"{a}: {r.get('seed')}" for (p, a), r in rows.items() if _ok(r)})
    wrong = [f"{p} {a}" for (p, a), r in rows.items() if _ok(r) and not r.get("seed_as_arm", True)]
    if wrong:
        seeds.append(f"**WARNING**: the seed note does not match the arm (check ARM_FLAGS): "
                     f"{', '.join(wrong)}")
    if seeds:
        lines += ["", "## Seed notes of the plans (summary.json)", ""] + [f"- {s}" for s in seeds]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def record(results: Path, row: dict[str, Any]) -> None:
    """Append one scored row to ``results`` and print its line."""
    with open(results, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(line(row), flush=True)


def score_on_dask(folders: Sequence[Path], arms: Sequence[str], args: argparse.Namespace,
                  results: Path) -> None:
    """The patients and arms still to score (all with ``--again``) as Dask tasks, each row
    appended to ``results`` as it finishes."""
    done = read_rows(results)
    tasks = [Task(f"{folder.name}-{arm}", score_patient, (folder, arm, args.work))
             for folder in folders for arm in arms
             if args.again or (args.split, folder.name, arm) not in done]
    say = functools.partial(print, file=sys.stderr, flush=True)
    with dask_client(cluster_options(args), say) as (client, limits):
        for row in run_tasks(client, tasks, limits, say):
            if row["status"] == "ok":  # else the progress line gave the error
                row = {k: v for k, v in row.items()
                       if k not in ("name", "status", "wall_s", "peak_memory_gb")}
                record(results, row)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("validation", "test"), default="validation")
    parser.add_argument("--patients", default=None,
                        help="comma-separated patient folders (default: every one of the split)")
    parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated, of seeded, "
                                                               "unseeded (default both)")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "bench_plan_quality",
                        help="results.jsonl, plans/, logs/ and the table go here")
    parser.add_argument("--table", type=Path, default=None,
                        help="the Markdown table (default WORK/table.md; give one per split "
                             "when WORK holds both)")
    parser.add_argument("--again", action="store_true",
                        help="plan and score again patients and arms already in results.jsonl")
    parser.add_argument("--table-only", action="store_true",
                        help="only rebuild the table from results.jsonl")
    parser.add_argument("--from-batch", type=Path, default=None, metavar="DIR",
                        help="score the plans of `planner batch --out DIR` (one arm; time and "
                             "memory from DIR/cohort.csv) instead of planning")
    add_cluster_options(parser)
    args = parser.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARM_FLAGS]
    if unknown:
        parser.error(f"--arms: unknown {unknown}; arms are {list(ARM_FLAGS)}")
    split_dir = DATA / f"{args.split}-pats"
    folders = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
    if args.patients:
        wanted = [p.strip() for p in args.patients.split(",") if p.strip()]
        missing = [p for p in wanted if not (split_dir / p).is_dir()]
        if missing:
            parser.error(f"--patients: {missing} not in {split_dir}")
        folders = [split_dir / p for p in wanted]
    results = args.work / "results.jsonl"
    table = args.table or args.work / "table.md"
    command = f".venv/bin/python benchmarks/bench_plan_quality_openkbp.py --split {args.split}"
    if args.work != parser.get_default("work"):
        command += f" --work {args.work}"
    if args.from_batch is not None:
        command += f" --arms {','.join(arms)} --from-batch {args.from_batch}"

    if not args.table_only:
        if not folders:
            parser.error(f"{split_dir}: no patient folders")
        help_text = subprocess.run([str(PLANNER), "plan", "--help"], capture_output=True,
                                   text=True, cwd=REPO).stdout
        for arm in arms:
            for flag in ARM_FLAGS[arm]:
                if flag not in help_text:
                    parser.error(f"arm {arm}: planner plan has no {flag} (edit ARM_FLAGS)")
        args.work.mkdir(parents=True, exist_ok=True)
        if args.workers is not None or args.scheduler is not None:
            score_on_dask(folders, arms, args, results)
        else:
            for folder in folders:
                for arm in arms:
                    done = read_rows(results)
                    if (args.split, folder.name, arm) in done and not args.again:
                        continue
                    record(results, score_patient(folder, arm, args.work, args.from_batch))
    all_rows = read_rows(results)
    if not any(k[0] == args.split for k in all_rows):
        print(f"{results}: no {args.split} results yet", file=sys.stderr)
        return 1
    text = write_table(table, all_rows, args.split, command)
    print("\n".join(t for t in text.splitlines() if t.startswith("- ")))
    print(f"table: {os.path.relpath(table, Path.cwd())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
