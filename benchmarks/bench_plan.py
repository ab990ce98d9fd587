"""The whole ``planner plan`` command on TG119.mat and on one OpenKBP patient.

Each case runs the command as a user would (a subprocess, Python start-up and imports included)
at the default settings (9 fields, 5 mm beamlets, 3 mm dose grid) and prints its wall time, the
time per step, goals met before and after sequencing, segments and MU from its ``summary.json``,
and the load average (other work on a shared machine slows it down). Bars (issue 7): TG-119
<= 90 s and OpenKBP <= 120 s on the 2-core CPU; <= 15 s on an H100.

Run: ``.venv/bin/python benchmarks/bench_plan.py [--device auto|cpu|cuda] [tg119] [openkbp]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CASES = {
    "tg119": (SHARED / "phantoms" / "TG119.mat", "tg119_c_shape"),
    "openkbp": (SHARED / "openkbp" / "provided-data" / "test-pats" / "pt_242", "head_and_neck"),
}


def run_case(name: str, device: str) -> None:
    patient, protocol = CASES[name]
    if not patient.exists():
        print(f"{name}: skipped, {patient} not found")
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan"
        command = [str(REPO / ".venv" / "bin" / "planner"), "plan", str(patient), "--protocol",
                   protocol, "--out", str(out), "--device", device]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if run.returncode != 0:
            print(f"{name}: exit {run.returncode}\n{run.stderr[-3000:]}")
            return
        summary = json.loads((out / "summary.json").read_text())
    met = {k: sum(g["met"] for g in v) for k, v in summary["goals"].items()}
    print(f"{name}: {patient.name}, device {summary['device']}, dose grid "
          f"{summary['grid']['dose']['shape_zyx']} at {summary['grid']['dose']['spacing_zyx_mm']} "
          f"mm, {summary['beamlets']} beamlets")
    print(f"  whole command {wall:.1f} s (load average {load:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end, {os.cpu_count()} cores)")
    print("  steps: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["times_s"].items()))
    print(f"  goals met: fluence plan {met['fluence']}, deliverable plan {met['plan']} of "
          f"{len(summary['goals']['plan'])}")
    for g in summary["goals"]["plan"]:
        print(f"    {g['goal']:<30} {g['value']:8.2f} {g['unit']:<2} "
              f"{'met' if g['met'] else 'NOT MET'}")
    print(f"  segments {summary['segments']['total']} in {len(summary['beams'])} fields (max "
          f"{summary['segments']['max_per_beam']}); {summary['mu']['total_per_fraction']:.0f} MU "
          f"per fraction, {summary['mu']['per_cgy']:.2f} MU/cGy")


def main(argv: list[str]) -> None:
    device = "auto"
    if "--device" in argv:
        i = argv.index("--device")
        device = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    for name in argv or list(CASES):
        run_case(name, device)


if __name__ == "__main__":
    main(sys.argv[1:])
