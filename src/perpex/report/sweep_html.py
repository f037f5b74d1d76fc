"""One self-contained HTML report of a parameter sweep, rebuilt from its output directory alone.

`build_sweep_report(out_dir)` reads `meta.json` (the sweep: name, question, parameters with
their labels, seeds, target P(ADL)), `aggregate.parquet` (one row per grid point) and, to list
failed tasks, `tasks.parquet`; nothing else, and it imports neither the simulator nor the sweep
runner. The page says in words, for each setting of the other parameters, the smallest
insurance fund on the grid that kept P(ADL) under the target, with a Wilson 95 % interval,
then draws P(ADL) heatmaps over fund × each other parameter, the fund's drawdown and bad debt,
and lists the aggregate and the failures. plotly.js is inlined once; chart ids are fixed, so
the same results give the same file. Money is in USDT (floats, display only).
"""

from __future__ import annotations

import html
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from perpex.report.layout import PAGE_CSS, Section, chart_html, inline_plotly_js
from perpex.report.load import ReportError
from perpex.report.series import amount
from perpex.report.sweep_figures import (
    FUND_KEY,
    Axis,
    Failure,
    Sweep,
    interval_words,
    p_adl_heatmap,
    p_adl_line,
    percent,
    tail_lines,
    wilson,
)

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

_COLUMN_TITLES = {
    "tasks": "tasks",
    "failures": "failed",
    "p_adl": "P(ADL)",
    "fund_drawdown_p50": "fund drawdown p50",
    "fund_drawdown_p95": "fund drawdown p95",
    "fund_drawdown_p99": "fund drawdown p99",
    "bad_debt_mean": "bad debt mean",
    "bad_debt_p99": "bad debt p99",
    "liquidated_notional_p50": "liquidated notional p50",
    "liquidated_notional_p99": "liquidated notional p99",
}

MAX_SENTENCES = 24
"""Settings described in words at most; the table below them lists every one."""

MAX_FAILURES = 200
"""Failed tasks listed at most (the count is always given)."""

MAX_ERROR_CHARS = 600
"""An error's text is cut there in the list (tasks.parquet keeps it whole)."""

_SWEEP_CSS = """
.wide { overflow-x: auto; }
.wide table { white-space: nowrap; }
td.err { white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px;
         max-width: 60ch; }
ul.findings { margin: 0 0 10px; padding-left: 20px; max-width: 85ch; }
ul.findings li { margin: 0 0 6px; }
.muted { color: #666; font-size: 13px; max-width: 85ch; }
"""


# -- reading --------------------------------------------------------------------------------


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
    path = out_dir / "meta.json"
    if not path.is_file():
        raise ReportError(
            f"{out_dir} is not a sweep's output: it has no meta.json (a sweep directory holds "
            "meta.json, aggregate.parquet and tasks.parquet, written by `perpex sweep`)"
        )
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: cannot read meta.json: {exc}") from exc
    if not isinstance(raw, dict):
        raise ReportError(f"{path}: meta.json must hold a JSON object")
    return raw


def _read_parquet(path: Path, columns: list[str]) -> pa.Table:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path}: cannot read it as parquet: {exc}") from exc
    missing = [name for name in columns if name not in schema.names]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise ReportError(f"{path}: cannot read it: {exc}") from exc


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
    table = _read_parquet(path, ["point", "seed_index", "seed", "error", *keys])
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
    table = _read_parquet(path, ["point", *keys, *AGGREGATE_COLUMNS, *value_columns])
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


# -- the smallest fund, in words ----------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """For one setting of the parameters other than the fund: the aggregate row of the smallest
    fund on the grid from which P(ADL) stayed under the target (None: no such fund), the row
    with the lowest P(ADL) otherwise, and smaller funds that were under the target although a
    larger one was not (noise, named so that a reader does not pick them)."""

    setting: tuple[int, ...]  # a position on each axis of `sweep.others`
    row: int | None
    lowest_row: int | None
    noise: tuple[int, ...]  # aggregate rows


def findings(sweep: Sweep) -> list[Finding]:
    """One finding per setting of the other parameters, in grid order (last one fastest).

    "Kept under the target" is read strictly (P(ADL) < target) and for every larger fund on
    the grid too: a fund that passed once while a bigger one failed is luck of the seeds."""
    runs = sweep.runs
    p_adl = sweep.columns["p_adl"]
    measured = np.isfinite(p_adl) & (runs > 0)
    out: list[Finding] = []
    ranges = [range(len(sweep.axes[a].labels)) for a in sweep.others]
    for setting in itertools.product(*ranges):
        mask = measured.copy()
        for a, position in zip(sweep.others, setting, strict=True):
            mask &= sweep.positions[:, a] == position
        rows = np.flatnonzero(mask)
        rows = rows[np.argsort(sweep.positions[rows, sweep.x], kind="stable")]  # by fund
        passes = p_adl[rows] < sweep.target_p_adl
        # The first fund from which every larger one passes: after the last failure.
        failing = np.flatnonzero(~passes)
        first = 0 if len(failing) == 0 else int(failing[-1]) + 1
        row = int(rows[first]) if first < len(rows) else None
        noise = tuple(int(r) for r, ok in zip(rows[:first], passes[:first], strict=True) if ok)
        lowest = int(rows[np.argmin(p_adl[rows])]) if len(rows) else None
        out.append(Finding(tuple(setting), row, lowest, noise))
    return out


def _setting_words(sweep: Sweep, setting: tuple[int, ...]) -> str:
    parts = [sweep.axes[a].setting_words(p) for a, p in zip(sweep.others, setting, strict=True)]
    if len(parts) <= 2:
        return " and ".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _point_words(sweep: Sweep, row: int) -> str:
    runs = int(sweep.runs[row])
    adl = int(sweep.adl_runs[row])
    share = float(sweep.columns["p_adl"][row])
    return (
        f"P(ADL) {percent(share)} over {runs:,} run{'s' if runs != 1 else ''}, "
        f"95 % interval {interval_words(adl, runs)}"
    )


def _target_words(sweep: Sweep) -> str:
    target = sweep.target_p_adl
    return f"{target * 100:g} %"


def finding_sentence(sweep: Sweep, finding: Finding) -> str:
    """The finding in one plain sentence (text, not HTML)."""
    x = sweep.x_axis
    target = _target_words(sweep)
    setting = _setting_words(sweep, finding.setting)
    if finding.row is None:
        where = f" with {setting}" if setting else ""
        if finding.lowest_row is None:
            return f"No grid point{where} has a successful run, so nothing can be said."
        lowest = finding.lowest_row
        return (
            f"No {x.name} on the grid kept P(ADL) under {target}{where}: the lowest was at "
            f"{x.value_words(int(sweep.positions[lowest, sweep.x]))} "
            f"({_point_words(sweep, lowest)})."
        )
    row = finding.row
    lead = f"With {setting}, the" if setting else "The"
    sentence = (
        f"{lead} smallest {x.name} that kept P(ADL) under {target} was "
        f"{x.value_words(int(sweep.positions[row, sweep.x]))} ({_point_words(sweep, row)})."
    )
    _, high = wilson(int(sweep.adl_runs[row]), int(sweep.runs[row]))
    if high >= sweep.target_p_adl:
        sentence += " The interval reaches the target, so more seeds are needed to be sure of it."
    if finding.noise:
        funds = ", ".join(x.value_words(int(sweep.positions[r, sweep.x])) for r in finding.noise)
        sentence += (
            f" ({funds} also came in under the target, but a larger {x.name} did not: "
            "read that as the luck of the seeds.)"
        )
    return sentence


# -- the page -------------------------------------------------------------------------------


def _cell(text: str, numeric: bool = False) -> str:
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{html.escape(text)}</td>"


def _table(headers: list[str], rows: list[list[tuple[str, bool]]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(_cell(text, numeric) for text, numeric in row) + "</tr>" for row in rows
    )
    return f'<div class="wide"><table{css}><tr>{head}</tr>{body}</table></div>'


def _values_words(axis: Axis, most: int = 8) -> str:
    texts = [axis.text(i) for i in range(len(axis.labels))]
    if len(texts) > most:
        texts = [*texts[: most - 1], "…", texts[-1]]
    return f"{', '.join(texts)} ({len(axis.labels)} values)"


def _facts(sweep: Sweep) -> str:
    grid = " × ".join(str(len(axis.labels)) for axis in sweep.axes)
    n_points = len(sweep.points)
    points = f"{n_points:,} point{'s' if n_points != 1 else ''}"
    tasks = int(np.nansum(sweep.columns["tasks"]))
    failed = int(np.nansum(sweep.columns["failures"]))
    rows = [
        ("grid", f"{grid} = {points}" if len(sweep.axes) > 1 else points),
        *(
            (f"parameter {i}", f"{axis.key}: {_values_words(axis)}")
            for i, axis in enumerate(sweep.axes, start=1)
        ),
        ("seeds per point", f"{sweep.seeds:,}"),
        ("tasks", f"{tasks:,}"),
        ("failures", f"{failed:,}"),
        ("target", f"P(ADL) under {_target_words(sweep)}"),
    ]
    if sweep.scenario is not None:
        rows.insert(0, ("scenario", sweep.scenario))
    rows += [(f"set {key}", value) for key, value in sweep.fixed]
    body = "".join(
        f'<tr><th>{html.escape(k)}</th><td class="num">{html.escape(v)}</td></tr>' for k, v in rows
    )
    return f"<table><caption><b>The sweep</b></caption>{body}</table>"


def _headline(sweep: Sweep, found: list[Finding]) -> str:
    if not sweep.x_axis.is_fund:
        return (
            f"This sweep does not vary the insurance fund ({FUND_KEY}); the charts show P(ADL) "
            f"over {sweep.x_axis.name}."
        )
    if len(found) == 1:
        return finding_sentence(sweep, found[0])
    passed = sum(1 for f in found if f.row is not None)
    others = (
        f"{sweep.axes[sweep.others[0]].name} settings"
        if len(sweep.others) == 1
        else "settings of the other parameters"
    )
    return (
        f"A fund on the grid kept P(ADL) under {_target_words(sweep)} for {passed} of the "
        f"{len(found)} {others}; the next section names the fund for each."
    )


def _header(sweep: Sweep, found: list[Finding]) -> str:
    return (
        "<header>"
        f"<h1>{html.escape(sweep.name)}</h1>"
        f'<p class="question">{html.escape(sweep.question)}</p>'
        f'<p class="headline">{html.escape(_headline(sweep, found))}</p>'
        f'<div class="tables">{_facts(sweep)}</div>'
        "</header>"
    )


_P_ADL_WORDS = (
    "P(ADL) is the share of a grid point's successful runs in which auto-deleveraging fired at "
    "least once (the insurance fund could not absorb a bankrupt position's loss). With few runs "
    "it is a rough estimate: the 95 % interval is Wilson's score interval for that share, the "
    "range of true values that could well have produced it."
)


def _smallest_fund_section(sweep: Sweep, found: list[Finding]) -> str:
    x = sweep.x_axis
    if not x.is_fund:
        words = (
            f"This sweep does not vary the insurance fund ({FUND_KEY}), so there is no smallest "
            "fund to name. " + _P_ADL_WORDS
        )
        return (
            '<section id="smallest-fund"><h2>2. The smallest fund</h2>'
            f'<p class="caption">{html.escape(words)}</p></section>'
        )
    sentences = [finding_sentence(sweep, f) for f in found]
    more = ""
    if len(sentences) > MAX_SENTENCES:
        more = (
            f'<p class="muted">… and {len(sentences) - MAX_SENTENCES:,} more settings: the '
            "table lists them all.</p>"
        )
        sentences = sentences[:MAX_SENTENCES]
    items = "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
    headers = [sweep.axes[a].name for a in sweep.others]
    headers += [f"smallest {x.name}", "P(ADL) there", "runs", "95 % interval"]
    rows: list[list[tuple[str, bool]]] = []
    for f in found:
        cells = [
            (sweep.axes[a].text(p), False) for a, p in zip(sweep.others, f.setting, strict=True)
        ]
        if f.row is None:
            cells += [("none on the grid", False), ("", False), ("", False), ("", False)]
        else:
            r = f.row
            cells += [
                (x.value_words(int(sweep.positions[r, sweep.x])), True),
                (percent(float(sweep.columns["p_adl"][r])), True),
                (f"{int(sweep.runs[r]):,}", True),
                (interval_words(int(sweep.adl_runs[r]), int(sweep.runs[r])), True),
            ]
        rows.append(cells)
    each = "For each setting of the other parameters, the" if sweep.others else "The"
    caption = (
        f"{each} smallest {x.name} from which P(ADL) "
        f"stayed under the target of {_target_words(sweep)} at every larger {x.name} on the "
        "grid. " + _P_ADL_WORDS
    )
    return (
        '<section id="smallest-fund"><h2>2. The smallest fund</h2>'
        f'<p class="caption">{html.escape(caption)}</p>'
        f'<ul class="findings">{items}</ul>{more}{_table(headers, rows)}</section>'
    )


def chart_sections(sweep: Sweep) -> list[Section]:
    """The charts: P(ADL) over x × each other parameter (a line when there is none), then the
    fund's drawdown and bad debt against x, per other parameter."""
    x = sweep.x_axis
    target = _target_words(sweep)
    sections: list[Section] = []
    if not sweep.others:
        sections.append(
            Section(
                "p-adl",
                f"P(ADL) against {x.name}",
                f"P(ADL) at each {x.name} on the grid; the bars are the 95 % interval and the "
                f"dashed line the target of {target}.",
                p_adl_line(sweep),
            )
        )
        sections.append(
            Section(
                "losses",
                f"Fund drawdown and bad debt against {x.name}",
                _losses_caption(sweep, None),
                tail_lines(sweep, None),
            )
        )
        return sections
    pooled = len(sweep.others) > 1
    for a in sweep.others:
        axis = sweep.axes[a]
        rest = [sweep.axes[b].name for b in sweep.others if b != a]
        over = f" Each cell pools the runs of every value of {', '.join(rest)}." if pooled else ""
        sections.append(
            Section(
                f"p-adl-{a}",
                f"P(ADL) by {x.name} and {axis.name}",
                f"P(ADL) for each {x.name} (across) and {axis.name} (down); each cell gives the "
                f"share and n, the number of successful runs behind it. Green is under the "
                f"target of {target}, red above; hover a cell for its 95 % interval.{over}",
                p_adl_heatmap(sweep, a),
            )
        )
    for a in sweep.others:
        axis = sweep.axes[a]
        sections.append(
            Section(
                f"losses-{a}",
                f"Fund drawdown and bad debt by {x.name} and {axis.name}",
                _losses_caption(sweep, a),
                tail_lines(sweep, a),
            )
        )
    return sections


def _losses_caption(sweep: Sweep, y: int | None) -> str:
    per = "" if y is None else f" One line per {sweep.axes[y].name}."
    pooled = (
        " Points that differ only in the other parameters are averaged, weighted by their runs."
        if len(sweep.others) > (0 if y is None else 1)
        else ""
    )
    return (
        "Left: the insurance fund's drawdown (its balance at the start minus its lowest "
        "balance) that 95 % of runs stayed within, in USDT; it cannot exceed the fund itself. "
        "Right: the mean bad debt, the losses of bankrupt accounts that the fund could not "
        f"cover and ADL had to take, in USDT.{per}{pooled}"
    )


def _section_html(number: int, section: Section) -> str:
    chart = "" if section.figure is None else chart_html(section.figure, f"chart-{section.key}")
    return (
        f'<section id="{html.escape(section.key)}">'
        f"<h2>{number}. {html.escape(section.title)}</h2>"
        f'<p class="caption">{html.escape(section.caption)}</p>'
        f"{chart}</section>"
    )


def _money(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:,.0f}" if value == round(value) else amount(value)


def _aggregate_section(sweep: Sweep, number: int) -> str:
    headers = ["point", *(axis.name for axis in sweep.axes)]
    headers += [_COLUMN_TITLES[name] for name in AGGREGATE_COLUMNS]
    headers.insert(headers.index("P(ADL)") + 1, "95 % interval")
    rows: list[list[tuple[str, bool]]] = []
    for row in range(len(sweep.points)):
        cells = [(f"{int(sweep.points[row])}", True)]
        cells += [
            (axis.text(int(sweep.positions[row, a])), False) for a, axis in enumerate(sweep.axes)
        ]
        for name in AGGREGATE_COLUMNS:
            value = float(sweep.columns[name][row])
            if name in ("tasks", "failures"):
                cells.append((f"{int(value):,}", True))
            elif name == "p_adl":
                cells.append((percent(value), True))
                runs, adl = int(sweep.runs[row]), int(sweep.adl_runs[row])
                cells.append((interval_words(adl, runs), True))
            else:
                cells.append((_money(value), True))
        rows.append(cells)
    caption = (
        "Every grid point as aggregate.parquet holds it. Drawdowns, bad debt and liquidated "
        "notional are in USDT, percentiles over the point's successful runs (– when none "
        "succeeded). P(ADL) and its 95 % interval are read as in section 2."
    )
    return (
        f'<section id="aggregate"><h2>{number}. The aggregate</h2>'
        f'<p class="caption">{html.escape(caption)}</p>{_table(headers, rows)}</section>'
    )


def _failures_section(sweep: Sweep, number: int) -> str:
    counted = int(np.nansum(sweep.columns["failures"]))
    title = f'<section id="failures"><h2>{number}. Failed tasks</h2>'
    if sweep.failures is None:
        words = (
            f"The aggregate counts {counted:,} failed task(s); tasks.parquet, which would name "
            "them, is not in the directory."
            if counted
            else "No task failed (tasks.parquet is not in the directory to list them)."
        )
        return f'{title}<p class="caption">{html.escape(words)}</p></section>'
    failures = sweep.failures
    if not failures:
        return f'{title}<p class="caption">No task failed.</p></section>'
    shown = failures[:MAX_FAILURES]
    headers = ["point", *(axis.name for axis in sweep.axes), "seed index", "seed", "error"]
    body = ""
    for failure in shown:
        error = failure.error
        if len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + " …"
        cells = [_cell(f"{failure.point}", True)]
        cells += [_cell(label) for label in failure.labels]
        cells += [_cell(f"{failure.seed_index}", True), _cell(f"{failure.seed}", True)]
        cells.append(f'<td class="err">{html.escape(error)}</td>')
        body += "<tr>" + "".join(cells) + "</tr>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    words = (
        f"{len(failures):,} task(s) raised instead of finishing; they are left out of P(ADL) "
        "and the percentiles of their grid point (its tasks column still counts them)."
    )
    if len(failures) > len(shown):
        words += f" The first {len(shown):,} are listed; tasks.parquet has them all."
    return (
        f'{title}<p class="caption">{html.escape(words)}</p>'
        f'<div class="wide"><table><tr>{head}</tr>{body}</table></div></section>'
    )


def render_sweep(sweep: Sweep) -> str:
    """The whole page as text."""
    found = findings(sweep)
    charts = chart_sections(sweep)
    nav_items = [("smallest-fund", "Smallest fund")]
    nav_items += [(s.key, s.title) for s in charts]
    nav_items += [("aggregate", "Aggregate"), ("failures", "Failures")]
    nav = "".join(f'<a href="#{html.escape(k)}">{html.escape(t)}</a>' for k, t in nav_items)
    body = _smallest_fund_section(sweep, found)
    body += "".join(_section_html(i, s) for i, s in enumerate(charts, start=3))
    after = 3 + len(charts)
    body += _aggregate_section(sweep, after) + _failures_section(sweep, after + 1)
    title = html.escape(f"perpex sweep: {sweep.name}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{PAGE_CSS}{_SWEEP_CSS}</style>"
        f'<script type="text/javascript">{inline_plotly_js()}</script>'
        "</head><body><main>"
        f"{_header(sweep, found)}<nav>{nav}</nav>{body}"
        "<footer>Built by <code>perpex sweep</code> from the sweep's output directory alone "
        "(meta.json, aggregate.parquet, tasks.parquet). Money in USDT; hover a chart for "
        "values, drag to zoom, double-click to reset.</footer></main></body></html>\n"
    )


def build_sweep_report(out_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes the HTML report of the sweep in `out_dir` (default `out_dir/report.html`) and
    returns its path. Raises `ReportError` when `out_dir` is not a finished sweep's output."""
    out_path_dir = Path(out_dir)
    sweep = read_sweep(out_path_dir)
    out_path = out_path_dir / "report.html" if out is None else Path(out)
    page = render_sweep(sweep)
    # Write then rename: a reader never sees half a report.
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(out_path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportError(f"cannot write the report to {out_path}: {exc}") from exc
    return out_path


__all__ = [
    "AGGREGATE_COLUMNS",
    "MAX_FAILURES",
    "MAX_SENTENCES",
    "Finding",
    "build_sweep_report",
    "finding_sentence",
    "findings",
    "read_sweep",
    "render_sweep",
]
