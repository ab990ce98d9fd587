"""Errors raised at planner's boundary (input files, protocols, command line).

The CLI maps :class:`InputError` to exit code 2 and any other :class:`PlannerError`
to exit code 1, each as one line on stderr.
"""


class PlannerError(Exception):
    """A failure that planner explains in one line (no traceback)."""


class InputError(PlannerError):
    """Bad input: unreadable or inconsistent files, missing structures, impossible requests.

    The message names the file (or option) and the problem, e.g.
    ``"ct/CT.12.dcm: slice spacing 3.0 mm differs from 2.5 mm"``.
    """


class SequencingError(PlannerError):
    """A field's fluence cannot be sequenced within the segments allowed per field."""
