"""A protocol for the patient at hand from prescriptions given on the command line.

``planner plan PATIENT --prescription PTV_7000=70/35`` and ``planner protocol init`` build the
protocol :func:`protocol_draft` drafts: each named target gets its prescription and the usual
target goals (RTOG 0225 / 0615 as used for the OpenKBP-Opt criteria: D99 >= 95 % hard,
D95 >= 100 % soft, and D1 <= 107 % hard on the highest-dose target), every organ found in
``data/organ_limits.toml`` its standard limits (QUANTEC, RTOG; the table gives each number's
source), and the structures it does not recognise are listed, not guessed.

Fractionation: the table's limits hold for 1.8-2.2 Gy per fraction. Above, up to
``MAX_CONVERTED_GY_PER_FRACTION``, each limit in Gy (dose limits and the dose of a V<d>Gy limit)
is read as an EQD2 and converted to the physical dose in the prescription's number of fractions
``n`` with that EQD2, by the linear-quadratic model with the organ's alpha/beta:
``D (1 + D / (n a/b)) = L (1 + 2 / (a/b))``, where that lowers it (``D/n`` above 2 Gy). A limit
whose dose per fraction stays below 2 Gy is kept: raising it would assume the organ received
the limit in 2 Gy fractions, which an organ beside the target does not. Above
``MAX_CONVERTED_GY_PER_FRACTION`` (stereotactic courses) the standard limits do not apply and
the draft is refused: write the limits in a protocol for ``--protocol``. Below 1.8 Gy per
fraction the limits are kept as they are, which is conservative (converting would raise them,
and the linear-quadratic model ignores the incomplete repair of twice-daily fractions). A mean
dose converted this way is the mean of a uniform dose; with a non-uniform dose the limit is
approximate.

On top of a protocol (``--protocol`` with ``--prescription``) a prescription overrides the
prescription of the protocol target that plays the named structure, or adds the structure as a
new target with the usual goals; the protocol's own goals are kept as written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dose._data import DATA_DIR
from planner.errors import InputError
from planner.names import find_one
from planner.patient import Patient
from planner.protocol import (
    V_DOSE_METRIC,
    PlanningSettings,
    Protocol,
    StructureSpec,
    map_structures,
    protocol_from_table,
    protocol_table,
)

ORGAN_LIMITS = DATA_DIR / "organ_limits.toml"
CONVENTIONAL_GY_PER_FRACTION = (1.8, 2.2)
MAX_CONVERTED_GY_PER_FRACTION = 5.0
REFERENCE_GY_PER_FRACTION = 2.0  # EQD2: the dose in 2 Gy fractions
TARGET_GOALS_SOURCE = "RTOG 0225 / 0615 (OpenKBP-Opt criteria)"
_PRESCRIPTION = re.compile(r"^(.+)=([^/]+)/([^/]+)$")


@dataclass(frozen=True)
class CommandLinePrescription:
    """``NAME=DOSE/FRACTIONS`` as given: the structure's name, Gy in all, fractions."""

    name: str
    dose_gy: float
    fractions: int

    @property
    def text(self) -> str:
        return f"{self.name}={self.dose_gy:g}/{self.fractions}"


def parse_prescription(text: str) -> CommandLinePrescription:
    """Read ``NAME=DOSE/FRACTIONS`` (``PTV_7000=70/35``: 70 Gy in 35 fractions).

    Raises
    ------
    InputError
        Not of that form, a dose that is not a positive number of Gy (at most 200), a number
        of fractions that is not a whole number from 1 to 100.
    """
    match = _PRESCRIPTION.match(text.strip())
    where = f"--prescription {text}"
    if match is None or not match.group(1).strip():
        raise InputError(f"{where}: expected NAME=DOSE/FRACTIONS, e.g. PTV_7000=70/35 (70 Gy "
                         f"in 35 fractions)")
    name, dose_text, fraction_text = (g.strip() for g in match.groups())
    try:
        dose = float(dose_text)
    except ValueError:
        dose = math.nan
    if not 0.0 < dose <= 200.0:
        raise InputError(f"{where}: the dose must be a number of Gy above 0 and at most 200, "
                         f"got {dose_text!r}")
    if not fraction_text.isdigit() or not 1 <= int(fraction_text) <= 100:
        raise InputError(f"{where}: the number of fractions must be a whole number from 1 to "
                         f"100, got {fraction_text!r}")
    return CommandLinePrescription(name, dose, int(fraction_text))


@dataclass(frozen=True)
class Limit:
    """One standard limit of an organ (a ``[[goals]]`` entry less its structure) and its source."""

    metric: str
    max: float
    unit: str
    priority: str
    source: str


@dataclass(frozen=True)
class OrganLimits:
    """An organ of ``data/organ_limits.toml``: TG-263 name, other names, alpha/beta, limits."""

    name: str
    synonyms: tuple[str, ...]
    alpha_beta_gy: float
    limits: tuple[Limit, ...]


def read_organ_limits(path: Path = ORGAN_LIMITS) -> tuple[OrganLimits, ...]:
    """The standard organ limits (``data/organ_limits.toml``; its header gives the sources).

    Raises
    ------
    InputError
        A table that cannot be read, or an entry without its keys.
    """
    try:
        with open(path, "rb") as f:
            organs = tomllib.load(f)["organs"]
        return tuple(
            OrganLimits(name, tuple(spec["synonyms"]), float(spec["alpha_beta_gy"]),
                        tuple(Limit(g["metric"], float(g["max"]), g["unit"], g["priority"],
                                    g["source"]) for g in spec["limits"]))
            for name, spec in organs.items())
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"{path}: cannot read the organ limits ({error!r})") from None


def eqd2_equivalent_gy(limit_gy: float, fractions: int, alpha_beta_gy: float) -> float:
    """The total dose in ``fractions`` equal fractions with the EQD2 of ``limit_gy``, Gy.

    Solves ``D (1 + D / (n a/b)) = L (1 + 2 / (a/b))`` for ``D`` (linear-quadratic model).
    """
    eqd2 = limit_gy * (1.0 + REFERENCE_GY_PER_FRACTION / alpha_beta_gy)
    n_ab = fractions * alpha_beta_gy
    return n_ab / 2.0 * (math.sqrt(1.0 + 4.0 * eqd2 / n_ab) - 1.0)


@dataclass(frozen=True)
class ProtocolDraft:
    """A protocol drafted for one patient (module docstring).

    Attributes
    ----------
    table : dict
        The protocol as its TOML file holds it (:func:`planner.protocol.protocol_from_table`).
    goal_sources : tuple of str
        Where each ``table["goals"]`` entry's number comes from (a base protocol: its file).
    notes : tuple of str
        What the draft did that a user should know (conversion, overrides, structures left out).
    source : str
        What it was drafted from (the command line's prescriptions, a base protocol).
    """

    table: dict[str, Any]
    goal_sources: tuple[str, ...]
    notes: tuple[str, ...]
    source: str

    def protocol(self) -> Protocol:
        return protocol_from_table(self.table, self.source)


def _target_goals(target: str, highest: bool) -> list[dict[str, Any]]:
    goals = [{"structure": target, "metric": "D99%", "min": 95.0, "unit": "%",
              "priority": "hard", "optional": False},
             {"structure": target, "metric": "D95%", "min": 100.0, "unit": "%",
              "priority": "soft", "optional": False}]
    if highest:
        goals.append({"structure": target, "metric": "D1%", "max": 107.0, "unit": "%",
                      "priority": "hard", "optional": False})
    return goals


def _organ_goals(organ: OrganLimits, fractions: int, convert: bool
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """The organ's goals and their sources, converted to ``fractions`` when ``convert``."""
    goals, sources = [], []
    for limit in organ.limits:
        metric, value, source = limit.metric, limit.max, limit.source
        volume_at = V_DOSE_METRIC.match(metric)
        dose = volume_at if volume_at and volume_at.group(2) == "Gy" else None
        if convert and (limit.unit == "Gy" or dose):
            was = float(dose.group(1)) if dose else value
            now = min(was, round(eqd2_equivalent_gy(was, fractions, organ.alpha_beta_gy), 1))
            if dose:
                metric = f"V{now:g}Gy"
            else:
                value = now
            source += (f"; {was:g} Gy as EQD2 is {now:g} Gy in {fractions} fractions "
                       f"(alpha/beta {organ.alpha_beta_gy:g} Gy)" if now < was else
                       f"; kept at {was:g} Gy (below 2 Gy per fraction in {fractions} "
                       f"fractions: not raised)")
        goals.append({"structure": organ.name, "metric": metric, "max": value,
                      "unit": limit.unit, "priority": limit.priority, "optional": True})
        sources.append(source)
    return goals, sources


def protocol_draft(patient: Patient, prescriptions: Sequence[CommandLinePrescription], *,
                   base: Protocol | None = None) -> ProtocolDraft:
    """The protocol for ``patient`` with ``prescriptions`` (module docstring).

    Parameters
    ----------
    patient : Patient
        Its structures are matched by :mod:`planner.names`.
    prescriptions : sequence of CommandLinePrescription
        At least one.
    base : Protocol, optional
        A protocol whose goals are kept and whose prescriptions these override.

    Raises
    ------
    InputError
        A prescription naming no structure of the patient, or several (the message lists
        them); one structure prescribed twice; prescriptions with different numbers of
        fractions; above ``MAX_CONVERTED_GY_PER_FRACTION`` per fraction without ``base``; an
        organ name matching several of the patient's structures.
    """
    source = "--prescription " + " --prescription ".join(p.text for p in prescriptions)
    names = [s.name for s in patient.structures if s.kind != "external"]
    found: dict[str, CommandLinePrescription] = {}
    for rx in prescriptions:
        name = find_one(rx.name, (), names, source=f"--prescription {rx.text}")
        if name is None:
            raise InputError(f"--prescription {rx.text}: no structure {rx.name!r} among the "
                             f"patient's structures {names}")
        if name in found:
            raise InputError(f"--prescription {rx.text}: {name!r} is already prescribed by "
                             f"--prescription {found[name].text}")
        found[name] = rx
    if base is not None:
        return _on_base(patient, base, found, source)
    fractions = {rx.fractions for rx in prescriptions}
    if len(fractions) > 1:
        raise InputError(f"{source}: the prescriptions have {sorted(fractions)} fractions; one "
                         f"plan delivers them together in one number of fractions")
    n = fractions.pop()
    per_fraction = max(rx.dose_gy for rx in prescriptions) / n
    low, high = CONVENTIONAL_GY_PER_FRACTION
    if per_fraction > MAX_CONVERTED_GY_PER_FRACTION:
        raise InputError(f"{source}: {per_fraction:g} Gy per fraction is beyond the standard "
                         f"organ limits (conventional fractionation, converted by EQD2 up to "
                         f"{MAX_CONVERTED_GY_PER_FRACTION:g} Gy per fraction); give the "
                         f"limits in a protocol with --protocol")
    convert = per_fraction > high
    notes = []
    if convert:
        notes.append(f"{per_fraction:g} Gy per fraction: the organ limits (for {low:g}-{high:g} "
                     f"Gy per fraction) read as EQD2 and converted to {n} fractions where that "
                     f"lowers them, alpha/beta per organ (data/organ_limits.toml)")
    elif per_fraction < low:
        notes.append(f"{per_fraction:g} Gy per fraction: the organ limits (for {low:g}-{high:g} "
                     f"Gy) kept as they are (conservative below {low:g} Gy)")

    highest = max(rx.dose_gy for rx in found.values())
    structures: dict[str, Any] = {}
    goals: list[dict[str, Any]] = []
    sources: list[str] = []
    for patient_name, rx in found.items():
        structures[rx.name] = {"kind": "target", "synonyms": _other_name(rx.name, patient_name)}
        target_goals = _target_goals(rx.name, rx.dose_gy == highest)
        goals += target_goals
        sources += [TARGET_GOALS_SOURCE] * len(target_goals)

    organs = read_organ_limits()
    candidates = [n for n in names if n not in found]
    # The same matching as planning uses: a protocol of every organ in the table (an ambiguous
    # name is the patient's to fix, so errors name the patient).
    every_organ = Protocol("organ limits", (), tuple(
        StructureSpec(o.name, "organ", o.synonyms) for o in organs), (), patient.source)
    mapping = map_structures(every_organ, candidates).mapping
    for organ in organs:
        if organ.name not in mapping:
            continue
        structures[organ.name] = {"kind": "organ",
                                  "synonyms": _other_name(organ.name, mapping[organ.name])}
        organ_goals, organ_sources = _organ_goals(organ, n, convert)
        goals += organ_goals
        sources += organ_sources
    kinds = {s.name: s.kind for s in patient.structures}
    left = [n for n in candidates if n not in mapping.values()]
    unprescribed = [n for n in left if kinds[n] == "target"]
    unrecognised = [n for n in left if kinds[n] != "target"]
    if unprescribed:
        notes.append(f"targets without a prescription (not planned for): "
                     f"{', '.join(unprescribed)}")
    if unrecognised:
        notes.append(f"no standard limits for {', '.join(unrecognised)} (not recognised, not "
                     f"planned for: add their goals to the protocol)")
    table = {
        "name": ", ".join(f"{rx.name} {rx.dose_gy:g} Gy" for rx in found.values())
                + f" in {n} fractions, standard organ limits",
        "planning": dataclasses.asdict(PlanningSettings()),
        "prescriptions": [{"target": rx.name, "dose_gy": rx.dose_gy, "fractions": rx.fractions}
                          for rx in found.values()],
        "structures": structures,
        "goals": goals,
    }
    return ProtocolDraft(table, tuple(sources), tuple(notes), source)


def _other_name(name: str, patient_name: str) -> list[str]:
    """The patient's own name as a synonym, when it is not ``name`` itself."""
    return [] if patient_name.lower() == name.lower() else [patient_name]


def _on_base(patient: Patient, base: Protocol, found: dict[str, CommandLinePrescription],
             source: str) -> ProtocolDraft:
    """:func:`protocol_draft` on top of ``base``: prescriptions overridden or added."""
    table = protocol_table(base)
    mapping = map_structures(base, [s.name for s in patient.structures]).mapping
    played_by = {patient_name: name for name, patient_name in mapping.items()}
    prescriptions = {p["target"]: p for p in table["prescriptions"]}
    notes, added = [], set()
    sources = [base.source] * len(table["goals"])
    for patient_name, rx in found.items():
        target = played_by.get(patient_name)
        if target is None:
            target = rx.name
            added.add(target)
            table["structures"][target] = {"kind": "target",
                                           "synonyms": _other_name(target, patient_name)}
            target_goals = _target_goals(target, highest=False)
            table["goals"] += target_goals
            sources += [TARGET_GOALS_SOURCE] * len(target_goals)
            notes.append(f"{target}: not a target of {base.source}; added with the usual "
                         f"target goals")
        elif table["structures"][target]["kind"] != "target":
            raise InputError(f"--prescription {rx.text}: {patient_name!r} plays the organ "
                             f"{target!r} of {base.source}, not a target")
        else:
            old = prescriptions.get(target)
            notes.append(f"{target}: {rx.dose_gy:g} Gy in {rx.fractions} fractions"
                         + (f" (the protocol's {old['dose_gy']:g} Gy in {old['fractions']})"
                            if old else ""))
        prescriptions[target] = {"target": target, "dose_gy": rx.dose_gy,
                                 "fractions": rx.fractions}
    # A target the patient lacks keeps no prescription (one plan, one number of fractions).
    kept = [p for t, p in prescriptions.items() if t in mapping or t in added]
    dropped = [t for t in prescriptions if t not in mapping and t not in added]
    if dropped:
        notes.append(f"no prescription for {', '.join(dropped)} (not among the patient's "
                     f"structures)")
    table["prescriptions"] = kept
    table["name"] = f"{base.name} (prescriptions from the command line)"
    fractions = {p["fractions"] for p in kept}
    if len(fractions) > 1:
        listed = ", ".join(f"{p['target']} {p['fractions']}" for p in kept)
        raise InputError(f"{source}: the prescriptions have different numbers of fractions "
                         f"({listed}) in {base.source}; give each target's prescription")
    notes.append(f"the goals of {base.source} are kept as written")
    return ProtocolDraft(table, tuple(sources), tuple(notes), f"{base.source} with {source}")


def protocol_toml(draft: ProtocolDraft, patient: Patient) -> str:
    """The TOML file of ``draft``: the mapping to ``patient``'s structures and each goal's
    source as comments (``planner protocol init``); :func:`planner.protocol.read_protocol`
    reads it back to the same protocol."""
    table = draft.table
    protocol = draft.protocol()
    mapping = map_structures(protocol, [s.name for s in patient.structures]).mapping
    lines = [f"# Protocol for {patient.name} ({patient.source}), drafted by planner protocol "
             f"init from {draft.source}.",
             "# Edit it and plan with: planner plan PATIENT --protocol THIS_FILE"]
    lines += [f"# Note: {note}" for note in draft.notes]
    lines += [f"name = {_toml(table['name'])}", ""]
    if "planning" in table:
        lines.append("[planning]")
        lines += [f"{k} = {_toml(v)}" for k, v in table["planning"].items()]
        lines.append("")
    for p in table["prescriptions"]:
        lines += ["[[prescriptions]]", f"target = {_toml(p['target'])}",
                  f"dose_gy = {_toml(float(p['dose_gy']))}", f"fractions = {p['fractions']}", ""]
    for name, spec in table["structures"].items():
        played = mapping.get(name)
        lines.append(f"# patient structure: {played!r}" if played
                     else "# not among the patient's structures")
        lines += [f"[structures.{_toml(name)}]", f"kind = {_toml(spec['kind'])}",
                  f"synonyms = {_toml(spec['synonyms'])}", ""]
    for goal, source in zip(table["goals"], draft.goal_sources):
        lines.append(f"# source: {source}")
        lines.append("[[goals]]")
        lines += [f"{k} = {_toml(v)}" for k, v in goal.items()]
        lines.append("")
    return "\n".join(lines)


def _toml(value: Any) -> str:
    """A TOML value: strings as JSON writes them (a subset of TOML's basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "inf" if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)
