"""The mass quote: a market maker's ladder replaced in one command (`MassQuote`).

Validate the whole command, then cancel the account's open orders in the symbol through the
cancel path, then place each quote through the order path as a post-only (GTX) LIMIT order.
Matching, margin and every per-order check are the order path's (`perpex.core.order_path`);
this module only adds the checks that concern the ladder as a whole.

Units: prices in ticks, sizes in lots.
"""

from __future__ import annotations

from typing import Final

from perpex.core.book import BUY, SELL
from perpex.core.messages import (
    CancelOrder,
    Event,
    MassQuote,
    OrderType,
    PlaceOrder,
    Reason,
    RequestRejected,
    TimeInForce,
)
from perpex.core.order_path import cancel_order, place_order
from perpex.core.store import Store

MAX_MASS_QUOTES: Final = 100  # quotes in one command (the open-order limit bounds them too)


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
    for side, price, qty in quotes:
        if side != BUY and side != SELL:
            return Reason.INVALID_QUOTE_SIDE
        if qty <= 0:
            return Reason.QTY_NOT_POSITIVE
        if qty > market.max_limit_qty_lots:
            return Reason.QTY_ABOVE_MAX
        if not market.min_price_ticks <= price <= market.max_price_ticks:
            return Reason.PRICE_OUT_OF_RANGE
        if side == BUY:
            best_bid = max(best_bid, price)
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
    if pos is not None:
        for order_id in sorted(pos.open_orders):
            canceled = cancel_order(state, CancelOrder(account, symbol, order_id))
            assert canceled is not None, "an open order of the position is the account's"
            events.extend(canceled)
    for side, price, qty in cmd.quotes:
        events.extend(
            place_order(
                state,
                PlaceOrder(account, symbol, side, OrderType.LIMIT, TimeInForce.GTX, qty, price),
            )
        )
    return events


__all__ = ["MAX_MASS_QUOTES", "mass_quote", "mass_quote_refusal"]
