"""DICOM RT Plan for step-and-shoot IMRT: write a plan's beams and segments, and read them back.

What is written, as treatment systems need it (DESIGN.md "DICOM output that treatment systems
accept", DICOM PS3.3 C.8.8.9-C.8.8.14): RT General Plan with RTPlanGeometry PATIENT and the
structure set it was made on, Patient Setup, RT Prescription, Tolerance Table, Fraction Scheme
with every beam's meterset, and RT Beams: BeamType STATIC, jaws (ASYMX, ASYMY) and MLC (MLCX),
two control points per segment (the meterset of the segment is delivered between them, the
leaves move between pairs with the beam off), the full collimator state in every control point,
and cumulative meterset weights from 0 to 1. Every control point also carries the gantry and
collimator angles (DICOM requires them in the first only, or where they change; a static beam's
repeat them unchanged, which some readers, e.g. PyDoseRT, expect) and, given the patient's body,
the Source to Surface Distance along the central axis (:func:`source_to_surface_mm`), as clinical
planning systems write it.

What is read: step-and-shoot beams labelled STATIC (as written here) or DYNAMIC (as e.g.
Eclipse exports step-and-shoot IMRT), the same sequence either way: each interval between two
control points in which the cumulative meterset weight increases is one segment (its aperture,
its share of the beam meterset), held still within ``STILL_TOLERANCE_MM``; in intervals of
equal weight the collimator moves with the beam off and nothing is delivered. Positions a
control point does not list carry forward from earlier ones (PS3.3 C.8.8.14.5). Beams whose
collimator moves while the weight increases (sliding window) are refused. The gantry angle is
read from control point 0 only (:mod:`planner.check` refuses arcs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import scipy.ndimage
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dose.beams import Beam
from dose.geometry import source_position_xyz_mm
from dose.grid import Grid
from dose.machine import Machine
from dose.segments import Segment
from planner.errors import InputError
from planner.io._atomic import write_file_atomic
from planner.io._dicom import (
    RT_STRUCTURE_SET_STORAGE,
    first_line,
    format_ds,
    new_dataset,
    read_modality,
    save,
)
from planner.patient import DicomReferences, Prescription

RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"  # DICOM PS3.4 Annex B.5
# Cumulative meterset weights are written with this many decimals (DS, at most 16 characters);
# 1e-10 of a beam's meterset is far below any delivery resolution.
_WEIGHT_DECIMALS = 10
_POSITION_DECIMALS = 2  # mm: 0.01 mm, ten times finer than MLC positioning (about 0.1 mm)
#: Collimator positions that differ by at most this between two control points are still, mm.
#: Positions are decimal strings: a system that holds an aperture repeats the same string (a
#: difference of 0), one that rounds differently (positions converted from cm, fewer decimals)
#: shifts them by up to half its last digit. 0.01 mm is planner's own position resolution and
#: ten times finer than MLC positioning (about 0.1 mm): a movement this small changes no dose,
#: while a sliding-window leaf moves millimetres between control points.
STILL_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class ToleranceTable:
    """Positioning tolerances the record-and-verify system enforces (RT Tolerance Tables).

    Defaults are a typical IMRT table; clinics substitute their own label and values.

    Parameters
    ----------
    label : str
    gantry_deg, collimator_deg, couch_deg : float, degrees
    table_top_vertical_mm, table_top_longitudinal_mm, table_top_lateral_mm : float, mm
    jaw_mm, leaf_mm : float, mm
        Position tolerance of the jaws (ASYMX, ASYMY) and of the MLC leaves (MLCX).
    """

    label: str = "IMRT"
    gantry_deg: float = 0.5
    collimator_deg: float = 0.5
    couch_deg: float = 0.5
    table_top_vertical_mm: float = 5.0
    table_top_longitudinal_mm: float = 5.0
    table_top_lateral_mm: float = 5.0
    jaw_mm: float = 2.0
    leaf_mm: float = 1.0


@dataclass(frozen=True)
class PlanBeam:
    """One step-and-shoot beam: its geometry and its segments (each with its MU).

    Parameters
    ----------
    name : str
        Beam name (at most 64 characters), e.g. ``"G040"``.
    beam : Beam
        Gantry, collimator and couch angles and the isocentre (x, y, z), mm.
    segments : tuple of Segment
        In delivery order; every segment's MU > 0.
    dose_gy : float or None
        Dose of this beam per fraction at its dose specification point, Gy (BeamDose), if known.
    """

    name: str
    beam: Beam
    segments: tuple[Segment, ...]
    dose_gy: float | None = None

    @property
    def mu(self) -> float:
        """Monitor units of the beam (per fraction)."""
        return float(sum(s.mu for s in self.segments))


@dataclass(frozen=True)
class RtPlan:
    """What :func:`read_rt_plan` returns: the beams and how they are delivered.

    Parameters
    ----------
    beams : tuple of PlanBeam
    fractions : int
        Number of fractions planned.
    machine_name : str
    energy_mv : float
    dose_rate_mu_per_min : float
    sad_mm : float
    leaf_boundaries_mm : (n_pairs + 1,) float array, mm
    tolerance_table : ToleranceTable
    label : str
    sop_instance_uid, frame_of_reference_uid, study_instance_uid, patient_id : str
    structure_set_sop_instance_uid : str
    """

    beams: tuple[PlanBeam, ...]
    fractions: int
    machine_name: str
    energy_mv: float
    dose_rate_mu_per_min: float
    sad_mm: float
    leaf_boundaries_mm: np.ndarray = field(repr=False)
    tolerance_table: ToleranceTable
    label: str
    sop_instance_uid: str
    frame_of_reference_uid: str
    study_instance_uid: str
    patient_id: str
    structure_set_sop_instance_uid: str

    @property
    def mu(self) -> float:
        """Total monitor units per fraction."""
        return float(sum(b.mu for b in self.beams))


def _positions(values: Sequence[float]) -> list[str]:
    return [f"{v:.{_POSITION_DECIMALS}f}" for v in values]


def _device(kind: str, pairs: int, boundaries: np.ndarray | None = None) -> Dataset:
    item = Dataset()
    item.RTBeamLimitingDeviceType = kind
    item.NumberOfLeafJawPairs = pairs
    if boundaries is not None:
        item.LeafPositionBoundaries = [format_ds(v) for v in boundaries]
    return item


def _device_positions(segment: Segment) -> list[Dataset]:
    items = []
    for kind, values in (("ASYMX", segment.jaw_x_mm), ("ASYMY", segment.jaw_y_mm),
                         # MLCX lists bank A (X1) for every pair, then bank B (PS3.3 C.8.8.14.7).
                         ("MLCX", np.concatenate([segment.leaf_positions_mm[:, 0],
                                                  segment.leaf_positions_mm[:, 1]]))):
        item = Dataset()
        item.RTBeamLimitingDeviceType = kind
        item.LeafJawPositions = _positions(values)
        items.append(item)
    return items


def _tolerance_dataset(table: ToleranceTable) -> Dataset:
    ds = Dataset()
    ds.ToleranceTableNumber = 1
    ds.ToleranceTableLabel = table.label
    ds.GantryAngleTolerance = format_ds(table.gantry_deg)
    ds.BeamLimitingDeviceAngleTolerance = format_ds(table.collimator_deg)
    ds.PatientSupportAngleTolerance = format_ds(table.couch_deg)
    ds.TableTopVerticalPositionTolerance = format_ds(table.table_top_vertical_mm)
    ds.TableTopLongitudinalPositionTolerance = format_ds(table.table_top_longitudinal_mm)
    ds.TableTopLateralPositionTolerance = format_ds(table.table_top_lateral_mm)
    devices = []
    for kind, value in (("ASYMX", table.jaw_mm), ("ASYMY", table.jaw_mm), ("MLCX", table.leaf_mm)):
        item = Dataset()
        item.RTBeamLimitingDeviceType = kind
        item.BeamLimitingDevicePositionTolerance = format_ds(value)
        devices.append(item)
    ds.BeamLimitingDeviceToleranceSequence = devices
    return ds


def source_to_surface_mm(body_mask: np.ndarray, grid: Grid, beam: Beam, sad_mm: float, *,
                         step_mm: float = 0.5) -> float | None:
    """Distance from the source to the body surface along a beam's central axis, mm.

    The mask is sampled trilinearly every ``step_mm`` from the source towards the isocentre and
    beyond it; the surface is where the sampled mask first reaches 0.5 (the voxel boundary),
    interpolated linearly between the two samples around it.

    Parameters
    ----------
    body_mask : (nz, ny, nx) bool array
        The patient's outline (external contour) on ``grid``.
    grid : Grid
    beam : Beam
    sad_mm : float, mm
        Source-axis distance.
    step_mm : float, mm

    Returns
    -------
    float or None
        The SSD, mm; None when the central axis misses the body.
    """
    source = source_position_xyz_mm(beam.gantry_deg, beam.collimator_deg, beam.couch_deg,
                                     beam.isocenter_xyz_mm, sad_mm)
    direction = (np.asarray(beam.isocenter_xyz_mm) - source) / sad_mm
    # Far enough past the isocentre to cross the whole grid whatever the isocentre's place.
    reach = sad_mm + float(np.linalg.norm(np.subtract(*grid.extent_mm())))
    distance = np.arange(0.0, reach, step_mm)
    points_zyx = (source + distance[:, None] * direction)[:, ::-1]
    index = (points_zyx - np.asarray(grid.origin_mm)) / np.asarray(grid.spacing_mm)
    inside = scipy.ndimage.map_coordinates(body_mask.astype(np.float32), index.T, order=1,
                                           mode="constant", cval=0.0)
    hit = np.flatnonzero(inside >= 0.5)
    if not hit.size:
        return None
    k = int(hit[0])
    if k == 0:
        return 0.0
    a, b = float(inside[k - 1]), float(inside[k])
    return float(distance[k - 1] + step_mm * (0.5 - a) / (b - a))


def _beam_dataset(number: int, plan_beam: PlanBeam, machine: Machine, machine_name: str,
                  energy_mv: float, dose_rate: float, ssd_mm: float | None) -> Dataset:
    beam = plan_beam.beam
    ds = Dataset()
    ds.BeamNumber = number
    ds.BeamName = plan_beam.name
    ds.BeamType = "STATIC"
    ds.RadiationType = "PHOTON"
    ds.TreatmentMachineName = machine_name
    ds.PrimaryDosimeterUnit = "MU"
    ds.SourceAxisDistance = format_ds(machine.sad_mm)
    ds.BeamLimitingDeviceSequence = [
        _device("ASYMX", 1), _device("ASYMY", 1),
        _device("MLCX", machine.n_leaf_pairs, machine.leaf_boundaries_mm)]
    ds.ReferencedPatientSetupNumber = 1
    ds.ReferencedToleranceTableNumber = 1
    ds.TreatmentDeliveryType = "TREATMENT"
    ds.NumberOfWedges = 0
    ds.NumberOfCompensators = 0
    ds.NumberOfBoli = 0
    ds.NumberOfBlocks = 0
    ds.FinalCumulativeMetersetWeight = "1"
    mu = np.array([s.mu for s in plan_beam.segments])
    cumulative = np.concatenate([[0.0], np.cumsum(mu) / mu.sum()])
    cumulative[-1] = 1.0  # exactly, whatever the float sum
    points = []
    for k, segment in enumerate(plan_beam.segments):
        for weight in (cumulative[k], cumulative[k + 1]):
            cp = Dataset()
            cp.ControlPointIndex = len(points)
            if not points:
                cp.NominalBeamEnergy = format_ds(energy_mv)
                cp.DoseRateSet = format_ds(dose_rate)
            # Repeated in every control point: the beam is static, so nothing changes.
            cp.GantryAngle = format_ds(beam.gantry_deg % 360)
            cp.BeamLimitingDeviceAngle = format_ds(beam.collimator_deg % 360)
            if ssd_mm is not None:
                cp.SourceToSurfaceDistance = format_ds(ssd_mm)
            if not points:
                cp.GantryRotationDirection = "NONE"
                cp.BeamLimitingDeviceRotationDirection = "NONE"
                cp.PatientSupportAngle = format_ds(beam.couch_deg % 360)
                cp.PatientSupportRotationDirection = "NONE"
                cp.TableTopEccentricAngle = "0"
                cp.TableTopEccentricRotationDirection = "NONE"
                # Type 2: the couch position is set at the machine, not by the plan.
                cp.TableTopVerticalPosition = None
                cp.TableTopLongitudinalPosition = None
                cp.TableTopLateralPosition = None
                cp.IsocenterPosition = [format_ds(v) for v in beam.isocenter_xyz_mm]
            cp.BeamLimitingDevicePositionSequence = _device_positions(segment)
            cp.CumulativeMetersetWeight = f"{weight:.{_WEIGHT_DECIMALS}f}"
            points.append(cp)
    ds.NumberOfControlPoints = len(points)
    ds.ControlPointSequence = points
    return ds


def write_rt_plan(path: str | Path, beams: Sequence[PlanBeam], machine: Machine,
                  refs: DicomReferences, *, fractions: int,
                  prescriptions: Sequence[Prescription] = (), label: str = "planner IMRT",
                  machine_name: str | None = None, energy_mv: float | None = None,
                  dose_rate_mu_per_min: float | None = None,
                  tolerance_table: ToleranceTable = ToleranceTable(),
                  sop_instance_uid: str | None = None, series_number: int = 1,
                  body: tuple[np.ndarray, Grid] | None = None, overwrite: bool = False) -> str:
    """Write a step-and-shoot IMRT plan as a DICOM RT Plan file (atomically).

    Parameters
    ----------
    path : str or Path
    beams : sequence of PlanBeam
        Beams in delivery order, each with at least one segment, all MU > 0 (per fraction).
    machine : Machine
        MLC leaf boundaries, SAD, and the defaults for name, energy and dose rate.
    refs : DicomReferences
        Patient, study, frame of reference, patient position and the RT Structure Set the plan
        was made on (``structure_set_sop_instance_uid`` must be set).
    fractions : int
        Number of fractions planned.
    prescriptions : sequence of Prescription
        Written as target dose references (RT Prescription module).
    label : str
        RT Plan Label (at most 16 characters are written).
    machine_name, energy_mv, dose_rate_mu_per_min : optional
        TreatmentMachineName, NominalBeamEnergy (MV) and DoseRateSet (MU/min); the machine's
        by default.
    tolerance_table : ToleranceTable
    sop_instance_uid : str, optional
        UID of the new RT Plan (a new one by default).
    series_number : int
    body : ((nz, ny, nx) bool array, Grid), optional
        The patient's outline and its grid: each beam's Source to Surface Distance is traced
        on it (:func:`source_to_surface_mm`) and written in its control points.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    str
        The RT Plan's SOP Instance UID (for the RT Dose's ReferencedRTPlanSequence).

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is false.
    ValueError
        No beams, a beam without segments or with a segment of MU <= 0, a segment whose leaf
        count differs from the machine's, or ``refs`` without a structure set.
    """
    if not beams:
        raise ValueError("an RT Plan needs at least one beam")
    if refs.structure_set_sop_instance_uid is None:
        raise ValueError("the plan must reference an RT Structure Set: write the structure set "
                         "first and pass its SOP Instance UID in refs")
    if fractions < 1:
        raise ValueError(f"fractions must be >= 1, got {fractions}")
    for b in beams:
        if not b.segments:
            raise ValueError(f"beam {b.name!r} has no segments")
        if min(s.mu for s in b.segments) <= 0:
            raise ValueError(f"beam {b.name!r}: every segment needs MU > 0 (drop empty segments)")
        pairs = {s.leaf_positions_mm.shape[0] for s in b.segments}
        if pairs != {machine.n_leaf_pairs}:
            raise ValueError(f"beam {b.name!r}: segments have {sorted(pairs)} leaf pairs, machine "
                             f"{machine.name!r} has {machine.n_leaf_pairs}")
    uid = sop_instance_uid or generate_uid()
    now = datetime.now()
    ds = new_dataset(refs, sop_class_uid=RT_PLAN_STORAGE, sop_instance_uid=uid, modality="RTPLAN",
                     series_instance_uid=generate_uid(), series_number=series_number, created=now)
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = refs.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""

    ds.RTPlanLabel = label[:16]
    ds.RTPlanName = label[:64]
    ds.RTPlanDate = now.strftime("%Y%m%d")
    ds.RTPlanTime = now.strftime("%H%M%S")
    ds.RTPlanGeometry = "PATIENT"
    structure_set = Dataset()
    structure_set.ReferencedSOPClassUID = RT_STRUCTURE_SET_STORAGE
    structure_set.ReferencedSOPInstanceUID = refs.structure_set_sop_instance_uid

    ds.ReferencedStructureSetSequence = [structure_set]
    references = []
    for number, rx in enumerate(prescriptions, start=1):
        item = Dataset()
        item.DoseReferenceNumber = number
        item.DoseReferenceUID = generate_uid()
        item.DoseReferenceStructureType = "SITE"
        item.DoseReferenceDescription = rx.target[:64]
        item.DoseReferenceType = "TARGET"
        item.TargetPrescriptionDose = format_ds(rx.dose_gy)
        references.append(item)
    if references:
        ds.DoseReferenceSequence = references
    ds.ToleranceTableSequence = [_tolerance_dataset(tolerance_table)]
    setup = Dataset()
    setup.PatientSetupNumber = 1
    setup.PatientPosition = refs.patient_position
    ds.PatientSetupSequence = [setup]

    group = Dataset()
    group.FractionGroupNumber = 1
    group.NumberOfFractionsPlanned = fractions
    group.NumberOfBeams = len(beams)
    group.NumberOfBrachyApplicationSetups = 0
    referenced = []
    for number, b in enumerate(beams, start=1):
        item = Dataset()
        item.ReferencedBeamNumber = number
        if b.dose_gy is not None:
            item.BeamDose = format_ds(b.dose_gy)
        item.BeamMeterset = format_ds(b.mu)
        referenced.append(item)
    group.ReferencedBeamSequence = referenced
    ds.FractionGroupSequence = [group]
    ds.BeamSequence = [
        _beam_dataset(number, b, machine, machine_name or machine.name,
                      machine.nominal_energy_mv if energy_mv is None else energy_mv,
                      machine.dose_rate_mu_per_min if dose_rate_mu_per_min is None
                      else dose_rate_mu_per_min,
                      None if body is None else source_to_surface_mm(*body, b.beam, machine.sad_mm))
        for number, b in enumerate(beams, start=1)]
    ds.ApprovalStatus = "UNAPPROVED"

    write_file_atomic(Path(path), lambda tmp: save(ds, tmp), overwrite=overwrite)
    return uid


def _device_states(points: Sequence[Dataset]) -> list[dict[str, np.ndarray]]:
    """Collimator positions in force at each control point, by device type.

    A control point after the first carries BeamLimitingDevicePositionSequence only for devices
    that move (DICOM PS3.3 C.8.8.14.5), so positions carry forward from earlier points.
    """
    state: dict[str, np.ndarray] = {}
    states = []
    for point in points:
        for item in point.get("BeamLimitingDevicePositionSequence", None) or []:
            if "LeafJawPositions" in item:
                state[str(item.get("RTBeamLimitingDeviceType", ""))] = np.asarray(
                    item.LeafJawPositions, dtype=float)
        states.append(dict(state))
    return states


def _cumulative_weight(point: Dataset, k: int, where: str) -> float:
    value = point.get("CumulativeMetersetWeight")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: control point {k} has no cumulative meterset weight "
                         f"({value!r})") from None


def _moves(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> bool:
    """Whether a collimator given in both states moves by more than STILL_TOLERANCE_MM."""
    return any(before[d].shape != after[d].shape
               or np.max(np.abs(after[d] - before[d]), initial=0.0) > STILL_TOLERANCE_MM
               for d in before.keys() & after.keys())


def beam_on_intervals(beam: Dataset, where: str) -> list[tuple[int, float, dict[str, np.ndarray]]]:
    """The intervals between consecutive control points of a beam in which meterset is delivered.

    Step-and-shoot as BeamType STATIC (planner's :func:`write_rt_plan`) and as BeamType DYNAMIC
    (how e.g. Eclipse exports it) are the same sequence: the cumulative meterset weight increases
    between two control points with the same aperture, and the collimator moves only between
    control points of equal weight (beam off). Each interval with a weight increase is one
    segment; intervals without one deliver nothing, whatever moves in them.

    Parameters
    ----------
    beam : pydicom Dataset
        An item of BeamSequence (its BeamType and ControlPointSequence are read).
    where : str
        Prefix of the error messages, e.g. ``"plan.dcm: beam 'G000'"``.

    Returns
    -------
    list of (k, weight_increase, positions)
        For each interval from control point ``k`` to ``k + 1`` with an increase of the
        cumulative meterset weight (in the beam's weight units, > 0): the collimator positions
        in force (device type to (n,) float array, mm; MLCX bank A then bank B), carried forward
        from earlier control points where a device is not listed.

    Raises
    ------
    InputError
        A control point without a numeric cumulative meterset weight; a weight that decreases;
        a collimator that moves by more than ``STILL_TOLERANCE_MM`` while the weight increases
        (a sliding-window delivery, which step-and-shoot segments cannot represent).
    """
    points = beam.get("ControlPointSequence", None) or []
    weights = [_cumulative_weight(point, k, where) for k, point in enumerate(points)]
    states = _device_states(points)
    beam_type = str(beam.get("BeamType", "") or "")
    intervals = []
    for k in range(len(points) - 1):
        increase = weights[k + 1] - weights[k]
        if increase < 0:
            raise InputError(f"{where}: cumulative meterset weight decreases from "
                             f"{weights[k]:g} to {weights[k + 1]:g} at control point {k + 1}")
        if increase == 0:
            continue  # beam off: the collimator may travel to the next aperture
        if _moves(states[k], states[k + 1]):
            raise InputError(f"{where}: {beam_type} beam whose collimator moves while the beam "
                             f"is on (control points {k}-{k + 1}, sliding window); planner "
                             "reads step-and-shoot beams only")
        intervals.append((k, increase, states[k]))
    return intervals


def _device_values(state: dict[str, np.ndarray], path: Path, where: str) -> dict[str, np.ndarray]:
    missing = {"ASYMX", "ASYMY", "MLCX"} - set(state)
    if missing:
        raise InputError(f"{path}: {where} lacks {', '.join(sorted(missing))} positions")
    return state


def _read_beam(item: Dataset, path: Path, meterset: float, beam_dose: float | None) -> PlanBeam:
    name = str(item.get("BeamName", item.BeamNumber))
    where = f"beam {name!r}"
    if item.get("BeamType") not in ("STATIC", "DYNAMIC"):
        raise InputError(f"{path}: {where} is {item.get('BeamType')!r}, planner reads STATIC "
                         "and DYNAMIC beams only")
    points = item.ControlPointSequence
    first = points[0]
    beam = Beam(gantry_deg=float(first.GantryAngle),
                collimator_deg=float(first.BeamLimitingDeviceAngle),
                couch_deg=float(first.PatientSupportAngle),
                isocenter_xyz_mm=tuple(float(v) for v in first.IsocenterPosition))
    final = float(item.get("FinalCumulativeMetersetWeight", 1.0))
    intervals = beam_on_intervals(item, f"{path}: {where}")
    if not intervals:
        raise InputError(f"{path}: {where}: the cumulative meterset weight never increases (no "
                         "segment)")
    segments = []
    for k, increase, state in intervals:
        devices = _device_values(state, path, f"{where} control points {k}-{k + 1}")
        mlc = devices["MLCX"]
        segments.append(Segment(jaw_x_mm=tuple(devices["ASYMX"]), jaw_y_mm=tuple(devices["ASYMY"]),
                                leaf_positions_mm=np.stack([mlc[:mlc.size // 2],
                                                            mlc[mlc.size // 2:]], axis=1),
                                mu=meterset * increase / final))
    return PlanBeam(name, beam, tuple(segments), beam_dose)


def read_rt_plan(path: str | Path) -> RtPlan:
    """Read a step-and-shoot RT Plan (as written by :func:`write_rt_plan`, or BeamType DYNAMIC).

    Each interval of control points with a weight increase (:func:`beam_on_intervals`) is one
    segment; its MU are the beam meterset times the interval's share of the final cumulative
    meterset weight.

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    RtPlan

    Raises
    ------
    InputError
        ``"<path>: ..."`` when the file is not a readable RT Plan of step-and-shoot beams
        (STATIC or DYNAMIC, no collimator moving while the meterset weight increases) with jaw
        and MLCX positions in force for every segment (given in the segment's control point or
        carried forward from an earlier one).
    """
    path = Path(path)
    ds = read_modality(path, "RTPLAN", "RT Plan")
    try:
        group = ds.FractionGroupSequence[0]
        metersets = {int(r.ReferencedBeamNumber): (float(r.BeamMeterset),
                                                   float(r.BeamDose) if "BeamDose" in r else None)
                     for r in group.ReferencedBeamSequence}
        beams = tuple(_read_beam(item, path, *metersets[int(item.BeamNumber)])
                      for item in ds.BeamSequence)
        first = ds.BeamSequence[0]
        cp0 = first.ControlPointSequence[0]
        mlc = next(d for d in first.BeamLimitingDeviceSequence
                   if d.RTBeamLimitingDeviceType == "MLCX")
        table = ds.ToleranceTableSequence[0] if "ToleranceTableSequence" in ds else None
        tolerance = ToleranceTable() if table is None else _read_tolerance(table)
        return RtPlan(
            beams=beams,
            fractions=int(group.NumberOfFractionsPlanned),
            machine_name=str(first.TreatmentMachineName),
            energy_mv=float(cp0.NominalBeamEnergy),
            dose_rate_mu_per_min=float(cp0.DoseRateSet),
            sad_mm=float(first.SourceAxisDistance),
            leaf_boundaries_mm=np.asarray(mlc.LeafPositionBoundaries, dtype=float),
            tolerance_table=tolerance,
            label=str(ds.RTPlanLabel),
            sop_instance_uid=str(ds.SOPInstanceUID),
            frame_of_reference_uid=str(ds.FrameOfReferenceUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            patient_id=str(ds.PatientID),
            structure_set_sop_instance_uid=str(
                ds.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID),
        )
    except InputError:
        raise
    except (AttributeError, KeyError, IndexError, StopIteration, ValueError, TypeError) as error:
        raise InputError(f"{path}: incomplete RT Plan ({first_line(error)})") from error


def _read_tolerance(item: Dataset) -> ToleranceTable:
    devices = {str(d.RTBeamLimitingDeviceType): float(d.BeamLimitingDevicePositionTolerance)
               for d in item.get("BeamLimitingDeviceToleranceSequence", [])}
    default = ToleranceTable()
    return ToleranceTable(
        label=str(item.get("ToleranceTableLabel", default.label)),
        gantry_deg=float(item.get("GantryAngleTolerance", default.gantry_deg)),
        collimator_deg=float(item.get("BeamLimitingDeviceAngleTolerance", default.collimator_deg)),
        couch_deg=float(item.get("PatientSupportAngleTolerance", default.couch_deg)),
        table_top_vertical_mm=float(item.get("TableTopVerticalPositionTolerance",
                                             default.table_top_vertical_mm)),
        table_top_longitudinal_mm=float(item.get("TableTopLongitudinalPositionTolerance",
                                                 default.table_top_longitudinal_mm)),
        table_top_lateral_mm=float(item.get("TableTopLateralPositionTolerance",
                                            default.table_top_lateral_mm)),
        jaw_mm=devices.get("ASYMX", default.jaw_mm),
        leaf_mm=devices.get("MLCX", default.leaf_mm),
    )
