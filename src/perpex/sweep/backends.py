"""Where a sweep's tasks run: in this process, on a local process pool, or on Ray.

Each backend is a generator of ``(task, result)`` pairs in the order the tasks finish, where
the result is the task function's row or the exception that stopped it from returning one
(a worker that crashed, a result that could not be sent back). Closing the generator (the
caller stops at a failure, or is interrupted) cancels the tasks not started yet and shuts
down what the backend started. The order tasks finish in is the backends' business; the
runner sorts the rows before it writes a table, so no result depends on it.

Per-task setup is paid once per worker, not once per task: the local pool's workers are
forked from a "forkserver" that has already imported the simulator, and live for the whole
sweep, so the market data a scenario loads (cached per process by `perpex.sim.data`) and the
sweep's scenarios (cached by the task function) are loaded once per worker. Ray's workers are
long-lived processes too.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import multiprocessing
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final

from perpex.sweep.spec import SweepSpec, Task

# The modules a local worker needs, imported once in the forkserver that forks every worker.
PRELOAD: Final = ["perpex.sim.runner", "perpex.sweep.spec", "perpex.sweep.runner"]
# Tasks handed to the backend ahead of the ones running: enough to keep every worker busy
# while a result travels back, few enough that a stop cancels nearly everything at once.
QUEUED_PER_WORKER: Final = 2
RAY_MIN_IN_FLIGHT: Final = 8

TaskFn = Callable[[SweepSpec, int, int, int], dict[str, Any]]
Outcome = tuple[Task, "dict[str, Any] | BaseException"]


class WorkerLost(RuntimeError):
    """The backend itself failed (a pool worker killed by the OS, say), not one task."""


def run_inline(fn: TaskFn, spec: SweepSpec, todo: Sequence[Task]) -> Generator[Outcome, None, None]:
    """One task after the other in this process (debugging; tests that replace the task)."""
    for task in todo:
        try:
            result: dict[str, Any] | BaseException = fn(
                spec, task.point, task.seed_index, task.seed
            )
        except Exception as exc:  # the task function records its own errors; this is a bug
            result = exc
        yield task, result


def run_local(
    fn: TaskFn, spec: SweepSpec, todo: Sequence[Task], workers: int
) -> Generator[Outcome, None, None]:
    """A process pool of `workers` on this machine."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    queue = iter(todo)
    pending: dict[Future[dict[str, Any]], Task] = {}
    order = {task: n for n, task in enumerate(todo)}  # report a batch in task order

    def fill() -> None:
        while len(pending) < workers * QUEUED_PER_WORKER:
            task = next(queue, None)
            if task is None:
                return
            pending[pool.submit(fn, spec, task.point, task.seed_index, task.seed)] = task

    try:
        fill()
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: order[pending[f]]):
                task = pending.pop(future)
                try:
                    result: dict[str, Any] | BaseException = future.result()
                except BrokenProcessPool as exc:
                    raise WorkerLost(
                        f"a worker process died while running point {task.point}, seed"
                        f" {task.seed_index} (out of memory?): {exc}"
                    ) from exc
                except Exception as exc:
                    result = exc
                yield task, result
            fill()
    finally:
        # the tasks not started are dropped; the ones running finish (a few seconds at most)
        pool.shutdown(wait=True, cancel_futures=True)


def ray_available() -> bool:
    return importlib.util.find_spec("ray") is not None


def run_ray(
    fn: TaskFn, spec: SweepSpec, todo: Sequence[Task], workers: int, address: str | None
) -> Generator[Outcome, None, None]:
    """Ray's task API: a local Ray instance of `workers` CPUs that this call starts and stops,
    or the existing cluster at `address` (its CPUs; perpex must be installed on its nodes)."""
    # Any: ray's hints are partial, and mypy must pass whether or not the extra is installed
    ray: Any = importlib.import_module("ray")
    started = not ray.is_initialized()
    ray.init(
        address=address or None,
        num_cpus=None if address else workers,
        include_dashboard=False,
        ignore_reinit_error=True,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    pending: dict[Any, Task] = {}
    try:
        cpus = int(ray.cluster_resources().get("CPU", workers))
        in_flight = max(RAY_MIN_IN_FLIGHT, cpus * QUEUED_PER_WORKER)
        remote = ray.remote(num_cpus=1)(fn)
        spec_ref = ray.put(spec)  # sent to the object store once, not with every task
        queue = iter(todo)

        def fill() -> None:
            while len(pending) < in_flight:
                task = next(queue, None)
                if task is None:
                    return
                ref = remote.remote(spec_ref, task.point, task.seed_index, task.seed)
                pending[ref] = task

        fill()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                task = pending.pop(ref)
                try:
                    result: dict[str, Any] | BaseException = ray.get(ref)
                except Exception as exc:  # a worker crash Ray gave up retrying, say
                    result = exc
                yield task, result
            fill()
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()


__all__ = ["PRELOAD", "TaskFn", "WorkerLost", "ray_available", "run_inline", "run_local", "run_ray"]
