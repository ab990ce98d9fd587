"""Summary: what the plan is and how it was made, as ``summary.json`` holds it and as text."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np

import planner
from dose.grid import Grid
from planner.plan.beams import SMOOTHNESS_WEIGHT, PlanBeams
from planner.plan.delivery import DeliveredPlan
from planner.plan.fluence import FluencePlan
from planner.plan.goal_repair import GoalRepairReport
from planner.plan.grid import PlanGrids
from planner.plan.sequencing import MIN_MU_PER_SEGMENT, SequencedFields
from planner.plan.setup import PlanCase
from planner.review.goals import GoalRow, goal_rows_json

DICOM_FOLDER = "dicom"
REPORT_FOLDER = "report"
SUMMARY_FILE = "summary.json"
LOG_FILE = "plan.log"


def plan_summary(case: PlanCase, grids: PlanGrids, beams: PlanBeams, fluence: FluencePlan,
                 fields: SequencedFields, planned: DeliveredPlan, *, mu_price: float,
                 repair: GoalRepairReport, correction: dict[str, Any] | None,
                 normalisation: str, device: str, max_segments_per_beam: int) -> dict[str, Any]:
    """The content of ``summary.json`` up to the report (:func:`planner.plan.output.
    write_plan_folder` adds the report's figures and the times). ``correction``: the delivery
    correction's outcome (hard goals met by the first and the corrected plan, which was kept),
    None where none was needed."""
    patient, protocol, result = case.patient, case.protocol, fluence.result
    total_mu = float(sum(b.mu for b in planned.beams))
    segments = [len(b.segments) for b in planned.beams]
    return {
        "planner": planner.__version__, "patient": patient.name, "source": patient.source,
        "protocol": {"name": protocol.name, "source": protocol.source},
        # Which patient structure plays each protocol structure (planner.names' matching).
        "structures": {"mapping": case.names.mapping, "unmapped": list(case.names.unmapped),
                       "missing": list(case.names.missing)},
        "device": device, "fractions": case.fractions,
        "fraction_dose_cgy": case.fraction_dose_cgy,
        "grid": {"ct": _grid_json(patient.grid), "dose": _grid_json(grids.dose_grid)},
        "isocenter_xyz_mm": [round(v, 2) for v in beams.isocenter_xyz_mm],
        "beamlet_mm": beams.beamset.beamlet_size_mm, "beamlets": beams.beamset.n_beamlets,
        "dij_nonzeros": fluence.dij_nonzeros,
        "seed": fluence.seed_note, "conflicts": [c.explanation for c in case.conflicts],
        "optimisation": {"iterations": result.iterations, "stopped_by": result.stopped_by,
                         # As used in the end: lowered where the hard goals needed it.
                         "smoothness_weight": SMOOTHNESS_WEIGHT * result.regulariser_scale,
                         "steps": [dataclasses.asdict(s) for s in result.steps]},
        "goals": {"fluence": goal_rows_json(fluence.goals), "plan": goal_rows_json(planned.goals)},
        "beams": [{"name": b.name, "gantry_deg": b.beam.gantry_deg, "segments": len(b.segments),
                   "mu": round(b.mu, 2), "segment_mu": [round(s.mu, 2) for s in b.segments]}
                  for b in planned.beams],
        "segments": {"total": sum(segments), "max_per_beam": max(segments + [0]),
                     "limit_per_beam": max_segments_per_beam,
                     "min_mu_per_segment": MIN_MU_PER_SEGMENT},
        "mu": {"total_per_fraction": round(total_mu, 2),
               "per_cgy": round(total_mu / case.fraction_dose_cgy, 3),
               "least_per_fraction": round(sum(f.least_mu for f in fields.fields)
                                           / case.fractions, 2),
               # The segment-weight objective's price of one MU (over all fractions).
               "price_in_segment_weights": mu_price},
        # Hard goals the fluence plan met and the segment weights lost (CT grid), and repaired.
        "goal_repair": {"lost": list(repair.lost), "rounds": repair.rounds,
                        "restored": list(repair.restored)},
        # Where the repair left a hard goal lost: the fluence corrected for what delivery added.
        "delivery_correction": correction,
        "normalisation": normalisation,
        "versions": _versions(),
        "files": {"dicom": DICOM_FOLDER, "report": f"{REPORT_FOLDER}/report.html",
                  "log": LOG_FILE},
    }


def _grid_json(grid: Grid) -> dict[str, Any]:
    return {"shape_zyx": list(grid.shape), "spacing_zyx_mm": list(grid.spacing_mm),
            "origin_zyx_mm": [round(v, 3) for v in grid.origin_mm]}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "planner": planner.__version__}
    for package in ("numpy", "scipy", "pydicom", "torch", "cupy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def goal_table(title: str, rows: Sequence[GoalRow]) -> list[str]:
    """A goal table as text lines (value, limit, margin, met)."""
    width = max([len(g.goal.label) for g in rows] + [4])
    lines = [title]
    for g in rows:
        margin = f"{g.margin:+8.2f}" if np.isfinite(g.margin) else f"{'none':>8}"
        lines.append(f"  {g.goal.label:<{width}}  {g.goal.priority:<4}  {g.value:8.2f} {g.unit:<2}"
                     f"  margin {margin}  {'met' if g.met else 'NOT MET'}")
    met = sum(g.met for g in rows)
    lines.append(f"  {met} of {len(rows)} goals met"
                 + (f"; NOT MET: {', '.join(g.goal.label for g in rows if not g.met)}"
                    if met < len(rows) else ""))
    return lines


def summary_text(summary: dict[str, Any], goals_fluence: Sequence[GoalRow],
                 goals_plan: Sequence[GoalRow]) -> str:
    """The end-of-run summary: goals before/after sequencing, segments, MU, time per step."""
    correction = summary["delivery_correction"]
    corrected = correction is not None and correction["kept"]
    lines = goal_table("goals, fluence plan corrected for delivery (its dose plus what the first "
                       "deliverable plan added):" if corrected
                       else "goals, fluence plan (before sequencing):", goals_fluence)
    lines += goal_table("goals, deliverable plan (after sequencing and segment weights):",
                        goals_plan)
    repair = summary["goal_repair"]
    if repair["lost"]:
        lines.append(f"segment weights: hard goals lost after sequencing: "
                     f"{', '.join(repair['lost'])}; restored in {repair['rounds']} repair rounds: "
                     f"{', '.join(repair['restored']) or 'none'}")
    if correction is not None:
        met = correction["hard_goals_met"]
        lines.append("delivery correction: " + (
            "the corrected fluence could not be sequenced" if met is None else
            f"hard goals met {met['first']} by the first plan, {met['corrected']} corrected")
            + f"; {'the corrected' if corrected else 'the first'} plan kept")
    mu = summary["mu"]
    lines.append("beams: " + ", ".join(f"{b['name']} {b['segments']} seg {b['mu']:.0f} MU"
                                       for b in summary["beams"]))
    segments = summary["segments"]
    lines.append(f"segments {segments['total']} (max {segments['max_per_beam']} per beam); "
                 f"{mu['total_per_fraction']:.0f} MU per fraction for "
                 f"{summary['fraction_dose_cgy']:.0f} cGy: {mu['per_cgy']:.2f} MU/cGy "
                 f"(the fluence plan's least possible {mu['least_per_fraction']:.0f} MU)")
    lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["times_s"].items())
                 + f"; total {summary['total_s']:.1f} s")
    return "\n".join(lines)
