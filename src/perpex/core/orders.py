"""Conditional orders: when stops, take-profits and trailing stops fire, and the book of them.

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

The book (`TriggerBook`, one per symbol):

    check(order, watched_price_ticks) -> ConditionalReject | None   all placement checks, no writes
    add(order, watched_price_ticks)        takes ownership; arms a trailing stop
    cancel(order_id) -> ConditionalOrder | None
    cancel_siblings(order) -> list[ConditionalOrder]     the rest of its OCO group, removed
    cancel_account(account) -> list[ConditionalOrder]
    on_price(working_type, price_ticks) -> list[ConditionalOrder]   fired, already removed
    get(order_id), order_id in book, len(book), orders(), orders_of(account),
    count_of(account), group(oco_group), trailing_count
    record() / TriggerBook.from_record(record), validate_internal_state()

Fixed triggers sit in sorted lists per working type: one for orders that fire on a rise (stop
ascending, fired as a prefix) and one for orders that fire on a fall (fired as a suffix), so a
price update costs a bisect plus the orders it fires. Trailing stops waiting for activation sit
in the same kind of lists keyed by activation price; active trailing stops move their trigger
with every price, so they are scanned on each update of their working type, and
`max_trailing` bounds that scan.

Firing order. The orders one update fires come back farthest from the new price first (by the
tick they fire at), ties by order id: that is the order in which the move from the previous
price crossed them. An OCO group (`oco_group`, an id the engine chooses; all members belong to
one account) fires at most one member per update, the first in that order; its other members
stay in the book and the engine cancels them with `cancel_siblings`.

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

Snapshot: `record()` is `[symbol, max_orders_per_account, max_trailing, [order, ...]]` with the
orders by ascending id, each as the plain list of its fields in declaration order (enums as
ints); equal books give equal records.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from perpex.core.book import BUY, SELL

# The kinds and working types are message vocabulary (commands and events carry them); they
# are re-exported here, where their rules live.
from perpex.core.messages import ConditionalKind as ConditionalKind
from perpex.core.messages import OrderType, TimeInForce
from perpex.core.messages import WorkingType as WorkingType
from perpex.core.units import PPM, Rounding, div

RISES: Final = 1  # fires once the watched price has risen to the trigger: price >= trigger
FALLS: Final = -1  # fires once it has fallen to the trigger: price <= trigger

# Binance's trailing stop accepts a callback rate of 0.1 % to 10 % in steps of 0.1 %.
MIN_CALLBACK_RATE_PPM: Final = 1_000
MAX_CALLBACK_RATE_PPM: Final = 100_000
CALLBACK_RATE_STEP_PPM: Final = 1_000

# Binance's MAX_NUM_ALGO_ORDERS filter on BTCUSDT: conditional orders per account per symbol.
MAX_CONDITIONAL_PER_ACCOUNT: Final = 10
# Active trailing stops are scanned on every price update of their working type; this bounds
# that scan (and the pending ones, which become active without a further check).
MAX_TRAILING_PER_BOOK: Final = 1_000


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


def _shape_reject(o: ConditionalOrder) -> ConditionalReject | None:
    """Everything about the order's fields that does not depend on the price."""
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
    reject = _shape_reject(order)
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


# -- the book ----------------------------------------------------------------------------------


class _Ladder:
    """Trigger prices of one working type. Both lists hold (trigger ticks, order id) ascending:
    `rising` orders fire at price >= trigger (a prefix), `falling` at price <= trigger (a
    suffix). Order ids are >= 0, so (p, -1) sorts before every entry at price p."""

    __slots__ = ("falling", "rising")

    def __init__(self) -> None:
        self.rising: list[tuple[int, int]] = []
        self.falling: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.rising) + len(self.falling)

    def insert(self, direction: int, trigger_ticks: int, order_id: int) -> None:
        bisect.insort(
            self.rising if direction == RISES else self.falling, (trigger_ticks, order_id)
        )

    def remove(self, direction: int, trigger_ticks: int, order_id: int) -> None:
        keys = self.rising if direction == RISES else self.falling
        entry = (trigger_ticks, order_id)
        i = bisect.bisect_left(keys, entry)
        assert i < len(keys) and keys[i] == entry, f"order {order_id} missing from its ladder"
        del keys[i]

    def reached(self, price_ticks: int) -> list[int]:
        """Ids of the orders this price fires: rising ones first, each list ascending."""
        hits: list[int] = []
        rising = self.rising
        if rising and rising[0][0] <= price_ticks:
            end = bisect.bisect_left(rising, (price_ticks + 1, -1))
            hits.extend(oid for _, oid in rising[:end])
        falling = self.falling
        if falling and falling[-1][0] >= price_ticks:
            start = bisect.bisect_left(falling, (price_ticks, -1))
            hits.extend(oid for _, oid in falling[start:])
        return hits

    def pop_reached(self, price_ticks: int) -> list[int]:
        """`reached`, removing them all."""
        hits: list[int] = []
        rising = self.rising
        if rising and rising[0][0] <= price_ticks:
            end = bisect.bisect_left(rising, (price_ticks + 1, -1))
            hits.extend(oid for _, oid in rising[:end])
            del rising[:end]
        falling = self.falling
        if falling and falling[-1][0] >= price_ticks:
            start = bisect.bisect_left(falling, (price_ticks, -1))
            hits.extend(oid for _, oid in falling[start:])
            del falling[start:]
        return hits


class TriggerBook:
    """The conditional orders of one symbol, indexed so that a price finds what it fires."""

    __slots__ = (
        "_by_account",
        "_groups",
        "_orders",
        "_pending",
        "_stops",
        "_trailing",
        "_trailing_count",
        "max_orders_per_account",
        "max_trailing",
        "symbol",
    )

    def __init__(
        self,
        symbol: str,
        max_orders_per_account: int = MAX_CONDITIONAL_PER_ACCOUNT,
        max_trailing: int = MAX_TRAILING_PER_BOOK,
    ) -> None:
        assert max_orders_per_account >= 1 and max_trailing >= 0
        self.symbol = symbol
        self.max_orders_per_account = max_orders_per_account
        self.max_trailing = max_trailing
        self._orders: dict[int, ConditionalOrder] = {}
        self._by_account: dict[str, dict[int, ConditionalOrder]] = {}
        self._groups: dict[int, dict[int, ConditionalOrder]] = {}
        self._stops = {wt: _Ladder() for wt in WorkingType}  # fixed triggers
        self._pending = {wt: _Ladder() for wt in WorkingType}  # trailing, by activation price
        self._trailing: dict[WorkingType, dict[int, ConditionalOrder]] = {
            wt: {} for wt in WorkingType
        }  # active trailing stops
        self._trailing_count = 0  # pending + active

    # -- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: int) -> bool:
        return order_id in self._orders

    def get(self, order_id: int) -> ConditionalOrder | None:
        return self._orders.get(order_id)

    def orders(self) -> Iterator[ConditionalOrder]:
        """Every order, by ascending id."""
        for oid in sorted(self._orders):
            yield self._orders[oid]

    def orders_of(self, account: str) -> Iterator[ConditionalOrder]:
        """An account's orders, by ascending id."""
        mine = self._by_account.get(account)
        if mine:
            for oid in sorted(mine):
                yield mine[oid]

    def count_of(self, account: str) -> int:
        return len(self._by_account.get(account, ()))

    def group(self, oco_group: int) -> list[ConditionalOrder]:
        """The members of an OCO group still in the book, by ascending id."""
        members = self._groups.get(oco_group, {})
        return [members[oid] for oid in sorted(members)]

    @property
    def trailing_count(self) -> int:
        return self._trailing_count

    def check(self, order: ConditionalOrder, watched_price_ticks: int) -> ConditionalReject | None:
        """Every placement check `add` relies on, with no writes: `validate_conditional` and
        the limits. `watched_price_ticks` is the current price of the order's working type."""
        assert order.order_id not in self._orders, f"duplicate conditional order {order.order_id}"
        assert order.symbol == self.symbol, f"{order.symbol} order in the {self.symbol} book"
        reject = validate_conditional(order, watched_price_ticks)
        if reject is not None:
            return reject
        if self.count_of(order.account) >= self.max_orders_per_account:
            return ConditionalReject.TOO_MANY_CONDITIONAL_ORDERS
        if order.kind == _TRAILING and self._trailing_count >= self.max_trailing:
            return ConditionalReject.TOO_MANY_TRAILING_STOPS
        return None

    # -- mutations --------------------------------------------------------------------------
    def add(self, order: ConditionalOrder, watched_price_ticks: int) -> None:
        """Store an order that passed `check` at this price. The book takes ownership of the
        record; a trailing stop without an activation price starts trailing from this price."""
        assert self.check(order, watched_price_ticks) is None, "add() of an order check() refuses"
        assert order.order_id >= 0  # the ladders' (p, -1) probes rely on it
        assert not order.activated and order.extreme_price_ticks == 0, "already armed"
        if order.oco_group is not None:
            for sibling in self._groups.get(order.oco_group, {}).values():
                assert sibling.account == order.account, "an OCO group spans accounts"
        if order.kind == _TRAILING and order.activation_price_ticks is None:
            order.activated = True
            order.extreme_price_ticks = watched_price_ticks
        self._index(order)

    def cancel(self, order_id: int) -> ConditionalOrder | None:
        """Remove an order; None if it is not in the book."""
        order = self._orders.get(order_id)
        if order is not None:
            self._unindex(order)
        return order

    def cancel_siblings(self, order: ConditionalOrder) -> list[ConditionalOrder]:
        """Remove the other members of the order's OCO group (by ascending id). The order
        itself may already have left the book (fired or canceled); it is not touched."""
        if order.oco_group is None:
            return []
        siblings = [o for o in self.group(order.oco_group) if o.order_id != order.order_id]
        for o in siblings:
            self._unindex(o)
        return siblings

    def cancel_account(self, account: str) -> list[ConditionalOrder]:
        """Remove all of an account's orders (by ascending id)."""
        gone = list(self.orders_of(account))
        for o in gone:
            self._unindex(o)
        return gone

    def on_price(self, working_type: WorkingType, price_ticks: int) -> list[ConditionalOrder]:
        """A new watched price: the orders it fires, removed, in firing order.

        Firing order: farthest from this price first (by the tick each fires at), then by
        order id; at most one member per OCO group. Active trailing stops that do not fire
        move their extreme; waiting ones whose activation price is reached start trailing
        from this price (and cannot fire on it).
        """
        assert price_ticks > 0, "a watched price is positive"
        stops = self._stops[working_type]
        trailing = self._trailing[working_type]
        pending = self._pending[working_type]
        if not (stops.rising or stops.falling or trailing or pending.rising or pending.falling):
            return []
        orders = self._orders
        # (-distance from this price, order id, order): sorts farthest first, ties by id.
        fired: list[tuple[int, int, ConditionalOrder]] = []
        for oid in stops.reached(price_ticks):
            o = orders[oid]
            fired.append((-abs(o.stop_price_ticks - price_ticks), oid, o))
        scaled_price = price_ticks * PPM
        for oid, o in trailing.items():
            extreme = o.extreme_price_ticks
            if o.side == SELL:
                if price_ticks > extreme:
                    o.extreme_price_ticks = price_ticks
                elif scaled_price <= extreme * (PPM - o.callback_rate_ppm):
                    fire_ticks = trailing_trigger_ticks(SELL, extreme, o.callback_rate_ppm)
                    fired.append((price_ticks - fire_ticks, oid, o))
            elif price_ticks < extreme:
                o.extreme_price_ticks = price_ticks
            elif scaled_price >= extreme * (PPM + o.callback_rate_ppm):
                fire_ticks = trailing_trigger_ticks(BUY, extreme, o.callback_rate_ppm)
                fired.append((fire_ticks - price_ticks, oid, o))
        if pending.rising or pending.falling:
            for oid in pending.pop_reached(price_ticks):
                o = orders[oid]
                o.activated = True
                o.extreme_price_ticks = price_ticks
                trailing[oid] = o
        if not fired:
            return []
        fired.sort()
        result: list[ConditionalOrder] = []
        groups_fired: set[int] = set()
        for _, _, o in fired:
            group = o.oco_group
            if group is not None:
                if group in groups_fired:
                    continue  # a sibling fired first; the engine cancels this one
                groups_fired.add(group)
            self._unindex(o)
            result.append(o)
        return result

    # -- indexes ----------------------------------------------------------------------------
    def _index(self, o: ConditionalOrder) -> None:
        oid = o.order_id
        self._orders[oid] = o
        self._by_account.setdefault(o.account, {})[oid] = o
        if o.oco_group is not None:
            self._groups.setdefault(o.oco_group, {})[oid] = o
        wt = o.working_type
        if o.kind != _TRAILING:
            self._stops[wt].insert(trigger_direction(o.kind, o.side), o.stop_price_ticks, oid)
            return
        self._trailing_count += 1
        if o.activated:
            self._trailing[wt][oid] = o
        else:
            assert o.activation_price_ticks is not None
            # it activates on the move opposite to the one that fires it
            self._pending[wt].insert(-o.side, o.activation_price_ticks, oid)

    def _unindex(self, o: ConditionalOrder) -> None:
        oid = o.order_id
        del self._orders[oid]
        mine = self._by_account[o.account]
        del mine[oid]
        if not mine:
            del self._by_account[o.account]
        if o.oco_group is not None:
            members = self._groups[o.oco_group]
            del members[oid]
            if not members:
                del self._groups[o.oco_group]
        wt = o.working_type
        if o.kind != _TRAILING:
            self._stops[wt].remove(trigger_direction(o.kind, o.side), o.stop_price_ticks, oid)
            return
        self._trailing_count -= 1
        if o.activated:
            del self._trailing[wt][oid]
        else:
            assert o.activation_price_ticks is not None
            self._pending[wt].remove(-o.side, o.activation_price_ticks, oid)

    # -- snapshots --------------------------------------------------------------------------
    def record(self) -> list[Any]:
        """Canonical plain-data form (see the module docstring); equal books, equal records."""
        return [
            self.symbol,
            self.max_orders_per_account,
            self.max_trailing,
            [msgspec.to_builtins(self._orders[oid]) for oid in sorted(self._orders)],
        ]

    @classmethod
    def from_record(cls, record: list[Any]) -> TriggerBook:
        """Rebuild a book from `record()`; a malformed record raises (msgspec.ValidationError
        or AssertionError), it is never half-loaded into a live book."""
        symbol, max_per_account, max_trailing, order_records = record
        book = cls(symbol, max_per_account, max_trailing)
        for r in order_records:
            o = msgspec.convert(r, ConditionalOrder)
            assert o.order_id not in book._orders, f"duplicate conditional order {o.order_id}"
            book._index(o)
        book.validate_internal_state()
        return book

    # -- checking ---------------------------------------------------------------------------
    def validate_internal_state(self) -> None:
        """Recompute every index from the orders; raise AssertionError on the first
        disagreement."""
        by_account: dict[str, set[int]] = {}
        groups: dict[int, set[int]] = {}
        group_account: dict[int, str] = {}
        stops = {wt: _Ladder() for wt in WorkingType}
        pending = {wt: _Ladder() for wt in WorkingType}
        trailing: dict[WorkingType, set[int]] = {wt: set() for wt in WorkingType}
        for oid, o in self._orders.items():
            assert o.order_id == oid and oid >= 0, f"order {oid} filed under the wrong id"
            assert o.symbol == self.symbol, f"order {oid}: {o.symbol} in the {self.symbol} book"
            assert o.side in (BUY, SELL), f"order {oid}: side {o.side}"
            assert _shape_reject(o) is None, f"order {oid}: {_shape_reject(o)!r}"
            by_account.setdefault(o.account, set()).add(oid)
            if o.oco_group is not None:
                groups.setdefault(o.oco_group, set()).add(oid)
                owner = group_account.setdefault(o.oco_group, o.account)
                assert owner == o.account, f"OCO group {o.oco_group} spans accounts"
            wt = o.working_type
            if o.kind != _TRAILING:
                assert not o.activated and o.extreme_price_ticks == 0, f"order {oid}: trailing"
                stops[wt].insert(trigger_direction(o.kind, o.side), o.stop_price_ticks, oid)
            elif o.activated:
                assert o.extreme_price_ticks > 0, f"trailing {oid} active without an extreme"
                trailing[wt].add(oid)
            else:
                assert o.extreme_price_ticks == 0, f"trailing {oid} waiting with an extreme"
                assert o.activation_price_ticks is not None, f"trailing {oid} never activates"
                pending[wt].insert(-o.side, o.activation_price_ticks, oid)
        assert {a: set(m) for a, m in self._by_account.items()} == by_account, "account index"
        for account, mine in self._by_account.items():
            assert len(mine) <= self.max_orders_per_account, f"{account}: over the order limit"
            for oid, o in mine.items():
                assert self._orders[oid] is o
        assert {g: set(m) for g, m in self._groups.items()} == groups, "OCO group index"
        for members in self._groups.values():
            for oid, o in members.items():
                assert self._orders[oid] is o
        count = 0
        for wt in WorkingType:
            assert self._stops[wt].rising == stops[wt].rising, f"{wt.name} rising stops"
            assert self._stops[wt].falling == stops[wt].falling, f"{wt.name} falling stops"
            assert self._pending[wt].rising == pending[wt].rising, f"{wt.name} pending trailing"
            assert self._pending[wt].falling == pending[wt].falling, f"{wt.name} pending trailing"
            assert set(self._trailing[wt]) == trailing[wt], f"{wt.name} active trailing"
            for oid, o in self._trailing[wt].items():
                assert self._orders[oid] is o
            count += len(pending[wt]) + len(trailing[wt])
        assert count == self._trailing_count, "trailing count drifted"
        assert count <= self.max_trailing, "over the trailing-stop limit"
