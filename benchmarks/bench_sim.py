"""The simulator: a strategy backtest and a crash replay, against the plain book of the same run.

Rows (ratio = rate / the plain order book's ops/s of `bench_edge`, measured here, because our
machines differ threefold in absolute speed):

- **strategy backtest**: the 10x EMA cross (`perpex.sim.strategies.EmaCross`: EMA 10/30 of
  bar closes, always in the market, market orders, a stop at entry 3 % away) on 200,000
  one-minute bars of a seeded random walk from 30,000 with 0.15 % sigma per bar, a crash of
  -5.5 % a bar for 5 bars at the middle and a squeeze of +5.5 % a bar for 5 bars at three
  quarters; one maker requoting a 10-level ladder (one `MassQuote`) every bar; liquidation,
  funding and stops active. Goal >= 40,000 bars/s on the AMD EPYC machine of
  docs/benchmarks.md (about 0.037 of its plain-book row). The strategy's liquidations and stops
  are in the summary (`strategy_liquidations`, `strategy_stops_triggered`), printed in the
  row. Fees are 0 here (see `backtest_scenario`).
- **crash replay**: the shipped `covid-2020-03-12` (10,000 leveraged traders, 4 makers,
  momentum and noise takers, 1-minute steps over 36 hours): wall time (goal <= 30 s on the
  AMD machine) and engine commands per second.

Both run once (they are long; the variance between runs is small next to their length), with
no files written and no progress bar. Each also reports the process's CPU time: on a shared
machine, wall time moves with the other jobs' load and CPU time much less.
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.bench_edge import generate, run_plain
from benchmarks.bench_engine import best_of
from perpex.sim.agents.config import MakerConfig, StrategyConfig
from perpex.sim.runner import run as simulate
from perpex.sim.scenario import load_scenario
from perpex.sim.scenario_model import (
    AgentsSection,
    ExchangeSection,
    PathSection,
    Scenario,
    ShockSpec,
)
from perpex.sim.strategies import EmaCross

BARS = 200_000
CRASH_PCT = 100.0 * (1 - 0.945**5)  # -5.5 % a bar for 5 bars
SQUEEZE_PCT = 100.0 * (1.055**5 - 1)  # +5.5 % a bar for 5 bars


def backtest_scenario(bars: int = BARS) -> Scenario:
    return Scenario(
        name="bench-ema-cross",
        question="How fast does a 10x EMA cross backtest through the whole exchange?",
        path=PathSection(
            kind="gbm",
            start="2024-01-01T00:00:00Z",
            start_price=30_000.0,
            steps=bars - 1,  # the start and bars - 1 moves: `bars` bars
            step_seconds=60.0,
            sigma=0.0015,
        ),
        shocks=(
            ShockSpec("drop", at=str(60 * (bars // 2)), percent=CRASH_PCT, minutes=5.0),
            ShockSpec("pump", at=str(60 * (3 * bars // 4)), percent=SQUEEZE_PCT, minutes=5.0),
        ),
        # No fees: at 10x a taker fee of 0.05 % costs 1 % of equity a flip, and the EMA cross
        # flips every few dozen bars, so with fees it spends its deposit in the first few
        # thousand bars and idles through the rest (and the crash). Without, it trades the
        # whole run, which is the work this benchmark is meant to time.
        exchange=ExchangeSection(insurance_fund=1_000_000.0, maker_fee=0.0, taker_fee=0.0),
        agents=AgentsSection(makers=MakerConfig(count=1, levels=10, size_scale=0.05)),
        strategy=StrategyConfig(deposit=10_000.0, bar_steps=1),
    )


def row(name: str, metric: str, value: float, baseline: float | None, ratio: float | None,
        goal: str) -> dict[str, Any]:  # fmt: skip
    return {
        "benchmark": name,
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
    }


def run_rows(bars: int = BARS) -> list[dict[str, Any]]:
    ops = generate()
    plain_s, _ = best_of(lambda: None, lambda _: run_plain(ops))
    plain_rate = len(ops) / plain_s

    strategy = EmaCross(fast=10, slow=30, leverage=10, stop=0.03)
    started, started_cpu = time.perf_counter(), time.process_time()
    backtest = simulate(backtest_scenario(bars), seed=1, strategy=strategy, progress=False)
    backtest_s = time.perf_counter() - started
    backtest_cpu_s = time.process_time() - started_cpu
    s = backtest.summary
    # the summary reports the strategy's own stops and liquidations (this one mostly bleeds
    # out in whipsaws: a 10x EMA cross on a random walk; the figures say what happened)
    assert {"strategy_stops_triggered", "strategy_liquidations", "strategy_pnl"} <= set(s)
    bars_rate = bars / backtest_s

    started, started_cpu = time.perf_counter(), time.process_time()
    crash = simulate(load_scenario("covid-2020-03-12"), seed=0, progress=False)
    crash_s = time.perf_counter() - started
    crash_cpu_s = time.process_time() - started_cpu
    c = crash.summary
    label = f"{bars:,} 1-min bars, 1 maker, liquidation + funding + stops"
    return [
        row(
            "sim: plain book (bench_edge's workload)", "ops/s", plain_rate, plain_rate, 1.0,
            "the baseline",
        ),
        row(
            f"sim: EMA-cross backtest ({label})", "bars/s", bars_rate, plain_rate,
            bars_rate / plain_rate, ">= 40,000 bars/s on the AMD (0.037x)",
        ),
        row(
            "sim: the same backtest per CPU second of this process (steadier than wall time "
            "when other jobs share the machine)", "bars/CPU-s", bars / backtest_cpu_s,
            plain_rate, bars / backtest_cpu_s / plain_rate, "",
        ),
        row(
            f"sim: backtest engine commands ({s['commands']:,} commands; the strategy: "
            f"{strategy.entries:,} entries, {s['strategy_stops_triggered']} stops, "
            f"{s['strategy_liquidations']} liquidations, PnL {s['strategy_pnl']:,.0f} USDT)",
            "commands/s", s["commands"] / backtest_s, plain_rate,
            s["commands"] / backtest_s / plain_rate, "",
        ),
        row(
            f"sim: covid-2020-03-12 replay ({c['steps']:,} steps, 10,000 traders, "
            f"{c['liquidations']:,} liquidations)", "wall s", crash_s, None, None,
            "<= 30 s on the AMD",
        ),
        row(
            "sim: covid replay, CPU time of this process", "CPU s", crash_cpu_s, None, None, "",
        ),
        row(
            f"sim: covid replay engine commands ({c['commands']:,} commands, "
            f"{c['events']:,} events)", "commands/s", c["commands"] / crash_s, plain_rate,
            c["commands"] / crash_s / plain_rate, "",
        ),
    ]  # fmt: skip


def run() -> list[dict[str, Any]]:
    return run_rows()


if __name__ == "__main__":  # python -m benchmarks.bench_sim [BARS]
    import sys

    for r in run_rows(int(sys.argv[1]) if len(sys.argv) > 1 else BARS):
        ratio = "" if r["ratio"] is None else f", ratio {r['ratio']:.4f}x"
        print(f"{r['benchmark']}: {r['value']:,.1f} {r['metric']}{ratio}")
