"""Conditional orders: the record (`ConditionalOrder`), when stops, take-profits and trailing
stops fire, and the checks at placement, as pure functions.

Units: prices in ticks, sizes in lots, rates in ppm. Sides are BUY = +1 and SELL = -1 (as in
`perpex.core.book`). Nothing here reads a clock or rounds a trigger: every comparison is exact.

Kinds and when they fire (Binance USDⓈ-M, BINANCE_API.md §4.4), against the watched price of
their working type (MARK_PRICE: the mark; CONTRACT_PRICE: the last trade price):

    kind                      BUY fires when            SELL fires when
    STOP_MARKET, STOP         price >= stop             price <= stop
    TAKE_PROFIT_MARKET, TAKE_PROFIT
                              price <= stop             price >= stop
    TRAILING_STOP_MARKET      price >= lowest × (1+r)   price <= highest × (1-r)

A fired STOP / TAKE_PROFIT becomes a LIMIT order at its limit price; the others become MARKET
orders (`placed_order_type`). A stop that would fire at once against the watched price is
refused at placement (`WOULD_IMMEDIATELY_TRIGGER`).

Trailing stop. `r` is the callback rate, 0.1 % to 10 % in steps of 0.1 % (1_000..100_000 ppm).
With no activation price the order trails from placement, its extreme set to the watched price
then. With one, a SELL (protecting a long) waits until price >= activation and a BUY (protecting
a short) until price <= activation; the activation price must still be ahead of the watched
price at placement (Binance answers -2021 otherwise). Once active, a SELL tracks the highest
price seen and a BUY the lowest; the order cannot fire on the price that activated it. The
threshold is compared cross-multiplied (`price × 1e6 <= highest × (1e6 - r)`), never rounded.
`trigger_price_ticks` shows it as a tick: FLOOR for a SELL and CEIL for a BUY, which makes
"fires iff price is at or beyond that tick" exactly true as well.

The rules, as pure functions:

    trigger_direction(kind, side) -> RISES | FALLS
    would_trigger(kind, side, stop_price_ticks, price_ticks) -> bool     fixed triggers only
    trailing_activates(side, activation_price_ticks, price_ticks) -> bool
    trailing_fires(side, extreme_price_ticks, callback_rate_ppm, price_ticks) -> bool
    trailing_trigger_ticks(side, extreme_price_ticks, callback_rate_ppm) -> int
    trigger_price_ticks(order) -> int | None                             for display
    placed_order_type(kind) -> OrderType
    validate_conditional(order, watched_price_ticks) -> ConditionalReject | None

Refusals (`ConditionalReject`) and the Binance code and message the edge should send:

    WOULD_IMMEDIATELY_TRIGGER       -2021  Order would immediately trigger.
    INVALID_CALLBACK_RATE           -2007  Invalid callBack rate.
    INVALID_ACTIVATION_PRICE        -4135  Invalid activation price
    STOP_PRICE_MISSING              -1102  Mandatory parameter 'triggerPrice' was not sent, ...
    LIMIT_PRICE_MISSING             -1102  Mandatory parameter 'price' was not sent, ...
    CALLBACK_RATE_MISSING           -1102  Mandatory parameter 'callbackRate' was not sent, ...
    STOP_PRICE_NOT_REQUIRED         -1106  Parameter 'triggerPrice' sent when not required.
    LIMIT_PRICE_NOT_REQUIRED        -1106  Parameter 'price' sent when not required.
    CALLBACK_RATE_NOT_REQUIRED      -1106  Parameter 'callbackRate' sent when not required.
    ACTIVATION_PRICE_NOT_REQUIRED   -1106  Parameter 'activatePrice' sent when not required.
    CLOSE_POSITION_NOT_ALLOWED      -1106  Parameter 'closePosition' sent when not required.
    REDUCE_ONLY_WITH_CLOSE_POSITION -1106  Parameter 'reduceOnly' sent when not required.
    QTY_WITH_CLOSE_POSITION         -4137  Quantity must be zero with closePosition equals true
    QTY_NOT_POSITIVE                -4003  Quantity less than or equal to zero.
    NO_REFERENCE_PRICE              (the engine's NO_MARK_PRICE: nothing to compare against yet)
    TOO_MANY_CONDITIONAL_ORDERS     -4045  Reach max stop order limit.
    TOO_MANY_TRAILING_STOPS         -4045  Reach max stop order limit.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from perpex.core.book import BUY, SELL

# The kinds and working types are message vocabulary (commands and events carry them); they
# are re-exported here, where their rules live.
from perpex.core.messages import (
    ConditionalKind as ConditionalKind,
    OrderType,
    TimeInForce,
    WorkingType as WorkingType,
)
from perpex.core.units import PPM, Rounding, div

RISES: Final = 1  # fires once the watched price has risen to the trigger: price >= trigger
FALLS: Final = -1  # fires once it has fallen to the trigger: price <= trigger

# Binance's trailing stop accepts a callback rate of 0.1 % to 10 % in steps of 0.1 %.
MIN_CALLBACK_RATE_PPM: Final = 1_000
MAX_CALLBACK_RATE_PPM: Final = 100_000
CALLBACK_RATE_STEP_PPM: Final = 1_000


class ConditionalReject(enum.IntEnum):
    """Why a conditional order is refused at placement (Binance codes in the module docstring)."""

    WOULD_IMMEDIATELY_TRIGGER = 1
    INVALID_CALLBACK_RATE = 2
    INVALID_ACTIVATION_PRICE = 3
    STOP_PRICE_MISSING = 4
    LIMIT_PRICE_MISSING = 5
    CALLBACK_RATE_MISSING = 6
    STOP_PRICE_NOT_REQUIRED = 7
    LIMIT_PRICE_NOT_REQUIRED = 8
    CALLBACK_RATE_NOT_REQUIRED = 9
    ACTIVATION_PRICE_NOT_REQUIRED = 10
    CLOSE_POSITION_NOT_ALLOWED = 11
    REDUCE_ONLY_WITH_CLOSE_POSITION = 12
    QTY_WITH_CLOSE_POSITION = 13
    QTY_NOT_POSITIVE = 14
    NO_REFERENCE_PRICE = 15
    TOO_MANY_CONDITIONAL_ORDERS = 16
    TOO_MANY_TRAILING_STOPS = 17


_STOP: Final = ConditionalKind.STOP
_TAKE_PROFIT: Final = ConditionalKind.TAKE_PROFIT
_TAKE_PROFIT_MARKET: Final = ConditionalKind.TAKE_PROFIT_MARKET
_TRAILING: Final = ConditionalKind.TRAILING_STOP_MARKET
_LIMIT_KINDS: Final = frozenset({_STOP, _TAKE_PROFIT})
_TAKE_PROFIT_KINDS: Final = frozenset({_TAKE_PROFIT_MARKET, _TAKE_PROFIT})
_CLOSE_POSITION_KINDS: Final = frozenset({ConditionalKind.STOP_MARKET, _TAKE_PROFIT_MARKET})


class ConditionalOrder(msgspec.Struct, kw_only=True, array_like=True):
    """A conditional order waiting for its trigger. Mutable only in its trailing state.

    `qty_lots` is 0 exactly when `close_position` is set (the engine sizes the order from the
    position when it fires). `limit_price_ticks` is set for STOP and TAKE_PROFIT only,
    `stop_price_ticks` for every kind but the trailing stop, `callback_rate_ppm` and
    `activation_price_ticks` (optional) for the trailing stop only. `activated` and
    `extreme_price_ticks` (highest price seen for a SELL, lowest for a BUY; 0 while waiting)
    are the trailing state, which `TriggerBook.add` sets and `on_price` moves.
    """

    order_id: int
    account: str
    symbol: str
    side: int
    kind: ConditionalKind
    working_type: WorkingType
    qty_lots: int
    stop_price_ticks: int = 0
    limit_price_ticks: int = 0
    time_in_force: TimeInForce = TimeInForce.GTC  # of the LIMIT order a STOP/TAKE_PROFIT places
    reduce_only: bool = False
    close_position: bool = False
    client_order_id: str | None = None
    callback_rate_ppm: int = 0
    activation_price_ticks: int | None = None
    activated: bool = False
    extreme_price_ticks: int = 0
    oco_group: int | None = None


# -- trigger rules -----------------------------------------------------------------------------


def trigger_direction(kind: ConditionalKind, side: int) -> int:
    """RISES or FALLS: which way the watched price must move for the order to fire."""
    assert side in (BUY, SELL), f"bad side {side}"
    # A stop buys into a rise and sells into a fall (it caps a short's or a long's loss); a
    # take-profit is the other way round; a trailing stop is a stop whose trigger follows.
    return -side if kind in _TAKE_PROFIT_KINDS else side


def would_trigger(
    kind: ConditionalKind, side: int, stop_price_ticks: int, price_ticks: int
) -> bool:
    """Does a fixed-trigger order (not a trailing stop) fire at this watched price?"""
    assert kind != _TRAILING, "a trailing stop has no fixed trigger: use trailing_fires"
    if trigger_direction(kind, side) == RISES:
        return price_ticks >= stop_price_ticks
    return price_ticks <= stop_price_ticks


def placed_order_type(kind: ConditionalKind) -> OrderType:
    """The order a fired conditional order becomes."""
    return OrderType.LIMIT if kind in _LIMIT_KINDS else OrderType.MARKET


def trailing_activates(side: int, activation_price_ticks: int, price_ticks: int) -> bool:
    """Has the price reached a waiting trailing stop's activation price?"""
    # A SELL trailing stop guards a long, so it starts trailing once the price has risen to
    # the activation price; a BUY guards a short and starts once the price has fallen to it.
    if side == SELL:
        return price_ticks >= activation_price_ticks
    return price_ticks <= activation_price_ticks


def trailing_fires(
    side: int, extreme_price_ticks: int, callback_rate_ppm: int, price_ticks: int
) -> bool:
    """Has the price come back by the callback rate from the extreme? Exact, no rounding."""
    if side == SELL:  # price <= highest × (1 - rate), both sides times PPM
        return price_ticks * PPM <= extreme_price_ticks * (PPM - callback_rate_ppm)
    return price_ticks * PPM >= extreme_price_ticks * (PPM + callback_rate_ppm)


def trailing_trigger_ticks(side: int, extreme_price_ticks: int, callback_rate_ppm: int) -> int:
    """The trailing threshold as a tick, for display: fires iff price is at or beyond it."""
    if side == SELL:
        # FLOOR: the highest whole tick at or below the exact threshold, so for an integer
        # price "price <= this tick" holds exactly when "price <= threshold" does.
        return div(extreme_price_ticks * (PPM - callback_rate_ppm), PPM, Rounding.FLOOR)
    # CEIL: the lowest whole tick at or above the threshold, for the same reason.
    return div(extreme_price_ticks * (PPM + callback_rate_ppm), PPM, Rounding.CEIL)


def trigger_price_ticks(order: ConditionalOrder) -> int | None:
    """The tick at (or beyond) which the order fires now; None for a trailing stop not yet
    active."""
    if order.kind != _TRAILING:
        return order.stop_price_ticks
    if not order.activated:
        return None
    return trailing_trigger_ticks(order.side, order.extreme_price_ticks, order.callback_rate_ppm)


def shape_reject(o: ConditionalOrder) -> ConditionalReject | None:
    """Everything about the order's fields that does not depend on the price (the book
    re-checks it on every order it holds)."""
    if o.close_position:
        if o.kind not in _CLOSE_POSITION_KINDS:  # Binance: closePosition with these two only
            return ConditionalReject.CLOSE_POSITION_NOT_ALLOWED
        if o.qty_lots != 0:
            return ConditionalReject.QTY_WITH_CLOSE_POSITION
        if o.reduce_only:  # closing the whole position is reduce-only by nature
            return ConditionalReject.REDUCE_ONLY_WITH_CLOSE_POSITION
    elif o.qty_lots <= 0:
        return ConditionalReject.QTY_NOT_POSITIVE
    if o.kind == _TRAILING:
        if o.stop_price_ticks != 0:
            return ConditionalReject.STOP_PRICE_NOT_REQUIRED
        if o.limit_price_ticks != 0:
            return ConditionalReject.LIMIT_PRICE_NOT_REQUIRED
        if o.callback_rate_ppm == 0:
            return ConditionalReject.CALLBACK_RATE_MISSING
        rate = o.callback_rate_ppm
        if (
            not MIN_CALLBACK_RATE_PPM <= rate <= MAX_CALLBACK_RATE_PPM
            or rate % CALLBACK_RATE_STEP_PPM
        ):
            return ConditionalReject.INVALID_CALLBACK_RATE
        if o.activation_price_ticks is not None and o.activation_price_ticks <= 0:
            return ConditionalReject.INVALID_ACTIVATION_PRICE
        return None
    if o.callback_rate_ppm != 0:
        return ConditionalReject.CALLBACK_RATE_NOT_REQUIRED
    if o.activation_price_ticks is not None:
        return ConditionalReject.ACTIVATION_PRICE_NOT_REQUIRED
    if o.stop_price_ticks <= 0:
        return ConditionalReject.STOP_PRICE_MISSING
    if o.kind in _LIMIT_KINDS:
        if o.limit_price_ticks <= 0:
            return ConditionalReject.LIMIT_PRICE_MISSING
    elif o.limit_price_ticks != 0:
        return ConditionalReject.LIMIT_PRICE_NOT_REQUIRED
    return None


def validate_conditional(
    order: ConditionalOrder, watched_price_ticks: int
) -> ConditionalReject | None:
    """Placement checks of one order against the current price of its working type.

    Pure. Tick, step, price band, notional, margin and client-order-id checks stay with the
    engine; the per-account limit is `TriggerBook.check`'s.
    """
    reject = shape_reject(order)
    if reject is not None:
        return reject
    if watched_price_ticks <= 0:
        return ConditionalReject.NO_REFERENCE_PRICE
    if order.kind == _TRAILING:
        activation = order.activation_price_ticks
        # Binance refuses an activation price the price has already reached (-2021): the
        # order would start trailing at once, which is what leaving it out asks for.
        if activation is not None and trailing_activates(
            order.side, activation, watched_price_ticks
        ):
            return ConditionalReject.WOULD_IMMEDIATELY_TRIGGER
        return None
    if would_trigger(order.kind, order.side, order.stop_price_ticks, watched_price_ticks):
        return ConditionalReject.WOULD_IMMEDIATELY_TRIGGER
    return None
