"""Set-up, beams: the machine, the beam model, the isocentre and the beams with their beamlets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from dose import Beam, BeamModel, beamlets_covering, equispaced_beams, load_beam_model, load_machine
from dose.beams import BeamSet
from dose.machine import Machine
from optim import FluenceSmoothness, neighbour_pairs
from planner.errors import InputError
from planner.patient import Patient
from planner.plan.setup import PlanCase

#: Weight of the fluence-smoothness term (:class:`optim.FluenceSmoothness`, beamlet weights in
#: MU over all fractions): smoother maps sequence into fewer segments and MU for the same goals.
#: Like the dose objectives it scales with the square of the dose level, so it holds for any
#: prescription. Why 0.01: benchmarks/results/design_history.md, "Fluence smoothness".
SMOOTHNESS_WEIGHT = 0.01


@dataclass(frozen=True)
class PlanBeams:
    """The treatment machine and the beams of a plan.

    Attributes
    ----------
    machine : Machine
    model : BeamModel
    isocenter_xyz_mm : tuple of float, mm
        DICOM (x, y, z).
    beams : tuple of Beam
    beamset : BeamSet
        The beamlets of every beam, covering the targets' projection.
    """

    machine: Machine = field(repr=False)
    model: BeamModel = field(repr=False)
    isocenter_xyz_mm: tuple[float, float, float]
    beams: tuple[Beam, ...]
    beamset: BeamSet = field(repr=False)


def place_beams(case: PlanCase, beam_count: int, beamlet_mm: float) -> PlanBeams:
    """``beam_count`` equispaced coplanar beams (gantry 0, 360/n, ...) at the centroid of the
    prescribed targets, with ``beamlet_mm`` beamlets covering the targets' projection."""
    machine = load_machine()
    union = _union(case.patient, case.targets)
    iso = _centre_xyz_mm(case.patient, union)
    beams = equispaced_beams(beam_count, iso)
    beamset = beamlets_covering(beams, union, case.patient.grid, beamlet_size_mm=beamlet_mm,
                                sad_mm=machine.sad_mm)
    return PlanBeams(machine, load_beam_model(), iso, tuple(beams), beamset)


def _union(patient: Patient, targets: Sequence[str]) -> np.ndarray:
    union = np.zeros(patient.grid.shape, dtype=bool)
    for name in targets:
        union |= patient.structure(name).mask
    if not union.any():
        raise InputError(f"{patient.source}: the targets {list(targets)} have no voxels")
    return union


def _centre_xyz_mm(patient: Patient, mask: np.ndarray) -> tuple[float, float, float]:
    zyx = patient.grid.index_to_position_mm(np.argwhere(mask).mean(axis=0))
    return float(zyx[2]), float(zyx[1]), float(zyx[0])


def target_centre_xyz_mm(patient: Patient, targets: Sequence[str]) -> tuple[float, float, float]:
    """Centroid of the union of the ``targets`` masks, DICOM (x, y, z) mm (an isocentre).

    Raises
    ------
    InputError
        The targets have no voxels.
    """
    return _centre_xyz_mm(patient, _union(patient, targets))


def beamlet_lattice(beamset: BeamSet, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (row, column) of beamlets ``cols`` on their beam's lattice (edges at multiples
    of the beamlet size, :func:`dose.beamlets_covering`)."""
    h = beamset.beamlet_size_mm
    return (np.floor(beamset.v_mm[cols] / h).astype(np.int64),
            np.floor(beamset.u_mm[cols] / h).astype(np.int64))


def smoothness_regulariser(beamset: BeamSet, weight: float = SMOOTHNESS_WEIGHT
                           ) -> FluenceSmoothness:
    """:class:`optim.FluenceSmoothness` over neighbouring beamlets of each beam."""
    row, col = beamlet_lattice(beamset, np.arange(beamset.n_beamlets))
    return FluenceSmoothness(neighbour_pairs(beamset.beam_index, row, col), weight)
