"""``planner batch``: a cohort on a one-worker LocalCluster (a broken patient, the rerun, an
interrupted run), the manifest, and :mod:`planner.cohort`'s child processes.

The patients are CI-sized water boxes (10 cm, 5 mm voxels) as DICOM, planned coarsely (3 beams,
8 mm dose grid, 3 segments a beam): a few seconds each.
"""

from __future__ import annotations

import csv
import json
import operator
import os

import numpy as np
import pytest

import planner.cli.batch
from planner.cli.main import main
from planner.cohort import ClusterOptions, local_cluster_size, run_isolated
from planner.errors import InputError
from planner.io.dicom_patient import write_dicom_patient
from planner.io.openkbp import read_openkbp_dose, write_openkbp_dose
from planner.phantoms import water_box

PROTOCOL = """name = "water"
[[prescriptions]]
target = "PTV"
dose_gy = 2.0
fractions = 1
[structures.PTV]
kind = "target"
[[goals]]
structure = "PTV"
metric = "D95%"
min = 1.9
unit = "Gy"
priority = "hard"
"""
COARSE = ["--device", "cpu", "--beams", "3", "--beamlet-mm", "10", "--dose-grid-mm", "8",
          "--max-segments", "3", "--workers", "1"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Folder ``in`` with patients a and b (DICOM water boxes) and ``broken`` (no CT), and the
    protocol file."""
    root = tmp_path_factory.mktemp("cohort")
    for name in ("a", "b"):
        write_dicom_patient(water_box(size_mm=100.0, target_size_mm=30.0, voxel_mm=5.0),
                            root / "in" / name)
    (root / "in" / "broken").mkdir()
    (root / "in" / "broken" / "x.dcm").write_text("not DICOM")
    (root / "water.toml").write_text(PROTOCOL)
    return root


def _rows(out):
    with open(out / "cohort.csv", newline="") as f:
        return {r["name"]: r for r in csv.DictReader(f)}


@pytest.mark.slow
def test_broken_patient_rerun_and_retry(cohort, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["batch", str(cohort / "in"), "--out", str(out), "--protocol",
            str(cohort / "water.toml"), *COARSE]
    code = main(args)
    rows = _rows(out)
    assert code == 1, rows  # a patient failed; the others are planned
    captured = capsys.readouterr()
    assert "Dask LocalCluster: 1 workers" in captured.err and "dashboard" in captured.err
    assert "[3/3]" in captured.err and "failed 1" in captured.err
    assert "2 of 3 patients planned; failed: broken" in captured.out, rows
    assert [rows[n]["status"] for n in ("a", "b", "broken")] == ["ok", "ok", "failed"]
    assert "broken: no CT images" in rows["broken"]["error"]
    for name in ("a", "b"):
        r = rows[name]
        assert int(r["hard_met"]) == int(r["hard_goals"]) == 3  # PTV D95 and the two hot spots
        assert float(r["mu_per_fraction"]) > 0 and int(r["segments"]) <= 9
        assert 0.05 < float(r["peak_memory_gb"]) < 4 and float(r["time: dij s"]) > 0
        assert float(r["plan: Paddick CI PTV"]) > 0
        assert (out / name / "dicom" / "RP.dcm").is_file() and (out / r["report"]).is_file()
    assert "planner: error:" in (out / "logs" / "broken.log").read_text()
    page = (out / "cohort.html").read_text()
    assert 'href="a/report/report.html"' in page and "data:image/png" in page
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # nothing half-written

    # A rerun retries the failed patient only: the planned ones are not touched.
    stamps = {n: (out / n / "summary.json").stat().st_mtime_ns for n in ("a", "b")}
    assert main(args) == 1
    assert "2 planned before (kept), 1 to plan" in capsys.readouterr().err
    assert stamps == {n: (out / n / "summary.json").stat().st_mtime_ns for n in ("a", "b")}
    assert _rows(out)["a"] == rows["a"]

    # Without the broken patient there is nothing to plan: no cluster is even started.
    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started with nothing to plan")

    monkeypatch.setattr(planner.cli.batch, "dask_client", no_cluster)
    (cohort / "in" / "broken" / "x.dcm").unlink()
    (cohort / "in" / "broken").rmdir()
    try:
        assert main(args) == 0
    finally:
        (cohort / "in" / "broken").mkdir()
        (cohort / "in" / "broken" / "x.dcm").write_text("not DICOM")
    assert "2 planned before (kept), 0 to plan" in capsys.readouterr().err
    assert set(_rows(out)) == {"a", "b"}


@pytest.mark.slow
def test_interrupted_run_resumes(cohort, tmp_path, capsys, monkeypatch):
    """Ctrl-C after the first patient: exit 130, that patient's plan and row kept, the other
    'not run'; the temporary folder a killed plan leaves is removed and the rerun plans only
    the other patient. A manifest gives the patients, one with its own --beams."""
    manifest = cohort / "manifest.csv"
    manifest.write_text("patient,name,beams\nin/a,first,\nin/b,second,4\n")
    out = tmp_path / "out"
    args = ["batch", str(manifest), "--out", str(out), "--protocol",
            str(cohort / "water.toml"), *COARSE]
    real = planner.cli.batch.run_tasks

    def interrupted(*a, **k):
        yield next(real(*a, **k))
        raise KeyboardInterrupt

    monkeypatch.setattr(planner.cli.batch, "run_tasks", interrupted)
    assert main(args) == 130
    assert "planner: interrupted" in capsys.readouterr().err
    rows = _rows(out)
    done = [n for n, r in rows.items() if r["status"] == "ok"]
    assert len(done) == 1, rows
    assert [r["status"] for r in rows.values()].count("not run") == 1
    # The other patient's plan may still have finished while the batch stopped (a coarse plan
    # can take less than the cluster's shutdown): the rerun keeps every finished plan.
    finished = sum((out / n / "summary.json").exists() for n in ("first", "second"))
    (out / ".second.killed.tmp").mkdir()  # what a plan killed mid-write leaves
    monkeypatch.setattr(planner.cli.batch, "run_tasks", real)
    assert main(args) == 0
    assert (f"{finished} planned before (kept), {2 - finished} to plan"
            in capsys.readouterr().err)
    rows = _rows(out)
    assert all(r["status"] == "ok" for r in rows.values())
    assert not (out / ".second.killed.tmp").exists()
    beams = {n: len(json.loads((out / n / "summary.json").read_text())["beams"]) for n in rows}
    assert beams == {"first": 3, "second": 4}


def test_manifest_errors(cohort, tmp_path, capsys):
    out = tmp_path / "out"
    bad = tmp_path / "bad.csv"
    bad.write_text("patient,gantry\nin/a,0\n")
    assert main(["batch", str(bad), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"planner: error: {bad}: column 'gantry' is no planner plan option")
    bad.write_text("patient,beams\nexample:water,many\n")
    assert main(["batch", str(bad), "--out", str(out)]) == 2
    assert "example_water: argument --beams: " in capsys.readouterr().err
    bad.write_text("patient,seed\nexample:water,maybe\n")
    assert main(["batch", str(bad), "--out", str(out)]) == 2
    assert "line 2: seed 'maybe' is not yes or no" in capsys.readouterr().err
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("mine")
    assert main(["batch", str(cohort / "in"), "--out", str(tmp_path / "user")]) == 2
    assert "is not a planner batch folder" in capsys.readouterr().err
    assert not out.exists()


def test_manifest_options_become_plan_arguments(cohort):
    """A switch column gives --seed/--no-seed, a path relative to the manifest is made
    absolute, the batch's options are the defaults a row overrides."""
    manifest = cohort / "m.csv"
    manifest.write_text("patient,seed,beams,prescription\nin/a,no,,\n"
                        "example:water,yes,5,PTV=60/30; CTV=50/30\n")
    first, second = planner.cli.batch.read_manifest(manifest)
    assert first == planner.cli.batch.Entry("a", str(cohort / "in" / "a"), ("--no-seed",))
    assert second.name == "example_water" and second.argv == (
        "--seed", "--beams", "5", "--prescription", "PTV=60/30", "--prescription", "CTV=50/30")
    batch = {"beams": 7, "seed": True, "protocol": None, "prescription": ["PTV=70/35"]}
    values = planner.cli.batch.patient_arguments(second, cohort / "o", batch, force=False)
    assert values["beams"] == 5 and values["seed"] is True and values["max_segments"] == 15
    assert values["prescription"] == ["PTV=60/30", "CTV=50/30"]  # the row's, in place
    values = planner.cli.batch.patient_arguments(first, cohort / "o", batch, False)
    assert values["beams"] == 7 and values["prescription"] == ["PTV=70/35"]
    with pytest.raises(InputError, match="no patients"):
        planner.cli.batch.cohort_entries(cohort / "in" / "broken", cohort / "o")


def test_local_cluster_size():
    """Workers x threads within the cores; memory caps the workers (6 GB a patient)."""
    gb = 10**9
    assert local_cluster_size(2, 23 * gb, ClusterOptions()) == (2, 1, 23 * gb // 2)
    assert local_cluster_size(16, 16 * gb, ClusterOptions()) == (2, 8, 8 * gb)
    assert local_cluster_size(4, 4 * gb, ClusterOptions()) == (1, 4, 4 * gb)
    assert local_cluster_size(8, 64 * gb, ClusterOptions(workers=3, memory_limit_bytes=gb)
                              ) == (3, 2, gb)


def test_isolated_child_errors_and_memory(tmp_path):
    """An exception is the row's error (traceback in the log); a child over the memory limit is
    killed alone; a signal is named; a value comes back with the child's own peak memory."""
    outcome = run_isolated(operator.truediv, (1, 0), log=tmp_path / "log")
    assert outcome.error == "ZeroDivisionError: division by zero" and outcome.value is None
    assert "Traceback" in (tmp_path / "log").read_text()
    outcome = run_isolated(np.ones, (100_000_000,), memory_limit_bytes=200 * 10**6)
    assert outcome.error == "stopped: resident memory above the limit of 0.2 GB"
    assert outcome.peak_bytes > 200 * 10**6
    assert run_isolated(os.abort, ()).error.startswith("killed by SIGABRT")
    outcome = run_isolated(operator.add, ([1], [2]), threads=1)
    assert outcome.value == [1, 2] and outcome.error is None and 0 < outcome.peak_bytes < 10**9
    first = min(os.sched_getaffinity(0))
    assert run_isolated(os.sched_getaffinity, (0,), cores=[first]).value == {first}
    assert run_isolated(os.getenv, ("OMP_NUM_THREADS",), threads=3).value == "3"


def test_isolated_child_keeps_the_default_heap_trimming(monkeypatch):
    """A Dask worker's MALLOC_TRIM_THRESHOLD_ (set by Dask for itself) does not reach a patient's
    process: there it made the plan's large arrays page-fault back in after every free."""
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    assert run_isolated(os.getenv, ("MALLOC_TRIM_THRESHOLD_",)).value is None


def test_evaluate_prediction_on_dask_scores_as_serially(openkbp_dir, tmp_path, capsys):
    """evaluate-prediction --workers 1 runs the patients as Dask tasks (planner.cohort): the
    same CSV as the serial run; a prediction that is missing is that patient's reason."""
    split, predictions = tmp_path / "test-pats", tmp_path / "predictions"
    split.mkdir()
    for folder in sorted((openkbp_dir / "test-pats").iterdir())[:2]:
        (split / folder.name).symlink_to(folder)
    first = sorted(split.iterdir())[0]
    write_openkbp_dose(predictions / f"{first.name}.csv", read_openkbp_dose(first))
    tables = []
    for extra in ([], ["--workers", "1"]):
        csv_path = tmp_path / f"scores{len(extra)}.csv"
        assert main(["evaluate-prediction", str(split), "--predictions", str(predictions),
                     "--csv", str(csv_path), *extra]) == 0
        tables.append(csv_path.read_text())
    assert "Dask LocalCluster: 1 workers" in capsys.readouterr().err
    assert tables[0] == tables[1] and "missing (no prediction for" in tables[1]
