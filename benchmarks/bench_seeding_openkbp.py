"""Benchmark: fluence planning seeded by the dose prediction against unseeded, on OpenKBP (issue 6).

For each OpenKBP validation patient: the Dij of ``bench_openkbp_criteria.openkbp_dij`` (9 fields,
5 mm beamlets, the patient's own grid), then the ``head_and_neck`` protocol planned twice by
``planner.optimize.optimise_patient`` with the fluence smoothness of ``planner plan``: unseeded,
and seeded by :func:`planner.predict.seed.seed_optimiser` (dose mimicking + warm start). Per arm:

- criteria met: the protocol's goals (the OpenKBP-Opt criteria) on the plan as optimised;
- time / iterations to the hard goals: until the end of the first step after which every hard goal
  holds (the seeded time includes the prediction and the warm-start fit); "-" if never;
- organ mean doses at equal target coverage: each plan scaled so that D95 of PTV70 is 70 Gy, then
  the mean dose of every organ the patient has, averaged over the organs;
- the whole optimisation's iterations and wall time.

Run: ``.venv/bin/python benchmarks/bench_seeding_openkbp.py --model data/models/openkbp_unet.pt
[--patients N] [--time-limit S] [--table FILE]`` (``--table`` writes the per-patient table and the
totals as Markdown).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench_openkbp_criteria import VALIDATION, openkbp_dij
from dose.beam_model import load_beam_model
from optim.autoplan import AutoPlanResult
from optim.dvh import dose_at_volume
from planner.io.openkbp import read_openkbp_patient
from planner.optimize import optimise_patient
from planner.patient import Patient
from planner.pipeline import smoothness_regulariser
from planner.predict.infer import DEFAULT_MODEL
from planner.predict.seed import seed_optimiser
from planner.protocol import read_protocol

NORMALISE_TARGET, NORMALISE_GY = "PTV70", 70.0


@dataclass(frozen=True)
class Arm:
    criteria_met: int
    criteria: int
    to_hard_s: float | None
    to_hard_iterations: int | None
    organ_mean_gy: float
    ptv70_d95_gy: float
    iterations: int
    total_s: float


def _to_hard_goals(result: AutoPlanResult, head_start_s: float) -> tuple[float | None, int | None]:
    elapsed, iterations = head_start_s, 0
    for step in result.steps:
        elapsed += step.elapsed_s
        iterations += step.iterations
        if step.hard_goals_met:
            return elapsed, iterations
    return None, None


def _arm(patient: Patient, dose_gy: np.ndarray, result: AutoPlanResult,
         head_start_s: float) -> Arm:
    ptv = patient.structure(NORMALISE_TARGET).mask
    d95 = dose_at_volume(dose_gy[ptv], 0.95)
    scaled = dose_gy * (NORMALISE_GY / d95)
    organs = [float(scaled[s.mask].mean()) for s in patient.structures if s.kind == "organ"]
    to_hard_s, to_hard_it = _to_hard_goals(result, head_start_s)
    return Arm(sum(g.met for g in result.goals), len(result.goals), to_hard_s, to_hard_it,
               float(np.mean(organs)), d95, result.iterations, result.elapsed_s + head_start_s)


def _time(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="network weights")
    parser.add_argument("--patients", type=int, default=None, help="only the first N patients")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="optimisation budget per plan, s")
    parser.add_argument("--table", type=Path, default=None, help="write a Markdown table here")
    args = parser.parse_args()
    protocol = read_protocol("head_and_neck")
    model = load_beam_model()
    folders = sorted(p for p in VALIDATION.iterdir() if p.is_dir())[:args.patients]
    header = ("| patient | criteria met (unseeded / seeded) | to hard goals, s (it) | "
              "organ mean at PTV70 D95 = 70 Gy, Gy | PTV70 D95 as planned, Gy | "
              "whole optimisation, s (it) |")
    lines = [header, "|" + "---|" * 6]
    arms: dict[str, list[Arm]] = {"unseeded": [], "seeded": []}
    for folder in folders:
        patient = read_openkbp_patient(folder)
        beamset, dij = openkbp_dij(patient, model)
        regularisers = [smoothness_regulariser(beamset)]
        plain = optimise_patient(patient, dij.matrix, protocol, regularisers=regularisers,
                                 time_limit_s=args.time_limit)
        start = time.perf_counter()
        seed = seed_optimiser(patient, dij.matrix, args.model, device="cpu")
        seed_s = time.perf_counter() - start
        if not seed.seeded:
            raise SystemExit(f"{folder.name}: {seed.note}")
        seeded = optimise_patient(patient, dij.matrix, protocol, regularisers=regularisers,
                                  extra_objectives=seed.objectives, x0=seed.x0,
                                  time_limit_s=args.time_limit)
        u = _arm(patient, plain.dose_gy, plain.result, 0.0)
        s = _arm(patient, seeded.dose_gy, seeded.result, seed_s)
        arms["unseeded"].append(u)
        arms["seeded"].append(s)
        lines.append(
            f"| {folder.name} | {u.criteria_met} / {s.criteria_met} of {u.criteria} | "
            f"{_time(u.to_hard_s)} ({u.to_hard_iterations or '-'}) / {_time(s.to_hard_s)} "
            f"({s.to_hard_iterations or '-'}) | {u.organ_mean_gy:.2f} / {s.organ_mean_gy:.2f} | "
            f"{u.ptv70_d95_gy:.2f} / {s.ptv70_d95_gy:.2f} | {u.total_s:.0f} ({u.iterations}) / "
            f"{s.total_s:.0f} ({s.iterations}) |")
        print(lines[-1], f"(seed {seed_s:.1f} s)", flush=True)
    total = {}
    for name, rows in arms.items():
        reached = [a for a in rows if a.to_hard_s is not None]
        total[name] = (
            f"{name}: criteria met {sum(a.criteria_met for a in rows)}/"
            f"{sum(a.criteria for a in rows)}; hard goals reached on {len(reached)}/{len(rows)}, "
            f"median {np.median([a.to_hard_s for a in reached]) if reached else float('nan'):.1f} s"
            f" / {np.median([a.to_hard_iterations for a in reached]) if reached else 0:.0f} it; "
            f"organ mean at equal coverage {np.mean([a.organ_mean_gy for a in rows]):.2f} Gy; "
            f"whole optimisation median {np.median([a.total_s for a in rows]):.1f} s")
        print(total[name])
    if args.table is not None:
        args.table.write_text(
            f"# Seeded vs unseeded fluence planning, OpenKBP validation ({len(folders)} patients)\n\n"
            f"Command: `.venv/bin/python benchmarks/bench_seeding_openkbp.py --model {args.model}"
            f"{'' if args.time_limit is None else f' --time-limit {args.time_limit:g}'}`\n\n"
            + "\n".join(lines) + "\n\n" + "\n".join(f"- {t}" for t in total.values()) + "\n")


if __name__ == "__main__":
    main()
