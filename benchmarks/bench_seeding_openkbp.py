"""Benchmark: fluence planning seeded by the dose prediction against unseeded, on OpenKBP (issue 6).

For each OpenKBP validation patient: the Dij of ``bench_openkbp_criteria.openkbp_dij`` (9 fields,
5 mm beamlets, the patient's own grid), then the ``head_and_neck`` protocol planned twice by
``planner.optimize.optimise_patient`` with the fluence smoothness of ``planner plan``: unseeded,
and seeded as ``planner plan --seed`` seeds: the prediction (:func:`planner.predict.seed.
predict_seed`) made on a second thread while the Dij is computed, then what it gives the
optimiser (:func:`planner.predict.seed.seed_arguments`: the floors of the first sparing push and
the dose mimicking in the sparing step). Per arm:

- criteria met: the protocol's goals (the OpenKBP-Opt criteria) on the plan as optimised, and how
  many of its hard goals;
- time / iterations to the hard goals: until the end of the first step after which every hard goal
  holds; the seeded time includes what the seed added to the wall time: the Dij is computed a
  second time with the prediction beside it, and the time beyond the Dij alone (at least 0) is
  the seed's; "-" if never;
- organ mean doses at equal target coverage: each plan scaled so that D95 of PTV70 is 70 Gy, then
  the mean dose of every organ the patient has, averaged over the organs;
- the whole optimisation's iterations and wall time (with ``--time-limit`` both arms get the same
  wall time: the seeded arm's optimiser gets the limit less the seed's time).

The seed's time is in the table too (prediction on its thread, and what it added).

Run: ``.venv/bin/python benchmarks/bench_seeding_openkbp.py --out DIR [--model PT] [--patients N]
[--time-limit S] [--shard K/N]``: per-patient results go to ``DIR/pt_N.json`` (a rerun skips the
patients done, so N processes with ``--shard 0/N`` ... ``N-1/N`` can share the work), and the table
with the totals over every patient in ``DIR`` to ``DIR/seeding.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench_openkbp_criteria import VALIDATION, openkbp_dij
from optim.autoplan import AutoPlanResult
from optim.dvh import dose_at_volume
from planner.io.openkbp import read_openkbp_patient
from planner.optimize import optimise_patient
from planner.patient import Patient
from planner.plan import smoothness_regulariser
from planner.predict.infer import DEFAULT_MODEL
from planner.predict.seed import Seed, predict_seed, seed_arguments
from planner.protocol import read_protocol

NORMALISE_TARGET, NORMALISE_GY = "PTV70", 70.0


@dataclass(frozen=True)
class Arm:
    criteria_met: int
    criteria: int
    hard_met: int
    hard: int
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
    hard = [g for g in result.goals if g.hard]
    return Arm(sum(g.met for g in result.goals), len(result.goals), sum(g.met for g in hard),
               len(hard), to_hard_s, to_hard_it,
               float(np.mean(organs)), d95, result.iterations, result.elapsed_s + head_start_s)


def _time(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


@dataclass(frozen=True)
class PatientResult:
    """Both arms of one patient; the Dij's time alone, the prediction's on its thread, and
    what the seed added to the wall time (s)."""

    unseeded: Arm
    seeded: Arm
    dij_s: float
    predict_s: float
    seed_added_s: float


def _row(name: str, r: PatientResult) -> str:
    u, s = r.unseeded, r.seeded
    return (f"| {name} | {u.criteria_met} / {s.criteria_met} of {u.criteria} "
            f"({u.hard_met} / {s.hard_met} of {u.hard}) | "
            f"{_time(u.to_hard_s)} ({u.to_hard_iterations or '-'}) / {_time(s.to_hard_s)} "
            f"({s.to_hard_iterations or '-'}) | {u.organ_mean_gy:.2f} / {s.organ_mean_gy:.2f} | "
            f"{u.ptv70_d95_gy:.2f} / {s.ptv70_d95_gy:.2f} | {u.total_s:.0f} ({u.iterations}) / "
            f"{s.total_s:.0f} ({s.iterations}) | {r.dij_s:.0f} / {r.predict_s:.1f} / "
            f"{r.seed_added_s:.1f} |")


def _timed_prediction(patient: Patient, model_path: Path) -> tuple[Seed, float]:
    start = time.perf_counter()
    return predict_seed(patient, model_path, device="cpu"), time.perf_counter() - start


def plan_patient_both_ways(folder: Path, model_path: Path, time_limit_s: float | None
                           ) -> PatientResult:
    """Both arms of one patient (see the module docstring), and the seed's times."""
    protocol = read_protocol("head_and_neck")
    patient = read_openkbp_patient(folder)
    start = time.perf_counter()
    beamset, dij = openkbp_dij(patient)
    dij_s = time.perf_counter() - start
    regularisers = [smoothness_regulariser(beamset)]
    plain = optimise_patient(patient, dij.matrix, protocol, regularisers=regularisers,
                             time_limit_s=time_limit_s)
    # As planner plan seeds: the prediction on a second thread while the (same) Dij is computed.
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=1) as pool:
        predicting = pool.submit(_timed_prediction, patient, model_path)
        openkbp_dij(patient)
        seed, predict_s = predicting.result()
        arguments = seed_arguments(patient, dij.matrix, seed)
    seed_s = max(time.perf_counter() - start - dij_s, 0.0)
    if not seed.seeded:
        raise SystemExit(f"{folder.name}: {seed.note}")
    # What the seed added to the wall time comes out of the seeded arm's budget.
    seeded = optimise_patient(patient, dij.matrix, protocol, regularisers=regularisers,
                              **arguments, time_limit_s=None if time_limit_s is None
                              else max(time_limit_s - seed_s, 1.0))
    return PatientResult(_arm(patient, plain.dose_gy, plain.result, 0.0),
                         _arm(patient, seeded.dose_gy, seeded.result, seed_s),
                         dij_s, predict_s, seed_s)


def summary_lines(results: dict[str, PatientResult]) -> list[str]:
    """Totals of each arm over the patients in ``results``."""
    lines = []
    for name in ("unseeded", "seeded"):
        arms = [getattr(r, name) for r in results.values()]
        reached = [a for a in arms if a.to_hard_s is not None]
        median_s = np.median([a.to_hard_s for a in reached]) if reached else float("nan")
        median_it = np.median([a.to_hard_iterations for a in reached]) if reached else 0
        lines.append(
            f"{name}: criteria met {sum(a.criteria_met for a in arms)}/"
            f"{sum(a.criteria for a in arms)} (hard {sum(a.hard_met for a in arms)}/"
            f"{sum(a.hard for a in arms)}); all hard goals reached on {len(reached)}/{len(arms)} "
            f"patients, median {median_s:.1f} s / {median_it:.0f} iterations; organ mean dose at "
            f"equal coverage {np.mean([a.organ_mean_gy for a in arms]):.2f} Gy; whole "
            f"optimisation median {np.median([a.total_s for a in arms]):.1f} s")
    both = [(r.unseeded, r.seeded) for r in results.values()
            if r.unseeded.to_hard_s is not None and r.seeded.to_hard_s is not None]
    if both:
        faster = sum(s.to_hard_s < u.to_hard_s for u, s in both)
        same = sum(s.to_hard_iterations == u.to_hard_iterations for u, s in both)
        lines.append(f"both arms reached the hard goals on {len(both)} patients; the seeded one "
                     f"sooner on {faster}, in as many iterations on {same}")
    times = list(results.values())
    lines.append(f"seed: prediction median {np.median([r.predict_s for r in times]):.1f} s on "
                 f"its thread beside the Dij (median {np.median([r.dij_s for r in times]):.0f} s "
                 f"alone); wall time it added median "
                 f"{np.median([r.seed_added_s for r in times]):.1f} s, at most "
                 f"{max(r.seed_added_s for r in times):.1f} s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="network weights")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of per-patient results (pt_N.json; patients already there "
                             "are not planned again) and the Markdown table (seeding.md)")
    parser.add_argument("--patients", type=int, default=None, help="only the first N patients")
    parser.add_argument("--shard", default="0/1",
                        help="K/N: plan only patients K, K+N, ... (run N processes side by side)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="optimisation budget per plan, s")
    args = parser.parse_args()
    k, n = (int(v) for v in args.shard.split("/"))
    folders = sorted(p for p in VALIDATION.iterdir() if p.is_dir())[:args.patients]
    args.out.mkdir(parents=True, exist_ok=True)
    for folder in folders[k::n]:
        path = args.out / f"{folder.name}.json"
        if path.exists():
            continue
        result = plan_patient_both_ways(folder, args.model, args.time_limit)
        path.write_text(json.dumps(dataclasses.asdict(result)))
        print(_row(folder.name, result), flush=True)
    results = {}
    for folder in folders:
        path = args.out / f"{folder.name}.json"
        if path.exists():
            saved = json.loads(path.read_text())
            results[folder.name] = PatientResult(
                Arm(**saved.pop("unseeded")), Arm(**saved.pop("seeded")), **saved)
    header = ("| patient | criteria met (unseeded / seeded), (hard ones) | "
              "to hard goals, s (iterations) | "
              "organ mean at PTV70 D95 = 70 Gy, Gy | PTV70 D95 as planned, Gy | "
              "whole optimisation, s (iterations) | Dij alone / prediction / seed added, s |")
    rows = [_row(name, r) for name, r in results.items()]
    totals = summary_lines(results)
    print("\n".join(totals))
    (args.out / "seeding.md").write_text(
        f"# Seeded vs unseeded fluence planning, OpenKBP validation ({len(results)} patients)\n\n"
        f"Command: `.venv/bin/python benchmarks/bench_seeding_openkbp.py --model {args.model} "
        f"--out {args.out}{'' if args.time_limit is None else f' --time-limit {args.time_limit:g}'}`"
        f"\n\n{header}\n" + "|---" * 7 + "|\n" + "\n".join(rows) + "\n\n"
        + "\n".join(f"- {t}" for t in totals) + "\n")


if __name__ == "__main__":
    main()
