"""Shared fixtures: the array backend (numpy, and cupy where a GPU is present) and ../shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
OPENKBP = SHARED / "openkbp" / "provided-data"
TG119_MAT = SHARED / "phantoms" / "TG119.mat"


def _cupy_or_skip():
    cupy = pytest.importorskip("cupy", reason="cupy not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as error:  # driver missing
        pytest.skip(f"no CUDA device ({error})")
    return cupy


@pytest.fixture(params=["numpy", "cupy"])
def xp(request):
    """The array module: every GPU test is the CPU test run again with cupy."""
    if request.param == "numpy":
        return np
    return _cupy_or_skip()


@pytest.fixture
def cupy():
    """cupy, for a test that compares it with numpy itself; skips without cupy or a GPU."""
    return _cupy_or_skip()


@pytest.fixture
def openkbp_dir() -> Path:
    if not OPENKBP.is_dir():
        pytest.skip(f"OpenKBP data not found at {OPENKBP} (../shared/openkbp)")
    return OPENKBP


@pytest.fixture
def tg119_mat() -> Path:
    if not TG119_MAT.is_file():
        pytest.skip(f"TG119 phantom not found at {TG119_MAT} (../shared/phantoms/TG119.mat)")
    return TG119_MAT
