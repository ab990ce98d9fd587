"""Time DICOM export and import of a clinical-size patient (512 x 512 x 150 CT, 4 structures).

Usage: ``.venv/bin/python benchmarks/bench_dicom.py [--repeat N] [--slices N]``. Builds a synthetic
patient (elliptical body, a ring target with a hole, a cylinder organ, a sphere) on a
0.98 x 0.98 x 2 mm grid, writes it once with ``write_dicom_patient`` into a temporary folder and
reads it N times (default 3) with ``read_dicom_patient``, printing the best and median wall time
in seconds and the share spent reading the CT alone. Timings depend on the machine and on what
else runs on it: say both when you quote them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from dose.grid import Grid
from planner.density import hu_to_density
from planner.io.ct import read_ct_series
from planner.io.dicom_patient import (
    find_ct_and_structure_set,
    read_dicom_patient,
    write_dicom_patient,
)
from planner.patient import Patient, Structure


def clinical_patient(slices: int) -> Patient:
    grid = Grid((-149.0, -250.0, -250.0), (2.0, 0.977, 0.977), (slices, 512, 512))
    z, y, x = grid.axes_mm()
    yy, xx = np.meshgrid(y, x, indexing="ij")
    body2d = (xx / 180.0) ** 2 + (yy / 120.0) ** 2 <= 1.0
    radius = np.hypot(xx - 20.0, yy)
    ring2d = (radius <= 45.0) & (radius >= 20.0)
    organ2d = np.hypot(xx + 60.0, yy - 30.0) <= 15.0
    inside = np.abs(z) <= 60.0
    body = np.broadcast_to(body2d, grid.shape).copy()
    ring = ring2d[None] & inside[:, None, None]
    organ = organ2d[None] & (np.abs(z) <= 100.0)[:, None, None]
    zz = z[:, None, None]
    sphere = (xx[None] - 80.0) ** 2 + (yy[None] + 20.0) ** 2 + (zz - 10.0) ** 2 <= 12.0 ** 2
    rng = np.random.default_rng(0)
    hu = np.where(body, rng.integers(-100, 100, grid.shape), -1000).astype(np.float32)
    structures = (Structure("BODY", "external", body), Structure("PTV", "target", ring),
                  Structure("Cord", "organ", organ), Structure("Lens", "organ", sphere))
    return Patient("BENCH", grid, hu, hu_to_density(hu), structures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="reads (default 3)")
    parser.add_argument("--slices", type=int, default=150, help="CT slices (default 150)")
    args = parser.parse_args()
    patient = clinical_patient(args.slices)
    print(f"DICOM patient {patient.grid.shape}, {os.cpu_count()} CPUs visible")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "patient"
        start = time.perf_counter()
        write_dicom_patient(patient, folder)
        print(f"write_dicom_patient          {time.perf_counter() - start:7.3f} s")
        reads, ct_reads = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            read_dicom_patient(folder)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            read_ct_series(find_ct_and_structure_set(folder)[0])
            ct_reads.append(time.perf_counter() - start)
        print(f"read_dicom_patient  best {min(reads):7.3f} s  "
              f"median {statistics.median(reads):7.3f} s")
        print(f"  of which CT only  best {min(ct_reads):7.3f} s  (folder scan + read_ct_series)")


if __name__ == "__main__":
    main()
