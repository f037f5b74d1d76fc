"""The closed head of a side's margin orders (`records.MarginOrders`): the oldest orders that
close the position wholly hold nothing, and `reserve.reprice_side` starts past them while the
free lots still cover them.

Checked three ways: a scenario that builds the head, fills into it, ends an order in it and
shrinks the position into it (the head's figures, and every order's margin against a
recomputation from scratch); the invariant checker catching a corrupted head; and a
differential run, the same stream with the head forgotten before every command (the walk
from the oldest order, as before the head existed), giving the same events and state hash.

Units: prices in ticks, sizes in lots, money in atoms.
"""

from __future__ import annotations

import pytest

from perpex.core.book import BUY, SELL
from perpex.core.engine import Engine
from perpex.core.messages import (
    CancelOrder,
    Deposit,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    SetLeverage,
    TimeInForce,
    UpdateIndex,
)
from perpex.core.records import MarginOrders, Position
from perpex.core.units import ATOMS_PER_UNIT
from streams import command_stream, default_specs

BTC = "BTCUSDT"
INDEX = 600_000  # 60,000.0 at a tick of 0.1
LEVERAGE = 10


def limit(account: str, side: int, lots: int, price: int) -> PlaceOrder:
    return PlaceOrder(account, BTC, side, OrderType.LIMIT, TimeInForce.GTC, lots, price)


def market(account: str, side: int, lots: int) -> PlaceOrder:
    return PlaceOrder(account, BTC, side, OrderType.MARKET, TimeInForce.IOC, lots, 0)


def placed(engine: Engine, command: PlaceOrder) -> int:
    first = engine.apply(command)[0]
    assert isinstance(first, OrderAccepted), first
    engine.check_invariants()
    return first.order_id


def applied(engine: Engine, command: PlaceOrder | CancelOrder) -> None:
    engine.apply(command)
    engine.check_invariants()


def from_scratch(pos: Position, side: int, mark: int, k: int) -> list[int]:
    """Every margin order's margin on `side`, oldest first: the first free lots close (and
    hold nothing), the rest holds IM at its price plus the open loss against the mark."""
    size = pos.size_lots
    free = max(0, -size) if side == BUY else max(0, size)
    orders = pos.margin_buys if side == BUY else pos.margin_sells
    want = []
    for o in orders.orders.values():
        opening = o.remaining_lots - min(free, o.remaining_lots)
        free -= o.remaining_lots - opening
        im = -(-(opening * o.price_ticks * k) // pos.leverage)
        want.append(im + max(0, side * (o.price_ticks - mark)) * opening * k)
    return want


def head(orders: MarginOrders) -> tuple[int, int]:
    return orders.head_count, orders.head_lots


@pytest.fixture
def engine() -> Engine:
    """alice long 10 lots at 60,000.0 (bought from bob); carol and dave to take and quote."""
    e = Engine(default_specs(), mark_mode="index")
    for name in ("alice", "bob", "carol", "dave"):
        e.apply(Deposit(name, 1_000_000 * ATOMS_PER_UNIT))
        e.apply(SetLeverage(name, BTC, LEVERAGE))
    e.apply(UpdateIndex(BTC, INDEX))
    placed(e, limit("bob", SELL, 10, INDEX))
    placed(e, market("alice", BUY, 10))
    assert e.accounts["alice"].positions[BTC].size_lots == 10
    return e


def test_head_through_fills_cancels_and_a_shrinking_position(engine: Engine) -> None:
    e = engine
    k = e.markets[BTC].spec.atoms_per_tick_lot
    pos = e.accounts["alice"].positions[BTC]
    sells = pos.margin_sells

    def margins_as_from_scratch() -> None:
        assert not sells.unpriced
        want = from_scratch(pos, SELL, e.markets[BTC].mark_ticks, k)
        assert [o.reserved_atoms for o in sells.orders.values()] == want

    first = placed(e, limit("alice", SELL, 3, INDEX + 10))
    placed(e, limit("alice", SELL, 3, INDEX + 20))
    third = placed(e, limit("alice", SELL, 3, INDEX + 30))
    placed(e, limit("alice", SELL, 5, INDEX + 40))
    # A cancel on the closing side re-prices it: 3 + 3 lots close wholly, 4 of the last 5.
    applied(e, CancelOrder("alice", BTC, third))
    assert head(sells) == (2, 6)
    assert sells.head_last_id == third - 1
    margins_as_from_scratch()
    assert sells.orders[first].reserved_atoms == 0
    # A partial fill of the oldest (in the head): the head keeps it, with 2 lots left.
    applied(e, market("carol", BUY, 1))
    assert pos.size_lots == 9 and sells.orders[first].remaining_lots == 2
    assert head(sells) == (2, 5)
    margins_as_from_scratch()
    # It fills: it leaves the head; the free lots (7) still cover what is left of it.
    applied(e, market("carol", BUY, 2))
    assert first not in sells.orders and pos.size_lots == 7
    assert head(sells) == (1, 3)
    margins_as_from_scratch()
    # The position shrinks below the head (alice sells 6 to dave's bid): walked afresh.
    placed(e, limit("dave", BUY, 6, INDEX - 10))
    applied(e, market("alice", SELL, 6))
    assert pos.size_lots == 1
    assert head(sells) == (0, 0)
    margins_as_from_scratch()
    # Flat: nothing closes, every order opens wholly.
    placed(e, limit("dave", BUY, 1, INDEX - 10))
    applied(e, market("alice", SELL, 1))
    assert pos.size_lots == 0 and head(sells) == (0, 0)
    margins_as_from_scratch()


def test_the_checker_catches_a_corrupted_head(engine: Engine) -> None:
    e = engine
    placed(e, limit("alice", SELL, 3, INDEX + 10))
    placed(e, limit("alice", SELL, 4, INDEX + 20))
    applied(e, CancelOrder("alice", BTC, placed(e, limit("alice", SELL, 2, INDEX + 30))))
    sells = e.accounts["alice"].positions[BTC].margin_sells
    assert head(sells) == (2, 7)
    for corrupt in (
        lambda: setattr(sells, "head_lots", 6),
        lambda: setattr(sells, "head_count", 1),
        lambda: setattr(sells, "head_last_id", 0),
        lambda: setattr(next(iter(sells.orders.values())), "reserved_atoms", 1),
    ):
        saved = (sells.head_count, sells.head_lots, sells.head_last_id)
        corrupt()
        with pytest.raises(AssertionError):
            e.check_invariants()
        sells.head_count, sells.head_lots, sells.head_last_id = saved
        next(iter(sells.orders.values())).reserved_atoms = 0
        e.check_invariants()


def forget_heads(engine: Engine) -> None:
    for acct in engine.accounts.values():
        for pos in acct.positions.values():
            for orders in (pos.margin_buys, pos.margin_sells):
                orders.head_count = orders.head_lots = orders.head_last_id = 0


@pytest.mark.parametrize("seed", [3, 17])
def test_the_head_changes_nothing(seed: int) -> None:
    """The same stream with and without the head (forgotten before every command, which
    leaves a valid empty one): the same events, the same state hash."""
    commands = command_stream(seed, 4_000)
    with_head, without = Engine(default_specs()), Engine(default_specs())
    heads_used = 0
    for i, command in enumerate(commands):
        forget_heads(without)
        assert with_head.apply(command) == without.apply(command), f"command {i}: {command}"
        heads_used += sum(
            1
            for acct in with_head.accounts.values()
            for pos in acct.positions.values()
            if pos.margin_buys.head_count or pos.margin_sells.head_count
        )
        if i % 250 == 0:
            with_head.check_invariants()
    with_head.check_invariants()
    assert with_head.state_hash() == without.state_hash()
    assert heads_used, "the stream never built a closed head: the test proves nothing"
