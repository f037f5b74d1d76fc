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

Two more rows time the engine itself (`engine_rows`, workload and method at `build_engine`):
one `UpdateIndex` through `Engine.apply` over the same 1,000,000 positions, made safe so that
nothing is liquidated, on the vector path (the `RiskMirror`) and on the scalar loop, and the
one-off cost of building the mirror from the engine's objects.

The last row (`adl_rows`, workload at `ADL_SYMBOL`) times one liquidation that goes entirely to
auto-deleveraging against the 100,001 holders of one symbol of that engine: the ADL queue
ranked from the mirror (`adl.AdlQueueVector`, only the head it needs) against the scalar
ranking of every holder (`adl.adl_queue`).
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
from dataclasses import replace

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.engine import Account, Engine, Position
from perpex.core.liquidation import VECTOR_MIN_HOLDERS
from perpex.core.markets import MarketSpec, compile_market
from perpex.core.messages import (
    AutoDeleveraged,
    Event,
    LiquidationTriggered,
    MarginCall,
    UpdateIndex,
)
from perpex.core.risk import (
    MarkedStore,
    PositionColumns,
    PositionStore,
    RiskMirror,
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


def screen_rows() -> list[dict[str, object]]:
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
    rows: list[dict[str, object]] = [
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
    return rows


# -- the engine's pass -------------------------------------------------------------------------
#
# Workload: the same draws as `build_workload` (seed 7; 100,000 accounts x 10 BTC-like symbols =
# 1,000,000 positions, every bracket, 30 % isolated) made safe: every isolated margin and every
# cross wallet is topped up so that equity >= MM x (1.3 .. 3.0) at the marks, so a 0.1 % mark
# move liquidates nobody (checked) while a few accounts cross the 80 % margin-call level. A
# house account takes the other side of each symbol's net position, so long lots = short lots.
#
# Fast path (benchmarks only): 1M positions through `Engine.apply` would take minutes, so the
# engine's objects are written directly (`Account`, `Position`, balances, `holders`, the ledger
# balanced against EXTERNAL and SETTLEMENT) and `check_invariants` proves the result is a valid
# engine state. The timed part is the real thing: `engine.apply(UpdateIndex(...))`, i.e. the
# index event, the liquidation queue, margin calls and the screen of `Liquidator.run_pass`.
# Ticks go round the 10 symbols, each moving its mark 0.1 % away from its start and back. The
# vector path (`vector_min_holders` = default 512) is timed after one warm-up tick (which
# builds the mirror from the engine state: reported as its own row); the scalar path
# (`vector_min_holders` above any holder count) on the same engine. Figures: the median tick.

ENGINE_TICKS_VECTOR = 40
ENGINE_TICKS_SCALAR = 3
MOVE_PPM = 1_000  # 0.1 % per tick
HOUSE = "~house"  # sorts after every trader name


def build_engine() -> Engine:
    """1,000,000 open positions over 100,000 accounts, written straight into an Engine."""
    rng = np.random.default_rng(SEED)
    markets, wallets = build_workload()
    specs = [m.spec for m in markets]
    marks = {m.spec.symbol: m.mark_ticks for m in markets}
    # Top up: equity >= MM x buffer, buffer uniform in [1.3, 3.0] (exact figures from the mirror).
    columns: dict[str, PositionColumns] = {}
    for store, spec, _ in markets:
        n = len(store)
        columns[spec.symbol] = (
            store.account_idx[:n].tolist(),
            store.size_lots[:n].tolist(),
            store.cost_atoms[:n].tolist(),
            store.isolated[:n].tolist(),
            store.margin_atoms[:n].tolist(),
            store.leverage[:n].tolist(),
        )
    mirror = RiskMirror.from_state(specs, wallets.tolist(), columns)
    wallet_top_up = np.zeros(ACCOUNTS, np.int64)
    for store, spec, _ in markets:
        figures = mirror.figures(spec.symbol, marks)
        assert figures is not None
        buffer = rng.uniform(1.3, 3.0, len(figures.account_idx))
        wanted = (figures.maint_margin_atoms * buffer).astype(np.int64)
        short_by = np.maximum(wanted - figures.equity_atoms, 0)
        iso = figures.isolated
        by_account = np.zeros(ACCOUNTS, np.int64)
        by_account[figures.account_idx[iso]] = short_by[iso]
        n = len(store)
        store.margin_atoms[:n] += np.where(store.isolated[:n], by_account[store.account_idx[:n]], 0)
        cross = figures.account_idx[~iso]
        wallet_top_up[cross] = np.maximum(wallet_top_up[cross], short_by[~iso])
    wallets = wallets + wallet_top_up

    engine = Engine(specs, "index")
    names = [f"a{i:06d}" for i in range(ACCOUNTS)]
    accounts = [Account(name) for name in names]
    for acct, atoms in zip(accounts, wallets.tolist(), strict=True):
        acct.wallet.balance = atoms
        engine.accounts[acct.name] = acct
    house = engine.accounts[HOUSE] = Account(HOUSE)
    house.wallet.balance = 10**18  # a trillion USDT behind the house's side
    total_cost = 0
    for store, spec, mark in markets:
        symbol = spec.symbol
        market = engine.markets[symbol]
        market.index_ticks = market.mark_ticks = mark
        n = len(store)
        rows = zip(
            store.account_idx[:n].tolist(),
            store.size_lots[:n].tolist(),
            store.cost_atoms[:n].tolist(),
            store.isolated[:n].tolist(),
            store.margin_atoms[:n].tolist(),
            store.leverage[:n].tolist(),
            strict=True,
        )
        net_lots = 0
        for idx, size, cost, isolated, margin, leverage in rows:
            acct = accounts[idx]
            pos = acct.positions[symbol] = Position(acct.name, symbol, leverage)
            pos.isolated, pos.size_lots, pos.cost_atoms = isolated, size, cost
            pos.margin.balance = margin
            net_lots += size
            total_cost += cost
        holders = engine.holders[symbol]
        holders.update(names)
        if net_lots:  # the house holds the other side at the mark
            pos = house.positions[symbol] = Position(HOUSE, symbol, 1)
            pos.size_lots = -net_lots
            pos.cost_atoms = -net_lots * mark * spec.atoms_per_tick_lot
            total_cost += pos.cost_atoms
            holders.add(HOUSE)
    held = sum(
        a.wallet.balance + sum(p.margin.balance for p in a.positions.values())
        for a in engine.accounts.values()
    )
    ledger = engine.ledger
    ledger.settlement.balance = -total_cost
    ledger.external.balance = -(held + ledger.settlement.balance)
    engine.check_invariants()
    return engine


def tick_ms(engine: Engine, ticks: int, start: int) -> tuple[list[float], list[list[Event]]]:
    """Time `ticks` mark ticks; tick i moves symbol i % 10 away from its start (or back)."""
    symbols = sorted(engine.markets)
    times: list[float] = []
    events: list[list[Event]] = []
    gc.disable()
    try:
        for i in range(start, start + ticks):
            symbol = symbols[i % len(symbols)]
            base = MARK_TICKS + 10 * int(symbol[3])
            away = (i // len(symbols)) % 2 == 0
            mark = base - base * MOVE_PPM // 1_000_000 if away else base  # longs lose first
            command = UpdateIndex(symbol, mark)
            began = time.perf_counter()
            events.append(engine.apply(command))
            times.append((time.perf_counter() - began) * 1e3)
    finally:
        gc.enable()
    return times, events


def engine_rows(engine: Engine, setup_s: float) -> list[dict[str, object]]:
    positions = sum(len(h) for h in engine.holders.values())
    liquidator = engine.liquidator
    assert liquidator.vector_min_holders <= ACCOUNTS
    # Warm-up tick: the first vector screen builds the mirror from the engine state.
    build, _ = tick_ms(engine, 1, 0)
    assert liquidator.mirror is not None
    vector, vector_events = tick_ms(engine, ENGINE_TICKS_VECTOR - 1, 1)
    # Back to the state after the warm-up tick (every symbol at its start, then symbol 0 moved
    # again): the scalar path replays the next ticks and must emit what the vector path did.
    for symbol in sorted(engine.markets):
        engine.apply(UpdateIndex(symbol, MARK_TICKS + 10 * int(symbol[3])))
    tick_ms(engine, 1, 0)
    liquidator.vector_min_holders = 10**9
    scalar, scalar_events = tick_ms(engine, ENGINE_TICKS_SCALAR, 1)
    assert scalar_events == vector_events[:ENGINE_TICKS_SCALAR]
    flat = [e for tick in vector_events for e in tick]
    assert not any(isinstance(e, LiquidationTriggered) for e in flat)
    calls = sum(isinstance(e, MarginCall) for e in flat)
    vector_ms = statistics.median(vector)
    scalar_ms = statistics.median(scalar)
    return [
        {
            "benchmark": (
                f"engine mark tick through Liquidator.run_pass ({positions:,} positions incl. the "
                f"house, {ACCOUNTS:,} accounts, {SYMBOLS} symbols, one symbol ticks 0.1 %, nothing "
                f"liquidatable, {calls} margin calls in {len(vector)} ticks; median tick, vector "
                f"vs scalar path; setup {setup_s:.0f} s)"
            ),
            "metric": "ms/tick",
            "value": vector_ms,
            "baseline": scalar_ms,
            "ratio": scalar_ms / vector_ms,
            "goal": "none set",
        },
        {
            "benchmark": (
                f"risk mirror built from the engine state on the first vector tick "
                f"({positions:,} positions; once per process or restore)"
            ),
            "metric": "ms",
            "value": build[0],
            "baseline": None,
            "ratio": None,
            "goal": "none set",
        },
    ]


# -- one auto-deleveraging event ---------------------------------------------------------------
#
# Workload: the engine of `engine_rows` after its ticks (100,000 accounts, each with a position
# in every symbol; BTC0USDT has 100,001 holders incl. the house). Victims are written into it
# the same way (benchmark-only shortcut): isolated positions of 5 BTC on BTC0USDT on the
# house's side, opened 2 % the wrong side of the mark with 1 % margin, so each is past its
# bankruptcy; the house takes the other side at the same price (lots and cost stay balanced).
# The book holds nothing and the fund is empty, so `Liquidator._liquidate` (what the pass calls
# per account: trigger, cancels, the book, the fund, ADL, settlement) closes the whole
# position by ADL against the other side of the symbol, ranked by PnL% x effective leverage:
# the capped first round (the victim's bankruptcy price is beyond the mark). The vector path
# (the queue from the mirror, `adl.AdlQueueVector`) is timed over `ADL_VECTOR_EVENTS` victims,
# best event; the scalar path (`vector_min_holders` above any holder count: `adl_queue` over
# every holder) on `ADL_SCALAR_EVENTS` more. Before that, the first `ADL_CHECKED` entries of
# both queues for the same victim are compared, and the scalar event's counterparties must be
# the head of the vector queue's first round computed just before it.

ADL_SYMBOL = "BTC0USDT"
ADL_VICTIM_LOTS = 5_000  # 5 BTC
ADL_VECTOR_EVENTS = 7
ADL_SCALAR_EVENTS = 1  # ~1.5 s each
ADL_CHECKED = 1_000


def add_victims(engine: Engine, count: int) -> tuple[list[str], int]:
    """`count` isolated positions past bankruptcy on ADL_SYMBOL, on the house's side (the
    house takes the other side of each, which only reduces its position); returns the names
    and their side."""
    market = engine.markets[ADL_SYMBOL]
    k = market.spec.atoms_per_tick_lot
    house = engine.accounts[HOUSE].positions[ADL_SYMBOL]
    side = 1 if house.size_lots > 0 else -1
    entry = market.mark_ticks * (100 + 2 * side) // 100  # 2 % the wrong way
    size = side * ADL_VICTIM_LOTS
    cost = size * entry * k
    margin = abs(cost) // 100  # 1 %: past bankruptcy
    names = []
    for i in range(count):
        name = f"~victim{i:02d}"
        acct = engine.accounts[name] = Account(name)
        pos = acct.positions[ADL_SYMBOL] = Position(name, ADL_SYMBOL, 20)
        pos.isolated, pos.size_lots, pos.cost_atoms = True, size, cost
        pos.margin.balance = margin
        engine.ledger.external.balance -= margin
        house.size_lots -= size
        house.cost_atoms -= cost
        engine.holders[ADL_SYMBOL].add(name)
        engine.ledger.touched.add(name)
        names.append(name)
    assert house.size_lots * side > 0, "the house only reduces: its cost basis stays a sum"
    engine.ledger.touched.add(HOUSE)
    return names, side


def liquidate_ms(engine: Engine, victim: str) -> tuple[float, list[Event]]:
    events: list[Event] = []
    gc.disable()
    try:
        began = time.perf_counter()
        assert engine.liquidator._liquidate(victim, ADL_SYMBOL, events, set())
        elapsed = time.perf_counter() - began
    finally:
        gc.enable()
    assert any(isinstance(e, AutoDeleveraged) for e in events)
    return elapsed * 1e3, events


def adl_rows(engine: Engine) -> list[dict[str, object]]:
    liquidator = engine.liquidator
    liquidator.vector_min_holders = VECTOR_MIN_HOLDERS
    holders = len(engine.holders[ADL_SYMBOL])  # the house and 100,000 traders
    victims, side = add_victims(engine, ADL_VECTOR_EVENTS + ADL_SCALAR_EVENTS)
    close_side = SELL if side > 0 else BUY
    liquidator.sync_mirror()  # the victims enter the mirror outside the timing
    vector: list[float] = []
    fills = 0
    for name in victims[:ADL_VECTOR_EVENTS]:
        ms, events = liquidate_ms(engine, name)
        vector.append(ms)
        fills += sum(isinstance(e, AutoDeleveraged) for e in events)
    # The same ranking both ways, for the next victim: the head of the whole queue, and the
    # first round's order (the positions whose margin carries one lot's loss).
    victim = engine.accounts[victims[ADL_VECTOR_EVENTS]]
    market = engine.markets[ADL_SYMBOL]
    queue = liquidator._adl_queue_vector(victim, market, close_side)
    assert queue is not None
    scalar_order = liquidator._adl_order_scalar(victim, market, close_side)
    assert list(itertools.islice(queue.walk(), ADL_CHECKED)) == scalar_order[:ADL_CHECKED]
    bankruptcy = liquidator.bankruptcy(victim, victim.positions[ADL_SYMBOL]).limit_ticks
    loss_per_lot = (market.mark_ticks - bankruptcy) * market.spec.atoms_per_tick_lot * -side
    assert loss_per_lot > 0  # the capped first round
    first_round = list(itertools.islice(queue.walk(loss_per_lot), 100))
    liquidator.vector_min_holders = 10**9
    scalar: list[float] = []
    for name in victims[ADL_VECTOR_EVENTS:]:
        ms, events = liquidate_ms(engine, name)
        scalar.append(ms)
        if name == victim.name:
            taken = [e.counterparty_account for e in events if isinstance(e, AutoDeleveraged)]
            assert taken == first_round[: len(taken)]
    engine.check_invariants()
    vector_ms, scalar_ms = min(vector), min(scalar)
    return [
        {
            "benchmark": (
                f"ADL: one liquidation closed by auto-deleveraging, {holders:,} holders of the "
                f"symbol ({ADL_VICTIM_LOTS / 1000:g} BTC {'long' if side > 0 else 'short'} past "
                f"bankruptcy, no book, no fund; {fills / ADL_VECTOR_EVENTS:.1f} counterparties "
                f"per event; best of {ADL_VECTOR_EVENTS} events vector, {ADL_SCALAR_EVENTS} "
                f"scalar)"
            ),
            "metric": "ms/event",
            "value": vector_ms,
            "baseline": scalar_ms,
            "ratio": scalar_ms / vector_ms,
            "goal": "none set",
        }
    ]


def run() -> list[dict[str, object]]:
    rows = screen_rows()  # its workload is freed before the engine's is built
    began = time.perf_counter()
    engine = build_engine()
    rows += engine_rows(engine, time.perf_counter() - began)
    return rows + adl_rows(engine)


if __name__ == "__main__":
    for row in run():
        if row["baseline"] is None:
            print(f"{row['benchmark']}: {row['value']:.0f} {row['metric']}")
            continue
        print(
            f"{row['benchmark']}: vector {row['value']:.2f} {row['metric']}, "
            f"scalar {row['baseline']:.0f} {row['metric']}, ratio {row['ratio']:.0f}x "
            f"(goal {row['goal']})"
        )
