"""Time ``planner.io.load_patient`` on one OpenKBP patient, on TG119.mat and on the C-shape example.

Usage: ``.venv/bin/python benchmarks/bench_import.py [--repeat N]``. Prints the best and median
wall time of N reads (default 5) of each input, in seconds. The data sets are read in place from
../shared (an input that is missing is reported and skipped). Timings depend on the machine and on
what else runs on it: say both when you quote them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from planner.io import load_patient

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
INPUTS = {
    "OpenKBP train-pats/pt_1": SHARED / "openkbp" / "provided-data" / "train-pats" / "pt_1",
    "matRad TG119.mat": SHARED / "phantoms" / "TG119.mat",
    "example:cshape": "example:cshape",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="reads per input (default 5)")
    args = parser.parse_args()
    print(f"load_patient, {args.repeat} reads each, {os.cpu_count()} CPUs visible")
    for label, spec in INPUTS.items():
        if isinstance(spec, Path) and not spec.exists():
            print(f"{label:28s} skipped: {spec} not found")
            continue
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            patient = load_patient(spec)
            times.append(time.perf_counter() - start)
        print(f"{label:28s} best {min(times):7.3f} s  median {statistics.median(times):7.3f} s  "
              f"grid {patient.grid.shape}, {len(patient.structures)} structures")


if __name__ == "__main__":
    main()
