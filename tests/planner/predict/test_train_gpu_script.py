"""``scripts/train_gpu.sh`` end to end on the CPU: a tiny network, one patient per split, an empty
wheel folder (every dependency is installed already), a resumed second run and the time limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "train_gpu.sh"


@pytest.fixture
def data(openkbp_dir: Path, tmp_path: Path) -> Path:
    """An OpenKBP provided-data folder with one patient per split (symbolic links)."""
    root = tmp_path / "data"
    for split in ("train-pats", "validation-pats"):
        (root / split).mkdir(parents=True)
        first = sorted((openkbp_dir / split).iterdir())[0]
        (root / split / first.name).symlink_to(first)
    return root


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as for a job started in the background


def _run(*args: str, limit_s: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "INIT": "none", "TIME_LIMIT_S": str(limit_s)}
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True,
                          timeout=600, preexec_fn=_ignore_interrupts)


@pytest.mark.slow
def test_script_trains_resumes_and_scores(data: Path, tmp_path: Path, cache_dir: Path):
    out, wheels = tmp_path / "out", tmp_path / "wheels"
    wheels.mkdir()
    tiny = ["--device", "cpu", "--threads", "1", "--base-channels", "4", "--levels", "3",
            "--crop", "64", "--cache", str(cache_dir)]
    first = _run(str(data), str(out), str(wheels), *tiny, "--epochs", "1")
    assert first.returncode == 0, first.stderr + first.stdout
    assert "epoch 1/1" in first.stdout and "(1 of 1 patients" in first.stdout
    assert (out / "run" / "model.pt").is_file() and (out / "validation.json").is_file()
    second = _run(str(data), str(out), str(wheels), *tiny, "--epochs", "2")
    assert second.returncode == 0, second.stderr + second.stdout
    assert "resuming" in second.stdout and "epoch 2/2" in second.stdout
    assert len(json.loads((out / "run" / "history.json").read_text())) == 2
    assert "finished" in (out / "train_gpu.log").read_text()
    # stopped at the time limit, even with SIGINT ignored: says so, exits 0 so that a rerun
    # resumes
    stopped = _run(str(data), str(tmp_path / "short"), str(wheels), *tiny, limit_s=1)
    assert stopped.returncode == 0 and "stopped at the time limit (1 s)" in stopped.stdout
    missing = _run(str(data), str(out), str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and missing.stderr.strip().endswith(
        "nowhere: no such folder (the wheels of planner's dependencies, scripts/README.md)")
