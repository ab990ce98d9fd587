"""Figures of the review report (matplotlib, Agg canvas: no display, no pyplot state).

Each function returns a :class:`matplotlib.figure.Figure`; :func:`png_bytes` renders one.
Images follow the radiological convention for a head-first supine patient: axial slices seen
from the feet (patient's right on the left of the image, anterior up), coronal slices seen from
the front (superior up), sagittal slices seen from the patient's right (anterior on the left).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import matplotlib
import numpy as np
import scipy.ndimage
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from PIL import Image

from dose.segments import Segment
from planner.patient import Patient
from planner.review.dvh import Dvh
from planner.review.goals import GoalRow

#: Isodose levels drawn on the slices, % of the reference dose (the usual clinical set).
ISODOSE_PERCENT = (30, 50, 80, 95, 100, 107)
#: Pure, saturated hues for the isodose lines; structures take muted ones
#: (:data:`STRUCTURE_COLOURS`), so that no outline can be read as an isodose line.
ISODOSE_COLOURS = ("#0000ff", "#00ffff", "#00ff00", "#ffff00", "#ff0000", "#ff00ff")
#: Structure colours: matplotlib's tab10 without its red (red means "goal not met") and its cyan
#: (next to the 50 % isodose's), and two darker tones of tab20b in their place.
STRUCTURE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2",
                     "#bcbd22", "#7f7f7f", "#393b79", "#637939")
#: Dose below this fraction of the reference dose is not colour-washed (the CT stays visible).
WASH_FROM = 0.1
#: Soft-tissue CT window (level 40 HU, width 400 HU).
CT_WINDOW_HU = (-160.0, 240.0)
MET_COLOUR, UNMET_COLOUR = "#1a9641", "#d7191c"


@dataclass(frozen=True)
class FluenceMap:
    """The fluence of one beam at the isocentre plane.

    Attributes
    ----------
    beam : str
        Beam name.
    fluence_mu : (nv, nu) float array, MU
        Rows along Y_b (across the leaves), columns along X_b (leaf travel).
    u_edges_mm : (nu + 1,) float array, mm
    v_edges_mm : (nv + 1,) float array, mm
    """

    beam: str
    fluence_mu: np.ndarray = field(repr=False)
    u_edges_mm: np.ndarray = field(repr=False)
    v_edges_mm: np.ndarray = field(repr=False)


def structure_colours(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per structure name (:data:`STRUCTURE_COLOURS` in turn, in the given
    order)."""
    return {name: STRUCTURE_COLOURS[i % len(STRUCTURE_COLOURS)] for i, name in enumerate(names)}


def png_bytes(figure: Figure, *, dpi: int = 110) -> bytes:
    """The figure rendered as PNG."""
    buffer = io.BytesIO()
    FigureCanvasAgg(figure)  # attaches the Agg canvas: no pyplot, no display
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def dvh_figure(dvhs: Sequence[Dvh], goals: Sequence[GoalRow] = (), *,
               colours: dict[str, str], reference_dose_gy: float | None = None,
               fluence_dvhs: Sequence[Dvh] = ()) -> Figure:
    """Cumulative DVHs (volume % against dose Gy) with each goal marked at its limit.

    A goal is a triangle at (dose, volume) of its limit in its structure's colour, labelled
    with the goal in that colour, pointing the way the curve must pass (down for an upper
    limit, up for a lower one), its edge green when met and red when not. Mean-dose goals have
    no point on the curve and appear only in the goal table.

    Parameters
    ----------
    dvhs : sequence of Dvh
        The plan's (deliverable) curves, solid.
    goals : sequence of GoalRow
    colours : dict
        Structure name -> colour.
    reference_dose_gy : float, optional, Gy
        Drawn as a dashed vertical line.
    fluence_dvhs : sequence of Dvh
        The fluence plan's curves (before leaf sequencing), dashed in the same colours.
    """
    figure = Figure(figsize=(10.5, 5.5))
    ax = figure.add_subplot()
    for curve in dvhs:
        ax.plot(curve.dose_gy, curve.percent, color=colours[curve.name], lw=1.6,
                label=f"{curve.name} ({curve.volume_cc:.1f} cc)")
    for curve in fluence_dvhs:
        ax.plot(curve.dose_gy, curve.percent, color=colours[curve.name], lw=1.2, ls="--")
    placed: list[tuple[float, float]] = []
    for row in goals:
        if row.dvh_point is None:
            continue
        marker = "v" if row.goal.bound == "max" else "^"
        colour = colours.get(row.structure, "0.2")
        ax.plot(*row.dvh_point, marker=marker, ms=10, ls="none", mfc=colour,
                mec=MET_COLOUR if row.met else UNMET_COLOUR, mew=2.5)
        # Labels of goals close together (within 3 Gy and 3 %) are stacked, not overprinted.
        near = sum(abs(x - row.dvh_point[0]) < 3.0 and abs(y - row.dvh_point[1]) < 3.0
                   for x, y in placed)
        placed.append(row.dvh_point)
        ax.annotate(row.goal.label, row.dvh_point,
                    xytext=(7, (4 if marker == "^" else -10) + 9 * near),
                    textcoords="offset points", fontsize=7, color=colour)
    _dvh_axes(ax, reference_dose_gy, "--")
    handles, labels = ax.get_legend_handles_labels()
    if fluence_dvhs:
        handles += [Line2D([], [], color="0.2", lw=1.6), Line2D([], [], color="0.2", lw=1.2,
                                                                 ls="--")]
        labels += ["deliverable plan (solid)", "fluence plan (dashed)"]
    if goals:
        handles += [Line2D([], [], marker="v", ls="none", mfc="white", mec=MET_COLOUR, mew=2.5),
                    Line2D([], [], marker="v", ls="none", mfc="white", mec=UNMET_COLOUR, mew=2.5)]
        labels += ["goal met", "goal not met"]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def _dvh_axes(ax: Axes, reference_dose_gy: float | None, reference_style: str) -> None:
    """Axes of a cumulative DVH: dose from 0, volume 0-102 %, the reference dose as a line."""
    if reference_dose_gy:
        ax.axvline(reference_dose_gy, color="0.4", ls=reference_style, lw=0.8)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_ylim(0, 102)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)


def prediction_dvh_figure(planned: Sequence[Dvh], predicted: Sequence[Dvh], *,
                          colours: dict[str, str], worse: Sequence[str] = (),
                          reference_dose_gy: float | None = None) -> Figure:
    """Planned (solid) and predicted (dashed) cumulative DVHs, one colour per structure.

    Parameters
    ----------
    planned, predicted : sequence of Dvh
        Curves of the plan's and the predicted dose; a structure is drawn when it is in both.
    colours : dict
        Structure name -> colour (the same as in :func:`dvh_figure`).
    worse : sequence of str
        Structures where the plan is worse than predicted: marked in the legend.
    reference_dose_gy : float, optional, Gy
        Drawn as a dotted vertical line.
    """
    figure = Figure(figsize=(10.5, 5.5))
    ax = figure.add_subplot()
    ahead = {curve.name: curve for curve in predicted}
    for curve in planned:
        if curve.name not in ahead:
            continue
        colour = colours[curve.name]
        flag = " (worse than predicted)" if curve.name in worse else ""
        ax.plot(curve.dose_gy, curve.percent, color=colour, lw=1.6 if not flag else 2.4,
                label=f"{curve.name}{flag}")
        other = ahead[curve.name]
        ax.plot(other.dose_gy, other.percent, color=colour, lw=1.4, ls="--")
    _dvh_axes(ax, reference_dose_gy, ":")
    handles, labels = ax.get_legend_handles_labels()
    handles += [Line2D([], [], color="0.2", lw=1.6), Line2D([], [], color="0.2", lw=1.4, ls="--")]
    labels += ["plan (solid)", "predicted (dashed)"]
    ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


# The three planes: name, the axis (z=0, y=1, x=2) each cuts, the horizontal and vertical axes
# shown, and whether the vertical axis points down (axial: anterior, small y, at the top).
_PLANES = (("axial", 0, 2, 1, True), ("coronal", 1, 2, 0, False), ("sagittal", 2, 1, 0, False))
_AXIS_NAMES = "zyx"


VIEW_MARGIN_MM = 15.0  # air shown around the body on the slices


def _edges(centres: np.ndarray, spacing: float) -> tuple[float, float]:
    """Outer edges (mm) of voxels with these centres."""
    return float(centres[0] - spacing / 2), float(centres[-1] + spacing / 2)


def view_box_mm(patient: Patient) -> tuple[np.ndarray, np.ndarray]:
    """The (z, y, x) bounds in mm the slices show: the external structure (else the voxels
    denser than lung, above -400 HU) with a margin, within the grid."""
    external = [s.mask for s in patient.structures if s.kind == "external" and s.mask.any()]
    inside = external[0] if external else patient.hu > -400.0
    low, high = patient.grid.extent_mm()
    if not inside.any():
        return low, high
    index = np.argwhere(inside)
    grid = patient.grid
    return (np.maximum(grid.index_to_position_mm(index.min(axis=0)) - VIEW_MARGIN_MM, low),
            np.minimum(grid.index_to_position_mm(index.max(axis=0)) + VIEW_MARGIN_MM, high))


def slice_figure(patient: Patient, dose_gy: np.ndarray, point_zyx_mm: Sequence[float], *,
                 reference_dose_gy: float, title: str, colours: dict[str, str]) -> Figure:
    """Axial, coronal and sagittal slices through a point: CT, dose colour-wash, isodose lines
    (:data:`ISODOSE_PERCENT` of ``reference_dose_gy``) and structure outlines.

    Parameters
    ----------
    patient : Patient
    dose_gy : (nz, ny, nx) float array, Gy
        On ``patient.grid``.
    point_zyx_mm : (3,) float, mm
        The slices go through the voxel nearest to this point.
    reference_dose_gy : float, Gy
        100 % of the isodose levels.
    title : str
    colours : dict
        Structure name -> colour.
    """
    grid = patient.grid
    index = tuple(int(v) for v in np.clip(np.rint(grid.position_to_index(np.asarray(
        point_zyx_mm, dtype=float))), 0, np.asarray(grid.shape) - 1))
    figure = Figure(figsize=(15.0, 5.2))
    view_low, view_high = view_box_mm(patient)
    levels = [p * reference_dose_gy / 100.0 for p in ISODOSE_PERCENT]
    axes_mm = grid.axes_mm()
    for n, (name, cut, h_axis, v_axis, down) in enumerate(_PLANES):
        ax = figure.add_subplot(1, 3, n + 1)
        slicer = tuple(index[cut] if axis == cut else slice(None) for axis in range(3))
        h, v = axes_mm[h_axis], axes_mm[v_axis]
        # Voxel edges: each voxel centre sits in the middle of its pixel.
        extent = (*_edges(h, grid.spacing_mm[h_axis]), *_edges(v, grid.spacing_mm[v_axis]))
        ax.imshow(patient.hu[slicer], cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1],
                  origin="lower", extent=extent, interpolation="nearest")
        dose = dose_gy[slicer]
        wash = np.ma.masked_less(dose, WASH_FROM * reference_dose_gy)
        ax.imshow(wash, cmap="jet", alpha=0.35, origin="lower", extent=extent,
                  vmin=WASH_FROM * reference_dose_gy, vmax=1.1 * reference_dose_gy,
                  interpolation="bilinear")
        if h.size > 1 and v.size > 1:  # contours need two samples along each axis
            if dose.max() >= levels[0]:
                ax.contour(h, v, dose, levels=levels, colors=ISODOSE_COLOURS, linewidths=1.0)
            for s in patient.structures:
                mask = s.mask[slicer]
                if mask.any() and not mask.all():
                    ax.contour(h, v, mask.astype(np.float32), levels=[0.5],
                               colors=[colours.get(s.name, "white")], linewidths=1.3)
        ax.plot(point_zyx_mm[h_axis], point_zyx_mm[v_axis], marker="+", ms=14, mew=1.5,
                color="white")
        ax.set_xlim(view_low[h_axis], view_high[h_axis])
        vertical = (view_low[v_axis], view_high[v_axis])
        ax.set_ylim(*(vertical[::-1] if down else vertical))
        ax.set_aspect("equal")
        ax.set_title(f"{name}, {_AXIS_NAMES[cut]} = {axes_mm[cut][index[cut]]:.1f} mm",
                     fontsize=9)
        ax.set_xlabel(f"{_AXIS_NAMES[h_axis]} (mm)", fontsize=8)
        ax.set_ylabel(f"{_AXIS_NAMES[v_axis]} (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=c, lw=1.5) for c in ISODOSE_COLOURS]
    labels = [f"{p} % ({lv:.1f} Gy)" for p, lv in zip(ISODOSE_PERCENT, levels)]
    handles += [Line2D([], [], color=colours.get(s.name, "white"), lw=1.5)
                for s in patient.structures]
    labels += [s.name for s in patient.structures]
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout(rect=(0, 0.1, 1, 0.95))
    return figure


def axial_slice_pngs(patient: Patient, dose_gy: np.ndarray, *, reference_dose_gy: float,
                     colours: dict[str, str], pixel_mm: float = 1.5
                     ) -> list[tuple[int, bytes]]:
    """Every axial slice of the view box (:func:`view_box_mm`) as a small PNG, for scrolling.

    The slices of :func:`slice_figure` drawn pixel by pixel, without a matplotlib figure each
    (a report has a hundred of them): the CT in the soft-tissue window, the dose colour-wash
    from :data:`WASH_FROM` of the reference dose, the isodose lines (:data:`ISODOSE_COLOURS`)
    and the structure outlines, each line one pixel wide on a grid of ``pixel_mm`` (the dose
    interpolated linearly onto it, the masks taken at the nearest voxel). Radiological view:
    anterior up, the patient's right on the left.

    Parameters
    ----------
    patient : Patient
    dose_gy : (nz, ny, nx) float array, Gy
        On ``patient.grid``.
    reference_dose_gy : float, Gy
        100 % of the isodose levels.
    colours : dict
        Structure name -> colour.
    pixel_mm : float, mm
        Pixel size of the images.

    Returns
    -------
    list of (slice index, PNG bytes)
        In slice order.
    """
    grid = patient.grid
    low, high = view_box_mm(patient)
    first = np.clip(np.floor(grid.position_to_index(low)).astype(int), 0, None)
    last = np.minimum(np.ceil(grid.position_to_index(high)).astype(int) + 1, grid.shape)
    rows, columns = slice(first[1], last[1]), slice(first[2], last[2])
    zoom = (grid.spacing_mm[1] / pixel_mm, grid.spacing_mm[2] / pixel_mm)
    wash_low, wash_high = WASH_FROM * reference_dose_gy, 1.1 * reference_dose_gy
    jet = matplotlib.colormaps["jet"]
    lines = [(p * reference_dose_gy / 100.0, to_rgb(c)) for p, c in zip(ISODOSE_PERCENT,
                                                                          ISODOSE_COLOURS)]
    box = (slice(first[0], last[0]), rows, columns)
    # The whole box at once, each slice interpolated in-plane only.
    hu_box = scipy.ndimage.zoom(patient.hu[box].astype(np.float32), (1, *zoom), order=1)
    dose_box = scipy.ndimage.zoom(np.asarray(dose_gy[box], dtype=np.float32), (1, *zoom),
                                  order=1)
    # The masks at the voxel nearest to each pixel (of the positions zoom samples).
    nearest = np.ix_(*(np.rint(np.linspace(0, n - 1, m)).astype(int)
                       for n, m in zip(patient.hu[box].shape[1:], hu_box.shape[1:])))
    images = []
    for i, k in enumerate(range(first[0], last[0])):
        grey = np.clip((hu_box[i] - CT_WINDOW_HU[0]) / (CT_WINDOW_HU[1] - CT_WINDOW_HU[0]),
                       0.0, 1.0)
        rgb = np.repeat(grey[..., None], 3, axis=2)
        dose = dose_box[i]
        washed = dose >= wash_low
        shade = jet(np.clip((dose - wash_low) / (wash_high - wash_low), 0.0, 1.0))[..., :3]
        rgb[washed] = 0.65 * rgb[washed] + 0.35 * shade[washed]
        outlines = [(dose >= level, colour) for level, colour in lines]
        outlines += [(s.mask[k, rows, columns][nearest], to_rgb(colours.get(s.name, "white")))
                     for s in patient.structures]
        for inside, colour in outlines:
            rgb[inside & ~scipy.ndimage.binary_erosion(inside, border_value=1)] = colour
        buffer = io.BytesIO()
        # A palette of 128 colours: a third of the bytes of full colour (a head-and-neck
        # report's hundred slices in about 2 MB), no visible banding of the CT's grey.
        Image.fromarray(np.rint(255 * rgb).astype(np.uint8)).quantize(
            colors=128, method=Image.Quantize.FASTOCTREE).save(buffer, format="png")
        images.append((k, buffer.getvalue()))
    return images


def fluence_figure(fluences: Sequence[FluenceMap]) -> Figure:
    """One panel per beam: the fluence (MU) at the isocentre plane, beam's-eye view."""
    n = len(fluences)
    columns = min(n, 3)
    rows = -(-n // columns)
    figure = Figure(figsize=(4.2 * columns, 3.6 * rows))
    for k, f in enumerate(fluences):
        ax = figure.add_subplot(rows, columns, k + 1)
        image = ax.imshow(f.fluence_mu, origin="lower", cmap="viridis", interpolation="nearest",
                          extent=(f.u_edges_mm[0], f.u_edges_mm[-1], f.v_edges_mm[0],
                                  f.v_edges_mm[-1]))
        figure.colorbar(image, ax=ax, label="MU", shrink=0.85)
        ax.set_title(f.beam, fontsize=9)
        ax.set_xlabel("X (mm)", fontsize=8)
        ax.set_ylabel("Y (mm)", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.tight_layout()
    return figure


def segments_figure(beams: Sequence[tuple[str, Sequence[Segment]]],
                    leaf_boundaries_mm: np.ndarray, *, per_beam: int = 3) -> Figure:
    """The ``per_beam`` segments with the most MU of each beam: leaves (grey), jaws (outline).

    Parameters
    ----------
    beams : sequence of (name, segments)
    leaf_boundaries_mm : (n_pairs + 1,) float array, mm
    per_beam : int
    """
    rows = max(len(beams), 1)
    figure = Figure(figsize=(3.2 * per_beam, 2.9 * rows))
    lower, upper = leaf_boundaries_mm[:-1], leaf_boundaries_mm[1:]
    for r, (name, segments) in enumerate(beams):
        chosen = sorted(range(len(segments)), key=lambda s: -segments[s].mu)[:per_beam]
        for c, s in enumerate(sorted(chosen)):
            segment = segments[s]
            ax = figure.add_subplot(rows, per_beam, r * per_beam + c + 1)
            (x1, x2), (y1, y2) = segment.jaw_x_mm, segment.jaw_y_mm
            span = (min(x1, segment.leaf_positions_mm[:, 0].min()) - 20.0,
                    max(x2, segment.leaf_positions_mm[:, 1].max()) + 20.0)
            shown = np.flatnonzero((upper > y1 - 20.0) & (lower < y2 + 20.0))
            # Both leaves of each shown pair as rectangles, drawn as one collection.
            a, b = segment.leaf_positions_mm[shown, 0], segment.leaf_positions_mm[shown, 1]
            left = np.stack([np.full_like(a, span[0]), a], axis=1)
            right = np.stack([b, np.full_like(b, span[1])], axis=1)
            boxes = [[(x0, lo), (x1_, lo), (x1_, hi), (x0, hi)]
                     for (x0, x1_), lo, hi in zip(np.concatenate([left, right]),
                                                  np.tile(lower[shown], 2),
                                                  np.tile(upper[shown], 2))]
            ax.add_collection(PolyCollection(boxes, facecolors="0.55", edgecolors="0.3",
                                             linewidths=0.3))
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#d62728",
                                   lw=1.2))  # the jaws
            ax.set_xlim(*span)
            ax.set_ylim(max(lower[shown].min(), y1 - 20.0), min(upper[shown].max(), y2 + 20.0))
            ax.set_aspect("equal")
            ax.set_title(f"{name}: segment {s + 1}/{len(segments)}, {segment.mu:.1f} MU",
                         fontsize=8)
            ax.tick_params(labelsize=6)
    figure.subplots_adjust(left=0.05, right=0.98, bottom=0.03, top=0.97, wspace=0.3,
                           hspace=0.45)
    return figure

