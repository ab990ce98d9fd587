"""Automatic planning: reach a protocol's clinical goals without anyone adjusting weights.

Prioritised steps (a lexicographic scheme held together by adaptive penalty weights):

1. **Coverage** — the targets' prescriptions (squared under/overdose) and a dose fall-off ring in
   the normal tissue; no organ objective yet.
2. **Goals** — one objective per clinical goal (a DVH point, a maximum, a mean), aimed a little
   inside its limit. After each optimisation the goals are evaluated; every unmet hard goal gets
   more weight and its aim moves by the shortfall, until all hard goals are met or the rounds run
   out. Soft goals are not in this step. The regularisers (fluence smoothness) rank below every
   goal: if the rounds run out with a hard goal unmet, one more round (``relax_rounds``) goes on
   from there with the regularisers' weight halved (never dropped); that factor stays for step 3
   only if every hard goal is then met, else the regularised plan is kept, because a rougher
   fluence sequences into more segments and its deliverable plan loses what it gained. Goal
   weights and aims are bounded (``MAX_GOAL_WEIGHT``, ``MAX_AIM_SHIFT``): a goal that cannot
   be met is not chased at the cost of the targets' homogeneity. (Measurements behind these
   rules: ``benchmarks/results/design_history.md``, "Automatic planning".)
3. **Sparing** — soft goals join, and the sparing objectives (e.g. a predicted dose's mimicking).
   Every organ goal (upper limit) is pushed below its achieved value, step by step, with a
   growing weight (until a step is kept, no lower than a value thought achievable, where one is
   given: e.g. the goal's value on a predicted dose); unmet soft goals get more weight too. A
   step is kept only if no goal met before it is lost; otherwise the largest part of it
   (``PARTS_OF_STEP``: a half, a quarter) that loses none is kept, or none, the lost goals
   weigh more from then on, the step is halved, and the trade-off that stopped progress is
   recorded (with the sparing objectives, a target's soft goal may be traded). The sparing
   objectives' weight halves after a step lost with them and doubles (up to as given) after a
   step kept with them; below a tenth they are dropped. They only ever add steps that kept every
   hard goal and every organ goal met.

Each step warm-starts from the previous fluence. The work is ``D x`` / ``D^T g`` products on the
rows of ``D`` that some objective or goal uses (the matrix is restricted to them once; the rows
only the sparing objectives use are added for step 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from optim import dvh
from optim._xp import array_module
from optim.fluence import Objective, Progress, optimise_fluence
from optim.objectives import (
    DoseFalloff, DoseOffset, MaxDVH, MeanDose, MinDVH, SquaredOverdose, SquaredUnderdose,
)

Metric = Literal["dose_at_volume", "volume_at_dose", "mean_dose"]


@dataclass(frozen=True)
class PlanGoal:
    """One clinical goal on one structure, in absolute units, over rows of ``D``.

    Parameters
    ----------
    label : str
        Shown in reports, e.g. ``"PTV D95% >= 50 Gy"``.
    indices : (n,) int array
        The structure's voxels (rows of ``D``); the goal is evaluated on all of them.
    metric : {"dose_at_volume", "volume_at_dose", "mean_dose"}
        D_v (Gy), V_x (fraction 0..1) or mean dose (Gy); see :mod:`optim.dvh`. A maximum dose or
        D0.1cc is ``dose_at_volume`` with a small (or zero) volume fraction.
    parameter : float
        The volume fraction ``v`` of ``dose_at_volume``, the dose ``x`` (Gy) of ``volume_at_dose``,
        unused (0) for ``mean_dose``.
    bound : {"max", "min"}
        The value must be at most / at least ``limit``.
    limit : float
        Gy for dose metrics, a fraction for ``volume_at_dose``.
    hard : bool
        Hard goals outrank soft ones when they conflict.
    is_target : bool
        A goal on a target (coverage or hot spot) rather than on an organ.
    objective_indices : (m,) int array, optional
        Voxels the goal's objective acts on (the overlap-resolved structure, see
        :func:`optim.objectives.resolve_overlaps`); defaults to ``indices``.
    """

    label: str
    indices: Any = field(repr=False)
    metric: Metric
    parameter: float
    bound: Literal["max", "min"]
    limit: float
    hard: bool = True
    is_target: bool = False
    objective_indices: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.metric not in ("dose_at_volume", "volume_at_dose", "mean_dose"):
            raise ValueError(f"goal {self.label!r}: unknown metric {self.metric!r}")
        if self.bound not in ("max", "min"):
            raise ValueError(f"goal {self.label!r}: bound must be 'max' or 'min'")
        if self.metric == "mean_dose" and self.bound == "min":
            raise ValueError(f"goal {self.label!r}: a lower limit on a mean dose is not supported")


@dataclass(frozen=True)
class TargetDose:
    """A prescription: the dose the target's voxels should receive.

    Parameters
    ----------
    label : str
    indices : (n,) int array
        Target voxels the prescription objectives act on (overlap-resolved).
    dose_gy : float, Gy
    """

    label: str
    indices: Any = field(repr=False)
    dose_gy: float


@dataclass(frozen=True)
class NormalTissue:
    """Normal-tissue voxels around the targets, for the dose fall-off ring.

    Parameters
    ----------
    indices : (n,) int array
        Voxels outside every target (a subsample is fine: the ring only shapes the fall-off).
    distance_mm : (n,) float array, mm
        Distance of each voxel from the nearest target voxel.
    """

    indices: Any = field(repr=False)
    distance_mm: Any = field(repr=False)


@dataclass(frozen=True)
class GoalResult:
    """How a plan fares on one goal: ``margin`` is positive when met (distance inside the limit)."""

    label: str
    value: float
    limit: float
    met: bool
    margin: float
    unit: str
    hard: bool


@dataclass(frozen=True)
class StepReport:
    """One optimisation in the automatic plan: which step, how long, what it achieved
    (``goals_met`` counts all goals met after the step; ``hard_goals_met``: all hard ones), and
    the factor on the regularisers' weights it ran with (``regulariser_scale``, 1 as given)."""

    step: str
    iterations: int
    evaluations: int
    elapsed_s: float
    goals_met: int
    hard_goals_met: bool
    note: str
    regulariser_scale: float = 1.0


@dataclass(frozen=True)
class AutoPlanResult:
    """Outcome of :func:`plan_automatically`.

    Attributes
    ----------
    x : (n_beamlets,) float64 numpy array
        Beamlet weights of the final plan.
    goals : tuple of GoalResult
        Every goal evaluated on the final plan.
    steps : tuple of StepReport
    stopped_by : str
        Why the plan stopped improving: the trade-off (goal lost) or budget that ended it.
    iterations, evaluations : int
        Totals over all steps.
    elapsed_s : float
    aims, goal_weights : tuple of float
        Per goal (in the order given), the aim and weight of its objective in the final plan
        (weight 0: not in it).
    sparing_scale : float
        Factor on the sparing objectives' weights in the final plan (0: not in it).
    regulariser_scale : float
        Factor on every regulariser's weight in the final plan: 1 as given, lower where hard goals
        needed it (halved per repeated goal round).
    """

    x: np.ndarray
    goals: tuple[GoalResult, ...]
    steps: tuple[StepReport, ...]
    stopped_by: str
    iterations: int
    evaluations: int
    elapsed_s: float
    aims: tuple[float, ...]
    goal_weights: tuple[float, ...]
    sparing_scale: float
    regulariser_scale: float = 1.0


def evaluate_goal(dose: Any, goal: PlanGoal) -> GoalResult:
    """Evaluate one goal on a dose vector (rows of ``D``), with :mod:`optim.dvh`."""
    d = dose[goal.indices]
    if goal.metric == "dose_at_volume":
        value, unit = dvh.dose_at_volume(d, goal.parameter), "Gy"
    elif goal.metric == "volume_at_dose":
        value, unit = dvh.volume_at_dose(d, goal.parameter), "fraction"
    else:
        value, unit = dvh.mean_dose(d), "Gy"
    margin = goal.limit - value if goal.bound == "max" else value - goal.limit
    return GoalResult(goal.label, value, goal.limit, margin >= 0.0, margin, unit, goal.hard)


def evaluate_goals(dose: Any, goals: Sequence[PlanGoal]) -> tuple[GoalResult, ...]:
    """:func:`evaluate_goal` for each goal, in order."""
    return tuple(evaluate_goal(dose, g) for g in goals)


def goal_objective(goal: PlanGoal, aim: float, weight: float) -> Objective:
    """The objective that pushes ``goal``'s value to ``aim`` (a dose, or a volume fraction)."""
    idx = goal.indices if goal.objective_indices is None else goal.objective_indices
    if goal.metric == "mean_dose":
        return MeanDose(idx, aim, weight)
    if goal.metric == "dose_at_volume":
        cls = MaxDVH if goal.bound == "max" else MinDVH
        return cls(idx, aim, goal.parameter, weight)
    cls = MaxDVH if goal.bound == "max" else MinDVH
    return cls(idx, goal.parameter, min(max(aim, 0.0), 1.0), weight)


def _rows_used(xp: Any, index_arrays: Sequence[Any]) -> Any:
    """The sorted row numbers that some index array uses."""
    return xp.unique(xp.concatenate([xp.asarray(a).ravel() for a in index_arrays]))


#: Copy the rows used out of ``D`` only when they hold less than this share of its non-zeros:
#: otherwise the copy costs more memory (a head-and-neck Dij is 1-2 GB) than it saves time.
RESTRICT_BELOW = 0.75


def _restrict(D: Any, index_arrays: Sequence[Any]) -> tuple[Any, Any]:
    """The rows of ``D`` that some index array uses, and their (sorted) row numbers in ``D``.

    Where those rows hold most of ``D``'s non-zeros, they are not copied: the result is a CSR
    matrix on ``D``'s own data and indices with every non-empty row and every row used, in order
    (a Dij has rows for the whole grid, most of them empty: dropped, the dose vectors that every
    product and objective allocates are that much shorter)."""
    xp = array_module(D)
    rows = _rows_used(xp, index_arrays)
    if getattr(D, "format", None) == "csr":
        lengths = D.indptr[1:] - D.indptr[:-1]
        if int(lengths[rows].sum()) >= RESTRICT_BELOW * D.nnz:
            kept = xp.unique(xp.concatenate([xp.flatnonzero(lengths), rows]))
            return _csr(D, D.data, D.indices, xp.concatenate([D.indptr[kept], D.indptr[-1:]])), kept
    return D[rows], rows


def _csr(like: Any, data: Any, indices: Any, indptr: Any) -> Any:
    """A CSR matrix of ``like``'s type and column count on these arrays, without a copy."""
    return type(like)((data, indices, indptr), shape=(indptr.size - 1, like.shape[1]), copy=False)


def _with_more_rows(D: Any, Dr: Any, rows: Any, index_arrays: Sequence[Any]
                    ) -> tuple[Any, Callable[[Any], Any], Any]:
    """``Dr`` (``D[rows]``) with the rows the index arrays use beyond ``rows`` appended below, so
    that row numbers into ``Dr`` stay valid; a map from ``D``'s row numbers to the new ones; and
    the new matrix's row numbers in ``D``. Rows that are empty in ``D`` are appended without
    copying ``Dr``."""
    xp = array_module(D)
    wanted = _rows_used(xp, index_arrays)
    extra = wanted[~xp.isin(wanted, rows)]

    def remap(indices: Any) -> Any:
        indices = xp.asarray(indices)
        at = xp.searchsorted(rows, indices)
        inside = rows[xp.minimum(at, rows.size - 1)] == indices
        return xp.where(inside, at, rows.size + xp.searchsorted(extra, indices))

    if extra.size == 0:
        return Dr, remap, rows
    all_rows = xp.concatenate([rows, extra])
    if getattr(D, "format", None) == "csr" and getattr(Dr, "format", None) == "csr" and not int(
            (D.indptr[extra + 1] - D.indptr[extra]).sum()):
        tail = xp.full(extra.size, Dr.indptr[-1], dtype=Dr.indptr.dtype)
        return _csr(Dr, Dr.data, Dr.indices, xp.concatenate([Dr.indptr, tail])), remap, all_rows
    return D[all_rows], remap, all_rows


# Defaults of the scheme, the same for every case (no per-case tuning): see the module docstring.
TARGET_WEIGHT = 100.0      # prescription objectives; organ goals start 10x lower
GOAL_WEIGHT = 10.0
FALLOFF_WEIGHT = 1.0
HOT_FACTOR = 1.05          # the prescription objective's overdose limit, times the prescription
FALLOFF_MM = 30.0          # ring: dose falls linearly from 100 % to 40 % of the highest Rx in 30 mm
FALLOFF_LOW = 0.4
AIM_INSIDE = 0.03          # goal objectives aim 3 % inside the limit
HARD_GROWTH, SOFT_GROWTH = 4.0, 2.0
MAX_AIM_SHIFT = 0.05       # an insisted aim moves at most 5 % of the limit past the first aim
# A goal's weight grows to at most 10x the prescription objectives': beyond that the optimiser
# trades the targets' homogeneity for one goal (and L-BFGS-B stalls on the conditioning).
MAX_GOAL_WEIGHT = 10.0 * TARGET_WEIGHT
SPARING_STEP = 0.25        # first sparing step: aim 25 % below the achieved value
SPARING_OBJECTIVE_START = 1.0     # the sparing objectives' weights start as given,
SPARING_OBJECTIVE_GROWTH = 2.0    # double after each step kept with them (up to MOST x),
SPARING_OBJECTIVE_MOST = 1.0
SPARING_OBJECTIVE_BACKOFF = 0.5   # halve after each step lost with them, and below LEAST x
SPARING_OBJECTIVE_LEAST = 0.1     # they are dropped
PARTS_OF_STEP = (0.5, 0.25)       # of a sparing step that loses a goal, tried before undoing it


def aim_inside(goal: PlanGoal, value: float) -> float:
    """``value`` moved ``AIM_INSIDE`` inside the goal's side of it (below a maximum, above a
    minimum): where a goal objective aims."""
    return value * (1.0 - AIM_INSIDE) if goal.bound == "max" else value * (1.0 + AIM_INSIDE)


def insisted_aim(goal: PlanGoal, aim: float, result: GoalResult) -> float:
    """The aim of an unmet goal's objective moved by the shortfall: the objective may be met
    while the goal is not (it acts on the overlap-resolved voxels, or on D_v where the goal is
    V_x). The extra ``AIM_INSIDE`` keeps the aim strictly inside the limit."""
    shift = -result.margin + AIM_INSIDE * abs(result.limit)
    return max(aim - shift, 0.0) if goal.bound == "max" else aim + shift


def bounded_aim(goal: PlanGoal, aim: float) -> float:
    """``aim`` kept within ``AIM_INSIDE + MAX_AIM_SHIFT`` of the goal's limit: an aim moved by
    every round's shortfall without a bound runs up round after round, and the whole target's
    dose with it."""
    reach = (AIM_INSIDE + MAX_AIM_SHIFT) * abs(goal.limit)
    if goal.bound == "max":
        return max(aim, goal.limit - reach, 0.0)
    return min(aim, goal.limit + reach)


@dataclass(frozen=True)
class _Problem:
    """The automatic plan's objectives on the rows of ``D`` that they use (:func:`_problem`).

    ``matrix`` holds the rows of the targets, goals and ring (whose index arrays are remapped to
    it); ``sparing_matrix`` the same with the rows only the sparing objectives use below;
    ``offset`` and ``sparing_offset`` a dose added to each matrix's products, or None."""

    matrix: Any
    targets: list[TargetDose]
    goals: list[PlanGoal]
    base: list[Objective]
    sparing_matrix: Any
    sparing: list[Objective]
    offset: Any
    sparing_offset: Any


def _problem(D: Any, targets: Sequence[TargetDose], goals: Sequence[PlanGoal],
             normal_tissue: NormalTissue | None, sparing_objectives: Sequence[Objective],
             dose_offset: Any = None) -> _Problem:
    """The prescriptions and the fall-off ring (``base``), the goals and the sparing objectives
    on the rows of ``D`` they use (restricted once; see the module docstring)."""
    xp = array_module(D)
    used = ([t.indices for t in targets] + [g.indices for g in goals]
            + [g.objective_indices for g in goals if g.objective_indices is not None]
            + ([normal_tissue.indices] if normal_tissue is not None else []))
    Dr, rows = _restrict(D, used)

    def remap(indices: Any) -> Any:
        return xp.searchsorted(rows, xp.asarray(indices))

    targets = [replace(t, indices=remap(t.indices)) for t in targets]
    goals = [replace(g, indices=remap(g.indices),
                     objective_indices=None if g.objective_indices is None
                     else remap(g.objective_indices)) for g in goals]
    # Rows only the sparing objectives use are appended for step 3: the steps before it do not
    # carry them (the same products as without them).
    D_sparing, sparing, sparing_rows = Dr, list(sparing_objectives), rows
    sparing_idx = [o.indices for o in sparing_objectives if hasattr(o, "indices")]
    if sparing_idx:
        D_sparing, remap_sparing, sparing_rows = _with_more_rows(D, Dr, rows, sparing_idx)
        sparing = [replace(o, indices=remap_sparing(o.indices))  # type: ignore
                   if hasattr(o, "indices") else o for o in sparing_objectives]

    rx_max = max(t.dose_gy for t in targets)
    base: list[Objective] = []
    for t in targets:
        base += [SquaredUnderdose(t.indices, t.dose_gy, TARGET_WEIGHT),
                 SquaredOverdose(t.indices, t.dose_gy * HOT_FACTOR, TARGET_WEIGHT)]
    if normal_tissue is not None:
        base.append(DoseFalloff(remap(normal_tissue.indices), xp.asarray(normal_tissue.distance_mm),
                                rx_max, FALLOFF_LOW * rx_max, FALLOFF_MM, FALLOFF_WEIGHT))
    offset = sparing_offset = None
    if dose_offset is not None:
        dose_offset = xp.asarray(dose_offset, dtype=Dr.dtype)
        offset, sparing_offset = dose_offset[rows], dose_offset[sparing_rows]
    return _Problem(Dr, targets, goals, base, D_sparing, sparing, offset, sparing_offset)


def _goals_at(problem: _Problem, x: np.ndarray) -> tuple[GoalResult, ...]:
    """The goals on the dose of beamlet weights ``x`` (with ``problem``'s offset): the goal rows
    are the first rows of ``problem.matrix``, and of the sparing matrix that extends it."""
    xp = array_module(problem.matrix)
    dose = problem.matrix @ xp.asarray(x, dtype=problem.matrix.dtype)
    if problem.offset is not None:
        dose = dose + problem.offset
    return evaluate_goals(dose, problem.goals)


def _optimise_step(step: str, problem: _Problem, objectives: list[Objective], x: np.ndarray, *,
                   sparing: bool, regularisers: Sequence[Objective], reg_scale: float,
                   iterations: int, rel_tol: float, time_limit_s: float | None,
                   progress: Callable[[str, Progress], None] | None, steps: list[StepReport],
                   totals: dict[str, int]) -> tuple[np.ndarray, tuple[GoalResult, ...]]:
    """One optimisation of the automatic plan from ``x``, on ``problem``'s matrix (with the
    sparing objectives' rows where ``sparing``) and its offset; the goals evaluated after it.
    Appends its :class:`StepReport` to ``steps`` and adds its counts to ``totals``."""
    matrix, offset = ((problem.sparing_matrix, problem.sparing_offset) if sparing
                      else (problem.matrix, problem.offset))
    if offset is not None:
        objectives = [DoseOffset(o, offset) for o in objectives]
    hook = None if progress is None else (lambda p: progress(step, p))
    regs = [r if reg_scale == 1.0 else replace(r, weight=r.weight * reg_scale)  # type: ignore
            for r in regularisers]
    result = optimise_fluence(matrix, objectives, x, regularisers=regs, max_iter=iterations,
                              rel_tol=rel_tol, time_limit_s=time_limit_s, progress=hook)
    totals["iterations"] += result.iterations
    totals["evaluations"] += result.evaluations
    achieved = _goals_at(problem, result.x)
    steps.append(StepReport(step, result.iterations, result.evaluations, result.elapsed_s,
                            sum(r.met for r in achieved), all(r.met for r in achieved if r.hard),
                            result.stop_reason, reg_scale))
    return result.x, achieved


def _part_of_step(problem: _Problem, x: np.ndarray, x_new: np.ndarray,
                  lost_goals: Callable[[tuple[GoalResult, ...]], list[int]]
                  ) -> tuple[float, np.ndarray, tuple[GoalResult, ...]] | None:
    """The largest of ``PARTS_OF_STEP`` of the step from ``x`` to ``x_new`` whose goals lose
    none (``lost_goals`` empty), as (fraction, beamlet weights, goals); None if every part loses
    one. The dose is linear in the beamlet weights: a part of the step is the same part of its
    dose change, so the goals' values move between their two ends (one product each)."""
    for fraction in PARTS_OF_STEP:
        x_part = x + fraction * (x_new - x)
        achieved = _goals_at(problem, x_part)
        if not lost_goals(achieved):
            return fraction, x_part, achieved
    return None


def _goal_objectives(goals: Sequence[PlanGoal], aims: Sequence[float],
                     weights: Sequence[float]) -> list[Objective]:
    """The objective of each goal with a weight, at its aim."""
    return [goal_objective(g, a, w) for g, a, w in zip(goals, aims, weights) if w > 0.0]


def _insist(goals: Sequence[PlanGoal], i: int, r: GoalResult, aims: list[float],
            weights: list[float]) -> None:
    """More weight on unmet goal ``i``, and its aim moved by the shortfall."""
    weights[i] = min(weights[i] * HARD_GROWTH, MAX_GOAL_WEIGHT)
    aims[i] = bounded_aim(goals[i], insisted_aim(goals[i], aims[i], r))


def plan_automatically(D: Any, targets: Sequence[TargetDose], goals: Sequence[PlanGoal], *,
                       normal_tissue: NormalTissue | None = None,
                       sparing_objectives: Sequence[Objective] = (),
                       sparing_floor: Sequence[float | None] | None = None,
                       regularisers: Sequence[Objective] = (),
                       x0: np.ndarray | None = None, goal_rounds: int = 5,
                       relax_rounds: int = 1,
                       sparing_rounds: int = 6, iterations_per_step: int = 40,
                       rel_tol: float = 1e-4, time_limit_s: float | None = None,
                       progress: Callable[[str, Progress], None] | None = None) -> AutoPlanResult:
    """Optimise the fluence towards the goals in prioritised steps (see the module docstring).

    Parameters
    ----------
    D : (n_voxels, n_beamlets) sparse matrix, Gy per unit beamlet weight
        scipy.sparse or cupyx.scipy.sparse; all index arrays are rows of it and live on its device.
    targets : sequence of TargetDose
        At least one.
    goals : sequence of PlanGoal
    normal_tissue : NormalTissue, optional
        Voxels for the dose fall-off ring; without it the dose outside targets and goal
        structures is not controlled.
    sparing_objectives : sequence of dose objectives, optional
        Added from step 3 (sparing) on, once the hard goals had their rounds: e.g.
        ``DoseMimicking`` of a predicted dose, which then shapes the sparing without slowing the
        way to the hard goals. Over the rows of ``D``.
    sparing_floor : sequence of float or None, optional
        Per goal (in the order of ``goals``): a value thought achievable (e.g. the goal's value
        on a predicted dose); until a sparing step is kept, an organ goal is aimed no lower than
        it (nor higher than the aim that met it: where the value is already there the goal is
        only held). None: no floor.
    regularisers : sequence of fluence objectives, optional
        E.g. ``FluenceSmoothness``; added to every step, with the lowest priority: their
        ``weight`` (a dataclass field, as in :mod:`optim.objectives`) is lowered while a hard
        goal is unmet (see the module docstring and ``AutoPlanResult.regulariser_scale``).
    x0 : (n_beamlets,) array, optional
        Starting fluence; default uniform, scaled so the mean target dose is the prescription.
    goal_rounds, sparing_rounds : int
        Maximum rounds of weight adaptation and of sparing steps.
    relax_rounds : int
        Goal rounds more with the regularisers giving way (halved before each), where hard
        goals are still unmet.
    iterations_per_step : int
        L-BFGS-B iterations allowed per optimisation.
    rel_tol : float
        Relative-change stopping rule of each optimisation.
    time_limit_s : float, optional
        Wall-time budget of the whole plan; the steps stop where it runs out.
    progress : callable, optional
        Called with the step name and each iteration's :class:`Progress`.

    Returns
    -------
    AutoPlanResult
    """
    if not targets:
        raise ValueError("automatic planning needs at least one target prescription")
    start = time.perf_counter()
    problem = _problem(D, targets, goals, normal_tissue, sparing_objectives)
    targets, goals, base, Dr = problem.targets, problem.goals, problem.base, problem.matrix
    sparing_extras = problem.sparing
    rx_max = max(t.dose_gy for t in targets)

    if x0 is None:
        xp = array_module(D)
        ones = xp.ones(Dr.shape[1], dtype=Dr.dtype)
        dose1 = Dr @ ones
        mean_t = float(xp.concatenate([dose1[t.indices] for t in targets]).mean())
        x = np.full(Dr.shape[1], rx_max / max(mean_t, 1e-12))
    else:
        x = np.asarray(x0, dtype=np.float64)

    steps: list[StepReport] = []
    totals = {"iterations": 0, "evaluations": 0}

    def remaining() -> float | None:
        return None if time_limit_s is None else time_limit_s - (time.perf_counter() - start)

    def out_of_time() -> bool:
        left = remaining()
        return left is not None and left <= 0.0

    reg_scale = 1.0  # factor on the regularisers' weights, lowered in step 2 if need be

    def run(step: str, objectives: list[Objective], x_start: np.ndarray, sparing: bool = False
            ) -> tuple[np.ndarray, tuple[GoalResult, ...]]:
        x_new, achieved = _optimise_step(
            step, problem, objectives, x_start, sparing=sparing, regularisers=regularisers,
            reg_scale=reg_scale, iterations=iterations_per_step, rel_tol=rel_tol,
            time_limit_s=remaining(), progress=progress, steps=steps, totals=totals)
        return x_new, achieved

    # 1. coverage
    x, achieved = run("coverage", list(base), x)

    # 2. hard goals, with weights that grow while a hard goal is unmet
    def goal_objectives(aims: list[float], weights: list[float]) -> list[Objective]:
        return _goal_objectives(goals, aims, weights)

    def insist(i: int, r: GoalResult, aims: list[float], weights: list[float]) -> None:
        _insist(goals, i, r, aims, weights)

    notes: list[str] = []
    rounds_done = 0

    def hard_goal_rounds(x: np.ndarray, achieved: tuple[GoalResult, ...], aims: list[float],
                         weights: list[float], rounds: int, relax: bool
                         ) -> tuple[np.ndarray, tuple[GoalResult, ...], list[float], list[float]]:
        """Step 2 from fluence ``x`` and the goals' ``aims`` and ``weights``; with ``relax``
        the regularisers' weight is halved before each round. Returns
        the fluence, goals, aims and weights."""
        nonlocal reg_scale, rounds_done
        aims, weights = list(aims), list(weights)
        for round_ in range(1, rounds + 1):
            if out_of_time():
                notes.append("time limit in the goal rounds")
                break
            if relax:
                reg_scale /= 2.0
            rounds_done += 1
            x, achieved = run(f"goals {rounds_done}", base + goal_objectives(aims, weights), x)
            if all(r.met for r in achieved if r.hard):
                break
            for i, r in enumerate(achieved):
                if r.hard and not r.met:
                    insist(i, r, aims, weights)
        return x, achieved, aims, weights

    # Soft goals are left out of step 2 (weight 0): they enter in step 3, where a step that
    # loses a hard goal is kept only as far as it loses none, so they can never outbid one.
    x, achieved, aims, weights = hard_goal_rounds(
        x, achieved, [aim_inside(g, g.limit) for g in goals],
        [GOAL_WEIGHT if g.hard else 0.0 for g in goals], goal_rounds, relax=False)
    if regularisers and not all(r.met for r in achieved if r.hard) and not out_of_time():
        # The goals outrank the regularisers: go on with the regularisers giving way.
        firm = x, achieved, aims, weights
        x, achieved, aims, weights = hard_goal_rounds(*firm, relax_rounds, relax=True)
        if not all(r.met for r in achieved if r.hard):
            # Giving way did not meet them all: keep the smoother (more deliverable) plan.
            x, achieved, aims, weights = firm
            reg_scale = 1.0
            notes.append("regularisers kept at their weight (giving way did not meet every "
                         "hard goal)")
    unmet = [r.label for r in achieved if r.hard and not r.met]
    if unmet and not out_of_time():
        notes.append(f"hard goals unmet after {rounds_done} rounds: {', '.join(unmet)}")
    if reg_scale < 1.0:
        notes.append(f"regularisers at {reg_scale:g} x their weight for the hard goals")

    # 3. sparing: met organ upper limits aimed below what was reached and, like unmet soft goals,
    # given more weight; a step that loses a goal met before gets one repair (the lost goals
    # insisted on), and if that fails only the part of it that loses nothing is kept (a whole
    # step undone made single plans jump: design_history.md, "Part of a sparing step"). Each
    # optimisation counts as a round.
    # A goal without a limit (the normal tissue's mean, "as low as possible") is pushed like the
    # organs' (it lowers the normal tissue's dose on most patients).
    spare = [i for i, g in enumerate(goals) if not g.is_target and g.bound == "max"]
    weights = [w if g.hard else GOAL_WEIGHT for g, w in zip(goals, weights)]
    step = SPARING_STEP
    trade_off = ""
    round_ = 0
    with_extras = bool(sparing_extras)
    # Factor on the sparing objectives' weights: it grows while their steps are kept and falls
    # where one costs a goal.
    extras_scale = SPARING_OBJECTIVE_START
    kept = False  # a sparing step kept yet
    kept_scale = 0.0  # the sparing objectives' factor in the step last kept
    while round_ < sparing_rounds and (spare or not all(r.met for r in achieved)):
        if out_of_time():
            notes.append("time limit in sparing")
            break
        trial_aims, trial_weights = list(aims), list(weights)
        floored = sparing_floor is not None and not kept
        for i, r in enumerate(achieved):
            if not r.met and not goals[i].hard:
                trial_weights[i] = min(trial_weights[i] * SOFT_GROWTH, MAX_GOAL_WEIGHT)
            elif r.met and i in spare:
                trial_aims[i] = r.value * (1.0 - step)
                floor = sparing_floor[i] if floored else None
                if floor is not None:  # not past what is thought achievable, at first, and
                    # never above the aim that met the goal
                    trial_aims[i] = min(max(trial_aims[i], floor), aims[i])
                trial_weights[i] = min(trial_weights[i] * SOFT_GROWTH, MAX_GOAL_WEIGHT)

        def lost_goals(new: tuple[GoalResult, ...]) -> list[int]:
            """Goals met before the step and not after it; with the sparing objectives, a
            target's soft goal (e.g. D95 >= 100 %) may be traded: a hard goal holds the
            coverage, and the plan's normalisation restores the D95 where the hard goals
            allow."""
            return [i for i, (n, o) in enumerate(zip(new, achieved)) if o.met and not n.met
                    and not (with_extras and goals[i].is_target and not goals[i].hard)]

        extras, tag = (([replace(o, weight=o.weight * extras_scale)  # type: ignore
                         for o in sparing_extras], f" with sparing objectives x{extras_scale:g}")
                       if with_extras else ([], ""))
        step_scale = extras_scale if with_extras else 0.0
        round_ += 1
        x_new, new = run(f"sparing {round_}{tag}",
                         base + extras + goal_objectives(trial_aims, trial_weights), x,
                         sparing=with_extras)
        lost = lost_goals(new)
        if lost and round_ < sparing_rounds and not out_of_time():
            for i in lost:
                insist(i, new[i], trial_aims, trial_weights)
            round_ += 1
            x_new, new = run(f"sparing {round_} (repair){tag}",
                             base + extras + goal_objectives(trial_aims, trial_weights),
                             x_new, sparing=with_extras)
            lost = lost_goals(new)
        # (the part is judged as the step was, before the sparing objectives may be dropped)
        part = _part_of_step(problem, x, x_new, lost_goals) if lost else None
        if lost and with_extras:
            # The failed step may be the organs' push as much as the sparing objectives: they
            # stay, weighing less, until they weigh too little to matter.
            extras_scale *= SPARING_OBJECTIVE_BACKOFF
            if extras_scale < SPARING_OBJECTIVE_LEAST:
                with_extras = False
                notes.append("sparing objectives dropped (with them sparing steps lost "
                             f"{', '.join(goals[i].label for i in lost)})")
        if lost:
            pushed = [goals[i].label for i in spare if achieved[i].met]
            pushed += [r.label for r in achieved if not r.met and not r.hard]
            trade_off = (f"pushing {', '.join(pushed)} further loses "
                         f"{', '.join(goals[i].label for i in lost)}")
            # The lost goals weigh more from now on and the next step is smaller; of the step
            # itself, the largest part that loses nothing is kept (none: it is undone).
            for i in lost:
                weights[i] = min(weights[i] * HARD_GROWTH, MAX_GOAL_WEIGHT)
            step /= 2.0
            if part is not None:
                fraction, x, achieved = part
                steps.append(StepReport(f"sparing {round_}: x{fraction:g} of the step kept", 0,
                                        0, 0.0, sum(r.met for r in achieved),
                                        all(r.met for r in achieved if r.hard),
                                        "the whole step loses a goal", reg_scale))
                kept, kept_scale = True, step_scale
            continue
        gain = max([(achieved[i].value - new[i].value) / max(abs(achieved[i].value), 1e-12)
                    for i in spare] + [0.0])
        x, achieved, aims, weights = x_new, new, trial_aims, trial_weights
        kept, kept_scale = True, step_scale
        if with_extras:
            extras_scale = min(extras_scale * SPARING_OBJECTIVE_GROWTH, SPARING_OBJECTIVE_MOST)
        # (a step the floors held back does not end the sparing: a pessimistic estimate of
        # what is achievable costs one step, not the rest)
        if gain < 0.01 and all(r.met for r in achieved) and not floored:
            notes.append("sparing converged (less than 1 % further reduction)")
            break
    if trade_off:
        notes.append(f"trade-off: {trade_off}")
    if not notes:
        notes.append(f"{sparing_rounds} sparing rounds done")
    stopped_by = "; ".join(notes)

    return AutoPlanResult(x=x, goals=achieved, steps=tuple(steps), stopped_by=stopped_by,
                          iterations=totals["iterations"], evaluations=totals["evaluations"],
                          elapsed_s=time.perf_counter() - start, aims=tuple(aims),
                          goal_weights=tuple(weights), sparing_scale=kept_scale,
                          regulariser_scale=reg_scale)


def correct_for_delivery(D: Any, targets: Sequence[TargetDose], goals: Sequence[PlanGoal],
                         plan: AutoPlanResult, dose_offset: Any, *,
                         normal_tissue: NormalTissue | None = None,
                         sparing_objectives: Sequence[Objective] = (),
                         regularisers: Sequence[Objective] = (), goal_rounds: int = 3,
                         iterations_per_step: int = 40, rel_tol: float = 1e-4,
                         progress: Callable[[str, Progress], None] | None = None
                         ) -> AutoPlanResult:
    """``plan`` optimised on from its fluence with every objective and goal on
    ``D x + dose_offset``.

    ``dose_offset`` is what delivering ``plan`` adds to its dose: a deliverable plan's dose less
    ``D @ plan.x`` (the sequencer's intensity levels, the apertures' penumbra and leaf
    transmission, which the beamlets do not model). With it the optimiser sees the dose as it
    will be delivered, and moves the fluence so that the delivered dose meets the goals (the
    "intermediate dose" correction of commercial planning systems). The objectives are those
    ``plan`` ended with (its goals' weights and aims, its sparing objectives' and regularisers'
    factors, the same arguments as :func:`plan_automatically` was given), except that an organ
    goal is aimed at its value on the delivered dose where that is higher (no higher than the aim
    inside its limit): held there, not pushed further, so that the targets get back the room
    delivery took. A hard goal unmet on the corrected dose is insisted on, as in step 2, for up to
    ``goal_rounds`` optimisations in all.

    Returns
    -------
    AutoPlanResult
        The corrected fluence and its goals on ``D x + dose_offset`` (the dose expected once
        delivered); steps, counts and time are ``plan``'s and the correction's together.
    """
    start = time.perf_counter()
    problem = _problem(D, targets, goals, normal_tissue, sparing_objectives, dose_offset)
    delivered = _goals_at(problem, plan.x)
    # An organ's sparing aim was set below what the plan reached without the offset: it is held
    # where the delivered dose has it instead (never past the aim inside its limit). The hard
    # goals come first, as in step 2: the organs give the targets back the room that delivery
    # took, and are not pushed further.
    aims = [max(a, min(d.value, aim_inside(g, g.limit)))
            if not g.is_target and g.bound == "max" else a
            for g, a, d in zip(problem.goals, plan.aims, delivered)]
    weights = list(plan.goal_weights)
    sparing = plan.sparing_scale > 0.0 and bool(problem.sparing)
    extras = ([replace(o, weight=o.weight * plan.sparing_scale)  # type: ignore
               for o in problem.sparing] if sparing else [])
    steps: list[StepReport] = []
    totals = {"iterations": 0, "evaluations": 0}
    x, achieved = plan.x, plan.goals
    for round_ in range(1, goal_rounds + 1):
        x, achieved = _optimise_step(
            f"delivery correction {round_}", problem,
            problem.base + extras + _goal_objectives(problem.goals, aims, weights), x,
            sparing=sparing, regularisers=regularisers, reg_scale=plan.regulariser_scale,
            iterations=iterations_per_step, rel_tol=rel_tol, time_limit_s=None,
            progress=progress, steps=steps, totals=totals)
        unmet = [i for i, r in enumerate(achieved) if r.hard and not r.met]
        if not unmet:
            break
        for i in unmet:
            _insist(problem.goals, i, achieved[i], aims, weights)
    unmet = [r.label for r in achieved if r.hard and not r.met]
    return AutoPlanResult(
        x=x, goals=achieved, steps=plan.steps + tuple(steps),
        stopped_by=f"{plan.stopped_by}; delivery correction: " + (
            f"hard goals unmet on the corrected dose: {', '.join(unmet)}" if unmet
            else "every hard goal met on the corrected dose"),
        iterations=plan.iterations + totals["iterations"],
        evaluations=plan.evaluations + totals["evaluations"],
        elapsed_s=plan.elapsed_s + time.perf_counter() - start, aims=tuple(aims),
        goal_weights=tuple(weights), sparing_scale=plan.sparing_scale if sparing else 0.0,
        regulariser_scale=plan.regulariser_scale)
