"""Every account's orders, algo (conditional) orders and trades, kept from the engine's events;
and, once live, the user stream's ORDER_TRADE_UPDATE and ALGO_UPDATE payloads.

An `EventSink` run in the writer thread: the start-up replay feeds it every event of the
journal, then the sequencer every new one, so the history is the same after a restart. Events
carry no time of their own: an order's times are the engine clock of the last `ClockAdvanced`
(the sequencer stamps the wall clock at the start of every writing batch), in ms.

Bounded: per account, every open order and algo order plus the last `MAX_CLOSED_ORDERS` closed
orders, `MAX_CLOSED_ALGOS` closed algo orders and `MAX_TRADES` trades; `user_messages` is cut
to its newest `MAX_USER_MESSAGES` if nobody drains it.

Orders the engine places itself get Binance's client ids: a liquidation order (the book
orders following a `LiquidationTriggered` of their account) `autoclose-<id>` with type
LIQUIDATION; an auto-deleveraging close (`AutoDeleveraged`, which has no order or trade of
its own in the engine) one synthetic FILLED LIQUIDATION order per side, `autoclose-<id>` for
the liquidated account and `adl_autoclose` for the counterparty, with ids from
`SYNTHETIC_ID_BASE` up (they never meet the engine's counter); an order placed without a
client id `perpex-<id>`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final

from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    AutoDeleveraged,
    ClockAdvanced,
    ConditionalEndReason,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    EndReason,
    Event,
    LiquidationTriggered,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderRejected,
    PositionChanged,
    TradeExecuted,
)
from perpex.errors import REASON_CODES
from perpex.server import orders_wire
from perpex.server.order_records import (
    LIQUIDATION_TYPE,
    MAX_CLOSED_ALGOS,
    MAX_CLOSED_ORDERS,
    MAX_TRADES,
    AccountBook,
    AlgoRecord,
    OrderRecord,
    TradeRecord,
)

MAX_USER_MESSAGES: Final = 100_000  # undrained payloads kept (the publisher drains each batch)
SYNTHETIC_ID_BASE: Final = 1 << 52  # ADL orders and trades: far above the engine's counter
NS_PER_MS: Final = 1_000_000
UNNAMED_PREFIX: Final = "perpex-"
LIQUIDATION_PREFIX: Final = "autoclose-"
ADL_CLIENT_ID: Final = "adl_autoclose"


def _ended_status(reason: EndReason) -> tuple[str, str]:
    """(execution type, status) of an order that left the book unfilled."""
    if reason is EndReason.CANCELED:
        return "CANCELED", "CANCELED"
    if reason is EndReason.SELF_TRADE:
        return "EXPIRED", "EXPIRED_IN_MATCH"
    return "EXPIRED", "EXPIRED"


def _reason_text(reason: Any) -> str:
    """Binance's message for a refusal, its placeholders dropped (an ALGO_UPDATE's `rm`)."""
    _, template = REASON_CODES.get(reason, (0, str(getattr(reason, "name", reason))))
    return template.split(" {")[0].split("{")[0].strip()


def net_fill(
    size: int, cost: int, side: int, lots: int, price: int, k: int
) -> tuple[int, int, int]:
    """(realized PnL, size, cost) after a fill, as the engine nets it (core.settlement.net_fill:
    the closed part's cost rounded up)."""
    realized = 0
    if size * side < 0:
        held = -size if size < 0 else size
        close = lots if lots < held else held
        part = cost if close == held else -(-(cost * close) // held)
        realized = -side * close * price * k - part
        size += side * close
        cost -= part
        lots -= close
    if lots:
        size += side * lots
        cost += side * lots * price * k
    return realized, size, cost


class AccountHistory:
    """The orders, algo orders and trades of every account (an `EventSink`)."""

    def __init__(self, specs: Sequence[MarketSpec]) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.live = False  # set once the start-up replay is done
        self.user_messages: list[tuple[str, dict[str, object]]] = []  # (account, payload)
        # The streams' publisher may set this to skip building payloads for accounts that
        # have no user-stream connection (None: every account's are built).
        self.wants_user_messages: Callable[[str], bool] | None = None
        self.now_ms = 0
        self._books: dict[str, AccountBook] = {}
        self._positions: dict[tuple[str, str], tuple[int, int]] = {}  # (size_lots, cost_atoms)
        self._next_synthetic_id = SYNTHETIC_ID_BASE
        # Within one `apply`: accounts being liquidated, orders a fired algo order is placing
        # (announced by ConditionalOrderTriggered just before their OrderAccepted), and an algo
        # order whose order was refused (its OrderRejected follows).
        self._liquidating: set[str] = set()
        self._placing: dict[int, AlgoRecord] = {}
        # Orders placed with a self-trade prevention mode other than the default, (account,
        # order id) -> mode: set by the placing job (or the start-up replay, from the journaled
        # command) before the order's events come, taken by its OrderAccepted.
        self.stp_modes: dict[tuple[str, int], str] = {}
        self._refused: tuple[str, AlgoRecord] | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            ClockAdvanced: self._on_clock,
            OrderAccepted: self._on_accepted,
            TradeExecuted: self._on_trade,
            OrderCanceled: self._on_canceled,
            OrderAmended: self._on_amended,
            OrderRejected: self._on_rejected,
            PositionChanged: self._on_position,
            LiquidationTriggered: self._on_liquidation,
            AutoDeleveraged: self._on_adl,
            ConditionalOrderAccepted: self._on_algo_accepted,
            ConditionalOrderTriggered: self._on_algo_triggered,
            ConditionalOrderCanceled: self._on_algo_canceled,
        }

    # -- the sink -------------------------------------------------------------------------
    def apply(self, events: Sequence[Event]) -> None:
        handlers = self._handlers
        for e in events:
            handler = handlers.get(type(e))
            if handler is not None:
                handler(e)
        if self._refused is not None:
            account, algo = self._refused
            self._refused = None
            self._emit_algo(account, algo)
        self._liquidating.clear()
        self._placing.clear()

    # -- reads (in the writer thread: a sequencer job's fn or then) -------------------------
    def order(self, account: str, order_id: int) -> OrderRecord | None:
        book = self._books.get(account)
        return None if book is None else book.orders.get(order_id)

    def order_id_of(self, account: str, client_order_id: str) -> int | None:
        book = self._books.get(account)
        return None if book is None else book.client_ids.get(client_order_id)

    def algo(self, account: str, algo_id: int) -> AlgoRecord | None:
        book = self._books.get(account)
        return None if book is None else book.algos.get(algo_id)

    def algo_id_of(self, account: str, client_algo_id: str) -> int | None:
        book = self._books.get(account)
        return None if book is None else book.client_algo_ids.get(client_algo_id)

    def open_orders(self, account: str, symbol: str | None = None) -> list[OrderRecord]:
        book = self._books.get(account)
        if book is None:
            return []
        found = [o for o in book.open_orders.values() if symbol is None or o.symbol == symbol]
        return sorted(found, key=lambda o: o.order_id)

    def orders(self, account: str, symbol: str) -> list[OrderRecord]:
        """Every kept order of the symbol (open and closed), by id."""
        book = self._books.get(account)
        if book is None:
            return []
        return sorted(
            (o for o in book.orders.values() if o.symbol == symbol), key=lambda o: o.order_id
        )

    def open_algos(self, account: str, symbol: str | None = None) -> list[AlgoRecord]:
        book = self._books.get(account)
        if book is None:
            return []
        found = [a for a in book.open_algos.values() if symbol is None or a.symbol == symbol]
        return sorted(found, key=lambda a: a.algo_id)

    def algos(self, account: str, symbol: str) -> list[AlgoRecord]:
        book = self._books.get(account)
        if book is None:
            return []
        return sorted(
            (a for a in book.algos.values() if a.symbol == symbol), key=lambda a: a.algo_id
        )

    def trades(self, account: str, symbol: str) -> list[TradeRecord]:
        """The kept trades of the symbol, oldest first."""
        book = self._books.get(account)
        if book is None:
            return []
        return [t for t in book.trades if t.symbol == symbol]

    def notional(self, account: str, symbol: str) -> tuple[int, int]:
        """Σ remaining lots x price of the open orders, bids and asks (quote ticks)."""
        book = self._books.get(account)
        sides = None if book is None else book.notional.get(symbol)
        return (0, 0) if sides is None else (sides[0], sides[1])

    # -- events ---------------------------------------------------------------------------
    def _book(self, account: str) -> AccountBook:
        book = self._books.get(account)
        if book is None:
            book = self._books[account] = AccountBook()
        return book

    def _on_clock(self, e: ClockAdvanced) -> None:
        self.now_ms = e.ts_ns // NS_PER_MS

    def _on_position(self, e: PositionChanged) -> None:
        self._positions[(e.account, e.symbol)] = (e.size_lots, e.cost_atoms)

    def _on_liquidation(self, e: LiquidationTriggered) -> None:
        self._liquidating.add(e.account)

    def _on_accepted(self, e: OrderAccepted) -> None:
        book = self._book(e.account)
        now = self.now_ms
        order_type = e.order_type.name
        algo = self._placing.pop(e.order_id, None)
        client_id = e.client_order_id
        o = OrderRecord(
            e.order_id, e.symbol, "", e.side, order_type, order_type, e.time_in_force.name,
            e.price_ticks, e.qty_lots, e.reduce_only, "NEW", now, now,
        )  # fmt: skip
        if self.stp_modes:
            o.stp_mode = self.stp_modes.pop((e.account, e.order_id), o.stp_mode)
        if algo is not None:
            o.orig_type = algo.type
            o.stop_price_ticks = algo.trigger_price_ticks
            o.working_type = algo.working_type
            o.close_position = algo.close_position
            o.callback_rate_ppm = algo.callback_rate_ppm
            o.activation_price_ticks = algo.activation_price_ticks
            o.algo_id = algo.algo_id
            client_id = client_id or algo.client_algo_id
        elif (
            client_id is None
            and e.reduce_only
            and e.account in self._liquidating
            and order_type == "LIMIT"
        ):
            o.type = o.orig_type = LIQUIDATION_TYPE
            client_id = f"{LIQUIDATION_PREFIX}{e.order_id}"
        if client_id is None:
            client_id = f"{UNNAMED_PREFIX}{e.order_id}"
        o.client_order_id = client_id
        book.orders[o.order_id] = o
        book.open_orders[o.order_id] = o
        book.client_ids[client_id] = o.order_id
        book.add_notional(o, o.qty_lots)
        self._emit_order(e.account, book, o, "NEW", None)

    def _on_trade(self, e: TradeExecuted) -> None:
        now = self.now_ms
        for account, order_id, side, fee, pnl, maker in (
            (e.taker_account, e.taker_order_id, e.taker_side, e.taker_fee_atoms,
             e.taker_realized_pnl_atoms, False),
            (e.maker_account, e.maker_order_id, -e.taker_side, e.maker_fee_atoms,
             e.maker_realized_pnl_atoms, True),
        ):  # fmt: skip
            book = self._book(account)
            trade = TradeRecord(
                e.trade_id, order_id, e.symbol, side, e.price_ticks, e.qty_lots, fee, pnl, maker,
                now,
            )  # fmt: skip
            book.trades.append(trade)
            o = book.orders.get(order_id)
            if o is None or not o.is_open:
                continue
            if e.liquidation and not maker and o.type != LIQUIDATION_TYPE:
                o.type = o.orig_type = LIQUIDATION_TYPE  # (the heuristic in _on_accepted missed)
            self._fill(account, book, o, trade)

    def _fill(self, account: str, book: AccountBook, o: OrderRecord, trade: TradeRecord) -> None:
        lots = min(trade.qty_lots, o.remaining_lots)
        book.add_notional(o, -lots)
        o.filled_lots += trade.qty_lots
        o.quote_ticks += trade.qty_lots * trade.price_ticks
        o.updated_ms = self.now_ms
        done = o.filled_lots >= o.qty_lots
        o.status = "FILLED" if done else "PARTIALLY_FILLED"
        if done:
            book.close_order(o)
        self._emit_order(account, book, o, "TRADE", trade)
        if done:
            self._finish_algo(account, book, o)

    def _on_canceled(self, e: OrderCanceled) -> None:
        book = self._books.get(e.account)
        o = None if book is None else book.orders.get(e.order_id)
        if book is None or o is None or not o.is_open:
            return
        execution, o.status = _ended_status(e.reason)
        book.add_notional(o, -o.remaining_lots)
        o.updated_ms = self.now_ms
        book.close_order(o)
        self._emit_order(e.account, book, o, execution, None)
        self._finish_algo(e.account, book, o)

    def _on_amended(self, e: OrderAmended) -> None:
        """Modify Order: the same order, a new price and total quantity (its trades and its
        end, if the new price crossed, follow as separate events)."""
        book = self._books.get(e.account)
        o = None if book is None else book.orders.get(e.order_id)
        if book is None or o is None or not o.is_open:
            return
        book.add_notional(o, -o.remaining_lots)
        o.price_ticks = e.price_ticks
        o.qty_lots = e.qty_lots
        o.updated_ms = self.now_ms
        book.add_notional(o, o.remaining_lots)
        self._emit_order(e.account, book, o, "AMENDMENT", None)

    def _finish_algo(self, account: str, book: AccountBook, o: OrderRecord) -> None:
        """The order an algo order placed is done: the algo order is FINISHED."""
        algo = book.algos.get(o.algo_id) if o.algo_id else None
        if algo is not None and algo.status == "TRIGGERED":
            algo.status = "FINISHED"
            algo.updated_ms = self.now_ms
            self._emit_algo(account, algo)

    def _on_rejected(self, e: OrderRejected) -> None:
        refused = self._refused
        if refused is not None and refused[0] == e.account:
            self._refused = None
            refused[1].reject_reason = _reason_text(e.reason)
            self._emit_algo(e.account, refused[1])

    def _on_algo_accepted(self, e: ConditionalOrderAccepted) -> None:
        book = self._book(e.account)
        now = self.now_ms
        client_id = e.client_order_id or f"{UNNAMED_PREFIX}{e.order_id}"
        a = AlgoRecord(
            e.order_id, e.symbol, client_id, e.side, e.kind.name, e.working_type.name,
            e.time_in_force.name, e.qty_lots, e.stop_price_ticks, e.limit_price_ticks,
            e.reduce_only, e.close_position, e.callback_rate_ppm, e.activation_price_ticks or 0,
            "NEW", now, now,
        )  # fmt: skip
        book.algos[a.algo_id] = a
        book.open_algos[a.algo_id] = a
        book.client_algo_ids[client_id] = a.algo_id
        self._emit_algo(e.account, a)

    def _on_algo_triggered(self, e: ConditionalOrderTriggered) -> None:
        book = self._books.get(e.account)
        a = None if book is None else book.algos.get(e.order_id)
        if book is None or a is None or not a.is_open:
            return
        a.trigger_ms = a.updated_ms = self.now_ms
        book.close_algo(a)
        if e.placed_order_id is None:
            a.status = "REJECTED"
            if self._refused is not None:  # (one refusal at a time: flush the earlier)
                self._emit_algo(*self._refused)
            self._refused = (e.account, a)
            return
        a.status = "TRIGGERED"
        a.actual_order_id = e.placed_order_id
        self._placing[e.placed_order_id] = a
        self._emit_algo(e.account, a)

    def _on_algo_canceled(self, e: ConditionalOrderCanceled) -> None:
        book = self._books.get(e.account)
        a = None if book is None else book.algos.get(e.order_id)
        if book is None or a is None or not a.is_open:
            return
        a.status = "CANCELED" if e.reason is ConditionalEndReason.CANCELED else "EXPIRED"
        a.updated_ms = self.now_ms
        book.close_algo(a)
        self._emit_algo(e.account, a)

    def _on_adl(self, e: AutoDeleveraged) -> None:
        """One fill between the liquidated account and a counterparty at the bankruptcy
        price, off the book and without fee: a synthetic FILLED order and trade per side."""
        spec = self.specs.get(e.symbol)
        if spec is None:
            return
        size, _ = self._positions.get((e.liquidated_account, e.symbol), (0, 0))
        close_side = -1 if size > 0 else 1  # the liquidated account's side
        trade_id = self._synthetic_id()
        for account, side, client_id in (
            (e.liquidated_account, close_side, None),
            (e.counterparty_account, -close_side, ADL_CLIENT_ID),
        ):
            key = (account, e.symbol)
            held, cost = self._positions.get(key, (0, 0))
            realized, held, cost = net_fill(
                held, cost, side, e.qty_lots, e.price_ticks, spec.atoms_per_tick_lot
            )
            self._positions[key] = (held, cost)
            order_id = self._synthetic_id()
            book = self._book(account)
            now = self.now_ms
            o = OrderRecord(
                order_id, e.symbol, client_id or f"{LIQUIDATION_PREFIX}{order_id}", side,
                LIQUIDATION_TYPE, LIQUIDATION_TYPE, "IOC", e.price_ticks, e.qty_lots, True,
                "NEW", now, now,
            )  # fmt: skip
            book.orders[order_id] = o
            book.open_orders[order_id] = o
            book.add_notional(o, o.qty_lots)
            self._emit_order(account, book, o, "NEW", None)
            trade = TradeRecord(
                trade_id, order_id, e.symbol, side, e.price_ticks, e.qty_lots, 0, realized,
                False, now,
            )  # fmt: skip
            book.trades.append(trade)
            self._fill(account, book, o, trade)

    def _synthetic_id(self) -> int:
        self._next_synthetic_id += 1
        return self._next_synthetic_id

    # -- the user stream ------------------------------------------------------------------
    def _wanted(self, account: str) -> bool:
        if not self.live:
            return False
        wants = self.wants_user_messages
        return wants is None or wants(account)

    def _emit_order(
        self,
        account: str,
        book: AccountBook,
        o: OrderRecord,
        execution: str,
        fill: TradeRecord | None,
    ) -> None:
        if not self._wanted(account):
            return
        sides = book.notional.get(o.symbol) or (0, 0)
        payload = orders_wire.order_trade_update(
            self.specs[o.symbol], o, execution, fill, self.now_ms, sides[0], sides[1]
        )
        self._push(account, payload)

    def _emit_algo(self, account: str, a: AlgoRecord) -> None:
        if not self._wanted(account):
            return
        actual = self.order(account, a.actual_order_id) if a.actual_order_id else None
        self._push(account, orders_wire.algo_update(self.specs[a.symbol], a, actual, self.now_ms))

    def _push(self, account: str, payload: dict[str, object]) -> None:
        messages = self.user_messages
        messages.append((account, payload))
        if len(messages) > MAX_USER_MESSAGES:
            del messages[: len(messages) - MAX_USER_MESSAGES]


__all__ = [
    "ADL_CLIENT_ID",
    "LIQUIDATION_PREFIX",
    "MAX_CLOSED_ALGOS",
    "MAX_CLOSED_ORDERS",
    "MAX_TRADES",
    "MAX_USER_MESSAGES",
    "SYNTHETIC_ID_BASE",
    "UNNAMED_PREFIX",
    "AccountHistory",
    "net_fill",
]
