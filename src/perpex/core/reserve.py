"""Margin held for open orders, re-priced oldest first as the position and the mark move.

Units: prices in ticks, sizes in lots, money in atoms. Oldest first, the first |position| lots
on the closing side are free (they close); everything else opens exposure and holds IM at the
order price (rounded up) plus the open loss against the mark, as `order_path.place_order`
charges it at placement. Without re-pricing, an order placed to close a position that is gone
since would open one with no margin behind it.

Only what can have changed is visited (`records.MarginOrders` states the invariant that makes
this exact): the sides that close the position before or after the fills, and within a side
the head that closes now or closed at its last pricing and the orders marked unpriced since;
the walk of that head starts past its closed head (the oldest orders, closing wholly, that
hold nothing) while the free lots still cover it.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Final

from perpex.core.book import BUY, SELL
from perpex.core.records import Account, MarginOrders, MarketState, Order, Position
from perpex.core.units import Rounding, div

_EVERY_LOT: Final = 2**62  # more lots than a side of open orders can hold


def reserve_orders(
    acct: Account, symbol: str, market: MarketState, size_before: int | None = None
) -> None:
    """Re-price the margin held for the pair's open orders after its position changed.

    With `size_before` (the position before the fills that moved it), only the orders
    whose share of the free lots can have changed are re-priced: those on the closing side
    before or after. The others open exposure either way and keep their margin as placed.
    """
    pos = acct.positions.get(symbol)
    if pos is not None and pos.open_orders:
        reprice_position(acct, pos, market, size_before)


def reprice_position(
    acct: Account, pos: Position, market: MarketState, size_before: int | None
) -> None:
    """`reserve_orders` for a position with open orders."""
    size = pos.size_lots
    mark = market.mark_ticks
    k = market.atoms_per_tick_lot
    delta = 0
    # the closing sides before and after: buys close a short, sells a long
    if size_before is None or size < 0 or size_before < 0:
        free = -size if size < 0 else 0
        delta += reprice_side(pos.margin_buys, free, BUY, mark, k, pos.leverage)
    if size_before is None or size > 0 or size_before > 0:
        free = size if size > 0 else 0
        delta += reprice_side(pos.margin_sells, free, SELL, mark, k, pos.leverage)
    acct.reserved_atoms += delta


def opening_margin_atoms(
    order: Order, mark_ticks: int, leverage: int, atoms_per_tick_lot: int
) -> int:
    """The margin of all of an order's remaining quantity opening: IM at its price plus the
    open loss against the mark (the plain form of what `reprice_side` inlines)."""
    lots, price_ticks = order.remaining_lots, order.price_ticks
    notional_atoms = lots * price_ticks * atoms_per_tick_lot
    loss_ticks = max(0, order.side * (price_ticks - mark_ticks))
    return div(notional_atoms, leverage, Rounding.CEIL) + loss_ticks * lots * atoms_per_tick_lot


def reprice_side(
    side_orders: MarginOrders,
    free_lots: int,
    side: int,
    mark_ticks: int,
    atoms_per_tick_lot: int,
    leverage: int,
) -> int:
    """Re-price one side's margin orders; returns the change of the sum of their margin.

    Oldest first, the first `free_lots` lots close the position and hold nothing; the rest
    hold IM at the order price plus the open loss against the mark, as `place_order`
    charges them. At the mark and leverage of the side's last pricing, only the unpriced
    orders and the head that closes now or closed then are visited: every other order already
    holds what it would get (the `MarginOrders` invariant), so the result is the same as
    visiting them all, at the cost of a few orders instead of the whole side.
    """
    unpriced = side_orders.unpriced
    full = side_orders.mark_ticks != mark_ticks or side_orders.leverage != leverage
    if not side_orders.orders or not (free_lots or side_orders.closing_lots or unpriced or full):
        return 0  # nothing closes, now or then, and the rest holds its margin as priced
    k = atoms_per_tick_lot
    delta = 0
    if unpriced:  # all of each opens unless it is in the head, which the walk below re-prices
        for order in unpriced.values():
            opening_lots = order.remaining_lots
            price_ticks = order.price_ticks
            reserved_atoms = -(-(opening_lots * price_ticks * k) // leverage)
            loss_ticks = (price_ticks - mark_ticks) * side
            if loss_ticks > 0:
                reserved_atoms += loss_ticks * opening_lots * k
            delta += reserved_atoms - order.reserved_atoms
            order.reserved_atoms = reserved_atoms
        unpriced.clear()
    if full:
        reach_lots = _EVERY_LOT  # priced at another mark or leverage: visit every order
        side_orders.mark_ticks = mark_ticks
        side_orders.leverage = leverage
    else:  # the lots of the head: closing now or at the last pricing (their share can move)
        reach_lots = side_orders.closing_lots
        if free_lots > reach_lots:
            reach_lots = free_lots
    side_orders.closing_lots = free_lots
    # The closed head closes now as then if the free lots still cover it: start past it.
    head_lots = side_orders.head_lots
    head_count = side_orders.head_count
    orders: Iterable[Order] = side_orders.orders.values()
    if head_lots > free_lots:  # the position shrank into it: walk from the oldest order
        head_lots = head_count = 0
    elif head_count:
        free_lots -= head_lots
        reach_lots -= head_lots
        orders = islice(orders, head_count, None)
    head_last_id = 0  # the newest order the walk adds to the closed head
    for order in orders:
        if reach_lots <= 0:
            break  # the rest opens wholly, now as then
        opening_lots = order.remaining_lots
        reach_lots -= opening_lots
        if free_lots:
            if opening_lots <= free_lots:  # closes only: it joins the closed head
                free_lots -= opening_lots
                head_lots += opening_lots
                head_count += 1
                head_last_id = order.order_id
                if order.reserved_atoms:
                    delta -= order.reserved_atoms
                    order.reserved_atoms = 0
                continue
            opening_lots -= free_lots
            free_lots = 0
        price_ticks = order.price_ticks
        # ceil(notional / leverage), inlined on this hot path (both are positive)
        reserved_atoms = -(-(opening_lots * price_ticks * k) // leverage)
        loss_ticks = (price_ticks - mark_ticks) * side  # a buy above, a sell below the mark
        if loss_ticks > 0:
            reserved_atoms += loss_ticks * opening_lots * k
        delta += reserved_atoms - order.reserved_atoms
        order.reserved_atoms = reserved_atoms
    side_orders.head_lots = head_lots
    side_orders.head_count = head_count
    if head_last_id:
        side_orders.head_last_id = head_last_id
    elif not head_count:
        side_orders.head_last_id = 0
    return delta


__all__ = ["opening_margin_atoms", "reprice_position", "reprice_side", "reserve_orders"]
