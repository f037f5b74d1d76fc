"""The writer thread's side of the streams: what each committed batch and timer job publish.

`publish` runs after every committed batch, `on_timer` in the hub's timer job (a read job of
the sequencer); both read one `Demand` (what is subscribed), turn the engine's events and state
into messages, encode each once and return them; the hub hands them to the event loop. Trades
and aggregate trades go out with the batch; diff depth waits for its chain's period (100, 250
or 500 ms: `perpex.server.stream_depth`); liquidations (`forceOrder`) are throttled to the
latest per symbol per second, as Binance does; the periodic streams are
`perpex.server.stream_timer`'s and the user streams `perpex.server.stream_user`'s. Nothing
here waits on a client.

Units: prices in ticks, sizes in lots as the engine has them; times on the wire in ms.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Final

from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    AutoDeleveraged,
    ClockAdvanced,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    Event,
    FundingPaid,
    FundingSettled,
    IndexUpdated,
    InsuranceFundChanged,
    IsolatedMarginChanged,
    LeverageChanged,
    LiquidationTriggered,
    MarginCall,
    MarginModeChanged,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PositionChanged,
    RequestRejected,
    TradeExecuted,
)
from perpex.exchange import Exchange
from perpex.server import stream_payloads as wire_ws
from perpex.server.account_history import AccountHistory
from perpex.server.market_history import MarketHistory
from perpex.server.stream_demand import (
    NS_PER_MS,
    Demand,
    MarketItem,
    UserItem,
    json_text,
    wall_clock_ms,
)
from perpex.server.stream_depth import DepthChain
from perpex.server.stream_payloads import ForceOrder
from perpex.server.stream_timer import PeriodicStreams
from perpex.server.stream_user import UserStreams

FORCE_ORDER_EVERY_MS: Final = 1000  # Binance: the latest liquidation per symbol per second
_BOOK_EVENTS: Final = (OrderAccepted, OrderCanceled, TradeExecuted)
# Events with a `symbol` that never change a book; any other one does (or may: a new kind).
_NOT_BOOK_EVENTS: Final = (
    IndexUpdated,
    MarkPriceUpdated,
    FundingSettled,
    FundingPaid,
    LeverageChanged,
    MarginModeChanged,
    IsolatedMarginChanged,
    PositionChanged,
    LiquidationTriggered,
    InsuranceFundChanged,
    AutoDeleveraged,
    MarginCall,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    RequestRejected,
    OrderRejected,
    ClockAdvanced,
)


class StreamPublisher:
    """Turns committed batches and timer ticks into encoded stream messages [writer].

    Owns everything the writer remembers between batches: the depth chain, the periodic
    streams' due times, the liquidation throttle. `specs` is filled in place (`use_specs`),
    so the parts that share it see the hub's markets once it is bound."""

    def __init__(self) -> None:
        self.specs: dict[str, MarketSpec] = {}
        text = json_text()
        self._text = text
        self.depth = DepthChain(self.specs, text)
        self.periodic = PeriodicStreams(self.specs, text, self.depth)
        self.user = UserStreams(self.specs, text)
        self._force: dict[str, ForceOrder] = {}  # the latest liquidation not yet pushed
        self.force_ms: dict[str, int] = {}  # symbol -> when its last liquidation was pushed
        self.force_pending = False  # a liquidation waits for its second

    def use_specs(self, specs: Mapping[str, MarketSpec]) -> None:
        """Stream these markets. Called when the hub is bound, before anything can be
        subscribed (an idle demand reads no spec), so the writer never sees it half-filled."""
        self.specs.clear()
        self.specs.update(specs)

    def bind(self, market: MarketHistory, accounts: AccountHistory) -> None:
        """The views the periodic streams (candles, tickers) and user streams read."""
        self.periodic.market = market
        self.user.accounts = accounts

    # -- after a committed batch -----------------------------------------------------------------
    def publish(
        self, events: Sequence[Event], ex: Exchange, demand: Demand
    ) -> tuple[list[MarketItem], list[UserItem]]:
        """The market and user messages the batch's `events` make for `demand`."""
        orders: list[UserItem] = []
        self.user.drain_order_updates(demand, orders)  # always: the list must not grow
        if demand.idle:
            return [], []
        now_ms = wall_clock_ms()
        tx_ms = ex.time_ns // NS_PER_MS
        market: list[MarketItem] = []
        if demand.streams:
            self._market_events(events, ex, demand, now_ms, tx_ms, market)
            self.depth.flush(ex, demand, now_ms, tx_ms, market)
        user: list[UserItem] = []
        if demand.accounts:
            # ACCOUNT_UPDATE before the ORDER_TRADE_UPDATE of the same fill, as Binance
            self.user.account_events(events, ex, demand, now_ms, tx_ms, user)
        return market, user + orders

    # -- the timer job ---------------------------------------------------------------------------
    def on_timer(self, ex: Exchange, demand: Demand) -> tuple[list[MarketItem], float]:
        """Throttled depth and liquidations, and the periodic streams that are due; and when
        (monotonic seconds) something is due next."""
        now_ms = wall_clock_ms()
        tx_ms = ex.time_ns // NS_PER_MS
        mono_ms = time.monotonic_ns() // NS_PER_MS
        out: list[MarketItem] = []
        self.depth.flush(ex, demand, now_ms, tx_ms, out)
        if self._force:
            self._flush_force(demand, now_ms, out)
        next_ms = self.periodic.push_due(ex, demand, now_ms, tx_ms, mono_ms, out)
        depth_due_ns = self.depth.next_due_ns() if self.depth.pending else None
        if depth_due_ns is not None:
            next_ms = min(next_ms, max(depth_due_ns // NS_PER_MS, mono_ms + 1))
        if self.force_pending:
            next_ms = min(next_ms, mono_ms + FORCE_ORDER_EVERY_MS // 4)
        return out, next_ms / 1000

    # -- market events ---------------------------------------------------------------------------
    def _market_events(
        self,
        events: Sequence[Event],
        ex: Exchange,
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        specs = self.specs
        changed: dict[str, None] = {}
        liquidations: dict[int, ForceOrder] = {}
        accepted: dict[int, OrderAccepted] = {}
        run: list[TradeExecuted] = []  # consecutive fills of one taker order at one price
        candle_trades: dict[str, tuple[int, int]] = {}  # symbol -> (first, last) trade ids
        for event in events:
            if isinstance(event, TradeExecuted):
                symbol = event.symbol
                changed[symbol] = None
                if event.symbol not in specs:
                    continue
                spec = specs[symbol]
                names = demand.names_for("trade", symbol)
                if names:
                    out.append((names, self._text(wire_ws.trade(spec, event, now_ms, tx_ms))))
                if run and (
                    run[0].symbol != symbol
                    or run[0].taker_order_id != event.taker_order_id
                    or run[0].price_ticks != event.price_ticks
                ):
                    self._agg(run, demand, now_ms, tx_ms, out)
                    run = []
                run.append(event)
                if event.liquidation and demand.wants("forceOrder", symbol):
                    self._liquidation_fill(event, accepted, liquidations, tx_ms)
                if demand.wants("kline", symbol):
                    first_id = candle_trades.get(symbol, (event.trade_id, 0))[0]
                    candle_trades[symbol] = (first_id, event.trade_id)
            elif isinstance(event, _BOOK_EVENTS):
                changed[event.symbol] = None
                if isinstance(event, OrderAccepted):
                    accepted[event.order_id] = event
            elif not isinstance(event, _NOT_BOOK_EVENTS):
                other = getattr(event, "symbol", None)
                if isinstance(other, str):
                    changed[other] = None
        if run:
            self._agg(run, demand, now_ms, tx_ms, out)
        if candle_trades:
            self.periodic.candle_trades(demand, candle_trades, tx_ms)
        for order in liquidations.values():
            self._force[order.symbol] = order  # the latest per symbol wins
        if liquidations:
            self._flush_force(demand, now_ms, out)
        for symbol in changed:
            if symbol not in specs:
                continue
            if demand.wants("depth", symbol):
                self.depth.touch(symbol)
            if demand.wants("bookTicker", symbol):
                self.depth.book_ticker(ex, demand, symbol, now_ms, tx_ms, out, force=False)

    def _agg(
        self,
        run: list[TradeExecuted],
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        symbol = run[0].symbol
        names = demand.names_for("aggTrade", symbol)
        if names:
            spec = self.specs[symbol]
            out.append((names, self._text(wire_ws.agg_trade(spec, run, now_ms, tx_ms))))

    # -- liquidations (`forceOrder`) -------------------------------------------------------------
    def _liquidation_fill(
        self,
        fill: TradeExecuted,
        accepted: dict[int, OrderAccepted],
        orders: dict[int, ForceOrder],
        tx_ms: int,
    ) -> None:
        order = orders.get(fill.taker_order_id)
        if order is None:
            placed = accepted.get(fill.taker_order_id)
            qty_lots = placed.qty_lots if placed is not None else fill.qty_lots
            price_ticks = placed.price_ticks if placed is not None else fill.price_ticks
            order = ForceOrder(fill.symbol, fill.taker_side, qty_lots, price_ticks)
            orders[fill.taker_order_id] = order
        order.filled_lots += fill.qty_lots
        order.quote_ticks_lots += fill.price_ticks * fill.qty_lots
        order.last_lots = fill.qty_lots
        order.qty_lots = max(order.qty_lots, order.filled_lots)
        order.time_ms = tx_ms

    def _flush_force(self, demand: Demand, now_ms: int, out: list[MarketItem]) -> None:
        """Push each symbol's latest liquidation at most once per second."""
        waiting = False
        for symbol in list(self._force):
            if now_ms - self.force_ms.get(symbol, 0) < FORCE_ORDER_EVERY_MS:
                waiting = True
                continue
            order = self._force.pop(symbol)
            self.force_ms[symbol] = now_ms
            names = demand.names_for("forceOrder", symbol)
            if names:
                payload = wire_ws.force_order(self.specs[symbol], order, now_ms)
                out.append((names, self._text(payload)))
        self.force_pending = waiting


__all__ = [
    "FORCE_ORDER_EVERY_MS",
    "StreamPublisher",
]
