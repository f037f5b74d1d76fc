"""A sweep's result files in its ``--out`` directory: the task log, the two tables, meta.json.

- ``tasks.jsonl``: the append-only log, one JSON object per finished task, flushed and fsynced
  line by line; the source of truth for ``--resume`` (a torn last line, from a kill in the
  middle of a write, is cut off and its task run again).
- ``tasks.parquet``: one row per task, sorted by (point, seed_index): the seed, each
  parameter's label, each kept metric (null when the task failed), the error, the run time.
- ``aggregate.parquet``: one row per grid point: tasks, failures, P(ADL), the insurance fund's
  drawdown, bad debt and liquidated notional percentiles. No timing column, and fixed Parquet
  settings, so the same sweep gives the same bytes whatever the backend or worker count.
- ``meta.json``: the sweep as data (name, question, parameters with values and labels, seeds,
  target); written when the sweep starts, so a resume can check it continues the same sweep.

Units: money in USDT (floats, as the simulator's summary gives them), run time in seconds.
Percentiles are `numpy.percentile(..., method="linear")` over the successful tasks, NaN when a
point has none.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpex.sweep.spec import GridPoint, SweepError, SweepSpec, Task

TASKS_LOG: Final = "tasks.jsonl"
TASKS_TABLE: Final = "tasks.parquet"
AGGREGATE_TABLE: Final = "aggregate.parquet"
META: Final = "meta.json"
REPORT: Final = "report.html"
SWEEP_FILES: Final = (TASKS_LOG, TASKS_TABLE, AGGREGATE_TABLE, META, REPORT)

# What the aggregate needs from every task, kept whatever the sweep's `metrics` say.
ALWAYS_KEPT: Final = (
    "adl_events",
    "insurance_fund_start",
    "insurance_fund_min",
    "bad_debt",
    "liquidated_notional",
)
# Summary keys whose values are text, not numbers (a string column, not float64).
TEXT_METRICS: Final = frozenset({"scenario", "state_hash"})
# tasks.parquet's own columns; a metric of the same name ("seed") is already there.
TASK_COLUMNS: Final = ("point", "seed_index", "seed", "error", "seconds")
AGGREGATE_FIGURES: Final = (
    "p_adl",
    "fund_drawdown_p50",
    "fund_drawdown_p95",
    "fund_drawdown_p99",
    "bad_debt_mean",
    "bad_debt_p99",
    "liquidated_notional_p50",
    "liquidated_notional_p99",
)
# Fixed Parquet settings: the same table gives the same bytes.
PARQUET_OPTIONS: Final[Mapping[str, Any]] = {
    "compression": "zstd",
    "compression_level": 3,
    "row_group_size": 1 << 20,
    "use_dictionary": False,
    "write_statistics": True,
}
# The meta.json keys that decide the tasks and their rows: a resume must find them unchanged
# (the question and the report's target may be edited between runs).
IDENTITY_KEYS: Final = ("name", "scenario", "fixed", "parameters", "seeds", "metrics")

Row = dict[str, Any]
TaskKey = tuple[int, int]  # (point, seed_index)


def kept_metrics(spec: SweepSpec) -> tuple[str, ...]:
    """The summary keys every task keeps: the sweep's metrics, then the aggregate's own."""
    return tuple(spec.metrics) + tuple(k for k in ALWAYS_KEPT if k not in spec.metrics)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _as_float(value: object) -> float:
    assert isinstance(value, int | float), value
    return float(value)


def numeric_parameters(spec: SweepSpec) -> list[int]:
    """Indexes of the parameters whose every value is a number (they get a ``#value`` column,
    a heatmap's axis)."""
    return [i for i, p in enumerate(spec.parameters) if all(is_number(v) for v in p.values)]


# -- meta.json -----------------------------------------------------------------------------------
def sweep_meta(spec: SweepSpec, points: int, tasks: int) -> dict[str, Any]:
    """The sweep as JSON data (what the report and a resume read back)."""
    numeric = set(numeric_parameters(spec))
    meta = {
        "name": spec.name,
        "question": spec.question,
        "scenario": spec.scenario,
        "seeds": spec.seeds,
        "target_p_adl": spec.target_p_adl,
        "metrics": list(spec.metrics),
        "kept_metrics": list(kept_metrics(spec)),
        "fixed": dict(spec.fixed),
        "parameters": [
            {
                "key": p.key,
                "values": list(p.values),
                "labels": list(p.labels),
                "numeric": i in numeric,
            }
            for i, p in enumerate(spec.parameters)
        ],
        "points": points,
        "tasks": tasks,
    }
    # through JSON once: what is compared on resume is what the file holds
    loaded: dict[str, Any] = json.loads(json.dumps(meta, default=str))
    return loaded


def write_meta(out: Path, meta: Mapping[str, Any]) -> None:
    text = json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n"
    (out / META).write_text(text, encoding="utf-8")


def check_meta(out: Path, meta: Mapping[str, Any]) -> None:
    """Refuse to resume into a directory another sweep (or another version of it) wrote."""
    path = out / META
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SweepError(f"{path}: cannot be read to resume: {exc}") from None
    if not isinstance(old, dict):
        raise SweepError(f"{path}: is not a sweep's meta.json")
    for key in IDENTITY_KEYS:
        if old.get(key) != meta[key]:
            raise SweepError(
                f"{path}: {key}: differs from sweep {meta['name']!r}'s; a resume must continue"
                " the same sweep (use another --out, or drop --resume to start again)"
            )


def clear_sweep_dir(out: Path) -> None:
    """Remove a previous sweep's files from `out` (only the files a sweep writes)."""
    for name in SWEEP_FILES:
        (out / name).unlink(missing_ok=True)


# -- tasks.jsonl -----------------------------------------------------------------------------------
class TaskLog:
    """The append-only log: one line per finished task, on disk before the next one counts."""

    def __init__(self, out: Path) -> None:
        self.path = out / TASKS_LOG
        self._file: IO[str] = self.path.open("a", encoding="utf-8")

    def append(self, row: Row) -> None:
        self._file.write(json.dumps(row, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())  # a kill -9 after this line cannot lose the task

    def close(self) -> None:
        self._file.close()


def _check_record(record: object, where: str, seeds: Mapping[TaskKey, int]) -> Row:
    if not isinstance(record, dict):
        raise SweepError(f"{where}: not a task record (a JSON object)")
    for key in ("point", "seed_index", "seed"):
        value = record.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SweepError(f"{where}: {key}: must be an integer, got {value!r}")
    task = (record["point"], record["seed_index"])
    if task not in seeds:
        raise SweepError(f"{where}: task (point {task[0]}, seed {task[1]}) is not in this sweep")
    if record["seed"] != seeds[task]:
        raise SweepError(
            f"{where}: seed: {record['seed']} is not this sweep's seed {seeds[task]} for point"
            f" {task[0]}, seed {task[1]}"
        )
    metrics, error = record.get("metrics"), record.get("error")
    if not (metrics is None or isinstance(metrics, dict)) or not (
        error is None or isinstance(error, str)
    ):
        raise SweepError(f"{where}: metrics and error must be an object / a string or null")
    if (metrics is None) == (error is None):
        raise SweepError(f"{where}: a task record has either metrics or an error")
    return record


def read_log(out: Path, tasks: Sequence[Task]) -> dict[TaskKey, Row]:
    """The latest record of every task in ``OUT/tasks.jsonl`` (empty when there is none).

    A last line without its newline is a write cut short by a kill: it is cut off the file
    (so that the next append starts a line of its own) and its task runs again."""
    path = out / TASKS_LOG
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with path.open("r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    seeds = {(t.point, t.seed_index): t.seed for t in tasks}
    latest: dict[TaskKey, Row] = {}
    for number, line in enumerate(data[:end].decode("utf-8").splitlines(), start=1):
        where = f"{path}: line {number}"
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise SweepError(f"{where}: not JSON ({exc})") from None
        row = _check_record(record, where, seeds)
        latest[(row["point"], row["seed_index"])] = row  # a retried task: the last one counts
    return latest


# -- the tables ------------------------------------------------------------------------------------
def sorted_rows(rows: Iterable[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r["point"], r["seed_index"]))


def _metric_column(rows: Sequence[Row], key: str) -> pa.Array:
    values = [None if r["metrics"] is None else r["metrics"].get(key) for r in rows]
    if key in TEXT_METRICS:
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.array([None if v is None else float(v) for v in values], type=pa.float64())


def tasks_table(spec: SweepSpec, rows: Sequence[Row]) -> pa.Table:
    """tasks.parquet: one row per task, `rows` already sorted by (point, seed_index)."""
    columns: dict[str, pa.Array] = {
        "point": pa.array([r["point"] for r in rows], type=pa.int64()),
        "seed_index": pa.array([r["seed_index"] for r in rows], type=pa.int64()),
        "seed": pa.array([r["seed"] for r in rows], type=pa.int64()),
    }
    for p in spec.parameters:
        columns[p.key] = pa.array([r["params"].get(p.key) for r in rows], type=pa.string())
    for key in kept_metrics(spec):
        if key not in TASK_COLUMNS and key not in columns:
            columns[key] = _metric_column(rows, key)
    columns["error"] = pa.array([r["error"] for r in rows], type=pa.string())
    columns["seconds"] = pa.array([float(r["seconds"]) for r in rows], type=pa.float64())
    return pa.table(columns)


def _percentile(values: np.ndarray[Any, np.dtype[np.float64]], q: float) -> float:
    if len(values) == 0:
        return math.nan
    return float(np.percentile(values, q, method="linear"))


def _figures(rows: Sequence[Row]) -> dict[str, float]:
    ok = [r["metrics"] for r in rows if r["error"] is None]

    def column(key: str) -> np.ndarray[Any, np.dtype[np.float64]]:
        return np.array([float(m[key]) for m in ok], dtype=np.float64)

    adl = column("adl_events")
    drawdown = column("insurance_fund_start") - column("insurance_fund_min")
    bad_debt = column("bad_debt")
    liquidated = column("liquidated_notional")
    return {
        "p_adl": float(np.mean(adl > 0)) if len(adl) else math.nan,
        "fund_drawdown_p50": _percentile(drawdown, 50),
        "fund_drawdown_p95": _percentile(drawdown, 95),
        "fund_drawdown_p99": _percentile(drawdown, 99),
        "bad_debt_mean": float(np.mean(bad_debt)) if len(bad_debt) else math.nan,
        "bad_debt_p99": _percentile(bad_debt, 99),
        "liquidated_notional_p50": _percentile(liquidated, 50),
        "liquidated_notional_p99": _percentile(liquidated, 99),
    }


def aggregate_rows(spec: SweepSpec, points: Sequence[GridPoint], rows: Sequence[Row]) -> list[Row]:
    """One row per grid point (in point order) of the figures over its tasks."""
    numeric = numeric_parameters(spec)
    by_point: dict[int, list[Row]] = {p.index: [] for p in points}
    for row in rows:
        by_point[row["point"]].append(row)
    out: list[Row] = []
    for point in points:
        point_rows = by_point[point.index]
        agg: Row = {"point": point.index}
        for p, label in zip(spec.parameters, point.labels, strict=True):
            agg[p.key] = label
        for i in numeric:
            agg[f"{spec.parameters[i].key}#value"] = _as_float(point.values[i])
        agg["tasks"] = len(point_rows)
        agg["failures"] = sum(1 for r in point_rows if r["error"] is not None)
        agg.update(_figures(point_rows))
        out.append(agg)
    return out


def aggregate_table(spec: SweepSpec, rows: Sequence[Row]) -> pa.Table:
    """aggregate.parquet from `aggregate_rows` (the schema does not depend on the data)."""
    fields: list[tuple[str, pa.DataType]] = [("point", pa.int64())]
    fields += [(p.key, pa.string()) for p in spec.parameters]
    fields += [(f"{spec.parameters[i].key}#value", pa.float64()) for i in numeric_parameters(spec)]
    fields += [("tasks", pa.int64()), ("failures", pa.int64())]
    fields += [(name, pa.float64()) for name in AGGREGATE_FIGURES]
    return pa.table(
        {name: pa.array([r[name] for r in rows], type=t) for name, t in fields},
        schema=pa.schema(fields),
    )


def write_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path, **PARQUET_OPTIONS)


__all__ = [
    "AGGREGATE_FIGURES",
    "AGGREGATE_TABLE",
    "ALWAYS_KEPT",
    "META",
    "REPORT",
    "SWEEP_FILES",
    "TASKS_LOG",
    "TASKS_TABLE",
    "TaskLog",
    "aggregate_rows",
    "aggregate_table",
    "check_meta",
    "clear_sweep_dir",
    "kept_metrics",
    "numeric_parameters",
    "read_log",
    "sorted_rows",
    "sweep_meta",
    "tasks_table",
    "write_meta",
    "write_parquet",
]
