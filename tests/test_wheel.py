"""The wheel built from the repository carries its data and plans the bundled example in a fresh
virtual environment (issue 19).

The wheel is built from a copy of the sources (no build/ or egg-info left in the checkout), with
this environment's setuptools and no network; the fresh environment sees this one's installed
dependencies (torch, numpy, ...) through a .pth file, not its editable planner, so that
``import planner`` there can only find the wheel's copy. It runs from a folder outside the
checkout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import planner

REPO = Path(__file__).resolve().parent.parent

SOURCES = ("pyproject.toml", "setup.py", "README.md", "planner", "dose", "optim", "data")
#: A coarse plan: what is checked is that the installed package plans, not the plan's quality.
COARSE = ["--device", "cpu", "--beams", "3", "--beamlet-mm", "10", "--dose-grid-mm", "10",
          "--max-segments", "2"]


def _run(*command: str | Path, cwd: Path) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, f"{command}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the repository's wheel installed (no dependencies)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(REPO / name, source / name)
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--wheel-dir", work / "dist", source, cwd=work)
    (wheel,) = (work / "dist").glob("planner-*.whl")
    env = work / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", env, cwd=work)
    python = env / "bin" / "python"
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                     cwd=work).strip())
    ours = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    (site / "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
         "--no-index", wheel, cwd=work)
    return env


@pytest.mark.slow
def test_installed_wheel_carries_its_data(venv, tmp_path):
    where = json.loads(_run(venv / "bin" / "python", "-c",
                            "import json, planner, dose._data; print(json.dumps("
                            "[planner.__file__, str(dose._data.DATA_DIR)]))", cwd=tmp_path))
    assert all(Path(p).is_relative_to(venv) for p in where), where
    data = Path(where[1])
    for line in (REPO / "data" / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((data / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.slow
def test_installed_wheel_plans_the_example(venv, tmp_path):
    command = venv / "bin" / "planner"
    assert _run(command, "--version", cwd=tmp_path).strip() == f"planner {planner.__version__}"
    info = _run(command, "info", "example:cshape", cwd=tmp_path)
    assert "PTV" in info and "50 Gy in 25 fractions" in info
    out = tmp_path / "plan"
    _run(command, "plan", "example:cshape", "--out", out, *COARSE, cwd=tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["protocol"]["name"] == "TG-119 C-shape"
    assert summary["segments"]["max_per_beam"] <= 2
    assert {"RP.dcm", "RD.dcm", "RS.dcm"} <= {p.name for p in (out / "dicom").iterdir()}
