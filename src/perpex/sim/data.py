"""Market data for the simulator: OHLCV files → `Candles` in exact ticks and lots of a market.

Shipped series (in `perpex/data`, sources in the README's "Data" section; all Binance USDⓈ-M
BTCUSDT perpetual, candle open times in UTC):

* ``"BTCUSDT-1h"``: last-price 1 h candles, 58,623 rows, 2019-09-08 17:00 → 2026-05-17 07:00.
  Until 2022-04-11 Binance quoted BTCUSDT in 0.01 USDT (e.g. the 2020-03-12 10:00 candle opens
  at 7,358.51 and lows at 5,199.17); on a market with a coarser tick, such as the default 0.1,
  those prices are rounded **half to even** to the tick (7,358.5 and 5,199.2). On a 0.01-tick
  market the series loads exactly.
* ``"BTCUSDT-1h-mark"``: mark-price 1 h candles, 56,084 rows, 2019-12-23 11:00 → 2026-05-17
  06:00. Binance computes its mark with eight decimals, so the prices are rounded half to even
  to the tick, as `perpex.history.MarkSeries.open_ticks_at` does and the engine rounds its own
  mark. Volume is always 0.
* ``"BTCUSDT-15m"``: last-price 15 m candles, 26,244 rows, 2025-08-17 00:00 → 2026-05-17 08:45
  (covers the 2025-10-10 crash). Every price is on the 0.1 tick and loads exactly.

A user's own file (``.csv``, ``.parquet``/``.pq``, ``.feather``/``.arrow``) has the columns
``date, open, high, low, close, volume`` (more columns are ignored) and is read exactly:

* ``date`` is the candle's open time: an Arrow timestamp column (any unit; a naive one is UTC),
  ISO-8601 text (``2020-03-12T10:00:00Z``, ``2020-03-12 10:00:00+00:00``; no offset = UTC), or
  an integer count of **milliseconds** since the epoch (Binance's kline convention).
* prices are decimals (text, integers, Arrow decimals, or floats read through their shortest
  repr, which is what was written) and must be positive and on the market's tick; volume is in
  the base asset (BTC) and must be a non-negative whole number of lots (every shipped volume is
  on the 0.001 step, so nothing is rounded). Pass ``off_tick="round"`` to put finer prices
  (e.g. your own mark-price export) on the tick half to even instead of refusing them.
* times strictly increasing; the interval is the most common spacing and every spacing must be
  a whole multiple of it (gaps are allowed: freqtrade fills them with flat candles anyway).
* every candle satisfies low ≤ min(open, close) and high ≥ max(open, close).

Anything else raises `DataError` (a ValueError) naming the file and the row (rows count from 1,
the first data row; CSV messages also give the line). Shell side: reads files, imports pyarrow
lazily (only for Parquet/Feather).
"""

from __future__ import annotations

import csv
import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np

from perpex.core.funding import format_utc
from perpex.core.markets import MarketSpec, compile_market
from perpex.core.units import ParseError, ParseFailure, to_units
from perpex.defaults import default_markets
from perpex.history import MARK_PRICE_UNIT, e8_to_ticks
from perpex.parse import start_time_ns
from perpex.sim.candles import Candles, Int64Array

OffTick = Literal["error", "round"]
COLUMNS: Final = ("date", "open", "high", "low", "close", "volume")
PRICE_COLUMNS: Final = ("open", "high", "low", "close")
MAX_ROWS: Final = 5_000_000  # 9.5 years of 1-minute candles
BOUND: Final = 2**62  # every tick, lot and ns count stays far inside int64
NS_PER_MS: Final = 1_000_000
_TIME_UNIT_NS: Final = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_CSV_SUFFIXES: Final = (".csv",)
_PARQUET_SUFFIXES: Final = (".parquet", ".pq")
_FEATHER_SUFFIXES: Final = (".feather", ".arrow", ".ipc")


class DataError(ValueError):
    """A market-data file that cannot be read exactly; the message names the file and row."""


@dataclass(frozen=True, slots=True)
class ShippedSeries:
    """One series shipped in `perpex/data`: its file, what it holds, how prices meet the tick."""

    file: str
    symbol: str
    description: str
    off_tick: OffTick


SHIPPED: Final[dict[str, ShippedSeries]] = {
    "BTCUSDT-1h": ShippedSeries(
        "binance_usdm_BTCUSDT_1h_ohlcv_2019-09_2026-05.feather",
        "BTCUSDT",
        "Binance BTCUSDT perpetual last-price 1 h OHLCV, 2019-09-08 17:00 → 2026-05-17 07:00 UTC"
        " (0.01-tick prices before 2022-04-11 rounded half to even to the market's tick)",
        "round",
    ),
    "BTCUSDT-1h-mark": ShippedSeries(
        "binance_usdm_BTCUSDT_1h_mark_2019-12_2026-05.feather",
        "BTCUSDT",
        "Binance BTCUSDT perpetual mark-price 1 h candles, 2019-12-23 11:00 → 2026-05-17 06:00"
        " UTC (eight-decimal marks rounded half to even to the tick; volume 0)",
        "round",
    ),
    "BTCUSDT-15m": ShippedSeries(
        "binance_usdm_BTCUSDT_15m_ohlcv_2025-08_2026-05.feather",
        "BTCUSDT",
        "Binance BTCUSDT perpetual last-price 15 m OHLCV, 2025-08-17 00:00 → 2026-05-17 08:45 UTC",
        "error",
    ),
}


def shipped_names() -> tuple[str, ...]:
    return tuple(SHIPPED)


def shipped_path(name: str) -> Path:
    """The file behind a shipped name (DataError listing the known names otherwise)."""
    series = _shipped(name)
    return Path(str(resources.files("perpex").joinpath("data", series.file)))


@cache
def default_market() -> MarketSpec:
    """The default BTCUSDT market of `perpex.defaults` (tick 0.1, step 0.001), compiled."""
    (btc,) = (m for m in default_markets() if m.symbol == "BTCUSDT")
    return compile_market(btc)


def load_candles(
    name_or_path: str | Path,
    market: MarketSpec | None = None,
    *,
    start: datetime | str | int | None = None,
    end: datetime | str | int | None = None,
    off_tick: OffTick | None = None,
) -> Candles:
    """Candles of a shipped series (`SHIPPED`) or of a CSV/Parquet/Feather file, in ticks and
    lots of `market` (default: `default_market()`), restricted to candles opening in
    [start, end) (a datetime, ISO-8601 text — both naive = UTC — or int ns since the epoch).

    `off_tick`: "error" refuses a price off the tick, "round" rounds it half to even (the price
    must then be a whole number of 1e-8). Default: the shipped series' own rule (see the module
    docstring), "error" for a user's file. The arrays of a shipped series are cached and
    read-only; a user's file is read afresh each call.
    """
    spec = default_market() if market is None else market
    if isinstance(name_or_path, str) and name_or_path in SHIPPED:
        series = SHIPPED[name_or_path]
        if spec.symbol != series.symbol:
            raise DataError(
                f"{name_or_path} is a {series.symbol} series, not one of market {spec.symbol}"
            )
        candles = _load_shipped(name_or_path, spec, off_tick or series.off_tick)
    else:
        path = Path(name_or_path)
        if path.suffix.lower() not in _CSV_SUFFIXES + _PARQUET_SUFFIXES + _FEATHER_SUFFIXES:
            if isinstance(name_or_path, str) and not path.exists():
                _shipped(name_or_path)  # raises: unknown name, listing the known ones
            raise DataError(
                f"{path}: unknown file type {path.suffix!r}; use .csv, .parquet or .feather"
            )
        candles = read_candles_file(path, spec, off_tick=off_tick or "error")
    if start is None and end is None:
        return candles
    lo = _time_arg(start, "start") if start is not None else -BOUND
    hi = _time_arg(end, "end") if end is not None else BOUND
    return candles.between(lo, hi)


def read_candles_file(
    path: str | Path, market: MarketSpec, *, off_tick: OffTick = "error"
) -> Candles:
    """A user's OHLCV file (type by suffix) → `Candles`; see the module docstring for rules."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _CSV_SUFFIXES:
        source = _Source(str(path), csv_lines=True)
        raw = _read_csv(path, source)
    elif suffix in _PARQUET_SUFFIXES + _FEATHER_SUFFIXES:
        source = _Source(str(path), csv_lines=False)
        kind = "parquet" if suffix in _PARQUET_SUFFIXES else "feather"
        raw = _read_arrow(path, source, kind)
    else:
        raise DataError(f"{path}: unknown file type {suffix!r}; use .csv, .parquet or .feather")
    return _to_candles(raw, market, off_tick, source)


# -- internals --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    name: str
    csv_lines: bool

    def at(self, row: int) -> str:
        """'file row 3' (rows from 1) or 'file row 3 (line 4)' for a CSV with its header."""
        where = f"{self.name} row {row + 1}"
        return f"{where} (line {row + 2})" if self.csv_lines else where


@dataclass(frozen=True, slots=True)
class _Raw:
    """Column values as read: times already in ns, the rest as Python objects."""

    time_ns: list[int]
    values: dict[str, list[Any]]


def _shipped(name: str) -> ShippedSeries:
    try:
        return SHIPPED[name]
    except KeyError:
        known = ", ".join(SHIPPED)
        raise DataError(
            f"unknown data set {name!r}; shipped: {known} (or give a .csv/.parquet/.feather path)"
        ) from None


@lru_cache(maxsize=8)
def _load_shipped(name: str, market: MarketSpec, off_tick: OffTick) -> Candles:
    candles = read_candles_file(shipped_path(name), market, off_tick=off_tick)
    for column in (
        candles.time_ns,
        candles.open_ticks,
        candles.high_ticks,
        candles.low_ticks,
        candles.close_ticks,
        candles.volume_lots,
    ):
        column.flags.writeable = False  # shared by every caller of the cache
    return candles


def _time_arg(value: datetime | str | int, what: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{what} {value!r}: give a datetime, ISO-8601 text or int ns")
    if isinstance(value, int):
        return value
    try:
        return start_time_ns(value)
    except ValueError as exc:
        raise DataError(f"{what} {value!r}: {exc}") from None


def _text_time_ns(text: str) -> int:
    """ISO-8601 text (naive = UTC) or an integer count of ms since the epoch → ns."""
    digits = text[1:] if text.startswith("-") else text
    if digits.isdigit():
        return int(text) * NS_PER_MS
    return start_time_ns(text)


def _read_csv(path: Path, source: _Source) -> _Raw:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not rows:
        raise DataError(f"{path}: empty file, expected a header {','.join(COLUMNS)}")
    header = [name.strip() for name in rows[0]]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)} (header: {rows[0]})")
    index = {c: header.index(c) for c in COLUMNS}
    body = rows[1:]
    _check_size(len(body), source)
    times: list[int] = []
    values: dict[str, list[Any]] = {c: [] for c in COLUMNS[1:]}
    for row, fields in enumerate(body):
        if len(fields) != len(header):
            raise DataError(f"{source.at(row)}: {len(fields)} fields, expected {len(header)}")
        try:
            times.append(_text_time_ns(fields[index["date"]]))
        except ValueError as exc:
            raise DataError(f"{source.at(row)}: date {fields[index['date']]!r}: {exc}") from None
        for c in COLUMNS[1:]:
            values[c].append(fields[index[c]])
    return _Raw(times, values)


def _read_arrow(path: Path, source: _Source, kind: str) -> _Raw:
    try:
        reader = importlib.import_module(f"pyarrow.{kind}")
        pyarrow = importlib.import_module("pyarrow")
    except ImportError:
        raise DataError(f"{path}: reading .{kind} needs pyarrow (pip install pyarrow)") from None
    try:
        table = reader.read_table(str(path))
    except (OSError, ValueError, pyarrow.ArrowException) as exc:  # ArrowInvalid, not found...
        raise DataError(f"{path}: cannot read as {kind}: {exc}") from None
    names = list(table.column_names)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)} (columns: {names})")
    _check_size(table.num_rows, source)
    date = table.column("date")
    date_type = date.type
    if pyarrow.types.is_timestamp(date_type):
        factor = _TIME_UNIT_NS[date_type.unit]
        raw_times: list[Any] = date.cast(pyarrow.int64()).to_pylist()
    elif pyarrow.types.is_integer(date_type):
        factor, raw_times = NS_PER_MS, date.to_pylist()
    elif pyarrow.types.is_string(date_type) or pyarrow.types.is_large_string(date_type):
        factor, raw_times = 0, date.to_pylist()
    else:
        raise DataError(f"{path}: date must be a timestamp, ISO text or int ms, not {date_type}")
    times: list[int] = []
    for row, raw in enumerate(raw_times):
        if raw is None:
            raise DataError(f"{source.at(row)}: no date")
        if factor:
            times.append(int(raw) * factor)
            continue
        try:
            times.append(_text_time_ns(raw))
        except ValueError as exc:
            raise DataError(f"{source.at(row)}: date {raw!r}: {exc}") from None
    return _Raw(times, {c: table.column(c).to_pylist() for c in COLUMNS[1:]})


def _check_size(rows: int, source: _Source) -> None:
    if rows < 2:
        raise DataError(
            f"{source.name}: {rows} candles; at least 2 are needed to infer the interval"
        )
    if rows > MAX_ROWS:
        raise DataError(f"{source.name}: {rows} candles, more than {MAX_ROWS}")


def _prices_to_ticks(
    values: Sequence[Any], name: str, market: MarketSpec, off_tick: OffTick, source: _Source
) -> list[int]:
    out: list[int] = []
    for row, value in enumerate(values):
        try:
            if off_tick == "round":
                ticks = e8_to_ticks(
                    to_units(value, MARK_PRICE_UNIT, positive=True), market.tick_size
                )
            else:
                ticks = to_units(value, market.tick_size, positive=True)
        except ParseError as exc:
            unit = MARK_PRICE_UNIT if off_tick == "round" else market.tick_size
            off_grid = exc.failure is ParseFailure.OFF_GRID
            reason = f"not on the tick {unit}" if off_grid else exc.failure.value
            raise DataError(f"{source.at(row)}: {name} {value!r}: {reason}") from None
        except ValueError as exc:  # the tick itself is not a whole number of 1e-8
            raise DataError(f"{source.name}: {exc}") from None
        if not 0 < ticks < BOUND:
            raise DataError(f"{source.at(row)}: {name} {value!r} is {ticks} ticks, out of range")
        out.append(ticks)
    return out


def _volume_to_lots(values: Sequence[Any], market: MarketSpec, source: _Source) -> list[int]:
    out: list[int] = []
    for row, value in enumerate(values):
        try:
            lots = to_units(value, market.step_size)
        except ParseError as exc:
            off_grid = exc.failure is ParseFailure.OFF_GRID
            reason = f"not on the step {market.step_size}" if off_grid else exc.failure.value
            raise DataError(f"{source.at(row)}: volume {value!r}: {reason}") from None
        if lots >= BOUND:
            raise DataError(f"{source.at(row)}: volume {value!r} is out of range")
        out.append(lots)
    return out


def _first(mask: Any) -> int:
    return int(np.argmax(mask))


def _to_candles(raw: _Raw, market: MarketSpec, off_tick: OffTick, source: _Source) -> Candles:
    for row, t in enumerate(raw.time_ns):
        if not -BOUND < t < BOUND:
            raise DataError(f"{source.at(row)}: date {t} ns is out of range")
    time_ns: Int64Array = np.array(raw.time_ns, dtype=np.int64)
    steps = np.diff(time_ns)
    if bool(np.any(steps <= 0)):
        row = _first(steps <= 0) + 1
        what = "duplicates" if steps[row - 1] == 0 else "is before"
        raise DataError(
            f"{source.at(row)}: {format_utc(int(time_ns[row]))} {what} the row above "
            "(times must be strictly increasing)"
        )
    spacings, counts = np.unique(steps, return_counts=True)
    interval = int(spacings[int(np.argmax(counts))])  # the most common; ties: the shortest
    if bool(np.any(steps % interval)):
        row = _first(steps % interval != 0) + 1
        raise DataError(
            f"{source.at(row)}: {format_utc(int(time_ns[row]))} is {int(steps[row - 1])} ns "
            f"after the row above, not a multiple of the interval {interval} ns"
        )
    ticks = {
        c: np.array(_prices_to_ticks(raw.values[c], c, market, off_tick, source), dtype=np.int64)
        for c in PRICE_COLUMNS
    }
    volume: Int64Array = np.array(_volume_to_lots(raw.values["volume"], market, source), np.int64)
    o, h, low, c = ticks["open"], ticks["high"], ticks["low"], ticks["close"]
    bad_high = h < np.maximum(o, c)
    if bool(np.any(bad_high)):
        row = _first(bad_high)
        raise DataError(
            f"{source.at(row)}: {format_utc(int(time_ns[row]))} high {raw.values['high'][row]!r}"
            " is below max(open, close)"
        )
    bad_low = low > np.minimum(o, c)
    if bool(np.any(bad_low)):
        row = _first(bad_low)
        raise DataError(
            f"{source.at(row)}: {format_utc(int(time_ns[row]))} low {raw.values['low'][row]!r}"
            " is above min(open, close)"
        )
    return Candles(market.symbol, interval, time_ns, o, h, low, c, volume)


__all__ = [
    "COLUMNS",
    "SHIPPED",
    "DataError",
    "ShippedSeries",
    "default_market",
    "load_candles",
    "read_candles_file",
    "shipped_names",
    "shipped_path",
]
