"""Set-up, protocol: the protocol chosen and mapped onto the patient's structures.

The mapping (:func:`planner.protocol.map_structures`: which patient structure plays each protocol
structure) is made here once and travels down in :class:`PlanCase`: the optimisation structures,
the fluence problem, the segment weights and the goal tables all take it from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from planner.errors import InputError, PlannerError
from planner.patient import Patient
from planner.protocol import PROTOCOL_DIR, Protocol, StructureMapping, map_structures, read_protocol
from planner.review.goals import Conflict, protocol_conflicts


class ProtocolConflictError(PlannerError):
    """The protocol cannot be met as delineated (a target overlaps an organ whose hard limit is
    below the target's prescription); ``conflicts`` holds the explanations."""

    def __init__(self, conflicts: Sequence[Conflict]):
        self.conflicts = tuple(conflicts)
        super().__init__("the protocol cannot be met as delineated: "
                         + " | ".join(c.explanation for c in self.conflicts)
                         + " (or plan anyway with --allow-conflicts)")


@dataclass(frozen=True)
class PlanCase:
    """A patient, the protocol it is planned by, and how the two's structures correspond.

    Attributes
    ----------
    patient : Patient
        As imported (CT grid).
    protocol : Protocol
    names : StructureMapping
        Which patient structure plays each protocol structure, and the structures left over.
    conflicts : tuple of Conflict
        Goals no plan can meet as delineated (:func:`planner.review.goals.protocol_conflicts`).
    """

    patient: Patient = field(repr=False)
    protocol: Protocol = field(repr=False)
    names: StructureMapping
    conflicts: tuple[Conflict, ...]

    @property
    def fractions(self) -> int:
        """The number of fractions (the protocol's first prescription's)."""
        return self.protocol.prescriptions[0].fractions

    @property
    def rx_max_gy(self) -> float:
        """The highest prescription, Gy (all fractions)."""
        return max(p.dose_gy for p in self.protocol.prescriptions)

    @property
    def fraction_dose_cgy(self) -> float:
        """The highest prescription per fraction, cGy (the MU/cGy denominator)."""
        return 100.0 * self.rx_max_gy / self.fractions

    @property
    def targets(self) -> list[str]:
        """The patient's names of the prescribed targets it has, in prescription order."""
        return [self.names.mapping[p.target] for p in self.protocol.prescriptions
                if p.target in self.names.mapping]


def default_protocol(patient: Patient) -> Protocol:
    """The first bundled protocol (``data/protocols``, by name) whose structures the patient has.

    It fits when every structure it requires maps to one of the patient's and at least one of
    its prescribed targets is present (head-and-neck patients often lack an elective PTV, which
    the protocol marks optional).

    Raises
    ------
    InputError
        No bundled protocol fits; the message lists the patient's structures.
    """
    for path in sorted(PROTOCOL_DIR.glob("*.toml")):
        protocol = read_protocol(path)
        try:
            mapping = map_structures(protocol, [s.name for s in patient.structures]).mapping
        except InputError:
            continue
        if any(p.target in mapping for p in protocol.prescriptions):
            return protocol
    raise InputError(f"{patient.source}: no bundled protocol fits the structures "
                     f"{[s.name for s in patient.structures]}; give one with --protocol, or "
                     f"the prescriptions with --prescription NAME=DOSE/FRACTIONS")


def prepare_case(patient: Patient, protocol: Protocol | str | Path | None = None) -> PlanCase:
    """``patient`` with ``protocol`` (a Protocol, a file or bundled name, or by default
    :func:`default_protocol`) mapped onto its structures and checked for conflicts.

    Raises
    ------
    InputError
        A structure a non-optional goal needs is missing, or no bundled protocol fits.
    """
    if protocol is None:
        protocol = default_protocol(patient)
    elif not isinstance(protocol, Protocol):
        protocol = read_protocol(protocol)
    names = map_structures(protocol, [s.name for s in patient.structures])
    return PlanCase(patient, protocol, names, protocol_conflicts(patient, protocol, names))
