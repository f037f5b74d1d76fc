"""Real market history as exact integers: Binance funding rates and 1-hour mark prices.

Shell side (reads files); the pure lookup that replays the rates is
`perpex.core.funding.FundingSchedule`. Units: time in ns since the Unix epoch (UTC), funding
rates in 1e-8 per interval (Binance's eight decimals, "0.00010000" = 10_000), mark prices in
1e-8 USDT (`MARK_PRICE_UNIT`: Binance computes its mark with eight decimals, so a historical
mark is generally *not* on the 0.1 tick of BTCUSDT; `MarkSeries.open_ticks_at` puts it on a
tick the way perpex's own mark is rounded, half to even, and says so by its name).

Every number is parsed exactly: a rate or price that is not a whole number of its unit, a
malformed time, a row out of order or a file longer than its bound is an error, never rounded.

* `load_funding_history(path=None)` → ((time_ns, rate_e8), ...), default: the shipped
  `perpex/data/binance_usdm_BTCUSDT_funding_2019-09_2026-05.csv` (7,323 settlements,
  2019-09-10 08:00 → 2026-05-17 00:00 UTC, see ../shared/data/README.md for its source).
* `load_funding_schedule(path=None)` → the same as a `FundingSchedule`.
* `load_mark_series_1h(path)` → `MarkSeries` from a freqtrade mark-price feather file
  (columns date, open, high, low, close, volume; needs pyarrow, imported only here).
"""

from __future__ import annotations

import calendar
import csv
import importlib
import io
import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Final

from perpex.core.funding import MAX_SCHEDULE_RATES, FundingSchedule, format_utc
from perpex.core.oracle import FUNDING_RATE_SCALE, NS_PER_SECOND, div_half_even
from perpex.core.units import DecimalLike, ParseError, to_decimal, to_units

FUNDING_CSV: Final = "binance_usdm_BTCUSDT_funding_2019-09_2026-05.csv"
FUNDING_CSV_HEADER: Final = ("funding_time", "funding_rate")
RATE_UNIT: Final = Decimal("0.00000001")  # 1e-8, FUNDING_RATE_SCALE
MARK_PRICE_UNIT: Final = Decimal("0.00000001")  # Binance marks carry eight decimals
MAX_MARK_ROWS: Final = 500_000  # 57 years of hourly candles
NS_PER_HOUR: Final = 3_600 * NS_PER_SECOND
MARK_COLUMNS: Final = ("date", "open", "high", "low", "close")

_ISO_UTC = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?Z")
_TIME_UNIT_NS: Final = {"s": NS_PER_SECOND, "ms": 1_000_000, "us": 1_000, "ns": 1}


class HistoryError(ValueError):
    """A history file that cannot be read exactly; the message names the file and the row."""


def parse_utc_ns(text: str) -> int:
    """'2021-01-01T08:00:00Z' (optionally with up to 9 fraction digits) → ns since the epoch."""
    match = _ISO_UTC.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an ISO-8601 UTC time like 2021-01-01T08:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    when = datetime(year, month, day, hour, minute, second, tzinfo=UTC)  # checks the calendar
    fraction = match.group(7) or ""
    return calendar.timegm(when.timetuple()) * NS_PER_SECOND + int(fraction.ljust(9, "0"))


def parse_funding_csv(text: str, source: str = "<text>") -> tuple[tuple[int, int], ...]:
    """Rows `funding_time,funding_rate` (ISO-8601 Z, decimal fraction) → ((time_ns, rate_e8),
    ...), strictly increasing in time, every rate exact in 1e-8 and within ±100 %."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != FUNDING_CSV_HEADER:
        raise HistoryError(f"{source}: the header must be {','.join(FUNDING_CSV_HEADER)}")
    rows: list[tuple[int, int]] = []
    for line, row in enumerate(reader, start=2):
        if len(rows) >= MAX_SCHEDULE_RATES:
            raise HistoryError(f"{source}: more than {MAX_SCHEDULE_RATES} funding rates")
        if len(row) != 2:
            raise HistoryError(f"{source} line {line}: expected 2 fields, got {len(row)}")
        time_text, rate_text = row
        try:
            time_ns = parse_utc_ns(time_text)
            rate_e8 = to_units(rate_text, RATE_UNIT, max_decimals=8, allow_negative=True)
        except ValueError as exc:  # ParseError is a ValueError
            raise HistoryError(f"{source} line {line}: {exc}") from None
        if abs(rate_e8) > FUNDING_RATE_SCALE:
            raise HistoryError(f"{source} line {line}: rate {rate_text} beyond ±100 %")
        if rows and time_ns <= rows[-1][0]:
            raise HistoryError(f"{source} line {line}: {time_text} is not after the row above")
        rows.append((time_ns, rate_e8))
    if not rows:
        raise HistoryError(f"{source}: no funding rates")
    return tuple(rows)


def load_funding_history(path: str | Path | None = None) -> tuple[tuple[int, int], ...]:
    """The funding history of a CSV file; by default the shipped Binance BTCUSDT 2019-2026."""
    if path is None:
        text = resources.files("perpex").joinpath("data", FUNDING_CSV).read_text("utf-8")
        return parse_funding_csv(text, FUNDING_CSV)
    return parse_funding_csv(Path(path).read_text("utf-8"), str(path))


def load_funding_schedule(path: str | Path | None = None) -> FundingSchedule:
    return FundingSchedule(load_funding_history(path))


def e8_to_ticks(price_e8: int, tick_size: DecimalLike) -> int:
    """A 1e-8 USDT price on the tick grid, rounded half to even (as the engine rounds its
    mark, perpex.core.oracle); the tick must be a whole number of 1e-8."""
    tick = to_decimal(tick_size)
    if tick <= 0:
        raise ValueError(f"tick size {tick_size!r} must be positive")
    try:
        tick_e8 = to_units(tick, MARK_PRICE_UNIT, positive=True)
    except ParseError:
        raise ValueError(f"tick size {tick_size!r} is not a whole number of 1e-8") from None
    return div_half_even(price_e8, tick_e8)


@dataclass(frozen=True, slots=True)
class MarkSeries:
    """Hourly mark-price candles, prices exact in 1e-8 USDT, times strictly increasing."""

    open_time_ns: tuple[int, ...]
    open_e8: tuple[int, ...]
    high_e8: tuple[int, ...]
    low_e8: tuple[int, ...]
    close_e8: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.open_time_ns)

    def index_of(self, time_ns: int) -> int:
        """Row of the candle opening exactly at `time_ns` (LookupError if there is none)."""
        i = bisect_left(self.open_time_ns, time_ns)
        if i == len(self.open_time_ns) or self.open_time_ns[i] != time_ns:
            raise LookupError(f"no mark candle opens at {format_utc(time_ns)}")
        return i

    def open_e8_at(self, time_ns: int) -> int:
        """The mark at `time_ns` = the open of the candle starting then (the candle closing at
        `time_ns` ends a moment before it)."""
        return self.open_e8[self.index_of(time_ns)]

    def open_ticks_at(self, time_ns: int, tick_size: DecimalLike) -> int:
        """`open_e8_at` on the tick grid, rounded half to even (see `e8_to_ticks`)."""
        return e8_to_ticks(self.open_e8_at(time_ns), tick_size)


def _pyarrow_feather() -> Any:
    try:
        return importlib.import_module("pyarrow.feather")
    except ImportError:
        raise HistoryError(
            "reading .feather files needs pyarrow (pip install pyarrow==26.0.1)"
        ) from None


def load_mark_series_1h(path: str | Path) -> MarkSeries:
    """freqtrade's 1 h mark-price candles (Binance markPriceKlines) as exact integers.

    The file stores float64 prices; each is read through its shortest repr (what Binance
    printed) and must be a whole number of 1e-8 USDT. Candles must open on the hour, in
    strictly increasing order; a gap is allowed (lookups are exact).
    """
    source = str(path)
    table = _pyarrow_feather().read_table(source)
    names = tuple(table.column_names)
    missing = [c for c in MARK_COLUMNS if c not in names]
    if missing:
        raise HistoryError(f"{source}: missing columns {missing}")
    if table.num_rows > MAX_MARK_ROWS:
        raise HistoryError(f"{source}: more than {MAX_MARK_ROWS} candles")
    date_type = table.schema.field("date").type
    unit = getattr(date_type, "unit", None)
    if unit not in _TIME_UNIT_NS or getattr(date_type, "tz", None) not in ("UTC", "+00:00"):
        raise HistoryError(f"{source}: date must be a UTC timestamp, got {date_type}")
    pyarrow = importlib.import_module("pyarrow")
    raw_times = table.column("date").cast(pyarrow.int64()).to_pylist()
    factor = _TIME_UNIT_NS[unit]
    times: list[int] = []
    for row, raw in enumerate(raw_times):
        if raw is None:
            raise HistoryError(f"{source} row {row}: no date")
        time_ns = int(raw) * factor
        if time_ns % NS_PER_HOUR:
            raise HistoryError(f"{source} row {row}: {format_utc(time_ns)} is not on the hour")
        if times and time_ns <= times[-1]:
            raise HistoryError(f"{source} row {row}: {format_utc(time_ns)} out of order")
        times.append(time_ns)
    prices: dict[str, tuple[int, ...]] = {}
    for name in MARK_COLUMNS[1:]:
        values: list[int] = []
        for row, value in enumerate(table.column(name).to_pylist()):
            try:
                values.append(to_units(value, MARK_PRICE_UNIT, positive=True))
            except ParseError as exc:
                raise HistoryError(f"{source} row {row} {name}: {exc}") from None
        prices[name] = tuple(values)
    for row in range(len(times)):
        low, high = prices["low"][row], prices["high"][row]
        if not low <= min(prices["open"][row], prices["close"][row]) or not high >= max(
            prices["open"][row], prices["close"][row]
        ):
            raise HistoryError(f"{source} row {row}: open/close outside [low, high]")
    return MarkSeries(tuple(times), prices["open"], prices["high"], prices["low"], prices["close"])


__all__ = [
    "FUNDING_CSV",
    "MARK_PRICE_UNIT",
    "RATE_UNIT",
    "HistoryError",
    "MarkSeries",
    "e8_to_ticks",
    "load_funding_history",
    "load_funding_schedule",
    "load_mark_series_1h",
    "parse_funding_csv",
    "parse_utc_ns",
]
