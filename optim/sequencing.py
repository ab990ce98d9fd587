"""Leaf sequencing: one beam's fluence map into step-and-shoot MLC segments.

The fluence is stratified into integer intensity levels, decomposed into apertures (one open
interval per leaf pair at most) by a published step-and-shoot algorithm, and each aperture is
turned into leaf and jaw positions that respect the machine's limits.

Coordinates are those of the beam limiting device at the isocentre plane (IEC 61217, collimator
0): leaves travel along X, leaf pairs are stacked along Y. Bank A is the X1 (negative) side,
bank B the X2 side. Every length is in mm at the isocentre distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# An aperture in index form: (n_pairs, 2) int array of column-edge indices [start, stop) per leaf
# pair, start == stop meaning closed; paired with its weight in intensity levels.
_Aperture = tuple[np.ndarray, int]


@dataclass(frozen=True)
class LeafSequence:
    """The step-and-shoot segments of one beam.

    Parameters
    ----------
    leaf_positions_mm : (n_segments, n_pairs, 2) float array, mm
        ``[..., 0]`` bank A (X1 side), ``[..., 1]`` bank B (X2 side); for every leaf pair,
        including the closed ones (parked behind a jaw with the minimum gap).
    jaws_mm : (n_segments, 4) float array, mm
        ``X1, X2, Y1, Y2`` of each segment, tracking its open leaves.
    weights : (n_segments,) float array, fluence units
        Relative weight of each segment (the same units as the input fluence).
    stratified_fluence : (n_pairs, n_cols) float array, fluence units
        The level fluence the segments deliver, on leaf-pair rows and beamlet columns:
        ``sum_k weights[k] * aperture_k`` equals it exactly (up to float rounding).
    n_levels : int
        Number of intensity levels used (after the minimum weight and segment-count limits).
    """

    leaf_positions_mm: np.ndarray
    jaws_mm: np.ndarray
    weights: np.ndarray
    stratified_fluence: np.ndarray
    n_levels: int

    @property
    def n_segments(self) -> int:
        return int(self.weights.shape[0])


def leaf_pair_fluence(
    fluence: np.ndarray, row_edges_mm: np.ndarray, leaf_boundaries_mm: np.ndarray
) -> np.ndarray:
    """Fluence per leaf pair: the width-weighted mean of the beamlet rows under each pair.

    A 10 mm leaf over two 5 mm beamlet rows gets their mean; a beamlet row wider than a leaf
    gives its value to every pair it covers; pairs outside the beamlet rows get 0.

    Parameters
    ----------
    fluence : (n_rows, n_cols) float array
    row_edges_mm : (n_rows + 1,) float array, mm, increasing
        Beamlet row boundaries along Y.
    leaf_boundaries_mm : (n_pairs + 1,) float array, mm, increasing

    Returns
    -------
    (n_pairs, n_cols) float array
    """
    low = np.maximum(leaf_boundaries_mm[:-1, None], row_edges_mm[None, :-1])
    high = np.minimum(leaf_boundaries_mm[1:, None], row_edges_mm[None, 1:])
    overlap = np.clip(high - low, 0.0, None)  # (n_pairs, n_rows), mm
    return (overlap / np.diff(leaf_boundaries_mm)[:, None]) @ fluence


def _row_intervals(open_row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and stops (column-edge indices) of the runs of True in a boolean row."""
    step = np.diff(np.concatenate(([0], open_row.astype(np.int8), [0])))
    return np.flatnonzero(step == 1), np.flatnonzero(step == -1)


def _reducing_level(levels: np.ndarray) -> list[_Aperture]:
    """Reducing-level decomposition after Xia & Verhey (1998).

    Each step takes the largest power of two ``d`` not above the current maximum level, opens
    every run of columns whose residual level is at least ``d`` (the ``j``-th run of every pair
    goes into the ``j``-th aperture of the step), and subtracts ``d`` there. The residual stays
    non-negative, and the power-of-two steps keep the number of steps near ``log2`` of the
    maximum level per distinct plateau.
    """
    residual = levels.astype(np.int64).copy()
    apertures: list[_Aperture] = []
    while residual.max() > 0:
        d = 1 << (int(residual.max()).bit_length() - 1)
        runs = [_row_intervals(row >= d) for row in residual]
        for j in range(max(len(starts) for starts, _ in runs)):
            index = np.zeros((levels.shape[0], 2), dtype=np.int64)
            for pair, (starts, stops) in enumerate(runs):
                if j < len(starts):
                    index[pair] = starts[j], stops[j]
                    residual[pair, starts[j]:stops[j]] -= d
            apertures.append((index, d))
    return apertures


def _unidirectional_sweep(levels: np.ndarray) -> list[_Aperture]:
    """Unidirectional leaf sweep in step-and-shoot form (Bortfeld et al. 1994).

    In each pair, every unit rise of the level profile is a start position of leaf A and every
    unit fall a stop position of leaf B; pairing the ``k``-th start with the ``k``-th stop gives
    unit-weight intervals in which both leaves only move towards X2, with the fewest monitor
    units a unidirectional sweep can have (the largest sum of rises over the pairs). Aperture
    ``k`` holds interval ``k`` of every pair; identical consecutive apertures merge.
    """
    n_pairs = levels.shape[0]
    columns = np.arange(levels.shape[1] + 1)
    units = []
    for row in levels.astype(np.int64):
        step = np.diff(np.concatenate(([0], row, [0])))
        units.append((np.repeat(columns, np.clip(step, 0, None)),
                      np.repeat(columns, np.clip(-step, 0, None))))
    apertures: list[_Aperture] = []
    for k in range(max(len(starts) for starts, _ in units)):
        index = np.zeros((n_pairs, 2), dtype=np.int64)
        for pair, (starts, stops) in enumerate(units):
            if k < len(starts):
                index[pair] = starts[k], stops[k]
        if apertures and np.array_equal(apertures[-1][0], index):
            apertures[-1] = (index, apertures[-1][1] + 1)
        else:
            apertures.append((index, 1))
    return apertures


_DECOMPOSE: dict[str, Callable[[np.ndarray], list[_Aperture]]] = {
    "xia": _reducing_level,
    "sweep": _unidirectional_sweep,
}
METHODS: tuple[str, ...] = tuple(_DECOMPOSE)


def _split_unconnected(index: np.ndarray) -> list[np.ndarray]:
    """Split an aperture into groups of consecutive open pairs whose intervals overlap.

    Without interdigitation, leaf A of a pair may not pass leaf B of a neighbouring pair; a
    closed pair between two open ones could then not be parked behind the jaws. Each group
    becomes its own aperture (same weight), so the closed pairs of every aperture lie outside
    its Y jaws.
    """
    groups: list[np.ndarray] = []
    current: np.ndarray | None = None
    previous = -2
    for pair in np.flatnonzero(index[:, 1] > index[:, 0]):
        start, stop = index[pair]
        connected = (current is not None and pair == previous + 1
                     and start < index[previous, 1] and index[previous, 0] < stop)
        if not connected:
            current = np.zeros_like(index)
            groups.append(current)
        assert current is not None
        current[pair] = start, stop
        previous = pair
    return groups


def _leaf_positions(
    index: np.ndarray,
    col_edges_mm: np.ndarray,
    leaf_boundaries_mm: np.ndarray,
    min_gap_mm: float,
    leaf_travel_mm: tuple[float, float],
    jaw_overtravel_mm: tuple[float, float],
    interdigitation: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Leaf positions ``(n_pairs, 2)`` and jaws ``(4,)`` of one aperture in index form.

    The jaws sit on the outermost open leaves, or as close as their overtravel past the axis
    allows (then they stop short and the leaves alone shape that side).
    """
    is_open = index[:, 1] > index[:, 0]
    open_pairs = np.flatnonzero(is_open)
    leaves = col_edges_mm[index].astype(float)
    over_x, over_y = jaw_overtravel_mm
    x1 = min(float(leaves[is_open, 0].min()), over_x)
    x2 = max(float(leaves[is_open, 1].max()), -over_x)
    y1 = min(float(leaf_boundaries_mm[open_pairs[0]]), over_y)
    y2 = max(float(leaf_boundaries_mm[open_pairs[-1] + 1]), -over_y)
    if interdigitation:
        # Every closed pair's gap goes just behind the X1 jaw (or the X2 jaw when leaf A cannot
        # travel that far), which also hides the pairs between open ones.
        if x1 - min_gap_mm >= leaf_travel_mm[0]:
            parked = (x1 - min_gap_mm, x1)
        else:
            parked = (x2, x2 + min_gap_mm)
        leaves[~is_open] = parked
    else:
        # Apertures are connected (see _split_unconnected): closed pairs lie outside the Y jaws
        # (unless a Y jaw cannot reach the open pairs for its overtravel) and line up with the nearest open pair's leaf A, the only place where the whole stack
        # of closed pairs keeps clear of both neighbours' opposing leaves.
        first, last = open_pairs[0], open_pairs[-1]
        leaves[:first] = leaves[first, 0], leaves[first, 0] + min_gap_mm
        leaves[last + 1:] = leaves[last, 0], leaves[last, 0] + min_gap_mm
    return leaves, np.array([x1, x2, y1, y2])


def _check_machine(
    row_edges_mm: np.ndarray,
    col_edges_mm: np.ndarray,
    leaf_boundaries_mm: np.ndarray,
    min_gap_mm: float,
    leaf_travel_mm: tuple[float, float],
    jaw_overtravel_mm: tuple[float, float],
    max_leaf_span_mm: float | None,
) -> None:
    """ValueError when the beamlet grid does not fit the MLC."""
    if row_edges_mm[0] < leaf_boundaries_mm[0] or row_edges_mm[-1] > leaf_boundaries_mm[-1]:
        raise ValueError(f"beamlet rows span {row_edges_mm[0]} to {row_edges_mm[-1]} mm, beyond "
                         f"the leaf pairs ({leaf_boundaries_mm[0]} to {leaf_boundaries_mm[-1]} mm)")
    low, high = leaf_travel_mm
    if col_edges_mm[0] < low or col_edges_mm[-1] > high:
        raise ValueError(f"beamlet columns span {col_edges_mm[0]} to {col_edges_mm[-1]} mm, beyond "
                         f"the leaf travel ({low} to {high} mm)")
    # Leaves stay between the X jaws' extreme positions: the columns, widened to where the jaws
    # stop when they cannot cross the axis far enough to reach them.
    left = min(col_edges_mm[0], jaw_overtravel_mm[0])
    right = max(col_edges_mm[-1], -jaw_overtravel_mm[0])
    if left - min_gap_mm < low and right + min_gap_mm > high:
        raise ValueError(f"no room to park closed leaf pairs: columns and jaws span {left} to "
                         f"{right} mm, leaf travel {low} to {high} mm")
    if np.diff(col_edges_mm).min() < min_gap_mm:
        raise ValueError(f"beamlet columns ({np.diff(col_edges_mm).min()} mm) are narrower than "
                         f"the minimum leaf gap {min_gap_mm} mm")
    width = right - left
    if max_leaf_span_mm is not None and width + min_gap_mm > max_leaf_span_mm:
        raise ValueError(f"field {width} mm wide (plus the {min_gap_mm} mm leaf gap) exceeds the "
                         f"maximum leaf span {max_leaf_span_mm} mm; split the beam")


def sequence_leaves(
    fluence: np.ndarray,
    row_edges_mm: np.ndarray,
    col_edges_mm: np.ndarray,
    leaf_boundaries_mm: np.ndarray,
    *,
    method: str = "sweep",
    n_levels: int = 10,
    max_segments: int | None = None,
    min_weight: float = 0.0,
    min_gap_mm: float = 0.5,
    leaf_travel_mm: tuple[float, float] = (-200.0, 200.0),
    jaw_overtravel_mm: tuple[float, float] = (np.inf, np.inf),
    max_leaf_span_mm: float | None = None,
    interdigitation: bool = True,
) -> LeafSequence:
    """Sequence one beam's fluence into step-and-shoot MLC segments.

    The fluence is averaged onto leaf-pair rows (:func:`leaf_pair_fluence`), stratified into
    ``n_levels`` equal intensity levels of its maximum (rounded to the nearest level), and
    decomposed exactly into apertures. Fidelity is traded for segments by ``n_levels``; the
    limits lower it further:

    - ``min_weight``: the levels are capped at ``max(fluence) / min_weight`` so that every
      segment (a whole number of levels) carries at least ``min_weight``; no segment is dropped,
      so the segments still deliver the stratified fluence exactly.
    - ``max_segments``: the largest number of levels (at most the one asked for) whose
      decomposition needs no more than ``max_segments`` segments is used.

    Parameters
    ----------
    fluence : (n_rows, n_cols) float array, fluence units, non-negative
        One beam's fluence on the beamlet grid: rows along Y (across leaf motion), columns
        along X (leaf motion). A cupy array must be moved to the host first (``.get()``).
    row_edges_mm : (n_rows + 1,) float array, mm, increasing
        Beamlet row boundaries along Y at the isocentre.
    col_edges_mm : (n_cols + 1,) float array, mm, increasing
        Beamlet column boundaries along X at the isocentre; open leaves stop on them.
    leaf_boundaries_mm : (n_pairs + 1,) float array, mm, increasing
        MLC leaf-pair boundaries along Y (61 values for a 120-leaf MLC).
    method : {"sweep", "xia"}
        ``"sweep"``: unidirectional sweep (Bortfeld et al. 1994): its total weight, the
        largest sum of level rises along a leaf pair, is the least any decomposition into
        apertures can have (Engel 2005). ``"xia"``: reducing-level decomposition (Xia & Verhey 1998). On
        IMRT-like maps the sweep needed fewer segments and about a third of the MU at 10 levels
        (``benchmarks/bench_sequencing.py``), hence the default.
    n_levels : int
        Number of intensity levels (>= 1): the fidelity / segment-count trade-off.
    max_segments : int or None
        Most segments allowed for the beam.
    min_weight : float, fluence units
        Least weight of a segment: the machine's minimum MU per segment expressed in fluence
        units.
    min_gap_mm : float, mm
        Minimum gap between opposing leaves (also kept by closed pairs).
    leaf_travel_mm : (2,) float, mm
        Lowest and highest position any leaf tip can reach.
    jaw_overtravel_mm : (2,) float, mm
        How far the X and the Y jaws may cross the central axis (X1 up to ``+x``, X2 down to
        ``-x``; likewise Y).
    max_leaf_span_mm : float or None, mm
        Largest distance between leaves of one bank (None: no limit).
    interdigitation : bool
        Whether leaf A of a pair may pass leaf B of a neighbouring pair.

    Returns
    -------
    LeafSequence

    Raises
    ------
    ValueError
        Unknown ``method`` (the message lists the valid names), a beamlet grid that does not fit
        the MLC, or a fluence that needs more than ``max_segments`` segments even at one level.

    References
    ----------
    .. [1] L. Xia and L. J. Verhey, "Multileaf collimator leaf sequencing algorithm for intensity
       modulated beams with multiple static segments", Med. Phys. 25, 1424-1434 (1998).
    .. [2] T. R. Bortfeld, D. L. Kahler, T. J. Waldron and A. L. Boyer, "X-ray field compensation
       with multileaf collimators", Int. J. Radiat. Oncol. Biol. Phys. 28, 723-730 (1994).
    .. [3] K. Engel, "A new algorithm for optimal multileaf collimator field segmentation",
       Discrete Appl. Math. 152, 35-51 (2005).
    """
    if method not in _DECOMPOSE:
        raise ValueError(f"unknown sequencing method {method!r}; valid: {', '.join(METHODS)}")
    if n_levels < 1:
        raise ValueError(f"n_levels must be >= 1, got {n_levels}")
    if max_segments is not None and max_segments < 1:
        raise ValueError(f"max_segments must be >= 1, got {max_segments}")
    fluence = np.asarray(fluence, dtype=float)
    row_edges_mm = np.asarray(row_edges_mm, dtype=float)
    col_edges_mm = np.asarray(col_edges_mm, dtype=float)
    leaf_boundaries_mm = np.asarray(leaf_boundaries_mm, dtype=float)
    if fluence.shape != (row_edges_mm.size - 1, col_edges_mm.size - 1):
        raise ValueError(f"fluence shape {fluence.shape} does not match {row_edges_mm.size} row "
                         f"and {col_edges_mm.size} column edges")
    if fluence.min() < 0:
        raise ValueError(f"fluence must be non-negative, minimum {fluence.min()}")
    _check_machine(row_edges_mm, col_edges_mm, leaf_boundaries_mm, min_gap_mm, leaf_travel_mm,
                   jaw_overtravel_mm, max_leaf_span_mm)

    pair_fluence = leaf_pair_fluence(fluence, row_edges_mm, leaf_boundaries_mm)
    peak = float(pair_fluence.max())
    n_pairs = leaf_boundaries_mm.size - 1
    if peak <= 0:
        return LeafSequence(np.zeros((0, n_pairs, 2)), np.zeros((0, 4)), np.zeros(0),
                            np.zeros_like(pair_fluence), 0)
    if peak < n_levels * min_weight:  # (not peak / min_weight: it overflows for tiny weights)
        n_levels = max(1, int(np.floor(peak / min_weight * (1 + 1e-12))))

    for levels_tried in range(n_levels, 0, -1):
        step = peak / levels_tried
        levels = np.rint(pair_fluence / peak * levels_tried).astype(np.int64)
        apertures = _DECOMPOSE[method](levels)
        if not interdigitation:
            apertures = [(group, w) for index, w in apertures for group in _split_unconnected(index)]
        if max_segments is None or len(apertures) <= max_segments:
            break
    else:
        raise ValueError(f"the fluence needs {len(apertures)} segments even at 1 intensity level "
                         f"(method {method!r}), more than max_segments={max_segments}")

    positions, jaws = zip(*(_leaf_positions(index, col_edges_mm, leaf_boundaries_mm, min_gap_mm,
                                            leaf_travel_mm, jaw_overtravel_mm, interdigitation)
                            for index, _ in apertures))
    return LeafSequence(
        leaf_positions_mm=np.stack(positions),
        jaws_mm=np.stack(jaws),
        weights=np.array([w for _, w in apertures], dtype=float) * step,
        stratified_fluence=levels * step,
        n_levels=levels_tried,
    )
