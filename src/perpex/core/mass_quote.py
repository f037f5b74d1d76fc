"""The mass quote: a market maker's ladder replaced in one command (`MassQuote`).

Validate the whole command, then cancel the account's open orders in the symbol (the steps of
`order_path.cancel_order`, inlined), then place each quote through the order path as a
post-only (GTX) LIMIT order. Matching, margin and every per-order check are the order path's
(`perpex.core.order_path`); this module only adds the checks that concern the ladder as a
whole.

Units: prices in ticks, sizes in lots.
"""

from __future__ import annotations

from typing import Final

from perpex.core.book import BUY, SELL
from perpex.core.messages import (
    EndReason,
    Event,
    MassQuote,
    OrderCanceled,
    OrderType,
    PlaceOrder,
    Reason,
    RequestRejected,
    TimeInForce,
)
from perpex.core.order_path import place_order
from perpex.core.records import unregister
from perpex.core.store import Store

MAX_MASS_QUOTES: Final = 100  # quotes in one command (the open-order limit bounds them too)

# What every quote and cancel uses, as Final names (module constants: no attribute lookups in
# the loops; in the compiled build C statics).
_LIMIT: Final = OrderType.LIMIT
_GTX: Final = TimeInForce.GTX
_CANCELED: Final = EndReason.CANCELED
_PLACE_ORDER: Final = PlaceOrder
_ORDER_CANCELED: Final = OrderCanceled


def mass_quote_refusal(state: Store, cmd: MassQuote) -> Reason | None:
    """Why the whole command is refused, or None: the checks of the command as a whole, and of
    each quote's fields (what the order path would otherwise refuse per quote, or not at all)."""
    market = state.markets.get(cmd.symbol)
    if market is None:
        return Reason.UNKNOWN_SYMBOL
    if not state.valid_name(cmd.account):
        return Reason.UNKNOWN_ACCOUNT
    quotes = cmd.quotes
    if len(quotes) > MAX_MASS_QUOTES:
        return Reason.INVALID_QUOTE_COUNT
    if not quotes:
        return None  # an empty ladder pulls the quotes: a maker leaving the book in one step
    if not market.mark_ticks:
        return Reason.NO_MARK_PRICE
    best_bid = 0
    best_ask = 0
    max_qty_lots = market.max_limit_qty_lots
    min_price_ticks, max_price_ticks = market.min_price_ticks, market.max_price_ticks
    for side, price, qty in quotes:
        if side != BUY and side != SELL:
            return Reason.INVALID_QUOTE_SIDE
        if qty <= 0:
            return Reason.QTY_NOT_POSITIVE
        if qty > max_qty_lots:
            return Reason.QTY_ABOVE_MAX
        if not min_price_ticks <= price <= max_price_ticks:
            return Reason.PRICE_OUT_OF_RANGE
        if side == BUY:
            if price > best_bid:
                best_bid = price
        elif best_ask == 0 or price < best_ask:
            best_ask = price
    if best_bid and best_ask and best_bid >= best_ask:
        return Reason.QUOTES_CROSS
    return None


def mass_quote(state: Store, cmd: MassQuote) -> list[Event]:
    """Apply a `MassQuote` (its docstring has the semantics): one `RequestRejected` if the
    command is refused whole; else the cancels' events, then each quote's, in order."""
    reason = mass_quote_refusal(state, cmd)
    if reason is not None:
        return [RequestRejected(cmd.account, cmd.symbol, reason)]
    account, symbol = cmd.account, cmd.symbol
    events: list[Event] = []
    acct = state.accounts.get(account)
    pos = None if acct is None else acct.positions.get(symbol)
    if acct is not None and pos is not None and pos.open_orders:
        # `order_path.cancel_order` for each open order, by id ascending, inlined (a maker's
        # ladder is most of a simulation's cancels), less its margin re-pricing: that re-prices
        # the orders left after a closing order goes, and here none is left. A re-pricing writes
        # no event, only the margin of orders canceled next, and a side left empty meets the
        # `records.MarginOrders` invariant whatever its cached figures: the same events and
        # state as canceling one by one.
        book = state.markets[symbol].book
        for order_id in sorted(pos.open_orders):
            order = pos.open_orders[order_id]
            book.cancel(order_id)
            left = order.remaining_lots
            unregister(acct, pos, order)
            events.append(_ORDER_CANCELED(order_id, account, symbol, left, _CANCELED))
        assert not pos.open_orders, "every open order of the position was canceled"
    for side, price, qty in cmd.quotes:
        events.extend(
            place_order(state, _PLACE_ORDER(account, symbol, side, _LIMIT, _GTX, qty, price))
        )
    return events


__all__ = ["MAX_MASS_QUOTES", "mass_quote", "mass_quote_refusal"]
