"""Write files and folders atomically: a temporary name beside the target, then a rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import InputError


def check_writable(target: Path, overwrite: bool) -> None:
    """Raise InputError if ``target`` exists and ``overwrite`` is false."""
    if target.exists() and not overwrite:
        raise InputError(f"{target}: already exists (use --force to overwrite)")


def write_file_atomic(target: Path, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file onto ``target``.

    Nothing is left behind when ``write`` raises; ``target`` is replaced only when complete.
    """
    target = Path(target)
    check_writable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_json_atomic(target: Path, payload: Any, *, overwrite: bool = False) -> Path:
    """Write ``payload`` as indented JSON with :func:`write_file_atomic` (numpy scalars as the
    Python numbers they hold)."""
    text = json.dumps(payload, indent=2, default=_plain) + "\n"
    return write_file_atomic(Path(target), lambda tmp: tmp.write_text(text, encoding="utf-8"),
                             overwrite=overwrite)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


@contextmanager
def atomic_directory(target: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target``.

    On any exception (including KeyboardInterrupt) the temporary folder is removed and an
    existing ``target`` is left untouched.
    """
    target = Path(target)
    check_writable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup) if backup.is_dir() else backup.unlink()
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
