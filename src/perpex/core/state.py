"""ExchangeState: what every pass reads, and the operations it may perform.

Units: prices in ticks, sizes in lots, money in atoms. The passes that run after a command
(the liquidation pass and ADL, the conditional orders' triggers, the funding settlement) see
the exchange only through this class: the records of `perpex.core.store.Store` (markets with
their books, accounts with their positions and open orders, the ledger and the insurance
funds, the clock, the id counters, the holders of each symbol) and the operations below.
Orders, positions and money change only through these operations (a pass keeps its own state
besides: the liquidation queue, the trigger books, a market's funding fields); nothing of the
passes is called from here, and the order path, settlement and margin re-pricing stay the one
implementation of each rule.

What a pass may do:

- submit an order through the normal order path (`submit_order`): every check a trader's
  order meets (a fired stop slips through a thin book like one);
- take order ids (`take_order_ids`) for orders it keeps itself (conditional orders);
- end an open order (`end_order`) and re-price an account's order margin (`reserve_orders`);
- close (part of) a position through the book with a reduce-only order of its own, fees and
  all (`close_through_book`: the liquidation order), or against a counterparty at a price,
  without fee (`close_against`: ADL);
- settle one fill into a position (`settle_fill`);
- move money between ledger buckets (`transfer`), into or out of an insurance fund
  (`move_to_fund`), and have a fund pay a deficit as far as it can (`pay_deficit`);
- create an account (`account_for_write`, names checked by `valid_name`).
"""

from __future__ import annotations

from typing import Final

from perpex.core.ledger import Bucket
from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    EndReason,
    Event,
    FundReason,
    OrderAccepted,
    OrderCanceled,
    OrderType,
    PlaceOrder,
    TimeInForce,
)
from perpex.core.order_path import place_order
from perpex.core.records import (
    Account,
    MarketState,
    Order,
    Position,
    end_order,
    register,
    trim_reduce_only,
    unregister,
)
from perpex.core.reserve import reserve_orders
from perpex.core.settlement import settle_fill, settle_match
from perpex.core.store import EngineError, Store

_LIMIT: Final = OrderType.LIMIT
_IOC: Final = TimeInForce.IOC


class ExchangeState(Store):
    """The state of one engine, as the passes see it (see the module docstring)."""

    __slots__ = ()

    # -- orders -------------------------------------------------------------------------------
    def submit_order(self, cmd: PlaceOrder) -> list[Event]:
        """The normal order path (`order_path.place_order`); protection fields are ignored."""
        return place_order(self, cmd)

    def take_order_ids(self, count: int) -> int:
        """Reserve `count` consecutive order ids (book and conditional orders share them);
        returns the first."""
        first = self.next_order_id
        self.next_order_id = first + count
        return first

    @staticmethod
    def end_order(
        acct: Account,
        pos: Position,
        market: MarketState,
        order: Order,
        reason: EndReason,
        events: list[Event],
    ) -> None:
        """Take an open order off the book and out of the account (`OrderCanceled`)."""
        end_order(acct, pos, market, order, reason, events)

    @staticmethod
    def reserve_orders(acct: Account, symbol: str, market: MarketState) -> None:
        """Re-price the margin held for the account's open orders in `symbol`."""
        reserve_orders(acct, symbol, market)

    # -- positions ----------------------------------------------------------------------------
    def settle_fill(
        self, acct: Account, pos: Position, spec: MarketSpec, side: int, lots: int, price: int
    ) -> int:
        """Net one fill into the position (no fee); returns the realized PnL in atoms."""
        return settle_fill(self, acct, pos, spec, side, lots, price)

    def close_against(
        self,
        acct: Account,
        pos: Position,
        counter_acct: Account,
        counter_pos: Position,
        spec: MarketSpec,
        side: int,
        lots: int,
        price_ticks: int,
    ) -> None:
        """`acct` trades `lots` on `side` with `counter_acct` at `price_ticks`, off the book and
        without fee (auto-deleveraging): both positions settle at that price."""
        settle_fill(self, acct, pos, spec, side, lots, price_ticks)
        settle_fill(self, counter_acct, counter_pos, spec, -side, lots, price_ticks)

    def close_through_book(
        self,
        acct: Account,
        pos: Position,
        market: MarketState,
        side: int,
        limit_ticks: int,
        qty_lots: int,
        events: list[Event],
        time_in_force: TimeInForce = _IOC,
    ) -> int:
        """A reduce-only liquidation order through the book; returns Σ price x lots of its
        fills. IOC, or FOK when the caller has walked the book (it fills in full). The makers
        get maker fills and pay maker fees; the liquidated side pays no taker fee. Every
        account it touched has its reduce-only orders trimmed and its order margin re-priced.
        """
        symbol = market.spec.symbol
        order_id = self.next_order_id
        self.next_order_id += 1
        order = Order(
            order_id,
            acct.name,
            symbol,
            side,
            _LIMIT,
            time_in_force,
            limit_ticks,
            qty_lots,
            True,
            None,
            0,
        )
        events.append(
            OrderAccepted(
                order_id,
                acct.name,
                symbol,
                side,
                _LIMIT,
                time_in_force,
                qty_lots,
                limit_ticks,
                True,
                None,
            )
        )
        register(acct, pos, order)
        result = market.book.match(side, limit_ticks, qty_lots, acct.name)
        touched: dict[str, Account] = {acct.name: acct}
        if result.fills:
            settle_match(
                self,
                market,
                acct,
                pos,
                order,
                result.fills,
                events,
                touched,
                taker_fee_ppm=0,
                liquidation=True,
            )
        left = order.remaining_lots
        if left:
            unregister(acct, pos, order)
            events.append(OrderCanceled(order_id, acct.name, symbol, left, EndReason.IOC_REMAINDER))
        for other in touched.values():
            trim_reduce_only(other, symbol, market, events)
            reserve_orders(other, symbol, market)
        return sum(price * lots for _, lots, price in result.fills)

    # -- money --------------------------------------------------------------------------------
    def transfer(self, source: Bucket, destination: Bucket, atoms: int) -> None:
        """Move `atoms` between two ledger buckets (negative: the other way)."""
        self.ledger.transfer(source, destination, atoms)

    def move_to_fund(
        self,
        source: Bucket,
        atoms: int,
        reason: FundReason,
        account: str,
        symbol: str,
        events: list[Event],
    ) -> None:
        """Move `atoms` from `source` into the insurance fund of `symbol` (negative: out of
        it), with `InsuranceFundChanged`; the fund never goes below zero."""
        self.funds.move(source, atoms, reason, account, symbol, events)

    def pay_deficit(
        self,
        destination: Bucket,
        deficit_atoms: int,
        account: str,
        symbol: str,
        events: list[Event],
    ) -> int:
        """The fund of `symbol` pays the deficit as far as its balance goes; returns what it
        paid."""
        return self.funds.pay_deficit(destination, deficit_atoms, account, symbol, events)


# The records a pass reads come with the state that holds them.
__all__ = ["Account", "EngineError", "ExchangeState", "MarketState", "Order", "Position"]
