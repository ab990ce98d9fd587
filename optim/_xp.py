"""numpy/cupy selection for optim, which may not import ``dose`` (so not ``dose._xp``).

Same rule as ``dose._xp.array_module``: cupy is used only when the caller already handed over a
cupy array or a cupyx sparse matrix, and cupy is never imported here (looked up in ``sys.modules``).
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import numpy as np


def array_module(*arrays: Any) -> ModuleType:
    """``cupy`` if any argument is a cupy array or cupyx sparse matrix, else ``numpy``."""
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return np
    sparse = sys.modules.get("cupyx.scipy.sparse")
    for a in arrays:
        if isinstance(a, cupy.ndarray) or (sparse is not None and sparse.issparse(a)):
            return cupy
    return np
