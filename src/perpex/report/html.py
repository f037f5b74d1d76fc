"""One self-contained HTML report of a simulation run, rebuilt from its event log alone.

`build_report(run_dir)` reads the run (`perpex.report.load`), makes the sections (header in
words, then one chart each with a caption) and writes ONE file that opens offline: plotly.js is
inlined once in the head, each chart is a `<div>` and a `Plotly.newPlot` call with its data as
base64 typed arrays. No CDN, no network, no script `src`. Chart ids are fixed, so the same run
gives the same file.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path

from perpex.report.figures_funds import funding_section, insurance_section
from perpex.report.figures_market import (
    depth_section,
    liquidations_per_time_section,
    open_interest_section,
    price_section,
)
from perpex.report.figures_tokens import tokens_section
from perpex.report.figures_traders import leverage_section, stops_section, strategy_section
from perpex.report.files import write_page
from perpex.report.layout import PAGE_CSS, Section, chart_html, inline_plotly_js
from perpex.report.load import Run, load_run
from perpex.report.summary import headline, run_facts, summary_rows

SECTIONS: tuple[Callable[[Run], Section | None], ...] = (
    price_section,
    open_interest_section,
    liquidations_per_time_section,
    insurance_section,
    funding_section,
    depth_section,
    leverage_section,
    stops_section,
    strategy_section,
    tokens_section,  # only in a run with leveraged tokens
)
"""The charts, in page order (the header comes first); a section that returns None is left
out."""


def _table(rows: list[tuple[str, str]], caption: str) -> str:
    body = "".join(
        f'<tr><th>{html.escape(key)}</th><td class="num">{html.escape(value)}</td></tr>'
        for key, value in rows
    )
    return f"<table><caption><b>{html.escape(caption)}</b></caption>{body}</table>"


def _header(run: Run) -> str:
    meta = run.meta
    tables = _table(run_facts(run), "The run")
    summary = summary_rows(meta)
    if summary:
        tables += _table(summary, "The runner's summary")
    return (
        "<header>"
        f"<h1>{html.escape(meta.scenario)}</h1>"
        f'<p class="question">{html.escape(meta.question)}</p>'
        f'<p class="headline">{html.escape(headline(run))}</p>'
        f'<div class="tables">{tables}</div>'
        "</header>"
    )


def _section(number: int, section: Section) -> str:
    chart = ""
    if section.figure is not None:
        chart = chart_html(section.figure, f"chart-{section.key}")
    return (
        f'<section id="{html.escape(section.key)}">'
        f"<h2>{number}. {html.escape(section.title)}</h2>"
        f'<p class="caption">{html.escape(section.caption)}</p>'
        f"{chart}</section>"
    )


def render(run: Run) -> str:
    """The whole page as text."""
    sections = [s for s in (make(run) for make in SECTIONS) if s is not None]
    nav = "".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(_section(i, s) for i, s in enumerate(sections, start=2))
    plotly_js = inline_plotly_js()
    title = html.escape(f"perpex report: {run.meta.scenario}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{PAGE_CSS}</style>"
        f'<script type="text/javascript">{plotly_js}</script>'
        "</head><body><main>"
        f"{_header(run)}<nav>{nav}</nav>{body}"
        "<footer>Built by <code>perpex report</code> from the run's event log alone "
        "(events/: meta.json, samples.parquet, entries.parquet, stops.parquet and one file per "
        "engine event kind). Prices in USDT, sizes in BTC; hover a chart for values, drag to "
        "zoom, double-click to reset."
        "</footer></main></body></html>\n"
    )


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes the HTML report of the run in `run_dir` (default `run_dir/report.html`) and
    returns its path. `run_dir` is the run's directory, its ``events`` directory (what
    `SimResult.events_path` names) or a copy of that anywhere: the event log holds all the
    report reads. Raises `ReportError` when it is not a simulation run or the log is cut."""
    run_path = Path(run_dir)
    run = load_run(run_path)
    out_path = run_path / "report.html" if out is None else Path(out)
    page = render(run)
    return write_page(page, out_path)


__all__ = ["SECTIONS", "build_report", "render"]
