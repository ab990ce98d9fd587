"""MLC segments (jaws + leaf positions + MU) and the fluence they deliver at the isocentre plane."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dose.machine import Machine


@dataclass(frozen=True)
class Segment:
    """One static aperture of a step-and-shoot beam and its monitor units.

    All positions are mm at the isocentre plane in IEC beam-limiting-device coordinates.

    Parameters
    ----------
    jaw_x_mm : (2,) tuple of float, mm
        X1, X2 jaw positions (X1 <= X2; X1 is on the -X side).
    jaw_y_mm : (2,) tuple of float, mm
        Y1, Y2 jaw positions (Y1 <= Y2).
    leaf_positions_mm : (n_pairs, 2) float array, mm
        Tip positions of bank A (column 0, X1 side) and bank B (column 1, X2 side) for each leaf
        pair, ordered like the machine's leaf boundaries (from -Y to +Y); A <= B.
    mu : float
        Monitor units delivered through this aperture.
    """

    jaw_x_mm: tuple[float, float]
    jaw_y_mm: tuple[float, float]
    leaf_positions_mm: np.ndarray = field(repr=False)
    mu: float

    def __post_init__(self) -> None:
        leaves = np.asarray(self.leaf_positions_mm, dtype=float)
        if leaves.ndim != 2 or leaves.shape[1] != 2:
            raise ValueError(f"leaf positions must be (n_pairs, 2), got {leaves.shape}")
        if np.any(leaves[:, 0] > leaves[:, 1] + 1e-9):
            raise ValueError("bank A leaf beyond its bank B partner in pairs "
                             f"{np.flatnonzero(leaves[:, 0] > leaves[:, 1]).tolist()}")
        if self.jaw_x_mm[0] > self.jaw_x_mm[1] or self.jaw_y_mm[0] > self.jaw_y_mm[1]:
            raise ValueError(f"jaws must satisfy X1 <= X2 and Y1 <= Y2, got {self.jaw_x_mm}, "
                             f"{self.jaw_y_mm}")
        if self.mu < 0:
            raise ValueError(f"segment MU must be >= 0, got {self.mu}")
        leaves.setflags(write=False)
        object.__setattr__(self, "leaf_positions_mm", leaves)
        object.__setattr__(self, "jaw_x_mm", (float(self.jaw_x_mm[0]), float(self.jaw_x_mm[1])))
        object.__setattr__(self, "jaw_y_mm", (float(self.jaw_y_mm[0]), float(self.jaw_y_mm[1])))


def open_field(machine: Machine, x_mm: tuple[float, float], y_mm: tuple[float, float],
               mu: float) -> Segment:
    """A rectangular field: jaws at ``x_mm``/``y_mm``, leaves of pairs inside the jaws at the X
    jaws, the others closed under the X1 jaw (gap ``min_leaf_gap_mm``)."""
    lower, upper = machine.leaf_boundaries_mm[:-1], machine.leaf_boundaries_mm[1:]
    inside = (upper > y_mm[0]) & (lower < y_mm[1])
    closed_a = x_mm[0] - machine.min_leaf_gap_mm
    leaves = np.where(inside[:, None], np.array(x_mm)[None, :],
                      np.array([closed_a, x_mm[0]])[None, :])
    return Segment(x_mm, y_mm, leaves, mu)


def _overlap(low: np.ndarray, high: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Overlap length ``(n, n_cells)`` of intervals ``[low, high]`` (n,) with cells between
    consecutive ``edges`` (n_cells + 1,)."""
    upper = np.minimum(high[:, None], edges[None, 1:])
    lower = np.maximum(low[:, None], edges[None, :-1])
    return np.clip(upper - lower, 0.0, None)


def segments_fluence(segments: list[Segment] | tuple[Segment, ...], machine: Machine,
                     u_edges_mm: np.ndarray, v_edges_mm: np.ndarray) -> np.ndarray:
    """MU-weighted fluence of segments on a pixel grid at the isocentre plane.

    Each pixel gets the open fraction of its area (exact overlap with the rectangles left open by
    the jaws and each leaf pair), times the segment's MU, summed over segments. Leaf-blocked area
    inside the jaws transmits ``machine.leaf_transmission`` of the open fluence; the jaws are
    taken as opaque.

    Parameters
    ----------
    segments : sequence of Segment
    machine : Machine
    u_edges_mm : (nu + 1,) float array, mm
        Pixel edges along X_b (leaf travel), increasing.
    v_edges_mm : (nv + 1,) float array, mm
        Pixel edges along Y_b, increasing.

    Returns
    -------
    (nv, nu) float64 array, MU
        Fluence in MU (an open pixel of a 1 MU segment holds 1).
    """
    du, dv = np.diff(u_edges_mm), np.diff(v_edges_mm)
    lower, upper = machine.leaf_boundaries_mm[:-1], machine.leaf_boundaries_mm[1:]
    fluence = np.zeros((dv.size, du.size))
    for segment in segments:
        if segment.leaf_positions_mm.shape[0] != machine.n_leaf_pairs:
            raise ValueError(f"segment has {segment.leaf_positions_mm.shape[0]} leaf pairs, "
                             f"machine {machine.name!r} has {machine.n_leaf_pairs}")
        (x1, x2), (y1, y2) = segment.jaw_x_mm, segment.jaw_y_mm
        # Rows: each leaf pair's strip cut by the Y jaws; columns: each pair's opening cut by X jaws.
        rows = _overlap(np.maximum(lower, y1), np.minimum(upper, y2), v_edges_mm) / dv
        a = np.maximum(segment.leaf_positions_mm[:, 0], x1)
        b = np.minimum(segment.leaf_positions_mm[:, 1], x2)
        opening = _overlap(a, b, u_edges_mm) / du
        in_jaws = _overlap(np.full(lower.size, x1), np.full(lower.size, x2), u_edges_mm) / du
        columns = opening + machine.leaf_transmission * (in_jaws - opening)
        fluence += segment.mu * (rows.T @ columns)
    return fluence
