"""`run_sweep(spec, out=...)`: every (grid point, seed) of a sweep run as an independent task.

A task builds its grid point's scenario (`perpex.sweep.spec.scenario_for`), runs the simulator
with the task's seed (no files, no progress bar) and keeps the sweep's metrics and the ones
the aggregate needs (`perpex.sweep.results.kept_metrics`). Any exception a task raises is its
row's ``error`` ("Type: message"), so one bad task never stops the sweep unless
``fail_fast``. The seed is derived from (sweep, grid point, seed index) by `spec.tasks`, so a
task gives the same row on any backend, in any worker, in any order; the rows are sorted by
(point, seed index) before a table is written, and the aggregate has no timing in it.

Rows go to ``tasks.jsonl`` as tasks finish (flushed and fsynced). ``resume`` reads it back
and skips every task that succeeded; a task recorded as failed runs again (a risk team wants
the numbers: a failure caused by a killed worker or a full disk should not stand). At the end
``tasks.parquet``, ``aggregate.parquet`` and ``report.html`` are written (`meta.json` is
written when the sweep starts). A stop at the first failure (``fail_fast``) or a lost worker
writes no tables: the log keeps what finished, and ``resume`` goes on from it.

Units: money in USDT (the simulator's summary), time in seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from perpex.sim.runner import run as simulate
from perpex.sim.scenario_model import Scenario
from perpex.sweep import backends
from perpex.sweep.results import (
    AGGREGATE_TABLE,
    TASKS_LOG,
    TASKS_TABLE,
    Row,
    TaskLog,
    aggregate_rows,
    aggregate_table,
    check_meta,
    clear_sweep_dir,
    kept_metrics,
    read_log,
    sorted_rows,
    sweep_meta,
    tasks_table,
    write_meta,
    write_parquet,
)
from perpex.sweep.spec import (
    GridPoint,
    SweepError,
    SweepSpec,
    Task,
    grid,
    load_sweep,
    scenario_for,
    tasks,
)

BACKENDS: Final = ("local", "ray")
TEST_BACKENDS: Final = ("inline",)  # tasks in this process, one at a time (tests, debugging)
MAX_SPEC_SOURCES: Final = 8  # sweep files a worker keeps loaded (one per sweep, in practice)


@dataclass(frozen=True)
class SweepResult:
    """What `run_sweep` did: its files, the task counts, the aggregate (one row per point).

    `skipped` tasks had succeeded before (``resume``); `ran` is what this call ran; `failed`
    counts the tasks whose latest record is a failure. `stopped` is the reason the sweep
    stopped before the end (the first failure with ``fail_fast``, a lost worker), else None:
    then no table was written and `aggregate` is empty."""

    out_dir: Path
    tasks: int
    skipped: int
    ran: int
    failed: int
    aggregate: list[Row]
    tasks_path: Path | None
    aggregate_path: Path | None
    report_path: Path | None
    report_note: str | None
    stopped: str | None
    wall_seconds: float
    errors: list[Row] = field(default_factory=list)  # the failed tasks' rows, in task order


# -- one task --------------------------------------------------------------------------------------
@lru_cache(maxsize=MAX_SPEC_SOURCES)
def _load_cached(source: str) -> SweepSpec:
    return load_sweep(source)


class _PointCache:
    """The scenarios of one sweep's grid points, built once per worker process (a worker runs
    many tasks of the same sweep; each arrives with its own unpickled copy of the spec)."""

    def __init__(self) -> None:
        self.spec: SweepSpec | None = None
        self.points: list[GridPoint] = []
        self.scenarios: dict[int, Scenario] = {}

    def scenario(self, spec: SweepSpec, point_index: int) -> Scenario:
        if spec is not self.spec and spec != self.spec:
            self.spec, self.points, self.scenarios = spec, grid(spec), {}
        found = self.scenarios.get(point_index)
        if found is None:
            found = self.scenarios[point_index] = scenario_for(spec, self.points[point_index])
        return found


_POINTS = _PointCache()


def run_task(spec: SweepSpec | str, point_index: int, seed_index: int, seed: int) -> Row:
    """Run one task: grid point `point_index` of the sweep (a `SweepSpec`, or its name or path)
    with `seed`. Returns the task's row; never raises for a failure of the run itself."""
    start = time.perf_counter()
    params: dict[str, str] = {}
    metrics: dict[str, Any] | None = None
    error: str | None = None
    try:
        loaded = _load_cached(spec) if isinstance(spec, str) else spec
        scenario = _POINTS.scenario(loaded, point_index)
        point = _POINTS.points[point_index]
        params = {p.key: label for p, label in zip(loaded.parameters, point.labels, strict=True)}
        summary = simulate(scenario, seed=seed, progress=False, out=None).summary
        metrics = {key: summary[key] for key in kept_metrics(loaded)}
    except Exception as exc:  # any failure is the task's result, not the sweep's end
        error = f"{type(exc).__name__}: {exc}"
        metrics = None
    return {
        "point": point_index,
        "seed_index": seed_index,
        "seed": seed,
        "params": params,
        "metrics": metrics,
        "error": error,
        "seconds": round(time.perf_counter() - start, 6),
    }


# -- the sweep -------------------------------------------------------------------------------------
def _row(task: Task, point: GridPoint, spec: SweepSpec, result: Row | BaseException) -> Row:
    """The task's row as the log stores it (fields in the contract's order)."""
    params = {p.key: label for p, label in zip(spec.parameters, point.labels, strict=True)}
    if isinstance(result, BaseException):
        error: str | None = f"{type(result).__name__}: {result}"
        metrics, seconds = None, 0.0
    else:
        assert (result["point"], result["seed_index"], result["seed"]) == (
            task.point, task.seed_index, task.seed,
        ), (result, task)  # fmt: skip
        error, metrics, seconds = result["error"], result["metrics"], result["seconds"]
    return {
        "point": task.point,
        "seed_index": task.seed_index,
        "seed": task.seed,
        "params": params,
        "metrics": metrics,
        "error": error,
        "seconds": seconds,
    }


def describe_failure(row: Row) -> str:
    labels = ", ".join(f"{key}={label}" for key, label in row["params"].items())
    where = f"point {row['point']} ({labels})" if labels else f"point {row['point']}"
    return f"{where}, seed {row['seed']} (seed index {row['seed_index']}): {row['error']}"


def _outcomes(
    backend: str, spec: SweepSpec, todo: list[Task], workers: int, address: str | None
) -> Generator[backends.Outcome, None, None]:
    # the task function is looked up here, at call time, so a test can replace it (inline)
    if backend == "inline" or not todo:  # nothing to run: start no pool, no Ray
        return backends.run_inline(run_task, spec, todo)
    if backend == "ray":
        return backends.run_ray(run_task, spec, todo, workers, address)
    return backends.run_local(run_task, spec, todo, workers)


def _check_options(backend: str, workers: int | None, address: str | None) -> int:
    if backend not in BACKENDS + TEST_BACKENDS:
        raise ValueError(f"--backend {backend}: must be one of {', '.join(BACKENDS)}")
    if workers is None:
        workers = max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers {workers}: must be an integer >= 1")
    if address and backend != "ray":
        raise ValueError(f"--address {address}: only the ray backend connects to a cluster")
    if backend == "ray" and not backends.ray_available():
        raise ValueError(
            "--backend ray: ray is not installed (pip install 'perpex[ray]', or make venv)"
        )
    return workers


def _report(out: Path) -> tuple[Path | None, str | None]:
    try:
        from perpex.report.sweep_html import build_sweep_report
    except ImportError as exc:
        return None, f"report.html not written: perpex.report.sweep_html cannot be imported ({exc})"
    try:
        return build_sweep_report(out), None
    except Exception as exc:  # the results are written: a report bug must not lose them
        return None, f"report.html not written: {type(exc).__name__}: {exc}"


class _Progress:
    """A rich progress bar on stderr: tasks done of all, failures, elapsed time and ETA."""

    def __init__(self, name: str, total: int, skipped: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(
            TextColumn(f"[bold]sweep {name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tasks"),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task("sweep", total=total, completed=skipped, failed="")
        self.failed = 0
        self.progress.start()

    def advance(self, failed: bool) -> None:
        self.failed += failed
        text = f"[red]{self.failed} failed" if self.failed else ""
        self.progress.update(self.task, advance=1, failed=text)

    def close(self) -> None:
        self.progress.stop()


def run_sweep(
    spec: SweepSpec,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    out: str | Path,
    resume: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
) -> SweepResult:
    """Run every task of `spec` on `backend` with `workers` in parallel; write the results to
    `out` (see the module docstring). Without `resume`, a previous sweep's files in `out` are
    removed first. A bad option or a log that belongs to another sweep is a `ValueError`
    (`SweepError` is one) before any task runs."""
    wall_start = time.perf_counter()
    workers = _check_options(backend, workers, address)
    out_dir = Path(out)
    points = grid(spec)
    all_tasks = tasks(spec)
    meta = sweep_meta(spec, len(points), len(all_tasks))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        reason = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        raise SweepError(f"--out {out_dir}: cannot make the results directory: {reason}") from None
    if resume:
        check_meta(out_dir, meta)
        rows = read_log(out_dir, all_tasks)
    else:
        clear_sweep_dir(out_dir)
        rows = {}
    write_meta(out_dir, meta)
    skipped = sum(1 for r in rows.values() if r["error"] is None)
    todo = [t for t in all_tasks if (t.point, t.seed_index) not in rows or
            rows[t.point, t.seed_index]["error"] is not None]  # fmt: skip
    workers = min(workers, max(1, len(todo)))

    ran = 0
    stopped: str | None = None
    log = TaskLog(out_dir)
    bar = _Progress(spec.name, len(all_tasks), skipped) if progress else None
    try:
        outcomes = _outcomes(backend, spec, todo, workers, address)
        with closing(outcomes):  # leaving early cancels what has not started
            for task, result in outcomes:
                row = _row(task, points[task.point], spec, result)
                log.append(row)
                rows[task.point, task.seed_index] = row
                ran += 1
                if bar is not None:
                    bar.advance(row["error"] is not None)
                if fail_fast and row["error"] is not None:
                    stopped = f"--fail-fast: {describe_failure(row)}"
                    break
    except backends.WorkerLost as exc:
        stopped = f"{exc}; the finished tasks are in {out_dir / TASKS_LOG}: rerun with --resume"
    finally:
        log.close()
        if bar is not None:
            bar.close()

    final = sorted_rows(rows.values())
    errors = [r for r in final if r["error"] is not None]
    tasks_path = aggregate_path = report_path = None
    report_note: str | None = None
    aggregate: list[Row] = []
    if stopped is None:
        tasks_path, aggregate_path = out_dir / TASKS_TABLE, out_dir / AGGREGATE_TABLE
        write_parquet(tasks_table(spec, final), tasks_path)
        aggregate = aggregate_rows(spec, points, final)
        write_parquet(aggregate_table(spec, aggregate), aggregate_path)
        report_path, report_note = _report(out_dir)
    return SweepResult(
        out_dir=out_dir,
        tasks=len(all_tasks),
        skipped=skipped,
        ran=ran,
        failed=len(errors),
        aggregate=aggregate,
        tasks_path=tasks_path,
        aggregate_path=aggregate_path,
        report_path=report_path,
        report_note=report_note,
        stopped=stopped,
        wall_seconds=time.perf_counter() - wall_start,
        errors=errors,
    )


__all__ = ["BACKENDS", "SweepResult", "describe_failure", "run_sweep", "run_task"]
