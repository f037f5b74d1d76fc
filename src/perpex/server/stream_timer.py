"""The periodic streams: what the hub's 100 ms timer job pushes when it is due.

Writer thread only (the timer job is a read job of the sequencer). Mark price (`@markPrice`
every 3 s or 1 s), partial depth (`@depth<N>` every 250, 500 or 100 ms), klines (the open
candle when it changed, every 250 ms at most; a candle that just closed is pushed first, final)
and the 24 h tickers (every second). Each stream has its own due time, kept from the moment it
is first seen, and a new `bookTicker` subscriber gets the current top at once. Klines carry the
first and last trade id of their candle (`f`, `L`), counted here from the published trades.

Units: prices in ticks, sizes in lots as the engine has them; times in ms (`mono_ms`: the
monotonic clock for due times, `now_ms`: the wall clock for event times).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from perpex.core.markets import MarketSpec
from perpex.exchange import Exchange
from perpex.server import stream_payloads as wire_ws
from perpex.server.candles import MS_PER_MINUTE, bucket_key
from perpex.server.market_history import MarketHistory
from perpex.server.stream_demand import Demand, Encode, MarketItem
from perpex.server.stream_depth import DepthChain
from perpex.server.stream_payloads import Stream

KLINE_EVERY_MS: Final = 250  # Binance pushes a changed candle every 250 ms
TICKER_EVERY_MS: Final = 1000
IDLE_WAIT_MS: Final = 60_000  # nothing periodic subscribed: look again in a minute at most


class PeriodicStreams:
    """Due times and last pushes of the periodic streams [writer].

    `specs` is the publisher's map; `market` (the candles and tickers) is set when the hub is
    bound, and until then tickers and klines send nothing."""

    def __init__(self, specs: Mapping[str, MarketSpec], text: Encode, depth: DepthChain) -> None:
        self._specs = specs
        self._text = text
        self._depth = depth
        self.market: MarketHistory | None = None
        self._due_ms: dict[str, int] = {}  # periodic stream name -> when next pushed
        self._started: dict[str, None] = {}  # names the timer has seen (first push done)
        self._klines: dict[str, list[Any]] = {}  # kline stream -> the row last pushed
        self._candle_ids: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}

    @property
    def tracking(self) -> bool:
        """Some stream was seen and not yet forgotten (the timer job must run to forget it)."""
        return bool(self._started)

    def push_due(
        self,
        ex: Exchange,
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        mono_ms: int,
        out: list[MarketItem],
    ) -> int:
        """Push what is due now; returns when (monotonic ms) the next push is due."""
        for name in [n for n in self._started if n not in demand.streams]:
            del self._started[name]
            self._due_ms.pop(name, None)
            self._klines.pop(name, None)
        marks: dict[str, dict[str, Any]] = {}
        tickers: dict[str, dict[str, Any] | None] = {}
        next_ms = mono_ms + IDLE_WAIT_MS
        for name, stream in demand.streams.items():
            first = name not in self._started
            if first:
                self._started[name] = None
                if stream.kind == "bookTicker" and stream.symbol is not None:
                    self._depth.book_ticker(
                        ex, demand, stream.symbol, now_ms, tx_ms, out, force=True
                    )
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
        return next_ms

    def candle_trades(self, demand: Demand, trades: dict[str, tuple[int, int]], tx_ms: int) -> None:
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
        symbols = [stream.symbol] if stream.symbol is not None else list(self._specs)
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
            ids = self._depth.ids(stream.symbol)
            spec = self._specs[stream.symbol]
            return [wire_ws.depth_update(spec, now_ms, tx_ms, ids, bids, asks)]
        if kind == "kline" and stream.symbol is not None:
            return self._kline(stream, now_ms)
        return []

    def _mark(
        self, ex: Exchange, symbol: str, now_ms: int, cache: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        row = cache.get(symbol)
        if row is None:
            row = wire_ws.mark_price(self._specs[symbol], ex.funding_rate(symbol), now_ms)
            cache[symbol] = row
        return row

    def _ticker(
        self, symbol: str, cache: dict[str, dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        if symbol not in cache:
            market = self.market
            cache[symbol] = market.ticker_24h(symbol) if market is not None else None
        return cache[symbol]

    def _kline(self, stream: Stream, now_ms: int) -> list[Any]:
        """The open candle when it changed; a candle that just closed goes first, final."""
        assert stream.symbol is not None
        if self.market is None:
            return []
        symbol, interval = stream.symbol, stream.interval
        row = self.market.kline_row(symbol, interval)
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


def _period_ms(stream: Stream) -> int:
    if stream.kind == "kline":
        return KLINE_EVERY_MS
    if stream.kind in ("ticker", "miniTicker"):
        return TICKER_EVERY_MS
    return stream.period_ms if stream.kind in ("markPrice", "partialDepth") else 0


__all__ = [
    "KLINE_EVERY_MS",
    "TICKER_EVERY_MS",
    "PeriodicStreams",
]
