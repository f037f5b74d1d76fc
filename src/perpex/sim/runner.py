"""`run(scenario, seed)`: a scenario's path driven through the one engine by its agents.

Per step of the path, in this order (the same in every process, so the same scenario and
seed give the same events and the same state hash):

1. the clock moves to the step's time (funding settles when it passes a funding time, with
   Binance's real rate when the scenario replays them);
2. the makers replace their ladders around the path's target (one `MassQuote` each), or pull
   out during a liquidity gap;
3. the index is published (the mark follows by the exchange's own rule; liquidations,
   auto-deleveraging and triggered stops run in the engine);
4. the other agents act in the scenario's order: leveraged traders, noise and momentum takers,
   the whale, the user's strategy; each agent's commands go in through `Exchange.submit`, the
   strategy's calls through the facade (no side door);
5. every agent observes the step's events; the metrics count them and the writer streams them
   to Parquet; one row of samples is kept.

With `out`, the run writes its event log, ``out/events/``: the engine's events streamed in
batches, then the samples, entries, stops (and tokens) and meta.json, so that directory alone
rebuilds the report (`perpex.sim.events_out`); ``out/report.html`` is built from it.

The market, path, exchange and agents are built from the scenario in `perpex.sim.build`; the
index fed to the exchange is `build.fed_index` (a shock's index, else the real mark series,
else the path's price).

A scenario with ``[tokens]`` also lists leveraged tokens (MECHANICS.md §6), set up by
`perpex.sim.token_desk`: in the first step, once the makers have quoted and the index is out,
the `TokenDesk` creates the tokens and opens the static position; each step it samples every
token's NAV and the summary gains a ``tokens`` object. With `frictionless` a `DeepBook` quotes
the index one tick either side before the makers. A scenario without ``[tokens]`` runs, and sums
up, exactly as before.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from perpex.core.messages import AdvanceClock, Command, Event, UpdateIndex
from perpex.core.units import ATOMS_PER_UNIT, PPM
from perpex.exchange import Exchange
from perpex.sim.agents.base import Agent
from perpex.sim.agents.strategy import Strategy, StrategyAgent
from perpex.sim.build import build_agents, build_exchange, build_path, fed_index, strategy_instance
from perpex.sim.events_out import (
    ENTRIES_TABLE,
    ENTRY_COLUMNS,
    EVENTS_DIR,
    SAMPLE_COLUMNS,
    SAMPLES_TABLE,
    STOP_COLUMNS,
    STOPS_TABLE,
    TOKENS_TABLE,
    EventWriter,
    token_columns,
)
from perpex.sim.metrics import RunMetrics, btc, ratio_pct, usdt
from perpex.sim.scenario_model import Scenario
from perpex.sim.token_desk import DeepBook, TokenDesk
from perpex.sim.world import MarketWorld

DEPTH_BAND_PPM: Final = 10_000  # "book depth within 1 % of the mid"
DEPTH_LEVELS: Final = 1_000  # levels read per side for it (makers quote far fewer)


@dataclass(frozen=True)
class SimResult:
    """What a run returns: the summary (deterministic), where its files are, its wall time."""

    summary: dict[str, Any]
    out_dir: Path | None
    events_path: Path | None
    report_path: Path | None
    wall_seconds: float


class _Samples:
    """One row per step, preallocated (`SAMPLE_COLUMNS`)."""

    def __init__(self, n: int) -> None:
        self.columns: dict[str, np.ndarray[Any, Any]] = {
            name: np.zeros(n, dtype=np.bool_ if name == "makers_away" else np.int64)
            for name, _ in SAMPLE_COLUMNS
        }

    def rows(self) -> list[tuple[Any, ...]]:
        cols = [self.columns[name].tolist() for name, _ in SAMPLE_COLUMNS]
        return list(zip(*cols, strict=True))


def _depth_1pct(world: MarketWorld) -> tuple[int, int]:
    bid, ask = world.best_bid(), world.best_ask()
    mid = world.mark_ticks if bid is None or ask is None else (bid + ask) // 2
    if mid <= 0:
        return 0, 0
    low = mid * (PPM - DEPTH_BAND_PPM) // PPM
    high = -(-mid * (PPM + DEPTH_BAND_PPM) // PPM)
    bids, asks = world.depth(DEPTH_LEVELS)
    bid_lots = sum(q for p, q in bids if p >= low)
    ask_lots = sum(q for p, q in asks if p <= high)
    return bid_lots, ask_lots


def run(
    scenario: Scenario,
    seed: int = 0,
    strategy: Strategy | type[Strategy] | str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    *,
    data: str | None = None,
    report: bool = True,
    check_invariants: bool = False,
    on_step: Callable[[int, list[Event]], None] | None = None,
) -> SimResult:
    """Run `scenario` with `seed`; write the event log and the report to `out` (if given):
    ``out/events/`` (the engine's events, the samples, entries, stops, tokens and meta.json;
    see `perpex.sim.events_out`) and ``out/report.html``, built from that log alone.

    `data` replaces a replay's candles with a file of the user's (the CLI's ``--data``).
    `check_invariants` submits the agents' commands one at a time and checks the exchange's
    invariants (conservation, fund >= 0, books) after every command: slow, for tests.
    """
    wall_start = time.perf_counter()
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    path = build_path(scenario, seed, data)
    n = len(path)
    times = path.time_ns.tolist()
    targets = path.price_ticks.tolist()
    indexes = fed_index(path).tolist()
    gaps = path.gaps.tolist()
    ex = build_exchange(scenario, times[0])
    symbol = scenario.symbol
    spec = ex.engine.state.markets[symbol].spec
    world = MarketWorld(ex, symbol, path.step_ns)
    makers, others, strat, traders = build_agents(
        scenario, ex, path, strategy_instance(scenario, strategy)
    )
    agents: list[Agent] = ([makers] if makers is not None else []) + others
    metrics = RunMetrics(symbol, spec.atoms_per_tick_lot, ex.engine.state.funds.fund_atoms(symbol))
    out_dir = Path(out) if out is not None else None
    writer = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        clear_run_dir(out_dir)  # a previous run's files (its tokens table) must not outlive it
        writer = EventWriter(out_dir)
    samples = _Samples(n)
    market = ex.engine.state.markets[symbol]
    commands = 0
    desk = TokenDesk(ex, scenario, n) if scenario.tokens is not None else None
    deep = (
        DeepBook(spec, scenario.tokens, indexes[0])
        if scenario.tokens is not None and scenario.tokens.frictionless
        else None
    )

    submit_all = ex.submit
    if check_invariants:

        def submit_all(batch: Sequence[Command]) -> list[list[Event]]:  # type: ignore[misc]
            results = []
            for command in batch:
                results.extend(ex.submit([command]))
                ex.check_invariants()
            return results

    def submit(batch: list[Command]) -> None:
        nonlocal commands
        if batch:
            commands += len(batch)
            submit_all(batch)

    # before the first step: the first index (a mark exists), then everyone's setup
    seeds = np.random.SeedSequence([seed, 0x5E1A]).spawn(len(agents))
    world.advance(0, times[0], targets[0], indexes[0], gaps[0])
    submit([UpdateIndex(symbol, indexes[0])])
    world.refresh()
    if deep is not None:
        submit(deep.start())
    for agent, child in zip(agents, seeds, strict=True):
        submit(agent.start(world, np.random.default_rng(child)))
    setup_events = ex.take_events()
    for agent in agents:
        agent.observe(setup_events)
    metrics.observe(0, times[0], setup_events)
    if writer is not None:
        writer.write(0, times[0], setup_events)
    event_count = len(setup_events)

    bar = _Progress(n, times[0], times[-1] + path.step_ns) if progress else None
    cols = samples.columns
    fund = ex.engine.state.funds
    strat_equity = 0
    for i in range(n):
        t = times[i]
        if i:
            submit([AdvanceClock(t)])
            world.advance(i, t, targets[i], indexes[i], gaps[i])
        if deep is not None:
            submit(deep.step(world))
        if makers is not None:
            submit(makers.step(world))
        submit([UpdateIndex(symbol, indexes[i])])
        world.refresh()
        if i == 0 and desk is not None:  # on the makers' first ladders: pools trade the book
            submit(desk.setup(world))
            world.refresh()
        for agent in others:
            submit(agent.step(world))
            world.refresh()
        events = ex.take_events()
        for agent in agents:
            agent.observe(events)
        metrics.observe(i, t, events)
        if desk is not None:
            if i == 0:
                desk.check_setup(events)
            desk.metrics.observe(events)
            desk.sample(i, world)
        if writer is not None:
            writer.write(i, t, events)
        if on_step is not None:
            on_step(i, events)
        event_count += len(events)
        # samples
        bid_lots, ask_lots = _depth_1pct(world)
        if strat is not None:
            strat_equity = world.position("strategy").equity_atoms
        cols["step"][i] = i
        cols["time_ns"][i] = t
        cols["target_ticks"][i] = targets[i]
        cols["index_ticks"][i] = indexes[i]
        cols["mark_ticks"][i] = market.mark_ticks
        cols["last_ticks"][i] = market.last_trade_ticks or 0
        cols["open_interest_lots"][i] = metrics.open_interest_lots
        cols["insurance_fund_atoms"][i] = fund.fund_atoms(symbol)
        cols["depth_bid_lots_1pct"][i] = bid_lots
        cols["depth_ask_lots_1pct"][i] = ask_lots
        cols["funding_rate_e8"][i] = market.last_funding_rate_e8 or 0
        cols["funding_paid_cum_atoms"][i] = metrics.funding_paid_atoms
        cols["strategy_equity_atoms"][i] = strat_equity
        cols["makers_away"][i] = gaps[i]
        if bar is not None and (i % 50 == 0 or i == n - 1):
            bar.update(i + 1, t, commands)
    if bar is not None:
        bar.close()
    if check_invariants:
        ex.check_invariants()

    if strat is not None and strat.ctx is not None:
        commands += strat.ctx.commands  # the strategy's facade calls: one command each
    summary = _summary(scenario, seed, ex, metrics, samples, strat, commands, event_count)
    if desk is not None:  # only then: a run without tokens sums up exactly as it always did
        summary["tokens"] = desk.summary(samples)
    report_path = None
    events_path = None
    if out_dir is not None and writer is not None:
        # The event log holds all the report needs: the engine's events, then the simulator's
        # own tables (the depth chart's samples cannot be had from the events without
        # replaying the book), then meta.json, last.
        writer.close()
        events_path = writer.dir
        writer.table(SAMPLES_TABLE, SAMPLE_COLUMNS, samples.rows())
        entries = traders.entries if traders is not None else []
        writer.table(
            ENTRIES_TABLE,
            ENTRY_COLUMNS,
            [tuple(getattr(e, name) for name, _ in ENTRY_COLUMNS) for e in entries],
        )
        writer.table(STOPS_TABLE, STOP_COLUMNS, metrics.stop_rows)
        if desk is not None:
            writer.table(TOKENS_TABLE, token_columns(desk.names), desk.rows(samples))
        meta: dict[str, Any] = {
            "scenario": scenario.name,
            "question": scenario.question,
            "seed": seed,
            "symbol": symbol,
            "tick_size": str(spec.tick_size),
            "step_size": str(spec.step_size),
            "atoms_per_unit": ATOMS_PER_UNIT,
            "atoms_per_tick_lot": spec.atoms_per_tick_lot,
            "start_ns": times[0],
            "end_ns": times[-1] + path.step_ns,
            "step_ns": path.step_ns,
            "mark_price": scenario.exchange.mark_price,
            "has_strategy": strat is not None,
            "strategy_deposit_atoms": round(scenario.strategy.deposit * ATOMS_PER_UNIT)
            if strat is not None
            else 0,
            "summary": summary,
        }
        if desk is not None:  # the report's tokens section reads the setting here
            meta["tokens"] = desk.setting()
        writer.finish(meta)
        if report:
            from perpex.report import build_report

            report_path = build_report(out_dir)
    return SimResult(summary, out_dir, events_path, report_path, time.perf_counter() - wall_start)


def _summary(
    scenario: Scenario,
    seed: int,
    ex: Exchange,
    m: RunMetrics,
    samples: _Samples,
    strat: StrategyAgent | None,
    commands: int,
    events: int,
) -> dict[str, Any]:
    state = ex.engine.state
    symbol = scenario.symbol
    spec = state.markets[symbol].spec
    k = spec.atoms_per_tick_lot
    mark = state.markets[symbol].mark_ticks
    # non-recourse: an account whose equity is below zero (its wallet plus what it holds)
    below = 0
    bad_debt = 0
    for acct in state.accounts.values():
        equity = acct.wallet.balance
        for pos in acct.positions.values():
            equity += pos.margin.balance + pos.size_lots * mark * k - pos.cost_atoms
        if equity < 0:
            below += 1
            bad_debt -= equity
    oi = samples.columns["open_interest_lots"]
    last = samples.columns["last_ticks"]
    traded = last[last > 0]
    liq_total = m.long_liquidated_notional_atoms + m.short_liquidated_notional_atoms
    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "steps": len(oi),
        "liquidations": m.liquidations,
        "long_liquidations": m.liquidations_long,
        "short_liquidations": m.liquidations_short,
        "liquidated_notional": usdt(liq_total),
        "long_liquidated_notional": usdt(m.long_liquidated_notional_atoms),
        "short_liquidated_notional": usdt(m.short_liquidated_notional_atoms),
        "long_share_pct": ratio_pct(m.long_liquidated_notional_atoms, liq_total),
        "insurance_fund_start": usdt(m.fund_start_atoms),
        "insurance_fund_min": usdt(m.fund_min_atoms),
        "insurance_fund_end": usdt(m.insurance_fund_atoms),
        "adl_events": m.adl_events,
        "adl_notional": usdt(m.adl_notional_atoms),
        "bad_debt": usdt(bad_debt),
        "funding_paid": usdt(m.funding_paid_atoms),
        "stop_orders_triggered": m.stops_triggered,
        "stop_slippage_mean": round(m.stop_slippage_mean_pct(), 4),
        "open_interest_start": btc(int(oi[0]), spec.step_size) if len(oi) else 0.0,
        "open_interest_min": btc(int(oi.min()), spec.step_size) if len(oi) else 0.0,
        "open_interest_end": btc(int(oi[-1]), spec.step_size) if len(oi) else 0.0,
        "accounts_below_zero": below,
        "last_price_low": float(spec.price_to_decimal(int(traded.min()))) if len(traded) else 0.0,
        "last_price_high": float(spec.price_to_decimal(int(traded.max()))) if len(traded) else 0.0,
        "mark_price_low": float(spec.price_to_decimal(int(samples.columns["mark_ticks"].min()))),
        "traded_notional": usdt(m.traded_notional_atoms),
        "strategy_pnl": 0.0,
        "strategy_max_drawdown": 0.0,
        "strategy_liquidations": m.strategy_liquidations,
        "strategy_stops_triggered": m.strategy_stops,
        "commands": commands,
        "events": events,
        "state_hash": ex.state_hash(),
    }
    if strat is not None:
        curve = samples.columns["strategy_equity_atoms"]
        deposit = round(scenario.strategy.deposit * ATOMS_PER_UNIT)
        summary["strategy_pnl"] = usdt(int(curve[-1]) - deposit)
        peak = np.maximum.accumulate(np.maximum(curve, deposit))
        drawdown = (peak - curve) / peak
        summary["strategy_max_drawdown"] = round(float(drawdown.max()) * 100.0, 4)
    return summary


class _Progress:
    """A rich progress bar on stderr: simulated time, commands per second, ETA."""

    def __init__(self, steps: int, start_ns: int, end_ns: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.start_ns = start_ns
        self.wall = time.perf_counter()
        self.progress = Progress(
            TextColumn("[bold]simulating"),
            BarColumn(),
            TextColumn("{task.fields[sim_time]}"),
            TextColumn("{task.fields[rate]} commands/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.task = self.progress.add_task("run", total=steps, sim_time="", rate="0")
        self.progress.start()

    def update(self, done: int, time_ns: int, commands: int) -> None:
        from perpex.core.funding import format_utc

        elapsed = max(time.perf_counter() - self.wall, 1e-9)
        self.progress.update(
            self.task,
            completed=done,
            sim_time=format_utc(time_ns)[:16].replace("T", " "),
            rate=f"{commands / elapsed:,.0f}",
        )

    def close(self) -> None:
        self.progress.stop()


def clear_run_dir(path: Path) -> None:
    """Remove a previous run's files from `path` (only the files a run writes: its event log
    and report, and the tables an older run kept beside its log)."""
    for name in ("samples.parquet", "entries.parquet", "stops.parquet", "tokens.parquet",
                 "meta.json", "report.html"):  # fmt: skip
        (path / name).unlink(missing_ok=True)
    shutil.rmtree(path / EVENTS_DIR, ignore_errors=True)


__all__ = ["SimResult", "clear_run_dir", "run"]
