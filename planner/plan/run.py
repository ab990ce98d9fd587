"""``planner plan`` as one function: a patient and a protocol in, a reviewed deliverable plan out.

:func:`plan_patient` calls the stages of DESIGN.md's data flow in order, each timed and reported
through one :class:`planner.plan.log.StepLog`: set-up (:mod:`planner.plan.setup`,
:mod:`planner.plan.grid`, :mod:`planner.plan.beams`), :mod:`planner.plan.fluence`, delivery
(:mod:`planner.plan.sequencing`, :mod:`planner.plan.segment_weights`,
:mod:`planner.plan.delivery`, :mod:`planner.plan.goal_repair`, :mod:`planner.plan.normalisation`)
and the output (:mod:`planner.plan.summary`, :mod:`planner.plan.output`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dose._xp import resolve_device
from dose.grid import Grid
from planner.errors import InputError, SequencingError
from planner.io import load_patient
from planner.io._atomic import check_writable
from planner.io.plan_dicom import PlanFiles
from planner.io.rtplan import PlanBeam
from planner.patient import Patient
from planner.plan.beams import PlanBeams, place_beams
from planner.plan.delivery import DeliveredPlan, Delivery, trace_fields
from planner.plan.fluence import FluencePlan, correct_fluence, optimise_fluence
from planner.plan.goal_repair import GoalRepairReport, hard_goals_met, repair_goals
from planner.plan.grid import PlanGrids, prepare_grids
from planner.plan.log import StepLog
from planner.plan.normalisation import normalise
from planner.plan.output import write_plan_folder
from planner.plan.segment_weights import SegmentWeights, weight_segments
from planner.plan.sequencing import MAX_SEGMENTS_PER_BEAM, SequencedFields, sequence_fields
from planner.plan.setup import PlanCase, ProtocolConflictError, prepare_case
from planner.plan.summary import plan_summary
from planner.protocol import Protocol
from planner.review.goals import Conflict, GoalRow


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


def plan_patient(patient: Patient | str | Path, protocol: Protocol | str | Path | None = None, *,
                 out_dir: str | Path, device: str = "auto", beam_count: int = 9,
                 beamlet_mm: float = 5.0, dose_grid_mm: float = 3.0,
                 max_segments_per_beam: int = MAX_SEGMENTS_PER_BEAM,
                 time_limit_s: float | None = None, seed: bool = True,
                 allow_conflicts: bool = False, overwrite: bool = False,
                 progress: Callable[[str, bool], None] | None = None) -> PlanResult:
    """Plan one patient from import to reviewed deliverable plan.

    The output folder holds ``dicom/``, ``report/``, ``summary.json`` and ``plan.log``; it is
    written at the end as one atomic folder, so an interrupted or failed run leaves nothing
    behind and an existing folder is replaced only with ``overwrite``. The goal tables (fluence
    plan and deliverable plan) are the report's: the dose interpolated onto the CT grid.

    Parameters
    ----------
    patient : Patient, str or Path
        A Patient, or what :func:`planner.io.load_patient` reads (then timed as "import").
    protocol : Protocol, str or Path, optional
        A Protocol, a protocol file or bundled name; by default
        :func:`planner.plan.setup.default_protocol`.
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
        Plan even when the protocol conflicts with the structures (reported, not raised): by
        default they stop the run before minutes are spent on a plan that must be rejected.
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
        :func:`planner.plan.sequencing.sequence_beams`).
    """
    log = StepLog(progress)
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)  # before minutes of work, not after
    try:
        device = resolve_device(device)
    except (RuntimeError, ValueError) as error:
        raise InputError(f"--device {device}: {error}") from None

    if not isinstance(patient, Patient):
        patient = load_patient(patient)
    case = prepare_case(patient, protocol)
    _report_case(case, device, allow_conflicts, log)
    grids = prepare_grids(case, dose_grid_mm)
    log.step("dose grid", f"{grids.dose_grid.shape} at {dose_grid_mm:g} mm")
    for note in grids.ct_structures.notes:
        log.say(f"optimisation structure: {note}")
    beams = place_beams(case, beam_count, beamlet_mm)
    log.step("beams", f"{beam_count} fields at gantry "
                      f"{', '.join(f'{b.gantry_deg:g}' for b in beams.beams)}; isocentre "
                      f"(x, y, z) {tuple(round(v, 1) for v in beams.isocenter_xyz_mm)} mm; "
                      f"{beams.beamset.n_beamlets} beamlets of {beamlet_mm:g} mm")

    fluence = optimise_fluence(case, grids, beams, device=device, seed=seed,
                               time_limit_s=time_limit_s, log=log)
    delivered = _deliver(case, grids, beams, fluence, max_segments_per_beam, device, log)
    correction = None
    if delivered.repair.still_lost:
        fluence, delivered, correction = _correct_delivery(
            case, grids, beams, fluence, delivered, max_segments_per_beam, device, log)
    fluence = fluence.without_inputs()  # the Dij (1-2 GB) is no longer needed
    fields, weights, repair = delivered.fields, delivered.weights, delivered.repair
    planned, normalisation = normalise(delivered.delivery, delivered.mu, delivered.planned,
                                       log=log)

    summary = plan_summary(case, grids, beams, fluence, fields, planned,
                           mu_price=weights.mu_price, repair=repair, correction=correction,
                           normalisation=normalisation, device=device,
                           max_segments_per_beam=max_segments_per_beam)
    files = write_plan_folder(out_dir, case, grids, beams, fluence, planned, summary,
                              normalisation=normalisation, overwrite=overwrite, log=log)
    return PlanResult(out_dir, patient, case.protocol, planned.beams, planned.dose_gy,
                      grids.dose_grid, fluence.goals, planned.goals, case.conflicts,
                      fluence.seed_note, dict(log.times_s), summary, files)


@dataclass(frozen=True)
class _Delivered:
    """A fluence plan made deliverable: its fields, segment weights (``mu`` after the goal
    repair) and plan."""

    fields: SequencedFields
    delivery: Delivery
    weights: SegmentWeights
    mu: np.ndarray
    planned: DeliveredPlan
    repair: GoalRepairReport


def _deliver(case: PlanCase, grids: PlanGrids, beams: PlanBeams, fluence: FluencePlan,
             max_segments_per_beam: int, device: str, log: StepLog) -> _Delivered:
    """The steps "sequencing", "segment doses", "segment weights", "final dose" and "goal
    repair"."""
    fields = sequence_fields(case, beams, fluence.result.x,
                             max_segments_per_beam=max_segments_per_beam)
    log.step("sequencing", "segments per field: " + ", ".join(
        f"{n} {len(f.segments)}" for n, f in zip(fields.names, fields.fields)))
    # Traced once: the segment doses and every final dose of these fields take their voxels.
    delivery = trace_fields(case, grids, beams, fields, device=device)
    weights = weight_segments(case, grids, beams, fields, fluence, traced=delivery.traced,
                              device=device, log=log)
    planned = delivery.plan(weights.result.x)
    log.step("final dose", f"max {float(planned.dose_gy.max()):.2f} Gy; {planned.goals_met}")
    result, planned, repair = repair_goals(delivery, weights, fluence, planned, log=log)
    return _Delivered(fields, delivery, weights, result.x, planned, repair)


def _correct_delivery(case: PlanCase, grids: PlanGrids, beams: PlanBeams, fluence: FluencePlan,
                      delivered: _Delivered, max_segments_per_beam: int, device: str,
                      log: StepLog) -> tuple[FluencePlan, _Delivered, dict[str, Any]]:
    """Where delivery lost a hard goal that the goal repair could not restore: the fluence
    optimised again on the dose that delivering it added (:func:`planner.plan.fluence.
    correct_fluence`) and delivered again. The corrected plan is kept only where it meets more
    hard goals (a goal merely nearer its limit does not pay for the room the organs gave the
    targets); either way the correction is said and returned for the summary."""
    corrected = correct_fluence(case, grids, fluence, delivered.planned.dose_gy, log=log)
    try:
        again = _deliver(case, grids, beams, corrected, max_segments_per_beam, device, log)
    except SequencingError as error:  # the corrected fluence is more modulated
        log.say(f"delivery correction: not delivered ({error}); the first plan is kept")
        return fluence, delivered, {"hard_goals_met": None, "kept": False}
    first, second = (hard_goals_met(d.planned.goals) for d in (delivered, again))
    kept = second > first
    log.say(f"delivery correction: {second} hard goals met against {first} before; the "
            + ("corrected plan is kept" if kept else "first plan is kept"))
    record = {"hard_goals_met": {"first": first, "corrected": second}, "kept": kept}
    return (corrected, again, record) if kept else (fluence, delivered, record)


def _report_case(case: PlanCase, device: str, allow_conflicts: bool, log: StepLog) -> None:
    """The step "import": the patient, the protocol and its mapping said; the conflicts said and,
    unless ``allow_conflicts``, raised (:class:`planner.plan.setup.ProtocolConflictError`)."""
    patient, names = case.patient, case.names
    log.step("import", f"{patient.name} ({patient.source}), grid {patient.grid.shape} at "
                       f"{patient.grid.spacing_mm} mm; protocol {case.protocol.name}; "
                       f"device {device}")
    for c in case.conflicts:
        log.say(f"CONFLICT: {c.explanation}")
    if case.conflicts and not allow_conflicts:
        raise ProtocolConflictError(case.conflicts)
    log.say("structures: " + (", ".join(f"{name} = {patient_name!r}" if name != patient_name
                                        else name for name, patient_name in names.mapping.items())
                              or "none of the protocol's"))
    if names.unmapped:
        log.say(f"structures not in the protocol (not planned for): {', '.join(names.unmapped)}")
