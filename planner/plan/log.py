"""The log of one plan run: a line per finished step with its time, passed on as it is written."""

from __future__ import annotations

import time
from collections.abc import Callable


class StepLog:
    """Lines and step times of one run of :func:`planner.plan.plan_patient`.

    Parameters
    ----------
    progress : callable, optional
        ``progress(line, transient)``: called with every line (``transient`` False) and with the
        optimiser's iteration lines (``transient`` True, not kept).

    Attributes
    ----------
    lines : list of str
        Every line said, for ``plan.log``.
    times_s : dict
        Seconds per step, in step order: each step's time runs from the end of the previous
        step (or the log's creation) to the step's end; a step run again adds its time.
    """

    def __init__(self, progress: Callable[[str, bool], None] | None = None) -> None:
        self.progress = progress
        self.lines: list[str] = []
        self.times_s: dict[str, float] = {}
        self._started = self._last = time.perf_counter()

    def say(self, line: str) -> None:
        """Keep ``line`` and pass it on."""
        self.lines.append(line)
        if self.progress is not None:
            self.progress(line, False)

    def transient(self, line: str) -> None:
        """Pass ``line`` on without keeping it (a progress line overwritten by the next)."""
        if self.progress is not None:
            self.progress(line, True)

    def step(self, name: str, detail: str) -> None:
        """End step ``name``: record its time and say it with ``detail``."""
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        self.times_s[name] = self.times_s.get(name, 0.0) + elapsed
        self.say(f"{name:<16} {elapsed:7.1f} s  {detail}")

    def elapsed_s(self) -> float:
        """Seconds since the log was created."""
        return time.perf_counter() - self._started
