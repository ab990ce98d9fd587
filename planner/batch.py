"""A planned cohort's results: one row per patient, ``cohort.csv`` (and Parquet), the HTML report.

A patient's row comes from its plan folder (the ``summary.json`` that
:func:`planner.plan.plan_patient` writes: goals met, MU, segments, time per step, the
plan-quality figures) and, where the patient has a reference dose (an OpenKBP ``dose.csv``),
the same figures of the plan and of the reference and the plan's dose score against it (the
OpenKBP challenge's: mean absolute difference over the possible-dose mask), both on the
patient's grid as ``benchmarks/bench_plan_quality_openkbp.py`` scores them.
:mod:`planner.cohort` adds status, error, wall time and peak memory.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import PlannerError
from planner.io._atomic import write_file_atomic
from planner.patient import Patient
from planner.protocol import Protocol

COHORT_CSV = "cohort.csv"
COHORT_PARQUET = "cohort.parquet"
COHORT_HTML = "cohort.html"
SUMMARY_FILE = "summary.json"

#: Columns every row has, first; the figures and times follow in the order first seen.
FIRST_COLUMNS = ("name", "input", "status", "error", "hard_met", "hard_goals", "soft_met",
                 "soft_goals", "mu_per_fraction", "segments", "dose_score_gy", "total_s",
                 "wall_s", "peak_memory_gb", "seed", "report", "log")


def plan_dose_on_patient_grid(plan_dir: Path, patient: Patient) -> np.ndarray:
    """The plan's RT Dose (``plan_dir/dicom/RD*.dcm``) resampled onto the patient's grid."""
    from planner.io.rtdose import read_rt_dose
    from planner.review.dvh import resample_dose

    found = sorted((plan_dir / "dicom").glob("RD*.dcm"))
    if not found:
        raise PlannerError(f"{plan_dir / 'dicom'}: no RT Dose (RD*.dcm)")
    dose, grid = read_rt_dose(found[0])
    return resample_dose(dose, grid, patient.grid)


def _figures(prefix: str, figures: Sequence[Any]) -> dict[str, float]:
    return {f"{prefix}: {f.name} {f.structure}".strip(): round(float(f.value), 4)
            for f in figures}


def reference_dose(source: str) -> np.ndarray | None:
    """The reference dose of the patient read from ``source``: an OpenKBP folder's ``dose.csv``
    (Gy, on the patient's grid), else None."""
    from planner.io.openkbp import read_openkbp_dose

    folder = Path(source)
    if not ((folder / "ct.csv").is_file() or (folder / "ct.csv.gz").is_file()):
        return None
    return read_openkbp_dose(folder)


def plan_row(plan_dir: Path, reference: tuple[Patient, Protocol, np.ndarray] | None = None
             ) -> dict[str, Any]:
    """The values of one planned patient (``plan_dir`` as ``planner plan`` wrote it).

    With ``reference`` (the patient, the protocol it was planned with, its reference dose on the
    patient's grid, Gy) the plan and reference figures on the patient's grid and the dose score;
    without, the plan's figures as its summary gives them.
    """
    summary = json.loads((plan_dir / SUMMARY_FILE).read_text())
    goals = summary["goals"]["plan"]
    hard = [g for g in goals if g["priority"] == "hard"]
    soft = [g for g in goals if g["priority"] != "hard"]
    row: dict[str, Any] = {
        "hard_met": sum(g["met"] for g in hard), "hard_goals": len(hard),
        "soft_met": sum(g["met"] for g in soft), "soft_goals": len(soft),
        "mu_per_fraction": summary["mu"]["total_per_fraction"],
        "segments": summary["segments"]["total"], "total_s": summary["total_s"],
        "seed": summary["seed"],
    }
    if reference is None:
        row.update({f"plan: {q['figure']} {q['structure']}": q["value"]
                    for q in summary["quality"]})
    else:
        row.update(_reference_scores(plan_dir, *reference))
    row.update({f"time: {step} s": t for step, t in summary["times_s"].items()})
    return row


def _reference_scores(plan_dir: Path, patient: Patient, protocol: Protocol,
                      reference: np.ndarray) -> dict[str, Any]:
    """Plan and reference figures (:func:`planner.review.quality.quality_figures`) and the dose
    score over the possible-dose mask (when the patient has one), on the patient's grid."""
    from planner.review.quality import quality_figures

    dose = plan_dose_on_patient_grid(plan_dir, patient)
    values: dict[str, Any] = {}
    if patient.possible_dose_mask is not None:
        pdm = patient.possible_dose_mask
        values["dose_score_gy"] = round(float(np.abs(dose[pdm] - reference[pdm]).mean()), 4)
    values.update(_figures("plan", quality_figures(patient, dose, protocol)))
    values.update(_figures("reference", quality_figures(patient, reference, protocol)))
    return values


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """:data:`FIRST_COLUMNS`, then every other key in the order first seen."""
    seen = dict.fromkeys(FIRST_COLUMNS)
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def read_cohort_csv(path: Path) -> dict[str, dict[str, Any]]:
    """The rows of an earlier ``cohort.csv`` by patient name (numbers back as numbers)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {r["name"]: {k: _number(v) for k, v in r.items() if v != ""}
                for r in csv.DictReader(f)}


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def write_cohort(out_dir: Path, rows: Sequence[dict[str, Any]]) -> list[Path]:
    """``cohort.csv``, ``cohort.parquet`` (when pyarrow is installed) and ``cohort.html`` in
    ``out_dir``, each replaced atomically; returns the files written."""
    names = columns(rows)
    text = io.StringIO()
    writer = csv.DictWriter(text, names, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    written = [write_file_atomic(out_dir / COHORT_CSV,
                                 lambda tmp: tmp.write_text(text.getvalue()), overwrite=True)]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pass
    else:
        table = pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
        written.append(write_file_atomic(out_dir / COHORT_PARQUET,
                                         lambda tmp: pq.write_table(table, tmp), overwrite=True))
    page = cohort_html(rows, names)
    written.append(write_file_atomic(out_dir / COHORT_HTML, lambda tmp: tmp.write_text(page),
                                     overwrite=True))
    return written


def _numeric(rows: Sequence[dict[str, Any]], name: str) -> list[float]:
    return [float(r[name]) for r in rows
            if isinstance(r.get(name), (int, float)) and not isinstance(r.get(name), bool)
            and math.isfinite(r[name])]


def _box_plots(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> bytes | None:
    """One box plot per numeric measure of the planned patients (PNG), the plan's and the
    reference's side by side where both are given, or None when there is none."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ok = [r for r in rows if r.get("status") == "ok"]
    plots: list[tuple[str, list[tuple[str, list[float]]]]] = []
    for name in names:
        if name in ("hard_goals", "soft_goals") or name.startswith("reference: "):
            continue
        values = _numeric(ok, name)
        if not values:
            continue
        figure = name.removeprefix("plan: ")
        reference = _numeric(ok, f"reference: {figure}") if figure != name else []
        plots.append((figure, [("plan", values), ("reference", reference)] if reference
                      else [("", values)]))
    if not plots:
        return None
    cols = 4
    nrows = math.ceil(len(plots) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, (title, boxes) in zip(axes.flat, plots):
        ax.boxplot([values for _, values in boxes], widths=0.5)
        for i, (_, values) in enumerate(boxes, start=1):
            ax.plot(np.full(len(values), i), values, ".", alpha=0.5)
        ax.set_xticks(range(1, len(boxes) + 1), [label for label, _ in boxes], fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(plots):]:
        ax.axis("off")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


def cohort_html(rows: Sequence[dict[str, Any]], names: Sequence[str]) -> str:
    """The cohort report: counts, box plots of the measures, the table with links to each
    patient's report and log."""
    from planner.review.report import _CSS, _img, _table

    done = sum(r.get("status") == "ok" for r in rows)
    failed = sum(r.get("status") == "failed" for r in rows)
    body = [f"<h1>Cohort: {len(rows)} patients</h1>",
            f"<p>{done} planned, {failed} failed, {len(rows) - done - failed} not run.</p>"]
    png = _box_plots(rows, names)
    if png is not None:
        body += ["<h2>Measures of the planned patients</h2>",
                 _img("box plots", png, "one box per measure, a dot per patient")]

    def cell(row: dict[str, Any], name: str) -> str:
        value = row.get(name, "")
        if name in ("report", "log") and value:
            return f'<a href="{html.escape(str(value))}">{html.escape(name)}</a>'
        return html.escape(f"{value:g}" if isinstance(value, float) else str(value))

    body += ["<h2>Patients</h2>",
             _table(names, [[cell(r, n) for n in names] for r in rows],
                    ["unmet" if r.get("status") == "failed" else "" for r in rows])]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Cohort</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
