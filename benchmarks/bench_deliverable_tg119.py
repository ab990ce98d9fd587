"""TG-119 C-shape, 9 fields: fluence plan, leaf sequencing, segment doses, segment weights.

The deliverable-plan part of ``planner.plan.plan_patient`` (where the chain this benchmark
first measured now lives) on the generated C-shape phantom: the goal table of the fluence plan
and of the deliverable plan after segment-weight optimisation (segment doses from the dose
engine, not from the beamlets), segments and MU per beam, MU per fraction and per cGy, and the
least MU any decomposition of the fluence plan's maps into apertures can have (max over leaf
pairs of the summed rises, Engel 2005), which shows how much of the MU comes from the fluence
itself. Time per step comes from the plan's summary.

Run: ``.venv/bin/python benchmarks/bench_deliverable_tg119.py [voxel_mm] [dose_grid_mm]``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from planner.phantoms import cshape_phantom
from planner.plan import plan_patient, summary_text


def main(voxel_mm: float = 5.0, dose_grid_mm: float = 5.0) -> None:
    patient = cshape_phantom(voxel_mm=voxel_mm)
    with tempfile.TemporaryDirectory() as tmp:
        result = plan_patient(patient, "tg119_c_shape", out_dir=Path(tmp) / "plan",
                              dose_grid_mm=dose_grid_mm, device="cpu")
    print(f"C-shape at {voxel_mm} mm, dose grid {dose_grid_mm} mm, "
          f"{result.summary['beamlets']} beamlets")
    print(summary_text(result.summary, result.goals_fluence, result.goals_plan))


if __name__ == "__main__":
    main(*(float(a) for a in sys.argv[1:]))
