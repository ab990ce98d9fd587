"""Delivery, final dose: the plan's beams and dose for given segment MU, from the dose engine on
the delivered apertures (not the beamlets) on every voxel of the dose grid."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dose import field_voxels, segment_dose
from dose._xp import to_device
from planner.io.rtplan import PlanBeam
from planner.plan.beams import PlanBeams
from planner.plan.grid import PlanGrids, protocol_goals
from planner.plan.sequencing import SequencedFields
from planner.plan.setup import PlanCase
from planner.review.goals import GoalRow


@dataclass(frozen=True)
class DeliveredPlan:
    """A deliverable plan.

    Attributes
    ----------
    beams : tuple of PlanBeam
        The fields with their segments that carry MU (per fraction).
    dose_gy : (nz, ny, nx) float32 array, Gy
        Its dose on the dose grid (all fractions).
    goals : tuple of GoalRow
        The protocol's goals on ``dose_gy`` (CT grid).
    """

    beams: tuple[PlanBeam, ...] = field(repr=False)
    dose_gy: np.ndarray = field(repr=False)
    goals: tuple[GoalRow, ...] = field(repr=False)

    @property
    def goals_met(self) -> str:
        """``"n of m goals met"``."""
        return f"{sum(g.met for g in self.goals)} of {len(self.goals)} goals met"


@dataclass(frozen=True)
class Delivery:
    """The sequenced fields with each field's ray tracing done once
    (:func:`dose.field_voxels`), so that their dose at any MU costs no tracing.

    ``density`` (the CT's) and ``calculated`` (:attr:`PlanGrids.calculated`) are on the device.
    """

    case: PlanCase = field(repr=False)
    grids: PlanGrids = field(repr=False)
    beams: PlanBeams = field(repr=False)
    fields: SequencedFields = field(repr=False)
    density: Any = field(repr=False)
    calculated: Any = field(repr=False)
    traced: Any = field(repr=False)

    def plan(self, mu: np.ndarray) -> DeliveredPlan:
        """The plan with segment MU ``mu`` (over all fractions, in field order; a segment at
        0 MU is not delivered)."""
        case, fractions = self.case, self.case.fractions
        plan_beams, weighted, k = [], [], 0
        for f, name, beam, segs in zip(self.fields.fields, self.fields.names, self.fields.beams,
                                       self.fields.segments()):
            weighted.append([dataclasses.replace(seg, mu=float(m))
                             for seg, m in zip(segs, mu[k:k + len(segs)])])
            k += len(segs)
            kept = [seg for seg in weighted[-1] if seg.mu > 0]
            if kept:
                plan_beams.append(PlanBeam(name, beam, tuple(
                    dataclasses.replace(seg, mu=seg.mu / fractions) for seg in kept)))
        dose = to_device(segment_dose(
            self.density, case.patient.grid, self.grids.dose_grid, list(self.fields.beams),
            weighted, self.beams.machine, self.beams.model,
            dose_mask=self.calculated, voxels=self.traced), "cpu")
        return DeliveredPlan(tuple(plan_beams), dose, self.goals_of(dose))

    def goals_of(self, dose_gy: np.ndarray) -> tuple[GoalRow, ...]:
        """The protocol's goals on a dose of the dose grid (:func:`planner.plan.grid.
        protocol_goals`)."""
        return protocol_goals(self.case, self.grids, dose_gy)


def trace_fields(case: PlanCase, grids: PlanGrids, beams: PlanBeams, fields: SequencedFields,
                 *, device: str) -> Delivery:
    """Trace ``fields`` through ``case``'s patient on the voxels whose dose is calculated."""
    density = to_device(case.patient.density, device)
    calculated = to_device(grids.calculated, device)
    traced = field_voxels(density, case.patient.grid, grids.dose_grid, list(fields.beams),
                          fields.segments(), beams.machine, beams.model, dose_mask=calculated)
    return Delivery(case, grids, beams, fields, density, calculated, traced)
