"""Leaf sequencing: segments per beam, monitor-unit efficiency and time, per method and levels.

Fluence maps are synthetic IMRT-like maps (smoothed noise inside an elliptical target
projection, 5 mm beamlets, 22 x 26 beamlets), sequenced for the generic machine in
``data/machines``. ``sum w / peak`` is the total segment weight per unit of peak fluence: the MU
a beam needs relative to an open field delivering the same peak (1.0 for an open field), the
quantity that drives total MU per fraction.

Run: ``.venv/bin/python benchmarks/bench_sequencing.py [n_beams]``.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from dose.machine import load_machine
from optim.sequencing import leaf_pair_fluence, sequence_leaves


def synthetic_fluence(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    y, x = np.mgrid[0:rows, 0:cols]
    inside = (((y - rows / 2 + 0.5) / (rows / 2 - 1)) ** 2
              + ((x - cols / 2 + 0.5) / (cols / 2 - 1)) ** 2) < 1
    return np.where(inside, gaussian_filter(rng.uniform(0, 1, shape), 1.5) + 0.2, 0.0)


def main(n_beams: int = 45) -> None:
    machine = load_machine()
    rng = np.random.default_rng(2026)
    shape = (22, 26)
    rows = -55.0 + 5.0 * np.arange(shape[0] + 1)
    cols = -65.0 + 5.0 * np.arange(shape[1] + 1)
    fluences = [synthetic_fluence(rng, shape) for _ in range(n_beams)]
    limits = dict(min_gap_mm=machine.min_leaf_gap_mm,
                  leaf_travel_mm=(machine.leaf_position_min_mm, machine.leaf_position_max_mm),
                  jaw_overtravel_mm=(machine.jaw_x_overtravel_mm, machine.jaw_y_overtravel_mm),
                  max_leaf_span_mm=machine.max_leaf_span_mm,
                  interdigitation=machine.interdigitation)
    print(f"{n_beams} synthetic beams of {shape[0]} x {shape[1]} beamlets (5 mm)")
    print(f"{'method':>6} {'levels':>6} {'max_seg':>7} {'segments mean/max':>18} "
          f"{'sum w / peak':>13} {'rms error':>10} {'ms/beam':>8}")
    for method in ("xia", "sweep"):
        for n_levels, max_segments in ((3, None), (5, None), (7, None), (10, None), (10, 15)):
            start = time.perf_counter()
            results = [sequence_leaves(f, rows, cols, machine.leaf_boundaries_mm, method=method,
                                       n_levels=n_levels, max_segments=max_segments, **limits)
                       for f in fluences]
            elapsed = (time.perf_counter() - start) / n_beams * 1e3
            counts = np.array([r.n_segments for r in results])
            efficiency = np.mean([r.weights.sum() / r.stratified_fluence.max() for r in results])
            # Stratification error (rms over all leaf pairs x columns) relative to the peak.
            error = np.mean([
                np.sqrt(np.mean((r.stratified_fluence - pair) ** 2)) / pair.max()
                for r, pair in zip(results, (leaf_pair_fluence(f, rows, machine.leaf_boundaries_mm)
                                             for f in fluences))])
            print(f"{method:>6} {n_levels:>6} {str(max_segments):>7} "
                  f"{counts.mean():>10.1f} / {counts.max():<5d} {efficiency:>13.2f} "
                  f"{error:>10.3f} {elapsed:>8.1f}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
