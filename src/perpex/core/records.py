"""The records the engine keeps: open orders, positions, accounts and per-market state.

With them, the bookkeeping that keeps their cached sums in step when an order comes or goes.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. These are plain mutable
records; every pass reads them through `perpex.core.state.ExchangeState`. An account's
`reserved_atoms`, a position's `open_buy_lots` / `open_sell_lots` / `reduce_only_count` and its
`MarginOrders` are caches over its open orders: `register` and `unregister` (and the hot path's
inlined copies, which name them) are the only writers, and `perpex.core.invariants`
recomputes them.
"""

from __future__ import annotations

from typing import Any, Final

from perpex.core.book import BUY, SELL, OrderBook, RestingOrder
from perpex.core.funding import FundingState
from perpex.core.funding_config import FundingConfig
from perpex.core.ledger import Bucket
from perpex.core.markets import MarketSpec
from perpex.core.messages import EndReason, Event, OrderCanceled, OrderType, TimeInForce
from perpex.core.oracle import MarkConfig, MarkState

_REDUCE_ONLY: Final = EndReason.REDUCE_ONLY


class Order(RestingOrder):
    """An open order: what the book sees plus what the account needs."""

    __slots__ = (
        "client_order_id",
        "filled_lots",
        "filled_quote_ticks",
        "order_type",
        "qty_lots",
        "reduce_only",
        "reserved_atoms",
        "symbol",
        "time_in_force",
    )

    def __init__(
        self,
        order_id: int,
        account: str,
        symbol: str,
        side: int,
        order_type: OrderType,
        time_in_force: TimeInForce,
        price_ticks: int,
        qty_lots: int,
        reduce_only: bool,
        client_order_id: str | None,
        reserved_atoms: int,
    ) -> None:
        # RestingOrder.__init__ inlined (it runs for every order: saves a call)
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price_ticks = price_ticks
        self.remaining_lots = qty_lots
        self.queue_stamp = 0
        self.symbol = symbol
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.qty_lots = qty_lots
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        self.reserved_atoms = reserved_atoms
        self.filled_lots = 0
        self.filled_quote_ticks = 0  # sum of price x lots of the fills, for the average price


class MarginOrders:
    """One side of a position's open orders that may hold margin (all but reduce-only ones),
    oldest first (ascending ids), and what lets `reserve.reprice_side` skip the orders whose
    margin cannot change.

    Invariant (checked by `perpex.core.invariants`): once priced (`mark_ticks` set), every
    order past the first `closing_lots` lots of the side (oldest first, lots as they are now)
    that is not in `unpriced` holds exactly the margin of all of it opening at `mark_ticks`
    and `leverage`, as `reserve.reprice_side` sets it. `unpriced`: orders partly filled since,
    or placed at another mark or with a closing share.

    The closed head, what lets the re-pricing skip the orders that close now as then: the
    first `head_count` orders, exactly those with ids up to `head_last_id`, hold nothing, are
    not in `unpriced`, and have `head_lots` lots left in all, at most `closing_lots`
    (checked by `perpex.core.invariants`). A fill or the end of one of them shrinks it
    (`settlement.consume`, `unregister`); a re-pricing whose free lots still cover it starts
    past it, any other walks the side from its oldest order and sets it anew.
    """

    __slots__ = (
        "closing_lots",
        "head_count",
        "head_last_id",
        "head_lots",
        "leverage",
        "mark_ticks",
        "orders",
        "unpriced",
    )

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.unpriced: dict[int, Order] = {}
        self.mark_ticks = 0  # 0: never priced, the next re-price visits every order
        self.leverage = 0
        self.closing_lots = 0  # the free lots of the last pricing: the head it let close
        self.head_count = 0  # the closed head: its orders, their lots, its newest order's id
        self.head_lots = 0
        self.head_last_id = 0


class Position:
    """One (account, symbol): settings, the netted position and its open orders."""

    __slots__ = (
        "cost_atoms",
        "isolated",
        "leverage",
        "margin",
        "margin_buys",
        "margin_sells",
        "open_buy_lots",
        "open_orders",
        "open_sell_lots",
        "reduce_only_count",
        "size_lots",
        "symbol",
    )

    def __init__(self, account: str, symbol: str, leverage: int) -> None:
        self.symbol = symbol
        self.leverage = leverage
        self.isolated = False
        self.size_lots = 0  # signed: > 0 long, < 0 short
        self.cost_atoms = 0  # signed cost basis: uPnL = size x mark - cost
        # isolated margin (0 in cross mode); the owner lets the ledger mark the account touched
        self.margin = Bucket(f"{account}/{symbol}", owner=account)
        self.open_orders: dict[int, Order] = {}
        # The open orders that may hold margin, by side: what `reserve.reserve_orders` re-prices
        self.margin_buys = MarginOrders()
        self.margin_sells = MarginOrders()
        self.open_buy_lots = 0
        self.open_sell_lots = 0
        self.reduce_only_count = 0

    def is_default(self, default_leverage: int) -> bool:
        return (
            not self.size_lots
            and not self.open_orders
            and not self.isolated
            and self.leverage == default_leverage
            and not self.margin.balance
            and not self.cost_atoms
        )


class Account:
    """A trader: the cross wallet, positions by symbol, open orders by id and client id."""

    __slots__ = ("client_ids", "name", "orders", "positions", "reserved_atoms", "wallet")

    def __init__(self, name: str) -> None:
        self.name = name
        self.wallet = Bucket(name, owner=name)  # the cross wallet balance
        self.positions: dict[str, Position] = {}
        self.orders: dict[int, Order] = {}
        self.client_ids: dict[str, int] = {}
        self.reserved_atoms = 0  # initial margin held for open orders (sum over orders)


class MarketState:
    """One listed market: its spec, book, index and mark, funding and the mark's basis."""

    __slots__ = (
        "atoms_per_tick_lot",
        "book",
        "default_leverage",
        "funding",
        "funding_config",
        "funding_overrides",
        "index_ticks",
        "last_funding_rate_e8",
        "last_trade_ticks",
        "leverage_caps",
        "maker_fee_ppm",
        "mark_state",
        "mark_ticks",
        "max_limit_qty_lots",
        "max_market_qty_lots",
        "max_open_orders",
        "max_position_lots",
        "max_price_ticks",
        "min_notional_atoms",
        "min_price_ticks",
        "price_band_ppm",
        "quotes",
        "spec",
        "symbol",
        "taker_fee_ppm",
    )

    def __init__(
        self, spec: MarketSpec, mark_config: MarkConfig, funding_config: FundingConfig
    ) -> None:
        self.spec = spec
        # Copies of the (frozen) spec's figures that the order path and settlement read on
        # every order and fill: in the compiled build an attribute of this record is a load
        # from a C struct, one of the spec (a Python dataclass) a generic attribute lookup.
        self.symbol = spec.symbol
        self.atoms_per_tick_lot = spec.atoms_per_tick_lot
        self.maker_fee_ppm = spec.maker_fee_ppm
        self.taker_fee_ppm = spec.taker_fee_ppm
        self.min_notional_atoms = spec.min_notional_atoms
        self.min_price_ticks = spec.min_price_ticks
        self.max_price_ticks = spec.max_price_ticks
        self.max_limit_qty_lots = spec.max_limit_qty_lots
        self.max_market_qty_lots = spec.max_market_qty_lots
        self.price_band_ppm = spec.price_band_ppm
        self.max_open_orders = spec.max_open_orders
        self.default_leverage = spec.default_leverage
        self.max_position_lots = spec.max_position_lots
        self.funding_config = funding_config
        self.funding: FundingState | None = None  # starts with the market's first index
        self.funding_overrides: dict[int, int] = {}  # funding time -> replayed rate (1e-8)
        self.last_funding_rate_e8 = 0
        self.book = OrderBook()
        self.index_ticks = 0  # 0 until the first oracle tick
        self.mark_ticks = 0
        self.last_trade_ticks = 0
        self.mark_state = MarkState(mark_config)  # the moving-average basis of the mark
        self.quotes: dict[str, tuple[int, int]] = {}  # index source -> (price, stamped at ns)
        self.leverage_caps: dict[int, int] = {}  # cache of spec.max_notional_atoms_at

    def max_notional_atoms_at(self, leverage: int) -> int:
        cap = self.leverage_caps.get(leverage)
        if cap is None:
            cap = self.leverage_caps[leverage] = self.spec.max_notional_atoms_at(leverage)
        return cap


# == an order comes and goes ==================================================================
def register(acct: Account, pos: Position, order: Order) -> None:
    """Index an open order (`order_path.place_order` has this inlined: keep the two in step).
    Its margin, already in `order.reserved_atoms`, counts as unpriced."""
    order_id = order.order_id
    acct.orders[order_id] = order
    if order.client_order_id is not None:
        acct.client_ids[order.client_order_id] = order_id
    acct.reserved_atoms += order.reserved_atoms
    pos.open_orders[order_id] = order
    if order.side == BUY:
        pos.open_buy_lots += order.remaining_lots
        margin_orders = pos.margin_buys
    else:
        pos.open_sell_lots += order.remaining_lots
        margin_orders = pos.margin_sells
    if order.reduce_only:
        pos.reduce_only_count += 1
    else:
        margin_orders.orders[order_id] = order
        margin_orders.unpriced[order_id] = order  # its margin: whatever the caller set


def unregister(acct: Account, pos: Position, order: Order) -> None:
    """Forget an order that is done (filled, canceled or expired); releases its margin."""
    order_id: Any = order.order_id  # boxed once for the four dicts (see `book`'s note)
    del acct.orders[order_id]
    if order.client_order_id is not None:
        del acct.client_ids[order.client_order_id]
    acct.reserved_atoms -= order.reserved_atoms
    order.reserved_atoms = 0
    del pos.open_orders[order_id]
    if order.side == BUY:
        pos.open_buy_lots -= order.remaining_lots
        margin_orders = pos.margin_buys
    else:
        pos.open_sell_lots -= order.remaining_lots
        margin_orders = pos.margin_sells
    if order.reduce_only:
        pos.reduce_only_count -= 1
    else:
        del margin_orders.orders[order_id]
        if order.order_id <= margin_orders.head_last_id:  # it leaves the closed head
            margin_orders.head_count -= 1
            margin_orders.head_lots -= order.remaining_lots
        if margin_orders.unpriced:
            margin_orders.unpriced.pop(order_id, None)


def end_order(
    acct: Account,
    pos: Position,
    market: MarketState,
    order: Order,
    reason: EndReason,
    events: list[Event],
) -> None:
    """Take an open order off the book and out of the account, and say so."""
    market.book.cancel(order.order_id)
    left = order.remaining_lots
    unregister(acct, pos, order)
    events.append(OrderCanceled(order.order_id, acct.name, order.symbol, left, reason))


def trim_reduce_only(acct: Account, symbol: str, market: MarketState, events: list[Event]) -> None:
    """Reduce-only orders may never add exposure: cut the newest first to fit |position|."""
    pos = acct.positions.get(symbol)
    if pos is None or not pos.reduce_only_count:
        return
    size = pos.size_lots
    closing_side = SELL if size > 0 else BUY
    budget = abs(size)
    ro = [o for o in pos.open_orders.values() if o.reduce_only]
    for order in ro:  # oldest first keep their quantity
        if order.side != closing_side or size == 0:
            end_order(acct, pos, market, order, _REDUCE_ONLY, events)
            continue
        if order.remaining_lots <= budget:
            budget -= order.remaining_lots
        elif budget == 0:
            end_order(acct, pos, market, order, _REDUCE_ONLY, events)
        else:
            cut = order.remaining_lots - budget
            market.book.reduce(order.order_id, cut)
            if order.side == BUY:
                pos.open_buy_lots -= cut
            else:
                pos.open_sell_lots -= cut
            budget = 0


__all__ = [
    "Account",
    "MarginOrders",
    "MarketState",
    "Order",
    "Position",
    "end_order",
    "register",
    "trim_reduce_only",
    "unregister",
]
