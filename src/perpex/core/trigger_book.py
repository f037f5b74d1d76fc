"""The conditional orders of one symbol (`TriggerBook`), indexed so that a new watched price
finds the orders it fires, in firing order.

Units: prices in ticks, rates in ppm. The rules it applies (when a kind fires, the placement
checks, the refusal codes) are `perpex.core.trigger_rules`.

The book, one per symbol:

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

Snapshot: `record()` is `[symbol, max_orders_per_account, max_trailing, [order, ...]]` with the
orders by ascending id, each as the plain list of its fields in declaration order (enums as
ints); equal books give equal records.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from perpex.core.book import BUY, SELL
from perpex.core.trigger_rules import (
    RISES,
    ConditionalKind,
    ConditionalOrder,
    ConditionalReject,
    WorkingType,
    shape_reject,
    trailing_trigger_ticks,
    trigger_direction,
    validate_conditional,
)
from perpex.core.units import PPM

# Binance's MAX_NUM_ALGO_ORDERS filter on BTCUSDT: conditional orders per account per symbol.
MAX_CONDITIONAL_PER_ACCOUNT: Final = 10
# Active trailing stops are scanned on every price update of their working type; this bounds
# that scan (and the pending ones, which become active without a further check).
MAX_TRAILING_PER_BOOK: Final = 1_000

_TRAILING: Final = ConditionalKind.TRAILING_STOP_MARKET


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
        return self._fired(price_ticks, remove=False)

    def pop_reached(self, price_ticks: int) -> list[int]:
        """`reached`, removing them all."""
        return self._fired(price_ticks, remove=True)

    def _fired(self, price_ticks: int, remove: bool) -> list[int]:
        hits: list[int] = []
        rising = self.rising
        if rising and rising[0][0] <= price_ticks:
            end = bisect.bisect_left(rising, (price_ticks + 1, -1))
            hits.extend(oid for _, oid in rising[:end])
            if remove:
                del rising[:end]
        falling = self.falling
        if falling and falling[-1][0] >= price_ticks:
            start = bisect.bisect_left(falling, (price_ticks, -1))
            hits.extend(oid for _, oid in falling[start:])
            if remove:
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
            assert shape_reject(o) is None, f"order {oid}: {shape_reject(o)!r}"
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
