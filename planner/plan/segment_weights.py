"""Delivery, segment weights: the dose of each segment, and the MU that make the segments'
dose follow the fluence plan's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dose import segment_dose_matrix
from dose._xp import array_module, to_device
from optim import DoseMimicking, optimise_segment_weights
from optim.fluence import FluenceResult
from planner.plan.beams import PlanBeams
from planner.plan.fluence import FluencePlan
from planner.plan.grid import PlanGrids
from planner.plan.log import StepLog
from planner.plan.sequencing import SequencedFields
from planner.plan.setup import PlanCase
from planner.planning_structures import PlanningStructures
from planner.protocol import Protocol

#: Segment-weight objectives: the fluence plan's dose followed voxel by voxel; in the targets
#: under-dose weighs 4x (coverage first), in organs and the rest of the body only over-dose
#: counts. Measured on TG-119 (benchmarks/bench_deliverable_tg119.py).
TARGET_MIMIC_WEIGHT, ORGAN_MIMIC_WEIGHT, BODY_MIMIC_WEIGHT = 10.0, 3.0, 1.0
TARGET_UNDERDOSE_FACTOR = 4.0
SEGMENT_WEIGHT_ITERATIONS = 500
#: Price of one MU in the segment-weight problem (``mu_weight`` of
#: :func:`optim.optimise_segment_weights`), per Gy of the highest prescription: MU that buy no
#: dose the objectives care about are dropped. The objectives grow with the square of the dose
#: level and the MU with the dose level, so a price proportional to the prescription makes the
#: same trade-off at any dose. Measurements: benchmarks/results/design_history.md, "MU price".
SEGMENT_MU_PRICE_PER_GY = 6e-5
#: Fluence pixel of the segment doses in this problem; the exported final dose uses the dose
#: engine's default resolution.
SEGMENT_WEIGHT_FLUENCE_MM = 2.0


@dataclass(frozen=True)
class SegmentWeights:
    """The segment-weight problem and its solution.

    Attributes
    ----------
    voxel_index : (n_rows,) int numpy array
        Flat dose-grid index of each row of ``S`` (the needed voxels).
    S : (n_rows, n_segments) float32 array, Gy per MU
        Segment doses (numpy or cupy, as the device).
    objectives : list of DoseMimicking
        :func:`segment_weight_objectives`.
    mu_price : float
        Price of one MU (over all fractions) in the objective.
    result : FluenceResult
        ``x``: MU of each segment over all fractions, in field order.
    """

    voxel_index: np.ndarray = field(repr=False)
    S: Any = field(repr=False)
    objectives: list[DoseMimicking] = field(repr=False)
    mu_price: float
    result: FluenceResult = field(repr=False)


def weight_segments(case: PlanCase, grids: PlanGrids, beams: PlanBeams, fields: SequencedFields,
                    fluence: FluencePlan, *, traced: Any = None, device: str, log: StepLog
                    ) -> SegmentWeights:
    """The steps "segment doses" (the dose engine on each segment's aperture, on the needed
    voxels) and "segment weights" (:func:`optim.optimise_segment_weights` from the sequencer's
    weights, following the fluence plan's dose). ``traced``: the fields' voxels
    (:attr:`planner.plan.delivery.Delivery.traced`), whose ray tracing is then not repeated."""
    per_field = fields.segments()
    voxel_index, S = segment_dose_matrix(
        to_device(case.patient.density, device), case.patient.grid, grids.dose_grid,
        list(fields.beams), per_field, beams.machine, beams.model,
        dose_mask=to_device(grids.needed, device), fluence_spacing_mm=SEGMENT_WEIGHT_FLUENCE_MM,
        voxels=traced)
    log.step("segment doses", f"{S.shape[1]} segments on {S.shape[0]} voxels")

    host_index = to_device(voxel_index, "cpu")
    objectives = segment_weight_objectives(grids.dose_structures, case.protocol, host_index,
                                           fluence.dose_gy, xp=array_module(S))
    w0 = np.array([seg.mu for segs in per_field for seg in segs])
    mu_price = SEGMENT_MU_PRICE_PER_GY * case.rx_max_gy
    result = optimise_segment_weights(S, objectives, w0, min_weight=fields.min_weight,
                                      mu_weight=mu_price, max_iter=SEGMENT_WEIGHT_ITERATIONS)
    log.step("segment weights", f"{result.iterations} iterations ({result.stop_reason}); "
                                f"{int(np.count_nonzero(result.x))} of {w0.size} segments kept")
    return SegmentWeights(host_index, S, objectives, mu_price, result)


def row_of_voxel(n_voxels: int, voxel_index: np.ndarray) -> np.ndarray:
    """For each flat dose-grid voxel its row of the segment-dose matrix, -1 where it has none."""
    row_of = np.full(n_voxels, -1, dtype=np.int64)
    row_of[voxel_index] = np.arange(voxel_index.size)
    return row_of


def segment_weight_objectives(structures: PlanningStructures, protocol: Protocol,
                              voxel_index: np.ndarray, reference_gy: np.ndarray, *,
                              xp: Any = np) -> list[DoseMimicking]:
    """Objectives that make the segments' dose follow the fluence plan's (``reference_gy``).

    Rows are the segment-dose matrix's (``voxel_index``, flat indices of the dose grid of
    ``structures``). Targets (as delineated): under- and over-dose (under-dose weighs
    ``TARGET_UNDERDOSE_FACTOR`` times more); organs and every computed voxel: over-dose only.
    """
    patient = structures.patient
    row_of = row_of_voxel(patient.grid.size, voxel_index)
    reference = np.asarray(reference_gy, dtype=np.float64).ravel()[voxel_index]

    def rows(kind: str) -> np.ndarray:
        union = np.zeros(patient.grid.size, dtype=bool)
        for name, patient_name in structures.delineated.items():
            if protocol.structure(name).kind == kind:
                union |= patient.structure(patient_name).mask.ravel()
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
