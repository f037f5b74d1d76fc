"""One self-contained HTML report of a simulation run, rebuilt from its output directory alone.

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

import plotly.offline

from perpex.report.figures_funds import funding_section, insurance_section
from perpex.report.figures_market import (
    depth_section,
    liquidations_per_time_section,
    open_interest_section,
    price_section,
)
from perpex.report.figures_traders import leverage_section, stops_section, strategy_section
from perpex.report.layout import Section
from perpex.report.load import ReportError, Run, load_run
from perpex.report.summary import headline, run_facts, summary_rows

SECTIONS: tuple[Callable[[Run], Section], ...] = (
    price_section,
    open_interest_section,
    liquidations_per_time_section,
    insurance_section,
    funding_section,
    depth_section,
    leverage_section,
    stops_section,
    strategy_section,
)
"""The charts, in page order (the header comes first)."""

_CSS = """
body { margin: 0; background: #f6f6f4; color: #1d1d1d;
       font: 15px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 6px; }
.question { font-size: 17px; font-style: italic; color: #444; margin: 0 0 14px; }
.headline { font-size: 16px; background: #fff; border-left: 4px solid #d62728;
            padding: 10px 14px; margin: 0 0 16px; }
section, header { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px;
                  padding: 16px 18px; margin: 0 0 18px; }
.caption { color: #333; margin: 0 0 8px; max-width: 75ch; }
.tables { display: flex; flex-wrap: wrap; gap: 24px; }
table { border-collapse: collapse; font-size: 13px; }
th, td { text-align: left; padding: 3px 12px 3px 0; border-bottom: 1px solid #eee;
         vertical-align: top; }
th { color: #666; font-weight: 500; }
td.num { font-variant-numeric: tabular-nums; }
nav { font-size: 13px; margin: 0 0 16px; }
nav a { margin-right: 12px; color: #1f77b4; text-decoration: none; }
footer { font-size: 12px; color: #777; }
"""

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


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
        chart = section.figure.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"chart-{section.key}",
            config=_PLOT_CONFIG,
        )
    return (
        f'<section id="{html.escape(section.key)}">'
        f"<h2>{number}. {html.escape(section.title)}</h2>"
        f'<p class="caption">{html.escape(section.caption)}</p>'
        f"{chart}</section>"
    )


def render(run: Run) -> str:
    """The whole page as text."""
    sections = [make(run) for make in SECTIONS]
    nav = "".join(f'<a href="#{html.escape(s.key)}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(_section(i, s) for i, s in enumerate(sections, start=2))
    # "</" inside an inline script would end it early; plotly.js is built without it, and the
    # check keeps a future bundle from silently breaking the page.
    plotly_js = plotly.offline.get_plotlyjs()
    if "</script" in plotly_js.lower():
        plotly_js = plotly_js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    title = html.escape(f"perpex report: {run.meta.scenario}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly_js}</script>'
        "</head><body><main>"
        f"{_header(run)}<nav>{nav}</nav>{body}"
        "<footer>Built by <code>perpex report</code> from the run directory alone "
        "(meta.json, samples.parquet, events/, entries.parquet, stops.parquet). Prices in "
        "USDT, sizes in BTC; hover a chart for values, drag to zoom, double-click to reset."
        "</footer></main></body></html>\n"
    )


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Writes the HTML report of the run in `run_dir` (default `run_dir/report.html`) and
    returns its path. `run_dir` may also be the run's ``events`` directory (what
    `SimResult.events_path` names). Raises `ReportError` when it is not a simulation run."""
    run_path = Path(run_dir)
    beside = run_path.parent / "meta.json"
    if run_path.name == "events" and not (run_path / "meta.json").exists() and beside.exists():
        run_path = run_path.parent  # the event log's own run directory
    run = load_run(run_path)
    out_path = run_path / "report.html" if out is None else Path(out)
    page = render(run)
    # Write then rename: a reader never sees half a report.
    partial = out_path.with_name(out_path.name + ".partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(out_path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ReportError(f"cannot write the report to {out_path}: {exc}") from exc
    return out_path


__all__ = ["SECTIONS", "build_report", "render"]
