"""The market's public history, kept from the engine's events, in Binance's REST shapes:
recent trades and aggregate trades, one-minute candles of the last, mark and index prices
and of the premium, the funding-rate history, open interest, the rolling 24-hour ticker.

An `EventSink`: the sequencer calls `apply(events)` in the writer thread after every job (and
the start-up replay feeds it the whole journal), so `apply` is a dispatch on the event's type
and a few integer writes; everything is bounded (`trade_capacity` trades and aggregate trades
and `funding_capacity` settlements per symbol, `candle_minutes` minutes of candles per series,
`perpex.server.candles`). A fresh server's past (`perpex.server.backfill`: 30 days of
candles and their funding settlements) is laid at the first clock it sees. Readers (routes,
the streams) call it from the writer thread too.

Units inside: prices in ticks, premiums in 1e-8, sizes in lots, quote volumes in tick-lots,
times in ns of the engine clock. Events carry no time of their own: an event happened at the
last `ClockAdvanced` before it (the sequencer stamps the wall clock at the start of every batch
that writes). Decisions: a minute without trades is a flat candle at the previous close; a
candle of the last price opens at its first trade; the premium candles follow (mark - index) /
index at each mark or index update (the engine does not publish its impact-price samples); an
aggregate trade is the consecutive fills of one taker order at one price, its id the first
fill's trade id (as the aggTrade stream's).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

from perpex.core.book import BUY
from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    ClockAdvanced,
    Event,
    FundingSettled,
    IndexUpdated,
    MarkPriceUpdated,
    PositionChanged,
    TradeExecuted,
)
from perpex.server.backfill import MinuteHistory, last_rows, price_rows
from perpex.server.candles import (
    CARRIED,
    CLOSE,
    COUNT,
    DEFAULT_CAPACITY_MINUTES,
    FIRST_ID,
    HIGH,
    INTERVAL_MINUTES,
    LAST_ID,
    LAST_LAYOUT,
    LOW,
    MS_PER_MINUTE,
    NO_FIRST_ID,
    NO_LAST_ID,
    NS_PER_MINUTE,
    OPEN,
    PRICE_LAYOUT,
    QUOTE,
    TAKER_QUOTE,
    TAKER_VOLUME,
    VOLUME,
    MinuteSeries,
    bucket_key,
    close_ms,
)
from perpex.server.wire import NS_PER_MS, PREMIUM_TEXT, fixed, price, rate, unit_text

TRADE_CAPACITY: Final = 10_000
FUNDING_CAPACITY: Final = 10_000
KINDS: Final = ("last", "mark", "index", "premium")
PREMIUM_SCALE: Final = 10**8
MINUTES_PER_DAY: Final = 24 * 60
_RATE_SCALE: Final = Decimal(PREMIUM_SCALE)

# An aggregate trade: a list, so that the next fill of the same taker order extends it.
_A_ID, _A_PRICE, _A_QTY, _A_FIRST, _A_LAST, _A_TIME, _A_MAKER_BUYS, _A_TAKER = range(8)


def premium_e8(mark_ticks: int, index_ticks: int) -> int:
    """(mark - index) / index in 1e-8, rounded half to even."""
    q, r = divmod((mark_ticks - index_ticks) * PREMIUM_SCALE, index_ticks)
    if 2 * r > index_ticks or (2 * r == index_ticks and q % 2):
        q += 1
    return q


class _Market:
    """One symbol's history."""

    __slots__ = (
        "aggs",
        "funding",
        "index",
        "last",
        "last_price_ticks",
        "last_qty_lots",
        "last_trade_id",
        "last_trade_ns",
        "mark",
        "oi_lots",
        "premium",
        "price",
        "qty",
        "quote",
        "sizes",
        "spec",
        "trades",
    )

    def __init__(self, spec: MarketSpec, minutes: int, trades: int, settlements: int) -> None:
        self.spec = spec
        self.price = unit_text(spec.tick_size)  # ticks -> text
        self.qty = unit_text(spec.step_size)  # lots -> text
        self.quote = unit_text(spec.tick_size * spec.step_size)  # tick-lots -> text
        self.last = MinuteSeries(LAST_LAYOUT, minutes, traded=True)
        self.mark = MinuteSeries(PRICE_LAYOUT, minutes)  # CARRIED: open interest (lots)
        self.index = MinuteSeries(PRICE_LAYOUT, minutes)
        self.premium = MinuteSeries(PRICE_LAYOUT, minutes)
        # (trade id, price ticks, lots, time ns, buyer is maker)
        self.trades: deque[tuple[int, int, int, int, bool]] = deque(maxlen=trades)
        self.aggs: deque[list[Any]] = deque(maxlen=trades)
        # (funding time ns, rate e8 per interval, rate divisor, mark ticks)
        self.funding: deque[tuple[int, int, int, int]] = deque(maxlen=settlements)
        self.sizes: dict[str, int] = {}  # account -> position lots (non-zero only)
        self.oi_lots = 0  # open interest: the sum of the long positions
        self.last_trade_id = 0
        self.last_price_ticks = 0
        self.last_qty_lots = 0
        self.last_trade_ns = 0

    def series(self, kind: str) -> MinuteSeries:
        """The candles of `kind` (one of `KINDS`)."""
        if kind not in KINDS:
            raise ValueError(f"no {kind!r} candles; kinds are {', '.join(KINDS)}")
        series: MinuteSeries = getattr(self, kind)
        return series

    def all_series(self) -> tuple[MinuteSeries, ...]:
        return (self.last, self.mark, self.index, self.premium)


class MarketHistory:
    """The public market data of every listed symbol, kept from the engine's events."""

    def __init__(
        self,
        specs: Sequence[MarketSpec],
        *,
        candle_minutes: int = DEFAULT_CAPACITY_MINUTES,
        trade_capacity: int = TRADE_CAPACITY,
        funding_capacity: int = FUNDING_CAPACITY,
        backfill: Callable[[str, int], MinuteHistory | None] | None = None,
    ) -> None:
        self.specs = {s.symbol: s for s in specs}
        self._markets = {
            s.symbol: _Market(s, candle_minutes, trade_capacity, funding_capacity) for s in specs
        }
        self.now_ns = 0  # the engine clock at the last ClockAdvanced seen
        self.first_ns = 0  # the first clock seen: when the markets opened
        self.listed_ns = 0  # where their candles begin: first_ns, or the backfilled history's
        self._minute = 0
        # (symbol, the first minute) -> the candles before it (`perpex.server.backfill`)
        self._backfill = backfill
        self._handlers: dict[type, Callable[[Any], None]] = {
            TradeExecuted: self._trade,
            ClockAdvanced: self._clock,
            MarkPriceUpdated: self._prices,
            IndexUpdated: self._prices,
            PositionChanged: self._position,
            FundingSettled: self._funding,
        }

    # == the sink (writer thread) =========================================================
    def apply(self, events: Sequence[Event]) -> None:
        handlers = self._handlers
        for event in events:
            handler = handlers.get(type(event))
            if handler is not None:
                handler(event)

    def _clock(self, event: ClockAdvanced) -> None:
        ts_ns = event.ts_ns
        if ts_ns <= self.now_ns:
            return
        minute = ts_ns // NS_PER_MINUTE
        if self.now_ns == 0:
            # The first time seen: what happened before it (at an unknown time) is now.
            self.first_ns = ts_ns
            for market in self._markets.values():
                for series in market.all_series():
                    series.rebase(minute)
            if self._backfill is not None:
                for symbol, market in self._markets.items():
                    history = self._backfill(symbol, minute)
                    if history is not None and len(history):
                        _lay_history(market, history, minute)
            firsts = [s.first_minute for m in self._markets.values() for s in m.all_series()]
            listed = min((f for f in firsts if f >= 0), default=minute) * NS_PER_MINUTE
            self.listed_ns = min(listed, ts_ns)
        elif minute != self._minute:
            for market in self._markets.values():
                for series in market.all_series():
                    series.roll(minute)
        self.now_ns = ts_ns
        self._minute = minute

    def _trade(self, event: TradeExecuted) -> None:
        market = self._markets.get(event.symbol)
        if market is None:
            return
        now_ns = self.now_ns
        price_ticks_, lots, trade_id = event.price_ticks, event.qty_lots, event.trade_id
        taker_buys = event.taker_side == BUY
        market.trades.append((trade_id, price_ticks_, lots, now_ns, not taker_buys))
        aggs = market.aggs
        agg = aggs[-1] if aggs else None
        if (
            agg is not None
            and agg[_A_TAKER] == event.taker_order_id
            and agg[_A_PRICE] == price_ticks_
            and agg[_A_TIME] == now_ns
        ):
            agg[_A_QTY] += lots
            agg[_A_LAST] = trade_id
        else:
            aggs.append(
                [
                    trade_id,  # an aggregate trade's id is its first trade's (as the stream's)
                    price_ticks_,
                    lots,
                    trade_id,
                    trade_id,
                    now_ns,
                    not taker_buys,
                    event.taker_order_id,
                ]
            )
        series = market.last
        if series.minute < 0:
            series.start(self._minute, price_ticks_)
        elif self._minute > series.minute:
            series.roll(self._minute)
        row = series.row
        quote = price_ticks_ * lots
        if row[COUNT] == 0:  # the minute's first trade opens its candle
            row[OPEN] = row[HIGH] = row[LOW] = price_ticks_
        elif price_ticks_ > row[HIGH]:
            row[HIGH] = price_ticks_
        elif price_ticks_ < row[LOW]:
            row[LOW] = price_ticks_
        row[CLOSE] = price_ticks_
        row[COUNT] += 1
        row[VOLUME] += lots
        row[QUOTE] += quote
        if taker_buys:
            row[TAKER_VOLUME] += lots
            row[TAKER_QUOTE] += quote
        if trade_id < row[FIRST_ID]:
            row[FIRST_ID] = trade_id
        if trade_id > row[LAST_ID]:
            row[LAST_ID] = trade_id
        market.last_trade_id = trade_id
        market.last_price_ticks = price_ticks_
        market.last_qty_lots = lots
        market.last_trade_ns = now_ns

    def _prices(self, event: MarkPriceUpdated | IndexUpdated) -> None:
        market = self._markets.get(event.symbol)
        if market is None:
            return
        mark, index = event.mark_ticks, event.index_ticks
        self._tick(market.mark, mark, market.oi_lots)
        if type(event) is IndexUpdated:
            self._tick(market.index, index)
        if index > 0:
            self._tick(market.premium, premium_e8(mark, index))

    def _tick(self, series: MinuteSeries, value: int, carried: int = 0) -> None:
        if series.minute < 0:
            series.start(self._minute, value, carried)
        elif self._minute > series.minute:
            series.roll(self._minute)
        row = series.row
        if value > row[HIGH]:
            row[HIGH] = value
        elif value < row[LOW]:
            row[LOW] = value
        row[CLOSE] = value
        row[COUNT] += 1

    def _position(self, event: PositionChanged) -> None:
        market = self._markets.get(event.symbol)
        if market is None:
            return
        sizes = market.sizes
        old_lots = sizes.get(event.account, 0)
        new_lots = event.size_lots
        if new_lots:
            sizes[event.account] = new_lots
        elif old_lots:
            del sizes[event.account]
        delta = max(new_lots, 0) - max(old_lots, 0)
        if delta:
            market.oi_lots += delta
            if market.mark.started:
                market.mark.row[CARRIED] = market.oi_lots

    def _funding(self, event: FundingSettled) -> None:
        market = self._markets.get(event.symbol)
        if market is not None:
            market.funding.append(
                (event.time_ns, event.rate_e8, event.rate_divisor, event.mark_ticks)
            )

    # == reads (writer thread) ============================================================
    def market(self, symbol: str) -> _Market:
        return self._markets[symbol]

    def last_trade_id(self, symbol: str) -> int:
        """The engine trade id of the symbol's last trade (0 before the first)."""
        return self._markets[symbol].last_trade_id

    def last_price(self, symbol: str) -> tuple[int, int]:
        """(last trade price in ticks, its time in ns); (0, 0) before the first trade."""
        market = self._markets[symbol]
        return market.last_price_ticks, market.last_trade_ns

    def open_interest_lots(self, symbol: str) -> int:
        return self._markets[symbol].oi_lots

    def klines(
        self,
        symbol: str,
        interval: str,
        kind: str = "last",
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[list[Any]]:
        """GET /fapi/v1/klines (and the mark, index and premium variants): 12-element rows."""
        table = self.kline_table(symbol, interval, kind, start_ms, end_ms, limit)
        return self.format_klines(symbol, kind, table)

    def kline_table(
        self,
        symbol: str,
        interval: str,
        kind: str = "last",
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[list[int]]:
        """The candles `klines` answers, as integers: [open ms, close ms, *columns] (the
        writer thread's part: a copy, which `format_klines` may turn into text anywhere)."""
        market = self._markets[symbol]
        opens, rows = market.series(kind).candles(interval, start_ms, end_ms, limit)
        closes = close_ms(opens, interval)
        return [
            [o * MS_PER_MINUTE, c, *r]
            for o, c, r in zip(opens.tolist(), closes.tolist(), rows.tolist(), strict=True)
        ]

    def format_klines(self, symbol: str, kind: str, table: list[list[int]]) -> list[list[Any]]:
        """`kline_table`'s rows as Binance's 12-element rows (reads no history: any thread)."""
        market = self._markets[symbol]
        return [_kline(market, kind, row[0], row[1], row[2:]) for row in table]

    def kline_row(self, symbol: str, interval: str, kind: str = "last") -> list[Any] | None:
        """The current (open) candle of `interval` as the REST row; None before any value."""
        rows = self.klines(symbol, interval, kind, limit=1)
        return rows[-1] if rows else None

    def ticker_24h(self, symbol: str) -> dict[str, Any]:
        """GET /fapi/v1/ticker/24hr: the last 1,440 minutes, the open one included."""
        market = self._markets[symbol]
        spec = market.spec
        series = market.last
        now_ms = self.now_ns // NS_PER_MS
        lo = series.minute - MINUTES_PER_DAY + 1
        summary = series.summary(lo) if series.started else None
        if summary is None:
            summary = [0] * len(LAST_LAYOUT)
            summary[FIRST_ID], summary[LAST_ID] = NO_FIRST_ID, NO_LAST_ID
            open_ms = now_ms
        else:
            open_ms = max(lo, series.first_minute) * MS_PER_MINUTE
        open_ticks, close_ticks = summary[OPEN], summary[CLOSE]
        volume_lots, quote = summary[VOLUME], summary[QUOTE]
        count = summary[COUNT]
        change = spec.price_to_decimal(close_ticks - open_ticks)
        percent = Decimal(close_ticks - open_ticks) * 100 / Decimal(open_ticks) if open_ticks else 0
        average = (
            Decimal(quote) * spec.tick_size / Decimal(volume_lots)
            if volume_lots
            else spec.price_to_decimal(close_ticks)
        )
        return {
            "symbol": symbol,
            "priceChange": price(spec, change),
            "priceChangePercent": fixed(percent, 3),
            "weightedAvgPrice": price(spec, average),
            "lastPrice": market.price(close_ticks),
            "lastQty": market.qty(market.last_qty_lots),
            "openPrice": market.price(open_ticks),
            "highPrice": market.price(summary[HIGH]),
            "lowPrice": market.price(summary[LOW]),
            "volume": market.qty(volume_lots),
            "quoteVolume": market.quote(quote),
            "openTime": open_ms,
            "closeTime": now_ms,
            # The engine's trade ids (a fresh server's history has trades without ids).
            "firstId": summary[FIRST_ID] if summary[FIRST_ID] != NO_FIRST_ID else -1,
            "lastId": summary[LAST_ID] if summary[LAST_ID] != NO_LAST_ID else -1,
            "count": count,
        }

    def trades(self, symbol: str, limit: int = 500) -> list[dict[str, Any]]:
        """GET /fapi/v1/trades: the last `limit` trades, oldest first."""
        market = self._markets[symbol]
        kept = market.trades
        chosen = list(kept)[-limit:] if limit < len(kept) else list(kept)
        return [
            {
                "id": trade_id,
                "price": market.price(p),
                "qty": market.qty(lots),
                "quoteQty": market.quote(p * lots),
                "time": ts_ns // NS_PER_MS,
                "isBuyerMaker": maker_buys,
            }
            for trade_id, p, lots, ts_ns, maker_buys in chosen
        ]

    def agg_trades(
        self,
        symbol: str,
        from_id: int | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """GET /fapi/v1/aggTrades: from `from_id`, or in [start_ms, end_ms] (the first
        `limit` after start_ms, else the last `limit`), else the last `limit`; ascending."""
        market = self._markets[symbol]
        aggs = list(market.aggs)
        if from_id is not None:  # ids are increasing, not contiguous
            aggs = aggs[bisect.bisect_left(aggs, from_id, key=_agg_id) :]
        if start_ms is not None:
            aggs = aggs[bisect.bisect_left(aggs, start_ms, key=_agg_ms) :]
        if end_ms is not None:
            aggs = aggs[: bisect.bisect_right(aggs, end_ms, key=_agg_ms)]
        aggs = aggs[:limit] if from_id is not None or start_ms is not None else aggs[-limit:]
        return [
            {
                "a": a[_A_ID],
                "p": market.price(a[_A_PRICE]),
                "q": market.qty(a[_A_QTY]),
                "f": a[_A_FIRST],
                "l": a[_A_LAST],
                "T": a[_A_TIME] // NS_PER_MS,
                "m": a[_A_MAKER_BUYS],
            }
            for a in aggs
        ]

    def funding_rates(
        self,
        symbol: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """GET /fapi/v1/fundingRate: settlements ascending by time, one symbol or all; the
        first `limit` from start_ms when given, else the last `limit`."""
        symbols = [symbol] if symbol is not None else list(self._markets)
        rows = [
            (time_ns, sym, rate_e8, divisor, mark)
            for sym in symbols
            for time_ns, rate_e8, divisor, mark in self._markets[sym].funding
            if (start_ms is None or time_ns // NS_PER_MS >= start_ms)
            and (end_ms is None or time_ns // NS_PER_MS <= end_ms)
        ]
        rows.sort(key=lambda row: row[0])  # stable: symbols in listing order at equal times
        rows = rows[:limit] if start_ms is not None else rows[-limit:]
        return [
            {
                "symbol": sym,
                # The rate this settlement charged: F / divisor (hourly split charges F/8).
                "fundingRate": rate(Decimal(rate_e8) / (_RATE_SCALE * divisor)),
                "fundingTime": time_ns // NS_PER_MS,
                "markPrice": self._markets[sym].price(mark),
            }
            for time_ns, sym, rate_e8, divisor, mark in rows
        ]

    def open_interest_hist(
        self,
        symbol: str,
        period: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 30,
    ) -> list[dict[str, Any]]:
        """GET /futures/data/openInterestHist: the open interest (and its value at the mark)
        at each `period` boundary passed, taken at the end of the minute before it."""
        market = self._markets[symbol]
        series = market.mark
        if not series.started:
            return []
        length_ms = INTERVAL_MINUTES[period] * MS_PER_MINUTE
        # The snapshot at a boundary closes the candle that opened one period before it.
        first = None if start_ms is None else max(0, start_ms - length_ms)
        last = None if end_ms is None else end_ms - length_ms
        if last is not None and last < 0:
            return []
        opens, rows = series.candles(period, first, last, limit + 1)
        current = bucket_key(series.minute, period)
        chosen = [(int(o), r) for o, r in zip(opens, rows, strict=True) if int(o) != current]
        chosen = chosen[:limit] if start_ms is not None else chosen[-limit:]
        spec = market.spec
        out = []
        for open_minute, r in chosen:
            oi = spec.qty_to_decimal(int(r[CARRIED]))
            out.append(
                {
                    "symbol": symbol,
                    "sumOpenInterest": fixed(oi, 8),
                    "sumOpenInterestValue": fixed(oi * spec.price_to_decimal(int(r[CLOSE])), 8),
                    "timestamp": open_minute * MS_PER_MINUTE + length_ms,
                }
            )
        return out


def _lay_history(market: _Market, history: MinuteHistory, end_minute: int) -> None:
    """The history's candles on the minutes before `end_minute`, and its funding settlements
    (`backfill.FundingRows`) at their times before it: the first rows of the funding
    history, before any the engine settles (they are later)."""
    if history.funding is not None:
        market.funding.extend(history.funding.rows(end_minute * NS_PER_MINUTE))
    market.last.backfill(last_rows(history), end_minute)
    for series, values in (
        (market.mark, history.mark),
        (market.index, history.index),
        (market.premium, history.premium),
    ):
        series.backfill(price_rows(values), end_minute)


def _kline(market: _Market, kind: str, open_ms: int, end_ms: int, r: list[int]) -> list[Any]:
    """One 12-element REST kline row (BINANCE_API.md §3)."""
    text = PREMIUM_TEXT if kind == "premium" else market.price
    if kind == "last":
        qty, quote = market.qty, market.quote
        return [
            open_ms,
            text(r[OPEN]),
            text(r[HIGH]),
            text(r[LOW]),
            text(r[CLOSE]),
            qty(r[VOLUME]),
            end_ms,
            quote(r[QUOTE]),
            r[COUNT],
            qty(r[TAKER_VOLUME]),
            quote(r[TAKER_QUOTE]),
            "0",
        ]
    ohlc = [text(r[j]) for j in (OPEN, HIGH, LOW, CLOSE)]
    # Binance's price klines: no volumes; the count is of the updates in the candle.
    return [open_ms, *ohlc, "0", end_ms, "0", r[COUNT], "0", "0", "0"]


def _agg_id(agg: list[Any]) -> int:
    agg_id: int = agg[_A_ID]
    return agg_id


def _agg_ms(agg: list[Any]) -> int:
    ms: int = agg[_A_TIME] // NS_PER_MS
    return ms


__all__ = [
    "FUNDING_CAPACITY",
    "KINDS",
    "TRADE_CAPACITY",
    "MarketHistory",
    "premium_e8",
]
