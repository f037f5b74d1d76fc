"""One self-contained HTML report of a parameter sweep, rebuilt from its output directory alone.

`build_sweep_report(out_dir)` reads `meta.json` (the sweep: name, question, parameters with
their labels, seeds, target P(ADL)), `aggregate.parquet` (one row per grid point) and, to list
failed tasks, `tasks.parquet`; nothing else, and it imports neither the simulator nor the sweep
runner. The page says in words, for each setting of the other parameters, the smallest
insurance fund on the grid that kept P(ADL) under the target, with a Wilson 95 % interval,
then draws P(ADL) heatmaps over fund × each other parameter, the fund's drawdown and bad debt,
and lists the aggregate and the failures. plotly.js is inlined once; chart ids are fixed, so
the same results give the same file. Money is in USDT (floats, display only).

The reading is `perpex.report.sweep_load`'s job, the findings `perpex.report.sweep_findings`'
and the choice of charts `perpex.report.sweep_charts`'; this module lays out the page.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from perpex.report.files import write_page
from perpex.report.layout import PAGE_CSS, Section, chart_html, inline_plotly_js
from perpex.report.series import amount
from perpex.report.sweep_charts import chart_sections
from perpex.report.sweep_figures import FUND_KEY, Axis, Sweep, interval_words, percent
from perpex.report.sweep_findings import Finding, finding_sentence, findings, target_words
from perpex.report.sweep_load import AGGREGATE_COLUMNS, read_sweep

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
        ("target", f"P(ADL) under {target_words(sweep)}"),
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
        f"A fund on the grid kept P(ADL) under {target_words(sweep)} for {passed} of the "
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
        f"stayed under the target of {target_words(sweep)} at every larger {x.name} on the "
        "grid. " + _P_ADL_WORDS
    )
    return (
        '<section id="smallest-fund"><h2>2. The smallest fund</h2>'
        f'<p class="caption">{html.escape(caption)}</p>'
        f'<ul class="findings">{items}</ul>{more}{_table(headers, rows)}</section>'
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
    return write_page(page, out_path)


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
