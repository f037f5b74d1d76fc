"""Reading a parameter sweep's output directory into the report's model, checked.

`read_sweep(out_dir)` reads `meta.json` (the sweep: name, question, parameters with their
labels, seeds, target P(ADL)), `aggregate.parquet` (one row per grid point) and, to list failed
tasks, `tasks.parquet`; nothing else, and it imports neither the simulator nor the sweep runner.
Anything missing or malformed raises `ReportError` naming the file and what is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpex.report.files import ReportError, read_json_object, read_parquet
from perpex.report.sweep_figures import Axis, Failure, Sweep

AGGREGATE_COLUMNS = (
    "tasks",
    "failures",
    "p_adl",
    "fund_drawdown_p50",
    "fund_drawdown_p95",
    "fund_drawdown_p99",
    "bad_debt_mean",
    "bad_debt_p99",
    "liquidated_notional_p50",
    "liquidated_notional_p99",
)
"""The aggregate's columns besides `point` and one per parameter (the contract's list)."""


def _field(raw: dict[str, Any], name: str, kind: type, path: Path) -> Any:
    if name not in raw:
        raise ReportError(f"{path}: meta.json has no {name!r}")
    value = raw[name]
    # bool is an int in Python: an int field must not accept true/false.
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ReportError(f"{path}: meta.json {name!r} must be an integer, not {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ReportError(f"{path}: meta.json {name!r} must be a number, not {value!r}")
    if kind not in (int, float) and not isinstance(value, kind):
        raise ReportError(f"{path}: meta.json {name!r} must be a {kind.__name__}, not {value!r}")
    return value


def _parameters(raw: dict[str, Any], path: Path) -> list[tuple[str, list[str] | None]]:
    """meta.json's parameters: (key, labels in the sweep file's order, or None if not given)."""
    entries = _field(raw, "parameters", list, path)
    if not entries:
        raise ReportError(f"{path}: meta.json 'parameters' is empty (a sweep varies something)")
    out: list[tuple[str, list[str] | None]] = []
    for number, entry in enumerate(entries):
        where = f"{path}: meta.json parameters[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ReportError(f"{where} must be an object with a string 'key'")
        key = entry["key"]
        labels = entry.get("labels")
        if labels is not None and (
            not isinstance(labels, list) or not all(isinstance(x, str) for x in labels)
        ):
            raise ReportError(f"{where} ({key}): 'labels' must be a list of strings")
        if any(key == seen for seen, _ in out):
            raise ReportError(f"{where}: parameter {key!r} appears twice")
        out.append((key, labels))
    return out


def _read_meta(out_dir: Path) -> dict[str, Any]:
    return read_json_object(
        out_dir / "meta.json",
        f"{out_dir} is not a sweep's output: it has no meta.json (a sweep directory holds "
        "meta.json, aggregate.parquet and tasks.parquet, written by `perpex sweep`)",
    )


def _floats(table: pa.Table, name: str, path: Path) -> Any:
    column = table.column(name)
    if not (pa.types.is_floating(column.type) or pa.types.is_integer(column.type)):
        raise ReportError(f"{path}: column {name!r} must be numeric, not {column.type}")
    return np.asarray(column.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _strings(table: pa.Table, name: str, path: Path) -> list[str]:
    column = table.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise ReportError(f"{path}: column {name!r} must hold the parameter's labels (strings)")
    if column.null_count:
        raise ReportError(f"{path}: column {name!r} has {column.null_count} null label(s)")
    values: list[str] = column.to_pylist()
    return values


def _axis_names(keys: list[str]) -> list[str]:
    """Short names for sentences: the last part of the key, underscores as spaces
    ("agents.traders.leverage" -> "leverage"), the whole key when two would read the same."""
    short = [key.rsplit(".", 1)[-1].replace("_", " ") for key in keys]
    return [s if short.count(s) == 1 else key for s, key in zip(short, keys, strict=True)]


def _axis(
    key: str, name: str, labels: list[str], meta_labels: list[str] | None, numbers: Any, path: Path
) -> tuple[Axis, list[int]]:
    """The axis of one parameter and each aggregate row's place on it. Its labels are those
    the aggregate holds, by value when the `<key>#value` column gives every one a number, else
    in meta.json's order (the sweep file's), else in grid order."""
    order = list(dict.fromkeys(labels))  # first appearance: the grid's (file) order
    if meta_labels is not None:
        unknown = [label for label in order if label not in meta_labels]
        if unknown:
            raise ReportError(
                f"{path}: column {key!r} holds label(s) {', '.join(map(repr, unknown))} that "
                "meta.json's parameter does not list"
            )
        order = [label for label in meta_labels if label in order]
    axis_numbers: tuple[float, ...] | None = None
    if numbers is not None and np.isfinite(numbers).all():
        by_label: dict[str, float] = {}
        for label, number in zip(labels, numbers.tolist(), strict=True):
            if by_label.setdefault(label, number) != number:
                raise ReportError(f"{path}: label {label!r} of {key!r} has two values")
        order = sorted(order, key=lambda label: by_label[label])  # stable on equal values
        axis_numbers = tuple(by_label[label] for label in order)
    place = {label: i for i, label in enumerate(order)}
    return Axis(key, name, tuple(order), axis_numbers), [place[label] for label in labels]


def _read_failures(out_dir: Path, keys: list[str]) -> tuple[Failure, ...] | None:
    path = out_dir / "tasks.parquet"
    if not path.is_file():
        return None
    table = read_parquet(path, ["point", "seed_index", "seed", "error", *keys])
    errors = table.column("error")
    if not (pa.types.is_string(errors.type) or pa.types.is_large_string(errors.type)) and not (
        pa.types.is_null(errors.type)
    ):
        raise ReportError(f"{path}: column 'error' must hold strings, not {errors.type}")
    failed = table.filter(errors.is_valid())
    rows = failed.to_pylist()
    return tuple(
        Failure(
            point=int(row["point"]),
            seed_index=int(row["seed_index"]),
            seed=int(row["seed"]),
            labels=tuple(str(row[key]) for key in keys),
            error=str(row["error"]),
        )
        for row in sorted(rows, key=lambda r: (r["point"], r["seed_index"]))
    )


def read_sweep(out_dir: str | Path) -> Sweep:
    """The sweep in `out_dir`, checked; ReportError names the file and what is wrong."""
    out_path = Path(out_dir)
    if not out_path.is_dir():
        raise ReportError(f"{out_path} is not a directory (expected a sweep's output directory)")
    raw = _read_meta(out_path)
    meta_path = out_path / "meta.json"
    parameters = _parameters(raw, meta_path)
    seeds = _field(raw, "seeds", int, meta_path)
    target = float(_field(raw, "target_p_adl", float, meta_path))
    if seeds < 1:
        raise ReportError(f"{meta_path}: meta.json 'seeds' must be at least 1, not {seeds}")
    if not 0 < target < 1:
        raise ReportError(f"{meta_path}: meta.json 'target_p_adl' must be in (0, 1): {target}")
    scenario = raw.get("scenario")
    fixed = raw.get("fixed", {})  # the sweep file's [set] table, shown as it is
    if not isinstance(fixed, dict):
        raise ReportError(f"{meta_path}: meta.json 'fixed' must be an object")

    path = out_path / "aggregate.parquet"
    if not path.is_file():
        raise ReportError(
            f"{out_path} has meta.json but no aggregate.parquet: the sweep has not finished "
            "(rerun it with --resume to complete it)"
        )
    keys = [key for key, _ in parameters]
    schema_names = _schema_names(path)
    value_columns = [f"{key}#value" for key in keys if f"{key}#value" in schema_names]
    table = read_parquet(path, ["point", *keys, *AGGREGATE_COLUMNS, *value_columns])
    if table.num_rows == 0:
        raise ReportError(f"{path}: no rows (the sweep aggregated no grid point)")
    points_f = _floats(table, "point", path)
    if not np.isfinite(points_f).all():
        raise ReportError(f"{path}: column 'point' has null value(s)")
    order = np.argsort(points_f, kind="stable")
    table = table.take(pa.array(order))
    columns = {name: _floats(table, name, path) for name in AGGREGATE_COLUMNS}
    for name in ("tasks", "failures"):
        if not np.isfinite(columns[name]).all() or (columns[name] < 0).any():
            raise ReportError(f"{path}: column {name!r} must be a count on every row")

    axes: list[Axis] = []
    places: list[list[int]] = []
    for (key, meta_labels), name in zip(parameters, _axis_names(keys), strict=True):
        numbers = _floats(table, f"{key}#value", path) if f"{key}#value" in value_columns else None
        axis, place = _axis(key, name, _strings(table, key, path), meta_labels, numbers, path)
        axes.append(axis)
        places.append(place)
    positions = np.array(places, dtype=np.int64).T.reshape(table.num_rows, len(axes))
    if len({tuple(row) for row in positions.tolist()}) != table.num_rows:
        raise ReportError(f"{path}: two rows have the same parameter values")
    fund = next((a for a, axis in enumerate(axes) if axis.is_fund), 0)
    return Sweep(
        name=_field(raw, "name", str, meta_path),
        question=_field(raw, "question", str, meta_path),
        scenario=scenario if isinstance(scenario, str) else None,
        fixed=tuple(
            (str(k), json.dumps(v) if not isinstance(v, str) else v) for k, v in fixed.items()
        ),
        seeds=seeds,
        target_p_adl=target,
        axes=tuple(axes),
        x=fund,
        points=np.sort(points_f).astype(np.int64),
        positions=positions,
        columns=columns,
        failures=_read_failures(out_path, keys),
    )


def _schema_names(path: Path) -> list[str]:
    try:
        names: list[str] = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path}: cannot read it as parquet: {exc}") from exc
    return names


__all__ = ["AGGREGATE_COLUMNS", "read_sweep"]
