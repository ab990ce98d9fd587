"""Structure names as clinics write them: AAPM TG-263 standard names and their common variants.

Two names denote the same structure when their :func:`name_key` is equal:

- case, separators (space, ``_``, ``-``, ``.``) and word order do not count: ``Parotid_L``,
  ``parotid l``, ``L-Parotid`` and ``LeftParotid`` are one name (camel case splits words);
- a side may be written ``L``/``Lt``/``Left`` or ``R``/``Rt``/``Right``, before or after;
- a target (PTV, CTV, GTV, ITV) may carry its dose in the name, in Gy or cGy: ``PTV_7000``,
  ``PTV70``, ``PTV_70Gy``, ``PTV 7000cGy`` are all the 70 Gy PTV. A number without a unit is
  read as cGy from 200 up (no course prescribes 200 Gy) and as Gy from 10 up; below 10 it is an
  index (``PTV1``, ``PTV2``), not a dose.

Reference: Mayo et al., "American Association of Physicists in Medicine Task Group 263:
Standardizing Nomenclatures in Radiation Oncology", IJROBP 100:1057-1066, 2018.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Hashable

from planner.errors import InputError

TARGET_TYPES = ("ptv", "ctv", "gtv", "itv")
_SIDES = {"l": "left", "lt": "left", "left": "left", "r": "right", "rt": "right", "right": "right"}
# Camel case, digits (with a decimal point) and punctuation split a name into words.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+(?:\.\d+)?")
# A target's type, the number after it, the number's unit and the rest (on the lower-case name).
_TARGET = re.compile(rf"^({'|'.join(TARGET_TYPES)})[\s_.\-]*(\d+(?:\.\d+)?)?[\s_\-]*(cgy|gy)?"
                     r"(?![a-z])(.*)$")
# Below it a bare number after a target type is an index, from CGY_FROM it is a dose in cGy.
GY_FROM, CGY_FROM = 10.0, 200.0


def _words(text: str) -> frozenset[str]:
    return frozenset(_SIDES.get(w.lower(), w.lower()) for w in _WORDS.findall(text))


def target_dose_gy(name: str) -> float | None:
    """The dose a target's name states, Gy (``PTV_7000`` -> 70.0); None when it states none."""
    match = _TARGET.match(name.strip().lower())
    if match is None or match.group(2) is None:
        return None
    value, unit = float(match.group(2)), match.group(3)
    if unit == "cgy" or (unit is None and value >= CGY_FROM):
        return round(value / 100.0, 4)
    if unit == "gy" or value >= GY_FROM:
        return value
    return None


def name_key(name: str) -> Hashable:
    """What makes two spellings of a structure name the same (module docstring).

    Returns
    -------
    hashable
        For a target: its type, the dose its name states (Gy, or the index when the number is
        one) and the other words; otherwise the set of its words with sides spelled out.
    """
    text = name.strip()
    match = _TARGET.match(text.lower())
    if match is None:
        return _words(text)
    number = match.group(2)
    dose = target_dose_gy(text)
    # The rest of the name keeps its original case so that camel case still splits words.
    rest = text[len(text) - len(match.group(4)):] if match.group(4) else ""
    return (match.group(1), dose if dose is not None else number, _words(rest))


def matching(aliases: Iterable[str], names: Sequence[str], *, exact: bool) -> list[str]:
    """The names that spell one of ``aliases``: equal ignoring case (``exact``), or with the
    same :func:`name_key`."""
    if exact:
        lowered = {a.strip().lower() for a in aliases}
        return [n for n in names if n.strip().lower() in lowered]
    keys = {name_key(a) for a in aliases}
    return [n for n in names if name_key(n) in keys]


def one_of(what: str, found: Sequence[str], *, source: str) -> str | None:
    """The single name in ``found`` (None when empty).

    Raises
    ------
    InputError
        Several names: ``"<source>: <what> is ambiguous: it matches 'A' and 'B'; ..."``.
    """
    if len(found) > 1:
        listed = ", ".join(repr(n) for n in found[:-1]) + f" and {found[-1]!r}"
        raise InputError(f"{source}: {what} is ambiguous: it matches {listed}; rename one of "
                         f"them or name the structure exactly")
    return found[0] if found else None


def find_one(what: str, aliases: Iterable[str], names: Sequence[str], *, source: str
             ) -> str | None:
    """The one name among ``names`` that spells ``what`` or one of its ``aliases``: a name equal
    ignoring case wins over one with the same :func:`name_key`; None when none matches.

    Raises
    ------
    InputError
        Several names match equally well (:func:`one_of`).
    """
    aliases = [what, *aliases]
    found = matching(aliases, names, exact=True) or matching(aliases, names, exact=False)
    return one_of(what, found, source=source)
