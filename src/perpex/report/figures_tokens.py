"""The leveraged tokens' chart: each token's NAV beside the static position and the L x
underlying yardstick, and why a sideways market costs the tokens more (volatility drag).

Inputs are a run with leveraged tokens (MECHANICS.md §6): ``tokens.parquet`` (per step, the
static position's equity and each token's NAV, leverage and pool position, in atoms, ppm and
lots), the samples' mark, meta.json's ``tokens`` (the holding, the static leverage, the
frictionless flag) and the summary's ``tokens`` object. A run without them has no section.
Everything is normalised to 1 at the start; floats are for display only.
"""

from __future__ import annotations

import math
from typing import Any, Final

import numpy as np
from plotly.subplots import make_subplots

from perpex.report.figures_market import line, time_axis
from perpex.report.files import ReportError, read_json_object, read_parquet
from perpex.report.layout import LAST_COLOR, LONG_COLOR, SHORT_COLOR, Section, style
from perpex.report.load import Array, Run
from perpex.report.series import FloatArray

TOKENS_FILE: Final = "tokens.parquet"
NS_PER_DAY: Final = 86_400 * 1_000_000_000
REBALANCE_AT_NS: Final = 120 * 1_000_000_000  # the daily rebalance, 00:02 UTC
# Further tokens of a run (after the first long and the first short one), in order.
_MORE_COLORS: Final = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def _setting(run: Run) -> dict[str, Any] | None:
    """meta.json's ``tokens`` (hold, static_leverage, frictionless, list), or None."""
    raw = read_json_object(run.log_dir / "meta.json", f"{run.log_dir} has no meta.json")
    setting = raw.get("tokens")
    return setting if isinstance(setting, dict) else None


def daily_returns(time_ns: Array, mark_ticks: Array) -> FloatArray:
    """The underlying's returns between two daily rebalances: the last mark of each day
    before its 00:02 rebalance, against the one before (what each rebalance saw move)."""
    day = (time_ns.astype(np.int64) - REBALANCE_AT_NS) // NS_PER_DAY
    last_of_day = np.flatnonzero(np.append(day[1:] != day[:-1], True))
    marks = mark_ticks[last_of_day].astype(np.float64)
    marks = np.concatenate([mark_ticks[:1].astype(np.float64), marks])
    returns: FloatArray = marks[1:] / marks[:-1] - 1.0
    return returns[1:] if len(returns) and last_of_day[0] == 0 else returns


def drag_log(leverage: float, returns: FloatArray) -> tuple[float, float]:
    """(L x the underlying's log-growth, the drag -L(L-1)/2 x sum r^2) of MECHANICS §6.3."""
    growth = float(np.log1p(returns).sum())
    sum_sq = float((returns * returns).sum())
    return leverage * growth, -leverage * (leverage - 1) / 2 * sum_sq


def _colors(leverages: list[float]) -> list[str]:
    colors: list[str] = []
    spare = iter(_MORE_COLORS)
    for lev in leverages:
        first = LONG_COLOR if lev > 0 else SHORT_COLOR
        colors.append(first if first not in colors else next(spare, LAST_COLOR))
    return colors


def _words(
    summary: dict[str, Any],
    setting: dict[str, Any],
    tokens: list[tuple[str, float]],
    returns: FloatArray,
) -> str:
    """The caption: what the chart shows, the run's figures, why the zigzag costs more (with
    this run's Σ r²), and what the frictions added."""
    u = float(summary.get("underlying_return", 0.0))
    days = len(returns)
    hold = float(setting.get("hold", 0.0))
    static_leverage = float(setting.get("static_leverage", 0.0))
    static_words = (
        f"beside the static {static_leverage:g}x position's equity (black), "
        if static_leverage
        else ""
    )
    parts = [
        "Each token's NAV (solid) and its yardstick, L x the underlying's return (dashed), "
        f"{static_words}all as a multiple of the start; below, each pool's leverage at the end "
        f"of each step, before its rebalance. Over {days} daily rebalance"
        f"{'s' if days != 1 else ''} the underlying moved {u * 100:+.2f} %"
    ]
    for name, lev in tokens:
        ratio = float(summary.get(name, {}).get("nav_ratio", 0.0))
        parts.append(
            f"; {name} ({lev:+g}x) ended at {ratio:.4f} against {1 + lev * u:.4f} for its yardstick"
        )
    static = summary.get("static_3x_return")
    if isinstance(static, int | float) and static_leverage:
        parts.append(f"; the static position at {1 + float(static):.4f}")
    parts.append(". ")
    if days:
        sum_sq = float((returns * returns).sum())
        drags = "; ".join(
            f"{name}, L(L-1)/2 = {lev * (lev - 1) / 2:g}: {drag_log(lev, returns)[1]:+.4f} in "
            f"log (its Π(1 + L r) is {float(np.prod(1.0 + lev * returns)):.4f})"
            for name, lev in tokens
        )
        parts.append(
            "Why a sideways market costs the tokens more: a pool holds L x its NAV, so each "
            "day's return r moves the NAV by L r and the 00:02 rebalance resets the exposure; "
            "its NAV is Π(1 + L r), not 1 + L x the underlying's return. To stay at L (above "
            "1, or any short) the pool buys after every rise and sells after every fall, so in "
            "a zigzag it buys high and sells low every day. In logs the NAV grows by about L x "
            "the underlying's log-growth - L(L-1)/2 x Σ r² (volatility drag, MECHANICS.md "
            "§6.3): the loss grows with the sum of squared daily returns, whatever the price "
            "ends at (a -3x token's L(L-1)/2 is 6, a +3x one's 3). In a steady trend Σ r² is "
            "small next to the move and the daily compounding works for the winning side "
            "instead. This run's daily returns have Σ r² = "
            f"{sum_sq:.4f} (RMS {math.sqrt(sum_sq / days) * 100:.2f} % a day), a drag of: "
            f"{drags}. "
        )
    if setting.get("frictionless"):
        ticks = ", ".join(
            f"{name} {float(summary.get(name, {}).get('slippage_paid', 0.0)):,.2f}"
            for name, _ in tokens
        )
        parts.append(
            "This run is frictionless: no fees, no funding, and a deep book one tick either "
            "side of the index, so the NAVs are Π(1 + L r) but for whole lots and that tick "
            f"of slippage (USDT: {ticks})."
        )
        return "".join(parts)
    costs = []
    for name, _ in tokens:
        figures = summary.get(name, {})
        fees = float(figures.get("fees_paid", 0.0))
        slippage = float(figures.get("slippage_paid", 0.0))
        funding = float(figures.get("funding_paid", 0.0))
        share = f", {(fees + slippage + funding) / hold * 100:+.2f} % of its start" if hold else ""
        costs.append(
            f"{name} {fees:,.2f} of fees, {slippage:,.2f} of slippage and {funding:,.2f} of "
            f"funding{share}"
        )
    parts.append(
        "Fees, slippage and funding come on top (USDT; funding < 0 was received): "
        + "; ".join(costs)
        + ". --set tokens.frictionless=true runs the same path without them."
    )
    return "".join(parts)


def tokens_section(run: Run) -> Section | None:
    """The tokens' NAV paths beside the static position and the yardsticks (None without
    tokens: the page then has no such section)."""
    summary = run.meta.summary.get("tokens")
    if not isinstance(summary, dict):
        return None
    path = run.log_dir / TOKENS_FILE
    if not path.is_file():  # the summary has tokens: a log without their table is cut
        raise ReportError(f"{run.log_dir}: no {TOKENS_FILE}, though the run had tokens")
    setting = _setting(run)
    if setting is None:
        raise ReportError(f"{run.log_dir}: meta.json has no 'tokens' for {TOKENS_FILE}")
    tokens = [(str(t["name"]), float(t["leverage"])) for t in setting.get("list", [])]
    columns = ["time_ns", "static_equity_atoms"]
    for name, _ in tokens:
        columns += [f"{name}_nav_atoms", f"{name}_leverage_ppm"]
    table = read_parquet(path, columns)
    data = {name: np.asarray(table.column(name).to_numpy()) for name in columns}
    time_ns = data["time_ns"].astype(np.int64)
    axis = time_axis(run)
    marks = run.samples["mark_ticks"].astype(np.float64)
    underlying = marks / marks[0] - 1.0 if marks[0] > 0 else np.zeros_like(marks)
    colors = _colors([lev for _, lev in tokens])
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.72, 0.28]
    )
    for (name, lev), color in zip(tokens, colors, strict=True):
        nav_start = float(summary.get(name, {}).get("nav_start", 0.0))
        nav = data[f"{name}_nav_atoms"].astype(np.float64) / run.meta.atoms_per_unit
        if nav_start > 0:
            fig.add_trace(line(axis, time_ns, nav / nav_start, f"{name} NAV", color), row=1, col=1)
        fig.add_trace(
            line(axis, run.samples["time_ns"], 1.0 + lev * underlying, f"{lev:+g} x underlying",
                 color, line={"dash": "dash"}, width=1.2),
            row=1, col=1,
        )  # fmt: skip
        leverage = data[f"{name}_leverage_ppm"].astype(np.float64) / 1e6
        fig.add_trace(
            line(axis, time_ns, leverage, f"{name} leverage", color, showlegend=False),
            row=2,
            col=1,
        )
    hold = float(setting.get("hold", 0.0))
    if setting.get("static_leverage") and hold > 0:
        static = data["static_equity_atoms"].astype(np.float64) / run.meta.atoms_per_unit / hold
        name = f"static {float(setting['static_leverage']):g}x position"
        fig.add_trace(line(axis, time_ns, static, name, LAST_COLOR), row=1, col=1)
    style(fig, axis, height=520, rows=2)
    fig.update_yaxes(title={"text": "value (start = 1)"}, row=1, col=1)
    fig.update_yaxes(title={"text": "leverage"}, row=2, col=1)
    returns = daily_returns(run.samples["time_ns"], run.samples["mark_ticks"])
    caption = _words(summary, setting, tokens, returns)
    return Section("tokens", "Leveraged tokens: NAV against the yardsticks", caption, fig)


__all__ = ["daily_returns", "drag_log", "tokens_section"]
