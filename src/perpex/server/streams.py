"""The stream hub: who listens to what, and what each committed batch says to them.

Two threads meet here, and each owns its half:

* The WRITER thread (the sequencer) calls `publish(events, ex)` after every committed batch,
  and runs the hub's timer job (`_on_timer`, a read job queued by the loop). It turns events
  and the exchange's state into messages, encodes each once (msgspec JSON) and hands the batch
  of texts to the loop with one `call_soon_threadsafe`: it never waits on a client. It owns
  the depth books last published, the update ids, the throttles.
* The event LOOP owns the connections, their subscriptions and the listen keys. It fans each
  text out to the subscribed connections' bounded queues; a client whose queue is full is
  dropped (close 1008), so a slow reader costs the server a bounded amount of memory and never
  slows the sequencer. The writer reads one immutable `Demand` (what is subscribed), swapped
  by the loop whenever a subscription changes.

Diff depth (BINANCE_API.md §6.2): per symbol the last published book (up to 1000 levels a
side) and the last update id `u`. When a batch changed a book that someone watches, the next
flush (at most every 100 ms per symbol, Binance's `@100ms`; `@depth` and `@depth@500ms` get
the same chain, faster than they promise) diffs the book against it and
publishes one `depthUpdate` with `U = pu + 1`, `u` the new id, `pu` the previous `u`, and
ABSOLUTE quantities ("0" deletes). REST depth reports `depth_update_id(symbol)` as
`lastUpdateId`; a snapshot taken before a flush already holds changes the flush carries, which
is harmless since applying an absolute quantity twice changes nothing.

Units: prices in ticks, sizes in lots as the engine has them; times on the wire in ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final, Protocol

import msgspec
from starlette.websockets import WebSocket

from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    AutoDeleveraged,
    ClockAdvanced,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    Deposited,
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
    Withdrawn,
)
from perpex.core.units import atoms_to_decimal
from perpex.exchange import Exchange
from perpex.server import stream_payloads as wire_ws
from perpex.server.account_history import AccountHistory
from perpex.server.candles import MS_PER_MINUTE, bucket_key
from perpex.server.config import ServerConfig
from perpex.server.listen_keys import ListenKeys
from perpex.server.market_history import MarketHistory
from perpex.server.sequencer import Sequencer
from perpex.server.stream_payloads import ForceOrder, Stream

log = logging.getLogger("perpex.server")

DEPTH_LEVELS: Final = 1000  # a side, as REST depth's largest limit
FIRST_UPDATE_ID: Final = 1  # `lastUpdateId` of a book never published
DEPTH_EVERY_NS: Final = 100_000_000  # one diff per symbol per 100 ms at most (`@100ms`)
FORCE_ORDER_EVERY_MS: Final = 1000  # Binance: the latest liquidation per symbol per second
KLINE_EVERY_MS: Final = 250  # Binance pushes a changed candle every 250 ms
TICKER_EVERY_MS: Final = 1000
TIMER_TICK_S: Final = 0.1
KEY_SWEEP_S: Final = 1.0
MAX_STREAMS: Final = 1024  # per connection (Binance)
CONNECTION_LIFETIME_S: Final = 24 * 3600.0  # Binance closes a connection after 24 hours
MAX_INFLIGHT: Final = 1000  # batches handed to the loop and not yet fanned out
CLOSE_TIMEOUT_S: Final = 2.0  # a close frame that cannot be written in this time is abandoned
NS_PER_MS: Final = 1_000_000
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

MarketItem = tuple[tuple[str, ...], str]  # (stream names, encoded message)
UserItem = tuple[str, str]  # (account, encoded message)


class Server(Protocol):
    """What the hub needs of `ServerState` (named structurally: state.py imports this module)."""

    @property
    def specs(self) -> dict[str, MarketSpec]: ...
    @property
    def seq(self) -> Sequencer: ...
    @property
    def accounts(self) -> AccountHistory: ...
    @property
    def market(self) -> MarketHistory: ...


def _now_ms() -> int:
    return time.time_ns() // NS_PER_MS


# -- what is subscribed (built by the loop, read by the writer) ---------------------------------
@dataclass(frozen=True)
class Demand:
    """An immutable picture of the subscriptions; the writer reads the latest one."""

    streams: Mapping[str, Stream] = field(default_factory=dict)
    names: Mapping[tuple[str, str | None], tuple[str, ...]] = field(default_factory=dict)
    accounts: frozenset[str] = frozenset()

    def names_for(self, kind: str, symbol: str) -> tuple[str, ...]:
        """Names subscribed for `kind` on `symbol`, its own and the all-symbols one."""
        return self.names.get((kind, symbol), ()) + self.names.get((kind, None), ())

    def wants(self, kind: str, symbol: str) -> bool:
        return (kind, symbol) in self.names or (kind, None) in self.names

    @property
    def idle(self) -> bool:
        return not self.streams and not self.accounts


def build_demand(streams: Mapping[str, Stream], accounts: frozenset[str]) -> Demand:
    names: dict[tuple[str, str | None], list[str]] = {}
    for name, stream in streams.items():
        names.setdefault((stream.kind, stream.symbol), []).append(name)
    return Demand(dict(streams), {k: tuple(v) for k, v in names.items()}, accounts)


# -- one client ---------------------------------------------------------------------------------
class Connection:
    """A WebSocket client: its subscriptions, listen keys and bounded outgoing queue.

    Loop-only. `push` never waits. A client that still has `limit` messages queued when the
    next delivery comes is dropped: one delivery (a batch's messages) may overshoot the limit,
    so a healthy client is never dropped for a burst, and the queue stays below `limit` plus
    one batch."""

    def __init__(self, ws: WebSocket, *, combined: bool, limit: int) -> None:
        self.ws = ws
        self.combined = combined  # messages wrapped {"stream": name, "data": payload}
        self.limit = limit
        self.streams: dict[str, Stream] = {}
        self.keys: dict[str, str] = {}  # listen key -> account
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self.sender: asyncio.Task[None] | None = None
        self.opened_s = time.monotonic()
        self.round = -1  # the hub's delivery round of the last push
        self.backlog = 0  # messages queued when that round began

    def push(self, text: str, round_: int = -1) -> None:
        """Queue `text`; `round_` is the hub's delivery round (-1: a reply, counted alone)."""
        if self.closing is not None:
            return
        if round_ != self.round or round_ < 0:
            self.round = round_
            self.backlog = len(self.queue)
        if self.backlog >= self.limit:
            self.close(1008, "Client is too slow: its message queue is full.", flush=False)
            return
        self.queue.append(text)
        self.wake.set()

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close after the queued messages (`flush`), or at once (drop what is queued)."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        if not flush:
            self.queue.clear()
            if self.sender is not None:
                self.sender.cancel()  # it may be stuck writing to a client that does not read
        self.wake.set()

    async def run_sender(self) -> None:
        """Write the queue out until the connection closes."""
        send = self.ws.send_text
        queue = self.queue
        while True:
            while queue:
                await send(queue.popleft())
            if self.closing is not None:
                return
            self.wake.clear()
            await self.wake.wait()

    @property
    def stream_count(self) -> int:
        return len(self.streams) + len(self.keys)


def _wrap(name: str, text: str) -> str:
    # Names are checked against the stream grammar (letters, digits, @ ! _), listen keys are
    # alphanumeric: nothing in them needs JSON escaping.
    return f'{{"stream":"{name}","data":{text}}}'


# -- the hub ------------------------------------------------------------------------------------
class StreamHub:
    """WebSocket market streams and user streams. See the module docstring for the threads."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listen_keys = ListenKeys()
        self.state: Server | None = None
        self.symbols: dict[str, str] = {}  # lower case -> the exchange's symbol
        self.specs: dict[str, MarketSpec] = {}
        self.lifetime_s = CONNECTION_LIFETIME_S
        # loop side
        self._connections: dict[Connection, None] = {}
        self._subs: dict[str, dict[Connection, None]] = {}
        self._user: dict[str, dict[Connection, str]] = {}  # account -> {connection: key}
        self._demand = Demand()
        self._timer: asyncio.Task[None] | None = None
        self._kick = True  # run the timer job at the next tick (a subscription changed)
        self._next_due_s = 0.0
        self._delivered = 0
        self._encode_loop: Callable[[Any], bytes] = msgspec.json.Encoder().encode
        # writer side
        self._encode: Callable[[Any], bytes] = msgspec.json.Encoder().encode
        self._handed = 0
        self._shed = 0
        self._books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
        self._ids: dict[str, tuple[int, int, int]] = {}  # symbol -> (U, u, pu) last published
        self._dirty: dict[str, None] = {}  # books changed since their last diff
        self._flushed_ns: dict[str, int] = {}
        self._tops: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        self._force: dict[str, ForceOrder] = {}  # the latest liquidation not yet pushed
        self._force_ms: dict[str, int] = {}
        self._due_ms: dict[str, int] = {}  # periodic stream name -> when next pushed
        self._started: dict[str, None] = {}  # names the timer has seen (first push done)
        self._klines: dict[str, list[Any]] = {}  # kline stream -> the row last pushed
        self._candle_ids: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
        self.depth_pending = False
        self.force_pending = False

    # -- life [loop] -----------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if self.state is not None:  # bound before the loop ran: start the timer now
            self.bind(self.state)

    def bind(self, state: Server) -> None:
        """Know the server (its sequencer, specs and views) and start the timer. Idempotent."""
        if self.state is None:
            self.state = state
            self.specs = dict(state.specs)
            self.symbols = {s.lower(): s for s in state.specs}
            # The account history builds order updates only for accounts someone listens to.
            state.accounts.wants_user_messages = self._wants_user
        if self._timer is None and self.loop is not None:
            self._timer = self.loop.create_task(self._run_timer(), name="perpex-stream-timer")

    async def close(self) -> None:
        """Stop the timer and close every connection (1001, going away)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        for conn in list(self._connections):
            conn.close(1001, "Server shutting down.", flush=False)

    @property
    def connections(self) -> tuple[Connection, ...]:
        return tuple(self._connections)

    # -- connections and subscriptions [loop] ----------------------------------------------------
    def register(self, conn: Connection) -> None:
        self._connections[conn] = None

    def unregister(self, conn: Connection) -> None:
        if conn not in self._connections:
            return  # never registered, or already gone
        del self._connections[conn]
        for name in conn.streams:
            self._unsubscribe_name(conn, name)
        for account in conn.keys.values():
            self._unbind_user(conn, account)
        conn.streams.clear()
        conn.keys.clear()
        self._changed()

    def parse(self, name: str) -> Stream | None:
        return wire_ws.parse_stream(name, self.symbols)

    def subscribe(self, conn: Connection, streams: Sequence[Stream]) -> None:
        for stream in streams:
            if stream.name in conn.streams:
                continue
            conn.streams[stream.name] = stream
            self._subs.setdefault(stream.name, {})[conn] = None
        self._changed()

    def unsubscribe(self, conn: Connection, names: Sequence[str]) -> None:
        for name in names:
            if conn.streams.pop(name, None) is not None:
                self._unsubscribe_name(conn, name)
            account = conn.keys.pop(name, None)
            if account is not None:
                self._unbind_user(conn, account)
        self._changed()

    def bind_listen_key(self, conn: Connection, key: str) -> bool:
        """Attach the account's user stream to `conn`; False for an unknown or expired key."""
        account = self.listen_keys.account_of(key)
        if account is None:
            return False
        if key not in conn.keys:
            conn.keys[key] = account
            self._user.setdefault(account, {})[conn] = key
            self._changed()
        return True

    def _unsubscribe_name(self, conn: Connection, name: str) -> None:
        conns = self._subs.get(name)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._subs[name]

    def _unbind_user(self, conn: Connection, account: str) -> None:
        conns = self._user.get(account)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._user[account]

    def _changed(self) -> None:
        streams = {name: next(iter(conns)).streams[name] for name, conns in self._subs.items()}
        self._demand = build_demand(streams, frozenset(self._user))
        self._kick = True

    # -- listen keys [loop] ----------------------------------------------------------------------
    def close_listen_key(self, account: str, key: str | None = None) -> str | None:
        """DELETE: forget the account's key and close the user streams that used it."""
        closed = self.listen_keys.close(account, key)
        if closed is not None:
            self._end_key(closed, None, "listenKey closed.")
        return closed

    def expire_listen_keys(self) -> None:
        for key, _account in self.listen_keys.expire():
            text = self._encode_loop(wire_ws.listen_key_expired(key, _now_ms())).decode()
            self._end_key(key, text, "listenKey expired.")

    def _end_key(self, key: str, last_text: str | None, reason: str) -> None:
        for conn in list(self._connections):
            account = conn.keys.get(key)
            if account is None:
                continue
            if last_text is not None:
                conn.push(_wrap(key, last_text) if conn.combined else last_text)
            del conn.keys[key]
            self._unbind_user(conn, account)
            if conn.stream_count == 0:
                conn.close(1000, reason)
        self._changed()

    # -- fan-out [loop] ---------------------------------------------------------------------------
    def _deliver(self, market: list[MarketItem], user: list[UserItem]) -> None:
        self._delivered += 1
        round_ = self._delivered
        subs = self._subs
        for names, text in market:
            for name in names:
                conns = subs.get(name)
                if not conns:
                    continue
                wrapped: str | None = None
                for conn in conns:
                    if conn.combined:
                        if wrapped is None:
                            wrapped = _wrap(name, text)
                        conn.push(wrapped, round_)
                    else:
                        conn.push(text, round_)
        for account, text in user:
            for conn, key in self._user.get(account, {}).items():
                conn.push(_wrap(key, text) if conn.combined else text, round_)

    async def _run_timer(self) -> None:
        """Every tick: expire listen keys, close connections past 24 h, and queue the timer job
        when something is due (periodic streams, throttled depth and liquidations)."""
        swept_s = 0.0
        while True:
            await asyncio.sleep(TIMER_TICK_S)
            now_s = time.monotonic()
            if now_s - swept_s >= KEY_SWEEP_S:
                swept_s = now_s
                self.expire_listen_keys()
                self._close_old(now_s)
            state = self.state
            if state is None:
                continue
            if not (
                self._kick or self.depth_pending or self.force_pending or now_s >= self._next_due_s
            ):
                continue
            self._kick = False
            demand = self._demand
            if demand.idle and not self._started:
                self._next_due_s = float("inf")
                continue
            try:
                self._next_due_s = await state.seq.call(
                    functools.partial(self._on_timer, demand=demand), write=False
                )
            except asyncio.CancelledError:
                raise
            except Exception:  # a busy or broken sequencer: try again at the next tick
                log.debug("stream timer job failed", exc_info=True)

    def _close_old(self, now_s: float) -> None:
        for conn in self._connections:
            if now_s - conn.opened_s >= self.lifetime_s:
                conn.close(1000, "Connection lifetime (24 hours) reached.")

    def _wants_user(self, account: str) -> bool:
        return account in self._demand.accounts  # [writer]

    # -- the writer thread -----------------------------------------------------------------------
    def depth_update_id(self, symbol: str) -> int:
        """`u` of the last depthUpdate published for `symbol` (REST depth's lastUpdateId)."""
        ids = self._ids.get(symbol)
        return ids[1] if ids is not None else FIRST_UPDATE_ID

    def publish(self, events: Sequence[Event], ex: Exchange) -> None:
        """After a committed batch [writer]: encode what it means for the subscribers."""
        demand = self._demand
        orders: list[UserItem] = []
        self._drain_user_messages(demand, orders)  # always: the list must not grow
        if demand.idle:
            return
        now_ms = _now_ms()
        tx_ms = ex.time_ns // NS_PER_MS
        market: list[MarketItem] = []
        if demand.streams:
            self._market_events(events, ex, demand, now_ms, tx_ms, market)
            self._flush_depth(ex, demand, now_ms, tx_ms, market)
        user: list[UserItem] = []
        if demand.accounts:
            # ACCOUNT_UPDATE before the ORDER_TRADE_UPDATE of the same fill, as Binance
            self._account_events(events, ex, demand, now_ms, tx_ms, user)
        self._hand_over(market, user + orders)

    def _hand_over(self, market: list[MarketItem], user: list[UserItem]) -> None:
        loop = self.loop
        if loop is None or (not market and not user):
            return
        if self._handed - self._delivered > MAX_INFLIGHT:
            # The loop is not keeping up: shed market data (clients resynchronise from the
            # depth ids); a user's own updates are kept.
            self._shed += 1
            if self._shed == 1:
                log.warning("stream hub: the event loop is behind; dropping market data")
            market = []
            if not user:
                return
        self._handed += 1
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is stopping
            loop.call_soon_threadsafe(self._deliver, market, user)

    def _text(self, payload: Any) -> str:
        return self._encode(payload).decode()

    def _drain_user_messages(self, demand: Demand, out: list[UserItem]) -> None:
        state = self.state
        if state is None:
            return
        pending = state.accounts.user_messages
        if not pending:
            return
        taken = pending[:]
        pending.clear()
        wanted = demand.accounts
        if not wanted:
            return
        for account, payload in taken:
            if account in wanted:
                out.append((account, self._text(payload)))

    # -- market events [writer] ------------------------------------------------------------------
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
            self._candle_trades(demand, candle_trades, tx_ms)
        for order in liquidations.values():
            self._force[order.symbol] = order  # the latest per symbol wins
        if liquidations:
            self._flush_force(demand, now_ms, out)
        for symbol in changed:
            if symbol not in specs:
                continue
            if demand.wants("depth", symbol):
                self._dirty[symbol] = None
                self.depth_pending = True
            if demand.wants("bookTicker", symbol):
                self._book_ticker(ex, demand, symbol, now_ms, tx_ms, out, force=False)

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
            if now_ms - self._force_ms.get(symbol, 0) < FORCE_ORDER_EVERY_MS:
                waiting = True
                continue
            order = self._force.pop(symbol)
            self._force_ms[symbol] = now_ms
            names = demand.names_for("forceOrder", symbol)
            if names:
                payload = wire_ws.force_order(self.specs[symbol], order, now_ms)
                out.append((names, self._text(payload)))
        self.force_pending = waiting

    def _book_ticker(
        self,
        ex: Exchange,
        demand: Demand,
        symbol: str,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
        *,
        force: bool,
    ) -> None:
        bids, asks = ex.engine.market(symbol).book.depth(1)
        top = (bids[0] if bids else (0, 0), asks[0] if asks else (0, 0))
        if not force and self._tops.get(symbol) == top:
            return
        self._tops[symbol] = top
        names = demand.names_for("bookTicker", symbol)
        if names:
            spec = self.specs[symbol]
            update_id = self.depth_update_id(symbol)
            payload = wire_ws.book_ticker(spec, update_id, now_ms, tx_ms, top[0], top[1])
            out.append((names, self._text(payload)))

    def _flush_depth(
        self,
        ex: Exchange,
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        """Publish one diff per dirty, watched book (those flushed < 100 ms ago wait)."""
        if not self._dirty:
            self.depth_pending = False
            return
        now_ns = time.monotonic_ns()
        for symbol in list(self._dirty):
            if not demand.wants("depth", symbol):
                del self._dirty[symbol]  # nobody watches: the next diff will cover it
                continue
            if now_ns - self._flushed_ns.get(symbol, 0) < DEPTH_EVERY_NS:
                continue
            del self._dirty[symbol]
            self._flushed_ns[symbol] = now_ns
            self._diff(ex, demand, symbol, now_ms, tx_ms, out)
        self.depth_pending = bool(self._dirty)

    def _diff(
        self,
        ex: Exchange,
        demand: Demand,
        symbol: str,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        bids, asks = ex.engine.market(symbol).book.depth(DEPTH_LEVELS)
        old_bids, old_asks = self._books.get(symbol, ({}, {}))
        new_bids, new_asks = dict(bids), dict(asks)
        bid_changes = _changes(bids, old_bids, new_bids)
        ask_changes = _changes(asks, old_asks, new_asks)
        if not bid_changes and not ask_changes:
            return
        self._books[symbol] = (new_bids, new_asks)
        previous_id = self.depth_update_id(symbol)
        ids = (previous_id + 1, previous_id + 1, previous_id)
        self._ids[symbol] = ids
        names = demand.names_for("depth", symbol)
        if names:
            payload = wire_ws.depth_update(
                self.specs[symbol], now_ms, tx_ms, ids, bid_changes, ask_changes
            )
            out.append((names, self._text(payload)))

    # -- the timer job [writer] ------------------------------------------------------------------
    def _on_timer(self, ex: Exchange, demand: Demand) -> float:
        """Throttled depth and liquidations, and the periodic streams that are due. Returns
        when (monotonic seconds) something is due next."""
        now_ms = _now_ms()
        tx_ms = ex.time_ns // NS_PER_MS
        mono_ms = time.monotonic_ns() // NS_PER_MS
        out: list[MarketItem] = []
        self._flush_depth(ex, demand, now_ms, tx_ms, out)
        if self._force:
            self._flush_force(demand, now_ms, out)
        for name in [n for n in self._started if n not in demand.streams]:
            del self._started[name]
            self._due_ms.pop(name, None)
            self._klines.pop(name, None)
        marks: dict[str, dict[str, Any]] = {}
        tickers: dict[str, dict[str, Any] | None] = {}
        next_ms = mono_ms + 60_000
        for name, stream in demand.streams.items():
            first = name not in self._started
            if first:
                self._started[name] = None
                if stream.kind == "bookTicker" and stream.symbol is not None:
                    self._book_ticker(ex, demand, stream.symbol, now_ms, tx_ms, out, force=True)
            period_ms = _period_ms(stream)
            if not period_ms:
                continue
            due_ms = self._due_ms.get(name, mono_ms)
            if due_ms > mono_ms:
                next_ms = min(next_ms, due_ms)
                continue
            due_ms = max(due_ms + period_ms, mono_ms + period_ms // 2)
            self._due_ms[name] = due_ms
            next_ms = min(next_ms, due_ms)
            for payload in self._periodic(ex, stream, now_ms, tx_ms, marks, tickers):
                out.append(((name,), self._text(payload)))
        self._hand_over(out, [])
        if self.depth_pending:
            next_ms = min(next_ms, mono_ms + DEPTH_EVERY_NS // NS_PER_MS)
        if self.force_pending:
            next_ms = min(next_ms, mono_ms + FORCE_ORDER_EVERY_MS // 4)
        return next_ms / 1000

    def _periodic(
        self,
        ex: Exchange,
        stream: Stream,
        now_ms: int,
        tx_ms: int,
        marks: dict[str, dict[str, Any]],
        tickers: dict[str, dict[str, Any] | None],
    ) -> list[Any]:
        """The messages a periodic stream sends now (a `!...@arr` message is one array)."""
        symbols = [stream.symbol] if stream.symbol is not None else list(self.specs)
        kind = stream.kind
        if kind == "markPrice":
            rows = [self._mark(ex, s, now_ms, marks) for s in symbols]
            return rows if stream.symbol is not None else [rows]
        if kind in ("ticker", "miniTicker"):
            build = wire_ws.ticker if kind == "ticker" else wire_ws.mini_ticker
            found = [self._ticker(s, tickers) for s in symbols]
            rows = [build(t, now_ms) for t in found if t is not None]
            return rows if stream.symbol is not None or not rows else [rows]
        if kind == "partialDepth" and stream.symbol is not None:
            bids, asks = ex.engine.market(stream.symbol).book.depth(stream.levels)
            ids = self._ids.get(stream.symbol, (FIRST_UPDATE_ID, FIRST_UPDATE_ID, 0))
            spec = self.specs[stream.symbol]
            return [wire_ws.depth_update(spec, now_ms, tx_ms, ids, bids, asks)]
        if kind == "kline" and stream.symbol is not None:
            return self._kline(stream, now_ms)
        return []

    def _mark(
        self, ex: Exchange, symbol: str, now_ms: int, cache: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        row = cache.get(symbol)
        if row is None:
            row = wire_ws.mark_price(self.specs[symbol], ex.funding_rate(symbol), now_ms)
            cache[symbol] = row
        return row

    def _ticker(
        self, symbol: str, cache: dict[str, dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        if symbol not in cache:
            cache[symbol] = self.state.market.ticker_24h(symbol) if self.state else None
        return cache[symbol]

    def _kline(self, stream: Stream, now_ms: int) -> list[Any]:
        """The open candle when it changed; a candle that just closed goes first, final."""
        assert stream.symbol is not None
        if self.state is None:
            return []
        symbol, interval = stream.symbol, stream.interval
        row = self.state.market.kline_row(symbol, interval)
        last = self._klines.get(stream.name)
        if row is None or row == last:
            return []
        self._klines[stream.name] = row
        ids = self._candle_ids.get((symbol, interval), {})
        messages = []
        if last is not None and last[0] != row[0]:
            closed_ids = ids.get(last[0], (-1, -1))
            messages.append(wire_ws.kline(symbol, interval, last, now_ms, True, closed_ids))
        current_ids = ids.get(row[0], (-1, -1))
        messages.append(wire_ws.kline(symbol, interval, row, now_ms, False, current_ids))
        return messages

    def _candle_trades(
        self, demand: Demand, trades: dict[str, tuple[int, int]], tx_ms: int
    ) -> None:
        """The first and last trade id of each watched candle (kline `f`, `L`): one batch's
        trades share its clock, so one candle per interval."""
        minute = tx_ms // MS_PER_MINUTE
        for symbol, (first_id, last_id) in trades.items():
            for name in demand.names.get(("kline", symbol), ()):
                interval = demand.streams[name].interval
                open_ms = bucket_key(minute, interval) * MS_PER_MINUTE
                ids = self._candle_ids.setdefault((symbol, interval), {})
                known = ids.get(open_ms)
                ids[open_ms] = (known[0] if known else first_id, last_id)
                while len(ids) > 2:  # the open candle and the one before it
                    del ids[next(iter(ids))]

    # -- user streams [writer] -------------------------------------------------------------------
    def _account_events(
        self,
        events: Sequence[Event],
        ex: Exchange,
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        out: list[UserItem],
    ) -> None:
        wanted = demand.accounts
        updates: dict[tuple[str, str], _AccountChange] = {}
        adl: dict[tuple[str, str], None] = {}
        extra: list[UserItem] = []

        def touch(account: str, reason: str, symbol: str | None = None) -> _AccountChange:
            change = updates.get((account, reason))
            if change is None:
                change = updates[(account, reason)] = _AccountChange()
            if symbol is not None:
                change.symbols[symbol] = None
            return change

        for event in events:
            if isinstance(event, Deposited | Withdrawn):
                if event.account in wanted:
                    sign = 1 if isinstance(event, Deposited) else -1
                    reason = "DEPOSIT" if sign > 0 else "WITHDRAW"
                    touch(event.account, reason).change_atoms += sign * event.amount_atoms
            elif isinstance(event, TradeExecuted):
                for account in (event.taker_account, event.maker_account):
                    if account in wanted:
                        touch(account, "ORDER", event.symbol)
            elif isinstance(event, PositionChanged):
                if event.account in wanted:
                    reason = "ADL" if (event.account, event.symbol) in adl else "ORDER"
                    touch(event.account, reason, event.symbol)
            elif isinstance(event, AutoDeleveraged):
                for account in (event.liquidated_account, event.counterparty_account):
                    adl[(account, event.symbol)] = None
                    if account in wanted:
                        touch(account, "ADL", event.symbol)
            elif isinstance(event, FundingPaid):
                if event.account in wanted:
                    touch(event.account, "FUNDING_FEE", event.symbol)
            elif isinstance(event, IsolatedMarginChanged):
                if event.account in wanted:
                    touch(event.account, "MARGIN_TRANSFER", event.symbol)
            elif isinstance(event, MarginModeChanged):
                if event.account in wanted:
                    touch(event.account, "MARGIN_TYPE_CHANGE", event.symbol)
            elif isinstance(event, LeverageChanged):
                if event.account in wanted:
                    payload = wire_ws.account_config_update(
                        now_ms, tx_ms, event.symbol, event.leverage
                    )
                    extra.append((event.account, self._text(payload)))
            elif isinstance(event, MarginCall) and event.account in wanted:
                extra.append((event.account, self._margin_call(ex, event, now_ms)))
        accounts = ex.engine.accounts
        for (account, reason), change in updates.items():
            if account not in accounts:
                continue
            balances = [wire_ws.balance_row(ex.account(account), change.amount)]
            positions = [
                wire_ws.position_row(self.specs[s], ex.position(account, s))
                for s in change.symbols
                if s in self.specs
            ]
            payload = wire_ws.account_update(now_ms, tx_ms, reason, balances, positions)
            out.append((account, self._text(payload)))
        out.extend(extra)

    def _margin_call(self, ex: Exchange, event: MarginCall, now_ms: int) -> str:
        account = event.account
        if event.isolated:
            symbols = [event.symbol]
        else:
            symbols = [
                s
                for s in self.specs
                if ex.position(account, s).size != 0
                and ex.position(account, s).margin_mode != "ISOLATED"
            ]
        rows = [(self.specs[s], ex.position(account, s)) for s in symbols if s in self.specs]
        return self._text(wire_ws.margin_call(now_ms, ex.account(account), rows))


@dataclass
class _AccountChange:
    symbols: dict[str, None] = field(default_factory=dict)
    change_atoms: int = 0

    @property
    def amount(self) -> Decimal:
        return atoms_to_decimal(self.change_atoms)


def _period_ms(stream: Stream) -> int:
    if stream.kind == "kline":
        return KLINE_EVERY_MS
    if stream.kind in ("ticker", "miniTicker"):
        return TICKER_EVERY_MS
    return stream.period_ms if stream.kind in ("markPrice", "partialDepth") else 0


def _changes(
    rows: list[tuple[int, int]], old: dict[int, int], new: dict[int, int]
) -> list[tuple[int, int]]:
    """Levels whose quantity changed (absolute, best first), then removed levels (qty 0)."""
    changed = [(p, q) for p, q in rows if old.get(p) != q]
    changed += [(p, 0) for p in old if p not in new]
    return changed


__all__ = [
    "CLOSE_TIMEOUT_S",
    "DEPTH_LEVELS",
    "FIRST_UPDATE_ID",
    "MAX_STREAMS",
    "Connection",
    "Demand",
    "Server",
    "StreamHub",
    "build_demand",
]
