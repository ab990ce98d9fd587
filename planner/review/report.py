"""The review report: one self-contained ``report.html`` with PNG figures and a DVH table beside it.

The report is built from plain inputs (a patient, a dose on a grid, optionally a protocol and the
plan's beams), so the same function reviews planner's own plans and any other system's plan
(``planner review``). Everything is computed on the CT grid: a dose on another grid is
interpolated onto it (:func:`planner.review.dvh.resample_dose`), and the report says so.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import matplotlib
import numpy as np
import pydicom
import scipy

import planner
from dose.grid import Grid
from dose.machine import load_machine
from dose.segments import segments_fluence
from planner.io._atomic import atomic_directory, check_writable
from planner.io.rtplan import PlanBeam
from planner.patient import Patient
from planner.protocol import Protocol
from planner.review.dvh import (
    DoseStatistics,
    dvh_csv_text,
    resample_dose,
    structure_dvhs,
)
from planner.review.figures import (
    ISODOSE_PERCENT,
    UNMET_COLOUR,
    WASH_FROM,
    FluenceMap,
    dvh_figure,
    fluence_figure,
    png_bytes,
    segments_figure,
    slice_figure,
    structure_colours,
)
from planner.review.goals import Conflict, GoalRow, evaluate_protocol, protocol_conflicts

REPORT_FILE = "report.html"
SEGMENTS_PER_BEAM = 3


@dataclass(frozen=True)
class ReviewPlan:
    """What is known of the plan being reviewed (all optional but the label).

    Attributes
    ----------
    label : str
        Plan name shown in the title.
    beams : tuple of PlanBeam
        Beams with their segments and MU (per fraction); the first beam's isocentre is where the
        slices are drawn.
    leaf_boundaries_mm : (n_pairs + 1,) float array or None, mm
        MLC leaf boundaries, needed to draw segments.
    fluences : tuple of FluenceMap
        One per beam, at the isocentre plane.
    fractions : int or None
    normalisation : str
        How the dose was normalised, in words (e.g. "PTV D95 = 100 %").
    source : str
        Where the plan came from (files, or "planner").
    """

    label: str
    beams: tuple[PlanBeam, ...] = ()
    leaf_boundaries_mm: np.ndarray | None = field(default=None, repr=False)
    fluences: tuple[FluenceMap, ...] = ()
    fractions: int | None = None
    normalisation: str = "none stated"
    source: str = ""


@dataclass(frozen=True)
class Review:
    """What the report shows, for callers that want the numbers too.

    Attributes
    ----------
    folder : Path
        The report folder.
    statistics : tuple of DoseStatistics
    goals : tuple of GoalRow
    conflicts : tuple of Conflict
    """

    folder: Path
    statistics: tuple[DoseStatistics, ...]
    goals: tuple[GoalRow, ...]
    conflicts: tuple[Conflict, ...]

    @property
    def unmet_goals(self) -> tuple[GoalRow, ...]:
        return tuple(g for g in self.goals if not g.met)


def aperture_fluences(beams: Sequence[PlanBeam], leaf_boundaries_mm: np.ndarray, *,
                      pixel_mm: float = 2.5) -> tuple[FluenceMap, ...]:
    """The MU-weighted open area of each beam's segments at the isocentre plane.

    Leaf transmission is left out (it belongs to a machine, and a reviewed plan may come from
    any): the map shows what the apertures deliver, in MU per fraction.

    Parameters
    ----------
    beams : sequence of PlanBeam
    leaf_boundaries_mm : (n_pairs + 1,) float array, mm
    pixel_mm : float, mm
        Pixel size of the maps.
    """
    machine = dataclasses.replace(load_machine(), leaf_boundaries_mm=leaf_boundaries_mm,
                                  leaf_transmission=0.0)
    maps = []
    for b in beams:
        if not b.segments:
            continue
        x1 = min(s.jaw_x_mm[0] for s in b.segments)
        x2 = max(s.jaw_x_mm[1] for s in b.segments)
        y1 = min(s.jaw_y_mm[0] for s in b.segments)
        y2 = max(s.jaw_y_mm[1] for s in b.segments)
        u = np.arange(np.floor(x1 / pixel_mm), np.ceil(x2 / pixel_mm) + 1) * pixel_mm
        v = np.arange(np.floor(y1 / pixel_mm), np.ceil(y2 / pixel_mm) + 1) * pixel_mm
        maps.append(FluenceMap(b.name, segments_fluence(b.segments, machine, u, v), u, v))
    return tuple(maps)


def _esc(value: object) -> str:
    return html.escape(str(value))


def _img(name: str, data: bytes, alt: str) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_esc(alt)}">'
            f'<figcaption>{_esc(alt)} ({_esc(name)})</figcaption></figure>')


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Sequence[str] = ()
           ) -> str:
    classes = list(row_classes) + [""] * (len(rows) - len(row_classes))
    out = ["<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    for cells, cls in zip(rows, classes):
        attr = f' class="{cls}"' if cls else ""
        out.append(f"<tr{attr}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _fmt(value: float, unit: str) -> str:
    return f"{value:.2f} {unit}"


def _slice_points(patient: Patient, dose: np.ndarray, plan: ReviewPlan
                  ) -> list[tuple[str, str, np.ndarray]]:
    """(file stem, title, point zyx mm): the isocentre (or the targets' centre), then the
    hottest voxel of each organ at risk."""
    points = []
    if plan.beams:
        x, y, z = plan.beams[0].beam.isocenter_xyz_mm
        points.append(("slices_isocentre", "Through the isocentre", np.array([z, y, x])))
    else:
        targets = [s.mask for s in patient.structures if s.kind == "target"]
        union = np.logical_or.reduce(targets) if targets else dose >= dose.max()
        centre = patient.grid.index_to_position_mm(np.argwhere(union).mean(axis=0))
        points.append(("slices_target_centre", "Through the targets' centre (no isocentre "
                       "given)", centre))
    for n, s in enumerate(patient.structures):
        if s.kind != "organ" or not s.mask.any():
            continue
        flat = np.flatnonzero(s.mask.ravel())
        hottest = flat[np.argmax(dose.ravel()[flat])]
        index = np.array(np.unravel_index(hottest, patient.grid.shape))
        points.append((f"slices_hottest_{n:02d}",
                       f"Through the hottest point of {s.name} ({dose.ravel()[hottest]:.2f} Gy)",
                       patient.grid.index_to_position_mm(index)))
    return points


def _grid_text(grid: Grid) -> str:
    return (f"shape {grid.shape} voxels, spacing ({', '.join(f'{v:g}' for v in grid.spacing_mm)}) "
            f"mm, first voxel at ({', '.join(f'{v:.2f}' for v in grid.origin_mm)}) mm (z, y, x)")


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #999; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
th { background: #e8e8e8; }
tr.unmet td { background: #fbe3e4; color: #a50f15; font-weight: bold; }
tr.met td.status { color: #1a7a34; font-weight: bold; }
p.conflict { color: #a50f15; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ccc; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.8em; color: #555; }
"""


def write_report(out_dir: str | Path, patient: Patient, dose_gy: np.ndarray, dose_grid: Grid, *,
                 protocol: Protocol | None = None, plan: ReviewPlan | None = None,
                 reference_dose_gy: float | None = None, overwrite: bool = False) -> Review:
    """Write the review report of one plan into the folder ``out_dir``.

    The folder holds ``report.html`` (self-contained: every image embedded as base64 PNG, no
    script, no external file), the same figures as PNG files (``dvh.png``,
    ``slices_*.png``, ``fluence.png``, ``segments.png``) and ``dvh.csv`` (the cumulative DVH
    curves). It appears complete or not at all.

    Parameters
    ----------
    out_dir : str or Path
        Must not exist unless ``overwrite``.
    patient : Patient
        CT and structures (masks on ``patient.grid``).
    dose_gy : (nz, ny, nx) float array, Gy
        Dose of the whole plan on ``dose_grid``.
    dose_grid : Grid
        When it differs from ``patient.grid`` the dose is interpolated onto the CT grid.
    protocol : Protocol, optional
        Its goals are evaluated and listed (unmet ones in red with their margin), its
        prescriptions shown, and targets overlapping organs with a hard maximum below their
        prescription are explained (:func:`planner.review.goals.protocol_conflicts`).
    plan : ReviewPlan, optional
        Beams, segments, fluences, fractions, normalisation.
    reference_dose_gy : float, optional, Gy
        100 % of the isodose lines; by default the highest prescription (protocol, then
        patient), else the maximum dose.
    overwrite : bool
        Replace an existing folder.

    Returns
    -------
    Review

    Raises
    ------
    InputError
        ``out_dir`` exists and ``overwrite`` is false; a structure a non-optional goal needs is
        missing.
    """
    plan = plan or ReviewPlan(label=patient.name)
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)  # before seconds of rendering, not after
    notes = []
    if dose_grid == patient.grid:
        dose = np.asarray(dose_gy, dtype=np.float32)
        notes.append("The dose grid is the CT grid.")
    else:
        dose = resample_dose(dose_gy, dose_grid, patient.grid)
        notes.append("The dose was interpolated (trilinear) from its own grid onto the CT grid; "
                     "DVHs, goals and images use the CT grid and its structure masks.")
    prescriptions = protocol.prescriptions if protocol else patient.prescriptions
    if reference_dose_gy is None:
        if prescriptions:
            reference_dose_gy = max(p.dose_gy for p in prescriptions)
            reference_text = f"the highest prescription, {reference_dose_gy:g} Gy"
        else:
            reference_dose_gy = float(dose.max())
            reference_text = (f"the maximum dose, {reference_dose_gy:.2f} Gy (no prescription "
                              f"given)")
    else:
        reference_text = f"{reference_dose_gy:g} Gy as given"

    dvhs, statistics = structure_dvhs(dose, patient.grid, patient.structures)
    goals = evaluate_protocol(patient, dose, protocol) if protocol else ()
    conflicts = protocol_conflicts(patient, protocol) if protocol else ()
    colours = structure_colours([s.name for s in patient.structures])

    dvh_image = ("dvh.png", png_bytes(dvh_figure(dvhs, goals, colours=colours,
                                                 reference_dose_gy=reference_dose_gy)),
                 "Cumulative DVH with the clinical goals")
    slice_images = []
    for stem, title, point in _slice_points(patient, dose, plan):
        figure = slice_figure(patient, dose, point, reference_dose_gy=reference_dose_gy,
                              title=title, colours=colours)
        slice_images.append((f"{stem}.png", png_bytes(figure), title))
    plan_images = []
    if plan.fluences:
        plan_images.append(("fluence.png", png_bytes(fluence_figure(plan.fluences)),
                            "Fluence per beam at the isocentre plane (MU)"))
    if plan.beams and plan.leaf_boundaries_mm is not None:
        figure = segments_figure([(b.name, b.segments) for b in plan.beams],
                                 plan.leaf_boundaries_mm, per_beam=SEGMENTS_PER_BEAM)
        plan_images.append(("segments.png", png_bytes(figure),
                            f"The {SEGMENTS_PER_BEAM} segments with the most MU of each beam "
                            f"(leaves grey, jaws red)"))

    body = [f"<h1>Plan review: {_esc(plan.label)} &mdash; patient {_esc(patient.name)}</h1>",
            f"<p>Written {datetime.now():%Y-%m-%d %H:%M} by planner {planner.__version__}. "
            f"Plan: {_esc(plan.source or 'planner')}. CT and structures: "
            f"{_esc(patient.source)}.</p>"]

    body.append("<h2>Clinical goals</h2>")
    if conflicts:
        body.append("<p class='conflict'>The protocol cannot be met as delineated:</p>")
        body += [f"<p class='conflict'>{_esc(c.explanation)}</p>" for c in conflicts]
    if protocol is None:
        body.append("<p>No protocol given: no goals evaluated.</p>")
    else:
        unmet = [g for g in goals if not g.met]
        body.append(f"<p>Protocol {_esc(protocol.name)} ({_esc(protocol.source)}): "
                    f"{len(goals) - len(unmet)} of {len(goals)} goals met"
                    + (f"; <b style='color:{UNMET_COLOUR}'>{len(unmet)} not met</b>" if unmet
                       else "") + ".</p>")
        rows = [[_esc(g.goal.label), _esc(g.structure), _esc(g.goal.priority),
                 _fmt(g.value, g.unit), _fmt(g.limit, g.unit),
                 ("+" if g.margin >= 0 else "") + _fmt(g.margin, g.unit),
                 "<span class='status'>" + ("met" if g.met else "NOT MET") + "</span>"]
                for g in goals]
        body.append(_table(["goal", "structure", "priority", "value", "limit", "margin",
                            "status"], rows, ["met" if g.met else "unmet" for g in goals]))

    body.append("<h2>Dose-volume histograms</h2>")
    body.append(_img(*dvh_image))
    body.append(_table(["structure", "volume (cc)", "Dmin (Gy)", "Dmean (Gy)", "Dmax (Gy)",
                        "D95 (Gy)", "D2 (Gy)", "D0.1cc (Gy)"],
                       [[_esc(s.name)] + [f"{v:.2f}" for v in (
                           s.volume_cc, s.min_gy, s.mean_gy, s.max_gy, s.d95_gy, s.d2_gy,
                           s.d0_1cc_gy)] for s in statistics]))

    body.append("<h2>Dose on the CT</h2>")
    body.append(f"<p>Isodose lines at {', '.join(map(str, ISODOSE_PERCENT))} % of "
                f"{_esc(reference_text)}; colour-wash from {100 * WASH_FROM:g} % up.</p>")
    body += [_img(name, data, title) for name, data, title in slice_images]

    body.append("<h2>Beams</h2>")
    if plan.beams:
        rows = [[_esc(b.name), f"{b.beam.gantry_deg:g}", f"{b.beam.collimator_deg:g}",
                 f"{b.beam.couch_deg:g}", f"{b.mu:.1f}", str(len(b.segments))]
                for b in plan.beams]
        rows.append(["<b>total</b>", "", "", "", f"<b>{sum(b.mu for b in plan.beams):.1f}</b>",
                     f"<b>{sum(len(b.segments) for b in plan.beams)}</b>"])
        body.append(_table(["beam", "gantry (deg)", "collimator (deg)", "couch (deg)",
                            "MU per fraction", "segments"], rows))
    else:
        body.append("<p>No beams given.</p>")
    body += [_img(name, data, title) for name, data, title in plan_images]

    body.append("<h2>Prescription, normalisation, dose grid, versions</h2>")
    rx_text = "; ".join(f"{p.target}: {p.dose_gy:g} Gy in {p.fractions} fractions"
                        for p in prescriptions) or "none given"
    versions = (f"planner {planner.__version__}, Python {platform.python_version()}, numpy "
                f"{np.__version__}, scipy {scipy.__version__}, matplotlib "
                f"{matplotlib.__version__}, pydicom {pydicom.__version__}")
    body.append(_table(["item", "value"], [
        ["prescription", _esc(rx_text)],
        ["fractions (plan)", _esc(plan.fractions if plan.fractions is not None else "not given")],
        ["normalisation", _esc(plan.normalisation)],
        ["CT grid", _esc(_grid_text(patient.grid))],
        ["dose grid", _esc(_grid_text(dose_grid))],
        ["dose sampling", _esc(" ".join(notes))],
        ["DVH", "cumulative, 0.01 Gy bins, whole voxels by centre (no partial volumes); "
                "statistics from the voxel doses"],
        ["versions", _esc(versions)],
    ]))
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Plan review {_esc(plan.label)}</title><style>{_CSS}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")

    with atomic_directory(out_dir, overwrite=overwrite) as folder:
        for name, data, _ in [dvh_image, *slice_images, *plan_images]:
            (folder / name).write_bytes(data)
        (folder / "dvh.csv").write_text(dvh_csv_text(dvhs), encoding="utf-8")
        (folder / REPORT_FILE).write_text(page, encoding="utf-8")
    return Review(out_dir, statistics, goals, conflicts)
