"""The review report: self-contained HTML, figures beside it, goals and conflicts shown, atomic
writing, and a real browser rendering it (headless Chromium, skipped where none is installed)."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.image import imread

from dose.beams import Beam
from dose.machine import load_machine
from dose.segments import open_field, segments_fluence
from planner.check import CheckResult
from planner.errors import InputError
from planner.io.rtdose import read_rt_dose
from planner.io.rtplan import PlanBeam
from planner.patient import Structure
from planner.phantoms import cshape_phantom
from planner.protocol import protocol_path, read_protocol
from planner.review.figures import (
    ISODOSE_COLOURS,
    ISODOSE_PERCENT,
    STRUCTURE_COLOURS,
    FluenceMap,
)
from planner.review.report import ReviewPlan, write_report

EDGES_MM = np.arange(-60.0, 62.5, 2.5)


def _plan() -> ReviewPlan:
    """Three beams of four rectangular segments each (MU 10-13), with their fluences."""
    machine = load_machine()
    beams, fluences = [], []
    for gantry in (0, 120, 240):
        segments = tuple(open_field(machine, (-40.0 + 5 * k, 40.0 - 3 * k), (-45.0 + 4 * k, 40.0),
                                    10.0 + k) for k in range(4))
        beams.append(PlanBeam(f"G{gantry:03d}", Beam(gantry, 0.0, 0.0, (0.0, 0.0, 0.0)),
                              segments))
        fluences.append(FluenceMap(f"G{gantry:03d}", segments_fluence(segments, machine,
                                                                      EDGES_MM, EDGES_MM),
                                   EDGES_MM, EDGES_MM))
    return ReviewPlan("test plan", tuple(beams), machine.leaf_boundaries_mm, tuple(fluences),
                      fractions=25, normalisation="none", source="test",
                      sop_instance_uid="1.2.3.4", patient_id="TG119")


@pytest.fixture(scope="module")
def report(case, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "review"
    review = write_report(out, case.patient, case.dose_gy, case.patient.grid,
                          protocol=read_protocol("tg119_c_shape"), plan=_plan())
    return out, review


def test_report_files_and_embedded_images(report, case):
    out, _ = report
    names = sorted(p.name for p in out.iterdir())
    assert names == ["dvh.csv", "dvh.png", "fluence.png", "report.html", "segments.png",
                     "slices_isocentre.png"]
    page = (out / "report.html").read_text()
    # Self-contained: every image is a data URI, nothing is fetched from elsewhere.
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    # The embedded figures are the PNG files beside the report, byte for byte; the fifth
    # image is the slider's axial slice through the isocentre.
    embedded = [base64.b64decode(s.split(",", 1)[1]) for s in sources]
    figures = {(out / n).read_bytes() for n in names if n.endswith(".png")}
    assert set(embedded) - figures == {embedded[sources.index(re.search(
        r'id="axial-image" src="([^"]*)"', page).group(1))]}
    # The slider holds every axial slice of the body (with its margin), in order.
    frames = json.loads(re.search(r"const axialFrames = (\[.*?\]);", page).group(1))
    body = case.patient.structure("BODY").mask.any(axis=(1, 2))
    assert len(frames) >= body.sum() and frames[0][0].startswith("axial, z = ")
    z = [float(label.split("z = ")[1].split(" mm")[0]) for label, _ in frames]
    assert z == sorted(z)
    assert "Through the hottest point of Core" in page  # a button that scrolls to it


def test_unmet_goals_are_red_with_their_margin(report):
    out, review = report
    page = (out / "report.html").read_text()
    rows = re.findall(r'<tr class="(met|unmet)">(.*?)</tr>', page)
    # TG-119's four goals, then the three every protocol gets on the tissue outside the PTVs.
    assert len(rows) == len(review.goals) == 7
    assert ([g.structure for g in review.goals]
            == ["PTV"] * 2 + ["Core"] * 2 + ["Outside PTVs"] * 3)
    for (cls, cells), goal in zip(rows, review.goals):
        assert cls == ("met" if goal.met else "unmet")
        assert html.escape(goal.goal.label) in cells and ("NOT MET" in cells) == (not goal.met)
        if np.isfinite(goal.margin):  # the mean outside the PTVs has no limit, hence no margin
            margin = ("+" if goal.margin >= 0 else "") + f"{goal.margin:.2f} {goal.unit}"
            assert margin in cells
    # The synthetic dose under-covers the PTV (D95 47 Gy): unmet, reported, not hidden.
    assert [g.goal.label for g in review.unmet_goals][0] == "PTV D95% >= 50 Gy"
    assert "3 not met" in page


def test_report_lists_beams_prescription_grid_and_versions(report):
    out, _ = report
    page = (out / "report.html").read_text()
    for text in ("G120", "46.0", "<b>138.0</b>", "PTV: 50 Gy in 25 fractions",
                 "The dose grid is the CT grid.", "matplotlib", "pydicom",
                 "<td>RT Plan SOP Instance UID</td><td>1.2.3.4</td>",
                 "<td>patient ID</td><td>TG119</td>", "No check was run"):
        assert text in page, text


def test_report_on_another_dose_grid_says_it_resampled(case, tmp_path):
    dose, grid = read_rt_dose(case.rtdose_coarse)
    review = write_report(tmp_path / "r", case.patient, dose, grid)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "interpolated (trilinear) from its own grid onto the CT grid" in page
    assert "No protocol given" in page
    assert "the highest prescription, 50 Gy" in page  # the phantom's own prescription
    assert "slices_target_centre.png" in page  # no beams: slices through the targets' centre
    assert review.goals == ()


def test_impossible_protocol_is_explained_in_the_report(tmp_path, protocol_file):
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 120.0, 160.0), margin_mm=6.0)
    ptv = patient.structure("PTV").mask
    core = patient.structure("Core").mask | ptv  # the core swallows the target
    patient = dataclasses.replace(patient, structures=tuple(
        Structure("Core", "organ", core) if s.name == "Core" else s for s in patient.structures))
    text = protocol_path("tg119_c_shape").read_text()
    # TG-119 with the core's hard goal as a maximum: the target inside the core cannot get 50 Gy.
    assert 'metric = "D10%"\nmax = 25.0' in text
    path = protocol_file(text.replace('metric = "D10%"\nmax = 25.0', 'metric = "Dmax"\nmax = 25.0'))
    dose = np.where(ptv, 50.0, 5.0).astype(np.float32)
    review = write_report(tmp_path / "r", patient, dose, patient.grid,
                          protocol=read_protocol(path))
    (conflict,) = review.conflicts
    page = (tmp_path / "r" / "report.html").read_text()
    assert f"overlaps Core by {conflict.overlap_cc:.2f} cc" in page
    assert "cannot be met as delineated" in page


def test_existing_folder_needs_overwrite(case, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="already exists"):
        write_report(out, case.patient, case.dose_gy, case.patient.grid)
    assert [p.name for p in tmp_path.iterdir()] == ["r"]  # nothing half-written beside it
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no headless Chromium installed (Debian package chromium)")


def _near(image: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 6) -> int:
    pixels = (image[..., :3] * 255).round().astype(int)
    return int(np.all(np.abs(pixels - np.asarray(rgb)) <= tolerance, axis=-1).sum())


def test_report_renders_in_headless_chromium(report, tmp_path):
    """Chromium renders the page: the goal table's red rows and the embedded figures (the
    DVH's PTV curve colour, the colour-wash) appear in the screenshot. Colours: tr.unmet
    background #fbe3e4, tab10 blue #1f77b4 (the first structure's curve and outline)."""
    out, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1280,2400",
                    (out / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    image = imread(shot)
    assert image.shape[:2] == (2400, 1280)
    assert _near(image, (0xfb, 0xe3, 0xe4)) > 5000  # three unmet goal rows
    assert _near(image, (0x1f, 0x77, 0xb4)) > 300   # curves and outlines inside the images


def test_isodose_colours_are_no_structure_colour():
    """No structure outline can pass for an isodose line: the two palettes share no colour,
    and each isodose colour lies at least 90 (of 441) from every structure colour in RGB
    (0-255; the closest pair, yellow 95 % and olive, is 100 apart)."""
    isodose = np.array([to_rgb(c) for c in ISODOSE_COLOURS]) * 255
    structures = np.array([to_rgb(c) for c in STRUCTURE_COLOURS]) * 255
    assert not {c.lower() for c in ISODOSE_COLOURS} & {c.lower() for c in STRUCTURE_COLOURS}
    assert np.linalg.norm(isodose[:, None] - structures[None], axis=2).min() >= 90.0
    assert len(ISODOSE_COLOURS) == len(ISODOSE_PERCENT)


def test_report_shows_paths_relative_fluence_dvh_and_the_check(case, tmp_path):
    """The sources (an absolute CT folder) appear relative to the report folder; the fluence
    plan's DVHs are drawn; a check's verdict, engine and DVH differences are listed."""
    patient = dataclasses.replace(case.patient, source=str(case.ct_dir.resolve()))
    check = CheckResult(
        files=None, plan=None, pass_rate=0.987, points=4321, structures=(), normalisation_gy=50.0,
        normalisation="prescription", dose_grid=patient.grid, recomputed_dose_gy=case.dose_gy,
        gamma=case.dose_gy, dose_manufacturer="planner")
    out = tmp_path / "deep" / "review"
    write_report(out, patient, case.dose_gy, patient.grid, fluence_dose_gy=case.dose_gy * 1.02,
                 check=check)
    page = (out / "report.html").read_text()
    assert str(tmp_path) not in page
    assert f"CT and structures: {os.path.relpath(case.ct_dir.resolve(), out.resolve())}." in page
    assert "(deliverable plan solid, fluence plan dashed)" in page
    assert ("PASS: 98.7 % of 4321 points pass gamma 3 %/2 mm" in page
            and "%). The RT Dose was computed by planner, the engine of this check" in page)
