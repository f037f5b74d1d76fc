"""Order amendment (Binance USDⓈ-M "Modify Order", PUT /fapi/v1/order): `Exchange.modify_order`
and the engine's `AmendOrder` (perpex.core.amend has the rules and the codes).

A new price and total quantity for an open LIMIT order, its id, client order id, time in force
and reduce-only flag kept. A smaller quantity at the same price keeps the order's place in its
level; a new price or a larger quantity sends it to the back; a new price that crosses trades
like a new GTC order (a GTX order is refused). Every check of a new order applies, margin for
the new size included, and a refused amendment changes nothing. Default markets (tick 0.1,
step 0.001, band 5 %, 20x, taker 0.05 %, maker 0.02 %), mark = index = 60,000.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final, TypeVar

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.amend import side_margin_atoms
from perpex.core.engine import Engine
from perpex.core.messages import (
    AmendOrder,
    CancelOrder,
    Command,
    Deposit,
    EndReason,
    Event,
    OrderAmended,
    OrderCanceled,
    OrderType,
    PlaceOrder,
    Reason,
    RequestRejected,
    SetLeverage,
    TimeInForce,
    TradeExecuted,
    UpdateIndex,
)
from perpex.errors import REASON_CODES
from perpex.journal import replay
from streams import default_specs

BTC: Final = "BTCUSDT"
ETH: Final = "ETHUSDT"
BUY: Final = 1
SELL: Final = -1
TICKS_PER_USDT: Final = 10  # BTC ticks of 0.1
LOTS_PER_BTC: Final = 1_000  # lots of 0.001
ATOMS_PER_USDT: Final = 1_000_000
LEVERAGE: Final = 20  # the default
E = TypeVar("E", bound=Event)


@pytest.fixture
def ex() -> Exchange:
    """Mark = index: BTC 60,000, ETH 3,000. alice 100k USDT; bob and carol 1M each."""
    exchange = Exchange(mark_price="index")
    exchange.set_index_price(BTC, "60000")
    exchange.set_index_price(ETH, "3000")
    exchange.deposit("alice", "100000")
    exchange.deposit("bob", "1000000")
    exchange.deposit("carol", "1000000")
    return exchange


def settled(ex: Exchange) -> None:
    ex.check_invariants()
    deposits, held = ex.engine.conservation_atoms()
    assert deposits == held


def of_type(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def bid_queue(ex: Exchange) -> list[tuple[str, str]]:
    """The BTC bids as (account, price), best price first, FIFO within a price."""
    spec = ex.engine.market(BTC).spec
    return [
        (o.account, str(spec.price_to_decimal(o.price_ticks)))
        for o in ex.engine.market(BTC).book.orders()
        if o.side == BUY
    ]


def margin_atoms(price: str, qty: str) -> int:
    """Initial margin of an opening order at or below the mark: price x qty / 20, rounded up."""
    ticks = int(Decimal(price) * TICKS_PER_USDT)
    lots = int(Decimal(qty) * LOTS_PER_BTC)
    return -(-ticks * lots * 100 // LEVERAGE)  # 100 atoms per tick x lot


# -- queue priority -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Priority:
    name: str
    alice_price: str  # alice's 0.1 bid, placed first (or second, with bob_first)
    quantity: str  # then amended to quantity @ price
    price: str
    queue: list[tuple[str, str]]  # the bids after it, best first, FIFO within a price
    bob_first: bool = False  # bob's 0.1 bid at 59,900 placed before alice's


PRIORITY: Final = [
    Priority("a smaller quantity at the same price keeps its place", "59900", "0.05", "59900",
             [("alice", "59900.0"), ("bob", "59900.0")]),
    Priority("a larger quantity loses it", "59900", "0.2", "59900",
             [("bob", "59900.0"), ("alice", "59900.0")]),
    Priority("a new price joins the back of its level", "59800", "0.1", "59900",
             [("bob", "59900.0"), ("alice", "59900.0")]),
    Priority("a new price and a smaller quantity: the back too", "59800", "0.05", "59900",
             [("bob", "59900.0"), ("alice", "59900.0")]),
    Priority("a better price goes ahead of the level", "59800", "0.1", "59950",
             [("alice", "59950.0"), ("bob", "59900.0")]),
    Priority("a worse price goes behind it", "59900", "0.1", "59850",
             [("bob", "59900.0"), ("alice", "59850.0")]),
    Priority("behind bob, a smaller quantity stays behind", "59900", "0.05", "59900",
             [("bob", "59900.0"), ("alice", "59900.0")], bob_first=True),
]  # fmt: skip


@pytest.mark.parametrize("case", PRIORITY, ids=lambda c: c.name)
def test_queue_priority(ex: Exchange, case: Priority) -> None:
    if case.bob_first:
        ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59900")
    alice = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", case.alice_price)
    if not case.bob_first:
        ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59900")
    amended = ex.modify_order("alice", BTC, alice.order_id, side="BUY", quantity=case.quantity,
                              price=case.price)  # fmt: skip
    assert (amended.order_id, amended.status) == (alice.order_id, "NEW")
    assert (amended.price, amended.orig_qty) == (Decimal(case.price), Decimal(case.quantity))
    assert bid_queue(ex) == case.queue
    settled(ex)
    # Who a market sell of 0.05 fills is who is at the head of the queue.
    n = len(ex.events())
    ex.place_order("carol", BTC, "SELL", "MARKET", "0.05")
    [trade] = of_type(ex.events()[n:], TradeExecuted)
    assert trade.maker_account == case.queue[0][0]
    settled(ex)


# -- refused, and nothing changed ------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    name: str
    call: Callable[[Exchange, dict[str, int]], object]
    code: int


def modify(
    order: str = "bid",
    account: str = "alice",
    symbol: str = BTC,
    order_id: object = None,
    side: str = "BUY",
    quantity: str = "0.1",
    price: str = "59900",
) -> Callable[[Exchange, dict[str, int]], object]:
    """`account` modifies the order `order` of `alice_with_orders` (or `order_id`, if given):
    by default alice's partly filled bid, 0.1 @ 59,900 with 0.04 executed, to what it is."""
    return lambda ex, ids: ex.modify_order(
        account, symbol, ids[order] if order_id is None else order_id,  # type: ignore[arg-type]
        side=side, quantity=quantity, price=price,
    )  # fmt: skip


def typed(**kwargs: object) -> Callable[[Exchange, dict[str, int]], object]:
    """The same through `Exchange.submit` (the driver's and the server's typed path)."""

    def call(ex: Exchange, ids: dict[str, int]) -> object:
        fields: dict[str, object] = {"order_id": ids["bid"], "client_order_id": None}
        fields.update(side=BUY, qty_lots=100, price_ticks=599_000)
        fields.update(kwargs)
        return ex.submit([AmendOrder("alice", BTC, **fields)])  # type: ignore[arg-type]

    return call


REFUSALS: Final = [
    # the order
    Refusal("unknown order id", modify(order_id=10**9), -2013),
    Refusal("order id 0", modify(order_id=0), -2013),
    Refusal("order id not an int", modify(order_id="7"), -1102),
    Refusal("another account's order", modify(order="bob"), -2013),
    Refusal("its account is not the owner", modify(account="bob"), -2013),
    Refusal("another symbol's order", modify(order="eth"), -2013),
    Refusal("a canceled order", modify(order="canceled"), -2013),
    Refusal("a filled order", modify(order="filled", side="SELL", price="60100"), -2013),
    Refusal("a conditional order's id", modify(order="stop", side="SELL", price="59000"), -2013),
    Refusal("no id and no client id", lambda ex, _: ex.modify_order(
        "alice", BTC, side="BUY", quantity="0.1", price="59900"), -1102),
    Refusal("a client id nobody has", lambda ex, _: ex.modify_order(
        "alice", BTC, client_order_id="nobody", side="BUY", quantity="0.1", price="59900"),
        -2013),
    Refusal("a malformed client id", lambda ex, _: ex.modify_order(
        "alice", BTC, client_order_id="bad id!", side="BUY", quantity="0.1", price="59900"),
        -1100),
    Refusal("unknown symbol", modify(symbol="XRPUSDT"), -1121),
    # the side
    Refusal("another side", modify(side="SELL"), -1130),
    Refusal("no side at all", modify(side="HOLD"), -1117),
    # the quantity
    Refusal("quantity = executed", modify(quantity="0.04"), -4003),
    Refusal("quantity below executed", modify(quantity="0.03"), -4003),
    Refusal("quantity zero", modify(quantity="0"), -4003),
    Refusal("quantity off the step", modify(quantity="0.0505"), -1111),
    Refusal("quantity above the max", modify(quantity="1000.001"), -4005),
    Refusal("nothing changes", modify(quantity="0.1", price="59900"), -5027),
    # the price
    Refusal("price off the tick", modify(price="59900.05"), -4014),
    Refusal("price too precise", modify(price="59900.001"), -1111),
    Refusal("price below the min", modify(price="500"), -4013),
    Refusal("price above the band", modify(price="63000.1"), -4016),
    Refusal("price below the band", modify(order="ask", side="SELL", quantity="0.01",
                                           price="56999.9"), -4024),
    Refusal("notional below the min", modify(order="eth", symbol=ETH, quantity="0.001",
                                             price="2990"), -5029),
    Refusal("post-only that would cross", modify(order="gtx", quantity="0.1", price="60200"),
            -5022),
    # margin and caps
    Refusal("margin for the new size", modify(quantity="35"), -2019),
    Refusal("margin for the new price (open loss)", modify(order="dave", account="dave",
            quantity="0.02", price="62000"), -2019),
    # the typed path: what the facade could not have built
    Refusal("typed: side 2", typed(side=2), -1117),
    Refusal("typed: quantity 0", typed(qty_lots=0), -4003),
    Refusal("typed: price 0", typed(price_ticks=0), -4013),
    Refusal("typed: order id 0", typed(order_id=0), -2013),
    Refusal("typed: no id, no client id", typed(order_id=None), -1102),
    Refusal("typed: a malformed client id", typed(order_id=None, client_order_id="a b"), -1100),
]  # fmt: skip


def alice_with_orders(ex: Exchange) -> dict[str, int]:
    """alice: a bid 0.1 @ 59,900 (client id "a1") of which carol's market sell took 0.04, an
    ETH bid, a canceled and a filled order, an ask 0.02 @ 60,500 above carol's at 60,200, a
    GTX bid under it, a stop;
    bob: a bid; dave (100 USDT): a bid 0.02 @ 59,900, 59.9 USDT of margin."""
    ids = {}
    ids["bid"] = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59900",
                                client_order_id="a1").order_id  # fmt: skip
    ex.place_order("carol", BTC, "SELL", "MARKET", "0.04")
    ids["eth"] = ex.place_order("alice", ETH, "BUY", "LIMIT", "0.01", "2990").order_id
    ids["canceled"] = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59000").order_id
    ex.cancel_order("alice", BTC, ids["canceled"])
    ids["filled"] = ex.place_order("alice", BTC, "SELL", "LIMIT", "0.01", "60100").order_id
    ex.place_order("bob", BTC, "BUY", "MARKET", "0.01")
    ex.place_order("carol", BTC, "SELL", "LIMIT", "0.1", "60200")
    ids["ask"] = ex.place_order("alice", BTC, "SELL", "LIMIT", "0.02", "60500").order_id
    ids["gtx"] = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59000", "GTX").order_id
    ids["stop"] = ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.04",
                                 stop_price="59000").order_id  # fmt: skip
    ids["bob"] = ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59800").order_id
    ex.deposit("dave", "100")
    ids["dave"] = ex.place_order("dave", BTC, "BUY", "LIMIT", "0.02", "59900").order_id
    settled(ex)
    return ids


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_a_refused_amendment_changes_nothing(ex: Exchange, case: Refusal) -> None:
    ids = alice_with_orders(ex)
    before, n = ex.state_hash(), len(ex.events())
    orders = {name: ex.open_orders(name) for name in ("alice", "bob", "dave")}
    with pytest.raises(ExchangeError) as info:
        case.call(ex, ids)
    assert info.value.code == case.code, info.value
    assert info.value.msg and not re.search(r"\{[a-z_]+\}", info.value.msg)  # all filled in
    refusals = ex.events()[n:]
    assert len(refusals) <= 1 and all(type(e) is RequestRejected for e in refusals)
    assert ex.state_hash() == before
    assert {name: ex.open_orders(name) for name in orders} == orders
    settled(ex)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"order_id": 99}, Reason.ORDER_DOES_NOT_EXIST),
        ({"side": SELL}, Reason.AMEND_SIDE_MISMATCH),
        ({"qty_lots": 40}, Reason.AMEND_QTY_NOT_ABOVE_FILLED),
        ({"qty_lots": 100, "price_ticks": 599_000}, Reason.AMEND_NO_CHANGE),
        ({"qty_lots": 10**7}, Reason.QTY_ABOVE_MAX),
        ({"price_ticks": 1}, Reason.PRICE_OUT_OF_RANGE),
        ({"price_ticks": 630_001}, Reason.PRICE_ABOVE_BAND),  # (a bid below: a sell's refusal)
        ({"qty_lots": 35_000}, Reason.INSUFFICIENT_MARGIN),
    ],
    ids=lambda v: v.name if isinstance(v, Reason) else None,
)
def test_the_engine_refuses_with_one_event(fields: dict[str, int], reason: Reason) -> None:
    engine = Engine(default_specs(), "index")
    engine.apply_all([UpdateIndex(BTC, 600_000), Deposit("alice", 100_000 * ATOMS_PER_USDT),
                      Deposit("carol", 10**12)])  # fmt: skip
    limit, gtc = OrderType.LIMIT, TimeInForce.GTC
    engine.apply(PlaceOrder("alice", BTC, BUY, limit, gtc, 100, 599_000))
    engine.apply(PlaceOrder("carol", BTC, SELL, OrderType.MARKET, TimeInForce.IOC, 40, 0))
    order = {"order_id": 1, "client_order_id": None, "side": BUY, "qty_lots": 200}
    order["price_ticks"] = 599_000
    order.update(fields)
    before = engine.snapshot()
    events = engine.apply(AmendOrder("alice", BTC, **order))  # type: ignore[arg-type]
    assert events == [RequestRejected("alice", BTC, reason)]
    assert engine.snapshot() == before  # not even a counter moved
    engine.check_invariants()


def test_the_codes_follow_binance() -> None:
    codes = {reason: code for reason, (code, _) in REASON_CODES.items()}
    assert codes[Reason.ORDER_DOES_NOT_EXIST] == -2013  # NO_SUCH_ORDER ("Order does not exist.")
    assert codes[Reason.AMEND_NO_CHANGE] == -5027  # SAME_ORDER
    assert codes[Reason.AMEND_MIN_NOTIONAL] == -5029  # MODIFICATION_MIN_NOTIONAL
    assert codes[Reason.POST_ONLY_WOULD_CROSS] == -5022
    assert codes[Reason.INSUFFICIENT_MARGIN] == -2019


# -- what an amendment does ------------------------------------------------------------------------
def test_an_amended_order_keeps_what_binance_keeps(ex: Exchange) -> None:
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.3", "60000")  # alice sells 0.3 to bob
    ex.place_order("bob", BTC, "BUY", "MARKET", "0.3")
    placed = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.2", "59500", "GTX", True, "ro-1")
    n = len(ex.events())
    amended = ex.modify_order("alice", BTC, client_order_id="ro-1", side="BUY", quantity="0.1",
                              price="59600")  # fmt: skip
    assert amended.order_id == placed.order_id
    assert (amended.client_order_id, amended.time_in_force, amended.reduce_only) == (
        "ro-1", "GTX", True)  # fmt: skip
    assert (amended.type, amended.side, amended.status) == ("LIMIT", "BUY", "NEW")
    assert (amended.price, amended.orig_qty) == (Decimal("59600.0"), Decimal("0.100"))
    assert ex.open_orders("alice", BTC) == [amended]
    assert ex.events()[n:] == [
        OrderAmended(placed.order_id, "alice", BTC, BUY, "ro-1", 596_000, 100, 0, 595_000, 200)
    ]
    # a reduce-only order is never larger than the position (0.3 short), as a new one
    amended = ex.modify_order("alice", BTC, placed.order_id, side="BUY", quantity="0.5",
                              price="59600")  # fmt: skip
    assert amended.orig_qty == Decimal("0.300")
    settled(ex)


def test_a_partly_filled_order_keeps_its_fills(ex: Exchange) -> None:
    bid = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59900")
    ex.place_order("carol", BTC, "SELL", "MARKET", "0.04")
    amended = ex.modify_order("alice", BTC, bid.order_id, side="BUY", quantity="0.05",
                              price="59800")  # fmt: skip
    assert amended.status == "PARTIALLY_FILLED"
    assert (amended.orig_qty, amended.executed_qty) == (Decimal("0.050"), Decimal("0.040"))
    assert amended.avg_price == Decimal("59900")
    assert ex.order_book(BTC)["bids"] == [(Decimal("59800.0"), Decimal("0.010"))]
    settled(ex)


@dataclass(frozen=True)
class Crossing:
    name: str
    quantity: str
    price: str
    status: str
    executed: str
    trades: list[tuple[str, str, str]]  # (maker, price, qty)
    bids: list[tuple[str, str]]  # the book's bids after it


CROSSING: Final = [
    Crossing("through the best ask: takes it, rests the rest", "0.1", "60000",
             "PARTIALLY_FILLED", "0.050", [("carol", "60000.0", "0.050")],
             [("60000.0", "0.050")]),
    Crossing("through two levels: filled", "0.15", "60100", "FILLED", "0.150",
             [("carol", "60000.0", "0.050"), ("bob", "60100.0", "0.100")], []),
    Crossing("a larger quantity through two levels", "0.2", "60100", "PARTIALLY_FILLED",
             "0.150", [("carol", "60000.0", "0.050"), ("bob", "60100.0", "0.100")],
             [("60100.0", "0.050")]),
]  # fmt: skip


@pytest.mark.parametrize("case", CROSSING, ids=lambda c: c.name)
def test_a_new_price_that_crosses_trades_as_a_new_order(ex: Exchange, case: Crossing) -> None:
    ex.place_order("carol", BTC, "SELL", "LIMIT", "0.05", "60000")
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "60100")
    bid = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59900")
    n = len(ex.events())
    amended = ex.modify_order("alice", BTC, bid.order_id, side="BUY", quantity=case.quantity,
                              price=case.price)  # fmt: skip
    assert (amended.status, str(amended.executed_qty)) == (case.status, case.executed)
    events = ex.events()[n:]
    assert type(events[0]) is OrderAmended
    trades = of_type(events, TradeExecuted)
    spec = ex.engine.market(BTC).spec
    assert [
        (t.maker_account, str(spec.price_to_decimal(t.price_ticks)),
         str(spec.qty_to_decimal(t.qty_lots))) for t in trades
    ] == case.trades  # fmt: skip
    for t in trades:  # alice takes: the taker's side, fee and order
        assert (t.taker_account, t.taker_order_id, t.taker_side) == ("alice", bid.order_id, BUY)
        assert t.taker_fee_atoms == -(-t.price_ticks * t.qty_lots * 100 * 500 // 10**6)
    assert [(str(p), str(q)) for p, q in ex.order_book(BTC)["bids"]] == case.bids
    assert ex.position("alice", BTC).size == Decimal(case.executed)
    settled(ex)


def test_crossing_its_own_order_expires_the_rest(ex: Exchange) -> None:
    """Expire-taker self-trade prevention, as for a new order: the bid that would take
    alice's own ask is expired (and said so: EXPIRED, OrderCanceled SELF_TRADE)."""
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.1", "60000")
    bid = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59900")
    n = len(ex.events())
    amended = ex.modify_order("alice", BTC, bid.order_id, side="BUY", quantity="0.1",
                              price="60000")  # fmt: skip
    assert (amended.status, amended.executed_qty) == ("EXPIRED", Decimal("0.000"))
    [ended] = of_type(ex.events()[n:], OrderCanceled)
    assert (ended.order_id, ended.reason, ended.remaining_lots) == (
        bid.order_id, EndReason.SELF_TRADE, 100)  # fmt: skip
    assert [o.side for o in ex.open_orders("alice", BTC)] == ["SELL"]
    settled(ex)


def test_a_gtx_order_that_does_not_cross_is_amended(ex: Exchange) -> None:
    ex.place_order("carol", BTC, "SELL", "LIMIT", "0.1", "60200")
    gtx = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59000", "GTX")
    amended = ex.modify_order("alice", BTC, gtx.order_id, side="BUY", quantity="0.1",
                              price="60100")  # fmt: skip
    assert (amended.status, amended.time_in_force, amended.price) == (
        "NEW", "GTX", Decimal("60100.0"))  # fmt: skip
    settled(ex)


# -- margin ----------------------------------------------------------------------------------------
def reserved_atoms(ex: Exchange, account: str) -> int:
    return ex.engine.accounts[account].reserved_atoms


@pytest.mark.parametrize(
    ("quantity", "price", "code"),
    [
        ("0.03", "59900", 0),  # 89.85 USDT <= 100
        ("0.016", "62000", 0),  # 49.6 IM + 0.016 x 2,000 open loss = 81.6
        ("0.04", "59900", -2019),  # 119.8 > 100
        ("0.02", "62000", -2019),  # 62 + 40 open loss = 102 > 100
    ],
)
def test_margin_is_checked_for_the_new_size_and_price(
    ex: Exchange, quantity: str, price: str, code: int
) -> None:
    """dave has 100 USDT: his 0.02 bid @ 59,900 holds 59.9; the amended one needs what a new
    order of that size and price would (IM at 20x, plus the open loss of a buy above the mark)."""
    ex.deposit("dave", "100")
    bid = ex.place_order("dave", BTC, "BUY", "LIMIT", "0.02", "59900")
    assert reserved_atoms(ex, "dave") == margin_atoms("59900", "0.02")
    before = ex.state_hash()
    if code:
        with pytest.raises(ExchangeError) as info:
            ex.modify_order("dave", BTC, bid.order_id, side="BUY", quantity=quantity, price=price)
        assert info.value.code == code
        assert ex.state_hash() == before
        assert reserved_atoms(ex, "dave") == margin_atoms("59900", "0.02")
    else:
        ex.modify_order("dave", BTC, bid.order_id, side="BUY", quantity=quantity, price=price)
        twin = Exchange(mark_price="index")  # the same order placed new
        twin.set_index_price(BTC, "60000")
        twin.deposit("dave", "100")
        twin.place_order("dave", BTC, "BUY", "LIMIT", quantity, price)
        assert reserved_atoms(ex, "dave") == reserved_atoms(twin, "dave")
        assert ex.account("dave") == twin.account("dave")
    settled(ex)


def test_an_older_order_keeps_its_share_of_the_closing_allowance(ex: Exchange) -> None:
    """alice is long 0.1; sell A (0.1 @ 61,000) closes it and holds nothing, the later sell B
    (0.1 @ 61,100) opens 0.1 short: 305.5 USDT. Amended, A keeps its place (its id): shrunk
    to 0.05 it leaves 0.05 of the allowance to B; grown to 0.2 it takes all of it back and
    opens 0.1 itself."""
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "60000")
    ex.place_order("alice", BTC, "BUY", "MARKET", "0.1")
    a = ex.place_order("alice", BTC, "SELL", "LIMIT", "0.1", "61000")
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.1", "61100")
    assert reserved_atoms(ex, "alice") == margin_atoms("61100", "0.1")
    ex.modify_order("alice", BTC, a.order_id, side="SELL", quantity="0.05", price="61000")
    assert reserved_atoms(ex, "alice") == margin_atoms("61100", "0.05")
    settled(ex)
    ex.modify_order("alice", BTC, a.order_id, side="SELL", quantity="0.2", price="61000")
    assert reserved_atoms(ex, "alice") == margin_atoms("61000", "0.1") + margin_atoms(
        "61100", "0.1"
    )
    settled(ex)


def test_side_margin_counts_oldest_first() -> None:
    """The readable twin of the full re-pricing, on figures worked by hand: two sells of 4
    lots at 60,010 and 60,030 (ticks 600,100 and 600,300), mark 60,000, 10x, 100 atoms per
    tick x lot."""
    engine = Engine(default_specs(), "index")
    engine.apply_all([UpdateIndex(BTC, 600_000), Deposit("a", 10**12)])
    limit, gtc = OrderType.LIMIT, TimeInForce.GTC
    engine.apply(PlaceOrder("a", BTC, SELL, limit, gtc, 4, 600_100))
    engine.apply(PlaceOrder("a", BTC, SELL, limit, gtc, 4, 600_300))
    first, second = engine.accounts["a"].orders.values()
    orders = [first, second]
    # 4 close; 1 closes and 3 open at 600,300: ceil(3 x 600,300 x 100 / 10)
    assert side_margin_atoms(orders, 5, SELL, 600_000, 10, 100) == 18_009_000
    # the first amended to 6 lots at 600,200: 5 close, 1 opens; then 4 open at 600,300
    assert side_margin_atoms(orders, 5, SELL, 600_000, 10, 100, first, 6, 600_200) == (
        6_002_000 + 24_012_000
    )
    # a sell below the mark pays its open loss: 2 lots at 599,000 from flat
    assert side_margin_atoms(orders, 0, SELL, 600_000, 10, 100, first, 2, 599_000) == (
        11_980_000 + 200_000 + 24_012_000
    )


# -- by client order id, typed, journal, determinism ---------------------------------------------
def test_by_client_order_id_and_the_id_wins(ex: Exchange) -> None:
    one = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59000", client_order_id="one")
    two = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59100", client_order_id="two")
    amended = ex.modify_order("alice", BTC, client_order_id="two", side="BUY", quantity="0.2",
                              price="59100")  # fmt: skip
    assert (amended.order_id, amended.orig_qty) == (two.order_id, Decimal("0.200"))
    # both sent: the order id prevails (Binance), the client id is not looked at
    amended = ex.modify_order("alice", BTC, one.order_id, "two", side="BUY", quantity="0.3",
                              price="59000")  # fmt: skip
    assert (amended.order_id, amended.client_order_id) == (one.order_id, "one")
    settled(ex)


def test_typed_amendments_through_submit(ex: Exchange) -> None:
    bid = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59900", client_order_id="c")
    [events] = ex.submit([AmendOrder("alice", BTC, None, "c", BUY, 50, 599_500)])
    assert events == [OrderAmended(bid.order_id, "alice", BTC, BUY, "c", 599_500, 50, 0,
                                   599_000, 100)]  # fmt: skip
    # an engine refusal is an event there, not an exception
    [events] = ex.submit([AmendOrder("alice", BTC, bid.order_id, None, SELL, 50, 599_500)])
    assert events == [RequestRejected("alice", BTC, Reason.AMEND_SIDE_MISMATCH)]
    settled(ex)


def amending_session(ex: Exchange) -> None:
    """Orders amended every way, a refusal, a crossing, by client id."""
    ex.place_order("carol", BTC, "SELL", "LIMIT", "0.05", "60000")
    bid = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59900", client_order_id="b")
    ask = ex.place_order("alice", BTC, "SELL", "LIMIT", "0.1", "60500")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59900")
    ex.modify_order("alice", BTC, bid.order_id, side="BUY", quantity="0.08", price="59900")
    ex.modify_order("alice", BTC, client_order_id="b", side="BUY", quantity="0.12", price="59950")
    with pytest.raises(ExchangeError):
        ex.modify_order("alice", BTC, ask.order_id, side="BUY", quantity="0.1", price="60500")
    ex.modify_order("alice", BTC, bid.order_id, side="BUY", quantity="0.12", price="60000")
    ex.set_index_price(BTC, "60100")
    ex.modify_order("alice", BTC, ask.order_id, side="SELL", quantity="0.2", price="60400")
    ex.place_order("bob", BTC, "BUY", "MARKET", "0.05")
    ex.submit([AmendOrder("alice", BTC, ask.order_id, None, SELL, 120, 604_100)])


def test_journal_replay_gives_the_same_state_hash(tmp_path: Path) -> None:
    db = tmp_path / "amend.db"
    ex = Exchange(journal=db, mark_price="index")
    ex.set_index_price(BTC, "60000")
    for name, amount in (("alice", "100000"), ("bob", "1000000"), ("carol", "1000000")):
        ex.deposit(name, amount)
    amending_session(ex)
    settled(ex)
    expected = ex.state_hash()
    assert any(type(e) is OrderAmended for e in ex.events())
    assert ex.journal is not None
    ex.journal.close(snapshot=False)
    assert replay(db).state_hash == expected  # from the first command, in a fresh engine
    again = Exchange(journal=db, mark_price="index")  # recovery: the same path
    assert again.state_hash() == expected
    settled(again)
    again.close()


def random_amendments(seed: int, n: int = 400) -> list[Command]:
    """A stream that places, amends (every way, refusals included) and cancels: each command
    drawn from the state the commands before it left, in an engine of its own."""
    rng = random.Random(seed)
    engine = Engine(default_specs(), "index")
    names = ("alice", "bob", "carol", "dave")
    commands: list[Command] = [UpdateIndex(BTC, 600_000), SetLeverage("dave", BTC, 50)]
    commands += [Deposit(name, 10**11 if name != "dave" else 500 * ATOMS_PER_USDT)
                 for name in names]  # fmt: skip
    engine.apply_all(commands)
    for _ in range(n):
        name = rng.choice(names)
        live = [o for a in engine.accounts.values() for o in a.orders.values()]
        roll = rng.random()
        if roll < 0.45 and live:
            o = rng.choice(live)
            side = o.side if rng.random() < 0.9 else -o.side
            qty = max(1, o.qty_lots + rng.randint(-30, 30))
            price = o.price_ticks if rng.random() < 0.4 else 600_000 + rng.randint(-900, 900)
            by_id = rng.random() < 0.8 or o.client_order_id is None
            order_id, cid = (o.order_id, None) if by_id else (None, o.client_order_id)
            cmd: Command = AmendOrder(o.account, BTC, order_id, cid, side, qty, price)
        elif roll < 0.55 and live:
            o = rng.choice(live)
            cmd = CancelOrder(o.account, BTC, o.order_id)
        elif roll < 0.6:
            cmd = UpdateIndex(BTC, 600_000 + rng.randint(-600, 600))
        else:
            side = rng.choice((BUY, SELL))
            tif = rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.GTX, TimeInForce.IOC))
            cid = f"c{rng.randint(0, 30)}" if rng.random() < 0.3 else None
            price = 600_000 - side * rng.randint(-300, 900)  # mostly resting, some crossing
            lots, reduce_only = rng.randint(1, 40), rng.random() < 0.1
            cmd = PlaceOrder(name, BTC, side, OrderType.LIMIT, tif, lots, price, reduce_only, cid)
        engine.apply(cmd)
        commands.append(cmd)
    return commands


def test_the_same_stream_gives_the_same_events_and_restores_mid_way() -> None:
    commands = random_amendments(seed=3)
    amended = rejected = 0
    a, b = Engine(default_specs(), "index"), Engine(default_specs(), "index")
    twin: Engine | None = None
    for i, cmd in enumerate(commands):
        if i == len(commands) // 2:
            twin = Engine.restore(a.snapshot())
            assert twin.state_hash() == a.state_hash()
        events = a.apply(cmd)
        assert b.apply(cmd) == events
        if twin is not None:
            assert twin.apply(cmd) == events
        a.check_invariants()
        deposits, held = a.conservation_atoms()
        assert deposits == held
        if isinstance(cmd, AmendOrder):
            amended += type(events[0]) is OrderAmended
            rejected += type(events[0]) is RequestRejected
    assert a.state_hash() == b.state_hash()
    assert twin is not None and twin.state_hash() == a.state_hash()
    assert amended >= 50 and rejected >= 10, (amended, rejected)
    assert a.next_trade_id > 20  # amendments crossed and traded
