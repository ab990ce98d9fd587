"""Warnings of a subcommand's work, shown as the command's own lines on stderr.

:func:`planner.cli.main.main` runs every subcommand inside :func:`warnings_to_stderr`; a
subcommand may also wrap one step of its own, to print that step's warnings before it goes on.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def warnings_to_stderr() -> Iterator[None]:
    """Print each UserWarning raised in the block as ``planner: warning: <message>`` on stderr.

    Every occurrence is shown (not once per place, as Python's default filter does), after the
    block, so the lines follow the command's style rather than Python's ``file:line`` form. If
    the block raises, nothing is printed: the error line says what went wrong.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        yield
    for w in caught:
        # One line each: planner's warnings start with the file they are about.
        print(f"planner: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
