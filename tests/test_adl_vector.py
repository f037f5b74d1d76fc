"""Auto-deleveraging on its two twins: the queue ranked over the NumPy mirror and the scalar one.

MECHANICS.md §2.4 (ranking by PnL% × effective leverage, equal scores by account) and STYLE.md
("two implementations of what is hard to get right"). `adl.AdlQueueVector` ranks a side from
float64 scores that only narrow the exact comparison, lazily from the top; `adl.adl_queue` is
the specification. Here:

1. the queue itself, on random columns full of exact ties (twin positions, and positions of
   different sizes with proportional cost and equity), near ties (one atom of equity in 10^18)
   and losers and positions past bankruptcy, against `adl_queue` plus the unranked tail by name,
   walked whole and restricted to a minimum equity;
2. the engine: command streams that liquidate into ADL, run once with every symbol on the
   vector path (`vector_min_holders = 0`) and once on the scalar path (10**9), must give the
   same events, command by command, and the same `state_hash()`: the same counterparties in the
   same order, the same sizes and prices. The streams are `crash_stream` of
   tests/test_risk_mirror.py and `twin_stream` below, whose counterparties come in groups of
   identical positions, so the head of the queue is often an exact tie decided by name, and
   `deep_gap_stream`, whose ADL needs its second round (past what the counterparties' margins
   carry) and reaches the positions past their own bankruptcy.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Final

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from perpex.core import adl, liquidation
from perpex.core.adl import AdlPosition, AdlQueueVector, adl_queue, adl_score
from perpex.core.engine import Engine
from perpex.core.liquidation import LiquidationConfig
from perpex.core.messages import (
    AutoDeleveraged,
    Command,
    Deposit,
    Event,
    LiquidationTriggered,
    OrderType,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    TimeInForce,
    UpdateIndex,
)
from test_risk_mirror import BTC, ETH, NEVER, SPECS, START, USDT, crash_stream

MARK: Final = 1_200
K: Final = 1


# -- 1. the queue -------------------------------------------------------------------------------


def scalar_order(
    names: list[str], rows: list[tuple[int, int, int]], min_equity: int | None = None
) -> list[str]:
    """The specification: `adl_queue` with account indices in name order, then the positions
    past bankruptcy by name; restricted (after ranking) to equity >= `min_equity`."""
    by_name = sorted(range(len(rows)), key=lambda r: names[r])
    positions = [AdlPosition(rank, *rows[r]) for rank, r in enumerate(by_name)]
    side = 1 if rows[0][0] > 0 else -1
    queue = adl_queue(positions, MARK, K, side)
    queue += [i for i in range(len(positions)) if i not in set(queue)]
    return [
        names[by_name[i]]
        for i in queue
        if min_equity is None or positions[i].equity_atoms >= min_equity
    ]


def vector_queue(names: list[str], rows: list[tuple[int, int, int]]) -> AdlQueueVector:
    # Account indices in a shuffled order: the vector queue must not depend on them.
    idx = list(range(len(rows)))
    random.Random(len(rows)).shuffle(idx)
    table = [""] * len(rows)
    for row, i in enumerate(idx):
        table[i] = names[row]
    size, cost, equity = (np.array([r[c] for r in rows], np.int64) for c in range(3))
    return AdlQueueVector(table, np.array(idx, np.int64), size, cost, equity, MARK, K)


position = st.one_of(
    # a long bought at 1..2,400 with equity 1..10^6: winners and losers, every leverage
    st.tuples(st.integers(1, 40), st.integers(1, 2_400), st.integers(-50, 10**6)),
    # tiny and huge equities: near ties one atom apart at 10^18
    st.tuples(st.just(10), st.just(600), st.sampled_from([10**18, 10**18 + 1, 10**18 + 2])),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(position, min_size=1, max_size=60),
    st.lists(st.integers(0, 59), max_size=40),  # rows copied (exact twins)
    st.lists(st.integers(2, 5), max_size=20),  # rows scaled (same score, other size)
    st.booleans(),
    st.integers(1, 5_000),
    st.sampled_from([1, 2, 3, 8, 32]),
)
def test_vector_queue_equals_adl_queue(
    drawn: list[tuple[int, int, int]],
    twins: list[int],
    scales: list[int],
    short: bool,
    min_equity: int,
    first_chunk: int,
) -> None:
    """Chunks from 1 entry up: the lazy cut falls inside runs of ties and near ties."""
    rows = [(size, size * entry, equity) for size, entry, equity in drawn]
    rows += [rows[i % len(rows)] for i in twins]
    rows += [
        (size * f, cost * f, equity * f)
        for f, (size, cost, equity) in zip(scales, list(rows), strict=False)
    ]
    if short:
        rows = [(-size, -cost, equity) for size, cost, equity in rows]
    names = [f"acct{(i * 7919) % 1009:04d}-{i}" for i in range(len(rows))]
    queue = vector_queue(names, rows)
    assert list(queue.walk(first_chunk=first_chunk)) == scalar_order(names, rows)
    restricted = list(queue.walk(min_equity, first_chunk))
    assert restricted == scalar_order(names, rows, min_equity)


def test_vector_queue_head_of_many_ties_goes_by_name() -> None:
    """5,000 identical longs and a few better ones: the lazy head is the better ones, then the
    twins by name; one exact score is computed for all the twins."""
    names = [f"n{(i * 7) % 5_003:05d}" for i in range(5_003)]
    rows = [(10, 6_000, 2_400)] * 5_000 + [(10, 6_000, 1_200), (10, 6_000, 600), (1, 1, 10)]
    queue = vector_queue(names, rows)
    head = []
    for name in queue.walk():
        head.append(name)
        if len(head) == 40:
            break
    assert head == scalar_order(names, rows)[:40]
    assert head[:3] == [names[5_002], names[5_001], names[5_000]]
    assert len(queue._exact) <= 4


def test_vector_queue_refuses_what_the_scalar_refuses() -> None:
    with pytest.raises(ValueError):
        vector_queue(["a", "b"], [(10, 6_000, 10), (-10, -6_000, 10)])  # both sides
    with pytest.raises(ValueError):
        vector_queue(["a"], [(10, 0, 10)])  # no cost basis
    assert adl_score(AdlPosition(0, 10, 6_000, 2_400), MARK, K) == Fraction(5)


# -- 2. the engine ------------------------------------------------------------------------------


def twin_stream(seed: int, groups: int = 10, ticks: int = 24) -> list[Command]:
    """Counterparties in groups of three identical positions (same deposit, mode, leverage,
    entry and size, opened against the lp one after another), names shuffled so that name
    order is not the order of opening; highly leveraged traders on the other side; a thin
    book and no insurance fund; then the index gaps up and down by up to 7 % a tick, so the
    leveraged side is liquidated into ADL against the twins, now and then past bankruptcy (the
    capped round), and cross twins that also lose on ETH run short of equity."""
    rng = random.Random(seed)
    out: list[Command] = [UpdateIndex(BTC, START[BTC]), UpdateIndex(ETH, START[ETH])]
    out.append(Deposit("lp", 10**9 * USDT))
    out += [SetLeverage("lp", symbol, 1) for symbol in (BTC, ETH)]

    def limit(account: str, symbol: str, side: int, lots: int, price: int) -> PlaceOrder:
        return PlaceOrder(account, symbol, side, OrderType.LIMIT, TimeInForce.GTC, lots, price)

    def trade(account: str, symbol: str, side: int, lots: int, price: int) -> list[Command]:
        return [limit("lp", symbol, -side, lots, price), limit(account, symbol, side, lots, price)]

    letters = "abcdefghijklmnopqrstuvwxyz"
    twin_side = rng.choice((1, -1))  # the counterparties' side; the leveraged traders oppose
    for g in range(groups):
        deposit = rng.randint(2_000, 20_000) * USDT
        isolated = rng.random() < 0.5
        leverage = rng.choice((2, 5, 10, 20))
        lots = rng.randint(20, 150)
        price = START[BTC] * (10_000 + rng.randint(-40, 40)) // 10_000
        eth_loss = rng.random() < 0.3 and not isolated
        for _ in range(3):
            name = "".join(rng.choices(letters, k=5)) + f"{g:02d}"
            out.append(Deposit(name, deposit))
            if isolated:
                out.append(SetMarginMode(name, BTC, True))
            out.append(SetLeverage(name, BTC, leverage))
            out += trade(name, BTC, twin_side, lots, price)
            if eth_loss:  # against the twins' BTC side: loses as BTC's counterparties win
                out.append(SetLeverage(name, ETH, 20))
                out += trade(name, ETH, -twin_side, 2_000, START[ETH])
    for i in range(8):
        name = f"lev{i}"
        out.append(Deposit(name, rng.randint(1_000, 5_000) * USDT))
        if rng.random() < 0.5:
            out.append(SetMarginMode(name, BTC, True))
        out.append(SetLeverage(name, BTC, rng.choice((50, 75, 100))))
        price = START[BTC] * (10_000 + rng.randint(-20, 20)) // 10_000
        out += trade(name, BTC, -twin_side, rng.randint(50, 400), price)
    for _ in range(6):  # a thin ladder
        side = rng.choice((1, -1))
        offset = START[BTC] * rng.randint(5, 300) // 10_000
        price = START[BTC] - offset if side == 1 else START[BTC] + offset
        out.append(limit("lp", BTC, side, rng.randint(1, 20), price))
    mark = dict(START)
    for _ in range(ticks):
        symbol = BTC if rng.random() < 0.8 else ETH
        # mostly the twins' way (their BTC legs win, the leveraged side and their ETH legs lose)
        step = rng.randint(10, 70) * (twin_side if rng.random() < 0.75 else -twin_side)
        mark[symbol] = max(START[symbol] // 10, mark[symbol] * (1_000 + step) // 1_000)
        out.append(UpdateIndex(symbol, mark[symbol]))
    return out


def deep_gap_stream(side: int, isolated: bool) -> list[Command]:
    """ADL past the first round and into the positions past bankruptcy (MECHANICS.md §2.4).

    `v` (cross, 20x) holds 1.1 BTC and 20 ETH on `side`; four identical `r*` (50x, isolated or
    cross) hold 0.2 BTC against her and nothing else; three identical `b*` (cross, 20x) hold
    0.1 BTC against her and 5 ETH on `side`; the lp holds the other side of the ETH. Then ETH
    gaps 30 % against `side`: `v` and the `b*` are past bankruptcy, `v` deepest, so she goes
    first. Her BTC has no book and no fund, and its bankruptcy price lies beyond the mark, so
    the first round takes from each `r*` only what its margin carries, the second the rest of
    the `r*` and then the `b*` (not ranked: by name)."""
    btc, eth = START[BTC], START[ETH]
    out: list[Command] = [UpdateIndex(BTC, btc), UpdateIndex(ETH, eth)]
    out.append(Deposit("lp", 10**9 * USDT))
    out += [SetLeverage("lp", symbol, 1) for symbol in (BTC, ETH)]

    def limit(account: str, symbol: str, order_side: int, lots: int) -> PlaceOrder:
        return PlaceOrder(
            account, symbol, order_side, OrderType.LIMIT, TimeInForce.GTC, lots, START[symbol]
        )

    def trade(maker: str, taker: str, symbol: str, taker_side: int, lots: int) -> list[Command]:
        return [limit(maker, symbol, -taker_side, lots), limit(taker, symbol, taker_side, lots)]

    out += [Deposit("v", 9_500 * USDT), SetLeverage("v", BTC, 20), SetLeverage("v", ETH, 20)]
    out += trade("lp", "v", ETH, side, 20_000)
    for name in ("r_q", "r_c", "r_x", "r_a"):  # twins, created out of name order
        out.append(Deposit(name, 1_000 * USDT))
        if isolated:
            out.append(SetMarginMode(name, BTC, True))
        out.append(SetLeverage(name, BTC, 50))
        out += trade("v", name, BTC, -side, 200)
    for name in ("b_z", "b_m", "b_d"):
        out += [Deposit(name, 1_500 * USDT), SetLeverage(name, BTC, 20), SetLeverage(name, ETH, 20)]
        out += trade("v", name, BTC, -side, 100) + trade("lp", name, ETH, side, 5_000)
    out.append(UpdateIndex(ETH, eth * (10 - 3 * side) // 10))
    return out


class Spy:
    """Counts what the two paths did: vector queues walked (and capped rounds), and scalar
    rankings whose first two positions tie exactly."""

    def __init__(self) -> None:
        self.walks = 0
        self.capped_walks = 0
        self.head_ties = 0


@contextmanager
def spying(monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    spy = Spy()
    walk = AdlQueueVector.walk
    queue = liquidation.adl_queue

    def counting_walk(self: AdlQueueVector, min_equity_atoms: int | None = None) -> Iterator[str]:
        spy.walks += 1
        spy.capped_walks += min_equity_atoms is not None
        return walk(self, min_equity_atoms)

    def counting_queue(
        positions: list[AdlPosition], mark_ticks: int, k: int, side: int
    ) -> list[int]:
        ranked = queue(positions, mark_ticks, k, side)
        if len(ranked) >= 2:
            first, second = (adl.adl_score(positions[i], mark_ticks, k) for i in ranked[:2])
            spy.head_ties += first == second
        return ranked

    monkeypatch.setattr(AdlQueueVector, "walk", counting_walk)
    monkeypatch.setattr(liquidation, "adl_queue", counting_queue)
    yield spy


def twins_agree(commands: list[Command], config: LiquidationConfig | None = None) -> list[Event]:
    """Both paths, command by command; returns the events (of the scalar path)."""
    scalar = Engine(SPECS, "index", liquidation=config)
    scalar.liquidator.vector_min_holders = NEVER
    vector = Engine(SPECS, "index", liquidation=config)
    vector.liquidator.vector_min_holders = 0
    flat: list[Event] = []
    for i, command in enumerate(commands):
        expected = scalar.apply(command)
        assert vector.apply(command) == expected, (i, command)
        assert vector.state_hash() == scalar.state_hash(), (i, command)
        flat += expected
    vector.check_invariants()
    vector.liquidator.check_mirror()
    return flat


STREAMS = [("crash", seed) for seed in range(12)] + [("twins", seed) for seed in range(10)]


def stream(kind: str, seed: int) -> list[Command]:
    return crash_stream(seed) if kind == "crash" else twin_stream(seed)


def test_adl_vector_equals_scalar_command_by_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """All the streams, both paths: identical events and hashes after every command. Not
    vacuous: ADL fills from the vector queue, capped rounds, and exact ties at the head."""
    counts = {"liquidations": 0, "adl fills": 0, "twin adl fills": 0}
    with spying(monkeypatch) as spy:
        for kind, seed in STREAMS:
            events = twins_agree(stream(kind, seed))
            counts["liquidations"] += sum(isinstance(e, LiquidationTriggered) for e in events)
            adl_fills = [e for e in events if isinstance(e, AutoDeleveraged)]
            counts["adl fills"] += len(adl_fills)
            if kind == "twins":
                counts["twin adl fills"] += len(adl_fills)
    assert counts["liquidations"] >= 100 and counts["twin adl fills"] >= 50, counts
    assert spy.walks >= 50 and spy.capped_walks >= 5, (spy.walks, spy.capped_walks)
    assert spy.head_ties >= 10, spy.head_ties


@pytest.mark.parametrize("per_tick", [1, 3])
def test_adl_vector_equals_scalar_with_queued_liquidations(per_tick: int) -> None:
    config = LiquidationConfig(max_liquidations_per_tick=per_tick)
    for seed in range(3):
        twins_agree(twin_stream(seed), config)


@pytest.mark.parametrize(
    ("side", "isolated", "rounds"),
    [(1, True, 2), (1, False, 2), (-1, True, 2), (-1, False, 1)],
    ids=["long, isolated r", "long, cross r", "short, isolated r", "short, cross r"],
)
def test_adl_second_round_and_bankrupt_tail_agree(side: int, isolated: bool, rounds: int) -> None:
    """`deep_gap_stream`: both paths agree, and the order is §2.4's: the tied `r*` by name
    (in each round), then the `b*`, past bankruptcy, by name."""
    events = twins_agree(deep_gap_stream(side, isolated))
    taken = [
        e.counterparty_account
        for e in events
        if isinstance(e, AutoDeleveraged) and e.symbol == BTC and e.liquidated_account == "v"
    ]
    assert taken == ["r_a", "r_c", "r_q", "r_x"] * rounds + ["b_d", "b_m", "b_z"]


def test_adl_vector_ranks_only_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """Laziness: every walk of a vector queue ranks at most `CHUNK_GROWTH` times the entries it
    handed out (or the first chunk), so an ADL event that takes a few counterparties out of
    many never sorts the whole side. 30 groups of twins (90 positions on their side), a first
    chunk of 8."""
    monkeypatch.setattr(adl, "FIRST_CHUNK", 8)
    walks: list[dict[str, int]] = []
    walk, top = AdlQueueVector.walk, AdlQueueVector._top

    def counting_walk(self: AdlQueueVector, min_equity_atoms: int | None = None) -> Iterator[str]:
        record = {"rows": len(self), "ranked": 0, "handed out": 0}
        walks.append(record)
        for name in walk(self, min_equity_atoms):
            record["handed out"] += 1
            yield name

    def counting_top(self: AdlQueueVector, rows: np.ndarray, wanted: int) -> list[int]:
        out = top(self, rows, wanted)
        walks[-1]["ranked"] = max(walks[-1]["ranked"], len(out))
        return out

    monkeypatch.setattr(AdlQueueVector, "walk", counting_walk)
    monkeypatch.setattr(AdlQueueVector, "_top", counting_top)
    for seed in range(4):
        twins_agree(twin_stream(seed, groups=30))
    assert len(walks) >= 20
    for record in walks:
        assert record["ranked"] <= max(8, adl.CHUNK_GROWTH * record["handed out"]), record
    assert sum(record["ranked"] < record["rows"] - 20 for record in walks) >= 10
