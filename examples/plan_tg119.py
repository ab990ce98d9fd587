"""Plan the AAPM TG-119 C-shape through the Python API and read the summary.

Shows: load the bundled example patient, plan it with its bundled protocol (the same steps as
``planner plan``), then read what a dosimetrist looks at first from the result: each clinical
goal on the deliverable plan, the segments and the monitor units.

Run from the repository root (the plan takes a minute or two on a laptop's CPU):

    .venv/bin/python examples/plan_tg119.py out/tg119
    .venv/bin/python examples/plan_tg119.py out/tg119 --quick   # coarse, seconds: a first try

OUT must not exist; it receives dicom/ (RT Plan, RT Dose, CT, RTSTRUCT), report/report.html,
summary.json and plan.log.
"""

import argparse
from pathlib import Path

import planner

#: Coarse settings for a quick look: 5 beams, 10 mm beamlets, an 8 mm dose grid, 3 segments.
QUICK = {"beam_count": 5, "beamlet_mm": 10.0, "dose_grid_mm": 8.0, "max_segments_per_beam": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--quick", action="store_true", help="coarse settings (a first try)")
    args = parser.parse_args()

    patient = planner.load_patient("example:cshape")
    print(f"{patient.name}: structures {[s.name for s in patient.structures]}")
    result = planner.plan_patient(patient, "tg119_c_shape", out_dir=args.out, device="cpu",
                                  **(QUICK if args.quick else {}))

    summary = result.summary  # the content of OUT/summary.json
    for goal in summary["goals"]["plan"]:
        state = "met" if goal["met"] else "NOT MET"
        print(f"{goal['goal']:<40} {goal['value']:8.2f} {goal['unit']:<3} {state}")
    print(f"{summary['segments']['total']} segments, "
          f"{summary['mu']['total_per_fraction']:.0f} MU per fraction")
    print(f"report: {args.out / 'report' / 'report.html'}")


if __name__ == "__main__":
    main()
