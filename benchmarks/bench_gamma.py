"""Gamma index (``dose.gamma``) time on clinical head-and-neck dose grids, and its lattice step.

The reference is an OpenKBP clinical dose (``dose.csv``, 70/63/56 Gy plans) interpolated onto
isotropic grids of 3 mm (the usual clinical dose grid), 2 mm and 1.25 mm (over 1 M points above
the threshold), each covering the box of the dose above 5 % of its maximum; the evaluated dose
is the same dose moved by (0.6, -0.8, 1.0) mm (z, y, x) and scaled by 1.01, a plausible
secondary-check difference. Printed per grid: the points above 10 %, the gamma 3 %/2 mm pass
rate and wall time with the default 0.5 mm search lattice, and with a 0.25 mm lattice (8x the
offsets; 3 and 2 mm grids) to show what the coarser lattice costs in pass rate.
Wall clock on a shared machine: other work may run at the same time.

Usage: ``.venv/bin/python benchmarks/bench_gamma.py [PATIENT_FOLDER] [--cuda]`` (default the
first training patient of ../shared/openkbp).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from dose._xp import to_device
from dose.gamma import gamma_index, gamma_statistics
from dose.grid import Grid
from planner.io.openkbp import read_openkbp_dose, read_openkbp_grid
from planner.review.dvh import resample_dose

DEFAULT = Path(__file__).resolve().parents[2] / "shared/openkbp/provided-data/train-pats/pt_1"
SHIFT_MM = np.array([0.6, -0.8, 1.0])


def main(folder: Path, device: str) -> None:
    dose = read_openkbp_dose(folder)
    full = read_openkbp_grid(folder)
    # The box of the dose above 5 % of its maximum (the grids below cover only that).
    where = np.argwhere(dose >= 0.05 * dose.max())
    low, high = where.min(axis=0), where.max(axis=0) + 1
    dose = dose[tuple(slice(a, b) for a, b in zip(low, high))]
    grid = Grid(tuple(full.index_to_position_mm(low)), full.spacing_mm, tuple(high - low))
    print(f"{folder.name}: OpenKBP grid {full.spacing_mm} mm, dose box {grid.shape}, max "
          f"{dose.max():.1f} Gy; device {device}")
    for spacing in (3.0, 2.0, 1.25):
        target = grid.resampled((spacing,) * 3)
        reference = resample_dose(dose, grid, target)
        moved = Grid(tuple(np.asarray(target.origin_mm) - SHIFT_MM), target.spacing_mm,
                     target.shape)
        evaluated = 1.01 * resample_dose(dose, grid, moved)
        points = int((reference >= 0.1 * reference.max()).sum())
        print(f"{spacing:g} mm grid {target.shape} ({target.size / 1e6:.1f} M voxels), "
              f"{points / 1e6:.2f} M points above 10 %")
        ref, ev = to_device(reference, device), to_device(evaluated, device)
        for step in (0.5, 0.25) if spacing > 1.5 else (0.5,):
            start = time.perf_counter()
            gamma = gamma_index(ref, ev, target.spacing_mm, step_mm=step)
            rate, _ = gamma_statistics(gamma)
            if device == "cuda":
                import cupy

                cupy.cuda.Device().synchronize()
            print(f"  step {step:g} mm: pass rate {100 * rate:.2f} %, "
                  f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--cuda"]
    main(Path(arguments[0]) if arguments else DEFAULT, "cuda" if "--cuda" in sys.argv else "cpu")
