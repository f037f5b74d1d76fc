"""Sweeps: tasks per second and parallel efficiency from 1 to 2 workers, local pool and Ray.

The shipped `insurance-fund-sizing-small` (30 tasks: the 10:00 leg of Black Thursday with
1,000 traders, 5 fund sizes x 2 leverage crowds x 3 seeds) is run four times: the local
process pool with 1 and 2 workers, Ray with 1 and 2 (a local Ray instance that the sweep
starts and stops, which is part of the time: that is what a user waits for). Every run writes
its files to a fresh temporary directory, progress bar off; the four `aggregate.parquet` are
checked equal (the results may not depend on the backend or the worker count).

Rows: 1 worker in tasks/s, with the plain order book's ops/s of the same run as the baseline
(`bench_edge`'s workload; our machines differ threefold); 2 workers in tasks/s with the
1-worker rate as the baseline and the parallel efficiency (rate with 2 / (2 x rate with 1)) as
the ratio. Goal: >= 90 % with the local pool. A 2-core machine running the benchmark has no
spare core: the efficiency measured there is a floor.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from benchmarks.bench_edge import generate, run_plain
from benchmarks.bench_engine import best_of
from perpex.sweep.runner import run_sweep
from perpex.sweep.spec import load_sweep, tasks

SWEEP = "insurance-fund-sizing-small"


def timed(backend: str, workers: int, out: Path) -> float:
    spec = load_sweep(SWEEP)
    started = time.perf_counter()
    result = run_sweep(spec, backend=backend, workers=workers, out=out, progress=False)
    elapsed = time.perf_counter() - started
    assert result.failed == 0, result.errors
    return elapsed


def run() -> list[dict[str, Any]]:
    ops = generate()
    plain_s, _ = best_of(lambda: None, lambda _: run_plain(ops))
    plain_rate = len(ops) / plain_s
    n = len(tasks(load_sweep(SWEEP)))
    rows: list[dict[str, Any]] = []
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for backend in ("local", "ray"):
            rates = {}
            for workers in (1, 2):
                out = Path(tmp) / f"{backend}-{workers}"
                rates[workers] = n / timed(backend, workers, out)
                tables.append(pq.read_table(out / "aggregate.parquet"))
            label = f"sweep {SWEEP} ({n} tasks), {backend}"
            rows.append({
                "benchmark": f"{label}, 1 worker", "metric": "tasks/s", "value": rates[1],
                "baseline": plain_rate, "ratio": rates[1] / plain_rate,
                "goal": "baseline: the plain book's ops/s",
            })  # fmt: skip
            rows.append({
                "benchmark": f"{label}, 2 workers (ratio: parallel efficiency)",
                "metric": "tasks/s", "value": rates[2], "baseline": rates[1],
                "ratio": rates[2] / (2 * rates[1]),
                "goal": ">= 90 % with the local pool" if backend == "local" else "none set",
            })  # fmt: skip
    assert all(t.equals(tables[0]) for t in tables), "the aggregate depends on the backend"
    return rows


if __name__ == "__main__":  # python -m benchmarks.bench_sweep
    for r in run():
        print(f"{r['benchmark']}: {r['value']:.3f} {r['metric']}, ratio {r['ratio']:.3f}")
