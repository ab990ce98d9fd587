"""Delivery, sequencing: each beam's optimised fluence into step-and-shoot MLC segments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dose import Beam, Segment
from dose.beams import BeamSet
from dose.machine import Machine
from optim import sequence_leaves
from planner.errors import SequencingError
from planner.plan.beams import PlanBeams, beamlet_lattice
from planner.plan.setup import PlanCase

#: Least MU a delivered segment carries, per fraction: a common floor for step-and-shoot
#: segments (small segments deliver their MU less accurately); the machine file has no such field.
MIN_MU_PER_SEGMENT = 2.0
#: Most segments per beam (issue 5 asks for about 15 or fewer).
MAX_SEGMENTS_PER_BEAM = 15
#: Intensity levels of the sequencer's stratification (fidelity versus segments).
SEQUENCING_LEVELS = 10


@dataclass(frozen=True)
class FieldSequence:
    """The step-and-shoot segments of one treatment field from :func:`sequence_beams`.

    A beam whose beamlets span more than the MLC carriage allows (``Machine.max_leaf_span_mm``)
    is split along the leaf travel into fields of equal width (split fields, as clinical systems
    deliver wide head-and-neck fields); every other beam is one field.

    Attributes
    ----------
    beam : int
        Index of the beam (of the beam set) the field belongs to.
    part, parts : int
        Which of how many fields of that beam (``0`` of ``1`` when not split).
    segments : tuple of Segment
        ``mu`` in the units of the fluence (MU over all fractions).
    least_mu : float
        The least total weight any decomposition of this field's fluence into apertures can have
        (the largest sum of rises along a beamlet row, Engel 2005), same units: how much of the
        MU comes from the modulation itself.
    """

    beam: int
    part: int
    parts: int
    segments: tuple[Segment, ...]
    least_mu: float

    def name(self, gantry_deg: float) -> str:
        """``G040``, or ``G040-1``, ``G040-2`` for the parts of a split beam."""
        return f"G{gantry_deg:03.0f}" + (f"-{self.part + 1}" if self.parts > 1 else "")


@dataclass(frozen=True)
class SequencedFields:
    """The fields of a plan after sequencing.

    Attributes
    ----------
    fields : tuple of FieldSequence
    beams : tuple of Beam
        Each field's beam.
    names : tuple of str
        Each field's name (:meth:`FieldSequence.name`).
    min_weight : float, MU over all fractions
        The least MU a delivered segment carries (``MIN_MU_PER_SEGMENT`` per fraction).
    """

    fields: tuple[FieldSequence, ...]
    beams: tuple[Beam, ...]
    names: tuple[str, ...]
    min_weight: float

    def segments(self) -> list[list[Segment]]:
        """Each field's segments, in field order."""
        return [list(f.segments) for f in self.fields]


def sequence_fields(case: PlanCase, beams: PlanBeams, x: np.ndarray, *,
                    max_segments_per_beam: int = MAX_SEGMENTS_PER_BEAM) -> SequencedFields:
    """The fields of the beamlet weights ``x`` (MU over all fractions) of ``beams``, with
    segments of at least ``MIN_MU_PER_SEGMENT`` per fraction (:func:`sequence_beams`)."""
    min_weight = MIN_MU_PER_SEGMENT * case.fractions
    fields = sequence_beams(x, beams.beamset, beams.machine, min_weight=min_weight,
                            max_segments=max_segments_per_beam)
    field_beams = tuple(beams.beams[f.beam] for f in fields)
    return SequencedFields(fields, field_beams,
                           tuple(f.name(b.gantry_deg) for f, b in zip(fields, field_beams)),
                           min_weight)


def sequence_beams(x: np.ndarray, beamset: BeamSet, machine: Machine, *, min_weight: float,
                   n_levels: int = SEQUENCING_LEVELS,
                   max_segments: int = MAX_SEGMENTS_PER_BEAM) -> tuple[FieldSequence, ...]:
    """Leaf-sequence each beam's optimised fluence into MLC segments (``optim.sequence_leaves``).

    Parameters
    ----------
    x : (n_beamlets,) float array, MU (over all fractions)
        Beamlet weights, ordered as ``beamset``.
    beamset : BeamSet
    machine : Machine
        Leaf boundaries, minimum gap, travel and span limits, jaw over-travel, interdigitation.
    min_weight : float, MU (same units as ``x``)
        Least weight of a segment.
    n_levels, max_segments : int
        See :func:`optim.sequence_leaves`; ``max_segments`` holds for each field.

    Returns
    -------
    tuple of FieldSequence
        In beam order; a beam wider than the leaf span gives several fields (see
        :class:`FieldSequence`), a beam or field whose fluence is zero none.

    Raises
    ------
    SequencingError
        A field the sequencer cannot turn into segments within the limits (e.g. its open area
        needs more than ``max_segments`` apertures even at one intensity level), naming it.
    """
    out = []
    h = beamset.beamlet_size_mm
    span = machine.max_leaf_span_mm
    for b in range(len(beamset.beams)):
        cols = beamset.beamlets_of(b)
        if cols.size == 0 or not np.any(x[cols] > 0):
            continue
        row, col = beamlet_lattice(beamset, cols)
        iv, iu = row - row.min(), col - col.min()
        fluence = np.zeros((iv.max() + 1, iu.max() + 1))
        fluence[iv, iu] = x[cols]
        width = h * fluence.shape[1] + machine.min_leaf_gap_mm
        parts = 1 if span is None or width <= span else int(np.ceil(width / span))
        columns = np.array_split(np.arange(fluence.shape[1]), parts)
        for part, part_columns in enumerate(columns):
            part_fluence = fluence[:, part_columns]
            if not np.any(part_fluence > 0):
                continue
            first = col.min() + part_columns[0]
            least = float(np.clip(np.diff(part_fluence, prepend=0, axis=1), 0, None)
                          .sum(axis=1).max())
            try:
                seq = sequence_leaves(
                    part_fluence, h * (row.min() + np.arange(part_fluence.shape[0] + 1)),
                    h * (first + np.arange(part_fluence.shape[1] + 1)),
                    machine.leaf_boundaries_mm, n_levels=n_levels, max_segments=max_segments,
                    min_weight=min_weight, min_gap_mm=machine.min_leaf_gap_mm,
                    leaf_travel_mm=(machine.leaf_position_min_mm, machine.leaf_position_max_mm),
                    jaw_overtravel_mm=(machine.jaw_x_overtravel_mm, machine.jaw_y_overtravel_mm),
                    max_leaf_span_mm=span, interdigitation=machine.interdigitation)
            except ValueError as error:  # e.g. more apertures than allowed even at one level
                field_ = FieldSequence(b, part, parts, (), 0.0)
                raise SequencingError(
                    f"sequencing field {field_.name(beamset.beams[b].gantry_deg)}: {error} "
                    "(allow more segments per field)") from None
            segments = tuple(Segment((j[0], j[1]), (j[2], j[3]), leaves, float(w))
                             for leaves, j, w in zip(seq.leaf_positions_mm, seq.jaws_mm,
                                                     seq.weights))
            out.append(FieldSequence(b, part, parts, segments, least))
    return tuple(out)
