"""One folder a treatment system can import: RT Plan and RT Dose, with the CT and RT Structure
Set they refer to when the patient did not come from DICOM."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dose.grid import Grid
from dose.machine import Machine
from planner.io._atomic import atomic_directory
from planner.io.dicom_patient import write_dicom_patient
from planner.io.rtdose import write_rt_dose
from planner.io.rtplan import PlanBeam, write_rt_plan
from planner.patient import DicomReferences, Patient, Structure

RT_PLAN_FILE = "RP.dcm"
RT_DOSE_FILE = "RD.dcm"


@dataclass(frozen=True)
class PlanFiles:
    """What :func:`write_plan_dicom` wrote.

    Parameters
    ----------
    folder : Path
    references : DicomReferences
        Patient, study, frame of reference, CT and structure set the plan refers to (the
        patient's own, or those of the CT and structure set written into ``folder``).
    rt_plan_sop_instance_uid, rt_dose_sop_instance_uid : str
    wrote_images : bool
        Whether the CT and structure set were written (the patient did not come from DICOM).
    """

    folder: Path
    references: DicomReferences
    rt_plan_sop_instance_uid: str
    rt_dose_sop_instance_uid: str
    wrote_images: bool


def with_body_outline(patient: Patient) -> Patient:
    """``patient`` with its possible-dose mask as an external structure ``BODY`` where it has no
    external contour (OpenKBP): the structure set then holds the body outline a treatment system
    expects, and what the plan called the body (e.g. ``Outside PTVs``) reads back the same."""
    if any(s.kind == "external" for s in patient.structures) or patient.possible_dose_mask is None:
        return patient
    names = {s.name for s in patient.structures}
    name = next(n for n in ("BODY", "External", "BODY_planner") if n not in names)
    return dataclasses.replace(patient, structures=patient.structures + (
        Structure(name, "external", patient.possible_dose_mask),))


def write_plan_dicom(out_dir: str | Path, patient: Patient, beams: Sequence[PlanBeam],
                     machine: Machine, dose_gy: np.ndarray, dose_grid: Grid, *, fractions: int,
                     dose_bits: int = 16, overwrite: bool = False,
                     **plan_options: Any) -> PlanFiles:
    """Write ``RP.dcm`` and ``RD.dcm`` (and ``CT.*.dcm`` + ``RS.dcm`` if needed) into a folder.

    A patient read from DICOM (``patient.dicom`` set, with its structure set) gets only the RT
    Plan and RT Dose, linked to its own CT and structure set. Any other patient (phantom,
    OpenKBP, matRad) gets its CT and structure set written beside them
    (:func:`planner.io.dicom_patient.write_dicom_patient`; a body outline added where it has
    none, :func:`with_body_outline`), so that the folder is complete.
    The folder appears complete or not at all.

    Parameters
    ----------
    out_dir : str or Path
        Must not exist unless ``overwrite``.
    patient : Patient
    beams : sequence of PlanBeam
        See :func:`planner.io.rtplan.write_rt_plan`.
    machine : Machine
    dose_gy : (nz, ny, nx) float array, Gy
        Dose of the whole plan on ``dose_grid``.
    dose_grid : Grid
    fractions : int
    dose_bits : {16, 32}
        RT Dose pixel size. 16 bits (the default) resolve 70 Gy to about 1e-3 Gy, far below any
        clinical tolerance, and are read by every validator (dicom3tools' dciodvfy stops on
        32-bit pixel data); 32 bits for readers that want the full float32 precision.
    overwrite : bool
        Replace an existing folder (the CLI's ``--force``).
    **plan_options
        Passed to :func:`planner.io.rtplan.write_rt_plan` (prescriptions, label, machine name,
        energy, dose rate, tolerance table).

    Returns
    -------
    PlanFiles

    Raises
    ------
    InputError
        ``out_dir`` exists and ``overwrite`` is false.
    ValueError
        As :func:`planner.io.rtplan.write_rt_plan` and :func:`planner.io.rtdose.write_rt_dose`.
    """
    references = patient.dicom
    own = references is not None and references.structure_set_sop_instance_uid is not None
    with atomic_directory(Path(out_dir), overwrite=overwrite) as folder:
        if not own:
            # The temporary folder is still empty: write_dicom_patient replaces it, atomically,
            # by one holding the CT series and the structure set.
            references = write_dicom_patient(with_body_outline(patient), folder, overwrite=True)
        # The outline the SSD is traced on: the body as the data gives it, else the CT's
        # voxels denser than air.
        body = patient.body_mask()
        plan_uid = write_rt_plan(folder / RT_PLAN_FILE, beams, machine, references,
                                 fractions=fractions,
                                 body=(patient.hu > -400.0 if body is None else body,
                                       patient.grid), **plan_options)
        dose_uid = write_rt_dose(folder / RT_DOSE_FILE, dose_gy, dose_grid, references,
                                 rt_plan_sop_instance_uid=plan_uid, bits_allocated=dose_bits)
    return PlanFiles(Path(out_dir), references, plan_uid, dose_uid, wrote_images=not own)
