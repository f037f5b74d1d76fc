"""The shared look of the report's charts: a section (title, caption, figure), colors, layout.

Colors mean the same thing in every chart: red is long positions (liquidated longs, the bid
side's risk), blue is shorts, grey shading is a time when the market makers were away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import plotly.graph_objects as go

from perpex.report.series import TimeAxis

LONG_COLOR = "#d62728"
SHORT_COLOR = "#1f77b4"
LAST_COLOR = "#222222"
MARK_COLOR = "#ff7f0e"
INDEX_COLOR = "#8c8c8c"
FUND_COLOR = "#2ca02c"
ADL_COLOR = "#9467bd"
AWAY_SHADE = "rgba(120, 120, 120, 0.18)"


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


__all__ = [
    "ADL_COLOR",
    "AWAY_SHADE",
    "FUND_COLOR",
    "INDEX_COLOR",
    "LAST_COLOR",
    "LONG_COLOR",
    "MARK_COLOR",
    "SHORT_COLOR",
    "Section",
    "style",
]
