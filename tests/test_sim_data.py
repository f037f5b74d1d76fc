"""perpex.sim.data: the shipped Binance BTCUSDT series and users' OHLCV files as exact Candles.

Figures from ../shared/data/README.md (measured with pandas on the same files). Where that
README rounds (the 2020-03-12 10:00 candle "7,358.5 → 5,199.2"), the file holds 7,358.51 and
5,199.17: Binance quoted BTCUSDT in 0.01 until 2022-04-11, and the loader rounds those half to
even to the default 0.1 tick (73,585 and 51,992) or reads them exactly on a 0.01 tick.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from perpex.core.markets import MarketSpec, compile_market
from perpex.defaults import default_markets
from perpex.sim.candles import Candles
from perpex.sim.data import (
    SHIPPED,
    DataError,
    default_market,
    load_candles,
    shipped_names,
    shipped_path,
)

HOUR = 3_600 * 10**9


def ns(text: str) -> int:
    when = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int(when.timestamp()) * 10**9


def market(symbol: str = "BTCUSDT", **changes: str) -> MarketSpec:
    (m,) = (m for m in default_markets() if m.symbol == symbol)
    return compile_market(dataclasses.replace(m, **changes))


def columns(c: Candles) -> tuple[np.ndarray, ...]:
    return (c.time_ns, c.open_ticks, c.high_ticks, c.low_ticks, c.close_ticks, c.volume_lots)


def write_csv(path: Path, rows: list[tuple[object, ...]], header: str | None = None) -> Path:
    lines = [header or "date,open,high,low,close,volume"]
    lines += [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = [
    ("2020-03-12T08:00:00Z", "7900.1", "7950.0", "7850.0", "7900.0", "1.5"),
    ("2020-03-12T09:00:00Z", "7900.0", "7920.0", "7300.0", "7358.5", "2.25"),
    ("2020-03-12T10:00:00Z", "7358.5", "7368.5", "5199.2", "5981.1", "144622.787"),
]


# -- shipped series ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "rows", "first", "last", "interval"),
    [
        ("BTCUSDT-1h", 58_623, "2019-09-08 17:00", "2026-05-17 07:00", HOUR),
        ("BTCUSDT-1h-mark", 56_084, "2019-12-23 11:00", "2026-05-17 06:00", HOUR),
        ("BTCUSDT-15m", 26_244, "2025-08-17 00:00", "2026-05-17 08:45", HOUR // 4),
    ],
)
def test_shipped_series_rows_range_and_types(
    name: str, rows: int, first: str, last: str, interval: int
) -> None:
    c = load_candles(name)
    assert (len(c), c.symbol, c.interval_ns) == (rows, "BTCUSDT", interval)
    assert (int(c.time_ns[0]), int(c.time_ns[-1])) == (ns(first), ns(last))
    for column in columns(c):
        assert column.dtype == np.int64
        assert not column.flags.writeable  # cached and shared: read-only
    assert bool(np.all(c.low_ticks <= np.minimum(c.open_ticks, c.close_ticks)))
    assert bool(np.all(c.high_ticks >= np.maximum(c.open_ticks, c.close_ticks)))
    assert shipped_path(name).name == SHIPPED[name].file
    assert load_candles(name) is c  # one read per process and market


def test_shipped_names_and_unknown_name_lists_them() -> None:
    assert shipped_names() == ("BTCUSDT-1h", "BTCUSDT-1h-mark", "BTCUSDT-15m")
    with pytest.raises(DataError, match=r"'BTCUSDT-4h'.*BTCUSDT-1h, BTCUSDT-1h-mark, BTCUSDT-15m"):
        load_candles("BTCUSDT-4h")


def test_shipped_series_belongs_to_its_symbol() -> None:
    with pytest.raises(DataError, match="BTCUSDT series, not one of market ETHUSDT"):
        load_candles("BTCUSDT-15m", market("ETHUSDT"))


def test_covid_candle_rounded_to_default_tick_and_exact_on_a_cent_tick() -> None:
    at = ns("2020-03-12 10:00")
    c = load_candles("BTCUSDT-1h", start=at, end=at + HOUR)
    assert len(c) == 1
    # file: 7358.51, 7368.5, 5199.17, 5981.07, volume 144622.787 BTC
    assert [int(a[0]) for a in columns(c)[1:]] == [73_585, 73_685, 51_992, 59_811, 144_622_787]
    cent = load_candles("BTCUSDT-1h", market(tick_size="0.01"), start=at, end=at + HOUR)
    assert [int(a[0]) for a in columns(cent)[1:]] == [
        735_851,
        736_850,
        519_917,
        598_107,
        144_622_787,
    ]


def test_between_on_the_covid_crash_days() -> None:
    day = load_candles("BTCUSDT-1h").between(ns("2020-03-12 00:00"), ns("2020-03-14 00:00"))
    assert len(day) == 48 and day.interval_ns == HOUR
    i = int(np.argmin(day.low_ticks))
    assert int(day.time_ns[i]) == ns("2020-03-13 02:00")
    assert int(day.low_ticks[i]) == 36_218  # 3,621.81 on the 0.1 tick
    drop = day.low_ticks / day.open_ticks - 1
    assert int(day.time_ns[int(np.argmin(drop))]) == ns("2020-03-12 10:00")
    mark = load_candles(
        "BTCUSDT-1h-mark", start=datetime(2020, 3, 12, tzinfo=UTC), end="2020-03-14T00:00:00Z"
    )
    assert len(mark) == 48 and int(mark.low_ticks.min()) == 38_018  # 3,801.83057975
    assert not bool(np.any(mark.volume_lots))


def test_tariff_crash_in_the_15m_series() -> None:
    c = load_candles("BTCUSDT-15m", start="2025-10-10T20:30:00", end="2025-10-10T21:30:00")
    assert len(c) == 4 and c.interval_ns == 15 * 60 * 10**9
    assert int(c.open_ticks[0]) == 1_170_140  # 117,014
    assert int(c.low_ticks.min()) == 1_015_165  # 101,516.5: -13.24 % within the hour


# -- a user's own files -----------------------------------------------------------------------


def test_csv_round_trip_exact(tmp_path: Path) -> None:
    c = load_candles(write_csv(tmp_path / "mine.csv", GOOD))
    assert c.symbol == "BTCUSDT" and c.interval_ns == HOUR
    assert c.time_ns.tolist() == [ns("2020-03-12 08:00") + k * HOUR for k in range(3)]
    assert c.open_ticks.tolist() == [79_001, 79_000, 73_585]
    assert c.low_ticks.tolist() == [78_500, 73_000, 51_992]
    assert c.volume_lots.tolist() == [1_500, 2_250, 144_622_787]
    assert all(column.dtype == np.int64 for column in columns(c))
    assert c.time_ns.flags.writeable  # a user's file is the caller's own copy


def test_csv_date_forms_extra_columns_and_gaps(tmp_path: Path) -> None:
    # integer ms, an offset, naive text (UTC), extra column, a 3 h gap: interval stays 1 h
    ms = ns("2020-03-12 08:00") // 10**6
    rows = [
        (ms, "1", "2", "1", "2", "0", "x"),
        ("2020-03-12T10:00:00+01:00", "2", "2", "2", "2", "0", "y"),
        ("2020-03-12 12:00:00", "2", "3", "2", "3", "0.001", "z"),
        ("2020-03-12T13:00:00.000Z", "3", "3", "3", "3", "0", "z"),
    ]
    path = write_csv(tmp_path / "gaps.csv", rows, "date,open,high,low,close,volume,note")
    c = load_candles(path)
    assert c.interval_ns == HOUR
    assert (c.time_ns - c.time_ns[0]).tolist() == [0, HOUR, 4 * HOUR, 5 * HOUR]
    assert c.volume_lots.tolist() == [0, 0, 1, 0]


def test_parquet_and_feather_round_trips(tmp_path: Path) -> None:
    shipped = load_candles("BTCUSDT-15m", start="2025-10-10T20:00Z", end="2025-10-10T22:00Z")
    prices = {
        name: pa.array([float(v) / 10 for v in getattr(shipped, f"{name}_ticks")])
        for name in ("open", "high", "low", "close")
    }
    volume = pa.array([float(v) / 1000 for v in shipped.volume_lots])
    stamps = pa.array(shipped.time_ns, pa.timestamp("ns", tz="UTC"))
    table = pa.table({"date": stamps, **prices, "volume": volume})
    pq.write_table(table, tmp_path / "mine.parquet")
    feather.write_feather(table, tmp_path / "mine.feather")
    as_ms = table.set_column(0, "date", pa.array(shipped.time_ns // 10**6, pa.int64()))
    pq.write_table(as_ms, tmp_path / "ms.pq")
    iso = [datetime.fromtimestamp(int(t) // 10**9, UTC).isoformat() for t in shipped.time_ns]
    feather.write_feather(table.set_column(0, "date", pa.array(iso)), tmp_path / "iso.arrow")
    for name in ("mine.parquet", "mine.feather", "ms.pq", "iso.arrow"):
        c = load_candles(str(tmp_path / name))
        assert c.interval_ns == shipped.interval_ns
        for got, want in zip(columns(c), columns(shipped), strict=True):
            assert got.tolist() == want.tolist()


def test_exact_decimals_and_window(tmp_path: Path) -> None:
    rows = [
        ("2020-01-01T00:00:00Z", "123456789012.3", "123456789012.4", "0.1", "0.2", "7"),
        ("2020-01-01T00:01:00Z", "0.2", "0.2", "0.2", "0.2", "0"),
    ]
    c = load_candles(write_csv(tmp_path / "big.csv", rows))
    assert c.interval_ns == 60 * 10**9
    assert (int(c.open_ticks[0]), int(c.high_ticks[0])) == (1_234_567_890_123, 1_234_567_890_124)
    window = load_candles(tmp_path / "big.csv", start="2020-01-01T00:01:00Z")
    assert len(window) == 1 and int(window.open_ticks[0]) == 2


def test_off_tick_round_for_a_user_mark_file(tmp_path: Path) -> None:
    rows = [
        ("2020-01-01T00:00:00Z", "7000.05", "7000.15", "6999.94999999", "7000.25", "0"),
        ("2020-01-01T01:00:00Z", "7000.0", "7000.0", "7000.0", "7000.0", "0"),
    ]
    path = write_csv(tmp_path / "mark.csv", rows)
    with pytest.raises(DataError, match=r"row 1 \(line 2\): open '7000.05': not on the tick"):
        load_candles(path)
    c = load_candles(path, off_tick="round")  # half to even: .05 -> 0, .15 -> 2, .25 -> 2
    assert c.open_ticks.tolist()[0] == 70_000
    assert (int(c.high_ticks[0]), int(c.low_ticks[0]), int(c.close_ticks[0])) == (
        70_002,
        69_999,
        70_002,
    )


# -- bad files: each refused with the file and the row ---------------------------------------

BAD_CSV = [
    ("missing column", "date,open,high,low,close", GOOD, r"missing columns volume"),
    ("unsorted", None, [GOOD[1], GOOD[0], GOOD[2]], r"row 2 \(line 3\).*is before the row"),
    ("duplicate", None, [GOOD[0], GOOD[1], GOOD[1]], r"row 3 \(line 4\).*duplicates the row"),
    (
        "off tick",
        None,
        [GOOD[0], GOOD[1], (*GOOD[2][:3], "5199.17", *GOOD[2][4:])],
        r"row 3 \(line 4\): low '5199.17': not on the tick 0.1",
    ),
    (
        "zero price",
        None,
        [GOOD[0], (GOOD[1][0], "0", *GOOD[1][2:]), GOOD[2]],
        r"row 2 \(line 3\): open '0': not positive",
    ),
    (
        "negative price",
        None,
        [GOOD[0], GOOD[1], (*GOOD[2][:4], "-1", GOOD[2][5])],
        r"row 3 \(line 4\): close '-1': not positive",
    ),
    (
        "high below close",
        None,
        [GOOD[0], (*GOOD[1][:2], "7350.0", *GOOD[1][3:]), GOOD[2]],
        r"row 2 \(line 3\): 2020-03-12T09:00:00Z high '7350.0' is below max\(open, close\)",
    ),
    (
        "low above open",
        None,
        [(*GOOD[0][:3], "7900.1", *GOOD[0][4:]), GOOD[1], GOOD[2]],
        r"row 1 \(line 2\): 2020-03-12T08:00:00Z low '7900.1' is above min\(open, close\)",
    ),
    (
        "volume off step",
        None,
        [GOOD[0], (*GOOD[1][:5], "0.0005"), GOOD[2]],
        r"row 2 \(line 3\): volume '0.0005': not on the step 0.001",
    ),
    (
        "negative volume",
        None,
        [GOOD[0], GOOD[1], (*GOOD[2][:5], "-1")],
        r"row 3 \(line 4\): volume '-1': negative",
    ),
    ("price not a number", None, [GOOD[0], (GOOD[1][0], "abc", *GOOD[1][2:])], r"row 2.*'abc'"),
    ("bad date", None, [GOOD[0], ("2020-13-12T09:00:00Z", *GOOD[1][1:])], r"row 2.*date"),
    (
        "spacing not a multiple",
        None,
        [*GOOD, ("2020-03-12T11:30:00Z", *GOOD[2][1:])],
        r"row 4 \(line 5\): 2020-03-12T11:30:00Z is 5400000000000 ns after the row above, "
        r"not a multiple of the interval 3600000000000 ns",
    ),
    ("short row", None, [GOOD[0], GOOD[1][:4]], r"row 2 \(line 3\): 4 fields, expected 6"),
    ("one row", None, [GOOD[0]], r"1 candles; at least 2"),
    ("empty", "", [], r"empty file"),
]


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [case[1:] for case in BAD_CSV],
    ids=[case[0] for case in BAD_CSV],
)
def test_bad_csv_refused_naming_file_and_row(
    tmp_path: Path, header: str | None, rows: list[tuple[object, ...]], message: str
) -> None:
    path = tmp_path / "bad.csv"
    if header == "":
        path.write_text("", encoding="utf-8")
    else:
        write_csv(path, rows, header)
    with pytest.raises(DataError, match=message) as caught:
        load_candles(path)
    assert str(caught.value).startswith(str(path))
    assert isinstance(caught.value, ValueError)


def test_bad_arrow_files(tmp_path: Path) -> None:
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=rf"{re.escape(str(junk))}: cannot read as parquet"):
        load_candles(junk)
    with pytest.raises(DataError, match="cannot read as feather"):
        load_candles(tmp_path / "absent.feather")
    with pytest.raises(DataError, match=r"absent\.csv: cannot read"):
        load_candles(str(tmp_path / "absent.csv"))
    with pytest.raises(DataError, match=r"unknown file type '\.xlsx'"):
        load_candles(tmp_path / "book.xlsx")
    base = {
        "date": pa.array([0, HOUR, 2 * HOUR], pa.timestamp("ns", tz="UTC")),
        "open": pa.array([1.0, 1.0, 1.0]),
        "high": pa.array([1.0, 1.0, 1.0]),
        "low": pa.array([1.0, 1.0, 1.0]),
        "close": pa.array([1.0, float("nan"), 1.0]),
        "volume": pa.array([0.0, 0.0, 0.0]),
    }
    nan = tmp_path / "nan.feather"
    feather.write_feather(pa.table(base), nan)
    with pytest.raises(DataError, match=rf"{re.escape(str(nan))} row 2: close nan"):
        load_candles(nan)
    no_date = tmp_path / "nodate.parquet"
    dates = pa.array([0, None, 2 * HOUR], pa.timestamp("ms"))
    pq.write_table(pa.table({**base, "date": dates, "close": pa.array([1.0] * 3)}), no_date)
    with pytest.raises(DataError, match=rf"{re.escape(str(no_date))} row 2: no date"):
        load_candles(no_date)
    floats = tmp_path / "floatdate.parquet"
    pq.write_table(pa.table({**base, "date": pa.array([0.0, 1.0, 2.0])}), floats)
    with pytest.raises(DataError, match="date must be a timestamp, ISO text or int ms"):
        load_candles(floats)
    missing = tmp_path / "missing.feather"
    feather.write_feather(pa.table({k: v for k, v in base.items() if k != "high"}), missing)
    with pytest.raises(DataError, match=rf"{re.escape(str(missing))}: missing columns high"):
        load_candles(missing)


def test_time_arguments_and_default_market() -> None:
    assert default_market().symbol == "BTCUSDT"
    assert str(default_market().tick_size) == "0.1"
    with pytest.raises(DataError, match="start 'yesterday'"):
        load_candles("BTCUSDT-15m", start="yesterday")
    empty = load_candles("BTCUSDT-15m", start=ns("2030-01-01 00:00"))
    assert len(empty) == 0 and empty.interval_ns == 15 * 60 * 10**9
