"""numpy/cupy selection without importing cupy on machines that do not use it (for ``dose`` and
``planner``; ``optim``, which may not import ``dose``, has its own ``optim._xp``)."""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


def array_module(*arrays: Any) -> ModuleType:
    """``cupy`` if any argument is a cupy array or cupyx sparse matrix (cupy already imported),
    else ``numpy``."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return np
    sparse = sys.modules.get("cupyx.scipy.sparse")
    for a in arrays:
        if isinstance(a, cupy.ndarray) or (sparse is not None and sparse.issparse(a)):
            return cupy
    return np


def resolve_device(device: str) -> str:
    """Map ``auto|cpu|cuda`` to ``cpu`` or ``cuda``; ``cuda`` raises when no GPU is usable."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return "cpu"
    try:
        import cupy

        usable = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # cupy missing, or no driver: both mean no GPU here
        usable = False
    if usable:
        return "cuda"
    if device == "cuda":
        raise RuntimeError("device 'cuda' requested but cupy finds no CUDA device")
    return "cpu"


def to_device(array: Any, device: str) -> Any:
    """Move an array to ``cpu`` (numpy) or ``cuda`` (cupy)."""
    if device == "cuda":
        import cupy

        return cupy.asarray(array)
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return np.asarray(array)


def ndimage_module(xp: ModuleType) -> ModuleType:
    """``scipy.ndimage`` for numpy, ``cupyx.scipy.ndimage`` for cupy."""
    if xp is np:
        from scipy import ndimage
    else:
        from cupyx.scipy import ndimage
    return ndimage


def fft_module(xp: ModuleType) -> ModuleType:
    """``scipy.fft`` for numpy, ``cupyx.scipy.fft`` for cupy (both keep float32 in float32,
    unlike ``numpy.fft``)."""
    if xp is np:
        from scipy import fft
    else:
        from cupyx.scipy import fft
    return fft


def sparse_module(xp: ModuleType) -> ModuleType:
    """``scipy.sparse`` for numpy, ``cupyx.scipy.sparse`` for cupy."""
    if xp is np:
        import scipy.sparse as sparse
    else:
        import cupyx.scipy.sparse as sparse
    return sparse
