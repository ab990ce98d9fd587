"""Treatment protocols: prescriptions, clinical goals and structure names, read from TOML.

A protocol file (``data/protocols/*.toml``) holds::

    name = "TG-119 C-shape"
    [[prescriptions]]            # one per target
    target = "PTV"
    dose_gy = 50.0
    fractions = 25
    [structures.PTV]             # every structure a prescription or goal names
    kind = "target"              # "target" or "organ"
    synonyms = ["OuterTarget"]   # other names it goes by in patients' structure sets
    [[goals]]
    structure = "PTV"
    metric = "D95%"              # D<v>% | D<v>cc | V<d>Gy | V<d>% | Dmean | Dmax | Dmin
    min = 50.0                   # exactly one of min / max
    unit = "Gy"                  # dose metrics: Gy or % (of the reference dose); V metrics: % or cc
    priority = "hard"            # or "soft" (may be traded against hard goals)
    optional = false             # true: skipped, not an error, when the patient lacks the structure
    [planning]                   # optional: the dosimetrist's unwritten rules (defaults shown)
    hot_spot_percent = 110.0     # outside the PTVs at most hot_spot_cc above this % of the
    hot_spot_cc = 1.0            #   highest prescription (RTOG 0225 / 0615)
    max_outside_percent = 115.0  # and no point above this % (a hard limit on the global maximum)
    air_hu = -400.0              # target voxels below this HU are air, left out of the optimised
    skin_crop_mm = 3.0           #   target with those within this distance of the skin
    normalise = true             # the deliverable plan scaled so the main target's D95 is its Rx

Every protocol gets goals on ``Outside PTVs`` (the body outside every prescribed target, derived
by :mod:`planner.planning_structures`) from its ``[planning]`` settings: volume above
``hot_spot_percent`` at most ``hot_spot_cc`` (hard), maximum at most ``max_outside_percent``
(hard), and the mean dose as low as the trade-offs allow (soft, no limit). A protocol that states
its own goals on ``Outside PTVs`` keeps them instead.

A dose in % refers to the structure's own prescription when it is a target with one, otherwise to
the highest prescription. Goals are evaluated with :mod:`optim.dvh` (``Dmax`` is D at 0 %, the
hottest voxel; ``Dmin`` is D at 100 %).
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dose._data import DATA_DIR
from optim.autoplan import PlanGoal
from planner.errors import InputError
from planner.names import matching, one_of
from planner.patient import Prescription

PROTOCOL_DIR = DATA_DIR / "protocols"

#: The derived structure every protocol has goals on: the body outside every prescribed target
#: (:func:`planner.planning_structures.planning_structures` makes its mask).
OUTSIDE_TARGETS = "Outside PTVs"

GoalKind = Literal["dose_at_volume", "volume_at_dose", "mean_dose"]

_D_VOLUME = re.compile(r"^D(\d+(?:\.\d+)?)(%|cc)$")
#: A volume-at-dose metric: ``V70Gy`` (the dose in Gy) or ``V95%`` (in % of the reference dose).
V_DOSE_METRIC = re.compile(r"^V(\d+(?:\.\d+)?)(Gy|%)$")
_NAMED = {"Dmean": ("mean_dose", None, None), "Dmax": ("dose_at_volume", 0.0, "%"),
          "Dmin": ("dose_at_volume", 100.0, "%")}


@dataclass(frozen=True)
class Goal:
    """One clinical goal as the protocol states it (relative units kept).

    Attributes
    ----------
    structure : str
        Protocol name of the structure.
    metric : str
        As written: ``"D95%"``, ``"D0.1cc"``, ``"V70Gy"``, ``"Dmean"``, ``"Dmax"``.
    kind : {"dose_at_volume", "volume_at_dose", "mean_dose"}
    volume : float or None
        For ``dose_at_volume``: the volume, in ``volume_unit``.
    volume_unit : {"%", "cc"} or None
    dose : float or None
        For ``volume_at_dose``: the dose threshold, in ``dose_unit``.
    dose_unit : {"Gy", "%"} or None
    bound : {"max", "min"}
    value : float
        The limit, in ``unit``.
    unit : str
        ``"Gy"`` or ``"%"`` (of the reference dose) for dose metrics; ``"%"`` (of the structure)
        or ``"cc"`` for volume metrics.
    priority : {"hard", "soft"}
    optional : bool
    """

    structure: str
    metric: str
    kind: GoalKind
    volume: float | None
    volume_unit: str | None
    dose: float | None
    dose_unit: str | None
    bound: Literal["max", "min"]
    value: float
    unit: str
    priority: Literal["hard", "soft"]
    optional: bool

    @property
    def hard(self) -> bool:
        return self.priority == "hard"

    @property
    def label(self) -> str:
        """E.g. ``"PTV D95% >= 50 Gy"``."""
        if math.isinf(self.value):
            return f"{self.structure} {self.metric} as low as possible"
        sign = "<=" if self.bound == "max" else ">="
        return f"{self.structure} {self.metric} {sign} {self.value:g} {self.unit}"


@dataclass(frozen=True)
class PlanningSettings:
    """The rules a dosimetrist applies without writing them down (the ``[planning]`` table).

    Attributes
    ----------
    hot_spot_percent : float, % of the highest prescription
        Outside the PTVs, at most ``hot_spot_cc`` may receive more (RTOG 0225 / 0615: at most
        1 cc of tissue outside the PTVs above 110 % of the highest prescription).
    hot_spot_cc : float, cm^3
    max_outside_percent : float, % of the highest prescription
        No point outside the PTVs above it.
    air_hu : float, HU
        Target voxels below it are air: left out of the optimised target and its coverage goals
        (the whole PTV's figures are still reported).
    skin_crop_mm : float, mm
        Target voxels closer than this to the body's surface (the build-up region) are left out
        of the optimised target as well.
    normalise : bool
        Scale the deliverable plan so that the main (highest-prescription) target's D95 on its
        optimised volume equals its prescription, where that keeps every hard goal met.
    """

    hot_spot_percent: float = 110.0
    hot_spot_cc: float = 1.0
    max_outside_percent: float = 115.0
    air_hu: float = -400.0
    skin_crop_mm: float = 3.0
    normalise: bool = True


@dataclass(frozen=True)
class StructureSpec:
    """A structure the protocol knows: its name, kind and synonyms."""

    name: str
    kind: Literal["target", "organ"]
    synonyms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Protocol:
    """A validated protocol (see the module docstring for the file format).

    Attributes
    ----------
    name : str
    prescriptions : tuple of Prescription
    structures : tuple of StructureSpec
    goals : tuple of Goal
        The file's goals and those on ``OUTSIDE_TARGETS`` that ``planning`` adds.
    source : str
        The file it came from.
    planning : PlanningSettings
    """

    name: str
    prescriptions: tuple[Prescription, ...]
    structures: tuple[StructureSpec, ...]
    goals: tuple[Goal, ...]
    source: str
    planning: PlanningSettings = field(default_factory=PlanningSettings)

    def structure(self, name: str) -> StructureSpec:
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(f"{self.source}: no structure {name!r}")

    def prescription_gy(self, target: str) -> float | None:
        """Prescribed dose of ``target``, Gy; None when it has no prescription."""
        return next((p.dose_gy for p in self.prescriptions if p.target == target), None)

    def reference_dose_gy(self, structure: str) -> float:
        """The dose that % units of a goal on ``structure`` refer to (module docstring)."""
        own = self.prescription_gy(structure)
        return own if own is not None else max(p.dose_gy for p in self.prescriptions)


def protocol_path(name_or_path: str | Path) -> Path:
    """A file path as given, or the bundled ``data/protocols/<name>.toml`` for a bare name."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        return path
    bundled = PROTOCOL_DIR / f"{name_or_path}.toml"
    if not bundled.is_file():
        names = sorted(p.stem for p in PROTOCOL_DIR.glob("*.toml"))
        raise InputError(f"{name_or_path}: no such protocol file or bundled protocol "
                         f"(bundled: {', '.join(names)})")
    return bundled


def read_protocol(name_or_path: str | Path) -> Protocol:
    """Read and validate a protocol TOML file (or a bundled protocol by name).

    Raises
    ------
    InputError
        Unreadable file, unknown key or metric, impossible value (negative dose, D110%, a V
        metric above 100 %), a goal or prescription naming an undeclared structure; the message
        names the file and the key.
    """
    path = protocol_path(name_or_path)
    src = str(path)
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as error:
        raise InputError(f"{src}: cannot read protocol ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise InputError(f"{src}: not valid TOML ({error})") from None
    return protocol_from_table(data, src)


def protocol_from_table(data: dict[str, Any], src: str) -> Protocol:
    """Validate a protocol given as the table its TOML file holds (:func:`read_protocol`).

    Parameters
    ----------
    data : dict
        The parsed TOML document (module docstring).
    src : str
        Where it came from, named in every error message and kept as ``Protocol.source``.

    Raises
    ------
    InputError
        As :func:`read_protocol`.
    """
    _keys(src, "", data, required={"name", "prescriptions", "structures", "goals"},
          allowed={"planning"})
    planning = _planning(src, data.get("planning", {}))

    structures = []
    if not isinstance(data["structures"], dict):
        raise InputError(f"{src}: structures: must be a table of structures")
    for name, spec in data["structures"].items():
        key = f"structures.{name}"
        _keys(src, key, spec, required={"kind"}, allowed={"synonyms"})
        if spec["kind"] not in ("target", "organ"):
            raise InputError(f"{src}: {key}.kind: must be 'target' or 'organ', "
                             f"got {spec['kind']!r}")
        synonyms = spec.get("synonyms", [])
        if not isinstance(synonyms, list) or not all(isinstance(s, str) for s in synonyms):
            raise InputError(f"{src}: {key}.synonyms: must be a list of names")
        structures.append(StructureSpec(name, spec["kind"], tuple(synonyms)))
    kinds = {s.name: s.kind for s in structures}

    prescriptions = []
    for i, rx in enumerate(_table_list(src, "prescriptions", data["prescriptions"])):
        key = f"prescriptions[{i}]"
        _keys(src, key, rx, required={"target", "dose_gy", "fractions"})
        if kinds.get(rx["target"]) != "target":
            raise InputError(f"{src}: {key}.target: {rx['target']!r} is not a structure of "
                             f"kind 'target' in [structures]")
        try:
            prescriptions.append(Prescription(rx["target"], float(rx["dose_gy"]),
                                              int(rx["fractions"])))
        except (TypeError, ValueError) as error:
            raise InputError(f"{src}: {key}: {error}") from None
    if not prescriptions:
        raise InputError(f"{src}: prescriptions: at least one prescription is needed")

    if OUTSIDE_TARGETS in kinds:
        if kinds[OUTSIDE_TARGETS] != "organ":
            raise InputError(f"{src}: structures.{OUTSIDE_TARGETS}: must be of kind 'organ' "
                             f"(it is derived: the body outside every prescribed target)")
    else:
        structures.append(StructureSpec(OUTSIDE_TARGETS, "organ"))
        kinds[OUTSIDE_TARGETS] = "organ"
    protocol = Protocol(str(data["name"]), tuple(prescriptions), tuple(structures), (), src,
                        planning)
    goals = tuple(_goal(src, i, g, protocol, kinds)
                  for i, g in enumerate(_table_list(src, "goals", data["goals"])))
    if not any(g.structure == OUTSIDE_TARGETS for g in goals):
        goals += implicit_goals(planning)
    return Protocol(protocol.name, protocol.prescriptions, protocol.structures, goals, src,
                    planning)


def protocol_table(protocol: Protocol) -> dict[str, Any]:
    """The TOML table of ``protocol``, as :func:`protocol_from_table` reads it back.

    The goals on ``OUTSIDE_TARGETS`` are left out when they are the implicit ones its
    ``[planning]`` settings give, and so is that derived structure.
    """
    goals = list(protocol.goals)
    implicit = implicit_goals(protocol.planning)
    if tuple(goals[-len(implicit):]) == implicit:
        goals = goals[:-len(implicit)]
    outside_stated = any(g.structure == OUTSIDE_TARGETS for g in goals)
    return {
        "name": protocol.name,
        "planning": dataclasses.asdict(protocol.planning),
        "prescriptions": [{"target": p.target, "dose_gy": p.dose_gy, "fractions": p.fractions}
                          for p in protocol.prescriptions],
        "structures": {s.name: {"kind": s.kind, "synonyms": list(s.synonyms)}
                       for s in protocol.structures
                       if s.name != OUTSIDE_TARGETS or outside_stated},
        "goals": [goal_table(g) for g in goals],
    }


def goal_table(goal: Goal) -> dict[str, Any]:
    """One ``[[goals]]`` entry of ``goal`` (:func:`protocol_table`)."""
    return {"structure": goal.structure, "metric": goal.metric, goal.bound: goal.value,
            "unit": goal.unit, "priority": goal.priority, "optional": goal.optional}


def implicit_goals(planning: PlanningSettings) -> tuple[Goal, ...]:
    """The goals on ``OUTSIDE_TARGETS`` that every protocol gets (module docstring)."""
    return (
        Goal(OUTSIDE_TARGETS, f"V{planning.hot_spot_percent:g}%", "volume_at_dose", None, None,
             planning.hot_spot_percent, "%", "max", planning.hot_spot_cc, "cc", "hard", False),
        Goal(OUTSIDE_TARGETS, "Dmax", "dose_at_volume", 0.0, "%", None, None, "max",
             planning.max_outside_percent, "%", "hard", False),
        Goal(OUTSIDE_TARGETS, "Dmean", "mean_dose", None, None, None, None, "max", math.inf,
             "Gy", "soft", False),
    )


_PLANNING_NUMBERS = {"hot_spot_percent": (100.0, 200.0), "hot_spot_cc": (0.0, 1000.0),
                     "max_outside_percent": (100.0, 200.0), "air_hu": (-1000.0, 0.0),
                     "skin_crop_mm": (0.0, 20.0)}


def _planning(src: str, table: Any) -> PlanningSettings:
    """The ``[planning]`` table, each number checked against a sensible range."""
    _keys(src, "planning", table, required=set(), allowed=set(_PLANNING_NUMBERS) | {"normalise"})
    values: dict[str, Any] = {}
    for key, (low, high) in _PLANNING_NUMBERS.items():
        if key not in table:
            continue
        value = table[key]
        if (not isinstance(value, (int, float)) or isinstance(value, bool)
                or not low <= value <= high):
            raise InputError(f"{src}: planning.{key}: must be a number from {low:g} to "
                             f"{high:g}, got {value!r}")
        values[key] = float(value)
    if "normalise" in table:
        if not isinstance(table["normalise"], bool):
            raise InputError(f"{src}: planning.normalise: must be true or false")
        values["normalise"] = table["normalise"]
    settings = PlanningSettings(**values)
    if settings.max_outside_percent < settings.hot_spot_percent:
        raise InputError(f"{src}: planning.max_outside_percent: {settings.max_outside_percent:g} "
                         f"is below hot_spot_percent {settings.hot_spot_percent:g}")
    return settings


def _table_list(src: str, key: str, value: Any) -> list[dict]:
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise InputError(f"{src}: {key}: must be an array of tables ([[{key}]])")
    return value


def _keys(src: str, key: str, table: Any, required: set[str],
          allowed: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    where = f"{key}." if key else ""
    if not isinstance(table, dict):
        raise InputError(f"{src}: {key}: must be a table")
    for k in sorted(required - table.keys()):
        raise InputError(f"{src}: {where}{k}: missing")
    for k in sorted(table.keys() - required - allowed):
        raise InputError(f"{src}: {where}{k}: unknown key")


def _goal(src: str, i: int, g: dict, protocol: Protocol, kinds: dict[str, str]) -> Goal:
    key = f"goals[{i}]"
    _keys(src, key, g, required={"structure", "metric", "unit"},
          allowed={"min", "max", "priority", "optional"})
    structure, metric, unit = g["structure"], str(g["metric"]), g["unit"]
    if structure not in kinds:
        raise InputError(f"{src}: {key}.structure: {structure!r} is not declared in [structures]")
    if ("min" in g) == ("max" in g):
        raise InputError(f"{src}: {key}: give exactly one of 'min' and 'max'")
    bound = "min" if "min" in g else "max"
    value = g[bound]
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
        raise InputError(f"{src}: {key}.{bound}: must be a non-negative number, got {value!r}")
    priority = g.get("priority", "hard")
    if priority not in ("hard", "soft"):
        raise InputError(f"{src}: {key}.priority: must be 'hard' or 'soft', got {priority!r}")
    optional = g.get("optional", False)
    if not isinstance(optional, bool):
        raise InputError(f"{src}: {key}.optional: must be true or false")

    volume = volume_unit = dose = dose_unit = None
    if metric in _NAMED:
        kind, volume, volume_unit = _NAMED[metric]
    elif m := _D_VOLUME.match(metric):
        kind, volume, volume_unit = "dose_at_volume", float(m.group(1)), m.group(2)
        if volume_unit == "%" and volume > 100.0:
            raise InputError(f"{src}: {key}.metric: {metric}: a volume above 100 % is impossible")
    elif m := V_DOSE_METRIC.match(metric):
        kind, dose, dose_unit = "volume_at_dose", float(m.group(1)), m.group(2)
    else:
        raise InputError(f"{src}: {key}.metric: unknown metric {metric!r} (use D<v>%, D<v>cc, "
                         f"V<d>Gy, V<d>%, Dmean, Dmax or Dmin)")
    if kind == "volume_at_dose":
        if unit not in ("%", "cc"):
            raise InputError(f"{src}: {key}.unit: a volume goal is in '%' or 'cc', got {unit!r}")
        if unit == "%" and value > 100.0:
            raise InputError(f"{src}: {key}.{bound}: {value} % of a volume is impossible")
    elif unit not in ("Gy", "%"):
        raise InputError(f"{src}: {key}.unit: a dose goal is in 'Gy' or '%', got {unit!r}")
    if kind == "mean_dose" and bound == "min":
        raise InputError(f"{src}: {key}: a minimum mean dose is not supported (use D<v>%)")
    return Goal(structure, metric, kind, volume, volume_unit, dose, dose_unit, bound,
                float(value), unit, priority, optional)


@dataclass(frozen=True)
class StructureMapping:
    """Which patient structure plays each protocol structure.

    Attributes
    ----------
    mapping : dict
        Protocol name -> patient structure name.
    unmapped : tuple of str
        Patient structures no protocol structure claimed (reported, not an error).
    missing : tuple of str
        Protocol structures the patient lacks whose goals are all optional (skipped).
    """

    mapping: dict[str, str]
    unmapped: tuple[str, ...]
    missing: tuple[str, ...]


def map_structures(protocol: Protocol, names: Sequence[str]) -> StructureMapping:
    """Match a patient's structure names to the protocol's.

    A protocol structure matches a patient name equal to its name or one of its synonyms ignoring
    case, else one that spells it the same way (:func:`planner.names.name_key`: case,
    separators, word order, L/Lt/Left sides and a target's dose in Gy or cGy ignored). Exact
    matches are made for every protocol structure first; each patient name serves one protocol
    structure at most.

    ``OUTSIDE_TARGETS`` is derived, not delineated: it is never matched (see
    :func:`planner.planning_structures.planning_structures`).

    A protocol structure whose goals are all optional may be missing (e.g. an elective PTV63 that
    was not contoured): it is listed in ``missing`` and its prescription and goals are skipped.

    Raises
    ------
    InputError
        A protocol structure with a non-optional goal is missing; a protocol structure that
        matches several patient structures equally well (the message lists them).
    """
    remaining = list(names)
    mapping: dict[str, str] = {}
    for exact in (True, False):
        for spec in protocol.structures:
            if spec.name in mapping or spec.name == OUTSIDE_TARGETS:
                continue
            found = one_of(f"structure {spec.name!r}",
                           matching((spec.name, *spec.synonyms), remaining, exact=exact),
                           source=protocol.source)
            if found is not None:
                mapping[spec.name] = found
                remaining.remove(found)
    missing = [s.name for s in protocol.structures
               if s.name not in mapping and s.name != OUTSIDE_TARGETS]
    for name in missing:
        needed = [g.label for g in protocol.goals if g.structure == name and not g.optional]
        if needed:
            raise InputError(f"{protocol.source}: structure {name!r} (needed by "
                             f"{'; '.join(needed)}) not found among the patient's structures "
                             f"{list(names)}; mark its goals optional = true to skip them")
    return StructureMapping(mapping, tuple(remaining), tuple(missing))


def plan_goal(protocol: Protocol, goal: Goal, indices: Any, voxel_volume_cc: float,
              objective_indices: Any = None) -> PlanGoal:
    """The optimiser's form of ``goal`` (absolute Gy and volume fractions) for one structure.

    Parameters
    ----------
    protocol : Protocol
    goal : Goal
    indices : (n,) int array
        The structure's voxels (rows of the dose-influence matrix).
    voxel_volume_cc : float, cm^3
        The volume each index stands for (a voxel, or a sample of several); for cc volumes:
        fraction = cc / (n * voxel_volume_cc), clipped to 1.
    objective_indices : (m,) int array, optional
        Overlap-resolved voxels for the objective.
    """
    ref = protocol.reference_dose_gy(goal.structure)
    structure_cc = int(indices.shape[0]) * voxel_volume_cc

    def to_gy(v: float, unit: str | None) -> float:
        return v * ref / 100.0 if unit == "%" else v

    def to_fraction(v: float, unit: str | None) -> float:
        return min(v / 100.0 if unit == "%" else v / structure_cc, 1.0)

    if goal.kind == "volume_at_dose":
        parameter = to_gy(goal.dose, goal.dose_unit)  # type: ignore[arg-type]
        limit = to_fraction(goal.value, goal.unit)
    else:
        parameter = (0.0 if goal.kind == "mean_dose"
                     else to_fraction(goal.volume, goal.volume_unit))  # type: ignore[arg-type]
        limit = to_gy(goal.value, goal.unit)
    is_target = protocol.structure(goal.structure).kind == "target"
    return PlanGoal(goal.label, indices, goal.kind, parameter, goal.bound, limit, goal.hard,
                    is_target, objective_indices)
