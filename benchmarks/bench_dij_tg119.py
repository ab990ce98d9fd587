"""Benchmark: Dij of TG-119 (TG119.mat), 9 coplanar fields (0, 40, ..., 320 deg), 5 mm beamlets,
3 mm dose grid. Prints time, non-zeros, matrix size and peak memory.

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

import numpy as np

from dose import compute_dij, equispaced_beams, load_beam_model
from dose._xp import resolve_device, to_device
from dose.beams import beamlets_covering
from planner.io.matrad import read_matrad_mat

TG119 = Path(__file__).resolve().parents[2] / "shared" / "phantoms" / "TG119.mat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--truncation-mm", type=float, default=None)
    parser.add_argument("--dose-grid-mm", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    patient = read_matrad_mat(TG119)
    target = next(s for s in patient.structures if s.kind == "target")
    body = next(s for s in patient.structures if s.kind == "external")
    grid = patient.grid
    dose_grid = grid.resampled((args.dose_grid_mm,) * 3)
    iso_zyx = grid.index_to_position_mm(np.argwhere(target.mask).mean(axis=0))
    beams = equispaced_beams(9, tuple(iso_zyx[::-1]))
    beamset = beamlets_covering(beams, target.mask, grid, beamlet_size_mm=5.0)
    model = load_beam_model()
    density = to_device(patient.density, device)
    # Rows: voxels of the BODY on the dose grid (nearest CT voxel of each dose voxel centre).
    centre_index = np.rint(grid.position_to_index(np.stack(np.meshgrid(
        *dose_grid.axes_mm(), indexing="ij"), axis=-1))).astype(int)
    centre_index = np.clip(centre_index, 0, np.array(grid.shape) - 1)
    mask = body.mask[centre_index[..., 0], centre_index[..., 1], centre_index[..., 2]]
    options = {} if args.truncation_mm is None else {"truncation_mm": args.truncation_mm}
    for _ in range(args.repeat):
        start, cpu_start = time.perf_counter(), time.process_time()
        dij = compute_dij(density, grid, dose_grid, beamset, model,
                          dose_mask=to_device(mask, device), **options)
        if device == "cuda":
            import cupy

            cupy.cuda.Device().synchronize()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        matrix = dij.matrix
        size_gb = (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / 1e9
        print(f"device {device}: Dij {elapsed:.1f} s wall ({cpu:.1f} s CPU over all threads; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores), "
              f"{beamset.n_beamlets} beamlets, "
              f"{dose_grid.shape} dose grid ({int(mask.sum())} body voxels), nnz {matrix.nnz:,}, "
              f"matrix {size_gb:.2f} GB, truncation {dij.truncation_mm} mm "
              f"(dropped {100 * dij.dropped_fraction:.1f} % of a beamlet's integral dose)")
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"peak resident memory {peak_gb:.2f} GB (whole process, including the CT)")


if __name__ == "__main__":
    main()
