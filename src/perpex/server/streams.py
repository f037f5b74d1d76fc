"""The stream hub: who listens to what in the event loop, and the hand-over from the writer.

Two threads meet here, and each owns its half:

* The event LOOP owns the connections (`perpex.server.stream_connection`), their
  subscriptions and the listen keys. It fans each text out to the subscribed connections'
  bounded queues; a client whose queue is full is dropped (close 1008), so a slow reader costs
  the server a bounded amount of memory and never slows the sequencer. Whenever a subscription
  changes it builds a new immutable `Demand` (what is subscribed) for the writer to read. A
  100 ms timer task expires listen keys, closes connections past 24 hours and queues the timer
  job when something is due.
* The WRITER thread (the sequencer) calls `publish(events, ex)` after every committed batch and
  runs the timer job (`_on_timer`, a read job queued by the loop). The `StreamPublisher`
  (`perpex.server.stream_publisher`) turns events and the exchange's state into encoded
  messages; the hub hands each batch of texts to the loop with one `call_soon_threadsafe`: it
  never waits on a client, and sheds market data when the loop falls behind.

Units: times in seconds (monotonic) for the loop's timers; on the wire in ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Sequence
from typing import Final, Protocol

from perpex.core.markets import MarketSpec
from perpex.core.messages import Event
from perpex.exchange import Exchange
from perpex.server import stream_payloads as wire_ws
from perpex.server.account_history import AccountHistory
from perpex.server.config import ServerConfig
from perpex.server.listen_keys import ListenKeys
from perpex.server.market_history import MarketHistory
from perpex.server.sequencer import Sequencer
from perpex.server.stream_connection import (
    CLOSE_TIMEOUT_S as CLOSE_TIMEOUT_S,
    CONNECTION_LIFETIME_S,
    MAX_STREAMS as MAX_STREAMS,
    Connection as Connection,
    wrap,
)
from perpex.server.stream_demand import (
    Demand as Demand,
    MarketItem,
    UserItem,
    build_demand as build_demand,
    json_text,
    wall_clock_ms,
)
from perpex.server.stream_depth import (
    DEPTH_LEVELS as DEPTH_LEVELS,
    FIRST_UPDATE_ID as FIRST_UPDATE_ID,
)
from perpex.server.stream_payloads import Stream
from perpex.server.stream_publisher import StreamPublisher

log = logging.getLogger("perpex.server")

TIMER_TICK_S: Final = 0.1
KEY_SWEEP_S: Final = 1.0
MAX_INFLIGHT: Final = 1000  # batches handed to the loop and not yet fanned out


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


# -- the hub ------------------------------------------------------------------------------------
class StreamHub:
    """WebSocket market streams and user streams. See the module docstring for the threads."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listen_keys = ListenKeys()
        self.state: Server | None = None
        self.symbols: dict[str, str] = {}  # lower case -> the exchange's symbol
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
        self._text_loop = json_text()  # an encoder per thread
        # writer side
        self.publisher = StreamPublisher()
        self._handed = 0
        self._shed = 0

    @property
    def specs(self) -> dict[str, MarketSpec]:
        """The markets streamed (the publisher's map, filled when the hub is bound)."""
        return self.publisher.specs

    @specs.setter
    def specs(self, specs: dict[str, MarketSpec]) -> None:
        self.publisher.use_specs(specs)

    # -- life [loop] -----------------------------------------------------------------------------
    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        if self.state is not None:  # bound before the loop ran: start the timer now
            self.bind(self.state)

    def bind(self, state: Server) -> None:
        """Know the server (its sequencer, specs and views) and start the timer. Idempotent."""
        if self.state is None:
            self.state = state
            self.publisher.use_specs(state.specs)
            self.publisher.bind(state.market, state.accounts)
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
            text = self._text_loop(wire_ws.listen_key_expired(key, wall_clock_ms()))
            self._end_key(key, text, "listenKey expired.")

    def _end_key(self, key: str, last_text: str | None, reason: str) -> None:
        for conn in list(self._connections):
            account = conn.keys.get(key)
            if account is None:
                continue
            if last_text is not None:
                conn.push(wrap(key, last_text) if conn.combined else last_text)
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
                            wrapped = wrap(name, text)
                        conn.push(wrapped, round_)
                    else:
                        conn.push(text, round_)
        for account, text in user:
            for conn, key in self._user.get(account, {}).items():
                conn.push(wrap(key, text) if conn.combined else text, round_)

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
            if demand.idle and not self.publisher.periodic.tracking:
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
    def depth_snapshot_id(self, ex: Exchange, symbol: str) -> int:
        """REST depth's lastUpdateId for the book as it is now [writer; the same job as the
        book is read] (`perpex.server.stream_depth.DepthChain.snapshot_id`)."""
        return self.publisher.depth.snapshot_id(ex, symbol, self._demand)

    def depth_update_id(self, symbol: str) -> int:
        """`u` of the last depthUpdate published for `symbol` (REST depth's lastUpdateId)."""
        return self.publisher.depth.update_id(symbol)

    def publish(self, events: Sequence[Event], ex: Exchange) -> None:
        """After a committed batch [writer]: encode what it means for the subscribers."""
        market, user = self.publisher.publish(events, ex, self._demand)
        self._hand_over(market, user)

    def _on_timer(self, ex: Exchange, demand: Demand) -> float:
        """The timer job [writer]: throttled depth and liquidations, and the periodic streams
        that are due. Returns when (monotonic seconds) something is due next."""
        market, next_s = self.publisher.on_timer(ex, demand)
        self._hand_over(market, [])
        return next_s

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

    @property
    def depth_pending(self) -> bool:
        """A changed, watched book waits for its 100 ms (the timer job must run)."""
        return self.publisher.depth.pending

    @property
    def force_pending(self) -> bool:
        """A liquidation waits for its second (the timer job must run)."""
        return self.publisher.force_pending


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
