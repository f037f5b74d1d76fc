"""Order amendment: a new price and total quantity for an open LIMIT order, its id kept
(Binance USDⓈ-M "Modify Order", PUT /fapi/v1/order; the command is `AmendOrder`).

Units: prices in ticks, sizes in lots, money in atoms; k = atoms_per_tick_lot.

The rules, in the order they are checked (the codes are `perpex.errors.REASON_CODES`'):
- The order: an open order of the account in the symbol, by id, else by client order id (the
  id wins when both are sent, as on Binance). Every open book order is a LIMIT order, NEW or
  PARTIALLY_FILLED; anything else, a done order or a conditional order's id included, is
  ORDER_DOES_NOT_EXIST (-2013 "Order does not exist.", Binance's answer to a modify; -2011 is
  its cancel's).
- `side` must be the order's: AMEND_SIDE_MISMATCH (-1130, the parameter 'side' named).
- The new total quantity within the market's max (QTY_ABOVE_MAX) and the new price within its
  range (PRICE_OUT_OF_RANGE), as for a new order.
- The new total quantity must exceed what has filled: AMEND_QTY_NOT_ABOVE_FILLED (-4003: the
  rest would be <= 0). Binance cancels the order in this case; here the amendment is refused
  and the order stays as it is (DESIGN.md §7: a refused call changes nothing).
- The same price and quantity as now: AMEND_NO_CHANGE (-5027 "No need to modify the order.").
- The new price within the band around the mark (PRICE_ABOVE_BAND / PRICE_BELOW_BAND); a
  reduce-only order still against a position on the other side (REDUCE_ONLY_REJECTED), its
  rest capped at the position as `order_path.place_order` caps a new one; any other order at
  least the market's min notional, new price x new total quantity (AMEND_MIN_NOTIONAL: -5029,
  Binance's MODIFICATION_MIN_NOTIONAL).
- A post-only (GTX) order whose new price would take liquidity: POST_ONLY_WOULD_CROSS (-5022).
  Binance cancels it; here it is refused and stays.
- An order that grows (more lots left, or more notional) meets the exposure caps of a new
  order (POSITION_BOUND, POSITION_OVER_LEVERAGE_CAP), counted as `place_order` counts them.
- Margin: the order keeps its id, so among its side's orders it keeps its place, oldest first,
  for the closing allowance (`perpex.core.reserve`). The side's order margin at the current
  mark is computed with the amended order and without the change; the difference, what the
  amendment itself needs, must not exceed the available balance: INSUFFICIENT_MARGIN (-2019).

Queue priority: a smaller quantity at the same price keeps the order's place in its level
(the book shrinks it in place); a new price or a larger quantity sends it to the back of the
level, as Binance re-queues modified orders. A new price that crosses the book trades like a
new GTC order placed there: fills at the makers' prices, expire-taker self-trade prevention,
a closing order never taking liquidity past its bankruptcy price; then the rest rests.

Validate, plan, commit: `plan_amendment` checks everything and computes the new figures and
the side's margin without writing; `commit_amendment` applies them and cannot fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from perpex.core.book import BUY, SELL
from perpex.core.messages import (
    AmendOrder,
    EndReason,
    Event,
    OrderAmended,
    OrderCanceled,
    Reason,
    RequestRejected,
    TimeInForce,
)
from perpex.core.order_path import bankruptcy_cap, reduce_only_budget, reprice_touched
from perpex.core.records import (
    Account,
    MarginOrders,
    MarketState,
    Order,
    Position,
    unregister,
)
from perpex.core.reserve import reprice_position, reprice_side
from perpex.core.settlement import settle_match
from perpex.core.store import EngineError, Store
from perpex.core.units import PPM

_GTX: Final = TimeInForce.GTX
_EVERY_TICK: Final = 2**62  # beyond every price: a walk to it sees a whole side of the book


class AmendPlan:
    """A validated amendment: the order, its new figures and what its side's margin becomes."""

    __slots__ = (
        "acct",
        "capped",
        "keep_priority",
        "limit_ticks",
        "market",
        "order",
        "pos",
        "price_ticks",
        "qty_lots",
        "remaining_lots",
        "side_margin_atoms",
    )

    def __init__(
        self,
        acct: Account,
        pos: Position,
        market: MarketState,
        order: Order,
        qty_lots: int,
        remaining_lots: int,
        price_ticks: int,
        limit_ticks: int,
        capped: bool,
        keep_priority: bool,
        side_margin_atoms: int,
    ) -> None:
        self.acct = acct
        self.pos = pos
        self.market = market
        self.order = order
        self.qty_lots = qty_lots  # the new total (original) quantity
        self.remaining_lots = remaining_lots  # what the amended order offers
        self.price_ticks = price_ticks
        self.limit_ticks = limit_ticks  # how far it may take liquidity (the bankruptcy cap)
        self.capped = capped  # the limit is the bankruptcy cap, not the price
        self.keep_priority = keep_priority  # shrunk in place at the same price
        self.side_margin_atoms = side_margin_atoms  # its side's order margin after it


def amend_order(state: Store, cmd: AmendOrder) -> list[Event]:
    """Apply an `AmendOrder`: one `RequestRejected` if it is refused (nothing changed), else
    `OrderAmended`, then the trades of a new price that crosses and the order's end if it
    filled or expired, as for a new order."""
    plan = plan_amendment(state, cmd)
    if isinstance(plan, Reason):
        return [RequestRejected(cmd.account, cmd.symbol, plan)]
    return commit_amendment(state, plan)


def find_open_order(state: Store, cmd: AmendOrder) -> Order | None:
    """The account's open order in the symbol that `cmd` names (its id wins over its client
    order id), or None."""
    acct = state.accounts.get(cmd.account)
    if acct is None:
        return None
    order: Order | None = None
    if cmd.order_id is not None:
        order = acct.orders.get(cmd.order_id)
    elif cmd.client_order_id is not None:
        order_id = acct.client_ids.get(cmd.client_order_id)
        order = None if order_id is None else acct.orders.get(order_id)
    if order is None or order.symbol != cmd.symbol:
        return None
    return order


def plan_amendment(state: Store, cmd: AmendOrder) -> AmendPlan | Reason:
    """Check an amendment and compute what it will do; writes nothing."""
    market = state.markets.get(cmd.symbol)
    if market is None:
        return Reason.UNKNOWN_SYMBOL
    side = cmd.side
    if side != BUY and side != SELL:
        raise EngineError(f"side {side!r}")
    qty = cmd.qty_lots
    price = cmd.price_ticks
    if qty <= 0 or price <= 0:
        raise EngineError("quantity and price must be positive (the edge checks them)")
    order = find_open_order(state, cmd)
    if order is None:
        return Reason.ORDER_DOES_NOT_EXIST
    if side != order.side:
        return Reason.AMEND_SIDE_MISMATCH
    mark = market.mark_ticks
    if not mark:  # (a market with open orders has a mark: kept for safety)
        return Reason.NO_MARK_PRICE
    if qty > market.max_limit_qty_lots:
        return Reason.QTY_ABOVE_MAX
    if not market.min_price_ticks <= price <= market.max_price_ticks:
        return Reason.PRICE_OUT_OF_RANGE
    filled = order.filled_lots
    if qty <= filled:
        return Reason.AMEND_QTY_NOT_ABOVE_FILLED
    if qty == order.qty_lots and price == order.price_ticks:
        return Reason.AMEND_NO_CHANGE
    band = market.price_band_ppm
    if side == BUY:
        if price * PPM > mark * (PPM + band):
            return Reason.PRICE_ABOVE_BAND
    elif price * PPM < mark * (PPM - band):
        return Reason.PRICE_BELOW_BAND
    acct = state.accounts[cmd.account]
    pos = acct.positions[cmd.symbol]
    size = pos.size_lots
    held_same = size * side  # > 0: the position is on this order's side, < 0: it closes
    k = market.atoms_per_tick_lot
    remaining = qty - filled
    if order.reduce_only:
        if held_same >= 0:  # (the position's end cancels its reduce-only orders: for safety)
            return Reason.REDUCE_ONLY_REJECTED
        # never larger than the position with the other reduce-only orders, as a new one
        budget = reduce_only_budget(pos, order)
        if budget <= 0:
            return Reason.REDUCE_ONLY_REJECTED
        if remaining > budget:
            remaining = budget
            qty = filled + remaining
    elif price * qty * k < market.min_notional_atoms:
        return Reason.AMEND_MIN_NOTIONAL
    old_remaining = order.remaining_lots
    keep_priority = price == order.price_ticks and remaining <= old_remaining
    limit = price
    capped = False
    if not keep_priority:  # it enters the book again: as a new order would
        if held_same < 0:  # non-recourse: a closing order takes nothing past bankruptcy
            cap = bankruptcy_cap(state, acct, pos, market.spec)
            if (cap > limit) if side == SELL else (cap < limit):
                limit, capped = cap, True
        if order.time_in_force == _GTX and market.book.crosses(side, price):
            return Reason.POST_ONLY_WOULD_CROSS
    side_margin = 0
    if not order.reduce_only:
        if remaining > old_remaining or remaining * price > old_remaining * order.price_ticks:
            refusal = _exposure_refusal(market, pos, order, held_same, remaining, price)
            if refusal is not None:
                return refusal
        margin_orders = pos.margin_buys if side == BUY else pos.margin_sells
        free = -held_same if held_same < 0 else 0  # the lots this side closes
        leverage = pos.leverage
        unchanged = side_margin_atoms(margin_orders.orders.values(), free, side, mark, leverage, k)
        side_margin = side_margin_atoms(
            margin_orders.orders.values(), free, side, mark, leverage, k, order, remaining, price
        )
        need = side_margin - unchanged  # what the amendment itself adds, at today's mark
        if need > 0 and need > state.available_atoms(acct):
            return Reason.INSUFFICIENT_MARGIN
    return AmendPlan(
        acct, pos, market, order, qty, remaining, price, limit, capped, keep_priority, side_margin
    )


def _exposure_refusal(
    market: MarketState, pos: Position, order: Order, held_same: int, lots: int, price: int
) -> Reason | None:
    """The exposure caps of `order_path.place_order` for the amended order's `lots` at `price`,
    counted as if it were placed now (its own open lots taken out of its side's)."""
    open_same = (pos.open_buy_lots if order.side == BUY else pos.open_sell_lots) - (
        order.remaining_lots
    )
    if held_same < 0:
        closable = -held_same - open_same
        opening = lots if closable <= 0 else max(0, lots - closable)
        exposure = open_same + opening
    else:
        exposure = held_same + open_same + lots
    if exposure > market.max_position_lots:
        return Reason.POSITION_BOUND
    if exposure * price * market.atoms_per_tick_lot > market.max_notional_atoms_at(pos.leverage):
        return Reason.POSITION_OVER_LEVERAGE_CAP
    return None


def side_margin_atoms(
    orders: Iterable[Order],
    free_lots: int,
    side: int,
    mark_ticks: int,
    leverage: int,
    atoms_per_tick_lot: int,
    amended: Order | None = None,
    amended_lots: int = 0,
    amended_price_ticks: int = 0,
) -> int:
    """The margin one side's orders hold once priced at `mark_ticks` and `leverage`, oldest
    first: the first `free_lots` lots close the position and hold nothing, the rest IM at the
    order price plus the open loss against the mark. With `amended`, that order counted with
    `amended_lots` left at `amended_price_ticks`. (The readable twin of what
    `reserve.reprice_side` sets when it visits every order.)"""
    k = atoms_per_tick_lot
    total_atoms = 0
    for order in orders:
        lots, price = order.remaining_lots, order.price_ticks
        if order is amended:
            lots, price = amended_lots, amended_price_ticks
        closing = lots if lots < free_lots else free_lots
        free_lots -= closing
        opening = lots - closing
        if opening:
            total_atoms += -(-(opening * price * k) // leverage)  # IM rounded up
            loss_ticks = side * (price - mark_ticks)  # a buy above, a sell below the mark
            if loss_ticks > 0:
                total_atoms += loss_ticks * opening * k
    return total_atoms


def _forget_closed_head(side_orders: MarginOrders) -> None:
    """Empty the side's closed head (always a valid head: the next pricing walks the side from
    its oldest order and builds it again)."""
    side_orders.head_count = 0
    side_orders.head_lots = 0
    side_orders.head_last_id = 0


def commit_amendment(state: Store, plan: AmendPlan) -> list[Event]:
    """Apply a planned amendment (nothing here can fail)."""
    acct, pos, market, order = plan.acct, plan.pos, plan.market, plan.order
    side = order.side
    book = market.book
    old_price, old_qty = order.price_ticks, order.qty_lots
    delta_lots = plan.remaining_lots - order.remaining_lots
    if plan.keep_priority:
        if delta_lots:
            book.reduce(order.order_id, -delta_lots)  # in place: its queue position stays
    else:
        book.cancel(order.order_id)  # before its price changes: the book finds it by price
        order.price_ticks = plan.price_ticks
        order.remaining_lots = plan.remaining_lots
    assert order.remaining_lots == plan.remaining_lots > 0
    order.qty_lots = plan.qty_lots
    if side == BUY:
        pos.open_buy_lots += delta_lots
    else:
        pos.open_sell_lots += delta_lots
    events: list[Event] = [
        OrderAmended(
            order.order_id,
            acct.name,
            order.symbol,
            side,
            order.client_order_id,
            order.price_ticks,
            order.qty_lots,
            order.filled_lots,
            old_price,
            old_qty,
        )
    ]
    size = pos.size_lots
    side_orders = pos.margin_buys if side == BUY else pos.margin_sells
    if not order.reduce_only:
        # Its lots or price moved under the side's pricing: price the whole side again, from
        # its oldest order (the head it had may no longer close, or may close more).
        _forget_closed_head(side_orders)
        side_orders.mark_ticks = 0  # never priced: `reprice_side` visits every order
        free = -size * side if size * side < 0 else 0
        acct.reserved_atoms += reprice_side(
            side_orders, free, side, market.mark_ticks, market.atoms_per_tick_lot, pos.leverage
        )
        held = sum(o.reserved_atoms for o in side_orders.orders.values())
        assert held == plan.side_margin_atoms, f"{order}: side margin {held} != planned"
    if plan.keep_priority:
        return events
    # ---- it enters the book again, as a new order at its price ------------------------------
    limit = plan.limit_ticks
    account = acct.name
    symbol = order.symbol
    fills = None
    self_trade = False
    touched: dict[str, Account] = {}
    sizes_before: dict[str, int] = {}
    if book.crosses(side, limit):
        if not order.reduce_only:  # settlement books a taker as a new order: in no closed head
            _forget_closed_head(side_orders)
        result = book.match(side, limit, order.remaining_lots, account)  # expire-taker STP
        fills, self_trade = result.fills, result.self_trade
        if fills:
            touched[account] = acct
            sizes_before[account] = size
            settle_match(
                state, market, acct, pos, order, fills, events, touched, sizes_before=sizes_before
            )
    left = order.remaining_lots
    if left:
        beyond = plan.capped and book.walk(side, 0 if side == SELL else _EVERY_TICK, 1)[0] > 0
        if not self_trade and not beyond:
            book.add(order)  # at the back of its level
        else:
            reason = EndReason.SELF_TRADE if self_trade else EndReason.BANKRUPTCY
            unregister(acct, pos, order)
            events.append(OrderCanceled(order.order_id, account, symbol, left, reason))
            if not fills and size * side < 0 and pos.open_orders:
                # It held part of the closing allowance; newer orders may now get it.
                reprice_position(acct, pos, market, None)
    if fills:  # positions moved: re-price the margin of the makers' and this account's orders
        reprice_touched(state, symbol, market, touched, sizes_before, events)
    return events


__all__ = [
    "AmendPlan",
    "amend_order",
    "commit_amendment",
    "find_open_order",
    "plan_amendment",
    "side_margin_atoms",
]
