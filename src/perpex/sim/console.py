"""The simulator on the terminal: the summary as a rich table, and the CLI's commands' bodies
(`perpex simulate`, `perpex scenarios`, `perpex report`), which `perpex.cli` wires to typer.

A mistake of the user's (an unknown scenario, a bad file, a bad ``--set``, a strategy that
cannot be loaded, data that cannot be read) is one line on stderr and exit status 2; no
traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from rich.console import Console
from rich.table import Table

# (key, label, unit) in the order the table shows them
ROWS: Final[tuple[tuple[str, str, str], ...]] = (
    ("steps", "path steps", ""),
    ("liquidations", "positions liquidated", ""),
    ("long_liquidations", "  of them long", ""),
    ("short_liquidations", "  of them short", ""),
    ("liquidated_notional", "liquidated notional", "USDT"),
    ("long_liquidated_notional", "  long", "USDT"),
    ("short_liquidated_notional", "  short", "USDT"),
    ("insurance_fund_start", "insurance fund at start", "USDT"),
    ("insurance_fund_min", "insurance fund low", "USDT"),
    ("insurance_fund_end", "insurance fund at end", "USDT"),
    ("adl_events", "ADL fills", ""),
    ("adl_notional", "ADL notional", "USDT"),
    ("bad_debt", "bad debt", "USDT"),
    ("accounts_below_zero", "accounts below zero", ""),
    ("funding_paid", "funding paid", "USDT"),
    ("stop_orders_triggered", "stops triggered", ""),
    ("stop_slippage_mean", "stop slippage, mean", "% of stop"),
    ("open_interest_start", "open interest at start", "BTC"),
    ("open_interest_min", "open interest low", "BTC"),
    ("open_interest_end", "open interest at end", "BTC"),
    ("last_price_low", "last price low", "USDT"),
    ("last_price_high", "last price high", "USDT"),
    ("mark_price_low", "mark price low", "USDT"),
    ("traded_notional", "traded notional", "USDT"),
    ("strategy_pnl", "strategy PnL", "USDT"),
    ("strategy_max_drawdown", "strategy max drawdown", "%"),
    ("strategy_liquidations", "strategy liquidated", ""),
    ("strategy_stops_triggered", "strategy stops triggered", ""),
    ("commands", "engine commands", ""),
    ("events", "engine events", ""),
    ("state_hash", "state hash", ""),
)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:,.4f}".rstrip("0").rstrip(".")
    return str(value)


def summary_table(summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("unit")
    for key, label, unit in ROWS:
        if key in summary:
            table.add_row(label, _fmt(summary[key]), unit)
    return table


def tokens_table(tokens: dict[str, Any]) -> Table:
    """The leveraged tokens of a run: NAV start and end, the rebalances and what they cost."""
    table = Table(title="leveraged tokens", title_justify="left")
    for column in ("token", "leverage", "NAV start", "NAV end", "end / start", "rebalances",
                   "fees", "slippage", "funding"):  # fmt: skip
        table.add_column(column, justify="left" if column == "token" else "right")
    for name, t in sorted((k, v) for k, v in tokens.items() if isinstance(v, dict)):
        table.add_row(
            name, f"{t['leverage']:+g}x", _fmt(t["nav_start"]), _fmt(t["nav_end"]),
            f"{t['nav_ratio']:.4f}", str(t["rebalances"]), _fmt(t["fees_paid"]),
            _fmt(t["slippage_paid"]), _fmt(t["funding_paid"]),
        )  # fmt: skip
    table.caption = (
        f"underlying {tokens['underlying_return']:+.2%}, static 3x position "
        f"{tokens['static_3x_return']:+.2%}; fees, slippage and funding in USDT"
    )
    return table


def fail(message: str) -> None:
    """A user's mistake: one line on stderr, exit status 2."""
    sys.stderr.write(f"error: {message}\n")
    raise SystemExit(2)


def simulate(
    scenario_name: str,
    *,
    seed: int,
    out: str | None,
    sets: Sequence[str],
    strategy: str | None,
    data: str | None,
    as_json: bool,
) -> None:
    from perpex.sim.agents.strategy import StrategyError, load_strategy
    from perpex.sim.data import DataError
    from perpex.sim.runner import run
    from perpex.sim.scenario import ScenarioError, load_scenario, parse_set, with_overrides

    try:
        scenario = load_scenario(scenario_name)
        if sets:
            scenario = with_overrides(scenario, parse_set(sets))
        strategy_cls = load_strategy(strategy) if strategy else None
        if data is not None and scenario.data is None:
            fail(f"--data {data}: scenario {scenario.name} has a synthetic [path], no candles")
        if data is not None and not Path(data).is_file():
            fail(f"--data {data}: no such file")
    except (ScenarioError, ValueError) as exc:
        fail(str(exc))
        return
    out_dir = Path(out) if out is not None else Path("perpex-runs") / f"{scenario.name}-seed{seed}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        reason = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
        fail(f"--out {out_dir}: cannot make the run directory: {reason}")
    try:
        result = run(scenario, seed, strategy_cls, out_dir, progress=True, data=data)
    except (DataError, ScenarioError, StrategyError) as exc:
        fail(str(exc))
        return
    if as_json:
        sys.stdout.write(json.dumps(result.summary, sort_keys=True) + "\n")
        return
    console = Console()
    console.print(summary_table(result.summary, f"{scenario.name} (seed {seed})"))
    if "tokens" in result.summary:
        console.print(tokens_table(result.summary["tokens"]))
    console.print(f"[bold]question[/bold]  {scenario.question}")
    console.print(f"events    {result.events_path}")
    console.print(f"report    {result.report_path}")
    console.print(f"wall time {result.wall_seconds:.1f} s")


def list_shipped(rows: Sequence[tuple[str, str]], title: str, as_json: bool) -> None:
    """(name, question) rows: a rich table, or one JSON array for scripts."""
    if as_json:
        sys.stdout.write(json.dumps([{"name": n, "question": q} for n, q in rows]) + "\n")
        return
    table = Table(title=title, title_justify="left")
    table.add_column("name", style="bold")
    table.add_column("the question it answers")
    for name, question in rows:
        table.add_row(name, question)
    Console().print(table)


def scenarios(as_json: bool) -> None:
    from perpex.sim.scenario import shipped_scenarios

    list_shipped(shipped_scenarios(), "shipped scenarios (perpex simulate NAME)", as_json)


def report(run_dir: str, out: str | None) -> None:
    """The report of a simulation run (its directory or its events/), or of a sweep (a
    directory with aggregate.parquet), rebuilt from the files alone."""
    from perpex.report import ReportError, build_report, build_sweep_report

    try:
        if (Path(run_dir) / "aggregate.parquet").is_file():
            path = build_sweep_report(run_dir, out)
        else:
            path = build_report(run_dir, out)
    except ReportError as exc:
        fail(str(exc))
        return
    Console().print(f"report    {path}")


__all__ = [
    "ROWS",
    "fail",
    "list_shipped",
    "report",
    "scenarios",
    "simulate",
    "summary_table",
    "tokens_table",
]
