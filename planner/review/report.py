"""The review report: one self-contained ``report.html`` with PNG figures and a DVH table beside it.

The report is built from plain inputs (a patient, a dose on a grid, optionally a protocol and the
plan's beams), so the same function reviews planner's own plans and any other system's plan
(``planner review``). Everything is computed on the CT grid: a dose on another grid is
interpolated onto it (:func:`planner.review.dvh.resample_dose`), and the report says so.

Given a predicted dose (the dose-prediction network's, :mod:`planner.predict`), the report sets
the plan beside it, organ by organ: the dosimetrist's "could this plan be better?"
(:class:`PredictionRow`, :data:`PREDICTION_MARGIN_GY`).
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

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
from planner.predict.scope import APPLIES_TO
from planner.protocol import Protocol
from planner.review.dvh import (
    DoseStatistics,
    Dvh,
    dvh_csv_text,
    resample_dose,
    structure_dvhs,
)
from planner.review.figures import (
    ISODOSE_COLOURS,
    ISODOSE_PERCENT,
    UNMET_COLOUR,
    WASH_FROM,
    FluenceMap,
    axial_slice_pngs,
    dvh_figure,
    fluence_figure,
    png_bytes,
    prediction_dvh_figure,
    segments_figure,
    slice_figure,
    structure_colours,
)
from planner.review.goals import Conflict, GoalRow, evaluate_protocol, protocol_conflicts
from planner.review.quality import QualityFigure, quality_figures

if TYPE_CHECKING:  # planner.check imports planner.review: imported where used at run time
    from planner.check import CheckResult

REPORT_FILE = "report.html"
PREDICTED_DVH_FILE = "dvh_predicted.csv"
SEGMENTS_PER_BEAM = 3
#: An organ's planned Dmean or D0.1cc above the predicted by more than this is flagged "plan
#: worse than predicted". It is about the network's own error: on the 15 OpenKBP test patients
#: its prediction is 3.32 Gy from the reference plans' dose voxel by voxel (dose score) and 1.99
#: Gy in these very statistics (DVH score: organ Dmean and D0.1cc, target D1/D95/D99), see
#: data/models/openkbp_unet.json. A smaller excess is within what the prediction can tell.
PREDICTION_MARGIN_GY = 3.0


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
        Where the plan came from (files, or "planner"); paths in it are shown relative to the
        report folder.
    sop_instance_uid : str
        The RT Plan's SOP Instance UID, if it has one.
    patient_id, patient_name : str
        The patient's DICOM identifiers; by default those of the patient's CT
        (``Patient.dicom``).
    """

    label: str
    beams: tuple[PlanBeam, ...] = ()
    leaf_boundaries_mm: np.ndarray | None = field(default=None, repr=False)
    fluences: tuple[FluenceMap, ...] = ()
    fractions: int | None = None
    normalisation: str = "none stated"
    source: str = ""
    sop_instance_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""


@dataclass(frozen=True)
class PredictionRow:
    """One structure's plan against the predicted dose (Gy, on the CT grid).

    Attributes
    ----------
    structure : str
    planned_mean_gy, predicted_mean_gy : float, Gy
    planned_d0_1cc_gy, predicted_d0_1cc_gy : float, Gy
        Dose to the hottest 0.1 cm^3 (:class:`planner.review.dvh.DoseStatistics`).
    worse : bool
        An organ whose planned Dmean or D0.1cc exceeds the predicted by more than
        :data:`PREDICTION_MARGIN_GY` (never set for targets: more dose there is no fault).
    """

    structure: str
    planned_mean_gy: float
    predicted_mean_gy: float
    planned_d0_1cc_gy: float
    predicted_d0_1cc_gy: float
    worse: bool


def prediction_rows(patient: Patient, planned: Sequence[DoseStatistics],
                    predicted: Sequence[DoseStatistics], *,
                    margin_gy: float = PREDICTION_MARGIN_GY) -> tuple[PredictionRow, ...]:
    """The plan against the prediction for each target and organ (in ``patient``'s order).

    Parameters
    ----------
    patient : Patient
        Says which structures are targets and organs (external structures are left out).
    planned, predicted : sequence of DoseStatistics
        Of the plan's and the predicted dose, by structure name.
    margin_gy : float, Gy
        An organ is ``worse`` when its planned Dmean or D0.1cc exceeds the predicted by more.
    """
    plan = {s.name: s for s in planned}
    ahead = {s.name: s for s in predicted}
    rows = []
    for s in patient.structures:
        if s.kind not in ("target", "organ") or s.name not in plan or s.name not in ahead:
            continue
        p, q = plan[s.name], ahead[s.name]
        worse = s.kind == "organ" and (p.mean_gy - q.mean_gy > margin_gy
                                       or p.d0_1cc_gy - q.d0_1cc_gy > margin_gy)
        rows.append(PredictionRow(s.name, p.mean_gy, q.mean_gy, p.d0_1cc_gy, q.d0_1cc_gy,
                                  bool(worse)))
    return tuple(rows)


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
    prediction : tuple of PredictionRow
        Targets and organs, plan against the predicted dose; empty without a prediction.
    prediction_note : str
        What the prediction is, or why there is none.
    quality : tuple of QualityFigure
        :func:`planner.review.quality.quality_figures` (with a protocol).
    """

    folder: Path
    statistics: tuple[DoseStatistics, ...]
    goals: tuple[GoalRow, ...]
    conflicts: tuple[Conflict, ...]
    prediction: tuple[PredictionRow, ...] = ()
    prediction_note: str = ""
    quality: tuple[QualityFigure, ...] = ()

    @property
    def unmet_goals(self) -> tuple[GoalRow, ...]:
        return tuple(g for g in self.goals if not g.met)

    @property
    def worse_than_predicted(self) -> tuple[PredictionRow, ...]:
        """The organs flagged "plan worse than predicted"."""
        return tuple(r for r in self.prediction if r.worse)


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
    """``value`` with its unit; a goal without a limit (as low as possible) shows none."""
    return f"{value:.2f} {unit}" if np.isfinite(value) else "none"


def _centre_point(patient: Patient, dose: np.ndarray, plan: ReviewPlan
                  ) -> tuple[str, str, np.ndarray]:
    """(file stem, title, point zyx mm): the isocentre, else the targets' centre."""
    if plan.beams:
        x, y, z = plan.beams[0].beam.isocenter_xyz_mm
        return "slices_isocentre", "Through the isocentre", np.array([z, y, x])
    targets = [s.mask for s in patient.structures if s.kind == "target"]
    union = np.logical_or.reduce(targets) if targets else dose >= dose.max()
    return ("slices_target_centre", "Through the targets' centre (no isocentre given)",
            patient.grid.index_to_position_mm(np.argwhere(union).mean(axis=0)))


def _hottest_slices(patient: Patient, dose: np.ndarray) -> list[tuple[str, int]]:
    """(label, axial slice index) of the hottest voxel of each organ at risk."""
    out = []
    for s in patient.structures:
        if s.kind != "organ" or not s.mask.any():
            continue
        flat = np.flatnonzero(s.mask.ravel())
        hottest = flat[np.argmax(dose.ravel()[flat])]
        out.append((f"Through the hottest point of {s.name} ({dose.ravel()[hottest]:.2f} Gy)",
                    int(np.unravel_index(hottest, patient.grid.shape)[0])))
    return out


def _slider(slices: Sequence[tuple[int, bytes]], grid: Grid, start_mm: float,
            jumps: Sequence[tuple[str, int]], legend: Sequence[tuple[str, str]]) -> list[str]:
    """The axial slices as one image with a range input to scroll them (a few lines of inline
    script; the images are in the page), buttons to the given slices, and a legend."""
    indices = [k for k, _ in slices]
    z_mm = grid.axes_mm()[0]
    frames = [[f"axial, z = {z_mm[k]:.1f} mm (slice {k + 1} of {grid.shape[0]})",
               "data:image/png;base64," + base64.b64encode(data).decode("ascii")]
              for k, data in slices]
    start = int(np.argmin(np.abs(z_mm[indices] - start_mm)))
    buttons = "".join(f'<button type="button" onclick="axialShow({indices.index(k)})">'
                      f"{_esc(label)}</button> " for label, k in jumps if k in indices)
    keys = "".join(f'<span style="border-bottom:3px solid {c}">{_esc(name)}</span> '
                   for name, c in legend)
    return [
        '<div class="slider">',
        f'<p><input type="range" id="axial-range" min="0" max="{len(frames) - 1}" '
        f'value="{start}" oninput="axialShow(+this.value)" aria-label="axial slice"> '
        f'<span id="axial-label">{_esc(frames[start][0])}</span></p>',
        f"<p>{buttons}</p>" if buttons else "",
        f'<img id="axial-image" src="{frames[start][1]}" alt="axial slice">',
        f'<p class="keys">{keys}</p>',
        # The frames as JSON: the slider swaps the image's source, nothing is fetched.
        f"<script>const axialFrames = {json.dumps(frames)};\n"
        "function axialShow(k) {\n"
        "  document.getElementById('axial-range').value = k;\n"
        "  document.getElementById('axial-label').textContent = axialFrames[k][0];\n"
        "  document.getElementById('axial-image').src = axialFrames[k][1];\n"
        "}</script>",
        "</div>"]


def shown_paths(text: str, folder: Path) -> str:
    """``text`` (items separated by ", ") with each item that names an existing file or folder
    written relative to ``folder``, so that no absolute path of this machine is shown."""
    return ", ".join(os.path.relpath(Path(item).resolve(), folder.resolve())
                     if item and Path(item).exists() else item for item in text.split(", "))


def _check_section(check: CheckResult | None) -> list[str]:
    """The report's "Independent dose check" section as HTML parts."""
    from planner.check import (
        DVH_METRICS,
        GAMMA_DOSE_PERCENT,
        GAMMA_DTA_MM,
        TG218_TOLERANCE,
        engine_note,
    )

    out = ["<h2>Independent dose check</h2>"]
    if check is None:
        out.append("<p>No check was run (<code>planner check</code> recomputes the plan's dose "
                   "and compares it with its RT Dose).</p>")
        return out
    verdict = ("PASS" if check.passed else
               f"<b style='color:{UNMET_COLOUR}'>FAIL</b>")
    out.append(f"<p>{verdict}: {100 * check.pass_rate:.1f} % of {check.points} points pass gamma "
               f"{GAMMA_DOSE_PERCENT:g} %/{GAMMA_DTA_MM:g} mm (global; TG-218 tolerance &ge; "
               f"{100 * TG218_TOLERANCE:g} %). {_esc(engine_note(check))}."
               "</p>")
    unit = "% Rx" if check.normalisation == "prescription" else "% max"
    out.append(_table(["structure"] + [f"{label} diff ({unit})" for label, _ in DVH_METRICS],
                      [[_esc(s.name)] + [f"{check.difference_percent(s, a):+.2f}"
                                         for _, a in DVH_METRICS] for s in check.structures]))
    return out


def _grid_text(grid: Grid) -> str:
    return (f"shape {grid.shape} voxels, spacing ({', '.join(f'{v:g}' for v in grid.spacing_mm)}) "
            f"mm, first voxel at ({', '.join(f'{v:.2f}' for v in grid.origin_mm)}) mm (z, y, x)")


def _prediction_section(given: bool, rows: Sequence[PredictionRow], note: str,
                        images: Sequence[tuple[str, bytes, str]], targets: set[str]
                        ) -> list[str]:
    """The report's "Plan against the predicted dose" section as HTML parts."""
    note = note.strip().rstrip(".") or ("given" if given else "none given")
    out = ["<h2>Plan against the predicted dose</h2>", f"<p>Dose prediction: {_esc(note)}.</p>",
           f"<p>{_esc(APPLIES_TO)}.</p>"]
    if not given:
        return out
    if not rows:
        out.append("<p>No target or organ with voxels to compare.</p>")
        return out
    worse = [r for r in rows if r.worse]
    out.append(f"<p>An organ is flagged where its planned Dmean or D0.1cc exceeds the "
               f"predicted by more than {PREDICTION_MARGIN_GY:g} Gy (about the prediction's "
               f"own error; smaller differences are within what it can tell). Targets are "
               f"listed, not flagged. "
               + (f"<b style='color:{UNMET_COLOUR}'>{len(worse)} organ"
                  f"{'s' if len(worse) != 1 else ''} where the plan is worse than predicted: "
                  f"{_esc(', '.join(r.structure for r in worse))}</b>" if worse
                  else "No organ is worse than predicted by more than that.") + "</p>")

    def difference(planned: float, predicted: float) -> str:
        return f"{planned - predicted:+.2f}"

    cells = [[_esc(r.structure), f"{r.planned_mean_gy:.2f}", f"{r.predicted_mean_gy:.2f}",
              difference(r.planned_mean_gy, r.predicted_mean_gy), f"{r.planned_d0_1cc_gy:.2f}",
              f"{r.predicted_d0_1cc_gy:.2f}",
              difference(r.planned_d0_1cc_gy, r.predicted_d0_1cc_gy),
              "plan worse than predicted" if r.worse
              else "target (not flagged)" if r.structure in targets
              else "not worse than predicted"] for r in rows]
    out.append(_table(["structure", "Dmean plan (Gy)", "Dmean predicted (Gy)",
                       "difference (Gy)", "D0.1cc plan (Gy)", "D0.1cc predicted (Gy)",
                       "difference (Gy)", "flag"], cells,
                      ["worse" if r.worse else "" for r in rows]))
    out += [_img(name, data, title) for name, data, title in images]
    return out


_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1500px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #999; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: left; }
th { background: #e8e8e8; }
tr.unmet td, tr.worse td { background: #fbe3e4; color: #a50f15; font-weight: bold; }
tr.met td.status { color: #1a7a34; font-weight: bold; }
p.conflict { color: #a50f15; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ccc; }
div.slider img { width: 480px; image-rendering: pixelated; }
div.slider input { width: 480px; } p.keys span { margin-right: 0.8em; font-size: 0.85em; }
figure { margin: 0.8em 0; } figcaption { font-size: 0.8em; color: #555; }
"""


def write_report(out_dir: str | Path, patient: Patient, dose_gy: np.ndarray, dose_grid: Grid, *,
                 protocol: Protocol | None = None, plan: ReviewPlan | None = None,
                 reference_dose_gy: float | None = None,
                 predicted_dose_gy: np.ndarray | None = None, prediction_note: str = "",
                 fluence_dose_gy: np.ndarray | None = None, check: CheckResult | None = None,
                 overwrite: bool = False) -> Review:
    """Write the review report of one plan into the folder ``out_dir``.

    The folder holds ``report.html`` (self-contained: every image embedded as base64 PNG, no
    external file; its one inline script scrolls the axial slices), the same figures as PNG
    files (``dvh.png``, ``slices_*.png``, ``fluence.png``, ``segments.png``) and ``dvh.csv``
    (the cumulative DVH curves); with a predicted dose also ``dvh_predicted.png`` and
    ``dvh_predicted.csv`` (the predicted dose's curves, as ``dvh.csv``). It appears complete or
    not at all. Paths of this machine appear relative to the report folder.

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
    predicted_dose_gy : (nz, ny, nx) float array, Gy, optional
        The predicted dose of this patient on ``dose_grid`` (interpolated onto the CT grid like
        the plan's). The section "Plan against the predicted dose" then lists each target and
        organ's planned and predicted Dmean and D0.1cc and flags the organs where the plan is
        worse by more than :data:`PREDICTION_MARGIN_GY`, with both DVHs in one figure.
    prediction_note : str
        One line: what the prediction is, or why there is none; shown in that section.
    fluence_dose_gy : (nz, ny, nx) float array, Gy, optional
        The fluence plan's dose (before leaf sequencing) on ``dose_grid``: its DVHs are drawn
        dashed beside the deliverable plan's.
    check : CheckResult, optional
        The plan's independent dose check (:func:`planner.check.check_plan`), when one was run.
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
    ValueError
        ``predicted_dose_gy`` or ``fluence_dose_gy`` is not of ``dose_grid``'s shape.
    """
    plan = plan or ReviewPlan(label=patient.name)
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)  # before seconds of rendering, not after
    for name, other in (("predicted", predicted_dose_gy), ("fluence", fluence_dose_gy)):
        if other is not None and np.shape(other) != dose_grid.shape:
            raise ValueError(f"{name} dose shape {np.shape(other)} differs from the dose grid "
                             f"{dose_grid.shape}")

    def on_ct(values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        if dose_grid == patient.grid:
            return np.asarray(values, dtype=np.float32)
        return resample_dose(values, dose_grid, patient.grid)

    dose, predicted, fluence = on_ct(dose_gy), on_ct(predicted_dose_gy), on_ct(fluence_dose_gy)
    notes = []
    if dose_grid == patient.grid:
        notes.append("The dose grid is the CT grid.")
    else:
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
    quality = (quality_figures(patient, dose, protocol, air_hu=protocol.planning.air_hu)
               if protocol else ())
    conflicts = protocol_conflicts(patient, protocol) if protocol else ()
    colours = structure_colours([s.name for s in patient.structures])
    predicted_dvhs: tuple[Dvh, ...] = ()
    comparison: tuple[PredictionRow, ...] = ()
    if predicted is not None:
        predicted_dvhs, predicted_statistics = structure_dvhs(predicted, patient.grid,
                                                              patient.structures)
        comparison = prediction_rows(patient, statistics, predicted_statistics)

    fluence_dvhs = () if fluence is None else structure_dvhs(fluence, patient.grid,
                                                               patient.structures)[0]
    dvh_image = ("dvh.png", png_bytes(dvh_figure(dvhs, goals, colours=colours,
                                                 reference_dose_gy=reference_dose_gy,
                                                 fluence_dvhs=fluence_dvhs)),
                 "Cumulative DVH with the clinical goals"
                 + (" (deliverable plan solid, fluence plan dashed)" if fluence_dvhs else ""))
    stem, title, centre = _centre_point(patient, dose, plan)
    slice_images = [(f"{stem}.png", png_bytes(slice_figure(
        patient, dose, centre, reference_dose_gy=reference_dose_gy, title=title,
        colours=colours)), title)]
    slider = _slider(axial_slice_pngs(patient, dose, reference_dose_gy=reference_dose_gy,
                                      colours=colours), patient.grid, float(centre[0]),
                     [("Through the isocentre" if plan.beams else "Through the targets' "
                       "centre", int(np.clip(np.rint(patient.grid.position_to_index(centre)[0]),
                                             0, patient.grid.shape[0] - 1)))]
                     + _hottest_slices(patient, dose),
                     [(f"{p} % ({p * reference_dose_gy / 100:.1f} Gy)", c)
                      for p, c in zip(ISODOSE_PERCENT, ISODOSE_COLOURS)]
                     + [(s.name, colours[s.name]) for s in patient.structures])
    prediction_images = []
    if comparison:
        shown = {r.structure for r in comparison}
        figure = prediction_dvh_figure([d for d in dvhs if d.name in shown],
                                       [d for d in predicted_dvhs if d.name in shown],
                                       colours=colours,
                                       worse=[r.structure for r in comparison if r.worse],
                                       reference_dose_gy=reference_dose_gy)
        prediction_images.append(("dvh_predicted.png", png_bytes(figure),
                                  "DVHs of the plan (solid) and of the predicted dose (dashed)"))
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

    references = patient.dicom
    patient_id = plan.patient_id or (references.patient_id if references else "")
    patient_name = plan.patient_name or (references.patient_name if references else "")
    body = [f"<h1>Plan review: {_esc(plan.label)} &mdash; patient {_esc(patient.name)}</h1>",
            f"<p>Written {datetime.now():%Y-%m-%d %H:%M} by planner {planner.__version__}. "
            f"Plan: {_esc(shown_paths(plan.source or 'planner', out_dir))}. CT and "
            f"structures: {_esc(shown_paths(patient.source, out_dir))}.</p>",
            _table(["identifier", "value"], [
                ["patient ID", _esc(patient_id or "not given")],
                ["patient name", _esc(patient_name or "not given")],
                ["RT Plan label", _esc(plan.label)],
                ["RT Plan SOP Instance UID", _esc(plan.sop_instance_uid or "not given")]])]

    body.append("<h2>Clinical goals</h2>")
    if conflicts:
        body.append("<p class='conflict'>The protocol cannot be met as delineated:</p>")
        body += [f"<p class='conflict'>{_esc(c.explanation)}</p>" for c in conflicts]
    if protocol is None:
        body.append("<p>No protocol given: no goals evaluated.</p>")
    else:
        unmet = [g for g in goals if not g.met]
        body.append(f"<p>Protocol {_esc(protocol.name)} "
                    f"({_esc(shown_paths(protocol.source, out_dir))}): "
                    f"{len(goals) - len(unmet)} of {len(goals)} goals met"
                    + (f"; <b style='color:{UNMET_COLOUR}'>{len(unmet)} not met</b>" if unmet
                       else "") + ".</p>")
        rows = [[_esc(g.goal.label), _esc(g.structure), _esc(g.goal.priority),
                 _fmt(g.value, g.unit), _fmt(g.limit, g.unit),
                 (("+" if g.margin >= 0 else "") + _fmt(g.margin, g.unit)
                  if np.isfinite(g.margin) else "none"),
                 "<span class='status'>" + ("met" if g.met else "NOT MET") + "</span>"]
                for g in goals]
        body.append(_table(["goal", "structure", "priority", "value", "limit", "margin",
                            "status"], rows, ["met" if g.met else "unmet" for g in goals]))
        body.append("<h3>Plan quality beyond the goals</h3>")
        body.append("<p>Conformity (Paddick CI at the prescription isodose; R50: the volume at "
                    "half the prescription over the target's), the whole PTVs' coverage beside "
                    "their tissue (the PTV less its air, below "
                    f"{protocol.planning.air_hu:g} HU), and the normal tissue (the body outside "
                    "every target).</p>")
        body.append(_table(["figure", "structure", "value"], [
            [_esc(f.name), _esc(f.structure), f"{f.value:.2f} {_esc(f.unit)}".strip()]
            for f in quality]))

    body.append("<h2>Dose-volume histograms</h2>")
    body.append(_img(*dvh_image))
    body.append(_table(["structure", "volume (cc)", "Dmin (Gy)", "Dmean (Gy)", "Dmax (Gy)",
                        "D95 (Gy)", "D2 (Gy)", "D0.1cc (Gy)"],
                       [[_esc(s.name)] + [f"{v:.2f}" for v in (
                           s.volume_cc, s.min_gy, s.mean_gy, s.max_gy, s.d95_gy, s.d2_gy,
                           s.d0_1cc_gy)] for s in statistics]))

    body += _check_section(check)
    body += _prediction_section(predicted is not None, comparison, prediction_note,
                                prediction_images, {s.name for s in patient.targets()})

    body.append("<h2>Dose on the CT</h2>")
    body.append(f"<p>Isodose lines at {', '.join(map(str, ISODOSE_PERCENT))} % of "
                f"{_esc(reference_text)}; colour-wash from {100 * WASH_FROM:g} % up. Scroll "
                "through the axial slices with the slider; below, the three planes through "
                "one point.</p>")
    body += slider
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
        for name, data, _ in [dvh_image, *slice_images, *prediction_images, *plan_images]:
            (folder / name).write_bytes(data)
        (folder / "dvh.csv").write_text(dvh_csv_text(dvhs), encoding="utf-8")
        if predicted_dvhs:
            (folder / PREDICTED_DVH_FILE).write_text(dvh_csv_text(predicted_dvhs),
                                                     encoding="utf-8")
        (folder / REPORT_FILE).write_text(page, encoding="utf-8")
    return Review(out_dir, statistics, goals, conflicts, comparison, prediction_note, quality)
