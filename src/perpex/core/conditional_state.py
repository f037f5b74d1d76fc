"""The conditional orders' state: trigger books, ladders, waiting entries, placement checks.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. The trigger rules and the
book of waiting orders are `perpex.core.trigger_rules` and `perpex.core.trigger_book` (pure);
what fires them and what they place is the pass, `perpex.core.conditional`.

Placement checks (validate, plan, commit: a refusal changes nothing, not even the id counter):
the symbol, a mark, the client order id (unique across the account's open and conditional
orders), `TriggerBook.check` (shape, -2021 immediate trigger, -2007 callback rate, -4045
limits), prices within the market's range, the quantity limit of the order it will place, and
for reduce-only / close-position orders a position to reduce on the other side, a reduce-only
quantity no larger than it (-2022); other orders meet MIN_NOTIONAL at their trigger price. No
margin is held for a conditional order (Binance checks it when the order is placed).

State: the books, the ladders and the entries the protection pairs wait for are `record()`ed
into the engine's state hash and snapshot; the client-id index (shared with the order path as
`Store.conditional_client_ids`), the ladder-member index and the flat queue are derived
(rebuilt by `load`; the queue is empty between commands).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from perpex.core.exit_ladders import ExitLadder, members
from perpex.core.messages import (
    ConditionalEndReason,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    Event,
    OrderRejected,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    Reason,
    WorkingType,
)
from perpex.core.state import ExchangeState, MarketState
from perpex.core.trigger_book import TriggerBook
from perpex.core.trigger_rules import ConditionalOrder, ConditionalReject, placed_order_type

_MARK: Final = WorkingType.MARK_PRICE


REJECT_REASONS: Final = {
    ConditionalReject.WOULD_IMMEDIATELY_TRIGGER: Reason.WOULD_IMMEDIATELY_TRIGGER,
    ConditionalReject.INVALID_CALLBACK_RATE: Reason.INVALID_CALLBACK_RATE,
    ConditionalReject.INVALID_ACTIVATION_PRICE: Reason.INVALID_ACTIVATION_PRICE,
    ConditionalReject.STOP_PRICE_MISSING: Reason.STOP_PRICE_MISSING,
    ConditionalReject.LIMIT_PRICE_MISSING: Reason.LIMIT_PRICE_MISSING,
    ConditionalReject.CALLBACK_RATE_MISSING: Reason.CALLBACK_RATE_MISSING,
    ConditionalReject.STOP_PRICE_NOT_REQUIRED: Reason.STOP_PRICE_NOT_REQUIRED,
    ConditionalReject.LIMIT_PRICE_NOT_REQUIRED: Reason.LIMIT_PRICE_NOT_REQUIRED,
    ConditionalReject.CALLBACK_RATE_NOT_REQUIRED: Reason.CALLBACK_RATE_NOT_REQUIRED,
    ConditionalReject.ACTIVATION_PRICE_NOT_REQUIRED: Reason.ACTIVATION_PRICE_NOT_REQUIRED,
    ConditionalReject.CLOSE_POSITION_NOT_ALLOWED: Reason.CLOSE_POSITION_NOT_ALLOWED,
    ConditionalReject.REDUCE_ONLY_WITH_CLOSE_POSITION: Reason.REDUCE_ONLY_WITH_CLOSE_POSITION,
    ConditionalReject.QTY_WITH_CLOSE_POSITION: Reason.QTY_WITH_CLOSE_POSITION,
    ConditionalReject.QTY_NOT_POSITIVE: Reason.QTY_NOT_POSITIVE,
    ConditionalReject.NO_REFERENCE_PRICE: Reason.NO_MARK_PRICE,
    ConditionalReject.TOO_MANY_CONDITIONAL_ORDERS: Reason.TOO_MANY_STOP_ORDERS,
    ConditionalReject.TOO_MANY_TRAILING_STOPS: Reason.TOO_MANY_STOP_ORDERS,
}
assert set(REJECT_REASONS) == set(ConditionalReject), "a ConditionalReject without a Reason"


class ConditionalState:
    """The books, ladders and protection entries of one engine, and their derived indexes."""

    __slots__ = (
        "books",
        "client_ids",
        "count",
        "flat",
        "ladder_of",
        "ladders",
        "ladders_touched",
        "parents",
        "state",
    )

    def __init__(self, state: ExchangeState) -> None:
        self.state = state
        self.books: dict[str, TriggerBook] = {s: TriggerBook(s) for s in sorted(state.markets)}
        self.ladders: dict[tuple[str, str], ExitLadder] = {}
        # entry order id -> (account, symbol, OCO group of the protection waiting for it)
        self.parents: dict[int, tuple[str, str, int]] = {}
        # Derived (rebuilt by `load`, checked by `check_invariants`):
        self.count = 0  # orders in all books
        # account -> client id -> order id, the dict the order path checks client ids against
        self.client_ids: dict[str, dict[str, int]] = state.conditional_client_ids
        self.ladder_of: dict[int, tuple[str, str]] = {}  # live ladder order -> its ladder
        self.flat: list[tuple[str, str]] = []  # positions that went to zero, not yet flushed
        self.ladders_touched: set[tuple[str, str]] = set()  # lost a member this command
        state.on_position_flat = self.on_position_flat

    # -- reads --------------------------------------------------------------------------------
    def pending(self) -> bool:
        """Anything for `after_command` to do (the engine's cheap test on every command)."""
        return bool(self.count or self.flat or self.parents or self.ladders_touched)

    def owns_client_id(self, account: str, client_order_id: str) -> bool:
        mine = self.client_ids.get(account)
        return mine is not None and client_order_id in mine

    def get(self, order_id: int) -> ConditionalOrder | None:
        for book in self.books.values():
            order = book.get(order_id)
            if order is not None:
                return order
        return None

    def orders_of(self, account: str) -> list[ConditionalOrder]:
        """An account's conditional orders in every symbol, by ascending id."""
        found = [o for book in self.books.values() for o in book.orders_of(account)]
        return sorted(found, key=lambda o: o.order_id)

    def order_id_of(self, account: str, client_order_id: str) -> int | None:
        return self.client_ids.get(account, {}).get(client_order_id)

    @staticmethod
    def watched_price_ticks(market: MarketState, working_type: WorkingType) -> int:
        """The price an order of this working type compares against now. Before the first
        trade a CONTRACT_PRICE order is placed against the mark (it fires on trades only)."""
        if working_type == _MARK:
            return market.mark_ticks
        return market.last_trade_ticks or market.mark_ticks

    # -- what settlement tells ----------------------------------------------------------------
    def on_position_flat(self, account: str, symbol: str) -> None:
        """Settlement saw (account, symbol) go to zero or flip through it in one fill; its
        stops that no longer close the position go at the next flush."""
        if self.count and self.books[symbol].count_of(account):
            self.flat.append((account, symbol))

    # -- placement checks ---------------------------------------------------------------------
    def placement_refusal(
        self,
        order: ConditionalOrder,
        market: MarketState,
        *,
        attached: bool = False,
        extra_count: int = 0,
    ) -> Reason | None:
        """Every placement check, no writes. `attached`: protection placed with its entry (no
        position needed yet); `extra_count`: orders of the same command not in the book yet."""
        state = self.state
        spec = market.spec
        book = self.books[order.symbol]
        cid = order.client_order_id
        if cid is not None:
            acct = state.accounts.get(order.account)
            if (acct is not None and cid in acct.client_ids) or self.owns_client_id(
                order.account, cid
            ):
                return Reason.DUPLICATE_CLIENT_ORDER_ID
        reject = book.check(order, self.watched_price_ticks(market, order.working_type))
        if reject is not None:
            return REJECT_REASONS[reject]
        if book.count_of(order.account) + extra_count >= book.max_orders_per_account:
            return Reason.TOO_MANY_STOP_ORDERS
        for price_ticks in (
            order.stop_price_ticks,
            order.limit_price_ticks,
            order.activation_price_ticks,
        ):
            if price_ticks and not spec.min_price_ticks <= price_ticks <= spec.max_price_ticks:
                return Reason.PRICE_OUT_OF_RANGE
        placed_type = placed_order_type(order.kind)
        max_lots = (
            spec.max_market_qty_lots if placed_type == OrderType.MARKET else spec.max_limit_qty_lots
        )
        if order.qty_lots > max_lots:
            return Reason.QTY_ABOVE_MAX
        if order.reduce_only or order.close_position:
            if attached:
                return None
            pos = state.position_of(order.account, order.symbol)
            size = pos.size_lots if pos is not None else 0
            # Binance trims an oversized reduce-only stop when it fires; perpex refuses it at
            # placement, where the trader can still fix it, as it refuses one with no position.
            if size * order.side >= 0 or (order.reduce_only and order.qty_lots > abs(size)):
                return Reason.REDUCE_ONLY_REJECTED
            return None
        reference_ticks = (
            order.limit_price_ticks
            or order.stop_price_ticks
            or order.activation_price_ticks
            or self.watched_price_ticks(market, order.working_type)
        )
        if reference_ticks * order.qty_lots * spec.atoms_per_tick_lot < spec.min_notional_atoms:
            return Reason.MIN_NOTIONAL
        return None

    # -- book keeping -------------------------------------------------------------------------
    def add(self, order: ConditionalOrder, market: MarketState) -> None:
        self.books[order.symbol].add(order, self.watched_price_ticks(market, order.working_type))
        self.count += 1
        if order.client_order_id is not None:
            self.client_ids.setdefault(order.account, {})[order.client_order_id] = order.order_id

    def removed(self, order: ConditionalOrder) -> None:
        """Forget an order that has left its book (fired or canceled)."""
        self.count -= 1
        cid = order.client_order_id
        if cid is not None:
            mine = self.client_ids[order.account]
            del mine[cid]
            if not mine:
                del self.client_ids[order.account]
        key = self.ladder_of.pop(order.order_id, None)
        if key is not None:
            self.ladders_touched.add(key)
            ladder = self.ladders[key]
            if ladder.stop_order_id == order.order_id:
                ladder.stop_order_id = 0

    def waiting_groups(self, account: str, symbol: str) -> set[int]:
        """OCO groups of protection whose entry order still rests."""
        if not self.parents:
            return set()
        acct = self.state.accounts.get(account)
        return {
            group
            for entry_id, (a, s, group) in self.parents.items()
            if a == account and s == symbol and acct is not None and entry_id in acct.orders
        }

    # -- state --------------------------------------------------------------------------------
    def record(self) -> list[Any]:
        """Canonical plain data: the books, the ladders, the entries protection waits for."""
        return [
            [self.books[symbol].record() for symbol in sorted(self.books)],
            [msgspec.to_builtins(self.ladders[key]) for key in sorted(self.ladders)],
            [[eid, a, s, g] for eid, (a, s, g) in sorted(self.parents.items())],
        ]

    def load(self, record: list[Any]) -> None:
        """Replace the state with a `record()`; rebuild the derived indexes."""
        book_records, ladder_records, parent_records = record
        books = [TriggerBook.from_record(r) for r in book_records]
        assert sorted(b.symbol for b in books) == sorted(self.books), "books != markets"
        self.books = {b.symbol: b for b in sorted(books, key=lambda b: b.symbol)}
        self.ladders = {}
        for r in ladder_records:
            ladder = msgspec.convert(r, ExitLadder)
            self.ladders[(ladder.account, ladder.symbol)] = ladder
        self.parents = {eid: (a, s, g) for eid, a, s, g in parent_records}
        self.count = 0
        self.client_ids.clear()  # (the dict the order path reads: kept, not replaced)
        self.flat = []
        self.ladders_touched = set()
        for book in self.books.values():
            for order in book.orders():
                self.count += 1
                if order.client_order_id is not None:
                    mine = self.client_ids.setdefault(order.account, {})
                    mine[order.client_order_id] = order.order_id
        self.ladder_of = self.ladder_index()

    def ladder_index(self) -> dict[int, tuple[str, str]]:
        index: dict[int, tuple[str, str]] = {}
        for key, ladder in self.ladders.items():
            book = self.books[ladder.symbol]
            for oid in members(ladder):
                if oid in book:
                    index[oid] = key
        return index

    def check_invariants(self) -> None:
        """Recompute the derived indexes and cross-check with the engine; AssertionError."""
        state = self.state
        assert not self.flat, "flat positions not flushed at the end of a command"
        assert not self.ladders_touched, "ladders not cleaned up at the end of a command"
        assert sorted(self.books) == sorted(state.markets), "a trigger book per market"
        count = 0
        client_ids: dict[str, dict[str, int]] = {}
        for symbol, book in self.books.items():
            assert book.symbol == symbol
            book.validate_internal_state()
            for o in book.orders():
                count += 1
                assert 0 < o.order_id < state.next_order_id, f"conditional id {o.order_id}"
                acct = state.accounts.get(o.account)
                assert acct is not None, f"conditional order {o.order_id} of no account"
                assert o.order_id not in acct.orders, f"id {o.order_id} both open and conditional"
                if o.client_order_id is not None:
                    assert o.client_order_id not in acct.client_ids, "client id used twice"
                    client_ids.setdefault(o.account, {})[o.client_order_id] = o.order_id
                if o.reduce_only or o.close_position:
                    pos = acct.positions.get(symbol)
                    waiting = o.oco_group is not None and o.oco_group in self.waiting_groups(
                        o.account, symbol
                    )
                    assert waiting or (pos is not None and pos.size_lots), (
                        f"reduce-only conditional {o.order_id} outlived its position"
                    )
        assert count == self.count, "conditional order count drifted"
        assert client_ids == self.client_ids, "conditional client-id index drifted"
        assert self.client_ids is state.conditional_client_ids, "client-id index not shared"
        for key, ladder in self.ladders.items():
            assert key == (ladder.account, ladder.symbol)
            book = self.books[ladder.symbol]
            assert ladder.stop_order_id == 0 or ladder.stop_order_id in book, "ladder stop gone"
            assert any(oid in book for oid in members(ladder)), "empty ladder kept"
        assert self.ladder_of == self.ladder_index(), "ladder member index drifted"
        for entry_id, (_account, symbol, group) in self.parents.items():
            assert 0 < entry_id < state.next_order_id
            assert self.books[symbol].group(group), f"protection of entry {entry_id} is gone"


# -- events -----------------------------------------------------------------------------------
def accepted(o: ConditionalOrder) -> ConditionalOrderAccepted:
    return ConditionalOrderAccepted(
        o.order_id,
        o.account,
        o.symbol,
        o.side,
        o.kind,
        o.working_type,
        o.qty_lots,
        o.stop_price_ticks,
        o.limit_price_ticks,
        o.time_in_force,
        o.reduce_only,
        o.close_position,
        o.client_order_id,
        o.callback_rate_ppm,
        o.activation_price_ticks,
        o.oco_group,
    )


def canceled(o: ConditionalOrder, reason: ConditionalEndReason) -> ConditionalOrderCanceled:
    return ConditionalOrderCanceled(o.order_id, o.account, o.symbol, reason)


def rejected(cmd: PlaceConditionalOrder, reason: Reason) -> list[Event]:
    return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, reason)]


def ladder_rejected(cmd: PlaceExitLadder, reason: Reason) -> list[Event]:
    return [OrderRejected(cmd.account, cmd.symbol, None, reason)]


__all__ = [
    "REJECT_REASONS",
    "ConditionalState",
    "accepted",
    "canceled",
    "ladder_rejected",
    "rejected",
]
