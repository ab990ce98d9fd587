"""Independent dose check of an RT Plan: recompute its dose from the control points and compare.

The secondary dose check clinics run before treatment: the plan's beams and segments (jaws,
MLC leaves, MU) are read from the RT Plan, the dose is recomputed on the RT Dose's grid with
planner's own engine (:func:`dose.segment_dose`) on the density of the plan's CT, and the two
doses are compared with a global gamma index of 3 % / 2 mm above 10 % of the RT Dose's maximum
and with per-structure DVH statistics. The verdict follows AAPM TG-218 (Miften et al., Med Phys
45:e53, 2018): at least 95 % of the points pass.

What can be checked: photon step-and-shoot plans at 6 MV, the energy of planner's beam model,
with an MLCX and ASYMX/ASYMY jaw positions in each segment and no wedge, compensator, block or
flattening-filter-free mode, on an axial CT. Step-and-shoot is read whether labelled BeamType
STATIC or DYNAMIC (as e.g. Eclipse exports it): every interval of control points in which the
cumulative meterset weight increases is one aperture held while its meterset is delivered, and
the leaves move only between control points of equal weight
(:func:`planner.io.rtplan.beam_on_intervals`). Recomputing these intervals as static segments
is exact only when nothing moves while the beam is on, so arcs (VMAT) and sliding-window plans
(a collimator moving while the weight increases) are refused, as are electron and ion plans.
The machine is planner's generic 6 MV linac with the plan's leaf boundaries and source-axis
distance (leaf transmission and beam model are planner's).

How independent the check is: for another system's plan, the dose algorithm differs from the
one that made the RT Dose. For a plan of planner's own the algorithm is the same, and the check
verifies the export: that the apertures, MU and geometry read back from the RT Plan deliver the
RT Dose that was written beside it (a wrong MU, beam or grid shows), not the beam model.

Files: by default the RT Dose that references the plan (ReferencedRTPlanSequence), the RT
Structure Set the plan references (ReferencedStructureSetSequence) and the CT series of the
plan's frame of reference are searched for in the plan's folder (with its subfolders), then in
the parent folder and its direct subfolders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from dose import load_beam_model, load_machine, segment_dose
from dose._xp import resolve_device, to_device
from dose.gamma import gamma_index, gamma_statistics
from dose.grid import Grid
from planner.errors import InputError
from planner.io._atomic import write_json_atomic
from planner.io._dicom import (
    CT_IMAGE_STORAGE,
    MANUFACTURER,
    RT_STRUCTURE_SET_STORAGE,
    read_dicom,
    read_header,
)
from planner.io.dicom_patient import read_dicom_patient
from planner.io.rtdose import read_rt_dose
from planner.io.rtplan import RtPlan, beam_on_intervals, read_rt_plan
from planner.review.dvh import DoseStatistics, resample_dose, structure_dvhs

#: Gamma criteria and tolerance of AAPM TG-218 (global dose difference, low-dose threshold).
GAMMA_DOSE_PERCENT = 3.0
GAMMA_DTA_MM = 2.0
GAMMA_THRESHOLD = 0.10
TG218_TOLERANCE = 0.95
#: The energies planner's beam model covers, MV (data/beam_model: 6 MV only).
SUPPORTED_ENERGIES_MV = (6.0,)
#: DVH statistics compared per structure: (label, DoseStatistics attribute).
DVH_METRICS = (("Dmean", "mean_gy"), ("D95", "d95_gy"), ("D2", "d2_gy"),
               ("D0.1cc", "d0_1cc_gy"))

RT_ION_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.8"  # DICOM PS3.4 Annex B.5


@dataclass(frozen=True)
class CheckFiles:
    """The files a check read: the plan, its RT Dose, its RT Structure Set and its CT folder."""

    rtplan: Path
    rtdose: Path
    rtstruct: Path
    ct: Path


@dataclass(frozen=True)
class StructureDifference:
    """DVH statistics of one structure under the RT Dose and under the recomputed dose.

    Parameters
    ----------
    name : str
    planned, recomputed : DoseStatistics
        Of the RT Dose and of the recomputed dose, both interpolated onto the CT grid.
    """

    name: str
    planned: DoseStatistics
    recomputed: DoseStatistics

    def difference_gy(self, attribute: str) -> float:
        """Recomputed minus planned value of one statistic (e.g. ``"d95_gy"``), Gy."""
        return float(getattr(self.recomputed, attribute) - getattr(self.planned, attribute))


@dataclass(frozen=True)
class CheckResult:
    """What :func:`check_plan` finds.

    Parameters
    ----------
    files : CheckFiles
    plan : RtPlan
    pass_rate : float
        Share (0..1) of the points above the threshold with gamma <= 1 (NaN if none).
    points : int
        Number of RT Dose voxels above ``GAMMA_THRESHOLD`` of its maximum (those with a gamma).
    structures : tuple of StructureDifference
        One per structure with voxels on the CT grid, in structure set order.
    normalisation_gy : float, Gy
        The dose the DVH differences are given in per cent of: the plan's prescription
        (largest TargetPrescriptionDose), or the RT Dose's maximum when the plan has none.
    normalisation : str
        ``"prescription"`` or ``"RT Dose maximum"``.
    dose_grid : Grid
        The RT Dose's grid, on which the dose was recomputed.
    recomputed_dose_gy : (nz, ny, nx) float32 array, Gy
        The recomputed dose of the whole plan (numpy).
    gamma : (nz, ny, nx) float32 array
        Gamma per voxel of the RT Dose (NaN below the threshold).
    dose_manufacturer : str
        Manufacturer of the RT Dose (the system whose engine computed it), "" if not given.
    """

    files: CheckFiles
    plan: RtPlan = field(repr=False)
    pass_rate: float
    points: int
    structures: tuple[StructureDifference, ...]
    normalisation_gy: float
    normalisation: str
    dose_grid: Grid
    recomputed_dose_gy: np.ndarray = field(repr=False)
    gamma: np.ndarray = field(repr=False)
    dose_manufacturer: str = ""

    @property
    def same_engine(self) -> bool:
        """Whether the RT Dose was computed by planner, whose engine the check uses: the check
        then verifies the export (apertures, MU, geometry), not the dose algorithm."""
        return self.dose_manufacturer == MANUFACTURER

    @property
    def fail_share(self) -> float:
        """Share (0..1) of the points with gamma > 1."""
        return 1.0 - self.pass_rate

    @property
    def passed(self) -> bool:
        """Whether the pass rate meets the TG-218 tolerance (>= 95 %)."""
        return bool(self.pass_rate >= TG218_TOLERANCE)

    def difference_percent(self, difference: StructureDifference, attribute: str) -> float:
        """A statistic's difference in per cent of :attr:`normalisation_gy`."""
        return 100.0 * difference.difference_gy(attribute) / self.normalisation_gy


def _where(path: Path, beam: Dataset) -> str:
    return f"{path}: beam {str(beam.get('BeamName', '') or beam.get('BeamNumber', '?'))!r}"


def _check_beam(path: Path, beam: Dataset) -> None:
    """Raise InputError unless ``beam`` is a 6 MV photon step-and-shoot beam with an MLCX."""
    where = _where(path, beam)
    radiation = str(beam.get("RadiationType", "") or "")
    if radiation != "PHOTON":
        raise InputError(f"{where}: RadiationType {radiation!r}; planner check recomputes PHOTON "
                         "beams only")
    points = beam.get("ControlPointSequence", []) or []
    if not points:
        raise InputError(f"{where}: no control points")
    energy = points[0].get("NominalBeamEnergy")
    if energy is None or float(energy) not in SUPPORTED_ENERGIES_MV:
        raise InputError(f"{where}: nominal energy {energy} MV; planner's beam model is "
                         f"{', '.join(f'{e:g}' for e in SUPPORTED_ENERGIES_MV)} MV only")
    for mode in beam.get("PrimaryFluenceModeSequence", []) or []:
        if str(mode.get("FluenceMode", "STANDARD")) != "STANDARD":
            raise InputError(f"{where}: fluence mode {mode.get('FluenceModeID', 'NON_STANDARD')} "
                             "(e.g. flattening-filter free); planner's beam model is the "
                             "flattened 6 MV beam")
    for count in ("NumberOfWedges", "NumberOfCompensators", "NumberOfBlocks"):
        if int(beam.get(count, 0) or 0) > 0:
            raise InputError(f"{where}: {count} is {int(beam.get(count))}; planner's dose engine "
                             "models jaws and MLC only")
    gantry = float(points[0].get("GantryAngle", 0.0))
    for k, point in enumerate(points):
        direction = str(point.get("GantryRotationDirection", "NONE") or "NONE")
        if direction != "NONE":
            raise InputError(f"{where}: control point {k} rotates the gantry ({direction}): an arc "
                             "(VMAT) plan; planner check recomputes step-and-shoot plans only")
        if "GantryAngle" in point and abs(float(point.GantryAngle) - gantry) > 1e-6:
            raise InputError(f"{where}: gantry angle changes from {gantry:g} to "
                             f"{float(point.GantryAngle):g} deg at control point {k}: an arc "
                             "(VMAT) plan; planner check recomputes step-and-shoot plans only")
    devices = {str(d.RTBeamLimitingDeviceType) for d in beam.get("BeamLimitingDeviceSequence", [])}
    if "MLCX" not in devices:
        found = "an MLCY, which planner's machine does not have" if "MLCY" in devices else \
            "no MLC"
        raise InputError(f"{where}: {found} (devices: {', '.join(sorted(devices)) or 'none'}); "
                         "planner check needs MLCX leaf positions")
    if not any(str(item.get("RTBeamLimitingDeviceType", "")) == "MLCX"
               and "LeafJawPositions" in item
               for item in points[0].get("BeamLimitingDevicePositionSequence", []) or []):
        raise InputError(f"{where}: control point 0 has no MLCX leaf positions")
    beam_type = str(beam.get("BeamType", "") or "")
    if beam_type not in ("STATIC", "DYNAMIC"):
        raise InputError(f"{where}: BeamType {beam_type!r}, expected STATIC or DYNAMIC")
    # Refuses a collimator moving while the meterset weight increases (sliding window).
    beam_on_intervals(beam, where)


def check_plan_dataset(ds: Dataset, path: str | Path) -> None:
    """Refuse what :func:`check_plan` cannot recompute exactly, with one line naming the file.

    Parameters
    ----------
    ds : pydicom Dataset
        The RT Plan as read from ``path``.
    path : str or Path
        For the message.

    Raises
    ------
    InputError
        Not an RT Plan; an ion (proton) plan; an electron beam; an energy other than 6 MV; a
        non-standard fluence mode (FFF); wedges, compensators or blocks; an arc (gantry
        rotation direction other than NONE, or a gantry angle that changes between control
        points); a beam without MLCX (no MLC, or an MLCY) or without leaf positions; BeamType
        other than STATIC or DYNAMIC; a collimator that moves while the meterset weight
        increases (sliding window), a missing or decreasing cumulative meterset weight.
    """
    path = Path(path)
    if ds.get("SOPClassUID") == RT_ION_PLAN_STORAGE:
        raise InputError(f"{path}: an RT Ion Plan (protons or ions); planner check recomputes "
                         "6 MV photon plans only")
    if ds.get("Modality") != "RTPLAN":
        raise InputError(f"{path}: not an RT Plan (Modality {ds.get('Modality')!r})")
    beams = ds.get("BeamSequence", []) or []
    if not beams:
        raise InputError(f"{path}: RT Plan without beams (BeamSequence)")
    for beam in beams:
        _check_beam(path, beam)


def _search_stages(plan_path: Path) -> list[list[Path]]:
    """Files to search, nearest first: the plan's folder (all depths); then its parent and the
    parent's direct subfolders other than the plan's (a CT/, RTSTRUCT/, RTDOSE/ layout)."""
    folder = plan_path.resolve().parent
    stages = [[p for p in sorted(folder.rglob("*")) if p.is_file()]]
    parent = folder.parent
    if parent != folder:
        files = []
        for path in sorted(parent.iterdir()):
            if path.is_file():
                files.append(path)
            elif path.is_dir() and path != folder:
                files.extend(p for p in sorted(path.iterdir()) if p.is_file())
        stages.append(files)
    return stages


def _searched(plan_path: Path) -> str:
    folder = plan_path.resolve().parent
    return f"{folder} or {folder.parent}"


def _references_plan(header: Dataset, plan_uid: str) -> bool:
    return any(str(item.get("ReferencedSOPInstanceUID", "")) == plan_uid
               for item in header.get("ReferencedRTPlanSequence", []) or [])


def locate_files(rtplan: str | Path, plan: RtPlan, *, rtdose: str | Path | None = None,
                 ct: str | Path | None = None, rtstruct: str | Path | None = None) -> CheckFiles:
    """The RT Dose, RT Structure Set and CT folder of a plan: as given, or found beside it.

    Parameters
    ----------
    rtplan : str or Path
    plan : RtPlan
        As read from ``rtplan``.
    rtdose, rtstruct : str or Path, optional
        Files to use instead of searching.
    ct : str or Path, optional
        Folder holding the CT series, instead of searching.

    Returns
    -------
    CheckFiles
        ``ct`` is the folder of the CT slices found (they must lie in one folder).

    Raises
    ------
    InputError
        Nothing found (naming the plan and the folders searched, and the option that gives the
        file), several candidates, or CT slices spread over several folders.
    """
    rtplan = Path(rtplan)
    for option, given, is_kind in (("--rtdose", rtdose, Path.is_file),
                                   ("--rtstruct", rtstruct, Path.is_file),
                                   ("--ct", ct, Path.is_dir)):
        if given is not None and not is_kind(Path(given)):
            kind = "folder" if option == "--ct" else "file"
            raise InputError(f"{given}: no such {kind} ({option})")
    found_doses: list[tuple[Path, str]] = []
    found_structures: list[Path] = []
    ct_series: dict[str, list[Path]] = {}
    for files in _search_stages(rtplan):
        # The plan's own folder first: the parent is searched only for what is still missing.
        want_dose = rtdose is None and not found_doses
        want_structures = rtstruct is None and not found_structures
        want_ct = ct is None and not ct_series
        if not (want_dose or want_structures or want_ct):
            break
        for path in files:
            header = read_header(path)
            if header is None:
                continue
            sop_class = str(header.get("SOPClassUID", ""))
            if want_dose and header.get("Modality") == "RTDOSE" and \
                    _references_plan(header, plan.sop_instance_uid):
                found_doses.append((path, str(header.get("DoseSummationType", ""))))
            elif want_structures and sop_class == RT_STRUCTURE_SET_STORAGE and \
                    str(header.get("SOPInstanceUID", "")) == plan.structure_set_sop_instance_uid:
                found_structures.append(path)
            elif want_ct and sop_class == CT_IMAGE_STORAGE and \
                    str(header.get("FrameOfReferenceUID", "")) == plan.frame_of_reference_uid:
                ct_series.setdefault(str(header.get("SeriesInstanceUID", "")), []).append(path)
    searched = _searched(rtplan)
    if rtdose is None:
        # A plan may have its total dose and per-beam doses beside it: the total is compared.
        totals = [p for p, kind in found_doses if kind == "PLAN"] or [p for p, _ in found_doses]
        if not totals:
            raise InputError(f"{rtplan}: no RT Dose referencing this plan "
                             f"({plan.sop_instance_uid}) in {searched}; give it with --rtdose")
        if len(set(totals)) > 1:
            raise InputError(f"{rtplan}: {len(totals)} RT Doses reference this plan "
                             f"({', '.join(map(str, totals))}); choose one with --rtdose")
        rtdose = totals[0]
    if rtstruct is None:
        if not found_structures:
            raise InputError(f"{rtplan}: missing structure set: RT Structure Set "
                             f"{plan.structure_set_sop_instance_uid} that the plan references is "
                             f"not in {searched}; give it with --rtstruct")
        rtstruct = found_structures[0]
    if ct is None:
        if not ct_series:
            raise InputError(f"{rtplan}: no CT images of the plan's frame of reference "
                             f"{plan.frame_of_reference_uid} in {searched}; give the CT folder "
                             "with --ct")
        if len(ct_series) > 1:
            raise InputError(f"{rtplan}: CT images of {len(ct_series)} series share the plan's "
                             "frame of reference; give the CT folder with --ct")
        folders = {p.parent for p in next(iter(ct_series.values()))}
        if len(folders) > 1:
            raise InputError(f"{rtplan}: the plan's CT slices lie in {len(folders)} folders; "
                             "give the CT folder with --ct")
        ct = folders.pop()
    return CheckFiles(rtplan, Path(rtdose), Path(rtstruct), Path(ct))


def _prescription_gy(ds: Dataset) -> float | None:
    doses = [float(item.TargetPrescriptionDose) for item in ds.get("DoseReferenceSequence", [])
             if item.get("TargetPrescriptionDose") not in (None, "")]
    return max(doses) if doses and max(doses) > 0 else None


def _fractions_in_dose(path: Path, header: Dataset, plan: RtPlan) -> int:
    """How many fractions of the plan the RT Dose holds (DoseSummationType PLAN or FRACTION)."""
    kind = str(header.get("DoseSummationType", "") or "")
    if kind == "PLAN":
        return plan.fractions
    if kind == "FRACTION":
        return 1
    raise InputError(f"{path}: DoseSummationType {kind!r}; planner check compares the dose of "
                     "the whole plan (PLAN) or of one fraction (FRACTION)")


def check_plan(rtplan: str | Path, *, rtdose: str | Path | None = None,
               ct: str | Path | None = None, rtstruct: str | Path | None = None,
               device: str = "auto") -> CheckResult:
    """Recompute an RT Plan's dose and compare it with its RT Dose (gamma, DVH differences).

    Parameters
    ----------
    rtplan : str or Path
        RT Plan file: photon, 6 MV, step-and-shoot (see the module notes).
    rtdose : str or Path, optional
        RT Dose of the plan (DoseSummationType PLAN or FRACTION, in Gy); by default the one
        referencing the plan, found beside it.
    ct : str or Path, optional
        Folder holding the plan's CT series; by default found beside the plan.
    rtstruct : str or Path, optional
        RT Structure Set; by default the one the plan references, found beside it.
    device : {"auto", "cpu", "cuda"}
        Where the dose and the gamma are computed.

    Returns
    -------
    CheckResult

    Raises
    ------
    InputError
        One line naming the file: what :func:`check_plan_dataset` refuses, unreadable files,
        files not found, an RT Dose of another plan or another frame of reference, a CT or
        structure set of another frame of reference.
    """
    try:
        where = resolve_device(device)
    except (RuntimeError, ValueError) as error:  # no GPU for "cuda", or an unknown name
        raise InputError(f"device {device!r}: {error}") from None
    rtplan = Path(rtplan)
    if not rtplan.is_file():
        raise InputError(f"{rtplan}: no such file")
    ds = read_dicom(rtplan)
    check_plan_dataset(ds, rtplan)
    plan = read_rt_plan(rtplan)
    files = locate_files(rtplan, plan, rtdose=rtdose, ct=ct, rtstruct=rtstruct)
    header = read_header(files.rtdose)
    if header is None or header.get("Modality") != "RTDOSE":
        modality = None if header is None else header.get("Modality")
        raise InputError(f"{files.rtdose}: not an RT Dose (Modality {modality!r})")
    referenced = [str(i.get("ReferencedSOPInstanceUID", ""))
                  for i in header.get("ReferencedRTPlanSequence", []) or []]
    if referenced and plan.sop_instance_uid not in referenced:
        raise InputError(f"{files.rtdose}: the RT Dose references plan {referenced[0]}, not "
                         f"{plan.sop_instance_uid} of {rtplan}")
    dose_frame = str(header.get("FrameOfReferenceUID", ""))
    if dose_frame != plan.frame_of_reference_uid:
        raise InputError(f"{files.rtdose}: frame of reference {dose_frame or '(none)'} differs "
                         f"from {plan.frame_of_reference_uid} of the plan {rtplan}")
    fractions = _fractions_in_dose(files.rtdose, header, plan)
    planned, dose_grid = read_rt_dose(files.rtdose)
    if not planned.max() > 0:
        raise InputError(f"{files.rtdose}: the dose is zero everywhere")
    patient = read_dicom_patient(files.ct, structure_set=files.rtstruct)
    ct_frame = patient.dicom.frame_of_reference_uid if patient.dicom else ""
    if ct_frame != plan.frame_of_reference_uid:
        raise InputError(f"{files.ct}: CT frame of reference {ct_frame} differs from "
                         f"{plan.frame_of_reference_uid} of the plan {rtplan}")

    # planner's 6 MV linac with the plan's own leaf boundaries and source-axis distance.
    machine = dataclasses.replace(load_machine(), name=plan.machine_name, sad_mm=plan.sad_mm,
                                  leaf_boundaries_mm=plan.leaf_boundaries_mm)
    recomputed = segment_dose(to_device(patient.density, where), patient.grid, dose_grid,
                              [b.beam for b in plan.beams], [b.segments for b in plan.beams],
                              machine, load_beam_model()) * fractions
    gamma = gamma_index(to_device(planned, where), recomputed, dose_grid.spacing_mm,
                        dose_percent=GAMMA_DOSE_PERCENT, dta_mm=GAMMA_DTA_MM,
                        threshold=GAMMA_THRESHOLD)
    pass_rate, points = gamma_statistics(gamma)
    recomputed = np.asarray(to_device(recomputed, "cpu"), dtype=np.float32)

    _, planned_stats = structure_dvhs(resample_dose(planned, dose_grid, patient.grid),
                                      patient.grid, patient.structures)
    _, recomputed_stats = structure_dvhs(resample_dose(recomputed, dose_grid, patient.grid),
                                         patient.grid, patient.structures)
    differences = tuple(StructureDifference(p.name, p, r)
                        for p, r in zip(planned_stats, recomputed_stats))
    prescription = _prescription_gy(ds)
    if prescription is None:
        normalisation_gy, normalisation = float(planned.max()), "RT Dose maximum"
    else:
        normalisation_gy, normalisation = prescription, "prescription"
    return CheckResult(files=files, plan=plan, pass_rate=pass_rate, points=points,
                       structures=differences, normalisation_gy=normalisation_gy,
                       normalisation=normalisation, dose_grid=dose_grid,
                       recomputed_dose_gy=recomputed,
                       gamma=np.asarray(to_device(gamma, "cpu")),
                       dose_manufacturer=str(header.get("Manufacturer", "") or ""))


def engine_note(result: CheckResult) -> str:
    """One sentence: whose engine computed the RT Dose, and so how independent the check is."""
    if result.same_engine:
        return ("The RT Dose was computed by planner, the engine of this check: it verifies the "
                "export (apertures, MU, geometry), not the dose algorithm")
    made_by = (f"{result.dose_manufacturer!r}" if result.dose_manufacturer
               else "a system that does not name itself (no Manufacturer)")
    return (f"The RT Dose was computed by {made_by}; planner's engine recomputed it (an "
            "independent dose algorithm)")


def format_check(result: CheckResult) -> str:
    """The check as plain text: files, gamma, per-structure DVH differences, verdict."""
    plan = result.plan
    lines = [f"RT Plan   {result.files.rtplan} ({len(plan.beams)} beams, {plan.mu:.1f} MU per "
             f"fraction, {plan.fractions} fractions)",
             f"RT Dose   {result.files.rtdose}",
             f"RTSTRUCT  {result.files.rtstruct}",
             f"CT        {result.files.ct}",
             f"engine    {engine_note(result)}",
             f"gamma {GAMMA_DOSE_PERCENT:g} %/{GAMMA_DTA_MM:g} mm (global, "
             f"{100 * GAMMA_THRESHOLD:g} % threshold, {result.points} points): "
             f"{100 * result.pass_rate:.1f} % pass, {100 * result.fail_share:.1f} % with "
             "gamma > 1", ""]
    width = max([len(s.name) for s in result.structures] + [len("structure")])
    unit = "% Rx" if result.normalisation == "prescription" else "% max"
    lines.append(f"{'structure':<{width}}  {'metric':<7}{'RT Dose Gy':>11}{'check Gy':>10}"
                 f"{'diff Gy':>9}{'diff ' + unit:>11}")
    for s in result.structures:
        for k, (label, attribute) in enumerate(DVH_METRICS):
            lines.append(f"{s.name if k == 0 else '':<{width}}  {label:<7}"
                         f"{getattr(s.planned, attribute):11.2f}"
                         f"{getattr(s.recomputed, attribute):10.2f}"
                         f"{s.difference_gy(attribute):+9.2f}"
                         f"{result.difference_percent(s, attribute):+11.2f}")
    lines.append(f"({unit}: per cent of the {result.normalisation}, "
                 f"{result.normalisation_gy:.2f} Gy)")
    verdict = "PASS" if result.passed else "FAIL"
    lines.append(f"{verdict}: {100 * result.pass_rate:.1f} % of the points pass gamma "
                 f"{GAMMA_DOSE_PERCENT:g} %/{GAMMA_DTA_MM:g} mm (TG-218 tolerance >= "
                 f"{100 * TG218_TOLERANCE:g} %)")
    return "\n".join(lines)


def check_summary(result: CheckResult) -> dict[str, Any]:
    """The check as plain data for JSON: files, criteria, gamma, DVH differences, verdict."""
    return {
        "files": {k: str(v) for k, v in dataclasses.asdict(result.files).items()},
        "plan": {"sop_instance_uid": result.plan.sop_instance_uid,
                 "beams": len(result.plan.beams), "mu_per_fraction": result.plan.mu,
                 "fractions": result.plan.fractions},
        "gamma": {"dose_percent": GAMMA_DOSE_PERCENT, "dta_mm": GAMMA_DTA_MM,
                  "normalisation": "global (RT Dose maximum)", "threshold": GAMMA_THRESHOLD,
                  "points": result.points, "pass_rate": result.pass_rate,
                  "fail_share": result.fail_share},
        "dvh_normalisation": {"kind": result.normalisation, "dose_gy": result.normalisation_gy},
        "structures": [
            {"name": s.name, "volume_cc": s.planned.volume_cc,
             **{label: {"rt_dose_gy": getattr(s.planned, attribute),
                        "recomputed_gy": getattr(s.recomputed, attribute),
                        "difference_gy": s.difference_gy(attribute),
                        "difference_percent": result.difference_percent(s, attribute)}
                for label, attribute in DVH_METRICS}}
            for s in result.structures],
        "rt_dose_manufacturer": result.dose_manufacturer,
        "same_engine": result.same_engine,
        "tolerance": TG218_TOLERANCE,
        "passed": result.passed,
    }


def write_check_json(path: str | Path, result: CheckResult, *, overwrite: bool = False) -> Path:
    """Write :func:`check_summary` as JSON, atomically.

    Raises
    ------
    InputError
        ``path`` exists and ``overwrite`` is false.
    """
    return write_json_atomic(Path(path), check_summary(result), overwrite=overwrite)
