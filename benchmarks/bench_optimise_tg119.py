"""Benchmark: automatic fluence optimisation of the TG-119 C-shape (TG119.mat) to its goals.

9 fields at 0, 40, ..., 320 deg, 5 mm beamlets covering the target, dose on a 3 mm grid: the
set-up stages of ``planner plan`` (:mod:`planner.plan`: ``prepare_case``, ``prepare_grids``,
``place_beams``) and its Dij (``planner.plan.beamlet_dose``); the optimiser is
``planner.optimize.optimise_patient`` with the bundled ``tg119_c_shape`` protocol. Reports the
Dij time, the optimisation time and iterations, and the TG-119 goals (PTV D95 >= 50 Gy,
D10 <= 55 Gy, core D10 <= 25 Gy, and the harder core D10 <= 10 Gy).

Bar (issue 4): <= 20 s on the 2-core CPU to meet the goals; <= 2 s on an H100.
Anchor: pyRadPlan 0.5.0, same case, 87 s for 500 iterations on a 5 mm grid, PTV D95 43.6 Gy.

Run: ``.venv/bin/python benchmarks/bench_optimise_tg119.py [--device cpu|cuda]
[--dij-cache /tmp/tg119_dij.npz]`` (the cache skips the Dij computation on later runs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import scipy.sparse

from dose._xp import resolve_device
from planner.cli.optimize import goal_table
from planner.io.matrad import read_matrad_mat
from planner.optimize import optimise_patient
from planner.plan import beamlet_dose, place_beams, prepare_case, prepare_grids

TG119 = Path(__file__).resolve().parent.parent.parent / "shared" / "phantoms" / "TG119.mat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dij-cache", type=Path, default=None)
    parser.add_argument("--time-limit", type=float, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)

    case = prepare_case(read_matrad_mat(TG119), "tg119_c_shape")
    grids = prepare_grids(case, 3.0)
    beams = place_beams(case, 9, 5.0)
    patient = grids.dose_patient
    print(f"TG119: CT {case.patient.grid.shape} at {case.patient.grid.spacing_mm} mm, dose grid "
          f"{patient.grid.shape} at 3 mm, {beams.beamset.n_beamlets} beamlets in 9 beams, "
          f"device {device}")

    if args.dij_cache is not None and args.dij_cache.is_file():
        D = scipy.sparse.load_npz(args.dij_cache).tocsr()
        print(f"Dij read from {args.dij_cache}")
    else:
        start = time.perf_counter()
        D = beamlet_dose(case, grids, beams, device=device).matrix
        print(f"Dij: {time.perf_counter() - start:.1f} s")
        if device == "cuda":
            D = D.get()
        if args.dij_cache is not None:
            scipy.sparse.save_npz(args.dij_cache, D)
    print(f"Dij {D.shape[0]} x {D.shape[1]}, {D.nnz / 1e6:.1f} M non-zeros")
    if device == "cuda":
        import cupyx.scipy.sparse

        D = cupyx.scipy.sparse.csr_matrix(D)

    cpu_start = time.process_time()
    plan = optimise_patient(patient, D, case.protocol, time_limit_s=args.time_limit)
    cpu_s = time.process_time() - cpu_start
    elapsed, iterations, hard_met_at = 0.0, 0, None
    for step in plan.result.steps:
        elapsed += step.elapsed_s
        iterations += step.iterations
        if step.hard_goals_met and hard_met_at is None:
            hard_met_at = (elapsed, iterations)
        print(f"  {step.step:<20} {step.iterations:4d} it {step.evaluations:4d} ev "
              f"{step.elapsed_s:6.2f} s  goals met {step.goals_met}  ({step.note})")
    print(goal_table(plan))
    print(f"optimisation: {plan.result.elapsed_s:.1f} s wall ({cpu_s:.1f} s CPU time of this "
          f"process), {plan.result.iterations} iterations, {plan.result.evaluations} evaluations")
    if hard_met_at is not None:
        print(f"all hard goals first met after {hard_met_at[0]:.1f} s, {hard_met_at[1]} iterations")


if __name__ == "__main__":
    main()
