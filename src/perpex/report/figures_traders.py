"""The traders' charts: how far leverage put the liquidation price, how much stops slipped,
and the strategy's equity and drawdown.

Inputs are a loaded `Run`: entries.parquet (ticks, leverage), stops.parquet (slippage in basis
points, adverse positive), the samples' strategy equity (atoms). Floats are for display only.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from perpex.report.figures_market import line, time_axis
from perpex.report.layout import FUND_COLOR, LAST_COLOR, LONG_COLOR, MARK_COLOR, Section, style
from perpex.report.load import Run
from perpex.report.series import FloatArray, drawdown, minmax_indices

LEVERAGE_BUCKETS = (
    (1, 5, "1-5x"),
    (6, 10, "5-10x"),
    (11, 20, "10-20x"),
    (21, 50, "20-50x"),
    (51, 100, "50-100x"),
    (101, 10**9, "100x+"),
)
"""Leverage buckets, inclusive bounds: 1-5x is 1 to 5, 5-10x is 6 to 10, ..., 100x+ above 100."""

_HISTOGRAM_BINS = 60


def leverage_section(run: Run) -> Section:
    title = "Liquidation distance by leverage"
    entries = run.entries
    if entries is None:
        return Section(
            "leverage",
            title,
            "No leveraged entries were recorded in this run "
            "(no entries.parquet), so there is no liquidation distance to show.",
        )
    valid = entries.get("liquidation_ticks_valid", np.ones(len(entries["leverage"]), bool))
    valid = valid & (entries["liquidation_ticks"] > 0) & (entries["entry_ticks"] > 0)
    leverage = entries["leverage"][valid]
    entry = entries["entry_ticks"][valid].astype(np.float64)
    distance_pct = np.abs(entries["liquidation_ticks"][valid] - entry) / entry * 100
    fig = go.Figure()
    labels, q1, median, q3, low, high = [], [], [], [], [], []
    ref_y, ref_up, ref_down = [], [], []
    for lo, hi, label in LEVERAGE_BUCKETS:
        rows = (leverage >= lo) & (leverage <= hi)
        if not rows.any():
            continue
        values = distance_pct[rows]
        quartiles = np.percentile(values, [25, 50, 75])
        labels.append(f"{label}<br>n={int(rows.sum()):,}")
        q1.append(quartiles[0])
        median.append(quartiles[1])
        q3.append(quartiles[2])
        low.append(values.min())
        high.append(values.max())
        levs = leverage[rows]
        ref = 100 / float(np.median(levs))
        ref_y.append(ref)
        ref_up.append(100 / float(levs.min()) - ref)
        ref_down.append(ref - 100 / float(levs.max()))
    skipped = len(entries["leverage"]) - int(valid.sum())
    if not labels:
        return Section(
            "leverage",
            title,
            f"The run recorded {len(entries['leverage']):,} "
            "entries, none with a liquidation price, so there is nothing to show.",
        )
    # Box statistics computed here, not in the browser: a million entries stay six numbers.
    fig.add_trace(
        go.Box(
            x=labels,
            q1=q1,
            median=median,
            q3=q3,
            lowerfence=low,
            upperfence=high,
            name="distance to liquidation",
            marker={"color": LONG_COLOR},
            fillcolor="rgba(214,39,40,0.25)",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=labels,
            y=ref_y,
            mode="markers",
            name="100 % / leverage",
            marker={"symbol": "diamond", "size": 10, "color": LAST_COLOR},
            error_y={
                "type": "data",
                "symmetric": False,
                "array": ref_up,
                "arrayminus": ref_down,
                "color": LAST_COLOR,
            },
        )
    )
    style(
        fig,
        None,
        height=380,
        hovermode="closest",
        xaxis={"title": {"text": "leverage at entry"}, "type": "category"},
        yaxis={"title": {"text": "distance entry to liquidation (%)"}, "type": "log"},
    )
    caption = (
        "How far the price had to move against a leveraged entry to liquidate it: "
        "|liquidation price - entry price| / entry price, in %, for each trader entry, grouped "
        "by the leverage chosen (boxes: the middle half of the entries and the median; whiskers:"
        " the smallest and largest). The diamonds are 100 % / leverage (at the bucket's median "
        "leverage; their bars span its range): the move that would wipe out the initial margin."
        " The real distance is shorter: a position is liquidated when its margin falls to the "
        "maintenance margin, not to zero."
        + (f" {skipped:,} entries without a liquidation price are left out." if skipped else "")
    )
    return Section("leverage", title, caption, fig)


def stops_section(run: Run) -> Section:
    title = "Stop-loss slippage"
    stops = run.stops
    if stops is None:
        return Section("stops", title, "No stop order was triggered and filled in this run.")
    slippage = stops["slippage_bps"].astype(np.float64)
    order = np.argsort(stops["time_ns"], kind="stable")
    time_ns, slippage_in_time = stops["time_ns"][order], slippage[order]
    counts, edges = np.histogram(slippage, bins=_HISTOGRAM_BINS)
    axis = time_axis(run)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.1)
    fig.add_trace(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=counts,
            width=np.diff(edges),
            name="stops",
            marker={"color": MARK_COLOR, "line": {"width": 0}},
        ),
        row=1,
        col=1,
    )
    keep = minmax_indices(slippage_in_time)
    fig.add_trace(
        go.Scatter(
            x=axis.x(time_ns[keep]),
            y=slippage_in_time[keep],
            mode="markers",
            name="one stop",
            marker={"color": LAST_COLOR, "size": 4, "opacity": 0.5},
        ),
        row=1,
        col=2,
    )
    style(fig, None, height=360, hovermode="closest", showlegend=False, bargap=0)
    fig.update_xaxes(title={"text": "slippage (bps, adverse > 0)"}, row=1, col=1)
    fig.update_yaxes(title={"text": "stops"}, row=1, col=1)
    time_layout = axis.layout()
    fig.update_xaxes(type=time_layout["type"], title=time_layout["title"], row=1, col=2)
    fig.update_yaxes(title={"text": "slippage (bps)"}, row=1, col=2)
    p50, p95 = np.percentile(slippage, [50, 95])
    caption = (
        f"{len(slippage):,} stop orders were triggered and filled. Slippage is how much worse "
        "than the stop price the average fill was, in basis points (1 bp = 0.01 %; positive = "
        "worse for the trader). Left: how many stops slipped by how much; right: each stop's "
        f"slippage at the time it fired. Median {p50:,.1f} bps, 95th percentile {p95:,.1f} bps, "
        f"worst {slippage.max():,.1f} bps. A stop is a market order once triggered: in a "
        "cascade it fills wherever the thinned book lets it."
    )
    return Section("stops", title, caption, fig)


def strategy_section(run: Run) -> Section:
    title = "Strategy equity and drawdown"
    meta = run.meta
    if not meta.has_strategy:
        return Section("strategy", title, "This scenario runs no strategy.")
    axis = time_axis(run)
    time_ns = run.samples["time_ns"]
    equity: FloatArray = meta.usdt(run.samples["strategy_equity_atoms"])
    dd_pct = drawdown(equity) * 100
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.65, 0.35]
    )
    fig.add_trace(line(axis, time_ns, equity, "equity (USDT)", FUND_COLOR), row=1, col=1)
    fig.add_trace(
        line(
            axis,
            time_ns,
            dd_pct,
            "drawdown (%)",
            LONG_COLOR,
            fill="tozeroy",
            fillcolor="rgba(214,39,40,0.15)",
        ),
        row=2,
        col=1,
    )
    style(fig, axis, height=440, rows=2)
    fig.update_yaxes(title={"text": "equity (USDT)"}, row=1, col=1)
    fig.update_yaxes(title={"text": "drawdown (%)"}, row=2, col=1)
    deposit = float(meta.usdt(meta.strategy_deposit_atoms))
    result = (
        f" from a deposit of {deposit:,.2f} USDT ({(equity[-1] / deposit - 1) * 100:+.2f} %)"
        if deposit > 0
        else ""
    )
    caption = (
        "The strategy's equity (wallet plus unrealized profit and loss at the mark) at the end "
        "of each step, and below it the drawdown: how far equity stood under its highest value "
        f"so far. It ended at {equity[-1]:,.2f} USDT{result}; the deepest drawdown was "
        f"{dd_pct.min():.2f} %."
    )
    return Section("strategy", title, caption, fig)


__all__ = ["LEVERAGE_BUCKETS", "leverage_section", "stops_section", "strategy_section"]
