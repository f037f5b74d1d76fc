"""One-minute candles kept in a bounded ring, and their aggregation to Binance's intervals.

Units: a candle's key is its open time in minutes since the Unix epoch (UTC); values are
integers in the series' own unit (prices in ticks, premiums in 1e-8, sizes in lots, quote
volumes in tick-lots = price_ticks x qty_lots, trade ids). A series holds the open candle of
the current minute in a plain list (the hot path: one trade or one price is a few list
writes) and the closed minutes before it in a NumPy ring of `capacity` rows (slot = minute %
capacity), so memory is fixed and a query is a few vectorised reductions.

Decisions:
- A minute with no update is a flat candle at the previous close (open = high = low = close,
  volumes and counts 0), as Binance shows a minute without trades. Every minute from a series'
  first value to the current one therefore has a row, and an interval's candle is the
  reduction of its minutes: open of the first, high max, low min, close of the last, sums.
- A price series (mark, index, premium) has a value at every instant: its candle opens at
  the value in force when it began, and flat minutes count in its high and low. A candle of
  the last price is made of trades, as Binance's: it opens at its first trade, its high and
  low are of trades only, and it is flat at the previous close only when it has none
  (`MinuteSeries(traded=True)`).
- Intervals are aligned to UTC: 1m..1d and 3d on multiples of their length since the epoch,
  1w on Mondays 00:00, 1M on calendar months.
- Bounded span: after `capacity` minutes the oldest rows are overwritten; a candle whose
  first minutes were overwritten is dropped from query answers rather than shown partial
  (a series that simply began mid-interval shows its partial first candle, as a new listing
  does on Binance).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

MS_PER_MINUTE: Final = 60_000
NS_PER_MINUTE: Final = 60_000_000_000
# 32 days of closed minutes kept per series: a fresh server's 30 days of history
# (`perpex.server.backfill`) and its first two days before the oldest are overwritten.
DEFAULT_CAPACITY_MINUTES: Final = 32 * 24 * 60
MONTH: Final = 0  # the interval length of "1M" (calendar months) in INTERVAL_MINUTES
MAX_MONTH_MINUTES: Final = 31 * 24 * 60
WEEK_OFFSET_MINUTES: Final = 4 * 24 * 60  # 1970-01-01 was a Thursday; weeks start Monday
INTERVAL_MINUTES: Final[dict[str, int]] = {
    "1m": 1,
    "3m": 3,
    "5m": 5,
    "15m": 15,
    "30m": 30,
    "1h": 60,
    "2h": 120,
    "4h": 240,
    "6h": 360,
    "8h": 480,
    "12h": 720,
    "1d": 1440,
    "3d": 4320,
    "1w": 10080,
    "1M": MONTH,
}

# Columns shared by every series.
OPEN, HIGH, LOW, CLOSE, COUNT = 0, 1, 2, 3, 4
# The last-price series adds volumes and the trade ids of the candle.
VOLUME, QUOTE, TAKER_VOLUME, TAKER_QUOTE, FIRST_ID, LAST_ID = 5, 6, 7, 8, 9, 10
# A price series (mark, index, premium) adds one carried value (open interest on the mark's).
CARRIED = 5

NO_FIRST_ID: Final = 2**62  # FIRST_ID of a candle without trades (reduced by min)
NO_LAST_ID: Final = -1  # LAST_ID of a candle without trades (reduced by max)

# How a column reduces over minutes, and what a flat (no update) minute holds in it.
_FIRST, _MAX, _MIN, _LAST, _SUM = range(5)
_RESET_CLOSE, _RESET_ZERO, _RESET_NO_FIRST, _RESET_NO_LAST, _RESET_CARRY = range(5)

Layout = tuple[tuple[int, int], ...]  # per column: (reduction, flat value)
_PRICES: Final = ((_FIRST, _RESET_CLOSE), (_MAX, _RESET_CLOSE), (_MIN, _RESET_CLOSE))
_CLOSE_COUNT: Final = ((_LAST, _RESET_CLOSE), (_SUM, _RESET_ZERO))
LAST_LAYOUT: Final[Layout] = (
    *_PRICES,
    *_CLOSE_COUNT,
    (_SUM, _RESET_ZERO),  # VOLUME
    (_SUM, _RESET_ZERO),  # QUOTE
    (_SUM, _RESET_ZERO),  # TAKER_VOLUME
    (_SUM, _RESET_ZERO),  # TAKER_QUOTE
    (_MIN, _RESET_NO_FIRST),  # FIRST_ID
    (_MAX, _RESET_NO_LAST),  # LAST_ID
)
PRICE_LAYOUT: Final[Layout] = (*_PRICES, *_CLOSE_COUNT, (_LAST, _RESET_CARRY))


def bucket_keys(minutes: I64, interval: str) -> I64:
    """The open minute of the `interval` candle each minute belongs to (UTC-aligned)."""
    length = INTERVAL_MINUTES[interval]
    if length == 1:
        return minutes
    if length == MONTH:
        months = minutes.astype("datetime64[m]").astype("datetime64[M]")
        return months.astype("datetime64[m]").astype(np.int64)
    offset = WEEK_OFFSET_MINUTES if interval == "1w" else 0
    keys: I64 = (minutes - offset) // length * length + offset
    return keys


def bucket_key(minute: int, interval: str) -> int:
    return int(bucket_keys(np.array([minute], dtype=np.int64), interval)[0])


def close_ms(keys: I64, interval: str) -> I64:
    """Binance's closeTime of candles opening at `keys` (minutes): the last ms inside them."""
    length = INTERVAL_MINUTES[interval]
    if length == MONTH:
        months = keys.astype("datetime64[m]").astype("datetime64[M]") + 1
        ends = months.astype("datetime64[m]").astype(np.int64)
    else:
        ends = keys + length
    out: I64 = ends * MS_PER_MINUTE - 1
    return out


def reduce_rows(rows: I64, starts: I64, layout: Layout, traded: bool = False) -> I64:
    """Reduce consecutive row groups (each begins at an index of `starts`) per the layout.

    `traded` (the last-price series): open, high and low come from the minutes that had
    trades (a candle opens at its first trade, as Binance's do); a group without any trade is
    flat at the close it carried."""
    ends = np.append(starts[1:], len(rows)) - 1
    out = np.empty((len(starts), len(layout)), dtype=np.int64)
    for j, (reduction, _) in enumerate(layout):
        column = rows[:, j]
        if reduction == _FIRST:
            out[:, j] = column[starts]
        elif reduction == _LAST:
            out[:, j] = column[ends]
        elif reduction == _MAX:
            out[:, j] = np.maximum.reduceat(column, starts)
        elif reduction == _MIN:
            out[:, j] = np.minimum.reduceat(column, starts)
        else:
            out[:, j] = np.add.reduceat(column, starts)
    if traded and len(rows):
        had = rows[:, COUNT] > 0
        any_trade = np.add.reduceat(had.astype(np.int64), starts) > 0
        positions = np.where(had, np.arange(len(rows)), len(rows))
        first = np.minimum.reduceat(positions, starts)
        out[:, OPEN] = np.where(
            any_trade, rows[np.minimum(first, len(rows) - 1), OPEN], out[:, OPEN]
        )
        low_min, high_max = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        highs = np.maximum.reduceat(np.where(had, rows[:, HIGH], low_min), starts)
        lows = np.minimum.reduceat(np.where(had, rows[:, LOW], high_max), starts)
        out[:, HIGH] = np.where(any_trade, highs, out[:, OPEN])
        out[:, LOW] = np.where(any_trade, lows, out[:, OPEN])
    return out


class MinuteSeries:
    """The one-minute candles of one price series (see the module docstring)."""

    __slots__ = (
        "capacity",
        "evicted",
        "first_minute",
        "layout",
        "minute",
        "ring",
        "row",
        "traded",
    )

    def __init__(
        self, layout: Layout, capacity: int = DEFAULT_CAPACITY_MINUTES, *, traded: bool = False
    ) -> None:
        if capacity < 1:
            raise ValueError("a candle ring needs at least one row")
        self.layout = layout
        self.traded = traded  # the last-price series: candles open at their first trade
        self.capacity = capacity
        self.ring: I64 = np.zeros((capacity, len(layout)), dtype=np.int64)
        self.first_minute = -1  # the oldest minute kept (ring or open row)
        self.minute = -1  # the open candle's minute; -1 before the series' first value
        self.row: list[int] = []  # the open candle
        self.evicted = False  # older minutes were overwritten

    @property
    def started(self) -> bool:
        return self.minute >= 0

    # -- writing (the writer thread) ------------------------------------------------------
    def start(self, minute: int, value: int, carried: int = 0) -> None:
        """The first value: a candle at `value` opens at `minute` (COUNT is the caller's)."""
        self.row = self.flat(value, carried)
        self.minute = self.first_minute = minute

    def flat(self, close: int, carried: int) -> list[int]:
        """A minute without updates after one that closed at `close`."""
        row = []
        for _, reset in self.layout:
            if reset == _RESET_CLOSE:
                row.append(close)
            elif reset == _RESET_ZERO:
                row.append(0)
            elif reset == _RESET_NO_FIRST:
                row.append(NO_FIRST_ID)
            elif reset == _RESET_NO_LAST:
                row.append(NO_LAST_ID)
            else:
                row.append(carried)
        return row

    def roll(self, minute: int) -> None:
        """Close the open candle and every minute before `minute` (flat); open `minute`."""
        if minute <= self.minute or self.minute < 0:
            return
        capacity = self.capacity
        row = self.row
        self.ring[self.minute % capacity] = row
        carried = row[CARRIED] if self.layout[CARRIED][1] == _RESET_CARRY else 0
        flat = self.flat(row[CLOSE], carried)
        gap_from = max(self.minute + 1, minute - capacity)  # only the last `capacity` count
        if gap_from < minute:
            self.ring[np.arange(gap_from, minute) % capacity] = flat
        self.minute = minute
        self.row = flat
        oldest = minute - capacity
        if oldest > self.first_minute:
            self.first_minute = oldest
            self.evicted = True

    def backfill(self, rows: I64, end_minute: int) -> None:
        """Lay `rows` (one per minute, in the layout, oldest first) on the minutes before
        `end_minute`: the history of a series that opens at `end_minute` (a series not yet
        started opens there, flat at the history's last close). Only the newest
        `capacity - 1` rows fit; a series that already has minutes before it is left alone."""
        n = min(len(rows), self.capacity - 1)
        if n <= 0 or (self.started and self.first_minute != end_minute):
            return
        rows = rows[-n:]
        first = end_minute - n
        self.ring[np.arange(first, end_minute) % self.capacity] = rows
        if not self.started:
            self.row = self.flat(int(rows[-1, CLOSE]), 0)
            self.minute = end_minute
        self.first_minute = first

    def rebase(self, minute: int) -> None:
        """Move a series that has only its open candle to `minute` (its time was unknown)."""
        if self.started and self.first_minute == self.minute:
            self.minute = self.first_minute = minute

    # -- reading --------------------------------------------------------------------------
    def rows(self, lo: int, hi: int) -> I64:
        """The candles of minutes lo..hi (inclusive, within the kept span), one row each."""
        lo = max(lo, self.first_minute)
        hi = min(hi, self.minute)
        if not self.started or hi < lo:
            return np.empty((0, len(self.layout)), dtype=np.int64)
        closed_hi = min(hi, self.minute - 1)
        closed = self.ring[np.arange(lo, closed_hi + 1) % self.capacity]
        if hi < self.minute:
            return closed
        return np.vstack([closed, np.array([self.row], dtype=np.int64)])

    def candles(
        self,
        interval: str,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> tuple[I64, I64]:
        """(open minutes, reduced rows) of the `interval` candles Binance's klines query
        selects: ascending, open time in [start_ms, end_ms], the first `limit` after
        `start_ms` when it is given, else the last `limit` (the open candle last)."""
        empty = np.empty(0, dtype=np.int64), np.empty((0, len(self.layout)), dtype=np.int64)
        if not self.started or limit <= 0:
            return empty
        # The longest candle of the interval (a month: 31 days), in minutes.
        span = INTERVAL_MINUTES[interval] or MAX_MONTH_MINUTES
        lo, hi = self.first_minute, self.minute
        if start_ms is not None:
            lo = max(lo, -(-start_ms // MS_PER_MINUTE))  # minutes before start: earlier candles
        if end_ms is not None:
            # The last candle the answer can hold opens at or before end_ms.
            hi = min(hi, end_ms // MS_PER_MINUTE + span)
        # Bound the work to the candles the answer can hold. Months are not all `span` long:
        # a cut inside one leaves a partial candle, which is dropped below (at the front) or
        # lies beyond the `limit` candles kept (at the back).
        if start_ms is None:
            newest = self.minute if end_ms is None else min(self.minute, end_ms // MS_PER_MINUTE)
            lo = max(lo, bucket_key(newest, interval) - (limit - 1) * span)
        else:
            hi = min(hi, bucket_key(lo, interval) + (limit + 1) * span)
        if hi < lo:
            return empty
        rows = self.rows(lo, hi)
        if len(rows) == 0:
            return empty
        minutes = np.arange(max(lo, self.first_minute), max(lo, self.first_minute) + len(rows))
        keys = bucket_keys(minutes, interval)
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        opens = keys[starts]
        reduced = reduce_rows(rows, starts, self.layout, self.traded)
        keep = np.ones(len(opens), dtype=bool)
        # A first candle that began before the kept minutes is partial: drop it, unless the
        # series itself began inside it (then it is its true first candle).
        if opens[0] < minutes[0] and (self.evicted or minutes[0] > self.first_minute):
            keep[0] = False
        if start_ms is not None:
            keep &= opens * MS_PER_MINUTE >= start_ms
        if end_ms is not None:
            keep &= opens * MS_PER_MINUTE <= end_ms
        opens, reduced = opens[keep], reduced[keep]
        if start_ms is not None:
            return opens[:limit], reduced[:limit]
        return opens[-limit:], reduced[-limit:]

    def summary(self, lo: int) -> list[int] | None:
        """All minutes from `lo` to the open one reduced into one candle (None if none)."""
        rows = self.rows(lo, self.minute)
        if len(rows) == 0:
            return None
        reduced = reduce_rows(rows, np.zeros(1, dtype=np.int64), self.layout, self.traded)
        return [int(v) for v in reduced[0]]


__all__ = [
    "CARRIED",
    "CLOSE",
    "COUNT",
    "DEFAULT_CAPACITY_MINUTES",
    "FIRST_ID",
    "HIGH",
    "INTERVAL_MINUTES",
    "LAST_ID",
    "LAST_LAYOUT",
    "LOW",
    "MONTH",
    "MS_PER_MINUTE",
    "NO_FIRST_ID",
    "NO_LAST_ID",
    "NS_PER_MINUTE",
    "OPEN",
    "PRICE_LAYOUT",
    "QUOTE",
    "TAKER_QUOTE",
    "TAKER_VOLUME",
    "VOLUME",
    "Layout",
    "MinuteSeries",
    "bucket_key",
    "bucket_keys",
    "close_ms",
    "reduce_rows",
]
