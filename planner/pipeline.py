"""``planner plan`` as one function: a patient and a protocol in, a reviewed deliverable plan out.

The steps (DESIGN.md, "Data flow"), each timed and reported through ``progress``:

1. **import** the patient (any input :func:`planner.io.load_patient` reads) and the protocol; the
   protocol is checked for conflicts that no plan can resolve
   (:func:`planner.review.goals.protocol_conflicts`): by default they stop the run
   (:class:`ProtocolConflictError`, exit 1) with the overlap volumes, because optimising towards
   a goal known to be impossible wastes minutes and ends in a plan that must be rejected anyway;
   ``allow_conflicts=True`` plans anyway and reports them.
2. **dose grid** over the body (:func:`dose_grid_for`); the patient resampled onto it
   (:func:`resample_patient`) for the optimisation and the segment weights; the optimisation
   structures (:mod:`planner.planning_structures`: targets less their air and skin, the tissue
   outside them) on both grids.
3. **beams**: ``beam_count`` equispaced coplanar fields (gantry 0, 360/n, ...) at the centroid of
   the targets, with the beamlets covering the targets' projection.
4. **Dij** (:func:`dose.compute_dij`, on :func:`needed_voxels`), 5. **seed** (by default: the
   dose predicted by
   :func:`planner.predict.seed.predict_seed` while the Dij is computed, then what it gives the
   sparing step, :func:`planner.predict.seed.seed_arguments`; unseeded with a note otherwise or
   where the network does not apply), 6. **optimisation** of the fluence
   (:func:`planner.optimize.optimise_patient`) with a fluence-smoothness regulariser (fewer
   segments and MU for the same goals),
7. **sequencing** (:func:`sequence_beams`), 8. **segment doses** (:func:`dose.segment_dose_matrix`:
   the dose engine on the apertures, not the beamlets, on the voxels of
   :func:`needed_voxels`), 9. **segment weights** (:func:`optim.optimise_segment_weights`,
   following the fluence plan's dose so that the deliverable plan recovers its quality, with a
   small price on MU so that MU which buy no dose the objectives care about are dropped; a
   hard goal the fluence plan met and the mimicking lost is then pushed back inside its limit
   by :func:`optim.restore_goals` on :func:`segment_weight_goals`),
   10. **final dose** of the weighted segments (:func:`dose.segment_dose`, every voxel), then
   the **normalisation** (:func:`normalisation_scale`: the main target's D95 at its
   prescription, or up to 0.5 % above it, as far as the hard goals allow),
11. **export** of RT Plan + RT Dose (+ CT and RTSTRUCT when the patient did not come from DICOM)
   and the **report**, with ``summary.json`` and ``plan.log`` beside them.

The output folder holds ``dicom/``, ``report/``, ``summary.json`` and ``plan.log``; it is written
at the end as one atomic folder (:func:`planner.io._atomic.atomic_directory`), so an interrupted
or failed run leaves nothing behind and an existing folder is replaced only with ``overwrite``.

Goals are evaluated as the review report evaluates them (:func:`planner.review.goals.
evaluate_protocol` on the CT grid, the dose interpolated onto it), before sequencing (the fluence
plan's dose) and after (the deliverable plan's final dose), so the summary's goal table is the
report's.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import platform
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

import planner
from dose import (Segment, beamlets_covering, compute_dij, equispaced_beams, field_voxels,
                  load_beam_model, load_machine, segment_dose, segment_dose_matrix)
from dose._xp import array_module, resolve_device, to_device
from dose.beams import BeamSet
from dose.grid import Grid
from dose.machine import Machine
from dose.segments import MIN_DOSE_DENSITY_G_CM3
from optim import dvh
from optim import (DoseMimicking, FluenceSmoothness, GoalResult, PlanGoal, evaluate_goals, neighbour_pairs,
                   optimise_segment_weights, restore_goals, sequence_leaves)
from optim.fluence import Progress
from planner.errors import InputError, PlannerError
from planner.io import load_patient
from planner.io._atomic import atomic_directory, check_writable
from planner.io.plan_dicom import PlanFiles, write_plan_dicom
from planner.io.rtplan import PlanBeam
from planner.optimize import fluence_problem, optimise_patient, planning_voxels
from planner.patient import Patient, Structure
from planner.planning_structures import PlanningStructures, planning_structures
from planner.protocol import PROTOCOL_DIR, Protocol, map_structures, read_protocol
from planner.review import write_report
from planner.review.dvh import resample_dose
from planner.review.goals import Conflict, GoalRow, evaluate_protocol, protocol_conflicts
from planner.review.report import ReviewPlan, aperture_fluences

DICOM_FOLDER = "dicom"
REPORT_FOLDER = "report"
SUMMARY_FILE = "summary.json"
LOG_FILE = "plan.log"

#: Fluence smoothness weight (``optim.FluenceSmoothness``, beamlet weights in MU over all
#: fractions). On TG-119 (9 fields, 5 mm beamlets) 0.01 brought the deliverable plan from 7.6 to
#: about 4.7 MU/cGy with the PTV goals kept (sequencing engineer's measurement, issue 5). Both the
#: dose objectives and this term scale with the square of the dose level, so the weight holds for
#: other prescriptions. Measured in issue 5 (benchmarks/bench_plan.py, with the segment-weight
#: MU price below; MU/cGy of TG-119 / OpenKBP pt_242 / the example C-shape): 0.01 alone 3.88 /
#: 4.42 / 3.81; 0.02 alone (without the price) failed the TG-119 hard goals at full weight,
#: autoplan cut it to 1/16 and TG-119 rose to 5.30; 0.005 with ``optim.FluenceVariation`` along
#: the leaf travel (0.08 per Gy of prescription) 3.57 / 4.08 / 4.43 (the example relaxed to
#: 1/16), at 0.04 per Gy 4.02 / 4.22 / 3.60 (pt_242 turned to another trade-off: PTV56 D99 met,
#: parotid means 30 and 53 Gy instead of 8 and 30). Every fluence regulariser goes through
#: autoplan's halving when a hard goal fails, which makes its effect on MU jump; none beat 0.01
#: alone on all three, so it stays.
SMOOTHNESS_WEIGHT = 0.01
#: Least MU a delivered segment carries, per fraction: a common floor for step-and-shoot
#: segments (small segments deliver their MU less accurately); the machine file has no such field.
MIN_MU_PER_SEGMENT = 2.0
#: Most segments per beam (issue 5 asks for about 15 or fewer).
MAX_SEGMENTS_PER_BEAM = 15
#: Intensity levels of the sequencer's stratification (fidelity versus segments).
SEQUENCING_LEVELS = 10
#: Segment-weight objectives: the fluence plan's dose followed voxel by voxel; in the targets
#: under-dose weighs 4x (coverage first), in organs and the rest of the body only over-dose
#: counts. These were measured on TG-119 (benchmarks/bench_deliverable_tg119.py).
TARGET_MIMIC_WEIGHT, ORGAN_MIMIC_WEIGHT, BODY_MIMIC_WEIGHT = 10.0, 3.0, 1.0
TARGET_UNDERDOSE_FACTOR = 4.0
SEGMENT_WEIGHT_ITERATIONS = 500
#: Price of one MU in the segment-weight problem (``optim.optimise_segment_weights``'
#: ``mu_weight``), per Gy of the highest prescription: the objectives grow with the square of the
#: dose level and the MU with the dose level, so a price proportional to the prescription makes
#: the same trade-off at any dose. Measured on TG-119 (50 Gy, price 3e-3 per MU; benchmarks/
#: bench_plan.py): 867 -> 777 MU per fraction (4.33 -> 3.88 MU/cGy), 113 -> 99 segments, PTV D95
#: 50.25 -> 50.21 Gy, D99 47.6 -> 48.0 Gy, core D10 23.47 -> 23.44 Gy; OpenKBP pt_242 (70 Gy,
#: 4.2e-3 per MU): 1035 -> 884 MU (5.18 -> 4.42 MU/cGy), PTV70 D99/D95 64.47/66.05 -> 64.33/
#: 65.87 Gy, PTV56 44.55/53.35 -> 44.55/53.23 Gy, organs within 0.05 Gy or lower. Twice the
#: price still kept the TG-119 goals on the segment-weight voxels (that step re-run alone), D95
#: within 0.1 Gy of 50.
SEGMENT_MU_PRICE_PER_GY = 6e-5
#: The segment-weight problem sees every target and organ voxel and every 2nd voxel along each
#: axis of the rest of the body (1/8: the over-dose there only shapes the fall-off, as the
#: optimiser's normal-tissue ring does), and its segment doses use 2 mm fluence pixels: together
#: several times faster than the full matrix at 1 mm, while the final dose, which is exported and
#: reported, is computed on every voxel at the dose engine's default resolution.
SEGMENT_WEIGHT_SUBSAMPLE = 2
#: A target on the dose grid keeps every voxel a quarter of which it covers: the goal table reads
#: the dose interpolated onto the CT grid, where a CT voxel at the target's edge takes part of
#: its dose from dose-grid voxels whose centres lie outside the target. Kept at half their
#: volume (as organs are), a 5 cc PTV70 (OpenKBP pt_202) met D99 on the dose grid and missed it
#: by 3.4 Gy on the CT grid; kept at any overlap (1 %), it met D99 but the normal tissue's mean
#: rose from 24.5 to 28.0 Gy (its PTV63 and PTV56 grew by a shell of 1.5 mm).
TARGET_LEAST_FRACTION = 0.25
SEGMENT_WEIGHT_FLUENCE_MM = 2.0


class ProtocolConflictError(PlannerError):
    """The protocol cannot be met as delineated (a target overlaps an organ whose hard limit is
    below the target's prescription); ``conflicts`` holds the explanations."""

    def __init__(self, conflicts: Sequence[Conflict]):
        self.conflicts = tuple(conflicts)
        super().__init__("the protocol cannot be met as delineated: "
                         + " | ".join(c.explanation for c in self.conflicts)
                         + " (or plan anyway with --allow-conflicts)")


@dataclass(frozen=True)
class FieldSequence:
    """The step-and-shoot segments of one treatment field from :func:`sequence_beams`.

    A beam whose beamlets span more than the MLC carriage allows (``Machine.max_leaf_span_mm``)
    is split along the leaf travel into fields of equal width (split fields, as clinical systems
    deliver wide head-and-neck fields); every other beam is one field.

    Attributes
    ----------
    beam : int
        Index of the beam (of the beam set) the field belongs to.
    part, parts : int
        Which of how many fields of that beam (``0`` of ``1`` when not split).
    segments : tuple of Segment
        ``mu`` in the units of the fluence (MU over all fractions).
    least_mu : float
        The least total weight any decomposition of this field's fluence into apertures can have
        (the largest sum of rises along a beamlet row, Engel 2005), same units: how much of the
        MU comes from the modulation itself.
    """

    beam: int
    part: int
    parts: int
    segments: tuple[Segment, ...]
    least_mu: float

    def name(self, gantry_deg: float) -> str:
        """``G040``, or ``G040-1``, ``G040-2`` for the parts of a split beam."""
        return f"G{gantry_deg:03.0f}" + (f"-{self.part + 1}" if self.parts > 1 else "")


@dataclass(frozen=True)
class PlanResult:
    """What :func:`plan_patient` produced (and wrote into ``out_dir``).

    Attributes
    ----------
    out_dir : Path
    patient : Patient
        As imported (CT grid).
    protocol : Protocol
    beams : tuple of PlanBeam
        Beams with segments; segment MU per fraction.
    dose_gy : (nz, ny, nx) float32 array, Gy
        Final dose of the deliverable plan (all fractions) on ``dose_grid``.
    dose_grid : Grid
    goals_fluence, goals_plan : tuple of GoalRow
        The protocol's goals on the fluence plan (before sequencing) and on the deliverable plan.
    conflicts : tuple of Conflict
    seed_note : str
    times_s : dict
        Seconds per step, in step order.
    summary : dict
        The content of ``summary.json``.
    files : PlanFiles
    """

    out_dir: Path
    patient: Patient = field(repr=False)
    protocol: Protocol = field(repr=False)
    beams: tuple[PlanBeam, ...] = field(repr=False)
    dose_gy: np.ndarray = field(repr=False)
    dose_grid: Grid
    goals_fluence: tuple[GoalRow, ...] = field(repr=False)
    goals_plan: tuple[GoalRow, ...] = field(repr=False)
    conflicts: tuple[Conflict, ...]
    seed_note: str
    times_s: dict[str, float]
    summary: dict[str, Any] = field(repr=False)
    files: PlanFiles

    @property
    def total_mu(self) -> float:
        """Monitor units per fraction, all beams."""
        return float(sum(b.mu for b in self.beams))


def _overlap_weights(source: np.ndarray, source_step: float, target: np.ndarray,
                     target_step: float) -> np.ndarray:
    """``(n_target, n_source)``: the share of each target voxel (one axis) covered by each source
    voxel, rows normalised over the covered part (zero rows where nothing covers it)."""
    lo = np.maximum(target[:, None] - target_step / 2, source[None, :] - source_step / 2)
    hi = np.minimum(target[:, None] + target_step / 2, source[None, :] + source_step / 2)
    weights = np.clip(hi - lo, 0.0, None)
    covered = weights.sum(axis=1, keepdims=True)
    return (weights / np.where(covered > 0, covered, 1.0)).astype(np.float32)


def _box_average(volume: np.ndarray, weights: Sequence[np.ndarray]) -> np.ndarray:
    """Apply the per-axis overlap weights ``(z, y, x)`` to ``volume`` (separable)."""
    out = np.asarray(volume, dtype=np.float32)
    for axis, w in enumerate(weights):
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return out


def resample_patient(patient: Patient, grid: Grid) -> Patient:
    """``patient`` on another grid of the same orientation (e.g. the dose grid).

    Every new voxel takes the volume-weighted average of the old voxels it overlaps (exact box
    overlaps, separable along z, y and x): HU and density are averaged, and a structure (and the
    possible-dose mask) keeps a new voxel when at least half of that voxel lies inside it, a
    target when a quarter of it does (``TARGET_LEAST_FRACTION``). A
    structure smaller than half a new voxel everywhere keeps its single most-covered voxel, so
    that no delineated structure vanishes (its goals still have voxels to act on). Parts of
    ``grid`` outside the patient's grid get density 0 and no structure.

    Parameters
    ----------
    patient : Patient
    grid : Grid
        Target grid (mm, (z, y, x) like every Grid).

    Returns
    -------
    Patient
        Same name and prescriptions; ``dicom`` is None (the new grid is no DICOM image) and
        ``source`` says it was resampled.
    """
    weights = [_overlap_weights(s, d, t, e) for s, d, t, e in
               zip(patient.grid.axes_mm(), patient.grid.spacing_mm, grid.axes_mm(),
                   grid.spacing_mm)]

    def mask(values: np.ndarray, least: float = 0.5) -> np.ndarray:
        fraction = _box_average(values, weights)
        kept = fraction >= least
        if not kept.any() and values.any() and fraction.max() > 0:
            kept.flat[np.argmax(fraction)] = True
        return kept

    structures = tuple(Structure(s.name, s.kind, mask(
        s.mask, TARGET_LEAST_FRACTION if s.kind == "target" else 0.5))
        for s in patient.structures)
    possible = (None if patient.possible_dose_mask is None else mask(patient.possible_dose_mask))
    return Patient(patient.name, grid, _box_average(patient.hu, weights),
                   _box_average(patient.density, weights), structures, patient.prescriptions,
                   possible, None, f"{patient.source} (resampled to {grid.spacing_mm} mm)")


def dose_grid_for(patient: Patient, spacing_mm: float) -> Grid:
    """An isotropic dose grid over the patient: the CT grid's extent cropped to the body.

    The body is the external contour, else the possible-dose mask (OpenKBP), else the voxels of
    density >= ``MIN_DOSE_DENSITY_G_CM3``; its bounding box (voxel edges) is covered by voxels of
    ``spacing_mm``, the first one's edge on the box's. No dose is computed in the air around the
    patient anyway, and a grid no wider than the body keeps the dose engine's work (ray tracing
    and the distances from the source it tabulates) to the patient.

    Parameters
    ----------
    patient : Patient
    spacing_mm : float, mm

    Returns
    -------
    Grid
    """
    body = patient.body_mask()
    if body is None:
        body = patient.density >= MIN_DOSE_DENSITY_G_CM3
    if not body.any():
        raise InputError(f"{patient.source}: no voxel of the patient has density >= "
                         f"{MIN_DOSE_DENSITY_G_CM3} g/cm^3")
    index = np.argwhere(body)
    spacing = np.asarray(patient.grid.spacing_mm)
    low = patient.grid.index_to_position_mm(index.min(axis=0)) - spacing / 2
    high = patient.grid.index_to_position_mm(index.max(axis=0)) + spacing / 2
    shape = np.maximum(1, np.ceil((high - low) / spacing_mm - 1e-6)).astype(int)
    return Grid(tuple(low + spacing_mm / 2), (spacing_mm,) * 3, tuple(shape))


def target_centre_xyz_mm(patient: Patient, targets: Sequence[str]) -> tuple[float, float, float]:
    """Centroid of the union of the ``targets`` masks, DICOM (x, y, z) mm (an isocentre)."""
    union = np.zeros(patient.grid.shape, dtype=bool)
    for name in targets:
        union |= patient.structure(name).mask
    if not union.any():
        raise InputError(f"{patient.source}: the targets {list(targets)} have no voxels")
    zyx = patient.grid.index_to_position_mm(np.argwhere(union).mean(axis=0))
    return float(zyx[2]), float(zyx[1]), float(zyx[0])


def _beamlet_lattice(beamset: BeamSet, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (row, column) of beamlets ``cols`` on their beam's lattice (edges at multiples
    of the beamlet size, :func:`dose.beamlets_covering`)."""
    h = beamset.beamlet_size_mm
    return (np.floor(beamset.v_mm[cols] / h).astype(np.int64),
            np.floor(beamset.u_mm[cols] / h).astype(np.int64))


def smoothness_regulariser(beamset: BeamSet, weight: float = SMOOTHNESS_WEIGHT
                           ) -> FluenceSmoothness:
    """:class:`optim.FluenceSmoothness` over neighbouring beamlets of each beam."""
    row, col = _beamlet_lattice(beamset, np.arange(beamset.n_beamlets))
    return FluenceSmoothness(neighbour_pairs(beamset.beam_index, row, col), weight)


def sequence_beams(x: np.ndarray, beamset: BeamSet, machine: Machine, *, min_weight: float,
                   n_levels: int = SEQUENCING_LEVELS,
                   max_segments: int = MAX_SEGMENTS_PER_BEAM) -> tuple[FieldSequence, ...]:
    """Leaf-sequence each beam's optimised fluence into MLC segments (``optim.sequence_leaves``).

    Parameters
    ----------
    x : (n_beamlets,) float array, MU (over all fractions)
        Beamlet weights, ordered as ``beamset``.
    beamset : BeamSet
    machine : Machine
        Leaf boundaries, minimum gap, travel and span limits, jaw over-travel, interdigitation.
    min_weight : float, MU (same units as ``x``)
        Least weight of a segment.
    n_levels, max_segments : int
        See :func:`optim.sequence_leaves`; ``max_segments`` holds for each field.

    Returns
    -------
    tuple of FieldSequence
        In beam order; a beam wider than the leaf span gives several fields (see
        :class:`FieldSequence`), a beam or field whose fluence is zero none.

    Raises
    ------
    PlannerError
        A field the sequencer cannot turn into segments within the limits (e.g. its open area
        needs more than ``max_segments`` apertures even at one intensity level), naming it.
    """
    out = []
    h = beamset.beamlet_size_mm
    span = machine.max_leaf_span_mm
    for b in range(len(beamset.beams)):
        cols = beamset.beamlets_of(b)
        if cols.size == 0 or not np.any(x[cols] > 0):
            continue
        row, col = _beamlet_lattice(beamset, cols)
        iv, iu = row - row.min(), col - col.min()
        fluence = np.zeros((iv.max() + 1, iu.max() + 1))
        fluence[iv, iu] = x[cols]
        width = h * fluence.shape[1] + machine.min_leaf_gap_mm
        parts = 1 if span is None or width <= span else int(np.ceil(width / span))
        columns = np.array_split(np.arange(fluence.shape[1]), parts)
        for part, part_columns in enumerate(columns):
            part_fluence = fluence[:, part_columns]
            if not np.any(part_fluence > 0):
                continue
            first = col.min() + part_columns[0]
            least = float(np.clip(np.diff(part_fluence, prepend=0, axis=1), 0, None)
                          .sum(axis=1).max())
            try:
                seq = sequence_leaves(
                    part_fluence, h * (row.min() + np.arange(part_fluence.shape[0] + 1)),
                    h * (first + np.arange(part_fluence.shape[1] + 1)),
                    machine.leaf_boundaries_mm, n_levels=n_levels, max_segments=max_segments,
                    min_weight=min_weight, min_gap_mm=machine.min_leaf_gap_mm,
                    leaf_travel_mm=(machine.leaf_position_min_mm, machine.leaf_position_max_mm),
                    jaw_overtravel_mm=(machine.jaw_x_overtravel_mm, machine.jaw_y_overtravel_mm),
                    max_leaf_span_mm=span, interdigitation=machine.interdigitation)
            except ValueError as error:  # e.g. more apertures than allowed even at one level
                field_ = FieldSequence(b, part, parts, (), 0.0)
                raise PlannerError(f"sequencing field {field_.name(beamset.beams[b].gantry_deg)}"
                                   f": {error} (allow more segments per field)") from None
            segments = tuple(Segment((j[0], j[1]), (j[2], j[3]), leaves, float(w))
                             for leaves, j, w in zip(seq.leaf_positions_mm, seq.jaws_mm,
                                                     seq.weights))
            out.append(FieldSequence(b, part, parts, segments, least))
    return tuple(out)


def dose_calculation_mask(dose_patient: Patient) -> np.ndarray:
    """Dose-grid voxels whose dose is calculated: ``(nz, ny, nx)`` bool.

    The patient (density >= ``MIN_DOSE_DENSITY_G_CM3``, the dose engine's default) and every
    voxel of every structure: a target or organ voxel in an air cavity (the oral cavity or a
    sinus inside a head-and-neck PTV) must get a dose, or a goal on it sees 0 Gy there and the
    optimiser chases coverage that no fluence can give.
    """
    mask = dose_patient.density >= MIN_DOSE_DENSITY_G_CM3
    for s in dose_patient.structures:
        mask |= s.mask
    return mask


def needed_voxels(dose_patient: Patient, protocol: Protocol,
                  structures: PlanningStructures | None = None) -> np.ndarray:
    """Dose-grid voxels whose beamlet and segment doses the optimisation needs: ``(nz, ny, nx)``
    bool.

    :func:`planner.optimize.planning_voxels` (every structure voxel, the tissue near the targets,
    every ``SEGMENT_WEIGHT_SUBSAMPLE``-th voxel along each axis of the rest) where the dose is
    calculated (:func:`dose_calculation_mask`). The exported dose is computed on every voxel.
    """
    return dose_calculation_mask(dose_patient) & planning_voxels(
        dose_patient, protocol, step=SEGMENT_WEIGHT_SUBSAMPLE, structures=structures)


def fill_uncomputed(dose_gy: np.ndarray, computed: np.ndarray) -> np.ndarray:
    """``dose_gy`` with each voxel outside ``computed`` given the dose of the nearest computed
    voxel (a dose on sampled rows made whole, for goal tables on another grid)."""
    if computed.all() or not computed.any():
        return dose_gy
    nearest = scipy.ndimage.distance_transform_edt(~computed, return_distances=False,
                                                   return_indices=True)
    return dose_gy[tuple(nearest)]


def _row_of_voxel(n_voxels: int, voxel_index: np.ndarray) -> np.ndarray:
    """For each flat dose-grid voxel its row of the segment-dose matrix, -1 where it has none."""
    row_of = np.full(n_voxels, -1, dtype=np.int64)
    row_of[voxel_index] = np.arange(voxel_index.size)
    return row_of


def segment_weight_objectives(dose_patient: Patient, protocol: Protocol,
                              mapping: dict[str, str], voxel_index: np.ndarray,
                              reference_gy: np.ndarray, *, xp: Any = np
                              ) -> list[DoseMimicking]:
    """Objectives that make the segments' dose follow the fluence plan's (``reference_gy``).

    Rows are the segment-dose matrix's (``voxel_index``, flat indices of the dose grid). Targets:
    under- and over-dose (under-dose weighs ``TARGET_UNDERDOSE_FACTOR`` times more); organs and
    every computed voxel: over-dose only.
    """
    row_of = _row_of_voxel(dose_patient.grid.size, voxel_index)
    reference = np.asarray(reference_gy, dtype=np.float64).ravel()[voxel_index]

    def rows(kind: str) -> np.ndarray:
        union = np.zeros(dose_patient.grid.size, dtype=bool)
        for name, patient_name in mapping.items():
            if protocol.structure(name).kind == kind:
                union |= dose_patient.structure(patient_name).mask.ravel()
        found = row_of[np.flatnonzero(union)]
        return found[found >= 0]

    objectives = []
    for kind, weight, under in (("target", TARGET_MIMIC_WEIGHT, TARGET_UNDERDOSE_FACTOR),
                                ("organ", ORGAN_MIMIC_WEIGHT, 0.0)):
        r = rows(kind)
        if r.size:
            objectives.append(DoseMimicking(xp.asarray(r), xp.asarray(reference[r]), weight,
                                            under=under, over=1.0))
    everything = np.arange(voxel_index.size)
    objectives.append(DoseMimicking(xp.asarray(everything), xp.asarray(reference),
                                    BODY_MIMIC_WEIGHT, under=0.0, over=1.0))
    return objectives


def segment_weight_goals(dose_patient: Patient, protocol: Protocol, voxel_index: np.ndarray,
                         *, xp: Any = np, structures: PlanningStructures | None = None
                         ) -> tuple[PlanGoal, ...]:
    """The protocol's hard goals on the rows of the segment-dose matrix, for
    :func:`optim.restore_goals`.

    The goals are the fluence optimiser's own (:func:`planner.optimize.fluence_problem`, on the
    dose grid), their voxel indices mapped to the rows (``voxel_index``, flat indices of the
    dose grid, which hold every structure voxel: :func:`needed_voxels`).
    """
    row_of = _row_of_voxel(dose_patient.grid.size, voxel_index)

    def rows(indices: Any) -> Any:
        found = row_of[np.asarray(indices)]
        return xp.asarray(found[found >= 0])

    return tuple(dataclasses.replace(g, indices=rows(g.indices), objective_indices=(
                     None if g.objective_indices is None else rows(g.objective_indices)))
                 for g in fluence_problem(dose_patient, protocol, structures=structures).goals
                 if g.hard)


def goals_to_restore(goals: Sequence[PlanGoal], on_rows: Sequence[GoalResult], patient: Patient,
                     goals_fluence: Sequence[GoalRow], goals_plan: Sequence[GoalRow], *,
                     met_on_dose_grid: Collection[str] = ()) -> tuple[PlanGoal, ...]:
    """The hard goals (on the segment-dose rows) that the fluence plan met, each lost one with
    its limit moved by how much the rows overrate it.

    The goal table is read on the patient grid; the rows sample the dose grid (3 mm voxels, a
    D0.1cc of a few voxels), where a goal can look met that the patient grid calls lost (OpenKBP
    pt_242: spinal cord D0.1cc 44.4 Gy on the rows, 45.6 Gy on the patient grid). A lost goal's
    limit on the rows moves by the difference of its two margins, so that meeting it on the
    rows meets it on the patient grid, as far as the difference holds for the new weights.

    Parameters
    ----------
    goals : sequence of PlanGoal
        :func:`segment_weight_goals`.
    on_rows : sequence of GoalResult
        ``goals`` evaluated on the segments' dose (rows of the segment-dose matrix).
    patient : Patient
        The patient on its own grid (for a cc volume's structure size).
    goals_fluence, goals_plan : sequence of GoalRow
        The fluence plan's and the deliverable plan's goal tables (patient grid).
    met_on_dose_grid : collection of str
        Labels of goals the fluence optimiser met on its own grid: counted as met by the fluence
        plan too (a goal met there by a few tenths of a Gy can read as missed on the patient
        grid, OpenKBP pt_203: PTV70 D99 66.16 for 66.5 Gy; it is the deliverable plan's to
        restore).
    """
    fluence_met = {r.goal.label for r in goals_fluence if r.met} | set(met_on_dose_grid)
    plan = {r.goal.label: r for r in goals_plan}
    kept = []
    for g, r in zip(goals, on_rows):
        if g.label not in fluence_met or g.label not in plan:
            continue
        row = plan[g.label]
        if not row.met:
            # GoalRow margins are in the protocol's units; PlanGoal's in Gy or a volume fraction
            # of the goal's own rows (cc per fraction: the limit's ratio, which holds for a goal
            # on sampled rows too, e.g. the hot-spot goal on every 2nd voxel of Outside PTVs).
            scale = {"Gy": 1.0, "%": 100.0}.get(row.unit) or (
                row.limit / g.limit if g.limit > 0 else
                patient.structure(row.structure).mask.sum() * patient.grid.voxel_volume_cc)
            overrated = r.margin - row.margin / scale
            g = dataclasses.replace(g, limit=g.limit - overrated if g.bound == "max"
                                    else g.limit + overrated)
        kept.append(g)
    return tuple(kept)


#: A main target's D95 at most this far above its prescription is left there: a factor of 0.995
#: or more changes no figure a dosimetrist reads, and where a segment sits at the least MU it
#: costs a whole dose calculation (OpenKBP pt_248: x0.998, 37 s on a busy 2-core machine).
NORMALISATION_TOLERANCE = 0.005


def normalisation_scale(patient: Patient, dose_grid: Grid, dose_gy: np.ndarray,
                        protocol: Protocol, structures: PlanningStructures,
                        goals: Sequence[GoalRow], *, bisections: int = 6) -> tuple[float, str]:
    """The factor on every segment's MU that puts the main target's D95 at its prescription,
    and a line saying what was done.

    The main target is the one with the highest prescription; its D95 is taken on its optimised
    volume (:mod:`planner.planning_structures`) on the CT grid, as the goal table does. The
    D95 already up to ``NORMALISATION_TOLERANCE`` above the prescription is left as it is. The
    factor is applied only as far as it keeps every hard goal that ``goals`` meets met: where the
    full factor would lose one, the largest step towards it that keeps them is found by
    bisection (``bisections`` halvings), so a plan is never left hot (or cold) by more than its
    hard goals demand. (A segment the factor would take below the least MU a segment may carry
    is the caller's to keep there: :func:`plan_patient` recomputes the dose then.)

    Parameters
    ----------
    patient : Patient
        On the CT grid, as imported.
    dose_grid : Grid
    dose_gy : (nz, ny, nx) float array, Gy, on ``dose_grid``
        The deliverable plan's dose (linear in the MU).
    protocol : Protocol
    structures : PlanningStructures
        ``planning_structures(patient, protocol)``.
    goals : sequence of GoalRow
        The goal table of ``dose_gy``.
    """
    main = max(protocol.prescriptions, key=lambda p: p.dose_gy)
    if main.target not in structures.mapping:
        return 1.0, "none (the main target is not delineated)"
    name = structures.mapping[main.target]
    dose_ct = resample_dose(dose_gy, dose_grid, patient.grid)
    d95 = dvh.dose_at_volume(dose_ct[structures.mask(main.target)].astype(np.float64), 0.95)
    if d95 <= 0:
        return 1.0, f"none ({name} receives no dose)"
    wanted = main.dose_gy / d95 * (1.0 + 1e-5)  # a hair above: float32 must not leave D95 < Rx
    rule = f"{name} D95 at its prescription {main.dose_gy:g} Gy"
    if 1.0 / (1.0 + NORMALISATION_TOLERANCE) <= wanted <= 1.0:
        return 1.0, (f"{rule}, or up to {100 * NORMALISATION_TOLERANCE:g} % above it: D95 "
                     f"{d95:.2f} Gy, not scaled")
    kept_hard = {g.goal.label for g in goals if g.goal.hard and g.met}

    def keeps(scale: float) -> bool:
        rows = evaluate_protocol(patient, dose_ct * np.float32(scale), protocol,
                                 structures=structures)
        return all(r.met for r in rows if r.goal.label in kept_hard)

    done = wanted
    if not keeps(wanted):
        low, high = 1.0, wanted
        for _ in range(bisections):
            middle = 0.5 * (low + high)
            low, high = (middle, high) if keeps(middle) else (low, middle)
        done = low
    if done == 1.0:
        return 1.0, (f"{rule} would need x{wanted:.3f}, which loses a hard goal; not scaled "
                     f"(D95 {d95:.2f} Gy)")
    if done != wanted:
        return done, (f"{rule} needs x{wanted:.3f}; scaled x{done:.3f}, as far as the hard goals "
                      f"allow (D95 {d95:.2f} -> {d95 * done:.2f} Gy)")
    return done, f"{rule}: every segment's MU x{done:.3f} (D95 {d95:.2f} Gy before)"


def default_protocol(patient: Patient) -> Protocol:
    """The first bundled protocol (``data/protocols``, by name) whose structures the patient has.

    It fits when every structure it requires maps to one of the patient's and at least one of
    its prescribed targets is present (head-and-neck patients often lack an elective PTV, which
    the protocol marks optional).

    Raises
    ------
    InputError
        No bundled protocol fits; the message lists the patient's structures.
    """
    for path in sorted(PROTOCOL_DIR.glob("*.toml")):
        protocol = read_protocol(path)
        try:
            mapping = map_structures(protocol, [s.name for s in patient.structures]).mapping
        except InputError:
            continue
        if any(p.target in mapping for p in protocol.prescriptions):
            return protocol
    raise InputError(f"{patient.source}: no bundled protocol fits the structures "
                     f"{[s.name for s in patient.structures]}; give one with --protocol, or "
                     f"the prescriptions with --prescription NAME=DOSE/FRACTIONS")


def _goal_rows(rows: Sequence[GoalRow]) -> list[dict[str, Any]]:
    def number(value: float) -> float | None:  # JSON has no infinity: a goal without a limit
        return round(value, 4) if np.isfinite(value) else None

    return [{"goal": g.goal.label, "structure": g.structure, "priority": g.goal.priority,
             "value": number(g.value), "limit": number(g.limit),
             "margin": number(g.margin), "unit": g.unit, "met": bool(g.met)} for g in rows]


def _grid_json(grid: Grid) -> dict[str, Any]:
    return {"shape_zyx": list(grid.shape), "spacing_zyx_mm": list(grid.spacing_mm),
            "origin_zyx_mm": [round(v, 3) for v in grid.origin_mm]}


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "planner": planner.__version__}
    for package in ("numpy", "scipy", "pydicom", "torch", "cupy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def goal_table(title: str, rows: Sequence[GoalRow]) -> list[str]:
    """A goal table as text lines (value, limit, margin, met)."""
    width = max([len(g.goal.label) for g in rows] + [4])
    lines = [title]
    for g in rows:
        margin = f"{g.margin:+8.2f}" if np.isfinite(g.margin) else f"{'none':>8}"
        lines.append(f"  {g.goal.label:<{width}}  {g.goal.priority:<4}  {g.value:8.2f} {g.unit:<2}"
                     f"  margin {margin}  {'met' if g.met else 'NOT MET'}")
    met = sum(g.met for g in rows)
    lines.append(f"  {met} of {len(rows)} goals met"
                 + (f"; NOT MET: {', '.join(g.goal.label for g in rows if not g.met)}"
                    if met < len(rows) else ""))
    return lines


def summary_text(summary: dict[str, Any], goals_fluence: Sequence[GoalRow],
                 goals_plan: Sequence[GoalRow]) -> str:
    """The end-of-run summary: goals before/after sequencing, segments, MU, time per step."""
    lines = goal_table("goals, fluence plan (before sequencing):", goals_fluence)
    lines += goal_table("goals, deliverable plan (after sequencing and segment weights):",
                        goals_plan)
    repair = summary["goal_repair"]
    if repair["lost"]:
        lines.append(f"segment weights: hard goals lost after sequencing: "
                     f"{', '.join(repair['lost'])}; restored in {repair['rounds']} repair rounds: "
                     f"{', '.join(repair['restored']) or 'none'}")
    mu = summary["mu"]
    lines.append("beams: " + ", ".join(f"{b['name']} {b['segments']} seg {b['mu']:.0f} MU"
                                       for b in summary["beams"]))
    segments = summary["segments"]
    lines.append(f"segments {segments['total']} (max {segments['max_per_beam']} per beam); "
                 f"{mu['total_per_fraction']:.0f} MU per fraction for "
                 f"{summary['fraction_dose_cgy']:.0f} cGy: {mu['per_cgy']:.2f} MU/cGy "
                 f"(the fluence plan's least possible {mu['least_per_fraction']:.0f} MU)")
    lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["times_s"].items())
                 + f"; total {summary['total_s']:.1f} s")
    return "\n".join(lines)


def _predict_seed(patient: Patient, protocol: Protocol, device: str) -> Any:
    # Imported here: torch takes seconds to import and only the seed needs it.
    from planner.predict.seed import predict_seed, prediction_patient

    return predict_seed(prediction_patient(patient, protocol), device=device)


def _seed_inputs(predicting: Future | None, patient: Patient, D: Any
                 ) -> tuple[dict[str, Any], np.ndarray | None, str]:
    """The seed's keyword arguments of :func:`planner.optimize.optimise_patient`, the predicted
    dose (None when unseeded) and the seed's note."""
    if predicting is None:
        return {}, None, "unseeded: --no-seed"
    from planner.predict.seed import seed_arguments

    seed = predicting.result()
    return seed_arguments(patient, D, seed), seed.dose_gy, seed.note


def plan_patient(patient: Patient | str | Path, protocol: Protocol | str | Path | None = None, *,
                 out_dir: str | Path, device: str = "auto", beam_count: int = 9,
                 beamlet_mm: float = 5.0, dose_grid_mm: float = 3.0,
                 max_segments_per_beam: int = MAX_SEGMENTS_PER_BEAM,
                 time_limit_s: float | None = None, seed: bool = True,
                 allow_conflicts: bool = False, overwrite: bool = False,
                 progress: Callable[[str, bool], None] | None = None) -> PlanResult:
    """Plan one patient from import to reviewed deliverable plan (see the module docstring).

    Parameters
    ----------
    patient : Patient, str or Path
        A Patient, or what :func:`planner.io.load_patient` reads (then timed as "import").
    protocol : Protocol, str or Path, optional
        A Protocol, a protocol file or bundled name; by default :func:`default_protocol`.
    out_dir : str or Path
        Folder to create (``dicom/``, ``report/``, ``summary.json``, ``plan.log``).
    device : {"auto", "cpu", "cuda"}
        Where the dose engine, the optimiser and the network run.
    beam_count : int
        Equispaced coplanar beams, the first at gantry 0.
    beamlet_mm : float, mm
        Beamlet size at the isocentre plane (5 mm matches the central leaves).
    dose_grid_mm : float, mm
        Isotropic dose-grid spacing.
    max_segments_per_beam : int
        Most MLC segments a field may have (fewer intensity levels are used where needed).
    time_limit_s : float, optional, s
        Budget of the fluence optimisation.
    seed : bool
        Shape the plan with the dose prediction where the network applies (default): predicted
        (:func:`planner.predict.seed.predict_seed`) while the Dij is computed, it bounds the
        organs' first sparing push and its dose mimicking joins the sparing step
        (:mod:`planner.predict.seed`); the report shows it beside the plan.
    allow_conflicts : bool
        Plan even when the protocol conflicts with the structures (reported, not raised).
    overwrite : bool
        Replace an existing ``out_dir`` (the CLI's ``--force``).
    progress : callable, optional
        ``progress(line, transient)``: one line per finished step (``transient`` False, also
        written to ``plan.log``) and one per optimiser iteration (``transient`` True).

    Returns
    -------
    PlanResult

    Raises
    ------
    InputError
        Bad input, an existing ``out_dir`` without ``overwrite``, ``device="cuda"`` without a
        GPU, structures the protocol needs missing.
    ProtocolConflictError
        The protocol cannot be met as delineated and ``allow_conflicts`` is false.
    PlannerError
        A field cannot be sequenced within ``max_segments_per_beam`` (see
        :func:`sequence_beams`).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)  # before minutes of work, not after
    try:
        device = resolve_device(device)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"--device {device}: {error}") from None
    log: list[str] = []
    times: dict[str, float] = {}
    clock = [time.perf_counter()]

    def say(line: str) -> None:
        log.append(line)
        if progress is not None:
            progress(line, False)

    def step(name: str, detail: str) -> None:
        now = time.perf_counter()
        times[name] = now - clock[0]
        clock[0] = now
        say(f"{name:<16} {times[name]:7.1f} s  {detail}")

    if not isinstance(patient, Patient):
        patient = load_patient(patient)
    if protocol is None:
        protocol = default_protocol(patient)
    elif not isinstance(protocol, Protocol):
        protocol = read_protocol(protocol)
    mapping = map_structures(protocol, [s.name for s in patient.structures])
    conflicts = protocol_conflicts(patient, protocol)
    step("import", f"{patient.name} ({patient.source}), grid {patient.grid.shape} at "
                   f"{patient.grid.spacing_mm} mm; protocol {protocol.name}; device {device}")
    for c in conflicts:
        say(f"CONFLICT: {c.explanation}")
    if conflicts and not allow_conflicts:
        raise ProtocolConflictError(conflicts)
    say("structures: " + (", ".join(f"{name} = {patient_name!r}" if name != patient_name
                                    else name for name, patient_name in mapping.mapping.items())
                          or "none of the protocol's"))
    if mapping.unmapped:
        say(f"structures not in the protocol (not planned for): {', '.join(mapping.unmapped)}")

    targets = [mapping.mapping[p.target] for p in protocol.prescriptions
               if p.target in mapping.mapping]
    fractions = protocol.prescriptions[0].fractions
    rx_max_gy = max(p.dose_gy for p in protocol.prescriptions)
    fraction_dose_cgy = 100.0 * rx_max_gy / fractions
    dose_grid = dose_grid_for(patient, dose_grid_mm)
    dose_patient = resample_patient(patient, dose_grid)
    ct_structures = planning_structures(patient, protocol)
    step("dose grid", f"{dose_grid.shape} at {dose_grid_mm:g} mm")
    for note in ct_structures.notes:
        say(f"optimisation structure: {note}")

    machine, model = load_machine(), load_beam_model()
    iso = target_centre_xyz_mm(patient, targets)
    beams = equispaced_beams(beam_count, iso)
    union = np.zeros(patient.grid.shape, dtype=bool)
    for name in targets:
        union |= patient.structure(name).mask
    beamset = beamlets_covering(beams, union, patient.grid, beamlet_size_mm=beamlet_mm,
                                sad_mm=machine.sad_mm)
    step("beams", f"{beam_count} fields at gantry {', '.join(f'{b.gantry_deg:g}' for b in beams)}"
                  f"; isocentre (x, y, z) {tuple(round(v, 1) for v in iso)} mm; "
                  f"{beamset.n_beamlets} beamlets of {beamlet_mm:g} mm")

    density = to_device(patient.density, device)
    calculated = to_device(dose_calculation_mask(dose_patient), device)
    dose_structures = planning_structures(dose_patient, protocol)
    needed = needed_voxels(dose_patient, protocol, dose_structures)
    # The network needs no Dij: it predicts on a second thread while the Dij is computed.
    with ThreadPoolExecutor(max_workers=1) as pool:
        predicting = pool.submit(_predict_seed, dose_patient, protocol, device) if seed else None
        dij = compute_dij(density, patient.grid, dose_grid, beamset, model,
                          dose_mask=to_device(needed, device))
        D = dij.matrix
        step("dij", f"{D.shape[0]} x {D.shape[1]}, {D.nnz} non-zeros")
        seeding, predicted_gy, seed_note = _seed_inputs(predicting, dose_patient, D)
    step("seed", seed_note)

    def on_iteration(name: str, p: Progress) -> None:
        if progress is not None:
            progress(f"  optimisation {name}: iteration {p.iteration}, objective {p.value:.4g}, "
                     f"{p.elapsed_s:.1f} s", True)

    fluence = optimise_patient(dose_patient, D, protocol,
                               regularisers=[smoothness_regulariser(beamset)],
                               time_limit_s=time_limit_s, progress=on_iteration,
                               structures=dose_structures, **seeding)
    dij_nonzeros = int(D.nnz)
    del D, dij  # a head-and-neck Dij is 1-2 GB; the steps after the fluence do not need it
    result = fluence.result
    for s in result.steps:
        say(f"  {s.step}: {s.iterations} iterations, {s.elapsed_s:.1f} s, {s.goals_met} goals "
            f"met ({s.note})")
    fluence_dose = fill_uncomputed(fluence.dose_gy, needed)
    goals_fluence = evaluate_protocol(patient, resample_dose(fluence_dose, dose_grid,
                                                             patient.grid), protocol,
                                      structures=ct_structures)
    step("optimisation", f"{result.iterations} iterations in {len(result.steps)} steps; "
                         f"stopped: {result.stopped_by}")

    min_weight = MIN_MU_PER_SEGMENT * fractions
    sequences = sequence_beams(result.x, beamset, machine, min_weight=min_weight,
                               max_segments=max_segments_per_beam)
    per_field = [list(f.segments) for f in sequences]
    names = [f.name(beams[f.beam].gantry_deg) for f in sequences]
    step("sequencing", "segments per field: " + ", ".join(
        f"{n} {len(s)}" for n, s in zip(names, per_field)))

    field_beams = [beams[f.beam] for f in sequences]
    voxel_index, S = segment_dose_matrix(
        density, patient.grid, dose_grid, field_beams, per_field, machine, model,
        dose_mask=to_device(needed, device),
        fluence_spacing_mm=SEGMENT_WEIGHT_FLUENCE_MM)
    step("segment doses", f"{S.shape[1]} segments on {S.shape[0]} voxels")

    xp = array_module(S)
    host_index = to_device(voxel_index, "cpu")
    objectives = segment_weight_objectives(dose_patient, protocol, mapping.mapping, host_index,
                                           fluence.dose_gy, xp=xp)
    w0 = np.array([seg.mu for segs in per_field for seg in segs])
    mu_price = SEGMENT_MU_PRICE_PER_GY * rx_max_gy
    weights = optimise_segment_weights(S, objectives, w0, min_weight=min_weight,
                                       mu_weight=mu_price,
                                       max_iter=SEGMENT_WEIGHT_ITERATIONS)
    step("segment weights", f"{weights.iterations} iterations ({weights.stop_reason}); "
                            f"{int(np.count_nonzero(weights.x))} of {w0.size} segments kept")

    # The fields' ray tracing, once for every dose of these segments (at whatever MU).
    traced = field_voxels(density, patient.grid, dose_grid, field_beams, per_field, machine,
                          model, dose_mask=calculated)

    def deliver(mu: np.ndarray) -> tuple[list[PlanBeam], np.ndarray, tuple[GoalRow, ...]]:
        """Plan beams (MU per fraction), the exported dose (the dose engine on the delivered
        apertures and MU, all fractions) and its goal table, for segment MU ``mu`` (a segment
        at 0 MU is not delivered)."""
        plan_beams, weighted, k = [], [], 0
        for f, name, segs in zip(sequences, names, per_field):
            weighted.append([dataclasses.replace(seg, mu=float(m))
                             for seg, m in zip(segs, mu[k:k + len(segs)])])
            k += len(segs)
            kept = [seg for seg in weighted[-1] if seg.mu > 0]
            if kept:
                plan_beams.append(PlanBeam(name, beams[f.beam], tuple(
                    dataclasses.replace(seg, mu=seg.mu / fractions) for seg in kept)))
        dose = to_device(segment_dose(density, patient.grid, dose_grid, field_beams, weighted,
                                      machine, model, dose_mask=calculated, voxels=traced),
                         "cpu")
        return plan_beams, dose, evaluate_protocol(
            patient, resample_dose(dose, dose_grid, patient.grid), protocol,
            structures=ct_structures)

    plan_beams, dose, goals_plan = deliver(weights.x)
    step("final dose", f"max {float(dose.max()):.2f} Gy; "
                       f"{sum(g.met for g in goals_plan)} of {len(goals_plan)} goals met")

    # Mimicking the fluence dose can let a hard goal the fluence plan met (on the patient grid
    # or on the optimiser's) slip past its limit.
    fluence_met = ({r.goal.label for r in goals_fluence if r.met}
                   | {r.label for r in result.goals if r.met})
    lost = [r for r in goals_plan if r.goal.hard and not r.met and r.goal.label in fluence_met]
    repair_summary: dict[str, Any] = {"lost": [r.goal.label for r in lost], "rounds": 0,
                                      "restored": []}
    if lost:
        hard = segment_weight_goals(dose_patient, protocol, host_index, xp=xp,
                                    structures=dose_structures)
        on_rows = evaluate_goals(S @ xp.asarray(weights.x, dtype=S.dtype), hard)
        repair = restore_goals(S, objectives, weights,
                               goals_to_restore(hard, on_rows, ct_structures.patient,
                                                goals_fluence, goals_plan,
                                                met_on_dose_grid=fluence_met),
                               min_weight=min_weight, mu_weight=mu_price,
                               max_iter=SEGMENT_WEIGHT_ITERATIONS)
        repair_summary["rounds"] = repair.rounds
        before = {r.goal.label: r for r in goals_plan}
        if repair.result is not weights:
            weights = repair.result
            plan_beams, dose, goals_plan = deliver(weights.x)
        after = {r.goal.label: r for r in goals_plan}
        repair_summary["restored"] = [r.goal.label for r in lost if after[r.goal.label].met]
        step("goal repair", f"{repair.rounds} rounds of segment weights with the goals: " + "; ".join(
            f"{r.goal.label} {before[r.goal.label].value:.2f} -> {after[r.goal.label].value:.2f} "
            f"{r.unit} ({'restored' if after[r.goal.label].met else 'still lost'})" for r in lost)
            + f"; {sum(g.met for g in goals_plan)} of {len(goals_plan)} goals met, "
              f"{int(np.count_nonzero(weights.x))} segments")

    normalisation = "none (optimised to the goals; normalise = false in the protocol)"
    if protocol.planning.normalise:
        scale, normalisation = normalisation_scale(patient, dose_grid, dose, protocol,
                                                   ct_structures, goals_plan)
        mu = weights.x * scale
        floored = (mu > 0) & (mu < min_weight)
        if scale != 1.0 and not floored.any():
            dose = dose * np.float32(scale)  # the dose is linear in the MU
            plan_beams = [dataclasses.replace(b, segments=tuple(
                dataclasses.replace(seg, mu=seg.mu * scale) for seg in b.segments))
                for b in plan_beams]
            goals_plan = evaluate_protocol(patient, resample_dose(dose, dose_grid, patient.grid),
                                           protocol, structures=ct_structures)
        elif scale != 1.0:
            # Segments the factor takes below the least MU stay there; the dose is recomputed.
            mu[floored] = min_weight
            scaled = deliver(mu)
            kept = {r.goal.label for r in goals_plan if r.goal.hard and r.met}
            if all(r.met for r in scaled[2] if r.goal.label in kept):
                plan_beams, dose, goals_plan = scaled
                normalisation += (f"; {int(floored.sum())} segments kept at the least "
                                  f"{MIN_MU_PER_SEGMENT:g} MU, the dose recomputed")
            else:
                normalisation = (f"not scaled: x{scale:.3f} with {int(floored.sum())} segments "
                                 f"kept at the least {MIN_MU_PER_SEGMENT:g} MU loses a hard goal")
        step("normalisation", normalisation)

    total_mu = float(sum(b.mu for b in plan_beams))
    summary: dict[str, Any] = {
        "planner": planner.__version__, "patient": patient.name, "source": patient.source,
        "protocol": {"name": protocol.name, "source": protocol.source},
        # Which patient structure plays each protocol structure (planner.names' matching).
        "structures": {"mapping": mapping.mapping, "unmapped": list(mapping.unmapped),
                       "missing": list(mapping.missing)},
        "device": device, "fractions": fractions, "fraction_dose_cgy": fraction_dose_cgy,
        "grid": {"ct": _grid_json(patient.grid), "dose": _grid_json(dose_grid)},
        "isocenter_xyz_mm": [round(v, 2) for v in iso], "beamlet_mm": beamlet_mm,
        "beamlets": beamset.n_beamlets, "dij_nonzeros": dij_nonzeros,
        "seed": seed_note, "conflicts": [c.explanation for c in conflicts],
        "optimisation": {"iterations": result.iterations, "stopped_by": result.stopped_by,
                         # As used in the end: lowered where the hard goals needed it.
                         "smoothness_weight": SMOOTHNESS_WEIGHT * result.regulariser_scale,
                         "steps": [dataclasses.asdict(s) for s in result.steps]},
        "goals": {"fluence": _goal_rows(goals_fluence), "plan": _goal_rows(goals_plan)},
        "beams": [{"name": b.name, "gantry_deg": b.beam.gantry_deg, "segments": len(b.segments),
                   "mu": round(b.mu, 2), "segment_mu": [round(s.mu, 2) for s in b.segments]}
                  for b in plan_beams],
        "segments": {"total": sum(len(b.segments) for b in plan_beams),
                     "max_per_beam": max([len(b.segments) for b in plan_beams] + [0]),
                     "limit_per_beam": max_segments_per_beam,
                     "min_mu_per_segment": MIN_MU_PER_SEGMENT},
        "mu": {"total_per_fraction": round(total_mu, 2),
               "per_cgy": round(total_mu / fraction_dose_cgy, 3),
               "least_per_fraction": round(sum(s.least_mu for s in sequences) / fractions, 2),
               # The segment-weight objective's price of one MU (over all fractions).
               "price_in_segment_weights": mu_price},
        # Hard goals the fluence plan met and plain mimicking lost (patient grid), and repaired.
        "goal_repair": repair_summary,
        "normalisation": normalisation,
        "versions": _versions(),
        "files": {"dicom": DICOM_FOLDER, "report": f"{REPORT_FOLDER}/report.html",
                  "log": LOG_FILE},
    }

    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        files = write_plan_dicom(tmp / DICOM_FOLDER, patient, plan_beams, machine, dose,
                                 dose_grid, fractions=fractions,
                                 prescriptions=protocol.prescriptions,
                                 label=protocol.name[:16])
        step("export", f"RT Plan + RT Dose{' + CT + RTSTRUCT' if files.wrote_images else ''} "
                       f"in {DICOM_FOLDER}/")
        review = ReviewPlan(label=protocol.name, beams=tuple(plan_beams),
                            leaf_boundaries_mm=machine.leaf_boundaries_mm,
                            fluences=aperture_fluences(plan_beams, machine.leaf_boundaries_mm),
                            fractions=fractions, normalisation=normalisation,
                            source="planner plan")
        reviewed = write_report(tmp / REPORT_FOLDER, patient, dose, dose_grid, protocol=protocol,
                                plan=review, predicted_dose_gy=predicted_gy,
                                prediction_note=seed_note)
        step("report", f"{REPORT_FOLDER}/report.html")
        summary["quality"] = [{"figure": f.name, "structure": f.structure,
                               "value": round(f.value, 4), "unit": f.unit}
                              for f in reviewed.quality]
        summary["prediction"] = [dataclasses.asdict(r) for r in reviewed.prediction]
        summary["times_s"] = {k: round(v, 2) for k, v in times.items()}
        summary["total_s"] = round(time.perf_counter() - start, 2)
        text = summary_text(summary, goals_fluence, goals_plan)
        log.extend(text.splitlines())
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=1) + "\n")
        (tmp / LOG_FILE).write_text("\n".join(log) + "\n")
    files = dataclasses.replace(files, folder=out_dir / DICOM_FOLDER)
    return PlanResult(out_dir, patient, protocol, tuple(plan_beams), dose, dose_grid,
                      goals_fluence, goals_plan, conflicts, seed_note, dict(times), summary,
                      files)
