"""The public market-data routes and the history they read (BINANCE_API.md §3, §4.1, §4.5).

Two halves. `MarketHistory` fed synthetic engine events: its candles are compared with a naive
twin that builds Binance's candles straight from the trade list (calendar arithmetic with
`datetime`, no NumPy), for every interval and for random startTime/endTime/limit windows; then
aggregate trades, funding, open interest, the ticker, retention. Then a real server (the
harness's StaticDriver: index 60,000, a maker ladder from +-0.5 USDT, 0.5 BTC a level) traded
on through the sequencer: exchangeInfo read by ccxt's own parser, depth, klines equal to the
trades made, aggTrades grouping, tickers, premiumIndex, a funding settlement, and the refusals
Binance answers bad input with."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import numpy as np
import pytest

from perpex.core.funding import NS_PER_HOUR, FundingConfig
from perpex.core.markets import MarketSpec, compile_market
from perpex.core.messages import (
    AdvanceClock,
    ClockAdvanced,
    Event,
    FundingSettled,
    IndexUpdated,
    MarkPriceUpdated,
    PositionChanged,
    TradeExecuted,
)
from perpex.defaults import default_markets
from perpex.server.backfill import BackfillStore, FundingRows, MinuteHistory, computed_funding
from perpex.server.candles import INTERVAL_MINUTES, PRICE_LAYOUT, MinuteSeries
from perpex.server.market_history import MarketHistory, premium_e8
from perpex.server.wire import UnitText, fixed, places_of
from server_harness import Served, serve

BTC: MarketSpec = compile_market(default_markets()[0])  # tick 0.1, step 0.001
ETH: MarketSpec = compile_market(default_markets()[1])
NS_PER_MS = 1_000_000
MIN_NS = 60_000_000_000
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01 00:00 UTC, a Thursday
BUY, SELL = 1, -1


# == synthetic events ==========================================================================
@dataclass(frozen=True)
class Fill:
    ts_ns: int
    trade_id: int
    price_ticks: int
    qty_lots: int
    taker_side: int
    taker_order_id: int


def executed(fill: Fill, symbol: str = "BTCUSDT") -> TradeExecuted:
    return TradeExecuted(
        symbol, fill.trade_id, fill.price_ticks, fill.qty_lots, fill.taker_side,
        fill.taker_order_id, 10**6 + fill.trade_id, "taker", "maker", 0, 0, 0, 0,
    )  # fmt: skip


def feed(history: MarketHistory, fills: list[Fill], end_ns: int) -> None:
    """Each fill after a ClockAdvanced to its time (as the sequencer stamps), then the end."""
    now = 0
    for fill in fills:
        events: list[Event] = []
        if fill.ts_ns > now:
            now = fill.ts_ns
            events.append(ClockAdvanced(now))
        events.append(executed(fill))
        history.apply(events)
    history.apply([ClockAdvanced(end_ns)])


def random_fills(rng: np.random.Generator, start_ns: int, span_ns: int, count: int) -> list[Fill]:
    """`count` fills at random times (bursts of one taker order share a time and an order)."""
    times = np.sort(rng.integers(start_ns, start_ns + span_ns, size=count // 3))
    fills: list[Fill] = []
    price = 600_000
    trade_id = 0
    for order_id, ts in enumerate(times.tolist(), start=1):
        side = BUY if rng.random() < 0.5 else SELL
        for _ in range(int(rng.integers(1, 5))):
            price += int(rng.integers(-30, 31))
            trade_id += 1
            fills.append(Fill(ts, trade_id, price, int(rng.integers(1, 500)), side, order_id))
    return fills


# == the naive twin: Binance's candles straight from the trades ================================
def bucket_start(ms: int, interval: str) -> datetime:
    dt = datetime.fromtimestamp(ms / 1000, UTC)
    day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "1M":
        return day.replace(day=1)
    if interval == "1w":
        return day - timedelta(days=dt.weekday())  # Monday 00:00 UTC
    minutes = INTERVAL_MINUTES[interval]
    return datetime.fromtimestamp(ms // (minutes * 60_000) * minutes * 60, UTC)


def next_start(start: datetime, interval: str) -> datetime:
    if interval == "1M":
        return (start + timedelta(days=32)).replace(day=1)
    return start + timedelta(minutes=7 * 1440 if interval == "1w" else INTERVAL_MINUTES[interval])


def to_ms(dt: datetime) -> int:
    return int(dt.timestamp()) * 1000


def naive_candles(fills: list[Fill], now_ns: int, interval: str) -> list[list[int]]:
    """[open ms, o, h, l, c, volume, close ms, quote, count, taker vol, taker quote] in ticks,
    lots and tick-lots: every candle from the first trade's to the current one; a candle
    without trades flat at the close before it."""
    out: list[list[int]] = []
    start = bucket_start(fills[0].ts_ns // NS_PER_MS, interval)
    i, close = 0, fills[0].price_ticks
    while to_ms(start) <= now_ns // NS_PER_MS:
        end = next_start(start, interval)
        inside = []
        while i < len(fills) and fills[i].ts_ns // NS_PER_MS < to_ms(end):
            inside.append(fills[i])
            i += 1
        if inside:
            prices = [f.price_ticks for f in inside]
            taker = [f for f in inside if f.taker_side == BUY]
            row = [
                prices[0], max(prices), min(prices), prices[-1],
                sum(f.qty_lots for f in inside), sum(f.price_ticks * f.qty_lots for f in inside),
                len(inside), sum(f.qty_lots for f in taker),
                sum(f.price_ticks * f.qty_lots for f in taker),
            ]  # fmt: skip
            close = prices[-1]
        else:
            row = [close, close, close, close, 0, 0, 0, 0, 0]
        o, h, lo, c, v, q, n, tv, tq = row
        out.append([to_ms(start), o, h, lo, c, v, to_ms(end) - 1, q, n, tv, tq])
        start = end
    return out


def as_units(row: list[Any], spec: MarketSpec = BTC) -> list[int]:
    """A REST kline row back in ticks, lots and tick-lots (exact: Decimal)."""
    tick, step = spec.tick_size, spec.step_size

    def units(text: str, unit: Decimal) -> int:
        value = Decimal(text) / unit
        assert value == value.to_integral_value(), text
        return int(value)

    assert len(row) == 12 and row[11] == "0"
    return [
        row[0], *(units(row[j], tick) for j in (1, 2, 3, 4)), units(row[5], step), row[6],
        units(row[7], tick * step), row[8], units(row[9], step), units(row[10], tick * step),
    ]  # fmt: skip


def select(rows: list[list[int]], start: int | None, end: int | None, limit: int) -> list[Any]:
    """Binance's klines window: open in [start, end]; first `limit` from start, else last."""
    kept = [r for r in rows if (start is None or r[0] >= start) and (end is None or r[0] <= end)]
    return kept[:limit] if start is not None else kept[-limit:]


# == MarketHistory, directly ===================================================================
@pytest.fixture(scope="module")
def two_months() -> tuple[MarketHistory, list[Fill], int]:
    """~2,400 fills over 60 days (a month boundary, Mondays), kept whole (70 days of 1m)."""
    rng = np.random.default_rng(7)
    fills = random_fills(rng, T0_NS + 37 * MIN_NS + 11 * NS_PER_MS, 60 * 1440 * MIN_NS, 2400)
    history = MarketHistory([BTC, ETH], candle_minutes=70 * 1440)
    end_ns = fills[-1].ts_ns + 95 * MIN_NS + 5 * NS_PER_MS  # past the last trade: flat minutes
    feed(history, fills, end_ns)
    return history, fills, end_ns


@pytest.mark.parametrize("interval", list(INTERVAL_MINUTES))
def test_candles_equal_the_naive_twin_for_every_interval(
    interval: str, two_months: tuple[MarketHistory, list[Fill], int]
) -> None:
    history, fills, end_ns = two_months
    expected = naive_candles(fills, end_ns, interval)
    got = [as_units(r) for r in history.klines("BTCUSDT", interval, limit=1500)]
    assert got == expected[-1500:]
    # Random windows: open times in [startTime, endTime], limit from the start or the end.
    rng = np.random.default_rng(len(interval) * 31 + INTERVAL_MINUTES[interval])
    first_ms, end_ms = fills[0].ts_ns // NS_PER_MS, end_ns // NS_PER_MS
    for _ in range(12):
        a, b = sorted(int(x) for x in rng.integers(first_ms - 86_400_000, end_ms + 1, size=2))
        start = a if rng.random() < 0.7 else None
        end = b if rng.random() < 0.5 else None
        limit = int(rng.choice([1, 2, 7, 500, 1500]))
        window = history.klines("BTCUSDT", interval, "last", start, end, limit)
        assert [as_units(r) for r in window] == select(expected, start, end, limit), (
            start,
            end,
            limit,
        )


def test_the_open_candle_is_last_and_kline_row_is_it(
    two_months: tuple[MarketHistory, list[Fill], int],
) -> None:
    history, fills, end_ns = two_months
    for interval in ("1m", "1h", "1w", "1M"):
        rows = history.klines("BTCUSDT", interval, limit=3)
        assert rows[-1][0] <= end_ns // NS_PER_MS <= rows[-1][6]  # it holds "now"
        assert history.kline_row("BTCUSDT", interval) == rows[-1]
        assert [r[0] for r in rows] == sorted(r[0] for r in rows)
        assert all(rows[i][6] + 1 == rows[i + 1][0] for i in range(len(rows) - 1))  # adjacent
    # The last trade was 95 minutes ago: the open 1m candle is flat at its price, no volume.
    row = history.kline_row("BTCUSDT", "1m")
    assert row is not None
    last = Decimal(fills[-1].price_ticks) * BTC.tick_size
    assert {Decimal(x) for x in row[1:5]} == {last} and row[5] == "0.000" and row[8] == 0
    assert history.last_trade_id("BTCUSDT") == fills[-1].trade_id
    assert history.kline_row("ETHUSDT", "1m") is None  # never traded
    assert history.last_trade_id("ETHUSDT") == 0


def test_weeks_start_on_monday_and_months_on_the_first(
    two_months: tuple[MarketHistory, list[Fill], int],
) -> None:
    history, _, _ = two_months
    weeks = history.klines("BTCUSDT", "1w", limit=20)
    months = history.klines("BTCUSDT", "1M", limit=20)
    assert len(weeks) >= 9 and len(months) == 3  # Jan, Feb, Mar 2026
    for open_ms, *_ in weeks:
        dt = datetime.fromtimestamp(open_ms / 1000, UTC)
        assert dt.weekday() == 0 and (dt.hour, dt.minute) == (0, 0)
    assert [datetime.fromtimestamp(r[0] / 1000, UTC).strftime("%m-%d") for r in months] == [
        "01-01",
        "02-01",
        "03-01",
    ]
    assert months[0][6] == to_ms(datetime(2026, 2, 1, tzinfo=UTC)) - 1  # 31 days of January
    # Windows that cut inside a month (the work is bounded by 31-day spans) still answer
    # whole months.
    assert history.klines("BTCUSDT", "1M", limit=2) == months[-2:]
    mid_january = to_ms(datetime(2026, 1, 15, tzinfo=UTC))
    assert history.klines("BTCUSDT", "1M", "last", mid_january, None, 1) == [months[1]]
    assert history.klines("BTCUSDT", "1M", "last", None, mid_january, 5) == [months[0]]


def test_a_candle_cut_by_retention_is_dropped_not_shown_partial() -> None:
    """60 minutes kept: after three hours the 1h candle of the first kept minute began
    before them, so only whole hours (and the open one) are answered."""
    history = MarketHistory([BTC], candle_minutes=60)
    fills = [Fill(T0_NS + m * MIN_NS, m + 1, 600_000 + m, 1, BUY, m + 1) for m in range(200)]
    feed(history, fills, T0_NS + 200 * MIN_NS + 30 * 1_000_000_000)
    minutes = history.klines("BTCUSDT", "1m", limit=1500)
    assert len(minutes) == 61  # 60 closed + the open one
    assert minutes[0][0] == to_ms(datetime(2026, 1, 1, 2, 20, tzinfo=UTC))
    hours = history.klines("BTCUSDT", "1h", limit=1500)
    assert [r[0] for r in hours] == [to_ms(datetime(2026, 1, 1, 3, tzinfo=UTC))]
    # A series that simply began mid-hour keeps its first (partial) hour, as a new listing.
    fresh = MarketHistory([BTC])
    feed(fresh, fills[:10], T0_NS + 10 * MIN_NS)
    assert fresh.klines("BTCUSDT", "1h")[0][0] == to_ms(datetime(2026, 1, 1, tzinfo=UTC))


def test_minute_series_ring_keeps_a_bounded_span() -> None:
    series = MinuteSeries(PRICE_LAYOUT, capacity=10)
    series.start(1000, 5)
    series.roll(1003)  # two flat minutes in between
    series.row[3] = 7
    series.roll(10_000_000)  # a long gap: only the last 10 minutes are written
    assert series.first_minute == 10_000_000 - 10 and series.evicted
    rows = series.rows(0, 10_000_000)
    assert rows.shape == (11, len(PRICE_LAYOUT)) and set(rows[:, 3].tolist()) == {7}


def test_aggregate_trades_group_one_taker_order_at_one_price() -> None:
    """Binance: consecutive fills of one taker order at one price are one aggTrade (its id
    the first fill's trade id, `f`/`l` the first and last trade ids)."""
    history = MarketHistory([BTC])
    t1, t2 = T0_NS + 1_000 * NS_PER_MS, T0_NS + 2_000 * NS_PER_MS
    fills = [
        Fill(t1, 11, 600_005, 100, BUY, 7),  # order 7 walks the asks:
        Fill(t1, 12, 600_005, 50, BUY, 7),  # two makers at one price,
        Fill(t1, 13, 600_006, 30, BUY, 7),  # then the next price
        Fill(t2, 14, 600_006, 20, BUY, 8),  # another order at the same price
        Fill(t2, 15, 599_995, 40, SELL, 9),
    ]
    feed(history, fills, t2)
    aggs = history.agg_trades("BTCUSDT")
    assert [(a["a"], a["f"], a["l"], a["q"], a["p"], a["m"]) for a in aggs] == [
        (11, 11, 12, "0.150", "60000.5", False),
        (13, 13, 13, "0.030", "60000.6", False),
        (14, 14, 14, "0.020", "60000.6", False),
        (15, 15, 15, "0.040", "59999.5", True),
    ]
    assert aggs[0]["T"] == t1 // NS_PER_MS
    assert [a["a"] for a in history.agg_trades("BTCUSDT", from_id=12)] == [13, 14, 15]
    assert [a["a"] for a in history.agg_trades("BTCUSDT", from_id=13, limit=2)] == [13, 14]
    assert [a["a"] for a in history.agg_trades("BTCUSDT", start_ms=t2 // NS_PER_MS)] == [14, 15]
    assert [a["a"] for a in history.agg_trades("BTCUSDT", end_ms=t1 // NS_PER_MS)] == [11, 13]
    assert [a["a"] for a in history.agg_trades("BTCUSDT", limit=1)] == [15]
    trades = history.trades("BTCUSDT", limit=2)
    assert [(t["id"], t["quoteQty"], t["isBuyerMaker"]) for t in trades] == [
        (14, "1200.0120", False),
        (15, "2399.9800", True),
    ]


def test_mark_index_premium_and_funding_history() -> None:
    history = MarketHistory([BTC, ETH])
    t = T0_NS + 8 * 3600 * 1_000_000_000 - 90 * 1_000_000_000  # 90 s before 08:00
    history.apply(
        [
            ClockAdvanced(t),
            IndexUpdated("BTCUSDT", 600_000, 600_300),  # mark 30 above the index
            MarkPriceUpdated("BTCUSDT", 600_000, 599_700),
            ClockAdvanced(t + 60 * 1_000_000_000),
            IndexUpdated("BTCUSDT", 601_000, 601_000),
            ClockAdvanced(t + 120 * 1_000_000_000),
            FundingSettled("BTCUSDT", T0_NS + 8 * 3600 * 10**9, 10_000, 1, 601_000, 0, 0),
            FundingSettled("ETHUSDT", T0_NS + 8 * 3600 * 10**9, -24_000, 8, 300_000, 0, 0),
        ]
    )
    mark = history.klines("BTCUSDT", "1m", "mark")
    index = history.klines("BTCUSDT", "1m", "index")
    premium = history.klines("BTCUSDT", "1m", "premium")
    # A price's candle opens at the value in force when its minute began (unlike a trade
    # candle, which opens at its first trade): the mark was 59,970 until the second update.
    assert [r[1:5] for r in mark] == [
        ["60030.0", "60030.0", "59970.0", "59970.0"],
        ["59970.0", "60100.0", "59970.0", "60100.0"],
        ["60100.0"] * 4,  # flat: no update in the open minute
    ]
    assert [r[8] for r in mark] == [2, 1, 0] and mark[0][5] == "0" and mark[0][7] == "0"
    assert [r[1:5] for r in index] == [
        ["60000.0"] * 4,
        ["60000.0", "60100.0", "60000.0", "60100.0"],
        ["60100.0"] * 4,
    ]
    assert premium[0][1:5] == ["0.00050000", "0.00050000", "-0.00050000", "-0.00050000"]
    assert premium_e8(600_300, 600_000) == 50_000
    assert (premium_e8(4, 3), premium_e8(2, 3)) == (33_333_333, -33_333_333)
    half = 2 * 10**8  # (mark - index) x 1e8 / index = k + 0.5: to the even k
    assert (premium_e8(half + 1, half), premium_e8(half + 3, half)) == (0, 2)
    rates = history.funding_rates()
    assert [(r["symbol"], r["fundingRate"], r["markPrice"]) for r in rates] == [
        ("BTCUSDT", "0.00010000", "60100.0"),
        ("ETHUSDT", "-0.00003000", "3000.00"),  # hourly split: F / 8 per settlement
    ]
    assert rates[0]["fundingTime"] == (T0_NS + 8 * 3600 * 10**9) // NS_PER_MS
    assert history.funding_rates("ETHUSDT", limit=1)[0]["symbol"] == "ETHUSDT"
    assert history.funding_rates(start_ms=rates[0]["fundingTime"] + 1) == []


def test_open_interest_follows_positions_and_is_sampled_every_period() -> None:
    history = MarketHistory([BTC])
    history.apply([ClockAdvanced(T0_NS + 1), IndexUpdated("BTCUSDT", 600_000, 600_000)])
    history.apply(
        [
            PositionChanged("a", "BTCUSDT", 300, 0, 0),
            PositionChanged("b", "BTCUSDT", -300, 0, 0),
            ClockAdvanced(T0_NS + 7 * MIN_NS),
            PositionChanged("a", "BTCUSDT", -100, 0, 0),  # a flips: long 300 -> short 100
            PositionChanged("c", "BTCUSDT", 400, 0, 0),
            PositionChanged("b", "BTCUSDT", -300, 0, 0),  # unchanged size
            ClockAdvanced(T0_NS + 12 * MIN_NS),
        ]
    )
    assert history.open_interest_lots("BTCUSDT") == 400
    hist = history.open_interest_hist("BTCUSDT", "5m")
    assert [(h["timestamp"], h["sumOpenInterest"]) for h in hist] == [
        ((T0_NS + 5 * MIN_NS) // NS_PER_MS, "0.30000000"),
        ((T0_NS + 10 * MIN_NS) // NS_PER_MS, "0.40000000"),
    ]
    assert hist[1]["sumOpenInterestValue"] == "24000.00000000"  # 0.4 BTC x 60,000
    start = (T0_NS + 6 * MIN_NS) // NS_PER_MS
    assert [h["sumOpenInterest"] for h in history.open_interest_hist("BTCUSDT", "5m", start)] == [
        "0.40000000"
    ]


def test_ticker_24h_is_the_rolling_day() -> None:
    history = MarketHistory([BTC])
    day_ns = 1440 * MIN_NS
    fills = [
        Fill(T0_NS, 1, 590_000, 1_000, BUY, 1),  # more than 24 h before the end: outside
        Fill(T0_NS + 2 * 3600 * 10**9, 2, 600_000, 500, SELL, 2),
        Fill(T0_NS + 3 * 3600 * 10**9, 3, 612_000, 250, BUY, 3),
        Fill(T0_NS + 4 * 3600 * 10**9, 4, 606_000, 250, BUY, 4),
    ]
    feed(history, fills, T0_NS + day_ns + 60 * MIN_NS)
    ticker = history.ticker_24h("BTCUSDT")
    quote = 60_000 * Decimal("0.5") + 61_200 * Decimal("0.25") + 60_600 * Decimal("0.25")
    assert ticker == {
        "symbol": "BTCUSDT",
        "priceChange": "600.0",
        "priceChangePercent": "1.000",
        "weightedAvgPrice": "60450.0",  # 60,450 USDT for 1 BTC
        "lastPrice": "60600.0",
        "lastQty": "0.250",
        "openPrice": "60000.0",
        "highPrice": "61200.0",
        "lowPrice": "60000.0",
        "volume": "1.000",
        "quoteVolume": f"{quote:.4f}",
        "openTime": (T0_NS + 61 * MIN_NS) // NS_PER_MS,
        "closeTime": (T0_NS + day_ns + 60 * MIN_NS) // NS_PER_MS,
        "firstId": 2,
        "lastId": 4,
        "count": 3,
    }
    quiet = MarketHistory([BTC])
    quiet.apply([ClockAdvanced(T0_NS)])
    assert quiet.ticker_24h("BTCUSDT")["count"] == 0
    assert quiet.ticker_24h("BTCUSDT")["lastPrice"] == "0.0"


@pytest.mark.parametrize("unit", ["0.1", "0.01", "0.001", "0.5", "0.25", "1", "10", "1E-8"])
def test_unit_text_is_wire_s_decimal_text(unit: str) -> None:
    """The fast integer formatter of the history equals `wire`'s Decimal one."""
    step = Decimal(unit)
    text = UnitText(step)
    rng = np.random.default_rng(5)
    drawn = rng.integers(-(10**12), 10**12, 50).tolist()
    counts = [0, 1, -1, 9, 10, -10, 12_345, 10**15, *drawn]
    for count in counts:
        assert text(count) == fixed(Decimal(count) * step, places_of(step)), count
    assert UnitText(BTC.tick_size)(600_005) == "60000.5"


def test_apply_is_fast_enough_for_the_replay() -> None:
    """The start-up replay feeds the whole journal: 100,000 fills over 3 days (a clock step
    before each burst) must take well under a second or two."""
    rng = np.random.default_rng(3)
    fills = random_fills(rng, T0_NS, 3 * 1440 * MIN_NS, 100_000)
    events: list[Event] = []
    now = 0
    for fill in fills:
        if fill.ts_ns > now:
            now = fill.ts_ns
            events.append(ClockAdvanced(now))
        events.append(executed(fill))
    history = MarketHistory([BTC, ETH])
    began = time.perf_counter()
    for i in range(0, len(events), 64):
        history.apply(events[i : i + 64])
    assert time.perf_counter() - began < 2.0
    assert len(history.trades("BTCUSDT", limit=1000)) == 1000
    assert history.market("BTCUSDT").trades.maxlen == 10_000  # bounded


def test_events_before_the_first_clock_are_placed_at_it() -> None:
    """A fresh server's first events can come before any ClockAdvanced: they count as at the
    first clock seen, not at 1970 (which would fill days of flat candles)."""
    history = MarketHistory([BTC])
    history.apply([IndexUpdated("BTCUSDT", 600_000, 600_000)])
    history.apply([ClockAdvanced(T0_NS + 5 * MIN_NS)])
    rows = history.klines("BTCUSDT", "1m", "index")
    assert [r[0] for r in rows] == [(T0_NS + 5 * MIN_NS) // NS_PER_MS]
    assert history.first_ns == T0_NS + 5 * MIN_NS


# == over HTTP =================================================================================
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(Path(tmp_path_factory.mktemp("public"))) as s:
        yield s


def get(s: Served, path: str, **params: Any) -> tuple[int, Any]:
    with s.client() as client:
        r = client.get(path, params=params)
    return r.status_code, r.json()


def sequenced(s: Served, fn: Any, write: bool = True) -> Any:
    return s.state.seq.call_sync(fn, write=write)


@pytest.fixture(scope="module")
def traded(served: Served) -> list[dict[str, Any]]:
    """The demo account buys 0.6 BTC at market (0.5 at 60,000.5, then 0.1 at 60,000.6: the
    ladder is 0.5 BTC a level) and sells 0.01 (at 59,999.5); a second maker rests 0.1 at
    60,000.5 behind the ladder's 0.5, and a buy of 0.55 takes fills from both at that price.
    Each job re-quotes the ladder first (the driver's own step), so the book is known."""
    driver = served.state.driver
    assert driver is not None
    sequenced(served, lambda ex: ex.deposit("mm2", "100000"))

    def requoted(*orders: Any) -> Any:
        def job(ex: Any) -> None:
            driver.step(ex, ex.time_ns)
            for order in orders:
                order(ex)

        return job

    sequenced(
        served,
        requoted(lambda ex: ex.place_order("demo", "BTCUSDT", "BUY", "MARKET", "0.600")),
    )
    sequenced(
        served,
        requoted(lambda ex: ex.place_order("demo", "BTCUSDT", "SELL", "MARKET", "0.010")),
    )
    sequenced(
        served,
        requoted(
            lambda ex: ex.place_order("mm2", "BTCUSDT", "SELL", "LIMIT", "0.100", "60000.5"),
            lambda ex: ex.place_order("demo", "BTCUSDT", "BUY", "MARKET", "0.550"),
        ),
    )
    status, trades = get(served, "/fapi/v1/trades", symbol="BTCUSDT", limit=1000)
    assert status == 200
    assert [(t["price"], t["qty"]) for t in trades] == [
        ("60000.5", "0.500"),
        ("60000.6", "0.100"),
        ("59999.5", "0.010"),
        ("60000.5", "0.500"),
        ("60000.5", "0.050"),
    ]
    return list(trades)


def test_exchange_info_has_every_field_and_ccxt_parses_it(served: Served) -> None:
    status, info = get(served, "/fapi/v1/exchangeInfo")
    assert status == 200
    assert info["timezone"] == "UTC" and abs(info["serverTime"] - time.time() * 1000) < 60_000
    assert {(r["rateLimitType"], r["interval"], r["limit"]) for r in info["rateLimits"]} == {
        ("REQUEST_WEIGHT", "MINUTE", 2400),
        ("ORDERS", "MINUTE", 1200),
        ("ORDERS", "SECOND", 300),
    }
    assert [a["asset"] for a in info["assets"]] == ["USDT"]
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    assert {s["symbol"] for s in info["symbols"]} == {"BTCUSDT", "ETHUSDT"}
    assert btc["contractType"] == "PERPETUAL" and btc["status"] == "TRADING"
    assert btc["deliveryDate"] == 4133404800000 and isinstance(btc["onboardDate"], int)
    assert (btc["baseAsset"], btc["quoteAsset"], btc["marginAsset"]) == ("BTC", "USDT", "USDT")
    assert (btc["pricePrecision"], btc["quantityPrecision"]) == (2, 3)
    assert (btc["baseAssetPrecision"], btc["quotePrecision"]) == (8, 8)
    filters = {f["filterType"]: f for f in btc["filters"]}
    assert filters["PRICE_FILTER"] == {
        "filterType": "PRICE_FILTER", "minPrice": "556.8", "maxPrice": "4529764.5",
        "tickSize": "0.1",
    }  # fmt: skip
    assert filters["LOT_SIZE"]["stepSize"] == "0.001" and filters["LOT_SIZE"]["maxQty"] == "1000"
    assert filters["MARKET_LOT_SIZE"]["maxQty"] == "120"
    assert filters["MIN_NOTIONAL"]["notional"] == "5"
    assert filters["MAX_NUM_ORDERS"]["limit"] == 200
    assert filters["MAX_NUM_ALGO_ORDERS"]["limit"] == 10
    assert (
        filters["PERCENT_PRICE"]["multiplierUp"],
        filters["PERCENT_PRICE"]["multiplierDown"],
    ) == (
        "1.0500",
        "0.9500",
    )
    assert set(btc["orderTypes"]) >= {
        "LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
        "TRAILING_STOP_MARKET",
    }  # fmt: skip
    assert btc["timeInForce"] == ["GTC", "IOC", "FOK", "GTX"]
    # ccxt's own parser, pointed at the server by URLs only (BINANCE_API.md §1.2).
    exchange = ccxt_client(served)
    markets = exchange.load_markets()
    market = markets["BTC/USDT:USDT"]
    assert market["swap"] and market["linear"] and market["active"] and market["settle"] == "USDT"
    assert market["precision"] == {"amount": 0.001, "price": 0.1, "base": 1e-08, "quote": 1e-08}
    assert market["limits"]["amount"] == {"min": 0.001, "max": 1000.0}
    assert market["limits"]["market"] == {"min": 0.001, "max": 120.0}
    assert market["limits"]["cost"]["min"] == 5.0 and market["limits"]["price"]["min"] == 556.8
    assert "ETH/USDT:USDT" in markets


def ccxt_client(s: Served) -> ccxt.binanceusdm:
    base = s.base_url
    api = {
        name: f"{base}/fapi/{version}"
        for name, version in (
            ("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3"),
            ("fapiPrivate", "v1"), ("fapiPrivateV2", "v2"), ("fapiPrivateV3", "v3"),
        )
    }  # fmt: skip
    api["fapiData"] = f"{base}/futures/data"
    options = {"fetchCurrencies": False}
    return ccxt.binanceusdm({"urls": {"api": api}, "options": options, "enableRateLimit": False})


def test_depth_is_best_first_with_the_streams_update_id(served: Served) -> None:
    status, book = get(served, "/fapi/v1/depth", symbol="BTCUSDT", limit=5)
    assert status == 200
    assert set(book) == {"lastUpdateId", "E", "T", "bids", "asks"}
    bids = [Decimal(p) for p, _ in book["bids"]]
    asks = [Decimal(p) for p, _ in book["asks"]]
    assert len(bids) == len(asks) == 5
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert all(isinstance(q, str) and Decimal(q) > 0 for _, q in book["bids"] + book["asks"])
    assert isinstance(book["lastUpdateId"], int) and isinstance(book["T"], int)
    hub_id = sequenced(served, lambda ex: served.state.hub.depth_update_id("BTCUSDT"), False)
    assert book["lastUpdateId"] <= hub_id
    status, deep = get(served, "/fapi/v1/depth", symbol="BTCUSDT")  # default 500: all 20
    assert len(deep["bids"]) == len(deep["asks"]) == 20


def test_klines_are_the_trades_made(served: Served, traded: list[dict[str, Any]]) -> None:
    prices = {Decimal(t["price"]) for t in traded}
    assert {Decimal("60000.5"), Decimal("60000.6"), Decimal("59999.5")} <= prices
    # The naive twin of the REST trades, per interval (robust to a minute boundary between
    # the orders above): every candle with trades equals them.
    fills = [
        Fill(t["time"] * NS_PER_MS, t["id"], int(Decimal(t["price"]) / BTC.tick_size),
             int(Decimal(t["qty"]) / BTC.step_size), SELL if t["isBuyerMaker"] else BUY, 0)
        for t in traded
    ]  # fmt: skip
    for interval in ("1m", "1h", "1d"):
        status, rows = get(served, "/fapi/v1/klines", symbol="BTCUSDT", interval=interval)
        assert status == 200
        got = {r[0]: as_units(r) for r in rows}
        now_ns = time.time_ns()
        for expected in naive_candles(fills, now_ns, interval):
            if expected[8]:  # a candle with trades
                assert got[expected[0]] == expected
    status, rows = get(served, "/fapi/v1/klines", symbol="BTCUSDT", interval="1m", limit=2)
    assert len(rows) <= 2 and rows[-1][0] % 60_000 == 0
    status, mark = get(served, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="1m")
    assert status == 200 and mark[-1][1:5] == ["60000.0"] * 4  # mark = index in this driver
    status, index = get(served, "/fapi/v1/indexPriceKlines", pair="BTCUSDT", interval="5m")
    assert status == 200 and index[-1][4] == "60000.0" and index[-1][0] % 300_000 == 0
    status, premium = get(served, "/fapi/v1/premiumIndexKlines", symbol="BTCUSDT", interval="1m")
    assert status == 200 and premium[-1][1:5] == ["0.00000000"] * 4


def test_agg_trades_group_fills_of_one_order_at_one_price(
    served: Served, traded: list[dict[str, Any]]
) -> None:
    status, aggs = get(served, "/fapi/v1/aggTrades", symbol="BTCUSDT", limit=1000)
    assert status == 200
    assert sum(Decimal(a["q"]) for a in aggs) == sum(Decimal(t["qty"]) for t in traded)
    by_id = {t["id"]: t for t in traded}
    for a in aggs:
        inside = [by_id[i] for i in range(a["f"], a["l"] + 1) if i in by_id]
        assert a["a"] == a["f"] and {t["price"] for t in inside} == {a["p"]}
        assert sum(Decimal(t["qty"]) for t in inside) == Decimal(a["q"])
    # The last buy of 0.55 took two makers at 60,000.5: one aggTrade of two trades.
    last = aggs[-1]
    assert (last["p"], last["q"], last["m"]) == ("60000.5", "0.550", False)
    assert last["l"] > last["f"]
    status, later = get(served, "/fapi/v1/aggTrades", symbol="BTCUSDT", fromId=last["a"])
    assert [a["a"] for a in later] == [last["a"]]
    window = {"startTime": last["T"], "endTime": last["T"] + 3_600_000}
    status, timed = get(served, "/fapi/v1/aggTrades", symbol="BTCUSDT", **window)
    assert status == 200 and timed[-1] == last


def test_tickers(served: Served, traded: list[dict[str, Any]]) -> None:
    status, ticker = get(served, "/fapi/v1/ticker/24hr", symbol="BTCUSDT")
    assert status == 200
    assert ticker["lastPrice"] == traded[-1]["price"] and ticker["count"] == len(traded)
    assert Decimal(ticker["volume"]) == sum(Decimal(t["qty"]) for t in traded)
    assert (ticker["firstId"], ticker["lastId"]) == (traded[0]["id"], traded[-1]["id"])
    assert ticker["highPrice"] == max((t["price"] for t in traded), key=Decimal)
    assert {"bidPrice", "askPrice"}.isdisjoint(ticker)  # not in the futures 24hr ticker
    status, every = get(served, "/fapi/v1/ticker/24hr")
    assert [t["symbol"] for t in every] == ["BTCUSDT", "ETHUSDT"] and every[0] == ticker | {
        "closeTime": every[0]["closeTime"]
    }
    for path in ("/fapi/v1/ticker/price", "/fapi/v2/ticker/price"):
        status, last = get(served, path, symbol="BTCUSDT")
        assert last == {
            "symbol": "BTCUSDT",
            "price": traded[-1]["price"],
            "time": traded[-1]["time"],
        }
    status, book = get(served, "/fapi/v1/ticker/bookTicker", symbol="BTCUSDT")
    assert status == 200 and isinstance(book["time"], int) and book["time"] > 0
    assert Decimal(book["bidPrice"]) < Decimal(book["askPrice"])
    status, books = get(served, "/fapi/v1/ticker/bookTicker")
    assert {b["symbol"] for b in books} == {"BTCUSDT", "ETHUSDT"}


def test_premium_index_funding_info_and_open_interest(
    served: Served, traded: list[dict[str, Any]]
) -> None:
    status, p = get(served, "/fapi/v1/premiumIndex", symbol="BTCUSDT")
    assert status == 200
    assert (p["markPrice"], p["indexPrice"], p["estimatedSettlePrice"]) == ("60000.0",) * 3
    # Premium 0 (the ladder brackets the index), so the estimate is the interest rate alone
    # (MECHANICS.md §1.7: F = P + clamp(I - P, ±0.05 %), I = 0.01 % per 8 h).
    assert (p["lastFundingRate"], p["interestRate"]) == ("0.00010000", "0.00010000")
    assert p["nextFundingTime"] % (8 * 3_600_000) == 0 and p["nextFundingTime"] > p["time"]
    status, every = get(served, "/fapi/v1/premiumIndex")
    assert [x["symbol"] for x in every] == ["BTCUSDT", "ETHUSDT"]
    status, info = get(served, "/fapi/v1/fundingInfo")
    assert info[0] == {
        "symbol": "BTCUSDT", "adjustedFundingRateCap": "0.00300000",
        "adjustedFundingRateFloor": "-0.00300000", "fundingIntervalHours": 8,
        "disclaimer": False,
    }  # fmt: skip
    status, oi = get(served, "/fapi/v1/openInterest", symbol="BTCUSDT")

    def longs(ex: Any) -> Decimal:
        sizes = [ex.position(a, "BTCUSDT").size for a in ex.engine.holders.get("BTCUSDT", ())]
        return sum((s for s in sizes if s > 0), Decimal(0))

    assert Decimal(oi["openInterest"]) == sequenced(served, longs, False) > 0
    status, hist = get(served, "/futures/data/openInterestHist", symbol="BTCUSDT", period="5m")
    assert status == 200 and isinstance(hist, list)


def test_weights_are_charged_as_binance(served: Served) -> None:
    with served.client() as client:
        used = []
        for params in ({"limit": "99"}, {"limit": "1000"}, {"limit": "1500"}):
            r = client.get(
                "/fapi/v1/klines", params={"symbol": "ETHUSDT", "interval": "1m"} | params
            )
            used.append(int(r.headers["X-MBX-USED-WEIGHT-1M"]))
    assert [b - a for a, b in itertools.pairwise(used)] == [5, 10]


BAD = [
    ("unknown symbol", "/fapi/v1/klines", {"symbol": "NOPEUSDT", "interval": "1m"}, -1121),
    ("lower case", "/fapi/v1/ticker/24hr", {"symbol": "btcusdt"}, -1121),
    ("no symbol", "/fapi/v1/depth", {}, -1102),
    ("bad interval", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "7m"}, -1120),
    ("no interval", "/fapi/v1/markPriceKlines", {"symbol": "BTCUSDT"}, -1102),
    ("pair, not symbol", "/fapi/v1/indexPriceKlines", {"symbol": "BTCUSDT", "interval": "1m"},
     -1102),
    ("limit 0", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "0"}, -1130),
    ("limit 5000", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "5000"},
     -1130),
    ("limit abc", "/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": "abc"},
     -1100),
    ("depth limit 5000", "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": "5000"}, -1130),
    ("depth limit -5", "/fapi/v1/depth", {"symbol": "BTCUSDT", "limit": "-5"}, -1130),
    ("start after end", "/fapi/v1/klines",
     {"symbol": "BTCUSDT", "interval": "1m", "startTime": "2000", "endTime": "1000"}, -1023),
    ("time too big", "/fapi/v1/fundingRate", {"startTime": "9223372036854775807"}, -1130),
    ("time not a number", "/fapi/v1/fundingRate", {"endTime": "1e3"}, -1100),
    ("funding limit 1001", "/fapi/v1/fundingRate", {"limit": "1001"}, -1130),
    ("trades limit 1001", "/fapi/v1/trades", {"symbol": "BTCUSDT", "limit": "1001"}, -1130),
    ("aggTrades over an hour", "/fapi/v1/aggTrades",
     {"symbol": "BTCUSDT", "startTime": "0", "endTime": "3600001"}, -1127),
    ("bad period", "/futures/data/openInterestHist", {"symbol": "BTCUSDT", "period": "3m"},
     -1130),
    ("bad premiumIndex symbol", "/fapi/v1/premiumIndex", {"symbol": "BTC USDT"}, -1121),
]  # fmt: skip


@pytest.mark.parametrize(("name", "path", "params", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_binance_errors(
    served: Served, name: str, path: str, params: dict[str, str], code: int
) -> None:
    status, body = get(served, path, **params)
    assert status == 400 and set(body) == {"code", "msg"} and body["code"] == code, body
    if code == -1120:
        assert body["msg"] == "Invalid interval."


def test_ccxt_reads_the_market_data(served: Served, traded: list[dict[str, Any]]) -> None:
    exchange = ccxt_client(served)
    symbol = "BTC/USDT:USDT"
    assert abs(exchange.fetch_time() - time.time() * 1000) < 60_000
    ohlcv = exchange.fetch_ohlcv(symbol, "1m", limit=5)
    assert ohlcv and ohlcv[-1][4] == float(traded[-1]["price"])
    for fetch in (exchange.fetch_mark_ohlcv, exchange.fetch_index_ohlcv):
        assert fetch(symbol, "1h", limit=2)[-1][4] == 60000.0
    assert exchange.fetch_premium_index_ohlcv(symbol, "1m", limit=1)[-1][4] == 0.0
    trades = exchange.fetch_trades(symbol)  # aggTrades
    assert trades[-1]["price"] == 60000.5 and trades[-1]["amount"] == 0.55
    ticker = exchange.fetch_ticker(symbol)
    assert ticker["last"] == float(traded[-1]["price"])
    bids_asks = exchange.fetch_bids_asks([symbol])
    assert bids_asks[symbol]["bid"] < bids_asks[symbol]["ask"]
    book = exchange.fetch_order_book(symbol, 5)
    assert book["nonce"] is not None and len(book["bids"]) == 5
    rate = exchange.fetch_funding_rate(symbol)
    assert rate["fundingRate"] == 0.0001 and rate["markPrice"] == 60000.0
    assert exchange.fetch_funding_rate_history(symbol) == []
    assert exchange.fetch_open_interest(symbol)["openInterestAmount"] > 0


def test_funding_rate_history_after_a_settlement(tmp_path: Path) -> None:
    with serve(tmp_path) as s:
        next_ns = sequenced(s, lambda ex: ex.engine.market("BTCUSDT").funding.next_funding_ns)
        sequenced(s, lambda ex: ex.submit([AdvanceClock(next_ns + 1_000_000_000)]))
        status, rates = get(s, "/fapi/v1/fundingRate", symbol="BTCUSDT")
        assert status == 200
        # No trades, premium 0: the settlement charged the interest rate (MECHANICS.md §1.7).
        assert rates == [
            {
                "symbol": "BTCUSDT",
                "fundingRate": "0.00010000",
                "fundingTime": next_ns // NS_PER_MS,
                "markPrice": "60000.0",
            }
        ]
        status, both = get(s, "/fapi/v1/fundingRate")
        assert [r["symbol"] for r in both] == ["BTCUSDT", "ETHUSDT"]
        assert get(s, "/fapi/v1/fundingRate", startTime=next_ns // NS_PER_MS + 1)[1] == []
        status, p = get(s, "/fapi/v1/premiumIndex", symbol="BTCUSDT")
        assert p["nextFundingTime"] == (next_ns + 8 * 3600 * 10**9) // NS_PER_MS
        # The mark candles ran on through the jump: consecutive hours, the open one last.
        status, hours = get(s, "/fapi/v1/markPriceKlines", symbol="BTCUSDT", interval="1h")
        assert all(a[6] + 1 == b[0] for a, b in itertools.pairwise(hours))
        assert hours[-1][0] <= (next_ns + 10**9) // NS_PER_MS <= hours[-1][6]


def test_the_history_is_rebuilt_from_the_journal_on_restart(tmp_path: Path) -> None:
    """Start-up replays the journal through `MarketHistory.apply`: a restarted server shows
    the same trades, aggregate trades and traded candles as before it stopped."""
    reads = [
        ("/fapi/v1/trades", {"symbol": "BTCUSDT"}),
        ("/fapi/v1/aggTrades", {"symbol": "BTCUSDT"}),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1m"}),
        ("/fapi/v1/klines", {"symbol": "BTCUSDT", "interval": "1d"}),
    ]

    def snapshot(s: Served) -> list[Any]:
        answers = [get(s, path, **params)[1] for path, params in reads]
        answers[2] = [r for r in answers[2] if r[8]]  # the minutes with trades
        answers[3] = [r[:6] for r in answers[3]]  # the day's OHLCV (its close time moves on)
        return answers

    with serve(tmp_path) as s:
        for side in ("BUY", "SELL", "BUY"):
            sequenced(
                s, lambda ex, side=side: ex.place_order("demo", "BTCUSDT", side, "MARKET", "0.700")
            )
        before = snapshot(s)
    assert len(before[0]) >= 6 and before[2]
    with serve(tmp_path) as s:
        assert snapshot(s) == before


def _history(closes: list[int], counts: list[int]) -> MinuteHistory:
    """Minutes that open at the last close and range one tick either side of their close."""
    c = np.array(closes, dtype=np.int64)
    o = np.concatenate(([c[0]], c[:-1]))
    ohlc = np.stack([o, np.maximum(o, c) + 1, np.minimum(o, c) - 1, c], axis=1)
    n = np.array(counts, dtype=np.int64)
    lots = n * 5
    return MinuteHistory(
        last=ohlc, mark=ohlc + 2, index=ohlc, premium=np.zeros_like(ohlc),
        volume_lots=lots, quote=lots * c, taker_volume_lots=lots // 2,
        taker_quote=lots // 2 * c, count=n,
    )  # fmt: skip


def test_a_backfilled_history_lies_before_the_first_minute_and_trades_carry_on() -> None:
    """A fresh server's past (perpex.server.backfill): the rows end the minute before the first
    clock; a minute without trades is flat at the close before it; the engine's trades then
    make the candles as before, and the trade ids of the ticker are the engine's only."""
    asked: list[tuple[str, int]] = []

    def source(symbol: str, end_minute: int) -> MinuteHistory | None:
        asked.append((symbol, end_minute))
        if symbol != "BTCUSDT":
            return None
        return _history([600_010, 600_020, 600_030, 600_040, 600_050], [3, 2, 0, 4, 1])

    history = MarketHistory([BTC, ETH], backfill=source)
    start_ns = T0_NS + 5 * MIN_NS
    feed(history, [Fill(start_ns + 10**9, 1, 600_100, 7, BUY, 1)], start_ns + 2 * 10**9)
    assert asked == [("BTCUSDT", start_ns // MIN_NS), ("ETHUSDT", start_ns // MIN_NS)]
    assert history.listed_ns == T0_NS  # listed when its candles begin (exchangeInfo)
    rows = history.klines("BTCUSDT", "1m")
    assert [r[0] for r in rows] == [(T0_NS // MIN_NS + m) * 60_000 for m in range(6)]
    assert rows[1][1:5] == ["60001.0", "60002.1", "60000.9", "60002.0"]
    assert rows[2][1:6] == ["60002.0", "60002.0", "60002.0", "60002.0", "0.000"]  # no trades
    assert rows[2][8] == 0 and rows[3][8] == 4 and rows[3][1] == "60003.0"
    assert rows[5][1:6] == ["60010.0", "60010.0", "60010.0", "60010.0", "0.007"]  # the engine's
    five = history.klines("BTCUSDT", "5m")
    assert five[0][1:9] == ["60001.0", "60005.1", "60000.9", "60005.0", "0.050",
                            five[0][6], five[0][7], 10]  # fmt: skip
    marks = history.klines("BTCUSDT", "1m", "mark")
    assert len(marks) == 6 and marks[0][1] == "60001.2"
    ticker = history.ticker_24h("BTCUSDT")
    assert (ticker["firstId"], ticker["lastId"], ticker["count"]) == (1, 1, 11)
    assert ticker["openPrice"] == "60001.0" and ticker["openTime"] == T0_NS // 1_000_000
    assert history.klines("ETHUSDT", "1m") == []  # no history, no trades yet


# == the past's funding settlements (perpex.server.backfill) ====================================
def _flat_days(days: int, price_ticks: int = 600_000) -> MinuteHistory:
    closes = [price_ticks + m % 7 for m in range(days * 1440)]
    return _history(closes, [1] * len(closes))


def test_a_history_at_rest_settles_the_interest_rate_at_each_funding_time() -> None:
    """Premium 0 (mark = index at rest): F = I at every funding time of the window, the mark
    the close of the history's mark candle of the minute that ends at it."""
    past = _flat_days(3)
    end_ns = T0_NS + 5 * NS_PER_HOUR + 7 * MIN_NS  # not on a funding time
    rows = computed_funding(past, end_ns, FundingConfig())
    times = [end_ns + int(t) for t in rows.offset_ns]
    # (end - 3 days, end] = (00:00 - 66:53, 05:07]: from 08:00 three days before to 00:00.
    assert times == [T0_NS - 64 * NS_PER_HOUR + k * 8 * NS_PER_HOUR for k in range(9)]
    assert rows.rate_e8.tolist() == [10_000] * 9 and rows.rate_divisor.tolist() == [1] * 9
    minute = [len(past) - (end_ns - t) // MIN_NS - 1 for t in times]  # the minute ending at it
    assert rows.mark_ticks.tolist() == past.mark[minute, 3].tolist()
    # Hourly funding: 0.03 %/day pro rata, 72 in three days.
    hourly = computed_funding(past, end_ns, FundingConfig(interval_ns=NS_PER_HOUR))
    assert len(hourly) == 72 and set(hourly.rate_e8.tolist()) == {1_250}
    # A settlement exactly at the end belongs to the past; the window's start does not.
    aligned = computed_funding(past, T0_NS, FundingConfig())
    assert len(aligned) == 9 and aligned.offset_ns[-1] == 0
    assert aligned.offset_ns[0] == -(3 * 24 - 8) * NS_PER_HOUR


def test_a_premium_in_the_history_moves_the_rate_by_the_engines_rule() -> None:
    """The engine's formula: F = P + clamp(I - P, +-0.05 %), within the cap (0.3 %)."""
    past = _flat_days(1)
    premium = past.premium.copy()
    premium[-480:] = 100_000  # the last 8 h at +0.1 %: F = 0.1 % - 0.05 %
    premium[-960:-480] = -20_000  # the 8 h before at -0.02 %: |I - P| within the clamp, F = I
    premium[-1440:-960] = 900_000  # +0.9 %: capped at 0.3 %
    rows = computed_funding(replace(past, premium=premium), T0_NS, FundingConfig())
    assert rows.rate_e8.tolist() == [300_000, 10_000, 50_000]
    # A minute's premium is its candle's mean, truncated toward zero.
    odd = premium.copy()
    odd[-480:] = [[-100_001, -100_001, -100_001, -100_002]]
    assert computed_funding(replace(past, premium=odd), T0_NS, FundingConfig()).rate_e8[-1] == (
        -100_001 + 50_000
    )


def test_the_store_keeps_the_settlements_and_regenerates_an_old_file(tmp_path: Path) -> None:
    """Made once (computed when the driver brings none), read back the same on a restart; a
    file of the previous format (candles without settlements) is made again."""
    made: list[int] = []

    class Driver:
        def exchange_options(self) -> dict[str, Any]:
            return {"funding": {"BTCUSDT": FundingConfig(interval_ns=4 * NS_PER_HOUR)}}

        def history(self, symbol: str, minutes: int) -> MinuteHistory | None:
            made.append(minutes)
            return _flat_days(2)

    end_minute = T0_NS // MIN_NS
    first = BackfillStore(tmp_path, Driver()).get("BTCUSDT", end_minute)
    assert first is not None and first.funding is not None and made == [43_200]
    assert len(first.funding) == 12 and set(first.funding.rate_e8.tolist()) == {5_000}
    again = BackfillStore(tmp_path, Driver()).get("BTCUSDT", end_minute)
    assert made == [43_200] and again is not None and again.funding is not None
    assert again.funding.rows(0) == first.funding.rows(0)
    # Format 1: the candles alone.
    path = tmp_path / "BTCUSDT.npz"
    np.savez_compressed(path, meta=np.array([1, end_minute]), **first.arrays())
    regenerated = BackfillStore(tmp_path, Driver()).get("BTCUSDT", end_minute)
    assert made == [43_200, 43_200] and regenerated is not None
    assert regenerated.funding is not None and len(regenerated.funding) == 12
    # A shorter window keeps the settlements of its minutes only.
    short = BackfillStore(tmp_path, Driver(), minutes=600).get("BTCUSDT", end_minute)
    assert short is not None and short.funding is not None
    assert short.funding.offset_ns.tolist() == [-8 * NS_PER_HOUR, -4 * NS_PER_HOUR, 0]


def test_the_settlements_are_the_first_rows_of_the_funding_history() -> None:
    """Laid at the first clock with the candles; the engine's settlements follow them."""
    past = _flat_days(1)
    offsets = np.array([-16 * NS_PER_HOUR, -8 * NS_PER_HOUR, 0], dtype=np.int64)
    rates = np.array([12_345, -2_000, 10_000], dtype=np.int64)
    funding = FundingRows.at_minutes(past, offsets, rates, np.ones_like(rates))
    history = MarketHistory([BTC], backfill=lambda s, m: replace(past, funding=funding))
    start_ns = T0_NS + 30 * 10**9
    history.apply([ClockAdvanced(start_ns)])
    history.apply([FundingSettled("BTCUSDT", T0_NS + 8 * NS_PER_HOUR, 7_000, 1, 600_123, 0, 0)])
    rates_ = history.funding_rates("BTCUSDT")
    assert [r["fundingTime"] for r in rates_] == [
        (T0_NS + t) // NS_PER_MS for t in (-16 * NS_PER_HOUR, -8 * NS_PER_HOUR, 0, 8 * NS_PER_HOUR)
    ]
    assert [r["fundingRate"] for r in rates_] == [
        "0.00012345", "-0.00002000", "0.00010000", "0.00007000",
    ]  # fmt: skip
    assert rates_[2]["markPrice"] == BTC.price_to_decimal(int(past.mark[-1, 3])).to_eng_string()
    assert history.funding_rates("BTCUSDT", limit=2) == rates_[-2:]
    assert history.funding_rates("BTCUSDT", start_ms=rates_[1]["fundingTime"], limit=1) == [
        rates_[1]
    ]
