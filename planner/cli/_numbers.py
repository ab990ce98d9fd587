"""Argument types for numeric options: a bad value is a one-line usage error (exit 2) naming the
option, never a failure minutes later (``--beams 0``)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole(least: int) -> Callable[[str], int]:
    """A whole number of at least ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"must be a whole number of at least {least}, "
                                             f"got {text!r}")
        return value
    return parse


def positive(text: str) -> float:
    """A finite number above 0."""
    return _number(text, above_zero=True)


def non_negative(text: str) -> float:
    """A finite number of 0 or more."""
    return _number(text, above_zero=False)


def _number(text: str, *, above_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (above_zero and value == 0):
        raise argparse.ArgumentTypeError(
            f"must be a number {'above 0' if above_zero else 'of 0 or more'}, got {text!r}")
    return value
