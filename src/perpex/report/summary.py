"""The report's header in words: what happened in the run, in one paragraph, and the runner's
summary as a table of readable values.

The paragraph is computed from the run's files (events and samples), not from the summary, so
it always matches the charts. The summary dict is shown as it is, its integer values read by
their unit suffix: `_atoms` as USDT, `_lots` as BTC, `_ticks` as a price, `_e8` and `_ppm` as
percentages. One summary key is read: a count of accounts that ended below zero equity (a key
whose name contains `below_zero` or `negative_equity`), the non-recourse promise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from perpex.report.figures_funds import fund_low_atoms
from perpex.report.figures_market import time_axis
from perpex.report.load import Run, RunMeta
from perpex.report.series import amount, compact

_BELOW_ZERO_MARKERS = ("below_zero", "negative_equity")


def _liquidation_clause(run: Run) -> str:
    trades = run.liquidation_trades
    n_trades = 0 if trades is None else len(trades["qty_lots"])
    triggered = run.liquidations_triggered
    if triggered is not None and len(triggered["account"]):
        count = len(triggered["account"])
        accounts = len(np.unique(triggered["account"]))
    elif trades is not None and n_trades:
        # No trigger events recorded: one liquidation per account and step with forced fills.
        count = len(
            set(zip(trades["step"].tolist(), trades["taker_account"].tolist(), strict=True))
        )
        accounts = len(np.unique(trades["taker_account"]))
    else:
        return "No position was liquidated"
    noun = "liquidation was" if count == 1 else "liquidations were"
    who = f" ({accounts:,} account{'s' if accounts != 1 else ''})" if accounts != count else ""
    clause = f"{count:,} {noun} triggered{who}"
    if trades is not None and n_trades:
        usdt = trades["price_ticks"] * trades["qty_lots"] * run.meta.usdt_per_tick_lot
        total = float(usdt.sum())
        long_share = float(usdt[trades["taker_side"] == -1].sum()) / total if total else 0.0
        clause += (
            f" and closed {compact(total)} USDT of notional through the book, "
            f"{long_share * 100:.0f} % of it longs"
        )
    return clause


def _fund_clause(run: Run) -> str:
    fund_atoms = run.samples["insurance_fund_atoms"]
    low_atoms = fund_low_atoms(run)
    meta = run.meta
    return (
        f"the insurance fund went from {amount(float(meta.usdt(int(fund_atoms[0]))))} to a "
        f"low of {amount(float(meta.usdt(low_atoms)))} and ended at "
        f"{amount(float(meta.usdt(int(fund_atoms[-1]))))} USDT"
    )


def _adl_clause(run: Run) -> str:
    adl = run.adl
    if adl is None or len(adl["qty_lots"]) == 0:
        return "ADL never fired"
    usdt = adl["price_ticks"] * adl["qty_lots"] * run.meta.usdt_per_tick_lot
    n = len(usdt)
    counterparties = len(np.unique(adl["counterparty_account"]))
    return (
        f"ADL fired {n:,} time{'s' if n != 1 else ''} for {compact(float(usdt.sum()))} USDT "
        f"of notional against {counterparties:,} profitable account"
        f"{'s' if counterparties != 1 else ''}"
    )


def below_zero_count(summary: dict[str, Any]) -> int | None:
    for key, value in summary.items():
        if (
            any(m in key for m in _BELOW_ZERO_MARKERS)
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            return value
    return None


def headline(run: Run) -> str:
    """The run in one paragraph, e.g. "1,234 liquidations were triggered and closed 56.7M USDT
    of notional through the book, 91 % of it longs; the insurance fund went from ...; ADL fired
    3 times for ...; no account ended below zero."""
    clauses = [_liquidation_clause(run), _fund_clause(run), _adl_clause(run)]
    below = below_zero_count(run.meta.summary)
    if below is not None:
        clauses.append(
            "no account ended below zero"
            if below == 0
            else f"{below:,} account{'s' if below != 1 else ''} ended below zero"
        )
    text = "; ".join(clauses) + "."
    stops = run.stops
    if stops is not None:
        median_bps = float(np.median(stops["slippage_bps"]))
        text += (
            f" {len(stops['slippage_bps']):,} stops fired and filled with a median slippage "
            f"of {median_bps:,.1f} bps."
        )
    if run.meta.has_strategy:
        equity = run.meta.usdt(run.samples["strategy_equity_atoms"])
        text += f" The strategy ended with {float(equity[-1]):,.2f} USDT."
    return text


def run_facts(run: Run) -> list[tuple[str, str]]:
    """The run's setting: market, seed, mark method, span, steps."""
    meta = run.meta
    axis = time_axis(run)
    steps = len(run.samples["step"])
    return [
        ("market", f"{meta.symbol} (tick {meta.tick_size} USDT, lot {meta.step_size} BTC)"),
        ("seed", str(meta.seed)),
        ("mark price", meta.mark_price),
        ("steps", f"{steps:,} of {meta.step_ns / 1e9:g} s"),
        ("from", axis.label(axis.start_ns)),
        ("to", axis.label(axis.end_ns)),
        ("strategy", "yes" if meta.has_strategy else "none"),
    ]


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out.append((prefix, value))


def format_value(meta: RunMeta, key: str, value: Any) -> str:
    """One summary value for a reader: integers by the unit their key names."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        if key.endswith("_atoms"):
            return f"{value / meta.atoms_per_unit:,.2f} USDT"
        if key.endswith("_lots"):
            return f"{value * meta.btc_per_lot:,.3f} BTC"
        if key.endswith("_ticks"):
            return f"{value * meta.usdt_per_tick:,.1f} USDT"
        if key.endswith("_e8"):
            return f"{value / 1e6:.4f} %"
        if key.endswith("_ppm"):
            return f"{value / 1e4:.4f} %"
        if key.endswith("_ns"):
            return f"{value / 1e9:,.3f} s"
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{value:,.0f}"
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:,.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def summary_rows(meta: RunMeta) -> list[tuple[str, str]]:
    flat: list[tuple[str, Any]] = []
    _flatten("", meta.summary, flat)
    return [(key, format_value(meta, key, value)) for key, value in flat]


__all__ = ["below_zero_count", "format_value", "headline", "run_facts", "summary_rows"]
