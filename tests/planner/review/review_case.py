"""A small DICOM case for the review tests (see conftest.py): TG-119 C-shape at 4 mm, a
synthetic dose, and the files planner writes for them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.ndimage

from dose.grid import Grid
from planner.io.dicom_patient import STRUCTURE_SET_FILE, write_dicom_patient
from planner.io.rtdose import write_rt_dose
from planner.patient import Patient
from planner.phantoms import cshape_phantom

RX_GY = 50.0


@dataclass(frozen=True)
class Case:
    patient: Patient
    dose_gy: np.ndarray  # on patient.grid
    ct_dir: Path
    rtstruct: Path
    rtdose: Path          # the dose on the CT grid
    rtdose_coarse: Path   # the same dose field sampled on a coarser, shifted grid
    coarse_grid: Grid


def synthetic_dose(patient: Patient, grid: Grid) -> np.ndarray:
    """A smooth plan-like dose on ``grid``: the C-shaped target grown by one voxel and blurred
    (a 4 mm penumbra), about 53 Gy inside, falling off into the core, plus a lateral ramp of
    0-6 Gy so that every structure has a spread of doses."""
    grown = scipy.ndimage.binary_dilation(patient.structure("PTV").mask).astype(float)
    sigma = [4.0 / s for s in patient.grid.spacing_mm]
    field = 53.0 * scipy.ndimage.gaussian_filter(grown, sigma)
    z, y, x = np.meshgrid(*patient.grid.axes_mm(), indexing="ij")
    field += 6.0 * (x - x.min()) / np.ptp(x)
    # Sample the analytic field at the other grid's centres (linear, the field is smooth).
    index = [(a - o) / s for a, o, s in zip(np.meshgrid(*grid.axes_mm(), indexing="ij"),
                                             patient.grid.origin_mm, patient.grid.spacing_mm)]
    return scipy.ndimage.map_coordinates(field, index, order=1, mode="nearest")


def make_case(root: Path) -> Case:
    """Write the case's CT, RTSTRUCT and two RT Doses into ``root``."""
    patient = cshape_phantom(voxel_mm=4.0, body_size_mm=(160.0, 150.0, 200.0), margin_mm=8.0)
    refs = write_dicom_patient(patient, root / "ct")
    dose = synthetic_dose(patient, patient.grid)
    write_rt_dose(root / "RD.dcm", dose, patient.grid, refs, rt_plan_sop_instance_uid="1.2.3")
    # A coarser dose grid (6 x 5 x 5 mm) shifted against the CT, covering all of it.
    low, high = patient.grid.extent_mm()
    spacing = np.array([6.0, 5.0, 5.0])
    coarse = Grid(tuple(low + spacing / 2), tuple(spacing),
                  tuple(np.ceil((high - low) / spacing).astype(int)))
    write_rt_dose(root / "RD_coarse.dcm", synthetic_dose(patient, coarse), coarse, refs,
                  rt_plan_sop_instance_uid="1.2.3")
    return Case(patient, dose.astype(np.float32), root / "ct", root / "ct" / STRUCTURE_SET_FILE,
                root / "RD.dcm", root / "RD_coarse.dcm", coarse)
