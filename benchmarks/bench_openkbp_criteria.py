"""Benchmark: OpenKBP-Opt clinical criteria met by automatic plans vs the reference plans.

For each OpenKBP validation patient (``../shared/openkbp/provided-data/validation-pats``): the dose
engine on the patient's CT (its own grid, rows limited to the possible-dose mask), 9 fields at
0, 40, ..., 320 deg with 5 mm beamlets covering the PTVs, the bundled ``head_and_neck`` protocol
(OpenKBP-Opt criteria, DESIGN.md) planned by ``planner.optimize.optimise_patient``; then every
criterion the patient has is evaluated on the plan's dose and on the reference ``dose.csv``.

Run: ``.venv/bin/python benchmarks/bench_openkbp_criteria.py [--patients N] [--time-limit S]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dose.beams import BeamSet
from dose.dij import DoseInfluence, compute_dij
from optim.autoplan import evaluate_goals
from planner.io.openkbp import read_openkbp_dose, read_openkbp_patient
from planner.optimize import fluence_problem, optimise_patient
from planner.patient import Patient
from planner.plan import place_beams, prepare_case
from planner.protocol import read_protocol

VALIDATION = (Path(__file__).resolve().parent.parent.parent / "shared" / "openkbp"
              / "provided-data" / "validation-pats")


def openkbp_dij(patient: Patient) -> tuple[BeamSet, DoseInfluence]:
    """9 fields at 0, 40, ..., 320 deg aimed at the PTVs' centroid, 5 mm beamlets covering them
    (``planner plan``'s beams, :func:`planner.plan.place_beams`), and their Dij on the patient's
    own grid over the possible-dose mask."""
    beams = place_beams(prepare_case(patient, "head_and_neck"), 9, 5.0)
    return beams.beamset, compute_dij(patient.density, patient.grid, patient.grid,
                                      beams.beamset, beams.model,
                                      dose_mask=patient.possible_dose_mask)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=None, help="only the first N patients")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="optimisation budget per patient, s")
    args = parser.parse_args()
    protocol = read_protocol("head_and_neck")
    folders = sorted(p for p in VALIDATION.iterdir() if p.is_dir())[:args.patients]
    totals = {"plan": 0, "reference": 0, "criteria": 0}
    for folder in folders:
        patient = read_openkbp_patient(folder)
        reference = read_openkbp_dose(folder)
        start = time.perf_counter()
        beamset, dij = openkbp_dij(patient)
        dij_s = time.perf_counter() - start
        problem = fluence_problem(patient, protocol)
        plan = optimise_patient(patient, dij.matrix, protocol, time_limit_s=args.time_limit,
                                problem=problem)
        goals = problem.goals
        ours = plan.result.goals
        theirs = evaluate_goals(reference.ravel(), goals)
        n_ours, n_ref = sum(r.met for r in ours), sum(r.met for r in theirs)
        totals["plan"] += n_ours
        totals["reference"] += n_ref
        totals["criteria"] += len(goals)
        print(f"{folder.name}: {beamset.n_beamlets} beamlets, Dij {dij_s:.0f} s, optimisation "
              f"{plan.result.elapsed_s:.0f} s ({plan.result.iterations} it): criteria met "
              f"plan {n_ours}/{len(goals)}, reference {n_ref}/{len(goals)}")
        for a, b in zip(ours, theirs):
            if a.met != b.met:
                print(f"    {a.label:<28} plan {a.value:7.2f} ({'met' if a.met else 'NOT met'})"
                      f"  reference {b.value:7.2f} ({'met' if b.met else 'NOT met'})")
        print(f"    stopped: {plan.result.stopped_by}", flush=True)
    c = max(totals["criteria"], 1)
    print(f"{len(folders)} patients: plan met {totals['plan']}/{totals['criteria']} criteria "
          f"({100 * totals['plan'] / c:.0f} %), reference {totals['reference']}/"
          f"{totals['criteria']} ({100 * totals['reference'] / c:.0f} %)")


if __name__ == "__main__":
    main()
