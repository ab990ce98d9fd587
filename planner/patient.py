"""The patient model every step reads: CT on a grid, density, structures, prescriptions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from dose.grid import Grid

StructureKind = Literal["target", "organ", "external"]
STRUCTURE_KINDS: tuple[str, ...] = ("target", "organ", "external")


@dataclass(frozen=True)
class Structure:
    """One delineated structure as a boolean mask on the patient grid.

    Parameters
    ----------
    name : str
        Name as delineated (e.g. ``"PTV70"``, ``"SpinalCord"``).
    kind : {"target", "organ", "external"}
    mask : (nz, ny, nx) bool array
    """

    name: str
    kind: StructureKind
    mask: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in STRUCTURE_KINDS:
            raise ValueError(f"structure {self.name!r}: kind must be one of {STRUCTURE_KINDS}, "
                             f"got {self.kind!r}")
        if self.mask.dtype != bool:
            raise ValueError(f"structure {self.name!r}: mask must be bool, got {self.mask.dtype}")


@dataclass(frozen=True)
class Prescription:
    """Prescribed dose to one target.

    Parameters
    ----------
    target : str
        Name of the target structure.
    dose_gy : float
        Total prescribed dose, Gy.
    fractions : int
        Number of fractions.
    """

    target: str
    dose_gy: float
    fractions: int

    def __post_init__(self) -> None:
        if not (self.dose_gy > 0):
            raise ValueError(f"prescription to {self.target!r}: dose must be positive, "
                             f"got {self.dose_gy} Gy")
        if self.fractions < 1:
            raise ValueError(f"prescription to {self.target!r}: fractions must be >= 1, "
                             f"got {self.fractions}")

    @property
    def dose_per_fraction_gy(self) -> float:
        return self.dose_gy / self.fractions


@dataclass(frozen=True)
class DicomReferences:
    """Identifiers of the DICOM objects a patient came from, so new objects link to them.

    All UIDs are strings. ``ct_sop_instance_uids`` is in slice order (index ``k`` of the grid).
    """

    patient_id: str
    patient_name: str
    study_instance_uid: str
    frame_of_reference_uid: str
    ct_series_instance_uid: str
    ct_sop_instance_uids: tuple[str, ...]
    structure_set_sop_instance_uid: str | None = None
    patient_position: str = "HFS"


@dataclass(frozen=True)
class Patient:
    """One patient: CT, density and structures on one grid, and the prescriptions.

    Parameters
    ----------
    name : str
        Identifier shown to the user (patient ID, phantom or file name).
    grid : Grid
    hu : (nz, ny, nx) float32 array, HU
    density : (nz, ny, nx) float32 array, g/cm^3 (mass density)
    structures : tuple of Structure
    prescriptions : tuple of Prescription
    possible_dose_mask : (nz, ny, nx) bool array or None
        Where dose may be deposited (OpenKBP); None where unknown.
    dicom : DicomReferences or None
        Present when the patient was read from DICOM.
    source : str
        Where the patient came from (a path, or ``example:NAME``).
    """

    name: str
    grid: Grid
    hu: np.ndarray = field(repr=False)
    density: np.ndarray = field(repr=False)
    structures: tuple[Structure, ...] = ()
    prescriptions: tuple[Prescription, ...] = ()
    possible_dose_mask: np.ndarray | None = field(default=None, repr=False)
    dicom: DicomReferences | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for label, array in (("hu", self.hu), ("density", self.density)):
            if array.shape != self.grid.shape:
                raise ValueError(f"{label} shape {array.shape} differs from grid {self.grid.shape}")
        for s in self.structures:
            if s.mask.shape != self.grid.shape:
                raise ValueError(f"structure {s.name!r}: mask shape {s.mask.shape} differs from "
                                 f"grid {self.grid.shape}")
        names = [s.name for s in self.structures]
        if len(set(names)) != len(names):
            raise ValueError(f"structure names must be unique, got {names}")

    def structure(self, name: str) -> Structure:
        """The structure called ``name`` (exact match); KeyError listing the names otherwise."""
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(f"no structure {name!r}; structures: {[s.name for s in self.structures]}")

    def volume_cc(self, name: str) -> float:
        """Volume of structure ``name`` in cm^3 (voxel count times voxel volume)."""
        return float(self.structure(name).mask.sum()) * self.grid.voxel_volume_cc

    def targets(self) -> tuple[Structure, ...]:
        return tuple(s for s in self.structures if s.kind == "target")

    def body_mask(self) -> np.ndarray | None:
        """The patient's outline as the data gives it: the external contour, else the
        possible-dose mask (OpenKBP has no external contour), else None."""
        external = [s.mask for s in self.structures if s.kind == "external"]
        return external[0] if external else self.possible_dose_mask
