"""Cohort runs on Dask: one task per patient, each in a process of its own, a row per patient.

The one helper that ``planner batch``, ``planner evaluate-prediction --workers`` and the
plan-quality benchmark share:

- :func:`dask_client` opens a ``dask.distributed`` client: on an existing scheduler
  (``--scheduler tcp://host:8786``) or on a ``LocalCluster`` sized by :func:`local_cluster_size`
  (workers x threads within the machine's cores, so that the patients' numpy and torch threads
  do not oversubscribe them; a memory limit per worker).
- :func:`run_tasks` sends one task per patient and yields a row for each as it finishes. A task
  runs its function in a child process (:func:`run_isolated`): the patient's peak memory is its
  own (the child's maximum resident set), a patient over the memory limit is killed alone, and
  a crash, an exception or a killed worker becomes that patient's error row while the others go
  on. Ctrl-C cancels what is left; the children end with their worker.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle

from planner.errors import InputError, PlannerError

#: Memory one patient may need: the largest plan measured, 5.2 GB (OpenKBP test patients,
#: benchmarks/results/plan_quality_openkbp.md), and some room. Sizes the default LocalCluster.
PATIENT_MEMORY_BYTES = 6 * 10**9

#: The variables numpy's BLAS, OpenMP and torch read for their thread counts at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

_POLL_S = 0.2  # how often a child's memory is sampled


@dataclass(frozen=True)
class Task:
    """One patient's work: ``function(*args)`` returns a dict of plain values (its row).

    ``function`` and ``args`` reach a fresh interpreter by cloudpickle (a planner function, or
    a script's own). ``log`` receives the child's stdout and stderr.
    """

    name: str
    function: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    log: Path | None = None


@dataclass(frozen=True)
class ClusterOptions:
    """Where the tasks run: an existing ``scheduler``, or a LocalCluster of ``workers``, each
    running one patient at a time with ``threads`` threads and at most ``memory_limit_bytes``.
    ``None``: sized to the machine (:func:`local_cluster_size`)."""

    workers: int | None = None
    threads: int | None = None
    memory_limit_bytes: int | None = None
    scheduler: str | None = None


@dataclass(frozen=True)
class Limits:
    """What each task's process gets: ``threads`` numpy/torch threads, at most
    ``memory_limit_bytes`` resident, and, with ``pin``, cores of its own (on a LocalCluster,
    worker ``i`` takes the ``i``-th run of ``threads`` cores), since planner sizes its thread
    pools by the cores the process may use. ``None``: the worker's."""

    threads: int | None = None
    memory_limit_bytes: int | None = None
    pin: bool = False


def add_cluster_options(parser: argparse.ArgumentParser, *, threads: bool = True) -> None:
    """``--workers``, ``--scheduler``, ``--memory-limit`` (and ``--threads`` unless the command
    has its own) for :func:`cluster_options`."""
    group = parser.add_argument_group("cohort on Dask")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="patients planned at once on a local Dask cluster (default: as many "
                            f"as the cores and memory allow, {PATIENT_MEMORY_BYTES / 1e9:g} GB "
                            "each)")
    if threads:
        group.add_argument("--threads", type=int, default=None, metavar="N",
                           help="numpy/torch threads of each patient (default: the cores "
                                "divided among the workers)")
    group.add_argument("--memory-limit", type=float, default=None, metavar="GB",
                       help="a patient above this resident memory is stopped with an error "
                            "(default: the machine's memory divided among the workers)")
    group.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="an existing Dask scheduler (tcp://host:8786) instead of a local "
                            "cluster; its workers need planner installed and the paths readable")


def cluster_options(args: argparse.Namespace) -> ClusterOptions:
    """The :class:`ClusterOptions` of :func:`add_cluster_options`' arguments, checked."""
    for name in ("workers", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise InputError(f"--{name}: must be >= 1, got {value}")
    if args.memory_limit is not None and args.memory_limit <= 0:
        raise InputError(f"--memory-limit: must be > 0 GB, got {args.memory_limit:g}")
    if args.scheduler is not None and args.workers is not None:
        raise InputError("--workers: the cluster at --scheduler has its own workers")
    memory = None if args.memory_limit is None else int(args.memory_limit * 1e9)
    return ClusterOptions(args.workers, getattr(args, "threads", None), memory, args.scheduler)


def local_cluster_size(cores: int, memory_bytes: int, options: ClusterOptions
                       ) -> tuple[int, int, int]:
    """Workers, threads per patient and memory limit per worker (bytes) of a LocalCluster.

    By default as many workers as both the cores and the memory allow (one patient per core,
    :data:`PATIENT_MEMORY_BYTES` each; at least one), the cores divided among them so that
    workers x threads <= cores, and the memory divided among them.
    """
    workers = options.workers or max(1, min(cores, memory_bytes // PATIENT_MEMORY_BYTES))
    threads = options.threads or max(1, cores // workers)
    memory = options.memory_limit_bytes or memory_bytes // workers
    return workers, threads, memory


@contextmanager
def dask_client(options: ClusterOptions, say: Callable[[str], None]
                ) -> Iterator[tuple[Any, Limits]]:
    """A ``distributed.Client`` and the :class:`Limits` of each task.

    On an existing scheduler the limits are those given (not pinned); on a LocalCluster those of
    :func:`local_cluster_size`, pinned. Says the cluster's size and the dashboard's address.
    """
    import dask
    import psutil
    from distributed import Client, LocalCluster

    if options.scheduler is not None:
        try:
            client = Client(options.scheduler, timeout="20s")
        except (OSError, TimeoutError) as error:
            raise InputError(f"--scheduler {options.scheduler}: {error}") from None
        with client:
            workers = client.scheduler_info()["workers"]
            say(f"Dask scheduler {options.scheduler}: {len(workers)} workers, "
                f"{sum(w['nthreads'] for w in workers.values())} threads; "
                f"{_dashboard(client)}")
            yield client, Limits(options.threads, options.memory_limit_bytes)
        return
    cores = len(os.sched_getaffinity(0))
    workers, threads, memory = local_cluster_size(cores, psutil.virtual_memory().total, options)
    # One patient at a time per worker (one Dask thread); a patient whose worker dies twice is
    # given up, not sent round the cluster (Dask's default tries three workers). The workers
    # start with Ctrl-C ignored (they inherit it), so that it is this process's to handle: it
    # cancels the tasks and closes the cluster, whose closing ends the patients' processes.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, memory_limit=memory,
                                   processes=True, dashboard_address=":8787")
    finally:
        signal.signal(signal.SIGINT, previous)
    with cluster, Client(cluster) as client:
        say(f"Dask LocalCluster: {workers} workers x {threads} threads on {cores} cores, "
            f"{memory / 1e9:.1f} GB each; {_dashboard(client)}")
        yield client, Limits(threads, memory, pin=True)


def _dashboard(client: Any) -> str:
    """The dashboard's address, and what it needs where that is missing (bokeh)."""
    from importlib.util import find_spec

    if "dashboard" not in client.scheduler_info().get("services", {}):
        return "no dashboard"
    # Where bokeh is missing the scheduler serves a page saying so; with --scheduler it is the
    # scheduler's machine that needs it, and this one cannot tell.
    needs = "" if find_spec("bokeh") else " (it shows plots with bokeh>=3.1 installed)"
    return f"dashboard {client.dashboard_link}{needs}"


def run_tasks(client: Any, tasks: Sequence[Task], limits: Limits,
              say: Callable[[str], None] = lambda line: None) -> Iterator[dict[str, Any]]:
    """Run each task on the cluster; yield its row as it finishes (in finishing order).

    Every row has ``name``, ``status`` ("ok" or "failed"), ``error`` ("" when ok), ``wall_s``
    (the child's, s) and ``peak_memory_gb`` (the child's maximum resident set, 10^9 bytes), then
    the task's own values. ``say`` gets a progress line per task: done, failed, estimated time
    left. On KeyboardInterrupt the unfinished tasks are cancelled and it is raised again.
    """
    from distributed import as_completed

    futures = {client.submit(_run_task, t, limits, pure=False,
                             key=f"{t.name}-{uuid.uuid4().hex[:8]}"): t for t in tasks}
    start = time.perf_counter()
    done = failed = 0
    try:
        for future in as_completed(futures):
            task = futures[future]
            try:
                row = future.result()
            except Exception as error:  # noqa: BLE001 - the worker died, or Dask failed
                lost = type(error).__name__ == "KilledWorker"
                row = {"name": task.name, "status": "failed", "wall_s": None,
                       "peak_memory_gb": None,
                       "error": ("its worker died (killed for memory?)" if lost
                                 else f"{type(error).__name__}: {error}")}
            done += row["status"] == "ok"
            failed += row["status"] != "ok"
            elapsed = time.perf_counter() - start
            left = len(tasks) - done - failed
            eta = elapsed / (done + failed) * left
            say(f"[{done + failed}/{len(tasks)}] {task.name}: {row['status']}"
                f"{' (' + row['error'] + ')' if row['error'] else ''} | done {done}, "
                f"failed {failed}, left {left}, ETA {_duration(eta)}")
            yield row
    except (KeyboardInterrupt, GeneratorExit):
        client.cancel(list(futures))
        raise


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _run_task(task: Task, limits: Limits) -> dict[str, Any]:
    """On a worker: the task in a child process, its outcome as a row (never raises)."""
    cores = None
    if limits.pin and limits.threads is not None:
        from distributed import get_worker

        available = sorted(os.sched_getaffinity(0))
        first = int(get_worker().name) * limits.threads % len(available)
        cores = available[first:first + limits.threads]
    outcome = run_isolated(task.function, task.args, threads=limits.threads,
                           memory_limit_bytes=limits.memory_limit_bytes, cores=cores,
                           log=task.log)
    return {"name": task.name, "status": "ok" if outcome.error is None else "failed",
            "error": outcome.error or "", "wall_s": round(outcome.wall_s, 2),
            "peak_memory_gb": round(outcome.peak_bytes / 1e9, 3), **(outcome.value or {})}


@dataclass(frozen=True)
class Outcome:
    """What :func:`run_isolated` saw: the function's value, or the error (one line)."""

    value: dict[str, Any] | None
    error: str | None
    wall_s: float
    peak_bytes: int


def run_isolated(function: Callable[..., dict[str, Any]], args: tuple[Any, ...], *,
                 threads: int | None = None, memory_limit_bytes: int | None = None,
                 cores: Sequence[int] | None = None, log: Path | None = None) -> Outcome:
    """``function(*args)`` in a fresh Python process, watched.

    ``function`` and ``args`` go by cloudpickle, so that a function of a script's ``__main__``
    (a benchmark's) runs too. The child gets ``threads`` numpy/torch threads
    (:data:`THREAD_VARIABLES`), runs on ``cores`` (CPU numbers) when given, writes its
    output to ``log`` (else discards it) and dies with its parent. It is killed when its
    resident memory exceeds ``memory_limit_bytes``. A planner error is reported by its message,
    another exception by its type and message (the traceback in ``log``), a signal by its name.
    """
    env = dict(os.environ)
    # Dask sets this for its worker processes (return freed memory to the kernel at once);
    # inherited by a patient's process it made every large array page-fault back in: OpenKBP
    # pt_201's plan spent 43 % of its CPU in the kernel and took 229 s against 123 s.
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    if threads is not None:
        env.update({name: str(threads) for name in THREAD_VARIABLES})
    with tempfile.TemporaryDirectory(prefix="planner-task-") as tmp:
        given, result = Path(tmp) / "task.pickle", Path(tmp) / "result.pickle"
        given.write_bytes(cloudpickle.dumps((function, args, cores)))
        output = open(log, "w") if log is not None else subprocess.DEVNULL
        start = time.perf_counter()
        try:
            child = subprocess.Popen([sys.executable, "-m", "planner.cohort", str(given),
                                      str(result)], stdin=subprocess.DEVNULL, stdout=output,
                                     stderr=subprocess.STDOUT, env=env)
            status, peak, over = _watch(child.pid, memory_limit_bytes)
            child.returncode = os.waitstatus_to_exitcode(status)  # reaped by _watch
        finally:
            if log is not None:
                output.close()
        wall = time.perf_counter() - start
        if over:
            return Outcome(None, f"stopped: resident memory above the limit of "
                                 f"{memory_limit_bytes / 1e9:.1f} GB", wall, peak)
        if child.returncode < 0:
            name = signal.Signals(-child.returncode).name
            why = " (out of memory?)" if child.returncode == -signal.SIGKILL else ""
            return Outcome(None, f"killed by {name}{why}", wall, peak)
        if not result.exists():
            return Outcome(None, f"the task's process exited with code {child.returncode}",
                           wall, peak)
        kind, value = pickle.loads(result.read_bytes())
        return Outcome(value if kind == "ok" else None, None if kind == "ok" else value,
                       wall, peak)


def _watch(pid: int, memory_limit_bytes: int | None) -> tuple[int, int, bool]:
    """Wait for the child ``pid``, killing it above the memory limit: its wait status, its
    peak resident memory (bytes, from the kernel's account at exit) and whether it was killed
    for memory."""
    import psutil

    over = False
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return status, usage.ru_maxrss * 1024, over  # Linux: KiB
        if memory_limit_bytes is not None and not over:
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:  # exited since wait4
                rss = 0
            if rss > memory_limit_bytes:
                os.kill(pid, signal.SIGKILL)
                over = True
        time.sleep(_POLL_S)


def _child_main(given: Path, result: Path) -> None:
    """The child: run the pickled task, pickle ("ok", value) or ("error", one line)."""
    # Die with the worker thread that waits for us (Linux prctl PR_SET_PDEATHSIG = 1), so that a
    # closed or killed cluster leaves no patient running.
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    function, args, cores = pickle.loads(given.read_bytes())
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        outcome: tuple[str, Any] = ("ok", function(*args))
    except PlannerError as error:
        print(f"planner: error: {error}", file=sys.stderr)
        outcome = ("error", str(error))
    except BaseException as error:  # noqa: BLE001 - the row says what happened
        traceback.print_exc()
        outcome = ("error", f"{type(error).__name__}: {error}".strip())
    sys.stdout.flush()
    sys.stderr.flush()
    result.write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    _child_main(Path(sys.argv[1]), Path(sys.argv[2]))
