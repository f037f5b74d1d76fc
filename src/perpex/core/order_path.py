"""The order path: validate a PlaceOrder, reserve, match against the book, rest or expire.

CancelOrder too: the open order's margin released, the closing allowance re-priced.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm; k = atoms_per_tick_lot.
Validate, then commit: every check (symbol, mark, quantity, client order id, price range and
band, open-order limit, reduce-only, min notional, exposure and leverage cap, time in force,
initial margin incl. the open loss against the mark) runs before anything is written, and a
refusal is an `OrderRejected` that changes nothing, not even the id counter. Then the order is
registered, matched (with the order's self-trade prevention: at a resting order of its own
account its rest expires, or that order does, or both), its fills settled
(`perpex.core.settlement`), the rest rested or expired, and the margin of every touched
account's orders re-priced (`perpex.core.reserve`).

The hot path of the engine, inlined by hand for speed: each inlined copy names the function
it copies. Protection attached to an entry (stop-loss / take-profit) is the conditional orders'
business: the engine routes such a PlaceOrder there, and they call back here for the entry.
"""

from __future__ import annotations

from typing import Any, Final

from perpex.core.book import BUY, SELL
from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    CancelOrder,
    EndReason,
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    Reason,
    RequestRejected,
    TimeInForce,
)
from perpex.core.records import (
    Account,
    MarketState,
    Order,
    Position,
    trim_reduce_only,
    unregister,
)
from perpex.core.reserve import reprice_position
from perpex.core.settlement import cover_flat_deficit, settle_match
from perpex.core.store import EngineError, Store
from perpex.core.units import PPM, Rounding, div

_CEIL: Final = Rounding.CEIL
_FLOOR: Final = Rounding.FLOOR
# Enum members as module constants: the hot path compares against them on every order.
_MARKET: Final = OrderType.MARKET
_GTC: Final = TimeInForce.GTC
_FOK: Final = TimeInForce.FOK
_GTX: Final = TimeInForce.GTX
_CANCELED: Final = EndReason.CANCELED
_IOC_REMAINDER: Final = EndReason.IOC_REMAINDER
_SELF_TRADE: Final = EndReason.SELF_TRADE
# The events of every order as Final names: in the compiled build a C static, where the
# class (defined in the uncompiled messages module) is a lookup in the module's dictionary.
_ORDER_ACCEPTED: Final = OrderAccepted
_ORDER_CANCELED: Final = OrderCanceled


def _reject(cmd: PlaceOrder, reason: Reason) -> list[Event]:
    return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, reason)]


def place_order(state: Store, cmd: PlaceOrder) -> list[Event]:
    """Validate, reserve, match, then rest or expire the rest (protection is not looked at)."""
    # ---- validate -----------------------------------------------------------------
    symbol = cmd.symbol
    market = state.markets.get(symbol)
    if market is None:
        return _reject(cmd, Reason.UNKNOWN_SYMBOL)
    mark = market.mark_ticks
    if not mark:
        return _reject(cmd, Reason.NO_MARK_PRICE)
    account = cmd.account
    acct = state.accounts.get(account)
    new_account = acct is None
    if acct is None:
        if not state.valid_name(account):
            return _reject(cmd, Reason.UNKNOWN_ACCOUNT)
        acct = Account(account)  # not stored unless the order is accepted
    side = cmd.side
    if side != BUY and side != SELL:
        raise EngineError(f"side {side!r}")
    qty = cmd.qty_lots
    order_type = cmd.order_type
    is_market = order_type == _MARKET
    if qty <= 0:
        raise EngineError("quantity must be positive (the edge checks it)")
    if qty > (market.max_market_qty_lots if is_market else market.max_limit_qty_lots):
        return _reject(cmd, Reason.QTY_ABOVE_MAX)
    cid = cmd.client_order_id
    if cid is not None and (
        cid in acct.client_ids or state.owns_conditional_client_id(account, cid)
    ):
        return _reject(cmd, Reason.DUPLICATE_CLIENT_ORDER_ID)
    pos = acct.positions.get(symbol)
    if pos is not None:
        size = pos.size_lots
        leverage = pos.leverage
    else:
        size = 0
        leverage = market.default_leverage
    band = market.price_band_ppm
    if is_market:
        price = 0
        if side == BUY:
            limit = div(mark * (PPM + band), PPM, _FLOOR)
        else:
            limit = div(mark * (PPM - band), PPM, _CEIL)
    else:
        price = limit = cmd.price_ticks
        if not market.min_price_ticks <= price <= market.max_price_ticks:
            return _reject(cmd, Reason.PRICE_OUT_OF_RANGE)
        if side == BUY:
            if price * PPM > mark * (PPM + band):
                return _reject(cmd, Reason.PRICE_ABOVE_BAND)
        elif price * PPM < mark * (PPM - band):
            return _reject(cmd, Reason.PRICE_BELOW_BAND)
    if pos is not None and len(pos.open_orders) >= market.max_open_orders:
        return _reject(cmd, Reason.TOO_MANY_OPEN_ORDERS)
    k = market.atoms_per_tick_lot
    reduce_only = cmd.reduce_only
    held_same = size * side  # > 0: the position is on this order's side, < 0: it closes
    if reduce_only:
        # Reduce-only: only against a position on the other side, and with the account's
        # other reduce-only orders never larger than it (`records.trim_reduce_only` keeps the
        # oldest whole: the new one gets what they leave, or is refused if they leave none).
        if held_same >= 0 or pos is None:
            return _reject(cmd, Reason.REDUCE_ONLY_REJECTED)
        budget = reduce_only_budget(pos, None)
        if budget <= 0:
            return _reject(cmd, Reason.REDUCE_ONLY_REJECTED)
        if qty > budget:
            qty = budget
    elif (price or mark) * qty * k < market.min_notional_atoms:
        return _reject(cmd, Reason.MIN_NOTIONAL)
    # Non-recourse for the trader's own orders too: a closing order never takes liquidity
    # past the price where the position's margin (fee included) is gone.
    # The cap binds iff (cost - E)·PPM > limit·slope, slope = size·(PPM + side·fee)·k (see
    # `_bankruptcy_cap`); with one cross position E is the wallet, so the test is exact
    # here and most closing orders skip the call.
    capped = False
    if (
        held_same < 0
        and pos is not None
        and (
            pos.isolated
            or len(acct.positions) > 1
            or (pos.cost_atoms - acct.wallet.balance) * PPM
            > limit * size * (PPM + side * market.taker_fee_ppm) * k
        )
    ):
        cap = bankruptcy_cap(state, acct, pos, market.spec)
        if (cap > limit) if side == SELL else (cap < limit):
            limit, capped = cap, True
    book = market.book
    tif = cmd.time_in_force
    stp = int(cmd.self_trade_prevention)  # a book EXPIRE_* value
    if tif == _GTX:
        if not is_market and book.crosses(side, price):
            return _reject(cmd, Reason.POST_ONLY_WOULD_CROSS)
    elif tif == _FOK and not is_market:
        fillable, _ = book.walk(side, limit, qty, account, stp)
        if fillable < qty:
            return _reject(cmd, Reason.FOK_NOT_FILLABLE)
    reserved = 0
    opening_whole = False  # a limit order that only opens: margin as `reserve.reprice_side` sets it
    if not reduce_only:
        # (`max`/`min` written as conditionals on this hot path: a call costs ~80 ns.)
        if pos is not None:
            open_same = pos.open_buy_lots if side == BUY else pos.open_sell_lots
        else:
            open_same = 0
        # The part of the order that opens exposure: what is left after closing the
        # opposite position, net of the orders already queued to close it (open_same).
        # Potential exposure on this side if every open order on it fills.
        if held_same < 0:
            closable = -held_same - open_same
            if closable <= 0:
                opening = qty
            elif qty > closable:
                opening = qty - closable
            else:
                opening = 0
            exposure = open_same + opening
        else:
            opening = qty
            exposure = held_same + open_same + opening
        if exposure > market.max_position_lots:
            return _reject(cmd, Reason.POSITION_BOUND)
        leverage_cap_atoms = market.leverage_caps.get(leverage)
        if leverage_cap_atoms is None:
            leverage_cap_atoms = market.max_notional_atoms_at(leverage)
        if exposure * (price or mark) * k > leverage_cap_atoms:
            return _reject(cmd, Reason.POSITION_OVER_LEVERAGE_CAP)
        if opening:
            if is_market:
                # Cost of what the market order will actually take: the tail of the walk
                # after the closing part (the closing fills come first).
                lots_all, quote_all = book.walk(side, limit, qty, account, stp)
                lots_head, quote_head = book.walk(side, limit, qty - opening, account, stp)
                open_lots = lots_all - lots_head
                open_quote = quote_all - quote_head
            else:
                open_lots = opening
                open_quote = opening * price
                opening_whole = opening == qty
            # Binance charges the open loss of a buy above (sell below) the mark up front,
            # so an order that would be underwater on fill needs the margin to carry it.
            open_loss_ticks = side * (open_quote - open_lots * mark)
            # ceil(notional / leverage), inlined (both are positive)
            cost = -(-(open_quote * k) // leverage)
            if open_loss_ticks > 0:
                cost += open_loss_ticks * k
            if cost:
                if pos is not None and len(acct.positions) == 1:
                    # `Store.available_atoms` for an account whose one position is this
                    # one (the common case), inlined: it runs for most orders.
                    available = acct.wallet.balance - acct.reserved_atoms
                    if size and not pos.isolated:
                        value = size * mark * k
                        available += (
                            value
                            - pos.cost_atoms
                            + (-value // leverage if value > 0 else value // leverage)
                        )
                else:
                    available = state.available_atoms(acct)
                if cost > available:
                    return _reject(cmd, Reason.INSUFFICIENT_MARGIN)
            reserved = cost
    # ---- commit (nothing below can fail) ------------------------------------------------
    if new_account:
        state.accounts[account] = acct
    if pos is None:
        pos = state.position_for_write(acct, symbol)
    order_id = state.next_order_id
    state.next_order_id = order_id + 1
    order = Order(
        order_id,
        account,
        symbol,
        side,
        order_type,
        tif,
        price,
        qty,
        reduce_only,
        cid,
        reserved,
    )
    events: list[Event] = [
        _ORDER_ACCEPTED(
            order_id, account, symbol, side, order_type, tif, qty, price, reduce_only, cid
        )
    ]
    # `records.register`, inlined (it runs for every order); an order that only opens holds the
    # margin `reserve.reprice_side` would give it, if its side is priced at this mark and leverage
    key: Any = order_id  # boxed once for the dicts below (see `book`'s note)
    acct.orders[key] = order
    if cid is not None:
        acct.client_ids[cid] = key
    acct.reserved_atoms += reserved
    pos.open_orders[key] = order
    if side == BUY:
        pos.open_buy_lots += qty
        margin_orders = pos.margin_buys
    else:
        pos.open_sell_lots += qty
        margin_orders = pos.margin_sells
    if reduce_only:
        pos.reduce_only_count += 1
    else:
        margin_orders.orders[key] = order
        if opening_whole:
            if len(margin_orders.orders) == 1:  # a side that was empty takes now's pricing
                margin_orders.mark_ticks, margin_orders.leverage = mark, leverage
            if margin_orders.mark_ticks != mark or margin_orders.leverage != leverage:
                margin_orders.unpriced[key] = order
        else:
            margin_orders.unpriced[key] = order
    fills = None
    self_trade = False
    if book.crosses(side, limit):  # else nothing to take: most limit orders
        result = book.match(side, limit, qty, account, stp)
        fills, self_trade = result.fills, result.self_trade
        if result.expired is not None:  # own resting orders taken off (EXPIRE_MAKER/BOTH)
            expire_own(acct, pos, market, result.expired, not fills, events)
        if fills:
            touched = {account: acct}
            sizes_before = {account: size}  # each account's position before the fills
            settle_match(
                state,
                market,
                acct,
                pos,
                order,
                fills,
                events,
                touched,
                sizes_before=sizes_before,
            )
    left = order.remaining_lots
    if left:
        # GTX (post-only) that passed the crossing check rests like GTC; it took nothing.
        beyond = capped and book.walk(side, 0 if side == SELL else 2**62, 1)[0]
        if tif in (_GTC, _GTX) and not is_market and not self_trade and not beyond:
            book.add(order)
        else:
            if self_trade:
                reason = EndReason.SELF_TRADE
            elif beyond:
                reason = EndReason.BANKRUPTCY
            elif is_market and book.walk(side, 0 if side == SELL else 2**62, 1)[0]:
                reason = EndReason.PRICE_BAND
            else:
                reason = _IOC_REMAINDER
            unregister(acct, pos, order)
            events.append(_ORDER_CANCELED(order_id, account, symbol, left, reason))
    if fills:  # positions moved: re-price the margin of the makers' and our orders
        reprice_touched(state, symbol, market, touched, sizes_before, events)
    return events


def reduce_only_budget(pos: Position, leaving: Order | None) -> int:
    """Lots a reduce-only order of `pos` may hold: |position| less the other reduce-only
    orders' (every one closes: `trim_reduce_only` ends those on the wrong side); `leaving` is
    an order not to count (the one being amended)."""
    budget = pos.size_lots if pos.size_lots > 0 else -pos.size_lots
    if pos.reduce_only_count:
        for o in pos.open_orders.values():
            if o.reduce_only and o is not leaving:
                budget -= o.remaining_lots
    return budget


def expire_own(
    acct: Account,
    pos: Position,
    market: MarketState,
    expired: list[Any],
    reprice: bool,
    events: list[Event],
) -> None:
    """The taker's own resting orders that self-trade prevention took off the book: each
    forgotten (its margin released) and reported canceled with reason SELF_TRADE, before the
    fills are settled. `reprice`: no fill follows to re-price the account's orders, so do it
    here when a closing order gave up its share of the closing allowance (as a cancel does)."""
    freed = False
    for order in expired:
        left = order.remaining_lots
        unregister(acct, pos, order)
        events.append(_ORDER_CANCELED(order.order_id, acct.name, order.symbol, left, _SELF_TRADE))
        if pos.size_lots * order.side < 0 and not order.reduce_only:
            freed = True
    if reprice and freed and pos.open_orders:
        reprice_position(acct, pos, market, None)


def reprice_touched(
    state: Store,
    symbol: str,
    market: MarketState,
    touched: dict[str, Account],
    sizes_before: dict[str, int],
    events: list[Event],
) -> None:
    """After fills moved positions: each touched account's reduce-only orders trimmed to its
    new position, its open orders' margin re-priced from its size before the fills, and a
    wallet left below zero by a flat position covered (shared by placement and amendment)."""
    for name, other in touched.items():
        other_pos = other.positions[symbol]
        if other_pos.reduce_only_count:
            trim_reduce_only(other, symbol, market, events)
        if other_pos.open_orders:
            reprice_position(other, other_pos, market, sizes_before[name])
        if other.wallet.balance < 0:
            cover_flat_deficit(state, other, symbol, events)


def bankruptcy_cap(state: Store, acct: Account, pos: Position, spec: MarketSpec) -> int:
    """The worst price (ticks) at which `pos` can be closed by a taker without its margin
    balance, after the taker fee, going below zero: a sell (long) may not fill below it,
    a buy (short) not above it.

    Margin balance E: the isolated margin, or the cross wallet plus the other cross
    positions' uPnL at their marks. Closing all of size s at p leaves
    E + s·k·p − cost − f·|s|·k·p, linear in p; its root, rounded toward the trader's
    favour by less than a tick (up for a long, down for a short), is the cap.
    """
    if pos.isolated:
        equity = pos.margin.balance
    else:
        equity = acct.wallet.balance
        if len(acct.positions) > 1:  # (the common case, one symbol, skips the loop)
            for other in acct.positions.values():
                if other is not pos and other.size_lots and not other.isolated:
                    market = state.markets[other.symbol]
                    k_other = market.spec.atoms_per_tick_lot
                    equity += other.size_lots * market.mark_ticks * k_other - other.cost_atoms
    size = pos.size_lots
    # (s·PPM − f·|s|)·k·p = (cost − E)·PPM, solved exactly for p
    slope = (size * PPM - spec.taker_fee_ppm * (size if size > 0 else -size)) * (
        spec.atoms_per_tick_lot
    )
    rhs = (pos.cost_atoms - equity) * PPM
    # Python's // floors whatever the signs, as div(rhs, slope, FLOOR) does; hot path
    cap = -(-rhs // slope) if size > 0 else rhs // slope
    return cap if cap > 0 else 0


def cancel_order(state: Store, cmd: CancelOrder) -> list[Event] | None:
    """Cancel an open order by id or client id; None when the account has no open order of
    that id (it may be a conditional order: the caller asks them)."""
    symbol = cmd.symbol
    acct = state.accounts.get(cmd.account)
    order: Order | None = None
    if acct is not None:
        if cmd.order_id is not None:
            order = acct.orders.get(cmd.order_id)
        elif cmd.client_order_id is not None:
            oid = acct.client_ids.get(cmd.client_order_id)
            order = None if oid is None else acct.orders.get(oid)
    market = state.markets.get(symbol)
    if market is None:
        return [RequestRejected(cmd.account, symbol, Reason.UNKNOWN_SYMBOL)]
    if order is None:  # a conditional order, perhaps (ids never collide): the caller looks
        return None
    if acct is None or order.symbol != symbol:
        return [RequestRejected(cmd.account, symbol, Reason.UNKNOWN_ORDER)]
    pos = acct.positions[symbol]
    # `records.end_order`, inlined (a quarter of all commands are cancels)
    market.book.cancel(order.order_id)
    left = order.remaining_lots
    unregister(acct, pos, order)
    events: list[Event] = [_ORDER_CANCELED(order.order_id, acct.name, symbol, left, _CANCELED)]
    if pos.size_lots * order.side < 0 and not order.reduce_only and pos.open_orders:
        # It held part of the closing allowance; later closing orders may now get it.
        # (`reserve.reserve_orders`, with the position at hand)
        reprice_position(acct, pos, market, None)
    return events


__all__ = [
    "bankruptcy_cap",
    "cancel_order",
    "expire_own",
    "place_order",
    "reduce_only_budget",
]
