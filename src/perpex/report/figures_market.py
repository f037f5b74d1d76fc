"""The market's charts: prices with liquidations, open interest, liquidated notional per time,
and book depth; and the time axis, thinned lines and time bars the other charts share.

Inputs are a loaded `Run` (integer ticks, lots, atoms, ns); values are turned into USDT and BTC
in float64 here, for display only. Line series are thinned to at most `MAX_LINE_POINTS` points
(min and max per bucket), bars to at most `MAX_BARS` time buckets.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go

from perpex.report.layout import (
    AWAY_SHADE,
    INDEX_COLOR,
    LAST_COLOR,
    LONG_COLOR,
    MARK_COLOR,
    SHORT_COLOR,
    Section,
    style,
)
from perpex.report.load import Array, Run
from perpex.report.series import (
    MAX_BARS,
    FloatArray,
    IntArray,
    TimeAxis,
    bucket_ns_for,
    bucket_sums,
    bucket_words,
    compact,
    minmax_indices,
    true_intervals,
)


def time_axis(run: Run) -> TimeAxis:
    times = run.samples["time_ns"]
    return TimeAxis(int(min(run.meta.start_ns, times[0])), int(max(run.meta.end_ns, times[-1])))


def bar_bucket_ns(run: Run) -> int:
    """The bucket of every time-bar chart: a minute, coarser for long runs (at most MAX_BARS)."""
    axis = time_axis(run)
    return bucket_ns_for(axis.end_ns - axis.start_ns, 1)


def line(
    axis: TimeAxis, time_ns: IntArray, values: FloatArray, name: str, color: str, **kw: Any
) -> go.Scatter:
    """A thinned line trace: min and max per bucket, so spikes survive."""
    keep = minmax_indices(values)
    return go.Scatter(
        x=axis.x(time_ns[keep]),
        y=values[keep],
        name=name,
        mode="lines",
        line={"color": color, "width": kw.pop("width", 1.5), **kw.pop("line", {})},
        **kw,
    )


def _liquidation_groups(run: Run, axis: TimeAxis) -> list[go.Scatter]:
    """Liquidation fills summed per step and side (per time bucket when more than MAX_BARS
    steps have some), one marker each at the group's average price, area ~ notional."""
    trades = run.liquidation_trades
    if trades is None or len(trades["qty_lots"]) == 0:
        return []
    meta = run.meta
    time_ns = trades["time_ns"].astype(np.int64)
    if len(np.unique(trades["step"])) <= MAX_BARS:
        group_key = trades["step"].astype(np.int64)
    else:
        group_key = time_ns // bucket_ns_for(axis.end_ns - axis.start_ns, meta.step_ns)
    qty_lots = trades["qty_lots"].astype(np.float64)
    notional_usdt = trades["price_ticks"].astype(np.float64) * qty_lots * meta.usdt_per_tick_lot
    peak_usdt = 0.0
    groups: list[tuple[str, str, Array, Array, Array, Array]] = []
    for side, name, color in (
        (-1, "liquidated longs", LONG_COLOR),
        (1, "liquidated shorts", SHORT_COLOR),
    ):
        rows = trades["taker_side"] == side
        if not rows.any():
            continue
        keys, inverse = np.unique(group_key[rows], return_inverse=True)
        first_ns = np.full(len(keys), np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first_ns, inverse, time_ns[rows])
        lots = np.bincount(inverse, weights=qty_lots[rows])
        usdt = np.bincount(inverse, weights=notional_usdt[rows])
        price = usdt / (lots * meta.btc_per_lot)  # the group's volume-weighted average price
        peak_usdt = max(peak_usdt, float(usdt.max()))
        groups.append((name, color, first_ns, price, lots * meta.btc_per_lot, usdt))
    traces = []
    for name, color, first_ns, price, btc, usdt in groups:
        traces.append(
            go.Scatter(
                x=axis.x(first_ns),
                y=price,
                name=name,
                mode="markers",
                marker={
                    "color": color,
                    "opacity": 0.6,
                    "size": 5 + 25 * np.sqrt(usdt / peak_usdt),
                    "line": {"width": 0},
                },
                customdata=np.column_stack([btc, usdt]),
                hovertemplate="%{customdata[0]:,.3f} BTC, %{customdata[1]:,.0f} USDT at %{y:,.1f}",
            )
        )
    return traces


def price_section(run: Run) -> Section:
    axis = time_axis(run)
    s = run.samples
    tick = run.meta.usdt_per_tick
    time_ns = s["time_ns"]
    last = np.where(s["last_ticks"] > 0, s["last_ticks"] * tick, np.nan)
    fig = go.Figure()
    fig.add_trace(
        line(axis, time_ns, s["index_ticks"] * tick, "index", INDEX_COLOR, line={"dash": "dot"})
    )
    fig.add_trace(line(axis, time_ns, s["mark_ticks"] * tick, "mark", MARK_COLOR))
    fig.add_trace(line(axis, time_ns, last, "last trade", LAST_COLOR, width=1.2))
    for trace in _liquidation_groups(run, axis):
        fig.add_trace(trace)
    style(fig, axis, height=480, yaxis={"title": {"text": f"{run.meta.symbol} price (USDT)"}})
    traded = last[np.isfinite(last)]
    if len(traded):
        fall_pct = float((traded / np.maximum.accumulate(traded) - 1).min() * 100)
        path = (
            f" The last price started at {traded[0]:,.1f}, went as low as {traded.min():,.1f} "
            f"(the deepest fall from a previous high: {fall_pct:.1f} %) and ended at "
            f"{traded[-1]:,.1f} USDT."
        )
    else:
        path = " No trade printed in the whole run."
    caption = (
        f"The price of {run.meta.symbol} over the run: the index (the spot reference the "
        f"scenario drives, dotted grey), the mark price ({run.meta.mark_price} method, orange; "
        "it decides who is liquidated) and the last traded price (black; missing before the "
        "first trade). Each dot is the liquidation fills of one step on one side (one time "
        "bucket when there are many): red for long positions forced to sell, blue for shorts "
        "forced to buy, placed at their average fill price, its area growing with the notional."
        + path
    )
    return Section("price", "Price and liquidations", caption, fig)


def open_interest_section(run: Run) -> Section:
    axis = time_axis(run)
    oi_btc = run.samples["open_interest_lots"] * run.meta.btc_per_lot
    fig = go.Figure(
        line(
            axis,
            run.samples["time_ns"],
            oi_btc,
            "open interest",
            LAST_COLOR,
            fill="tozeroy",
            fillcolor="rgba(34,34,34,0.08)",
        )
    )
    style(fig, axis, height=320, yaxis={"title": {"text": "open interest (BTC)"}})
    change = (oi_btc[-1] / oi_btc[0] - 1) * 100 if oi_btc[0] > 0 else float("nan")
    caption = (
        "Open interest: the total size of all long positions (equal to all shorts), in BTC, at "
        f"the end of each step. It went from {oi_btc[0]:,.3f} to a low of {oi_btc.min():,.3f} "
        f"and ended at {oi_btc[-1]:,.3f} BTC"
        + (f" ({change:+.1f} %)." if np.isfinite(change) else ".")
        + " A sudden drop is positions being closed at once: liquidations, stops, panic exits."
    )
    return Section("open-interest", "Open interest", caption, fig)


def _side_bars(run: Run, bucket_ns: int) -> tuple[IntArray, FloatArray, FloatArray]:
    axis = time_axis(run)
    trades = run.liquidation_trades
    if trades is None or len(trades["qty_lots"]) == 0:
        starts, zeros = bucket_sums(
            np.zeros(0, np.int64), np.zeros(0), axis.start_ns, axis.end_ns, bucket_ns
        )
        return starts, zeros, zeros
    usdt = trades["price_ticks"] * trades["qty_lots"] * run.meta.usdt_per_tick_lot
    longs = trades["taker_side"] == -1
    starts, long_usdt = bucket_sums(
        trades["time_ns"][longs], usdt[longs], axis.start_ns, axis.end_ns, bucket_ns
    )
    _, short_usdt = bucket_sums(
        trades["time_ns"][~longs], usdt[~longs], axis.start_ns, axis.end_ns, bucket_ns
    )
    return starts, long_usdt, short_usdt


def bar_x(axis: TimeAxis, starts_ns: IntArray, bucket_ns: int) -> tuple[FloatArray, float]:
    """Bars centred on their bucket, one bucket wide, in the axis' units."""
    x0 = axis.x(starts_ns)
    width = float(
        axis.x(np.array([axis.start_ns + bucket_ns]))[0] - axis.x(np.array([axis.start_ns]))[0]
    )
    return x0 + width / 2, width


def liquidations_per_time_section(run: Run) -> Section:
    axis = time_axis(run)
    bucket_ns = bar_bucket_ns(run)
    words = bucket_words(bucket_ns)
    starts, long_usdt, short_usdt = _side_bars(run, bucket_ns)
    x, width = bar_x(axis, starts, bucket_ns)
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=x,
            y=long_usdt,
            width=width,
            name="longs liquidated",
            marker={"color": LONG_COLOR, "line": {"width": 0}},
        )
    )
    fig.add_trace(
        go.Bar(
            x=x,
            y=short_usdt,
            width=width,
            name="shorts liquidated",
            marker={"color": SHORT_COLOR, "line": {"width": 0}},
        )
    )
    style(
        fig,
        axis,
        height=340,
        barmode="stack",
        bargap=0,
        yaxis={"title": {"text": f"USDT per {words}"}},
    )
    total = long_usdt + short_usdt
    if total.sum() > 0:
        worst = int(np.argmax(total))
        detail = (
            f" The worst {words} was {compact(float(total[worst]))} USDT, starting "
            f"{axis.label(int(starts[worst]))}."
        )
    else:
        detail = " No liquidation order filled through the book in this run."
    caption = (
        f"Notional of the liquidation fills (price × size, USDT) per {words}, stacked: red the "
        "long positions closed by the liquidation engine, blue the shorts. Tall red bars in a "
        "row are a liquidation cascade: each wave of forced selling pushes the price down to "
        f"the next layer of liquidation prices.{detail}"
    )
    return Section("liquidations", f"Liquidated notional per {words}", caption, fig)


def depth_section(run: Run) -> Section:
    axis = time_axis(run)
    s = run.samples
    btc = run.meta.btc_per_lot
    bid_btc = s["depth_bid_lots_1pct"] * btc
    ask_btc = s["depth_ask_lots_1pct"] * btc
    fig = go.Figure()
    fig.add_trace(line(axis, s["time_ns"], bid_btc, "bids within 1 % (BTC)", SHORT_COLOR))
    fig.add_trace(line(axis, s["time_ns"], ask_btc, "asks within 1 % (BTC)", LONG_COLOR))
    away: npt.NDArray[np.bool_] = s["makers_away"].astype(bool)
    spans = true_intervals(away, s["time_ns"], run.meta.step_ns)
    shapes = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": float(axis.x(np.array([a]))[0]),
            "x1": float(axis.x(np.array([b]))[0]),
            "y0": 0,
            "y1": 1,
            "fillcolor": AWAY_SHADE,
            "line": {"width": 0},
            "layer": "below",
        }
        for a, b in spans
    ]
    if spans:
        fig.add_trace(
            go.Scatter(
                x=[None],
                y=[None],
                mode="markers",
                name="makers away",
                marker={"symbol": "square", "size": 12, "color": AWAY_SHADE},
            )
        )
    style(fig, axis, height=340, shapes=shapes, yaxis={"title": {"text": "resting size (BTC)"}})
    away_words = (
        "Grey shading marks the steps when the market makers had pulled their quotes "
        f"({100 * float(away.mean()):.1f} % of the run)."
        if away.any()
        else "The market makers never pulled their quotes in this run."
    )
    no_bid_pct = 100 * float((bid_btc <= 0).mean())
    caption = (
        "Liquidity: the size resting in the order book within 1 % of the mid price, bids (blue, "
        "what a seller can hit) and asks (red). A liquidation is a market order, so thin bids "
        f"turn forced selling into a larger price drop. {away_words} Bids within 1 %: median "
        f"{float(np.median(bid_btc)):,.2f} BTC"
        + (
            f"; none at all during {no_bid_pct:.1f} % of the steps."
            if no_bid_pct > 0
            else f", lowest {bid_btc.min():,.2f} BTC."
        )
    )
    return Section("depth", "Order book depth within 1 %", caption, fig)


__all__ = [
    "bar_bucket_ns",
    "bar_x",
    "depth_section",
    "line",
    "liquidations_per_time_section",
    "open_interest_section",
    "price_section",
    "time_axis",
]
