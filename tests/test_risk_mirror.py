"""The engine's liquidation pass on its two twins: the NumPy mirror screen and the scalar loop.

DESIGN.md §5 (a vectorized screen on every mark tick) and STYLE.md ("two implementations of what
is hard to get right"): the same command stream, run once with every symbol screened by the
vector path (`vector_min_holders = 0`) and once with none (`vector_min_holders` above any holder
count), must give the same events, command by command, and the same `state_hash()`. The mirror
is derived state: it never enters the hash or the snapshot, it is rebuilt after `restore()`, and
after every command it equals the engine's objects (`Liquidator.check_mirror`).

Streams: tests/streams.py (quoting, taking, clock and oracle ticks; few liquidations) and
`crash_stream` below: 24 traders with random modes and leverage up to 100x on BTCUSDT and
ETHUSDT trade with each other and a deep-pocketed lp, rest thin ladders, then both indices
jump by up to 6 % a tick, past many bankruptcy prices, with a small insurance fund or none, so
liquidations, fund payments, ADL, cascades, margin calls and queued accounts all occur.
"""

from __future__ import annotations

import random
from typing import Final

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from perpex.core import liquidation
from perpex.core.engine import Engine
from perpex.core.liquidation import LiquidationConfig
from perpex.core.messages import (
    AutoDeleveraged,
    Command,
    Deposit,
    DepositInsurance,
    Event,
    LiquidationTriggered,
    MarginCall,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    TimeInForce,
    UpdateIndex,
)
from perpex.core.risk import MirrorFigures, RiskMirror, ratio_at_least
from perpex.core.units import PPM
from streams import command_stream, default_specs

SPECS: Final = default_specs()
BTC, ETH = "BTCUSDT", "ETHUSDT"
USDT: Final = 10**6  # atoms
NEVER: Final = 10**9  # a holder count no test reaches: always the scalar path
START: Final = {BTC: 1_000_000, ETH: 300_000}  # 100,000.0 and 3,000.00 in ticks
ORDER_LOTS: Final = {BTC: (10, 150), ETH: (300, 4_000)}  # 0.01-0.15 BTC, 0.3-4 ETH


def crash_stream(seed: int, traders: int = 24, ticks: int = 60, whales: int = 0) -> list[Command]:
    """Commands only (the engine is not consulted): setup, trades, ladders, then index jumps.

    The first `whales` traders deposit 20x more and trade 10x larger (into bracket 2 and up).
    """
    rng = random.Random(seed)
    out: list[Command] = []
    fund = rng.choice((0, 0, 50, 500, 5_000))
    if fund:
        out.append(DepositInsurance(fund * USDT))
    out += [UpdateIndex(symbol, START[symbol]) for symbol in (BTC, ETH)]
    out.append(Deposit("lp", 10**9 * USDT))
    out += [SetLeverage("lp", symbol, 1) for symbol in (BTC, ETH)]
    names = [f"t{i:02d}" for i in range(traders)]
    big = set(names[:whales])
    for name in names:
        scale = 20 if name in big else 1
        out.append(Deposit(name, rng.randint(1_000, 20_000) * scale * USDT))
        for symbol in (BTC, ETH):
            if rng.random() < 0.5:
                out.append(SetMarginMode(name, symbol, True))
            out.append(SetLeverage(name, symbol, rng.choice((5, 10, 20, 50, 75))))

    def limit(account: str, symbol: str, side: int, lots: int, price: int) -> PlaceOrder:
        return PlaceOrder(account, symbol, side, OrderType.LIMIT, TimeInForce.GTC, lots, price)

    for _ in range(6 * traders):
        symbol = rng.choice((BTC, ETH))
        maker, taker = rng.sample([*names, "lp"], 2)
        side = rng.choice((1, -1))
        lots = rng.randint(*ORDER_LOTS[symbol]) * (10 if big & {maker, taker} else 1)
        price = START[symbol] * (10_000 + rng.randint(-30, 30)) // 10_000
        out.append(limit(maker, symbol, -side, lots, price))
        out.append(limit(taker, symbol, side, lots, price))
    for _ in range(4 * traders):  # thin ladders, partly from the traders themselves
        symbol = rng.choice((BTC, ETH))
        who = rng.choice([*names, "lp"])
        side = rng.choice((1, -1))
        offset = START[symbol] * rng.randint(5, 480) // 10_000
        price = START[symbol] - offset if side == 1 else START[symbol] + offset
        out.append(limit(who, symbol, side, rng.randint(1, ORDER_LOTS[symbol][1] // 2), price))
    mark = dict(START)
    for _ in range(ticks):
        symbol = rng.choice((BTC, ETH))
        # Mostly small moves (margin calls), now and then a gap of up to 6 % (liquidations).
        step = rng.randint(-60, 60) if rng.random() < 0.4 else rng.randint(-8, 8)
        mark[symbol] = max(START[symbol] // 10, mark[symbol] * (1_000 + step) // 1_000)
        out.append(UpdateIndex(symbol, mark[symbol]))
    return out


def engine(vector_min_holders: int, config: LiquidationConfig | None = None) -> Engine:
    e = Engine(SPECS, "index", liquidation=config)
    e.liquidator.vector_min_holders = vector_min_holders
    return e


def run(
    commands: list[Command], vector_min_holders: int, config: LiquidationConfig | None = None
) -> tuple[Engine, list[list[Event]]]:
    e = engine(vector_min_holders, config)
    return e, [e.apply(c) for c in commands]


# -- the twins agree, command by command -----------------------------------------------------


@pytest.mark.parametrize("seed", range(12))
def test_crash_stream_vector_equals_scalar(seed: int) -> None:
    commands = crash_stream(seed)
    scalar, scalar_events = run(commands, NEVER)
    vector = engine(0)
    for command, expected in zip(commands, scalar_events, strict=True):
        assert vector.apply(command) == expected, command
        vector.liquidator.check_mirror()
    assert vector.state_hash() == scalar.state_hash()
    assert vector.liquidator.mirror is not None  # the vector path was used
    assert scalar.liquidator.mirror is None  # and never on the scalar side
    vector.check_invariants()


def test_crash_streams_are_not_vacuous() -> None:
    """Over the seeds above the pass liquidates, deleverages and calls margin."""
    counts = {"liquidations": 0, "adl": 0, "margin calls": 0}
    for seed in range(12):
        _, events = run(crash_stream(seed), 0)
        flat = [e for per_command in events for e in per_command]
        counts["liquidations"] += sum(isinstance(e, LiquidationTriggered) for e in flat)
        counts["adl"] += sum(isinstance(e, AutoDeleveraged) for e in flat)
        counts["margin calls"] += sum(isinstance(e, MarginCall) for e in flat)
    assert counts["liquidations"] >= 100 and counts["adl"] >= 10 and counts["margin calls"] >= 10, (
        counts
    )


@pytest.mark.parametrize("per_tick", [1, 3])
def test_queued_liquidations_agree(per_tick: int) -> None:
    config = LiquidationConfig(max_liquidations_per_tick=per_tick)
    for seed in range(4):
        commands = crash_stream(seed)
        scalar, scalar_events = run(commands, NEVER, config)
        vector, vector_events = run(commands, 0, config)
        assert vector_events == scalar_events
        assert vector.state_hash() == scalar.state_hash()
        vector.liquidator.check_mirror()


PARTIAL_CONFIGS = [
    LiquidationConfig(partial_from_bracket=2),
    LiquidationConfig(partial_from_bracket=2, partial_fraction_ppm=300_000),
]


@pytest.mark.parametrize("config", PARTIAL_CONFIGS, ids=["to bracket 1", "30 %"])
def test_partial_liquidation_crash_streams(config: LiquidationConfig) -> None:
    """With whales in bracket 2 and partial liquidation on: the twins agree, the partial
    Fill-or-Kill orders happen, and non-recourse holds after every command (no wallet or
    isolated margin below zero, the fund never below zero, the ledger sums to zero)."""
    partial_orders = 0
    for seed in range(8):
        commands = crash_stream(seed, whales=6)
        scalar, scalar_events = run(commands, NEVER, config)
        vector = engine(0, config)
        for command, expected in zip(commands, scalar_events, strict=True):
            got = vector.apply(command)
            assert got == expected, command
            partial_orders += sum(
                isinstance(e, OrderAccepted) and e.time_in_force == TimeInForce.FOK for e in got
            )
            vector.check_invariants()
            assert vector.ledger.insurance.balance >= 0
            for acct in vector.accounts.values():
                assert acct.wallet.balance >= 0, acct.name
                assert all(p.margin.balance >= 0 for p in acct.positions.values()), acct.name
        vector.liquidator.check_mirror()
        assert vector.state_hash() == scalar.state_hash()
    assert partial_orders >= 5


@pytest.mark.parametrize("seed", range(6))
def test_adl_lights_vector_equals_scalar(seed: int) -> None:
    """`Liquidator.adl_quantile` over the mirror (float64 narrowing, exact near ties) gives the
    lights of the scalar ranking for every holder, at every tenth command of a crash stream.
    Twin positions (same size, entry and margin) make exact ties that go by account name."""
    commands = crash_stream(seed, whales=4)
    scalar, vector = engine(NEVER), engine(0)
    lit = 0
    for i, command in enumerate(commands):
        scalar.apply(command)
        vector.apply(command)
        if i % 10 and i != len(commands) - 1:
            continue
        for symbol, holders in scalar.holders.items():
            for name in sorted(holders):
                lights = scalar.liquidator.adl_quantile(name, symbol)
                assert vector.liquidator.adl_quantile(name, symbol) == lights, (i, name)
                lit += lights > 1
    assert lit >= 50


def test_adl_lights_of_exact_twins_go_by_name() -> None:
    """Three identical profitable longs (exact score ties) of 1 lot in 3: by name, the first
    holds the top third (ceil(5/3) = 2: 4 lights), then 2/3 (ceil(10/3) = 4: 2 lights), 3/3."""
    commands: list[Command] = [UpdateIndex(BTC, START[BTC]), Deposit("lp", 10**9 * USDT)]
    for name in ("b", "a", "c"):
        commands += [
            Deposit(name, 10_000 * USDT),
            PlaceOrder("lp", BTC, -1, OrderType.LIMIT, TimeInForce.GTC, 10, START[BTC]),
            PlaceOrder(name, BTC, 1, OrderType.LIMIT, TimeInForce.GTC, 10, START[BTC]),
        ]
    commands.append(UpdateIndex(BTC, START[BTC] + 1_000))  # +100 USDT: the longs profit
    for vector_min_holders in (0, NEVER):
        e, _ = run(commands, vector_min_holders)
        assert [e.liquidator.adl_quantile(n, BTC) for n in ("a", "b", "c", "lp")] == [4, 2, 1, 1]


def test_shared_stream_vector_equals_scalar() -> None:
    """tests/streams.py with the default ("binance") mark: marks move on clock ticks too."""
    commands = command_stream(20240101, 2_000)
    scalar = Engine(SPECS)
    scalar.liquidator.vector_min_holders = NEVER
    vector = Engine(SPECS)
    vector.liquidator.vector_min_holders = 0
    for i, command in enumerate(commands):
        assert vector.apply(command) == scalar.apply(command), (i, command)
        if i % 50 == 0:
            vector.liquidator.check_mirror()
    assert vector.state_hash() == scalar.state_hash()
    vector.liquidator.check_mirror()


def test_threshold_switches_paths_midway() -> None:
    """A threshold between the holder counts of the run: both paths, one engine, same answer."""
    commands = crash_stream(5, traders=30)
    _, expected = run(commands, NEVER)
    _, got = run(commands, 12)
    assert got == expected


def test_wholesale_rebuild_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a large engine a refresh touching a quarter of the accounts rebuilds the mirror
    instead (`MIRROR_REBUILD_MIN_ACCOUNTS`); forced on here, the account indices are reassigned
    mid-stream, and the answers stay those of the scalar loop."""
    monkeypatch.setattr(liquidation, "MIRROR_REBUILD_MIN_ACCOUNTS", 0)
    commands = crash_stream(2)
    scalar, scalar_events = run(commands, NEVER)
    vector = engine(0)
    rebuilt = 0
    for command, expected in zip(commands, scalar_events, strict=True):
        before = vector.liquidator.mirror
        assert vector.apply(command) == expected
        rebuilt += vector.liquidator.mirror is not before
        vector.liquidator.check_mirror()
    assert rebuilt >= 3  # the first build and at least two wholesale refreshes
    assert vector.state_hash() == scalar.state_hash()


# -- derived state: not hashed, rebuilt after restore ----------------------------------------


@pytest.mark.parametrize("cut", [20, 150, 260, 300])
def test_restore_rebuilds_the_mirror(cut: int) -> None:
    commands = crash_stream(3)
    original = engine(0)
    for command in commands[:cut]:
        original.apply(command)
    original.liquidator.sync_mirror()
    twin = Engine.restore(original.snapshot())
    twin.liquidator.vector_min_holders = 0
    assert twin.liquidator.mirror is None  # nothing of it travelled in the snapshot
    assert twin.state_hash() == original.state_hash()
    for command in commands[cut:]:
        assert twin.apply(command) == original.apply(command)
        twin.liquidator.check_mirror()
    assert twin.state_hash() == original.state_hash()


def test_mirror_does_not_enter_the_state_hash_or_snapshot() -> None:
    commands = crash_stream(1)[:200]
    with_mirror, _ = run(commands, 0)
    without, _ = run(commands, NEVER)
    assert with_mirror.liquidator.mirror is not None and without.liquidator.mirror is None
    assert with_mirror.state_hash() == without.state_hash()
    assert with_mirror.snapshot() == without.snapshot()


# -- the mirror's arithmetic -------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.integers(-(2**61), 2**61), st.integers(-(10**7), 10**7)),
            st.one_of(st.integers(0, 2**61), st.integers(0, 10**7)),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, PPM),
)
def test_ratio_at_least_is_exact(rows: list[tuple[int, int]], level_ppm: int) -> None:
    equity = np.array([e for e, _ in rows], np.int64)
    mm = np.array([m for _, m in rows], np.int64)
    expected = [e <= 0 or m * PPM >= level_ppm * e for e, m in rows]
    assert ratio_at_least(equity, mm, level_ppm).tolist() == expected


def test_ratio_at_least_at_the_boundary() -> None:
    """MM / equity = 80 % exactly counts; one atom more equity does not."""
    equity = np.array([1_000, 1_001, 5 * 10**17, 5 * 10**17 + 1, 0, -5], np.int64)
    mm = np.array([800, 800, 4 * 10**17, 4 * 10**17, 0, 0], np.int64)
    assert ratio_at_least(equity, mm, 800_000).tolist() == [True, False, True, False, True, True]


def _expected_figures(
    mirror: RiskMirror,
    state: dict[tuple[str, int], tuple[int, int, bool, int]],
    wallets: dict[int, int],
    symbol: str,
    marks: dict[str, int],
) -> dict[int, tuple[int, int]]:
    """Per account holding `symbol`: (equity, MM) computed from scratch in plain ints."""
    specs = mirror.specs
    out: dict[int, tuple[int, int]] = {}
    for (sym, idx), (size, cost, isolated, margin) in state.items():
        if sym != symbol:
            continue
        spec = specs[sym]
        value = size * marks[sym] * spec.atoms_per_tick_lot
        if isolated:
            out[idx] = (margin + value - cost, spec.maintenance_margin_atoms(abs(value)))
            continue
        equity, mm = wallets.get(idx, 0), 0
        for (s2, i2), (size2, cost2, iso2, _) in state.items():
            if i2 != idx or iso2:
                continue
            spec2 = specs[s2]
            value2 = size2 * marks[s2] * spec2.atoms_per_tick_lot
            equity += value2 - cost2
            mm += spec2.maintenance_margin_atoms(abs(value2))
        out[idx] = (equity, mm)
    return out


def _as_dict(figures: MirrorFigures, old: bool = False) -> dict[int, tuple[int, int]]:
    equity = figures.old_equity_atoms if old else figures.equity_atoms
    mm = figures.old_maint_margin_atoms if old else figures.maint_margin_atoms
    assert equity is not None and mm is not None
    return {
        a: (e, m)
        for a, e, m in zip(figures.account_idx.tolist(), equity.tolist(), mm.tolist(), strict=True)
    }


operations = st.lists(
    st.one_of(
        st.tuples(st.just("wallet"), st.integers(0, 7), st.integers(-(10**12), 10**12)),
        st.tuples(
            st.just("position"),
            st.sampled_from([BTC, ETH]),
            st.integers(0, 7),
            st.integers(-5_000, 5_000),  # lots
            st.integers(1, 2_000_000),  # entry ticks
            st.booleans(),
            st.integers(0, 10**10),  # isolated margin
        ),
        st.tuples(st.just("mark"), st.sampled_from([BTC, ETH]), st.integers(1, 2_000_000)),
        st.tuples(st.just("figures"), st.sampled_from([BTC, ETH]), st.booleans()),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_mirror_figures_equal_a_recomputation(ops: list[tuple[object, ...]]) -> None:
    """Random writes, mark moves and reads: the cached totals never drift from plain ints."""
    mirror = RiskMirror(SPECS, capacity=2)
    for _ in range(8):
        mirror.add_account()
    state: dict[tuple[str, int], tuple[int, int, bool, int]] = {}
    wallets: dict[int, int] = {}
    marks = dict(START)
    for op in ops:
        if op[0] == "wallet":
            _, idx, atoms = op
            assert isinstance(idx, int) and isinstance(atoms, int)
            mirror.set_wallet(idx, atoms)
            wallets[idx] = atoms
        elif op[0] == "position":
            _, symbol, idx, size, entry, isolated, margin = op
            assert isinstance(symbol, str) and isinstance(idx, int) and isinstance(size, int)
            assert isinstance(entry, int) and isinstance(margin, int)
            spec = mirror.specs[symbol]
            cost = size * entry * spec.atoms_per_tick_lot
            margin = margin if isolated else 0
            mirror.set_position(symbol, idx, size, cost, bool(isolated), margin, 10)
            if size:
                state[symbol, idx] = (size, cost, bool(isolated), margin)
            else:
                state.pop((symbol, idx), None)
        elif op[0] == "mark":
            _, symbol, mark = op
            assert isinstance(symbol, str) and isinstance(mark, int)
            old = marks[symbol]
            marks[symbol] = mark
            figures = mirror.figures(symbol, marks, old)
            assert figures is not None
            assert _as_dict(figures) == _expected_figures(mirror, state, wallets, symbol, marks)
            old_marks = {**marks, symbol: old}
            assert _as_dict(figures, old=True) == _expected_figures(
                mirror, state, wallets, symbol, old_marks
            )
        else:
            _, symbol, twice = op
            assert isinstance(symbol, str)
            figures = mirror.figures(symbol, marks)
            assert figures is not None
            assert _as_dict(figures) == _expected_figures(mirror, state, wallets, symbol, marks)
            if twice:  # the memo answers the same
                assert mirror.figures(symbol, marks) is figures
        mirror.check_invariants()


def test_mirror_answers_none_beyond_its_bounds() -> None:
    mirror = RiskMirror(SPECS)
    a = mirror.add_account()
    mirror.set_position(BTC, a, 1_000, 1_000 * START[BTC] * 100, False, 0, 10)
    assert mirror.figures(BTC, START) is not None
    mirror.set_wallet(a, 2**63)  # beyond int64: left out, the mirror cannot answer
    assert ("", a) in mirror.unmirrored
    assert mirror.figures(BTC, START) is None
    mirror.set_wallet(a, 10 * USDT)
    assert mirror.figures(BTC, START) is not None
    mirror.set_position(BTC, a, 2**61, 1, False, 0, 10)  # the store refuses it
    assert mirror.figures(BTC, START) is None
    mirror.set_position(BTC, a, 0, 0, False, 0, 10)
    assert mirror.figures(BTC, START) is not None
