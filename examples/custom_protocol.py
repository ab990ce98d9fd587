"""Plan with a protocol file of your own: prescription and clinical goals in TOML.

Shows: read a protocol file (``examples/cshape_60gy.toml``: 60 Gy in 30 fractions to the
TG-119 C-shape, a stricter core), see how it maps onto the patient's structures, plan with it
and compare each goal's value with its limit. To start from what ``planner plan`` would use for
your patient, let it write the file: ``planner protocol init PATIENT --toml my_protocol.toml``.

Run from the repository root (a minute or two; ``--quick``: coarse, seconds):

    .venv/bin/python examples/custom_protocol.py out/cshape_60gy
    .venv/bin/python examples/custom_protocol.py out/cshape_60gy --protocol my_protocol.toml
"""

import argparse
from pathlib import Path

import planner

PROTOCOL = Path(__file__).with_name("cshape_60gy.toml")
#: Coarse settings for a quick look: 5 beams, 10 mm beamlets, an 8 mm dose grid, 3 segments.
QUICK = {"beam_count": 5, "beamlet_mm": 10.0, "dose_grid_mm": 8.0, "max_segments_per_beam": 3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--protocol", type=Path, default=PROTOCOL, help="protocol TOML file")
    parser.add_argument("--patient", default="example:cshape",
                        help="patient: example:NAME, a DICOM or an OpenKBP folder")
    parser.add_argument("--quick", action="store_true", help="coarse settings (a first try)")
    args = parser.parse_args()

    protocol = planner.read_protocol(args.protocol)  # InputError naming the file if malformed
    print(f"protocol {protocol.name}: "
          + ", ".join(f"{rx.target} {rx.dose_gy:g} Gy in {rx.fractions}"
                      for rx in protocol.prescriptions))
    result = planner.plan_patient(args.patient, protocol, out_dir=args.out, device="cpu",
                                  **(QUICK if args.quick else {}))
    print("structures: " + ", ".join(f"{role} -> {name}" for role, name
                                      in result.summary["structures"]["mapping"].items()))
    for row in result.goals_plan:  # planner.review.GoalRow: value and limit in one unit
        print(f"{row.goal.label:<40} {row.value:7.2f} {row.unit:<3} "
              f"{'met' if row.met else 'NOT MET'} ({row.goal.priority})")


if __name__ == "__main__":
    main()
