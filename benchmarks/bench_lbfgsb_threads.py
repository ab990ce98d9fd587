"""CPU cost of scipy's L-BFGS-B itself (``setulb``) with BLAS on all cores and on one.

Why ``optim.fluence.optimise_fluence`` holds BLAS to one thread around the minimiser: the
minimiser's own work is BLAS level 1 on vectors of one value per beamlet, where OpenBLAS's
threads cost more than they give (start-up, spin-waiting that also takes cores from the sparse
products' threads). A separable quadratic with bounds ``x >= 0`` (half the variables end at the
bound), at the beamlet counts of head-and-neck plans; the CPU time of the ``setulb`` calls alone
(process time: all threads, and comparable on a busy machine).

Run: ``.venv/bin/python benchmarks/bench_lbfgsb_threads.py``.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.optimize
import scipy.optimize._lbfgsb_py as lbfgsb_py
from threadpoolctl import threadpool_info, threadpool_limits

ITERATIONS = 40  # one optimisation step of optim.autoplan


def setulb_cpu_ms(n: int) -> tuple[float, int]:
    """Mean CPU ms per ``setulb`` call over one ``ITERATIONS``-iteration minimisation."""
    original = lbfgsb_py._lbfgsb.setulb
    spent = [0.0, 0]

    def timed(*args, **kwargs):
        start = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - start
            spent[1] += 1

    rng = np.random.default_rng(0)
    curvature, centre = rng.random(n) * 100.0, rng.normal(size=n)
    lbfgsb_py._lbfgsb.setulb = timed
    try:
        scipy.optimize.minimize(
            lambda x: (0.5 * np.sum(curvature * (x - centre) ** 2), curvature * (x - centre)),
            np.ones(n), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * n,
            options={"maxiter": ITERATIONS, "ftol": 0.0, "gtol": 0.0})
    finally:
        lbfgsb_py._lbfgsb.setulb = original
    return 1e3 * spent[0] / spent[1], spent[1]


def main() -> None:
    blas = [(i["internal_api"], i["num_threads"]) for i in threadpool_info()
            if i["user_api"] == "blas"]
    print(f"BLAS: {blas}")
    print(f"{'beamlets':>8} {'BLAS threads':>12} {'setulb CPU ms/call':>19} {'calls':>6}")
    for n in (2836, 5000, 10177):
        for limit in (None, 1):
            with threadpool_limits(limits=limit, user_api="blas"):
                ms, calls = setulb_cpu_ms(n)
            print(f"{n:8d} {'all' if limit is None else limit:>12} {ms:19.2f} {calls:6d}")


if __name__ == "__main__":
    main()
