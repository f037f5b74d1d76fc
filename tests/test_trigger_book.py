"""Conditional orders as Binance USDⓈ-M defines them (BINANCE_API.md §4.4), and their book.

Prices are BTCUSDT ticks of 0.1 USDT (perpex.defaults): `P0 = 600_000` is 60,000.0 USDT. Every
other price is derived from P0 in the test. The trigger table (STOP* BUY fires at price >=
stop, SELL at price <= stop; TAKE_PROFIT* the other way round) and the trailing-stop rule
(a SELL fires at price <= highest × (1 - rate), a BUY at price >= lowest × (1 + rate)) are
Binance's. The last test feeds `TriggerBook` and `NaiveTriggerBook` (a list scanned on every
price, written straight from those rules with exact fractions) the same random stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import msgspec
import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from perpex.core.book import BUY, SELL
from perpex.core.messages import OrderType
from perpex.core.orders import (
    FALLS,
    MAX_CALLBACK_RATE_PPM,
    MAX_CONDITIONAL_PER_ACCOUNT,
    MIN_CALLBACK_RATE_PPM,
    RISES,
    ConditionalKind,
    ConditionalOrder,
    ConditionalReject,
    TriggerBook,
    WorkingType,
    placed_order_type,
    trailing_fires,
    trailing_trigger_ticks,
    trigger_direction,
    trigger_price_ticks,
    validate_conditional,
    would_trigger,
)

BTC = "BTCUSDT"
P0 = 600_000  # 60,000.0 USDT in 0.1-USDT ticks
MARK = WorkingType.MARK_PRICE
LAST = WorkingType.CONTRACT_PRICE
STOP_MARKET = ConditionalKind.STOP_MARKET
STOP = ConditionalKind.STOP
TP_MARKET = ConditionalKind.TAKE_PROFIT_MARKET
TP = ConditionalKind.TAKE_PROFIT
TRAILING = ConditionalKind.TRAILING_STOP_MARKET
FIXED_KINDS = (STOP_MARKET, STOP, TP_MARKET, TP)
PCT = 10_000  # ppm in one per cent
R = ConditionalReject


def order(
    order_id: int,
    kind: ConditionalKind,
    side: int,
    *,
    stop: int = 0,
    limit: int | None = None,
    rate: int = 0,
    activation: int | None = None,
    qty: int = 1,
    working_type: WorkingType = MARK,
    account: str = "alice",
    group: int | None = None,
    close_position: bool = False,
    reduce_only: bool = False,
) -> ConditionalOrder:
    """A conditional order; a STOP / TAKE_PROFIT gets its stop price as limit unless told."""
    if limit is None:
        limit = stop if kind in (STOP, TP) else 0
    return ConditionalOrder(
        order_id=order_id,
        account=account,
        symbol=BTC,
        side=side,
        kind=kind,
        working_type=working_type,
        qty_lots=qty,
        stop_price_ticks=stop,
        limit_price_ticks=limit,
        reduce_only=reduce_only,
        close_position=close_position,
        callback_rate_ppm=rate,
        activation_price_ticks=activation,
        oco_group=group,
    )


def ids(orders: list[ConditionalOrder]) -> list[int]:
    return [o.order_id for o in orders]


def book_with(*orders: ConditionalOrder, price: int = P0) -> TriggerBook:
    book = TriggerBook(BTC)
    for o in orders:
        book.add(o, price)
    book.validate_internal_state()
    return book


# -- the trigger table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    name: str
    kind: ConditionalKind
    side: int
    fires_on: int  # RISES: price >= stop; FALLS: price <= stop


TRIGGERS = [
    Trigger("stop-market buy (caps a short's loss)", STOP_MARKET, BUY, RISES),
    Trigger("stop-market sell (caps a long's loss)", STOP_MARKET, SELL, FALLS),
    Trigger("stop-limit buy", STOP, BUY, RISES),
    Trigger("stop-limit sell", STOP, SELL, FALLS),
    Trigger("take-profit-market buy (takes a short's profit)", TP_MARKET, BUY, FALLS),
    Trigger("take-profit-market sell (takes a long's profit)", TP_MARKET, SELL, RISES),
    Trigger("take-profit-limit buy", TP, BUY, FALLS),
    Trigger("take-profit-limit sell", TP, SELL, RISES),
]


@pytest.mark.parametrize("case", TRIGGERS, ids=lambda c: c.name)
@pytest.mark.parametrize("working_type", [MARK, LAST], ids=lambda w: w.name)
def test_fires_at_the_stop_price_and_not_one_tick_before(
    case: Trigger, working_type: WorkingType
) -> None:
    d = case.fires_on
    stop = P0 + d * 100  # 10 USDT ahead of the price, on the side it fires on
    assert trigger_direction(case.kind, case.side) == d
    assert not would_trigger(case.kind, case.side, stop, stop - d)
    assert would_trigger(case.kind, case.side, stop, stop)
    assert would_trigger(case.kind, case.side, stop, stop + d)  # a gap past it fires too

    book = book_with(order(1, case.kind, case.side, stop=stop, working_type=working_type))
    assert book.on_price(working_type, stop - d) == []  # one tick before
    other = LAST if working_type is MARK else MARK
    assert book.on_price(other, stop + d * 1_000) == []  # the other price type is not watched
    assert trigger_price_ticks(book.get(1)) == stop  # type: ignore[arg-type]
    fired = book.on_price(working_type, stop)
    assert ids(fired) == [1]
    assert len(book) == 0 and 1 not in book
    book.validate_internal_state()


@pytest.mark.parametrize("case", TRIGGERS, ids=lambda c: c.name)
def test_a_gap_past_the_stop_fires_it(case: Trigger) -> None:
    stop = P0 + case.fires_on * 100
    book = book_with(order(1, case.kind, case.side, stop=stop))
    assert ids(book.on_price(MARK, stop + case.fires_on * 5_000)) == [1]


def test_fired_orders_become_limit_or_market_orders() -> None:
    assert placed_order_type(STOP) is OrderType.LIMIT
    assert placed_order_type(TP) is OrderType.LIMIT
    assert placed_order_type(STOP_MARKET) is OrderType.MARKET
    assert placed_order_type(TP_MARKET) is OrderType.MARKET
    assert placed_order_type(TRAILING) is OrderType.MARKET


# -- placement: immediate trigger ----------------------------------------------------------------


@pytest.mark.parametrize("case", TRIGGERS, ids=lambda c: c.name)
def test_a_stop_that_would_fire_at_once_is_refused(case: Trigger) -> None:
    """Binance -2021 "Order would immediately trigger." at the stop and beyond it."""
    d = case.fires_on
    for stop in (P0, P0 - d, P0 - d * 5_000):
        o = order(1, case.kind, case.side, stop=stop)
        assert validate_conditional(o, P0) is R.WOULD_IMMEDIATELY_TRIGGER
        assert TriggerBook(BTC).check(o, P0) is R.WOULD_IMMEDIATELY_TRIGGER
    assert validate_conditional(order(1, case.kind, case.side, stop=P0 + d), P0) is None


@pytest.mark.parametrize("side", [SELL, BUY], ids=["sell", "buy"])
def test_a_trailing_activation_price_already_reached_is_refused(side: int) -> None:
    # A SELL trailing stop activates once price >= activation, so its activation must be
    # above the price; a BUY's below it (Binance -2021 otherwise).
    ahead = -side  # the direction in which activation lies: up for a SELL, down for a BUY
    for activation in (P0, P0 - ahead, P0 - ahead * 5_000):
        o = order(1, TRAILING, side, rate=PCT, activation=activation)
        assert validate_conditional(o, P0) is R.WOULD_IMMEDIATELY_TRIGGER
    ok = order(1, TRAILING, side, rate=PCT, activation=P0 + ahead)
    assert validate_conditional(ok, P0) is None
    assert validate_conditional(order(1, TRAILING, side, rate=PCT), P0) is None


@pytest.mark.parametrize("kind", [*FIXED_KINDS, TRAILING], ids=lambda k: k.name)
def test_no_watched_price_yet_is_refused(kind: ConditionalKind) -> None:
    stop = 0 if kind is TRAILING else P0
    o = order(1, kind, SELL, stop=stop, rate=PCT if kind is TRAILING else 0)
    assert validate_conditional(o, 0) is R.NO_REFERENCE_PRICE


# -- placement: the order's fields ---------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    name: str
    order: ConditionalOrder
    reject: ConditionalReject | None


UP = P0 + 100  # a BUY stop's trigger ahead of the price
SHAPES = [
    Shape("stop-market buy", order(1, STOP_MARKET, BUY, stop=UP), None),
    Shape("stop-limit with a limit price", order(1, STOP, BUY, stop=UP, limit=UP + 10), None),
    Shape("stop-limit without one", order(1, STOP, BUY, stop=UP, limit=0), R.LIMIT_PRICE_MISSING),
    Shape(
        "take-profit-limit without one",
        order(1, TP, SELL, stop=UP, limit=0),
        R.LIMIT_PRICE_MISSING,
    ),
    Shape(
        "stop-market with a limit price",
        order(1, STOP_MARKET, BUY, stop=UP, limit=UP),
        R.LIMIT_PRICE_NOT_REQUIRED,
    ),
    Shape("stop-market without a stop", order(1, STOP_MARKET, BUY), R.STOP_PRICE_MISSING),
    Shape(
        "stop-market with a callback rate",
        order(1, STOP_MARKET, BUY, stop=UP, rate=PCT),
        R.CALLBACK_RATE_NOT_REQUIRED,
    ),
    Shape(
        "take-profit with an activation price",
        order(1, TP_MARKET, SELL, stop=UP, activation=UP),
        R.ACTIVATION_PRICE_NOT_REQUIRED,
    ),
    Shape("zero quantity", order(1, STOP_MARKET, BUY, stop=UP, qty=0), R.QTY_NOT_POSITIVE),
    Shape("negative quantity", order(1, STOP_MARKET, BUY, stop=UP, qty=-1), R.QTY_NOT_POSITIVE),
    Shape(
        "close-position stop-market, no quantity",
        order(1, STOP_MARKET, BUY, stop=UP, qty=0, close_position=True),
        None,
    ),
    Shape(
        "close-position take-profit-market, no quantity",
        order(1, TP_MARKET, SELL, stop=UP, qty=0, close_position=True),
        None,
    ),
    Shape(
        "close-position with a quantity (-4137)",
        order(1, STOP_MARKET, BUY, stop=UP, qty=1, close_position=True),
        R.QTY_WITH_CLOSE_POSITION,
    ),
    Shape(
        "close-position and reduce-only",
        order(1, STOP_MARKET, BUY, stop=UP, qty=0, close_position=True, reduce_only=True),
        R.REDUCE_ONLY_WITH_CLOSE_POSITION,
    ),
    Shape(
        "close-position on a stop-limit",
        order(1, STOP, BUY, stop=UP, qty=0, close_position=True),
        R.CLOSE_POSITION_NOT_ALLOWED,
    ),
    Shape(
        "close-position on a trailing stop",
        order(1, TRAILING, SELL, rate=PCT, qty=0, close_position=True),
        R.CLOSE_POSITION_NOT_ALLOWED,
    ),
    Shape("reduce-only stop", order(1, STOP_MARKET, BUY, stop=UP, reduce_only=True), None),
    Shape("trailing, 0.1 %", order(1, TRAILING, SELL, rate=MIN_CALLBACK_RATE_PPM), None),
    Shape("trailing, 10 %", order(1, TRAILING, SELL, rate=MAX_CALLBACK_RATE_PPM), None),
    Shape("trailing, 2.5 %", order(1, TRAILING, BUY, rate=25_000), None),
    Shape("trailing without a rate", order(1, TRAILING, SELL), R.CALLBACK_RATE_MISSING),
    Shape("trailing, 0.09 %", order(1, TRAILING, SELL, rate=900), R.INVALID_CALLBACK_RATE),
    Shape("trailing, 10.1 %", order(1, TRAILING, SELL, rate=101_000), R.INVALID_CALLBACK_RATE),
    Shape("trailing, 1.05 %", order(1, TRAILING, SELL, rate=10_500), R.INVALID_CALLBACK_RATE),
    Shape("trailing, -1 %", order(1, TRAILING, SELL, rate=-PCT), R.INVALID_CALLBACK_RATE),
    Shape(
        "trailing with a stop price",
        order(1, TRAILING, SELL, rate=PCT, stop=UP),
        R.STOP_PRICE_NOT_REQUIRED,
    ),
    Shape(
        "trailing with a limit price",
        order(1, TRAILING, SELL, rate=PCT, limit=UP),
        R.LIMIT_PRICE_NOT_REQUIRED,
    ),
    Shape(
        "trailing, activation 0",
        order(1, TRAILING, BUY, rate=PCT, activation=0),
        R.INVALID_ACTIVATION_PRICE,
    ),
    Shape(
        "trailing, negative activation",
        order(1, TRAILING, BUY, rate=PCT, activation=-5),
        R.INVALID_ACTIVATION_PRICE,
    ),
]


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: c.name)
def test_placement_checks_the_fields(case: Shape) -> None:
    assert validate_conditional(case.order, P0) is case.reject
    book = TriggerBook(BTC)
    assert book.check(case.order, P0) is case.reject
    if case.reject is None:
        book.add(case.order, P0)
        book.validate_internal_state()
        assert len(book) == 1


# -- trailing stops ------------------------------------------------------------------------------


def test_sell_trailing_stop_activates_tracks_the_high_and_fires_at_the_callback() -> None:
    activation = P0 + P0 // 100  # 1 % above the price: 60,600.0
    book = book_with(order(1, TRAILING, SELL, rate=PCT, activation=activation))
    ts = book.get(1)
    assert ts is not None
    assert book.on_price(MARK, activation - 1) == []
    assert not ts.activated and trigger_price_ticks(ts) is None
    assert book.on_price(MARK, activation) == []  # activates, cannot fire on that price
    assert ts.activated and ts.extreme_price_ticks == activation
    high = P0 + 2 * (P0 // 100)  # 61,200.0
    assert book.on_price(MARK, high) == []
    trigger = high * (100 - 1) // 100  # 1 % below the high, a whole tick here: 60,588.0
    assert trigger * 100 == high * 99
    assert trigger_price_ticks(ts) == trigger
    assert book.on_price(MARK, trigger + 1) == []  # one tick before
    assert ts.extreme_price_ticks == high  # a lower price does not move the high
    assert ids(book.on_price(MARK, trigger)) == [1]
    assert len(book) == 0


def test_buy_trailing_stop_activates_tracks_the_low_and_fires_at_the_callback() -> None:
    activation = P0 - P0 // 100  # 1 % below: 59,400.0
    book = book_with(order(1, TRAILING, BUY, rate=PCT, activation=activation))
    ts = book.get(1)
    assert ts is not None
    assert book.on_price(MARK, activation + 1) == []
    assert not ts.activated
    assert book.on_price(MARK, activation) == []
    assert ts.activated and ts.extreme_price_ticks == activation
    low = P0 - 2 * (P0 // 100)  # 58,800.0
    assert book.on_price(MARK, low) == []
    trigger = low * (100 + 1) // 100  # 59,388.0
    assert trigger * 100 == low * 101
    assert trigger_price_ticks(ts) == trigger
    assert book.on_price(MARK, trigger - 1) == []
    assert ts.extreme_price_ticks == low
    assert ids(book.on_price(MARK, trigger)) == [1]


@pytest.mark.parametrize("side", [SELL, BUY], ids=["sell", "buy"])
def test_trailing_threshold_between_ticks_is_compared_exactly(side: int) -> None:
    """extreme 60,005.0 and 0.3 %: the threshold 59,824.985 / 60,185.015 is not a tick."""
    rate = 3_000
    extreme = P0 + 50
    exact = Fraction(extreme) * (1 + side * Fraction(rate, 1_000_000))
    assert exact.denominator != 1
    # the last tick that fires: rounded toward the side the price comes from
    fire_ticks = math.floor(exact) if side == SELL else math.ceil(exact)
    assert trailing_trigger_ticks(side, extreme, rate) == fire_ticks
    assert trailing_fires(side, extreme, rate, fire_ticks)
    assert not trailing_fires(side, extreme, rate, fire_ticks - side)  # one tick before

    book = book_with(order(1, TRAILING, side, rate=rate), price=extreme)  # trails from here
    assert trigger_price_ticks(book.get(1)) == fire_ticks  # type: ignore[arg-type]
    assert book.on_price(MARK, fire_ticks - side) == []
    assert ids(book.on_price(MARK, fire_ticks)) == [1]


@pytest.mark.parametrize("side", [SELL, BUY], ids=["sell", "buy"])
def test_trailing_stop_without_activation_price_trails_from_placement(side: int) -> None:
    rate = 2 * PCT
    book = book_with(order(1, TRAILING, side, rate=rate))
    ts = book.get(1)
    assert ts is not None and ts.activated and ts.extreme_price_ticks == P0
    trigger = P0 * (100 + side * 2) // 100  # 2 % back from the placement price, whole here
    assert trigger_price_ticks(ts) == trigger
    assert book.on_price(MARK, trigger - side) == []
    assert ids(book.on_price(MARK, trigger)) == [1]


def test_trailing_stop_moves_only_in_its_favour() -> None:
    """A SELL's high only rises, a BUY's low only falls; neither moves on the other way."""
    book = book_with(
        order(1, TRAILING, SELL, rate=10 * PCT), order(2, TRAILING, BUY, rate=10 * PCT)
    )
    sell, buy = book.get(1), book.get(2)
    assert sell is not None and buy is not None
    path = [P0 + 300, P0 + 100, P0 + 500, P0 - 200, P0 - 100, P0 - 700]
    for price in path:
        assert book.on_price(MARK, price) == []  # 10 % is far away
    assert sell.extreme_price_ticks == max([P0, *path])
    assert buy.extreme_price_ticks == min([P0, *path])


def test_trailing_stop_cannot_fire_on_the_price_that_activates_it() -> None:
    activation = P0 + 100
    book = book_with(order(1, TRAILING, SELL, rate=MIN_CALLBACK_RATE_PPM, activation=activation))
    assert book.on_price(MARK, P0 + 5_000) == []  # gaps far past the activation price
    ts = book.get(1)
    assert ts is not None and ts.activated and ts.extreme_price_ticks == P0 + 5_000


def test_a_waiting_trailing_stop_does_not_fire() -> None:
    book = book_with(order(1, TRAILING, SELL, rate=MIN_CALLBACK_RATE_PPM, activation=P0 + 100))
    assert book.on_price(MARK, P0 // 2) == []  # a crash does not activate a SELL
    ts = book.get(1)
    assert ts is not None and not ts.activated and ts.extreme_price_ticks == 0


def test_trailing_stops_watch_only_their_working_type() -> None:
    book = book_with(order(1, TRAILING, SELL, rate=PCT, working_type=LAST))
    assert book.on_price(MARK, P0 // 2) == []
    assert book.on_price(MARK, P0 * 2) == []
    ts = book.get(1)
    assert ts is not None and ts.extreme_price_ticks == P0
    assert ids(book.on_price(LAST, P0 * 99 // 100)) == [1]


# -- firing order and OCO groups -----------------------------------------------------------------


def test_a_rise_fires_in_the_order_it_crossed_the_triggers_then_by_id() -> None:
    book = book_with(
        order(1, STOP_MARKET, BUY, stop=P0 + 300),
        order(2, TP_MARKET, SELL, stop=P0 + 100),
        order(3, STOP, BUY, stop=P0 + 100),
        order(4, TRAILING, BUY, rate=MIN_CALLBACK_RATE_PPM),  # fires at 0.1 % up: P0 + 600
        order(5, STOP_MARKET, BUY, stop=P0 + 700),
        order(6, STOP_MARKET, SELL, stop=P0 - 100),  # on the other side: stays
    )
    assert trigger_price_ticks(book.get(4)) == P0 + 600  # type: ignore[arg-type]
    assert ids(book.on_price(MARK, P0 + 650)) == [2, 3, 1, 4]
    assert ids(list(book.orders())) == [5, 6]


def test_a_fall_fires_highest_trigger_first() -> None:
    book = book_with(
        order(1, STOP_MARKET, SELL, stop=P0 - 300),
        order(2, TP, BUY, stop=P0 - 100),
        order(3, TRAILING, SELL, rate=MIN_CALLBACK_RATE_PPM),  # fires at P0 - 600
        order(4, STOP_MARKET, SELL, stop=P0 - 300),
    )
    assert ids(book.on_price(MARK, P0 - 1_000)) == [2, 1, 4, 3]


def test_firing_order_does_not_depend_on_insertion_order() -> None:
    def build(order_ids: list[int]) -> TriggerBook:
        stops = {i: P0 + 100 * (i % 3 + 1) for i in range(1, 7)}
        return book_with(*(order(i, STOP_MARKET, BUY, stop=stops[i]) for i in order_ids))

    a, b = build([1, 2, 3, 4, 5, 6]), build([6, 3, 5, 1, 4, 2])
    assert a.record() == b.record()
    assert (
        ids(a.on_price(MARK, P0 + 1_000))
        == ids(b.on_price(MARK, P0 + 1_000))
        == [
            3,
            6,
            1,
            4,
            2,
            5,
        ]
    )


def test_oco_bracket_fires_one_leg_and_the_engine_cancels_the_other() -> None:
    take_profit = order(1, TP_MARKET, SELL, stop=P0 + 600, group=7, close_position=True, qty=0)
    stop_loss = order(2, STOP_MARKET, SELL, stop=P0 - 600, group=7, close_position=True, qty=0)
    book = book_with(take_profit, stop_loss, order(3, STOP_MARKET, SELL, stop=P0 - 600))
    assert ids(book.group(7)) == [1, 2]
    fired = book.on_price(MARK, P0 + 600)
    assert ids(fired) == [1]
    assert ids(book.group(7)) == [2]
    assert ids(book.cancel_siblings(fired[0])) == [2]
    assert ids(list(book.orders())) == [3]
    assert book.group(7) == []
    book.validate_internal_state()


def test_oco_group_fires_at_most_one_member_per_update() -> None:
    book = book_with(
        order(1, STOP_MARKET, BUY, stop=P0 + 200, group=9),
        order(2, STOP_MARKET, BUY, stop=P0 + 100, group=9),
        order(3, STOP_MARKET, BUY, stop=P0 + 150),
    )
    fired = book.on_price(MARK, P0 + 500)
    assert ids(fired) == [2, 3]  # 2 crossed first; its sibling 1 stays for the engine
    assert ids(list(book.orders())) == [1]
    assert ids(book.cancel_siblings(fired[0])) == [1]
    assert len(book) == 0


def test_cancel_siblings_of_an_order_without_group_is_nothing() -> None:
    o = order(1, STOP_MARKET, BUY, stop=P0 + 100)
    book = book_with(o, order(2, STOP_MARKET, BUY, stop=P0 + 100))
    assert book.cancel_siblings(o) == []
    assert len(book) == 2


def test_an_oco_group_belongs_to_one_account() -> None:
    book = book_with(order(1, STOP_MARKET, BUY, stop=P0 + 100, group=1))
    with pytest.raises(AssertionError):
        book.add(order(2, STOP_MARKET, BUY, stop=P0 + 100, group=1, account="bob"), P0)


# -- the book's other operations -----------------------------------------------------------------


def test_cancel_get_and_listing() -> None:
    book = book_with(
        order(5, STOP_MARKET, BUY, stop=P0 + 100, account="bob"),
        order(2, TRAILING, SELL, rate=PCT, activation=P0 + 100),
        order(9, TP, SELL, stop=P0 + 100),
        order(4, TRAILING, BUY, rate=PCT, working_type=LAST),
    )
    assert len(book) == 4
    assert ids(list(book.orders())) == [2, 4, 5, 9]
    assert ids(list(book.orders_of("alice"))) == [2, 4, 9]
    assert (book.count_of("alice"), book.count_of("bob"), book.count_of("carol")) == (3, 1, 0)
    assert list(book.orders_of("carol")) == []
    assert book.trailing_count == 2
    cancelled = book.cancel(2)
    assert cancelled is not None and cancelled.order_id == 2
    assert book.cancel(2) is None and book.get(2) is None
    assert book.trailing_count == 1
    assert ids(book.cancel_account("alice")) == [4, 9]
    assert ids(list(book.orders())) == [5]
    assert book.trailing_count == 0
    book.validate_internal_state()
    assert book.on_price(MARK, P0 + 50) == []
    assert book.on_price(LAST, P0 + 50) == []


def test_add_refuses_an_order_check_refuses() -> None:
    book = TriggerBook(BTC)
    with pytest.raises(AssertionError):
        book.add(order(1, STOP_MARKET, BUY, stop=P0), P0)  # would trigger at once
    with pytest.raises(AssertionError):
        book.add(msgspec.structs.replace(order(1, TRAILING, SELL, rate=PCT), activated=True), P0)
    book.add(order(1, STOP_MARKET, BUY, stop=P0 + 1), P0)
    with pytest.raises(AssertionError):
        book.check(order(1, STOP_MARKET, BUY, stop=P0 + 1), P0)  # duplicate id
    with pytest.raises(AssertionError):
        book.check(msgspec.structs.replace(order(2, STOP_MARKET, BUY, stop=P0 + 1), symbol="X"), P0)
    assert len(book) == 1


def test_an_empty_book_fires_nothing() -> None:
    book = TriggerBook(BTC)
    assert book.on_price(MARK, 1) == []
    assert book.on_price(LAST, 10**12) == []


# -- bounds --------------------------------------------------------------------------------------


def test_conditional_orders_per_account_are_bounded() -> None:
    """Binance's MAX_NUM_ALGO_ORDERS: 10 conditional orders per account per symbol."""
    book = TriggerBook(BTC)
    assert book.max_orders_per_account == MAX_CONDITIONAL_PER_ACCOUNT == 10
    for i in range(MAX_CONDITIONAL_PER_ACCOUNT):
        book.add(order(i + 1, STOP_MARKET, BUY, stop=P0 + 1 + i), P0)
    assert book.count_of("alice") == MAX_CONDITIONAL_PER_ACCOUNT
    one_more = order(100, TP_MARKET, SELL, stop=P0 + 1)
    assert book.check(one_more, P0) is R.TOO_MANY_CONDITIONAL_ORDERS
    assert book.check(order(101, TP_MARKET, SELL, stop=P0 + 1, account="bob"), P0) is None
    book.cancel(1)
    assert book.check(one_more, P0) is None
    book.add(one_more, P0)
    book.validate_internal_state()


def test_trailing_stops_per_book_are_bounded() -> None:
    book = TriggerBook(BTC, max_trailing=2)
    book.add(order(1, TRAILING, SELL, rate=PCT, account="a"), P0)
    book.add(order(2, TRAILING, BUY, rate=PCT, activation=P0 - 1, account="b"), P0)
    third = order(3, TRAILING, SELL, rate=PCT, account="c")
    assert book.check(third, P0) is R.TOO_MANY_TRAILING_STOPS
    assert book.check(order(4, STOP_MARKET, BUY, stop=P0 + 1, account="c"), P0) is None
    assert ids(book.on_price(MARK, P0 * 99 // 100)) == [1]  # the first one fires: room again
    assert book.check(third, P0) is None


# -- snapshots -----------------------------------------------------------------------------------


def a_busy_book() -> TriggerBook:
    book = TriggerBook(BTC, max_orders_per_account=12, max_trailing=50)
    for o in [
        order(7, STOP, BUY, stop=P0 + 100, limit=P0 + 150, working_type=LAST, account="bob"),
        order(3, STOP_MARKET, SELL, stop=P0 - 100, qty=0, close_position=True, group=3),
        order(4, TP_MARKET, SELL, stop=P0 + 300, qty=0, close_position=True, group=3),
        order(11, TP, BUY, stop=P0 - 200, reduce_only=True),
        order(12, TRAILING, SELL, rate=2 * PCT, activation=P0 + 40),
        order(13, TRAILING, BUY, rate=MIN_CALLBACK_RATE_PPM, account="bob"),
        order(14, TRAILING, SELL, rate=MAX_CALLBACK_RATE_PPM, working_type=LAST),
    ]:
        book.add(o, P0)
    book.on_price(MARK, P0 + 50)  # activates 12, moves 13's low nowhere
    book.on_price(LAST, P0 + 80)  # moves 14's high
    return book


def test_record_round_trip_is_equal_and_canonical() -> None:
    book = a_busy_book()
    record = book.record()
    assert record[:3] == [BTC, 12, 50]
    assert [r[0] for r in record[3]] == sorted(r[0] for r in record[3])
    restored = TriggerBook.from_record(record)
    assert restored.record() == record
    assert list(restored.orders()) == list(book.orders())  # field by field
    encoded = msgspec.msgpack.encode(record)
    again = TriggerBook.from_record(msgspec.msgpack.decode(encoded))
    assert msgspec.msgpack.encode(again.record()) == encoded
    # the restored book behaves the same from here on
    for wt, price in [(MARK, P0 - 150), (LAST, P0 + 100), (MARK, P0 + 2_000), (MARK, 1)]:
        assert book.on_price(wt, price) == restored.on_price(wt, price)
        assert book.record() == restored.record()


def test_from_record_refuses_a_malformed_record() -> None:
    record = a_busy_book().record()
    bad_kind = [*record[:3], [[*record[3][0][:4], 99, *record[3][0][5:]]]]
    with pytest.raises(msgspec.ValidationError):
        TriggerBook.from_record(bad_kind)
    duplicate = [*record[:3], [record[3][0], record[3][0]]]
    with pytest.raises(AssertionError):
        TriggerBook.from_record(duplicate)
    over_limit = [record[0], 1, record[2], record[3]]  # alice holds more than one order
    with pytest.raises(AssertionError):
        TriggerBook.from_record(over_limit)


def test_validate_internal_state_finds_a_corrupted_index() -> None:
    book = a_busy_book()
    o = book.get(7)
    assert o is not None
    o.stop_price_ticks += 1  # moved behind the ladder's back
    with pytest.raises(AssertionError):
        book.validate_internal_state()
    book = a_busy_book()
    ts = book.get(13)
    assert ts is not None
    ts.extreme_price_ticks = 0
    with pytest.raises(AssertionError):
        book.validate_internal_state()


# -- the naive twin and the differential test ----------------------------------------------------


def fires_on(kind: ConditionalKind, side: int) -> int:
    """The Binance table, spelled out once more: which move fires a fixed trigger."""
    stop_like = kind in (STOP_MARKET, STOP)
    return (RISES if side == BUY else FALLS) if stop_like else (FALLS if side == BUY else RISES)


class NaiveTriggerBook:
    """The specification: every order in one list, each checked against each price."""

    def __init__(self, max_orders_per_account: int, max_trailing: int) -> None:
        self.max_orders_per_account = max_orders_per_account
        self.max_trailing = max_trailing
        self.orders: list[ConditionalOrder] = []

    def check(self, o: ConditionalOrder, watched: int) -> ConditionalReject | None:
        if o.kind is TRAILING:
            a = o.activation_price_ticks
            if a is not None and (watched >= a if o.side == SELL else watched <= a):
                return R.WOULD_IMMEDIATELY_TRIGGER
        elif (watched - o.stop_price_ticks) * fires_on(o.kind, o.side) >= 0:
            return R.WOULD_IMMEDIATELY_TRIGGER
        if sum(1 for x in self.orders if x.account == o.account) >= self.max_orders_per_account:
            return R.TOO_MANY_CONDITIONAL_ORDERS
        if o.kind is TRAILING and sum(x.kind is TRAILING for x in self.orders) >= self.max_trailing:
            return R.TOO_MANY_TRAILING_STOPS
        return None

    def add(self, o: ConditionalOrder, watched: int) -> None:
        if o.kind is TRAILING and o.activation_price_ticks is None:
            o.activated, o.extreme_price_ticks = True, watched
        self.orders.append(o)

    def remove(self, keep: list[ConditionalOrder]) -> list[ConditionalOrder]:
        gone = [o for o in self.orders if o not in keep]
        self.orders = keep
        return sorted(gone, key=lambda o: o.order_id)

    def cancel(self, order_id: int) -> ConditionalOrder | None:
        gone = self.remove([o for o in self.orders if o.order_id != order_id])
        return gone[0] if gone else None

    def cancel_siblings(self, order_id: int, group: int | None) -> list[ConditionalOrder]:
        if group is None:
            return []
        return self.remove(
            [o for o in self.orders if o.oco_group != group or o.order_id == order_id]
        )

    def cancel_account(self, account: str) -> list[ConditionalOrder]:
        return self.remove([o for o in self.orders if o.account != account])

    def on_price(self, wt: WorkingType, price: int) -> list[ConditionalOrder]:
        candidates: list[tuple[int, ConditionalOrder]] = []  # (tick it fires at, order)
        for o in self.orders:
            if o.working_type is not wt:
                continue
            if o.kind is not TRAILING:
                if (price - o.stop_price_ticks) * fires_on(o.kind, o.side) >= 0:
                    candidates.append((o.stop_price_ticks, o))
                continue
            if not o.activated:
                a = o.activation_price_ticks
                assert a is not None
                if price >= a if o.side == SELL else price <= a:
                    o.activated, o.extreme_price_ticks = True, price
                continue
            pick = max if o.side == SELL else min
            o.extreme_price_ticks = pick(o.extreme_price_ticks, price)
            rate = Fraction(o.callback_rate_ppm, 1_000_000)
            if o.side == SELL:
                threshold = o.extreme_price_ticks * (1 - rate)
                if price <= threshold:
                    candidates.append((math.floor(threshold), o))
            else:
                threshold = o.extreme_price_ticks * (1 + rate)
                if price >= threshold:
                    candidates.append((math.ceil(threshold), o))
        # crossed first = farthest from the new price, then by id; one per OCO group
        candidates.sort(key=lambda c: (-abs(c[0] - price), c[1].order_id))
        fired: list[ConditionalOrder] = []
        groups: set[int] = set()
        for _, o in candidates:
            if o.oco_group is not None:
                if o.oco_group in groups:
                    continue
                groups.add(o.oco_group)
            fired.append(o)
        fired_ids = {o.order_id for o in fired}
        self.orders = [o for o in self.orders if o.order_id not in fired_ids]
        return fired


ACCOUNTS = ("alice", "bob", "carol")
START_TICKS = 1_000  # a small price so that callback rates of 0.1 %..10 % are 1..100 ticks
RATES_PPM = (1_000, 3_000, 10_000, 30_000, 100_000)


class TwoTriggerBooks(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fast = TriggerBook(BTC, max_orders_per_account=4, max_trailing=3)
        self.naive = NaiveTriggerBook(max_orders_per_account=4, max_trailing=3)
        self.price = {MARK: START_TICKS, LAST: START_TICKS}
        self.next_order_id = 1

    @rule(
        account=st.sampled_from(ACCOUNTS),
        kind=st.sampled_from(list(ConditionalKind)),
        side=st.sampled_from((BUY, SELL)),
        wt=st.sampled_from((MARK, LAST)),
        offset=st.integers(-20, 20),
        rate=st.sampled_from(RATES_PPM),
        with_activation=st.booleans(),
        group=st.none() | st.integers(0, 1),
    )
    def place(
        self,
        account: str,
        kind: ConditionalKind,
        side: int,
        wt: WorkingType,
        offset: int,
        rate: int,
        with_activation: bool,
        group: int | None,
    ) -> None:
        oid = self.next_order_id
        self.next_order_id += 1
        watched = self.price[wt]
        trigger = max(1, watched + offset)
        kwargs: dict[str, Any] = {"account": account, "working_type": wt}
        if group is not None:
            kwargs["group"] = ACCOUNTS.index(account) * 10 + group  # groups stay in one account
        if kind is TRAILING:
            activation = trigger if with_activation else None
            fast = order(oid, kind, side, rate=rate, activation=activation, **kwargs)
        else:
            fast = order(oid, kind, side, stop=trigger, **kwargs)
        naive = msgspec.structs.replace(fast)  # each book owns its copy
        reject = self.fast.check(fast, watched)
        assert reject is self.naive.check(naive, watched)
        if reject is None:
            self.fast.add(fast, watched)
            self.naive.add(naive, watched)

    @rule(wt=st.sampled_from((MARK, LAST)), move=st.integers(-60, 60))
    def move_price(self, wt: WorkingType, move: int) -> None:
        price = max(1, self.price[wt] + move)
        self.price[wt] = price
        fired = self.fast.on_price(wt, price)
        assert fired == self.naive.on_price(wt, price)  # same orders, order and state
        for o in fired:
            assert o.order_id not in self.fast

    @rule(pick=st.integers(0, 2**16))
    def cancel(self, pick: int) -> None:
        order_id = pick % (self.next_order_id + 1)  # live, fired, canceled or never issued
        assert self.fast.cancel(order_id) == self.naive.cancel(order_id)

    @rule(pick=st.integers(0, 2**16))
    def cancel_siblings(self, pick: int) -> None:
        live = self.naive.orders
        if not live:
            return
        o = live[pick % len(live)]
        twin = self.fast.get(o.order_id)
        assert twin is not None
        assert self.fast.cancel_siblings(twin) == self.naive.cancel_siblings(
            o.order_id, o.oco_group
        )

    @rule(account=st.sampled_from(ACCOUNTS))
    def cancel_account(self, account: str) -> None:
        assert self.fast.cancel_account(account) == self.naive.cancel_account(account)

    @invariant()
    def books_agree(self) -> None:
        self.fast.validate_internal_state()
        assert list(self.fast.orders()) == sorted(self.naive.orders, key=lambda o: o.order_id)
        assert len(self.fast) == len(self.naive.orders)
        for account in ACCOUNTS:
            assert self.fast.count_of(account) == sum(
                o.account == account for o in self.naive.orders
            )
        record = self.fast.record()
        assert TriggerBook.from_record(record).record() == record


TwoTriggerBooks.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None
)
TestTwoTriggerBooks = TwoTriggerBooks.TestCase
