"""Plan an OpenKBP head-and-neck patient and compare the plan with its reference dose.

Shows: read an OpenKBP patient folder (CT, structures, possible-dose mask and the reference
plan's ``dose.csv``), plan it with the bundled head-and-neck protocol (seeded by the dose
prediction, as ``planner plan`` does), then set the plan beside the reference on the patient's
grid: the OpenKBP dose score (mean absolute difference inside the possible-dose mask) and the
plan-quality figures of both (conformity, target coverage, normal tissue, hot spots).

The OpenKBP data are not shipped (github.com/ababier/open-kbp); the default is validation
patient pt_203 (a small one) in ``../shared/openkbp`` beside the repository. Without it the
example says so and stops. Run from the repository root (a minute or a few on a CPU;
``--quick``: coarse settings, for a first try):

    .venv/bin/python examples/openkbp_vs_reference.py out/openkbp
    .venv/bin/python examples/openkbp_vs_reference.py out/openkbp --patient PATH/pt_241
"""

import argparse
import sys
from pathlib import Path

import numpy as np

import planner
from dose.grid import resample
from planner.io.openkbp import read_openkbp_dose
from planner.review.quality import quality_figures

PATIENT = (Path(__file__).resolve().parents[2] / "shared" / "openkbp" / "provided-data"
           / "validation-pats" / "pt_203")
#: Coarse settings for a quick look: 5 beams, 10 mm beamlets, an 8 mm dose grid, 3 segments.
QUICK = {"beam_count": 5, "beamlet_mm": 10.0, "dose_grid_mm": 8.0, "max_segments_per_beam": 3}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--patient", type=Path, default=PATIENT, help="OpenKBP patient folder")
    parser.add_argument("--quick", action="store_true", help="coarse settings (a first try)")
    args = parser.parse_args()
    if not args.patient.is_dir():
        print(f"skipped: no OpenKBP patient at {args.patient} (the data are not shipped: "
              f"github.com/ababier/open-kbp; give a patient folder with --patient)",
              file=sys.stderr)
        return 0

    patient = planner.load_patient(args.patient)
    result = planner.plan_patient(patient, out_dir=args.out, device="cpu",
                                  **(QUICK if args.quick else {}))
    print(f"{patient.name}: {result.protocol.name}; {result.seed_note}")

    # The plan's dose comes on its dose grid; the reference is on the patient's (CT) grid.
    plan = resample(result.dose_gy, result.dose_grid, patient.grid)
    reference = read_openkbp_dose(args.patient)
    inside = patient.possible_dose_mask
    print(f"dose score against the reference: {np.abs(plan - reference)[inside].mean():.2f} Gy "
          f"(mean absolute difference in the possible-dose mask)")
    print(f"{'figure':<34} {'plan':>8} {'reference':>10}")
    for ours, theirs in zip(quality_figures(patient, plan, result.protocol),
                            quality_figures(patient, reference, result.protocol)):
        label = f"{ours.structure} {ours.name}".strip()
        print(f"{label:<34} {ours.value:8.2f} {theirs.value:10.2f} {ours.unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
