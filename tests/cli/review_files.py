"""DICOM files for the ``planner review`` / ``planner dvh`` tests: a TG-119 C-shape at 6 mm with
CT + RTSTRUCT, an RT Plan of three beams and a plan-like synthetic RT Dose."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage

from dose.beams import Beam
from dose.machine import load_machine
from dose.segments import open_field
from planner.io.dicom_patient import STRUCTURE_SET_FILE, write_dicom_patient
from planner.io.rtdose import write_rt_dose
from planner.io.rtplan import PlanBeam, write_rt_plan
from planner.patient import Patient
from planner.phantoms import cshape_phantom


@dataclass(frozen=True)
class ReviewFiles:
    patient: Patient
    dose_gy: np.ndarray
    ct: Path
    rtstruct: Path
    rtplan: Path
    rtdose: Path


def write_review_files(root: Path) -> ReviewFiles:
    patient = cshape_phantom(voxel_mm=6.0, body_size_mm=(120.0, 120.0, 160.0), margin_mm=6.0)
    refs = write_dicom_patient(patient, root / "ct")
    machine = load_machine()
    beams = [PlanBeam(f"G{g:03d}", Beam(g, 0.0, 0.0, (0.0, 0.0, 0.0)),
                      tuple(open_field(machine, (-40.0 + 6 * k, 40.0), (-40.0, 40.0 - 5 * k),
                                       20.0 + k) for k in range(3)))
             for g in (0, 120, 240)]
    uid = write_rt_plan(root / "RP.dcm", beams, machine, refs, fractions=25,
                        prescriptions=patient.prescriptions, label="C-shape")
    # The target grown by one voxel and blurred: plan-like coverage, a fall-off into the core.
    grown = scipy.ndimage.binary_dilation(patient.structure("PTV").mask).astype(float)
    dose = (53.0 * scipy.ndimage.gaussian_filter(grown, 0.7) + 2.0).astype(np.float32)
    write_rt_dose(root / "RD.dcm", dose, patient.grid, refs, rt_plan_sop_instance_uid=uid)
    return ReviewFiles(patient, dose, root / "ct", root / "ct" / STRUCTURE_SET_FILE,
                       root / "RP.dcm", root / "RD.dcm")
