"""Conditional orders end to end: STOP_MARKET, STOP, TAKE_PROFIT_MARKET, TAKE_PROFIT and
TRAILING_STOP_MARKET through the facade and the engine (BINANCE_API.md §4.4, DESIGN.md §5).

Markets are perpex's defaults (BTCUSDT: tick 0.1, step 0.001, maker 0.02 %, taker 0.05 %,
price band 5 %, brackets of 2024-10-24: 0.4 % MMR to 50,000 USDT of notional, then 0.5 % with
50 USDT cum; perpex.defaults). The mark follows the index (mark_price="index"), so a test
moves the mark with `set_index_price`. Trigger rules (Binance): a STOP* BUY fires at price >=
stop and a SELL at price <= stop, TAKE_PROFIT* the other way round; a trailing SELL fires at
price <= highest × (1 - rate), a BUY at price >= lowest × (1 + rate). Every money figure is
derived in the test from those parameters; every test ends with `settled(ex)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.messages import (
    ConditionalEndReason,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    EndReason,
    Event,
    LiquidationTriggered,
    OrderAccepted,
    OrderCanceled,
    Reason,
    TradeExecuted,
)
from perpex.errors import REASON_CODES

E = TypeVar("E", bound=Event)
BTC = "BTCUSDT"
TAKER_FEE = Decimal("0.0005")  # perpex.defaults
ATOM = Decimal("0.000001")
TICKS_PER_USDT = 10  # BTCUSDT tick 0.1


def fee(notional: Decimal) -> Decimal:
    """A taker fee, rounded up to the atom (DESIGN.md §2)."""
    return (notional * TAKER_FEE).quantize(ATOM, rounding="ROUND_CEILING")


def ticks(price: str) -> int:
    return int(Decimal(price) * TICKS_PER_USDT)


def settled(ex: Exchange) -> None:
    ex.check_invariants()
    deposits, held = ex.engine.conservation_atoms()
    assert deposits == held


@pytest.fixture
def ex() -> Exchange:
    """Default markets, BTC mark 60,000; alice 10k, carol 1M and bob (the market maker) 10M."""
    exchange = Exchange(mark_price="index")
    exchange.set_index_price(BTC, "60000")
    exchange.deposit("alice", "10000")
    exchange.deposit("carol", "1000000")
    exchange.deposit("bob", "10000000")
    exchange.set_leverage("bob", BTC, 10)
    return exchange


def new_events(ex: Exchange, call: object, *args: object, **kwargs: object) -> list[Event]:
    before = len(ex.events())
    assert callable(call)
    call(*args, **kwargs)
    return ex.events()[before:]


def move(ex: Exchange, price: str) -> list[Event]:
    """Set the index (= the mark) and return the events of that tick."""
    return new_events(ex, ex.set_index_price, BTC, price)


def refused(code: int, ex: Exchange, call: object, *args: object, **kwargs: object) -> None:
    """The call raises `code` and changes nothing (state hash and id counter)."""
    before, next_id = ex.state_hash(), ex.engine.next_order_id
    assert callable(call)
    with pytest.raises(ExchangeError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value.msg
    assert ex.state_hash() == before
    assert ex.engine.next_order_id == next_id


def open_position(ex: Exchange, account: str, side: str, qty: str, price: str) -> None:
    """bob rests the other side at `price` and `account` takes it."""
    other = "SELL" if side == "BUY" else "BUY"
    ex.place_order("bob", BTC, other, "LIMIT", qty, price)
    assert ex.place_order(account, BTC, side, "LIMIT", qty, price).status == "FILLED"


def of_type(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


# -- every type, both sides ---------------------------------------------------------------------


@dataclass(frozen=True)
class TriggerCase:
    name: str
    type: str
    side: str
    stop: str | None  # trigger price
    limit: str | None  # STOP / TAKE_PROFIT
    callback: str | None  # trailing, per cent
    quiet: tuple[str, ...]  # marks, in order, that do not fire it
    fire_at: str
    placed_type: str
    placed_price: str  # of the LIMIT it places ("0" for a market order)


TRIGGER_CASES = [
    TriggerCase("stop-market buy fires at >= stop", "STOP_MARKET", "BUY", "60600", None, None,
                ("60599.9",), "60600", "MARKET", "0"),
    TriggerCase("stop-market sell fires at <= stop", "STOP_MARKET", "SELL", "59400", None, None,
                ("59400.1",), "59400", "MARKET", "0"),
    TriggerCase("take-profit-market buy fires at <= stop", "TAKE_PROFIT_MARKET", "BUY", "59400",
                None, None, ("59400.1",), "59400", "MARKET", "0"),
    TriggerCase("take-profit-market sell fires at >= stop", "TAKE_PROFIT_MARKET", "SELL",
                "60600", None, None, ("60599.9",), "60600", "MARKET", "0"),
    TriggerCase("stop-limit buy places a limit", "STOP", "BUY", "60600", "60650", None,
                ("60599.9",), "60600", "LIMIT", "60650"),
    TriggerCase("stop-limit sell places a limit", "STOP", "SELL", "59400", "59350", None,
                ("59400.1",), "59400", "LIMIT", "59350"),
    TriggerCase("take-profit-limit buy places a limit", "TAKE_PROFIT", "BUY", "59400", "59450",
                None, ("59400.1",), "59400", "LIMIT", "59450"),
    TriggerCase("take-profit-limit sell places a limit", "TAKE_PROFIT", "SELL", "60600", "60550",
                None, ("60599.9",), "60600", "LIMIT", "60550"),
    # highest 61,000 -> fires at 61,000 × 0.99 = 60,390
    TriggerCase("trailing sell 1 % from the high", "TRAILING_STOP_MARKET", "SELL", None, None,
                "1", ("61000", "60390.1"), "60390", "MARKET", "0"),
    # lowest 59,000 -> fires at 59,000 × 1.01 = 59,590
    TriggerCase("trailing buy 1 % from the low", "TRAILING_STOP_MARKET", "BUY", None, None,
                "1", ("59000", "59589.9"), "59590", "MARKET", "0"),
]  # fmt: skip


@pytest.mark.parametrize("case", TRIGGER_CASES, ids=lambda c: c.name)
def test_each_type_fires_on_its_side_of_the_mark(ex: Exchange, case: TriggerCase) -> None:
    # bob quotes both sides 1.2 % away, so a fired market order fills and a limit may rest
    ex.place_order("bob", BTC, "SELL", "LIMIT", "1", "60700")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "1", "59300")
    view = ex.place_order(
        "alice", BTC, case.side, case.type, "0.01", price=case.limit, stop_price=case.stop,
        callback_rate=case.callback, client_order_id="c1",
    )  # fmt: skip
    assert (view.type, view.status, view.side) == (case.type, "NEW", case.side)
    assert view.working_type == "MARK_PRICE"
    if case.stop is not None:
        assert view.stop_price == Decimal(case.stop)
    else:  # a trailing stop shows its current trigger: 60,000 × (1 ∓ 1 %)
        expected = Decimal("59400") if case.side == "SELL" else Decimal("60600")
        assert view.stop_price == expected and view.callback_rate == Decimal("1")
    assert [o.order_id for o in ex.open_orders("alice")] == [view.order_id]
    for price in case.quiet:
        assert not of_type(move(ex, price), ConditionalOrderTriggered), price
    events = move(ex, case.fire_at)
    (fired,) = of_type(events, ConditionalOrderTriggered)
    assert (fired.order_id, fired.price_ticks) == (view.order_id, ticks(case.fire_at))
    (placed,) = of_type(events, OrderAccepted)
    assert placed.order_id == fired.placed_order_id
    assert placed.order_type.name == case.placed_type
    assert placed.price_ticks == ticks(case.placed_price)
    assert placed.client_order_id == "c1"  # the placed order keeps the client id
    assert events.index(fired) < events.index(placed)
    if case.placed_type == "MARKET":  # it took bob's quote: 60,700 or 59,300
        (trade,) = of_type(events, TradeExecuted)
        assert trade.price_ticks == ticks("60700" if case.side == "BUY" else "59300")
        assert ex.open_orders("alice") == []
    else:  # the limit rests inside bob's quotes
        (resting,) = ex.open_orders("alice")
        assert (resting.order_id, resting.type, resting.price) == (
            placed.order_id,
            "LIMIT",
            Decimal(case.placed_price),
        )
    settled(ex)


IMMEDIATE = [
    ("STOP_MARKET", "BUY", "60000"),  # price >= stop already
    ("STOP_MARKET", "SELL", "60000"),
    ("STOP_MARKET", "BUY", "59999.9"),
    ("STOP_MARKET", "SELL", "60000.1"),
    ("STOP", "BUY", "59000"),
    ("STOP", "SELL", "61000"),
    ("TAKE_PROFIT_MARKET", "BUY", "60000"),  # price <= stop already
    ("TAKE_PROFIT_MARKET", "SELL", "60000"),
    ("TAKE_PROFIT_MARKET", "BUY", "61000"),
    ("TAKE_PROFIT_MARKET", "SELL", "59000"),
    ("TAKE_PROFIT", "BUY", "61000"),
    ("TAKE_PROFIT", "SELL", "59000"),
]


@pytest.mark.parametrize(("type_", "side", "stop"), IMMEDIATE)
def test_a_stop_that_would_trigger_at_once_is_refused(
    ex: Exchange, type_: str, side: str, stop: str
) -> None:
    limit = "60000" if type_ in ("STOP", "TAKE_PROFIT") else None
    refused(-2021, ex, ex.place_order, "alice", BTC, side, type_, "0.01", price=limit,
            stop_price=stop)  # fmt: skip
    settled(ex)


@pytest.mark.parametrize(
    ("side", "activation"),
    [("SELL", "60000"), ("SELL", "59000"), ("BUY", "60000"), ("BUY", "61000")],
)
def test_a_trailing_stop_activation_already_reached_is_refused(
    ex: Exchange, side: str, activation: str
) -> None:
    # a SELL (protecting a long) activates once the price rises to it, a BUY once it falls
    refused(-2021, ex, ex.place_order, "alice", BTC, side, "TRAILING_STOP_MARKET", "0.01",
            callback_rate="1", activation_price=activation)  # fmt: skip
    settled(ex)


def test_a_trailing_stop_waits_for_its_activation_price(ex: Exchange) -> None:
    ex.place_order("bob", BTC, "BUY", "LIMIT", "1", "59300")
    view = ex.place_order("alice", BTC, "SELL", "TRAILING_STOP_MARKET", "0.01",
                          callback_rate="0.5", activation_price="60500")  # fmt: skip
    assert view.stop_price == Decimal("60500")  # waiting: shows the activation price
    # 0.5 % below 60,000 would fire a trailing stop already active; this one is not yet
    assert not of_type(move(ex, "59600"), ConditionalOrderTriggered)
    assert not of_type(move(ex, "60500"), ConditionalOrderTriggered)  # activates, cannot fire
    (live,) = ex.open_orders("alice")
    assert live.stop_price == Decimal("60197.5")  # 60,500 × 0.995
    assert not of_type(move(ex, "60197.6"), ConditionalOrderTriggered)
    assert of_type(move(ex, "60197.5"), ConditionalOrderTriggered)
    settled(ex)


@pytest.mark.parametrize("rate", ["0.05", "0", "10.1", "0.15", "25", "0.00001"])
def test_callback_rate_outside_one_tenth_to_ten_percent_is_refused(ex: Exchange, rate: str) -> None:
    refused(-2007, ex, ex.place_order, "alice", BTC, "SELL", "TRAILING_STOP_MARKET", "0.01",
            callback_rate=rate)  # fmt: skip
    settled(ex)


@pytest.mark.parametrize("rate", ["0.1", "10", "2.5"])
def test_callback_rate_at_the_edges_and_on_the_step_is_accepted(ex: Exchange, rate: str) -> None:
    view = ex.place_order("alice", BTC, "SELL", "TRAILING_STOP_MARKET", "0.01", callback_rate=rate)
    assert view.callback_rate == Decimal(rate)
    settled(ex)


# -- bad input: a Binance code and no state change ------------------------------------------------


@dataclass(frozen=True)
class BadCase:
    name: str
    code: int
    kwargs: dict[str, object]
    position: str | None = None  # alice's position first: "BUY 0.1" = long 0.1 at 60,000


BAD_CASES = [
    BadCase("stop-market without a trigger", -1102,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01"}),
    BadCase("stop-limit without a price", -1102,
            {"side": "SELL", "type": "STOP", "quantity": "0.01", "stop_price": "59000"}),
    BadCase("trailing without a callback rate", -1102,
            {"side": "SELL", "type": "TRAILING_STOP_MARKET", "quantity": "0.01"}),
    BadCase("stop-market with a price", -1106,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "59000",
             "price": "58900"}),
    BadCase("trailing with a trigger price", -1106,
            {"side": "SELL", "type": "TRAILING_STOP_MARKET", "quantity": "0.01",
             "callback_rate": "1", "stop_price": "59000"}),
    BadCase("stop-market with an activation price", -1106,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "59000",
             "activation_price": "59500"}),
    BadCase("stop-market with a callback rate", -1106,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "59000",
             "callback_rate": "1"}),
    BadCase("conditional order with a take-profit attached", -1106,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "59000",
             "take_profit": "61000"}),
    BadCase("limit order with a trigger price", -1106,
            {"side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "60000",
             "stop_price": "59000"}),
    BadCase("limit order with close-position", -1106,
            {"side": "BUY", "type": "LIMIT", "quantity": "0.01", "price": "60000",
             "close_position": True}),
    BadCase("close-position with a quantity", -4137,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.1", "stop_price": "59000",
             "close_position": True}, position="BUY 0.1"),
    BadCase("close-position on a stop-limit", -1106,
            {"side": "SELL", "type": "STOP", "stop_price": "59000", "price": "58900",
             "close_position": True}, position="BUY 0.1"),
    BadCase("close-position and reduce-only", -1106,
            {"side": "SELL", "type": "STOP_MARKET", "stop_price": "59000",
             "close_position": True, "reduce_only": True}, position="BUY 0.1"),
    BadCase("reduce-only stop larger than the position", -2022,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.101", "stop_price": "59000",
             "reduce_only": True}, position="BUY 0.1"),
    BadCase("reduce-only stop without a position", -2022,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "59000",
             "reduce_only": True}),
    BadCase("reduce-only stop on the side of the position", -2022,
            {"side": "BUY", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "61000",
             "reduce_only": True}, position="BUY 0.1"),
    BadCase("close-position stop without a position", -2022,
            {"side": "SELL", "type": "STOP_MARKET", "stop_price": "59000",
             "close_position": True}),
    BadCase("close-position take-profit on the side of the position", -2022,
            {"side": "SELL", "type": "TAKE_PROFIT_MARKET", "stop_price": "61000",
             "close_position": True}, position="SELL 0.1"),
    BadCase("trigger off the tick", -4014,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "59000.05"}),
    BadCase("notional below the minimum at the trigger", -4164,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.001", "stop_price": "4000"}),
    BadCase("trigger below the market's minimum price", -4013,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "500"}),
    BadCase("unknown working type", -1100,
            {"side": "SELL", "type": "STOP_MARKET", "quantity": "0.01", "stop_price": "59000",
             "working_type": "INDEX_PRICE"}),
    BadCase("entry with its stop-loss above a long's mark", -2021,
            {"side": "BUY", "type": "MARKET", "quantity": "0.01", "stop_loss": "60000"}),
    BadCase("entry with its take-profit below a long's mark", -2021,
            {"side": "BUY", "type": "MARKET", "quantity": "0.01", "take_profit": "59000"}),
    BadCase("protection on a reduce-only entry", -2022,
            {"side": "SELL", "type": "MARKET", "quantity": "0.1", "reduce_only": True,
             "stop_loss": "61000"}, position="BUY 0.1"),
    BadCase("short entry with its stop-loss below the mark", -2021,
            {"side": "SELL", "type": "LIMIT", "quantity": "0.01", "price": "60000",
             "stop_loss": "59990"}),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES, ids=lambda c: c.name)
def test_bad_conditional_input_is_refused_and_changes_nothing(ex: Exchange, case: BadCase) -> None:
    ex.place_order("bob", BTC, "SELL", "LIMIT", "1", "60100")  # an entry would trade with it
    if case.position is not None:
        side, qty = case.position.split()
        open_position(ex, "alice", side, qty, "60000")
    trades = len(of_type(ex.events(), TradeExecuted))
    refused(case.code, ex, ex.place_order, "alice", BTC, **case.kwargs)
    assert len(of_type(ex.events(), TradeExecuted)) == trades  # no entry went through
    settled(ex)


def test_reason_codes_follow_binance(ex: Exchange) -> None:
    codes = {reason: code for reason, (code, _) in REASON_CODES.items()}
    assert codes[Reason.WOULD_IMMEDIATELY_TRIGGER] == -2021
    assert codes[Reason.INVALID_CALLBACK_RATE] == -2007
    assert codes[Reason.INVALID_ACTIVATION_PRICE] == -4135
    assert codes[Reason.QTY_WITH_CLOSE_POSITION] == -4137
    assert codes[Reason.TOO_MANY_STOP_ORDERS] == -4045
    assert codes[Reason.STOP_PRICE_MISSING] == codes[Reason.CALLBACK_RATE_MISSING] == -1102
    assert codes[Reason.STOP_PRICE_NOT_REQUIRED] == codes[Reason.CLOSE_POSITION_NOT_ALLOWED]
    assert codes[Reason.CLOSE_POSITION_NOT_ALLOWED] == -1106
    assert all(reason in REASON_CODES for reason in Reason), "a reason without a Binance code"


def test_the_eleventh_conditional_order_of_a_symbol_is_refused(ex: Exchange) -> None:
    # Binance's MAX_NUM_ALGO_ORDERS on BTCUSDT: 10 per account and symbol
    for i in range(10):
        ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.01", stop_price=str(59000 - i))
    refused(-4045, ex, ex.place_order, "alice", BTC, "SELL", "STOP_MARKET", "0.01",
            stop_price="58000")  # fmt: skip
    # open book orders do not count against it, nor do other accounts' stops
    ex.place_order("carol", BTC, "SELL", "STOP_MARKET", "0.01", stop_price="58000")
    settled(ex)


def test_client_order_ids_are_unique_across_open_and_conditional_orders(ex: Exchange) -> None:
    ex.place_order("alice", BTC, "BUY", "LIMIT", "0.01", "59000", client_order_id="a")
    ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.01", stop_price="59000",
                   client_order_id="b")  # fmt: skip
    refused(-4116, ex, ex.place_order, "alice", BTC, "SELL", "STOP_MARKET", "0.01",
            stop_price="58000", client_order_id="a")  # fmt: skip
    refused(-4116, ex, ex.place_order, "alice", BTC, "BUY", "LIMIT", "0.01", "59100",
            client_order_id="b")  # fmt: skip
    # another account may use the same ids
    ex.place_order("carol", BTC, "SELL", "STOP_MARKET", "0.01", stop_price="59000",
                   client_order_id="b")  # fmt: skip
    settled(ex)


# -- cancel and list ------------------------------------------------------------------------------


def test_cancel_works_on_conditional_orders_by_id_and_client_id(ex: Exchange) -> None:
    by_id = ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.01", stop_price="59000")
    by_cid = ex.place_order("alice", BTC, "BUY", "TAKE_PROFIT_MARKET", "0.01", stop_price="59000",
                            client_order_id="tp")  # fmt: skip
    resting = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.01", "59000")
    assert [o.order_id for o in ex.open_orders("alice", BTC)] == sorted(
        [by_id.order_id, by_cid.order_id, resting.order_id]
    )
    assert [o.type for o in ex.open_orders("alice")] == ["STOP_MARKET", "TAKE_PROFIT_MARKET",
                                                          "LIMIT"]  # fmt: skip
    events = new_events(ex, ex.cancel_order, "alice", BTC, by_id.order_id)
    assert events == [
        ConditionalOrderCanceled(by_id.order_id, "alice", BTC, ConditionalEndReason.CANCELED)
    ]
    canceled = ex.cancel_order("alice", BTC, client_order_id="tp")
    assert (canceled.order_id, canceled.status, canceled.type) == (
        by_cid.order_id,
        "CANCELED",
        "TAKE_PROFIT_MARKET",
    )
    refused(-2011, ex, ex.cancel_order, "alice", BTC, by_id.order_id)  # gone
    refused(-2011, ex, ex.cancel_order, "carol", BTC, resting.order_id)  # not carol's
    # the client id is free again
    ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.01", stop_price="59000",
                   client_order_id="tp")  # fmt: skip
    assert ex.open_orders("alice")[0].order_id == resting.order_id
    settled(ex)


def test_another_account_cannot_cancel_a_conditional_order(ex: Exchange) -> None:
    mine = ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.01", stop_price="59000")
    refused(-2011, ex, ex.cancel_order, "carol", BTC, mine.order_id)
    refused(-2011, ex, ex.cancel_order, "alice", "ETHUSDT", mine.order_id)
    settled(ex)


# -- protection at entry --------------------------------------------------------------------------


def test_stop_loss_and_take_profit_attach_to_an_entry_as_one_cancels_the_other(
    ex: Exchange,
) -> None:
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "60000")
    entry = ex.place_order("alice", BTC, "BUY", "MARKET", "0.1", stop_loss="58800",
                           take_profit="60900")  # fmt: skip
    assert entry.status == "FILLED"
    stop, take = ex.open_orders("alice")
    assert (stop.type, stop.side, stop.stop_price, stop.orig_qty, stop.reduce_only) == (
        "STOP_MARKET", "SELL", Decimal("58800"), Decimal("0.1"), True)  # fmt: skip
    assert (take.type, take.stop_price, take.working_type) == (
        "TAKE_PROFIT_MARKET", Decimal("60900"), "MARK_PRICE")  # fmt: skip
    assert stop.order_id == entry.order_id + 1 and take.order_id == entry.order_id + 2
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.1", "60800")  # the take-profit sells to it
    events = move(ex, "60900")
    (fired,) = of_type(events, ConditionalOrderTriggered)
    assert fired.order_id == take.order_id
    assert ConditionalOrderCanceled(stop.order_id, "alice", BTC, ConditionalEndReason.OCO) in events
    assert ex.position("alice", BTC).size == 0
    assert ex.open_orders("alice") == []
    settled(ex)


def test_an_entry_that_is_refused_attaches_nothing(ex: Exchange) -> None:
    # 100 BTC at 20x needs 300k of margin; alice has 10k
    refused(-2019, ex, ex.place_order, "alice", BTC, "BUY", "LIMIT", "100", "60000",
            stop_loss="58000", take_profit="62000")  # fmt: skip
    assert ex.open_orders("alice") == []
    settled(ex)


def test_protection_of_a_resting_entry_waits_for_it_and_goes_with_it(ex: Exchange) -> None:
    entry = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59500", stop_loss="58000",
                           take_profit="62000")  # fmt: skip
    assert [o.type for o in ex.open_orders("alice")] == ["LIMIT", "STOP_MARKET",
                                                          "TAKE_PROFIT_MARKET"]  # fmt: skip
    events = new_events(ex, ex.cancel_order, "alice", BTC, entry.order_id)
    ended = of_type(events, ConditionalOrderCanceled)
    assert [e.reason for e in ended] == [ConditionalEndReason.ENTRY_ENDED] * 2
    assert ex.open_orders("alice") == []
    # filled later instead: the pair stays and protects the position
    entry = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "59500", stop_loss="58000",
                           take_profit="62000")  # fmt: skip
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "59500")
    assert ex.position("alice", BTC).size == Decimal("0.1")
    assert [o.type for o in ex.open_orders("alice")] == ["STOP_MARKET", "TAKE_PROFIT_MARKET"]
    assert ex.engine.conditionals.parents == {}
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.1", "57900")
    events = move(ex, "58000")
    assert of_type(events, ConditionalOrderTriggered)
    assert ex.position("alice", BTC).size == 0 and ex.open_orders("alice") == []
    settled(ex)


# -- the position goes, its stops go ------------------------------------------------------------


def test_closing_the_position_by_hand_cancels_its_stops(ex: Exchange) -> None:
    open_position(ex, "alice", "BUY", "0.1", "60000")
    ex.place_order("alice", BTC, "SELL", "STOP_MARKET", stop_price="58000", close_position=True)
    ex.place_order("alice", BTC, "SELL", "TAKE_PROFIT_MARKET", "0.05", stop_price="62000",
                   reduce_only=True)  # fmt: skip
    # an entry stop (not reduce-only) is not the position's: it stays
    entry_stop = ex.place_order("alice", BTC, "BUY", "STOP_MARKET", "0.01", stop_price="61000")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "60000")
    events = new_events(ex, ex.place_order, "alice", BTC, "SELL", "MARKET", "0.1")
    reasons = [e.reason for e in of_type(events, ConditionalOrderCanceled)]
    assert reasons == [ConditionalEndReason.POSITION_CLOSED] * 2
    assert [o.order_id for o in ex.open_orders("alice")] == [entry_stop.order_id]
    settled(ex)


# -- last-price triggers and cascades -------------------------------------------------------------


def test_contract_price_stops_fire_on_trades_and_cascade(ex: Exchange) -> None:
    """Three CONTRACT_PRICE sell stops below 60,000 over a thin bid ladder: a trade at 59,900
    fires the first; its market sell trades down to 59,700 and fires the second, whose sell
    reaches 59,500 and fires the third. The mark never moves."""
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59900")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59700")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59500")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "1", "59000")
    stops = [
        ex.place_order(account, BTC, "SELL", "STOP_MARKET", qty, stop_price=stop,
                       working_type="CONTRACT_PRICE")
        for account, qty, stop in (("alice", "0.1", "59950"), ("carol", "0.1", "59800"),
                                   ("alice", "0.1", "59600"))
    ]  # fmt: skip
    events = new_events(ex, ex.place_order, "carol", BTC, "SELL", "MARKET", "0.1")
    fired = of_type(events, ConditionalOrderTriggered)
    assert [e.order_id for e in fired] == [s.order_id for s in stops]
    assert [e.price_ticks for e in fired] == [ticks("59900"), ticks("59700"), ticks("59500")]
    trades = of_type(events, TradeExecuted)
    assert [t.price_ticks for t in trades] == [ticks(p) for p in ("59900", "59700", "59500",
                                                                   "59000")]  # fmt: skip
    assert ex.mark_price(BTC) == Decimal("60000")
    assert ex.open_orders("alice") == [] and ex.open_orders("carol") == []
    settled(ex)


def test_a_contract_price_stop_before_any_trade_is_placed_against_the_mark(ex: Exchange) -> None:
    assert ex.engine.market(BTC).last_trade_ticks == 0
    refused(-2021, ex, ex.place_order, "alice", BTC, "SELL", "STOP_MARKET", "0.01",
            stop_price="60000", working_type="CONTRACT_PRICE")  # fmt: skip
    ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.01", stop_price="59900",
                   working_type="CONTRACT_PRICE")  # fmt: skip
    assert not of_type(move(ex, "59000"), ConditionalOrderTriggered)  # the mark is not watched
    settled(ex)


# -- a 20x long with a stop 2 % below entry, on a crash through a thinned book ------------------


def crash_setup(ex: Exchange, with_stop: bool) -> None:
    """alice: isolated 20x, long 1 BTC at 60,000 (margin 60,000 / 20 = 3,000, less the entry's
    taker fee of 30 which the position pays: 2,970). Her liquidation price (MECHANICS.md §1.4,
    bracket 2: MMR 0.5 %, cum 50): (60,000 − 2,970 − 50) / (1 − 0.005) = 57,266.33. The bids
    below are thin: 0.2 BTC at 58,600, 0.3 at 58,400, 0.5 at 58,100."""
    ex.set_margin_mode("alice", BTC, "ISOLATED")
    ex.set_leverage("alice", BTC, 20)
    open_position(ex, "alice", "BUY", "1", "60000")
    assert ex.position("alice", BTC).isolated_margin == Decimal("2970")
    liquidation = ex.position("alice", BTC).liquidation_price
    assert liquidation is not None
    assert abs(liquidation - Decimal(56980) / Decimal("0.995")) < Decimal("0.00000001")
    for qty, price in (("0.2", "58600"), ("0.3", "58400"), ("0.5", "58100")):
        ex.place_order("bob", BTC, "BUY", "LIMIT", qty, price)
    if with_stop:  # 2 % below the entry
        ex.place_order("alice", BTC, "SELL", "STOP_MARKET", stop_price="58800",
                       close_position=True)  # fmt: skip


def test_a_stop_two_percent_below_a_20x_long_fills_with_slippage_and_is_not_liquidated(
    ex: Exchange,
) -> None:
    crash_setup(ex, with_stop=True)
    events = move(ex, "58700")  # the mark gaps through the stop, not the liquidation price
    assert not of_type(events, LiquidationTriggered)
    (fired,) = of_type(events, ConditionalOrderTriggered)
    assert fired.price_ticks == ticks("58700")
    fills = [(t.qty_lots, t.price_ticks) for t in of_type(events, TradeExecuted)]
    assert fills == [(200, ticks("58600")), (300, ticks("58400")), (500, ticks("58100"))]
    # average fill: (0.2 × 58,600 + 0.3 × 58,400 + 0.5 × 58,100) / 1 = 58,290: 510 below the
    # stop, 410 below the mark that fired it
    average = Decimal("0.2") * 58600 + Decimal("0.3") * 58400 + Decimal("0.5") * 58100
    assert average == Decimal("58290")
    realized = sum(t.taker_realized_pnl_atoms for t in of_type(events, TradeExecuted))
    assert Decimal(realized) * ATOM == average - 60000 == Decimal("-1710")
    exit_fee = (
        fee(Decimal("0.2") * 58600) + fee(Decimal("0.3") * 58400) + fee(Decimal("0.5") * 58100)
    )
    assert exit_fee == Decimal("29.145")
    loss = 1710 + exit_fee + fee(Decimal(60000))  # and the entry's 30
    assert loss == Decimal("1769.145")
    assert ex.account("alice").wallet_balance == 10000 - loss == Decimal("8230.855")
    # without the gap the same stop would have lost 1,200 + fees: slippage cost 510
    assert ex.position("alice", BTC).size == 0
    # the crash goes on through the old liquidation price: nothing left to liquidate
    assert not of_type(move(ex, "57000"), LiquidationTriggered)
    assert ex.account("alice").wallet_balance == Decimal("8230.855")
    settled(ex)


def test_the_same_long_without_a_stop_is_liquidated(ex: Exchange) -> None:
    crash_setup(ex, with_stop=False)
    assert not of_type(move(ex, "58700"), LiquidationTriggered)
    events = move(ex, "57000")  # below 57,266.33
    assert [e.account for e in of_type(events, LiquidationTriggered)] == ["alice"]
    assert ex.position("alice", BTC).size == 0
    # the whole isolated margin (3,000 incl. the entry fee) is gone
    assert ex.account("alice").wallet_balance == Decimal("7000")
    settled(ex)


def test_liquidation_beats_stops_when_the_mark_gaps_through_both(ex: Exchange) -> None:
    crash_setup(ex, with_stop=True)
    (stop,) = ex.open_orders("alice")
    events = move(ex, "57000")  # through the stop (58,800) and the liquidation price at once
    liquidated = of_type(events, LiquidationTriggered)
    canceled = ConditionalOrderCanceled(
        stop.order_id, "alice", BTC, ConditionalEndReason.POSITION_CLOSED
    )
    assert liquidated and canceled in events
    assert events.index(liquidated[0]) < events.index(canceled)
    assert not of_type(events, ConditionalOrderTriggered)
    assert ex.account("alice").wallet_balance == Decimal("7000")
    assert ex.open_orders("alice") == []
    settled(ex)


def test_auto_deleveraging_a_position_cancels_its_stops() -> None:
    """dave (long 1 BTC, isolated 20x) is liquidated into an empty book with an empty fund:
    ADL closes carol's opposite short at dave's bankruptcy price, and carol's stop-loss and
    take-profit go with her position, before the take-profit's mark (56,000) could fire it."""
    ex = Exchange(mark_price="index")
    ex.set_index_price(BTC, "60000")
    ex.deposit("dave", "10000")
    ex.deposit("carol", "1000000")
    ex.set_margin_mode("dave", BTC, "ISOLATED")
    ex.set_leverage("dave", BTC, 20)
    ex.place_order("carol", BTC, "SELL", "LIMIT", "1", "60000")
    ex.place_order("dave", BTC, "BUY", "LIMIT", "1", "60000")
    stop = ex.place_order("carol", BTC, "BUY", "STOP_MARKET", stop_price="62000",
                          close_position=True)  # fmt: skip
    take = ex.place_order("carol", BTC, "BUY", "TAKE_PROFIT_MARKET", "1", stop_price="57000",
                          reduce_only=True)  # fmt: skip
    events = move(ex, "56000")
    assert [e.account for e in of_type(events, LiquidationTriggered)] == ["dave"]
    assert ex.position("carol", BTC).size == 0
    assert [(e.order_id, e.reason) for e in of_type(events, ConditionalOrderCanceled)] == [
        (stop.order_id, ConditionalEndReason.POSITION_CLOSED),
        (take.order_id, ConditionalEndReason.POSITION_CLOSED),
    ]
    assert not of_type(events, ConditionalOrderTriggered)
    settled(ex)


# -- the price band and thin books apply to what a stop places -------------------------------------


def test_a_triggered_market_order_stops_at_the_price_band(ex: Exchange) -> None:
    """A market order trades no further than 5 % from the mark (DESIGN.md §7), a triggered one
    too: a stop fired at 58,900 sells down to ceil(58,900 × 0.95) = 55,955 and the rest
    expires. (bob's bid at 55,200 went in while the mark was 58,000: 5 % below is 55,100.)"""
    open_position(ex, "alice", "BUY", "0.2", "60000")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "58000")
    ex.set_index_price(BTC, "58100")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "55200")
    ex.set_index_price(BTC, "59500")
    stop = ex.place_order("alice", BTC, "SELL", "STOP_MARKET", stop_price="59000",
                          close_position=True)  # fmt: skip
    events = move(ex, "58900")
    (fired,) = of_type(events, ConditionalOrderTriggered)
    assert fired.order_id == stop.order_id
    assert [(t.qty_lots, t.price_ticks) for t in of_type(events, TradeExecuted)] == [
        (100, ticks("58000"))
    ]
    assert fired.placed_order_id is not None
    assert OrderCanceled(
        fired.placed_order_id, "alice", BTC, 100, EndReason.PRICE_BAND
    ) in events  # fmt: skip
    # the stop has fired: what is left of the position is unprotected now
    assert ex.position("alice", BTC).size == Decimal("0.1")
    assert ex.open_orders("alice") == []
    settled(ex)


# -- durability ---------------------------------------------------------------------------------


def test_conditional_orders_survive_a_restart_and_a_resend_acts_once(tmp_path: Path) -> None:
    path = tmp_path / "stops.db"
    with Exchange(mark_price="index", journal=path) as ex:
        ex.set_index_price(BTC, "60000")
        ex.deposit("alice", "10000")
        ex.deposit("bob", "1000000")
        open_position(ex, "alice", "BUY", "0.1", "60000")
        first = ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.1", stop_price="59000",
                               reduce_only=True, client_order_id="sl-1")  # fmt: skip
        state = ex.state_hash()
        again = ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.1", stop_price="59000",
                               reduce_only=True, client_order_id="sl-1")  # fmt: skip
        assert again.order_id == first.order_id and ex.state_hash() == state
        ex.place_exit_ladder("alice", BTC, [("61000", "0.5"), ("62000", "0.5")], "58000")
        listed = ex.open_orders("alice")
        state = ex.state_hash()
    with Exchange(mark_price="index", journal=path) as reopened:
        assert reopened.state_hash() == state
        assert reopened.open_orders("alice") == listed
        reopened.check_invariants()
        reopened.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "58900")
        events = move(reopened, "59000")
        assert [e.order_id for e in of_type(events, ConditionalOrderTriggered)] == [first.order_id]
        settled(reopened)


# -- a position that flips through zero in one fill ------------------------------------------------


def test_a_flip_in_one_fill_cancels_the_stops_that_no_longer_close(ex: Exchange) -> None:
    """alice is long 0.1 with a reduce-only stop (SELL) and a close-position take-profit (SELL);
    one market sell of 0.3 takes her to short 0.2: both SELL orders would now add to the
    short, so they go (POSITION_CLOSED); a BUY reduce-only stop placed for a short stays."""
    open_position(ex, "alice", "BUY", "0.1", "60000")
    ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.1", stop_price="59000",
                   reduce_only=True)
    ex.place_order("alice", BTC, "SELL", "TAKE_PROFIT_MARKET", stop_price="61000",
                   close_position=True)
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.3", "60000")
    events = new_events(ex, ex.place_order, "alice", BTC, "SELL", "MARKET", "0.3")
    assert ex.position("alice", BTC).size == Decimal("-0.2")
    canceled = of_type(events, ConditionalOrderCanceled)
    assert [e.reason for e in canceled] == [ConditionalEndReason.POSITION_CLOSED] * 2
    assert [o.type for o in ex.open_orders("alice", BTC)] == []
    # the short's own protection is untouched by later fills that keep the side
    ex.place_order("alice", BTC, "BUY", "STOP_MARKET", "0.2", stop_price="61000",
                   reduce_only=True)
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "60000")
    ex.place_order("alice", BTC, "SELL", "MARKET", "0.1")  # short 0.3 now
    assert [o.type for o in ex.open_orders("alice", BTC)] == ["STOP_MARKET"]
    ex.check_invariants()
