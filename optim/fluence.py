"""Fluence-map optimisation: non-negative beamlet weights minimising a sum of objectives.

The only heavy work per evaluation is one product ``D x`` (dose) and one ``D^T g`` (gradient);
the objectives work on the dose vector. The minimiser is scipy's L-BFGS-B with bounds ``x >= 0``
on the host. On a GPU (``D`` a cupyx sparse matrix) the dose, the objectives and both products
stay on the device; only ``x`` and the gradient (one value per beamlet, a few thousand numbers)
cross between host and device each evaluation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.optimize
import scipy.sparse
from threadpoolctl import threadpool_limits

from optim._xp import array_module


class Objective(Protocol):
    """What the optimiser needs of an objective (see :mod:`optim.objectives`)."""

    def value(self, v: Any) -> float: ...

    def gradient(self, v: Any) -> Any: ...


@dataclass(frozen=True)
class Progress:
    """One iteration of the optimiser, as passed to the ``progress`` callback.

    Attributes
    ----------
    iteration : int
        1-based iteration count.
    value : float
        Objective value after the iteration.
    elapsed_s : float
        Seconds since the optimiser started.
    """

    iteration: int
    value: float
    elapsed_s: float


@dataclass(frozen=True)
class FluenceResult:
    """Outcome of :func:`optimise_fluence`.

    Attributes
    ----------
    x : (n_beamlets,) float64 numpy array
        Beamlet weights, >= 0.
    value : float
        Objective value at ``x``.
    iterations, evaluations : int
        L-BFGS-B iterations and objective/gradient evaluations (each one ``D x`` and one ``D^T g``).
    elapsed_s : float
    stop_reason : str
        ``"relative change"``, ``"time limit"``, ``"iteration limit"`` or scipy's own message.
    history : tuple of float
        Objective value after each iteration.
    """

    x: np.ndarray
    value: float
    iterations: int
    evaluations: int
    elapsed_s: float
    stop_reason: str
    history: tuple[float, ...]


#: Non-zeros per thread below which a CPU product runs on one thread (thread overhead).
SPLIT_MIN_NNZ = 2_000_000


class SplitProducts:
    """``D x`` and ``D^T g`` of a scipy CSR matrix on several threads, one block of rows each.

    scipy's sparse products run on one core and release the GIL, so row blocks (views of the
    matrix's arrays, no copy) on a thread each use every core; ``D^T g`` is the sum of the
    blocks' products. A cupyx matrix, a small matrix or a one-core machine uses ``D`` as it is.
    """

    def __init__(self, D: Any, threads: int | None = None, min_nnz: int = SPLIT_MIN_NNZ):
        self.D = D
        threads = threads or len(os.sched_getaffinity(0))
        n = (min(threads, max(1, D.nnz // min_nnz))
             if isinstance(D, scipy.sparse.csr_matrix) else 1)
        self.blocks: list[Any] = []
        if n > 1:
            # Blocks of about equal non-zeros.
            cuts = np.searchsorted(D.indptr, np.linspace(0, D.nnz, n + 1)[1:-1])
            edges = [0, *cuts.tolist(), D.shape[0]]
            for a, b in zip(edges[:-1], edges[1:]):
                lo, hi = D.indptr[a], D.indptr[b]
                self.blocks.append((a, b, scipy.sparse.csr_matrix(
                    (D.data[lo:hi], D.indices[lo:hi], D.indptr[a:b + 1] - lo),
                    shape=(b - a, D.shape[1]), copy=False)))
        self.pool = ThreadPoolExecutor(len(self.blocks)) if self.blocks else None

    def dose(self, x: Any) -> Any:
        if self.pool is None:
            return self.D @ x
        return np.concatenate(list(self.pool.map(lambda blk: blk[2] @ x, self.blocks)))

    def back(self, g: Any) -> Any:
        if self.pool is None:
            return self.D.T @ g
        return sum(self.pool.map(lambda blk: blk[2].T @ g[blk[0]:blk[1]], self.blocks))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def optimise_fluence(D: Any, objectives: Sequence[Objective], x0: np.ndarray, *,
                     regularisers: Sequence[Objective] = (), max_iter: int = 200,
                     rel_tol: float = 1e-4, time_limit_s: float | None = None,
                     progress: Callable[[Progress], None] | None = None) -> FluenceResult:
    """Minimise ``sum(o.value(D x)) + sum(r.value(x))`` over ``x >= 0`` with L-BFGS-B.

    Parameters
    ----------
    D : (n_voxels, n_beamlets) sparse matrix, Gy per unit beamlet weight
        scipy.sparse (CPU) or cupyx.scipy.sparse (GPU); CSR is fastest for both products.
    objectives : sequence of dose objectives
        Each with ``value(dose)`` and ``gradient(dose)`` over the ``(n_voxels,)`` dose vector,
        on the same device as ``D``.
    x0 : (n_beamlets,) float array
        Starting weights (negative entries are clipped to 0).
    regularisers : sequence of fluence objectives, optional
        Each with ``value(x)`` and ``gradient(x)`` over the weights (e.g. ``FluenceSmoothness``).
    max_iter : int
        Maximum number of L-BFGS-B iterations.
    rel_tol : float
        Stop when an iteration lowers the objective by less than ``rel_tol`` times its value.
    time_limit_s : float, optional
        Stop after the first iteration that ends past this wall time.
    progress : callable, optional
        Called with a :class:`Progress` after every iteration.

    Returns
    -------
    FluenceResult
    """
    xp = array_module(D)
    dtype = D.dtype
    start = time.perf_counter()
    evaluations = 0
    products = SplitProducts(D)

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        x_dev = xp.asarray(x, dtype=dtype)
        dose = products.dose(x_dev)
        grad_dose = xp.zeros_like(dose)
        total = 0.0
        for o in objectives:
            total += o.value(dose)
            grad_dose += o.gradient(dose)
        grad = products.back(grad_dose)
        for r in regularisers:
            total += r.value(x_dev)
            grad += r.gradient(x_dev)
        if xp is not np:
            grad = xp.asnumpy(grad)
        return total, np.asarray(grad, dtype=np.float64)

    history: list[float] = []
    stop: list[str] = []

    def callback(intermediate_result: scipy.optimize.OptimizeResult) -> None:
        value = float(intermediate_result.fun)
        elapsed = time.perf_counter() - start
        history.append(value)
        if progress is not None:
            progress(Progress(len(history), value, elapsed))
        if len(history) >= 2:
            previous = history[-2]
            if previous - value <= rel_tol * abs(previous):
                stop.append("relative change")
                raise StopIteration
        if time_limit_s is not None and elapsed >= time_limit_s:
            stop.append("time limit")
            raise StopIteration

    x_start = np.clip(np.asarray(x0, dtype=np.float64), 0.0, None)
    # ftol/gtol at 0: stopping is ours (relative change, time), not scipy's absolute tests.
    # L-BFGS-B's own work is BLAS level 1 on vectors of one value per beamlet: on several BLAS
    # threads it cost about 25x the CPU of one (OpenBLAS's start-up and spin-waiting, which also
    # takes cores from the products' threads); the products are scipy's, which use no BLAS.
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            result = scipy.optimize.minimize(
                fun, x_start, jac=True, method="L-BFGS-B",
                bounds=[(0.0, None)] * x_start.size, callback=callback,
                options={"maxiter": max_iter, "ftol": 0.0, "gtol": 0.0})
    finally:
        products.close()
    if stop:
        reason = stop[0]
    elif result.nit >= max_iter:
        reason = "iteration limit"
    else:
        reason = str(result.message)
    return FluenceResult(x=np.clip(result.x, 0.0, None), value=float(result.fun),
                         iterations=int(result.nit), evaluations=evaluations,
                         elapsed_s=time.perf_counter() - start, stop_reason=reason,
                         history=tuple(history))
