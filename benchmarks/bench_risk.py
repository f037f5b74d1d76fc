"""Risk screen on one mark tick: the vector screen against its scalar twin.

Workload, fixed so that figures compare across commits (`numpy.random.default_rng(7)`):
100,000 accounts, each with a position in each of 10 symbols = 1,000,000 open positions. Every
symbol uses the default BTCUSDT bracket table (`perpex.defaults.default_markets()` compiled with
`compile_market`, renamed BTC0USDT..BTC9USDT) at a mark near 60,000 USDT. For each position a
bracket is drawn uniformly from all 12 and the notional uniformly inside it (the top brackets
hold positions of up to 30,000 BTC: more than one order's max quantity, inside the market's
proven max position); long or short at random; a leverage the bracket allows; the mark moved for or
against the position by up to 55 % of its initial margin; 30 % isolated with the initial
margin, 70 % cross with a wallet of 0.5-1.5x the account's cross initial margin, so that about
0.5 % of positions and accounts are liquidatable at the tick.

Timing: the figure is the best of 7 ticks, each a full `Screener.screen` over all 10 symbols
(work arrays reused between ticks, as the engine would). The scalar twin is timed on the first
10,000 accounts (100,000 positions) and scaled linearly x10; both must return the same answer
on that subset. The cyclic garbage collector is off while timing.

A second row times what one symbol's mark tick costs when the other nine symbols' cross sums
come from a cache (`Screener.cross_sums`, `others=`): 100,000 positions screened against all
100,000 accounts, with the scalar twin timed on the same input (no scaling).
"""

from __future__ import annotations

import gc
import time
from dataclasses import replace

import numpy as np

from perpex.core.markets import MarketSpec, compile_market
from perpex.core.risk import (
    MarkedStore,
    PositionStore,
    Screener,
    cross_sums_scalar,
    screen_scalar,
)
from perpex.defaults import default_markets

SEED = 7
ACCOUNTS = 100_000
SYMBOLS = 10
ISOLATED_SHARE = 0.3
MARK_TICKS = 600_000  # 60,000.0 USDT at tick 0.1
REPETITIONS = 7
SCALAR_ACCOUNTS = 10_000
LIMIT = 1_000


def btc_specs() -> list[MarketSpec]:
    btc = next(m for m in default_markets() if m.symbol == "BTCUSDT")
    return [compile_market(replace(btc, symbol=f"BTC{i}USDT")) for i in range(SYMBOLS)]


def build_workload() -> tuple[list[MarkedStore], np.ndarray]:
    rng = np.random.default_rng(SEED)
    specs = btc_specs()
    wallets = np.zeros(ACCOUNTS, np.int64)
    markets: list[MarkedStore] = []
    for i, spec in enumerate(specs):
        k = spec.atoms_per_tick_lot
        mark = MARK_TICKS + 10 * i
        floors = np.array([b.floor_atoms for b in spec.brackets], np.int64)
        caps = np.array([b.cap_atoms for b in spec.brackets], np.int64)
        max_lev = np.array([b.max_leverage for b in spec.brackets], np.int64)
        bracket = rng.integers(0, len(floors), ACCOUNTS)
        lo = np.maximum(floors[bracket], 10 * 10**6)  # at least 10 USDT
        notional = lo + (rng.random(ACCOUNTS) * (caps[bracket] - lo)).astype(np.int64)
        size = np.maximum(notional // (mark * k), 1)
        size *= np.where(rng.random(ACCOUNTS) < 0.5, 1, -1)
        leverage = rng.integers(1, max_lev[bracket] + 1)
        # The mark has moved against (or for) the position by up to 55 % of its initial margin.
        adverse = rng.uniform(-0.55, 0.55, ACCOUNTS) / leverage
        entry = (mark * (1 + np.sign(size) * adverse)).astype(np.int64)
        cost = size * entry * k
        im = np.abs(cost) // leverage + 1
        isolated = rng.random(ACCOUNTS) < ISOLATED_SHARE
        margin = np.where(isolated, im, 0)
        wallets += np.where(isolated, 0, (im * rng.uniform(0.5, 1.5, ACCOUNTS)).astype(np.int64))
        store = PositionStore.from_arrays(
            np.arange(ACCOUNTS), size, cost, isolated, margin, leverage
        )
        markets.append(MarkedStore(store, spec, mark))
    return markets, wallets


def subset(markets: list[MarkedStore], accounts: int) -> list[MarkedStore]:
    out = []
    for store, spec, mark in markets:
        n = len(store)
        keep = store.account_idx[:n] < accounts
        part = PositionStore.from_arrays(
            store.account_idx[:n][keep],
            store.size_lots[:n][keep],
            store.cost_atoms[:n][keep],
            store.isolated[:n][keep],
            store.margin_atoms[:n][keep],
            store.leverage[:n][keep],
        )
        out.append(MarkedStore(part, spec, mark))
    return out


def best_ms(fn: object, repetitions: int) -> float:
    assert callable(fn)
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repetitions):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
    finally:
        gc.enable()
    return best * 1e3


def run() -> list[dict[str, object]]:
    markets, wallets = build_workload()
    positions = sum(len(m.store) for m in markets)
    screener = Screener()
    result = screener.screen(markets, wallets, LIMIT)
    assert result.vectorized
    vector_ms = best_ms(lambda: screener.screen(markets, wallets, LIMIT), REPETITIONS)

    small = subset(markets, SCALAR_ACCOUNTS)
    small_wallets = wallets[:SCALAR_ACCOUNTS].copy()
    small_positions = sum(len(m.store) for m in small)
    expected = screen_scalar(small, small_wallets, LIMIT)
    got = Screener().screen(small, small_wallets, LIMIT)
    assert got.liquidatable == expected.liquidatable and got.total == expected.total
    scalar_ms = best_ms(lambda: screen_scalar(small, small_wallets, LIMIT), 1)
    scalar_scaled_ms = scalar_ms * positions / small_positions

    ticking, resting = markets[:1], markets[1:]
    cached = screener.cross_sums(resting, ACCOUNTS)
    one = screener.screen(ticking, wallets, LIMIT, cached)
    assert one.vectorized and one.total <= result.total
    one_ms = best_ms(lambda: screener.screen(ticking, wallets, LIMIT, cached), REPETITIONS)
    cached_scalar = cross_sums_scalar(resting, ACCOUNTS)
    one_expected = screen_scalar(ticking, wallets, LIMIT, cached_scalar)
    assert one.liquidatable == one_expected.liquidatable and one.total == one_expected.total
    one_scalar_ms = best_ms(lambda: screen_scalar(ticking, wallets, LIMIT, cached_scalar), 1)
    one_positions = len(ticking[0].store)
    return [
        {
            "benchmark": (
                f"risk screen, one mark tick ({positions:,} positions, {ACCOUNTS:,} accounts, "
                f"{SYMBOLS} symbols, {result.total:,} liquidatable; scalar timed on "
                f"{small_positions:,} positions and scaled x{positions // small_positions})"
            ),
            "metric": "ms/tick",
            "value": vector_ms,
            "baseline": scalar_scaled_ms,
            "ratio": scalar_scaled_ms / vector_ms,
            "goal": "<= 15 ms per tick for 1M positions",
        },
        {
            "benchmark": (
                f"risk screen, one symbol ticks ({one_positions:,} positions, {ACCOUNTS:,} "
                f"accounts, the other {SYMBOLS - 1} symbols' cross sums cached, "
                f"{one.total:,} liquidatable)"
            ),
            "metric": "ms/tick",
            "value": one_ms,
            "baseline": one_scalar_ms,
            "ratio": one_scalar_ms / one_ms,
            "goal": "none set (the engine's per-symbol case)",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(
            f"{row['benchmark']}: vector {row['value']:.2f} {row['metric']}, "
            f"scalar {row['baseline']:.0f} {row['metric']}, ratio {row['ratio']:.0f}x "
            f"(goal {row['goal']})"
        )
