"""The shared look of the report's charts: a section (title, caption, figure), colors, layout.

Colors mean the same thing in every chart: red is long positions (liquidated longs, the bid
side's risk), blue is shorts, grey shading is a time when the market makers were away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go
import plotly.offline

from perpex.report.series import TimeAxis

LONG_COLOR = "#d62728"
SHORT_COLOR = "#1f77b4"
LAST_COLOR = "#222222"
MARK_COLOR = "#ff7f0e"
INDEX_COLOR = "#8c8c8c"
FUND_COLOR = "#2ca02c"
ADL_COLOR = "#9467bd"
AWAY_SHADE = "rgba(120, 120, 120, 0.18)"

PLOT_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}

# One look for every perpex report (the run's and the sweep's).
PAGE_CSS = """
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

"""The chart toolbar's options on every page (no plotly logo; charts follow the page width)."""


@dataclass(frozen=True)
class Section:
    """One block of the page: an anchor id, a title, a caption for a reader who never saw the
    code, and a chart (None when the run has no data for it; the caption then says why)."""

    key: str
    title: str
    caption: str
    figure: go.Figure | None = None


def style(
    fig: go.Figure, axis: TimeAxis | None, height: int = 420, rows: int = 1, **layout: Any
) -> go.Figure:
    """The common layout: a plain template (the default one weighs ~10 kB a chart), a legend on
    top, a time x axis on every x axis when `axis` is given (`rows` > 1: a figure made by
    `make_subplots` with that many rows sharing it)."""
    base: dict[str, Any] = {
        "template": "none",
        "height": height,
        "margin": {"l": 70, "r": 70, "t": 30, "b": 50},
        "font": {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        "hovermode": "x unified",
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
    }
    fig.update_layout(**(base | layout))
    fig.update_xaxes(showgrid=True, gridcolor="#ececec", zeroline=False, linecolor="#999")
    fig.update_yaxes(showgrid=True, gridcolor="#ececec", zeroline=False, linecolor="#999")
    if axis is not None:
        time_layout = axis.layout()
        fig.update_xaxes(type=time_layout["type"], hoverformat=time_layout.get("hoverformat"))
        if rows > 1:  # only the bottom axis of stacked charts carries the title
            fig.update_xaxes(title=time_layout["title"], row=rows, col=1)
        else:
            fig.update_xaxes(title=time_layout["title"])
    return fig


def inline_plotly_js() -> str:
    """plotly.js as text that can sit inside an inline ``<script>`` of a self-contained page."""
    plotly_js: str = plotly.offline.get_plotlyjs()
    # "</" inside an inline script would end it early; plotly.js is built without it, and the
    # check keeps a future bundle from silently breaking the page.
    if "</script" in plotly_js.lower():
        plotly_js = plotly_js.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    return plotly_js


def chart_html(fig: go.Figure, div_id: str) -> str:
    """One chart as a ``<div>`` and its ``Plotly.newPlot`` call, for a page that inlines
    plotly.js once in its head (`inline_plotly_js`). A fixed `div_id` keeps the page
    reproducible."""
    text: str = fig.to_html(
        full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG
    )
    return text


__all__ = [
    "ADL_COLOR",
    "AWAY_SHADE",
    "FUND_COLOR",
    "INDEX_COLOR",
    "LAST_COLOR",
    "LONG_COLOR",
    "MARK_COLOR",
    "PAGE_CSS",
    "PLOT_CONFIG",
    "SHORT_COLOR",
    "Section",
    "chart_html",
    "inline_plotly_js",
    "style",
]
