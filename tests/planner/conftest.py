"""Fixtures shared by the planner tests: a protocol file from TOML text, a patient on a line."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from dose.grid import Grid
from planner.patient import Patient, Prescription, Structure, StructureKind


@pytest.fixture
def protocol_file(tmp_path: Path) -> Callable[[str], Path]:
    """Write TOML text to ``tmp_path / "p.toml"`` and return that path (for read_protocol)."""
    def write(text: str) -> Path:
        path = tmp_path / "p.toml"
        path.write_text(text)
        return path
    return write


def _line_patient(structures: Mapping[str, tuple[StructureKind, float, float]],
                  prescriptions: Sequence[Prescription] = ()
                  ) -> tuple[Patient, scipy.sparse.csr_matrix]:
    grid = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (1, 1, 101))
    x = np.arange(101.0)
    D = scipy.sparse.csr_matrix(np.exp(-0.5 * ((x[:, None] - np.linspace(0, 100, 21)) / 4.0) ** 2))
    zeros = np.zeros(grid.shape, np.float32)
    return Patient("line", grid, zeros, zeros + 1.0,
                   tuple(Structure(name, kind, ((x >= low) & (x <= high)).reshape(grid.shape))
                         for name, (kind, low, high) in structures.items()),
                   tuple(prescriptions)), D


@pytest.fixture
def line_patient() -> Callable[..., tuple[Patient, scipy.sparse.csr_matrix]]:
    """Build a patient of 101 voxels of 1 mm on a line (one row of a 1 x 1 x 101 grid, density
    1, HU 0) with its Dij: 21 Gaussian beamlets (sigma 4 mm, 5 mm apart), unit weight.

    The builder takes ``structures`` (name to ``(kind, low_mm, high_mm)``, the voxels from low
    to high inclusive, in that order) and optional ``prescriptions``; it returns
    ``(patient, D)`` with ``D`` a (101, 21) CSR matrix."""
    return _line_patient
