"""Benchmark: Dij of TG-119 (TG119.mat), 9 coplanar fields (0, 40, ..., 320 deg), 5 mm beamlets,
3 mm dose grid, set up as ``planner plan`` sets it up (:mod:`planner.plan`: the dose grid over the
body, the rows it needs, the beams at the targets' centroid). Prints time, non-zeros, matrix
size and peak memory.

Run: ``.venv/bin/python benchmarks/bench_dij_tg119.py [--device auto|cpu|cuda]
[--truncation-mm 50] [--dose-grid-mm 3]``. The bar (issue 3): <= 30 s on the 2-core CPU,
<= 2 s on an H100 (pyRadPlan 0.5.0 needs 120-249 s and 2 GB on the 2-core CPU for a 3 mm grid).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from dose._xp import resolve_device
from planner.io.matrad import read_matrad_mat
from planner.plan import beamlet_dose, place_beams, prepare_case, prepare_grids

TG119 = Path(__file__).resolve().parents[2] / "shared" / "phantoms" / "TG119.mat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--truncation-mm", type=float, default=None)
    parser.add_argument("--dose-grid-mm", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    case = prepare_case(read_matrad_mat(TG119), "tg119_c_shape")
    grids = prepare_grids(case, args.dose_grid_mm)
    beams = place_beams(case, 9, 5.0)
    options = {} if args.truncation_mm is None else {"truncation_mm": args.truncation_mm}
    for _ in range(args.repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        dij = beamlet_dose(case, grids, beams, device=device, **options)
        if device == "cuda":
            import cupy

            cupy.cuda.Device().synchronize()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        matrix = dij.matrix
        size_gb = (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / 1e9
        print(f"device {device}: Dij {elapsed:.1f} s wall ({cpu:.1f} s CPU over all threads; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), "
              f"{beams.beamset.n_beamlets} beamlets, {grids.dose_grid.shape} dose grid "
              f"({int(grids.needed.sum())} voxels computed), nnz {matrix.nnz:,}, "
              f"matrix {size_gb:.2f} GB, truncation {dij.truncation_mm} mm "
              f"(dropped {100 * dij.dropped_fraction:.1f} % of a beamlet's integral dose)")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak resident memory {peak_gb:.2f} GB (whole process, including the CT)")


if __name__ == "__main__":
    main()
