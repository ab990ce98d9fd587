"""``benchmarks/gpu_check.sh``: what it asks of the wheel folder, and its refusals (exit 2, one
line saying why). Its whole run, CPU mode, is measured by hand (benchmarks/results/gpu.md): it
plans two patients, too long for the suite."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=120)


def test_requirements_are_planners_and_the_tests():
    listed = _run("--requirements")
    assert listed.returncode == 0, listed.stderr
    names = [line.split(">")[0].split("=")[0].split("[")[0] for line in listed.stdout.split()]
    assert {"numpy", "pydicom", "dask", "threadpoolctl", "pytest", "hypothesis"} <= set(names)


def test_refuses_a_folder_that_is_no_openkbp_patient_and_a_missing_wheel_folder(tmp_path):
    patient = tmp_path / "pt_1"
    patient.mkdir()
    wrong = _run(str(tmp_path / "out"), str(tmp_path), str(patient))
    assert wrong.returncode == 2
    assert wrong.stderr.strip().endswith("pt_1: no ct.csv (OPENKBP_PATIENT must be one OpenKBP "
                                         "patient folder)")
    (patient / "ct.csv").write_text("")
    missing = _run(str(tmp_path / "out"), str(tmp_path / "nowhere"), str(patient))
    assert missing.returncode == 2
    assert missing.stderr.strip().endswith(
        "nowhere: no such folder (the wheels of planner's dependencies, scripts/README.md)")
    assert not (tmp_path / "out").exists()  # nothing written before the inputs are checked
    usage = _run(str(tmp_path / "out"))
    assert usage.returncode == 2 and usage.stderr.startswith("usage: ")
