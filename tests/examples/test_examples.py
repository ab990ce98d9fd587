"""The scripts in examples/ run as a newcomer runs them (a subprocess, from a folder outside the
repository), at their ``--quick`` settings where they plan: the suite checks that they work and
print what their header promises, not the plans' quality."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
OPENKBP = REPO.parent / "shared" / "openkbp" / "provided-data"


def _run(script: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True)
    assert done.returncode == 0, f"{script}: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return done


def test_every_example_has_a_header_saying_what_and_how():
    for script in EXAMPLES.glob("*.py"):
        header = script.read_text().split('"""')[1]
        assert "Shows:" in header and f"examples/{script.name}" in header, script.name


@pytest.mark.slow
def test_plan_tg119(tmp_path):
    out = _run("plan_tg119.py", tmp_path / "tg119", "--quick", cwd=tmp_path).stdout
    summary = json.loads((tmp_path / "tg119" / "summary.json").read_text())
    for goal in summary["goals"]["plan"]:
        assert goal["goal"] in out
    assert f"{summary['segments']['total']} segments" in out


@pytest.mark.slow
def test_custom_protocol(tmp_path):
    out = _run("custom_protocol.py", tmp_path / "plan", "--quick", cwd=tmp_path).stdout
    assert "protocol C-shape 60 Gy, strict core: PTV 60 Gy in 30" in out
    assert "PTV D95% >= 60 Gy" in out and "Core Dmean <= 15 Gy" in out
    summary = json.loads((tmp_path / "plan" / "summary.json").read_text())
    assert summary["protocol"]["name"] == "C-shape 60 Gy, strict core"


@pytest.mark.slow
def test_review_and_check(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "cli"))
    from review_files import write_review_files

    files = write_review_files(tmp_path / "other")
    out = tmp_path / "review"
    printed = _run("review_and_check.py", files.rtplan, files.rtdose, files.rtstruct, files.ct,
                   out, "--protocol", "tg119_c_shape", cwd=tmp_path).stdout
    check = json.loads((out / "check.json").read_text())
    assert f"check {'PASSED' if check['passed'] else 'FAILED'}" in printed
    assert "of 7 goals met" in printed and (out / "report.html").is_file()


@pytest.mark.slow
def test_openkbp_vs_reference(tmp_path):
    patient = OPENKBP / "validation-pats" / "pt_203"
    if not patient.is_dir():
        said = _run("openkbp_vs_reference.py", tmp_path / "plan", cwd=tmp_path).stderr
        assert said.startswith("skipped: no OpenKBP patient at ")
        assert not (tmp_path / "plan").exists()
        pytest.skip(f"OpenKBP data absent ({patient}): the example says so and stops")
    out = _run("openkbp_vs_reference.py", tmp_path / "plan", "--quick", cwd=tmp_path).stdout
    assert "dose score against the reference:" in out
    assert "PTV70 D95%" in out and "normal tissue Dmean" in out
