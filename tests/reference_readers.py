"""The independent reference readers some tests check planner's DICOM against, or a clear skip.

dicompyler-core 0.5.6 imports only with pydicom 2 (it calls ``pydicom.read_file``, gone in
pydicom 3), so it is an extra of its own: ``pip install -e '.[reference]'`` (README).
"""

from __future__ import annotations

from types import ModuleType

import pytest

DICOMPYLER_MISSING = ("dicompyler-core (the independent DICOM reader these checks use) is not "
                      "installed: pip install -e '.[reference]' (it needs pydicom 2)")


def dicompyler(module: str) -> ModuleType:
    """``dicompylercore.<module>``, or skip the test saying how to install it."""
    return pytest.importorskip(f"dicompylercore.{module}", reason=DICOMPYLER_MISSING)
