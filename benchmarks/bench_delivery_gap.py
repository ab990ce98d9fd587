"""What delivery adds to the fluence plan's dose, and how much of it is leaf transmission.

For each OpenKBP patient: the stages of ``planner plan`` (default options, seeded) up to the
first deliverable plan (sequencing and segment weights, before the goal repair), then the same
segments and MU with the machine's leaf transmission set to 0. Each protocol goal's value on
the fluence plan, on the deliverable plan and on the deliverable plan without transmission (CT
grid, as the goal tables read them): the beamlets do not model transmission, the segments' dose
does (``dose.segments``), so the last two columns' difference is what it adds. The fluence
column is the Dij's sampled voxels filled from their neighbours: its normal-tissue mean is not
comparable with the others.

Run: ``.venv/bin/python benchmarks/bench_delivery_gap.py [--split validation] pt_212 pt_208``.
Results: ``benchmarks/results/design_history.md``, "Delivery correction".
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from planner.io import load_patient
from planner.plan.beams import place_beams
from planner.plan.delivery import trace_fields
from planner.plan.fluence import optimise_fluence
from planner.plan.grid import prepare_grids
from planner.plan.log import StepLog
from planner.plan.segment_weights import weight_segments
from planner.plan.sequencing import sequence_fields
from planner.plan.setup import prepare_case

OPENKBP = Path(__file__).resolve().parents[2] / "shared" / "openkbp" / "provided-data"


def delivery_gap(folder: Path) -> list[tuple[str, float, float, float]]:
    """(goal, fluence, delivered, delivered without transmission) per protocol goal."""
    case = prepare_case(load_patient(folder), None)
    grids = prepare_grids(case, 3.0)
    beams = place_beams(case, 9, 5.0)
    log = StepLog()
    fluence = optimise_fluence(case, grids, beams, device="cpu", seed=True, time_limit_s=None,
                               log=log)
    fields = sequence_fields(case, beams, fluence.result.x)
    delivery = trace_fields(case, grids, beams, fields, device="cpu")
    weights = weight_segments(case, grids, beams, fields, fluence, traced=delivery.traced,
                              device="cpu", log=log)
    planned = delivery.plan(weights.result.x)
    opaque = dataclasses.replace(beams, machine=dataclasses.replace(beams.machine,
                                                                    leaf_transmission=0.0))
    without = dataclasses.replace(delivery, beams=opaque).plan(weights.result.x)
    on_fluence = {g.goal.label: g.value for g in fluence.goals}
    return [(a.goal.label, on_fluence[a.goal.label], a.value, b.value)
            for a, b in zip(planned.goals, without.goals)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("patients", nargs="+", help="patient folders, e.g. pt_212")
    args = parser.parse_args()
    for name in args.patients:
        print(f"{name}: goal, fluence / delivered / delivered without transmission")
        for label, fluence, delivered, opaque in delivery_gap(OPENKBP / f"{args.split}-pats"
                                                              / name):
            print(f"  {label:<40} {fluence:7.2f} / {delivered:7.2f} / {opaque:7.2f}")


if __name__ == "__main__":
    main()
