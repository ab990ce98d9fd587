"""Delivery, sequencing: each beam's optimised fluence into step-and-shoot MLC segments."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dose import Beam, Segment
from dose.beams import BeamSet
from dose.machine import Machine
from optim import sequence_leaves
from optim.autoplan import DeliveredFluence
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
    for fp in field_parts(beamset, machine):
        part_fluence = fp.fluence(x)
        if not np.any(part_fluence > 0):
            continue
        try:
            seq = sequence_leaves(
                part_fluence, h * (fp.first_row + np.arange(part_fluence.shape[0] + 1)),
                h * (fp.first_column + np.arange(part_fluence.shape[1] + 1)),
                machine.leaf_boundaries_mm, n_levels=n_levels, max_segments=max_segments,
                min_weight=min_weight, min_gap_mm=machine.min_leaf_gap_mm,
                leaf_travel_mm=(machine.leaf_position_min_mm, machine.leaf_position_max_mm),
                jaw_overtravel_mm=(machine.jaw_x_overtravel_mm, machine.jaw_y_overtravel_mm),
                max_leaf_span_mm=span, interdigitation=machine.interdigitation)
        except ValueError as error:  # e.g. more apertures than allowed even at one level
            field_ = FieldSequence(fp.beam, fp.part, fp.parts, (), 0.0)
            raise SequencingError(
                f"sequencing field {field_.name(beamset.beams[fp.beam].gantry_deg)}: {error} "
                "(allow more segments per field)") from None
        segments = tuple(Segment((j[0], j[1]), (j[2], j[3]), leaves, float(w))
                         for leaves, j, w in zip(seq.leaf_positions_mm, seq.jaws_mm,
                                                 seq.weights))
        out.append(FieldSequence(fp.beam, fp.part, fp.parts, segments,
                                 least_mu(part_fluence)))
    return tuple(out)


@dataclass(frozen=True)
class FieldPart:
    """Where one field's beamlets lie on its fluence map (a beam, or one part of a split beam:
    :class:`FieldSequence`).

    ``columns``: the beamlets (indices of ``x``); ``rows_at``, ``columns_at``: their cells of the
    map of ``shape``, whose first cell is the beam lattice's (``first_row``, ``first_column``).
    """

    beam: int
    part: int
    parts: int
    columns: np.ndarray
    rows_at: np.ndarray
    columns_at: np.ndarray
    shape: tuple[int, int]
    first_row: int
    first_column: int

    def fluence(self, x: np.ndarray) -> np.ndarray:
        """The field's fluence map of beamlet weights ``x`` (0 where it has no beamlet)."""
        fluence = np.zeros(self.shape)
        fluence[self.rows_at, self.columns_at] = x[self.columns]
        return fluence


def field_parts(beamset: BeamSet, machine: Machine) -> tuple[FieldPart, ...]:
    """The fields of ``beamset``: each beam, split along the leaf travel into fields of equal
    width where it spans more than the MLC carriage allows (``Machine.max_leaf_span_mm``)."""
    h = beamset.beamlet_size_mm
    span = machine.max_leaf_span_mm
    out = []
    for b in range(len(beamset.beams)):
        cols = beamset.beamlets_of(b)
        if cols.size == 0:
            continue
        row, col = beamlet_lattice(beamset, cols)
        iv, iu = row - row.min(), col - col.min()
        n_rows, n_columns = int(iv.max()) + 1, int(iu.max()) + 1
        width = h * n_columns + machine.min_leaf_gap_mm
        parts = 1 if span is None or width <= span else int(np.ceil(width / span))
        for part, part_columns in enumerate(np.array_split(np.arange(n_columns), parts)):
            inside = (iu >= part_columns[0]) & (iu <= part_columns[-1])
            out.append(FieldPart(b, part, parts, cols[inside], iv[inside],
                                 iu[inside] - part_columns[0], (n_rows, part_columns.size),
                                 int(row.min()), int(col.min() + part_columns[0])))
    return tuple(out)


def least_mu(fluence: np.ndarray) -> float:
    """The least total weight any decomposition of a fluence map (rows along the leaf travel)
    into apertures can have: the largest sum of rises along a row (Engel 2005)."""
    return float(np.clip(np.diff(fluence, prepend=0, axis=1), 0, None).sum(axis=1).max())


def leaf_transmission(beamset: BeamSet, machine: Machine) -> DeliveredFluence:
    """The fluence delivered for beamlet weights ``x`` with the machine's leaf transmission
    ``T``, as :data:`optim.autoplan.DeliveredFluence`: under its field's leaves each beamlet gets
    its own weight while open and ``T`` of the open fluence while closed, ``(1 - T) x + T MU``,
    with the field's MU taken as the least MU of its fluence (:func:`least_mu`; the segment
    weights end near it). The beamlets do not model transmission; the segments' dose does
    (``dose.segments``): measured, it adds 0.4-1.1 Gy to the PTV's and the organs' goal values
    (``benchmarks/results/design_history.md``, "Delivery correction")."""
    parts = field_parts(beamset, machine)
    transmission = machine.leaf_transmission

    def delivered(x: np.ndarray) -> tuple[float, np.ndarray]:
        added = np.zeros(x.shape[0])
        for part in parts:
            added[part.columns] = transmission * least_mu(part.fluence(x))
        return 1.0 - transmission, added

    return delivered
