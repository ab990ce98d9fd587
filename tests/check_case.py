"""Plans for the ``planner check`` tests (tests/planner/test_check_plan.py and
tests/cli/test_check.py): a TG-119 C-shape on a coarse grid with five step-and-shoot beams of hand-made apertures, its dose
from ``dose.segment_dose``, exported with ``write_plan_dicom`` (RP, RD, CT, RS in one folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dose import Beam, load_beam_model, load_machine, open_field, segment_dose
from dose.segments import Segment
from planner.io.plan_dicom import RT_PLAN_FILE, write_plan_dicom
from planner.io.rtplan import PlanBeam
from planner.patient import Patient
from planner.phantoms import cshape_phantom

MACHINE = load_machine()
GANTRY_DEG = (0.0, 72.0, 144.0, 216.0, 288.0)


def half_field(side: int, mu: float) -> Segment:
    """Leaves open on one side of the core only (``side`` -1: X1 half, +1: X2 half): the C-shape
    target lies around the core axis, which every beam here sees along its Y axis."""
    x = (-40.0, -12.0) if side < 0 else (12.0, 40.0)
    return open_field(MACHINE, x, (-42.0, 42.0), mu)


def cshape_plan(voxel_mm: float = 5.0) -> tuple[Patient, list[PlanBeam], np.ndarray]:
    """The phantom, five beams (an open field and the two halves beside the core, MU per
    fraction) and the plan's dose (25 fractions, Gy) on the phantom's grid."""
    patient = cshape_phantom(voxel_mm=voxel_mm)
    segments = (open_field(MACHINE, (-40.0, 40.0), (-42.0, 42.0), 25.0), half_field(-1, 35.0),
                half_field(+1, 35.0))
    beams = [PlanBeam(f"G{g:03.0f}", Beam(g, 0.0, 0.0, (0.0, 0.0, 0.0)), segments)
             for g in GANTRY_DEG]
    dose = segment_dose(patient.density, patient.grid, patient.grid, [b.beam for b in beams],
                        [b.segments for b in beams], MACHINE, load_beam_model())
    return patient, beams, np.asarray(dose) * patient.prescriptions[0].fractions


def write_plan(folder: Path, patient: Patient, beams: list[PlanBeam], dose_gy: np.ndarray) -> Path:
    """Export the plan into ``folder``; returns the RT Plan's path."""
    write_plan_dicom(folder, patient, beams, MACHINE, dose_gy, patient.grid,
                     fractions=patient.prescriptions[0].fractions,
                     prescriptions=patient.prescriptions)
    return folder / RT_PLAN_FILE
