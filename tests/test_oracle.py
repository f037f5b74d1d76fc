"""The oracle's rulebook: the index from several sources (BN-MARK protections) and the mark.

Prices are BTCUSDT ticks (0.1 USDT): 600_000 ticks = 60,000.0 USDT. Sources: MECHANICS.md §1.6.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from perpex.core.oracle import (
    NS_PER_SECOND,
    IndexConfig,
    IndexMethod,
    MarkConfig,
    MarkMode,
    MarkState,
    compute_index,
    compute_index_detail,
    compute_mark,
    div_half_even,
)

S = NS_PER_SECOND
NOW = 1_000 * S
EQUAL = IndexConfig({"binance": 1, "coinbase": 1, "kraken": 1, "okx": 1, "bybit": 1}, 10 * S)


def fresh(**prices: int) -> dict[str, tuple[int, int]]:
    return {name: (price, NOW) for name, price in prices.items()}


@dataclass(frozen=True)
class IndexCase:
    name: str
    quotes: dict[str, tuple[int, int]]
    index_ticks: int | None
    method: IndexMethod | None = None
    config: IndexConfig = EQUAL
    outliers: tuple[str, ...] = ()


INDEX_CASES = [
    IndexCase(
        "five sources agree: plain weighted average",
        fresh(binance=600_000, coinbase=600_010, kraken=599_990, okx=600_020, bybit=599_980),
        600_000,
        IndexMethod.WEIGHTED,
    ),
    IndexCase(
        "one source 10 % high gets weight 0",
        fresh(binance=600_000, coinbase=600_010, kraken=599_990, okx=660_000, bybit=600_000),
        600_000,  # (600,000 + 600,010 + 599,990 + 600,000) / 4
        IndexMethod.WEIGHTED,
        outliers=("okx",),
    ),
    IndexCase(
        "two sources deviate: the median of all fresh sources",
        fresh(binance=600_000, coinbase=600_010, kraken=540_000, okx=660_000, bybit=600_030),
        600_010,
        IndexMethod.MEDIAN,
        outliers=("kraken", "okx"),
    ),
    IndexCase(
        "exactly 5 % from the median is not an outlier (the rule says more than 5 %)",
        fresh(binance=600_000, coinbase=600_000, kraken=600_000, okx=630_000, bybit=600_000),
        606_000,  # (4 x 600,000 + 630,000) / 5
        IndexMethod.WEIGHTED,
    ),
    IndexCase(
        "one tick beyond 5 % is an outlier",
        fresh(binance=600_000, coinbase=600_000, kraken=600_000, okx=630_001, bybit=600_000),
        600_000,
        IndexMethod.WEIGHTED,
        outliers=("okx",),
    ),
    IndexCase(
        "a stale source is dropped, its price does not count",
        {**fresh(binance=600_000, coinbase=600_000), "kraken": (700_000, NOW - 11 * S)},
        600_000,
        IndexMethod.WEIGHTED,
    ),
    IndexCase(
        "a quote exactly stale_after old is still fresh",
        {**fresh(binance=600_000), "kraken": (600_100, NOW - 10 * S)},
        600_050,
        IndexMethod.WEIGHTED,
    ),
    IndexCase(
        "all sources stale: no index",
        {"binance": (600_000, NOW - 11 * S), "okx": (600_000, NOW - 60 * S)},
        None,
    ),
    IndexCase("no quotes at all: no index", {}, None),
    IndexCase(
        "weights: binance 3, okx 1",
        fresh(binance=600_000, okx=601_000),
        600_250,  # (3 x 600,000 + 601,000) / 4
        IndexMethod.WEIGHTED,
        IndexConfig({"binance": 3, "okx": 1}, 10 * S),
    ),
    IndexCase(
        "weights in ppm: 50 % / 30 % / 20 %",
        fresh(binance=600_000, okx=600_100, bybit=600_200),
        600_070,  # 0.5 x 600,000 + 0.3 x 600,100 + 0.2 x 600,200
        IndexMethod.WEIGHTED,
        IndexConfig({"binance": 500_000, "okx": 300_000, "bybit": 200_000}, 10 * S),
    ),
    IndexCase(
        "an outlier's weight does not count even when it is the heaviest",
        fresh(binance=700_000, okx=600_000, bybit=600_010),
        600_005,
        IndexMethod.WEIGHTED,
        IndexConfig({"binance": 100, "okx": 1, "bybit": 1}, 10 * S),
        outliers=("binance",),
    ),
    IndexCase(
        "a source that is not configured is ignored",
        fresh(binance=600_000, unknown=1_000),
        600_000,
        IndexMethod.WEIGHTED,
    ),
    IndexCase(
        "half a tick rounds to even (down)",
        fresh(binance=600_000, okx=600_001),
        600_000,
        IndexMethod.WEIGHTED,
    ),
    IndexCase(
        "half a tick rounds to even (up)",
        fresh(binance=600_001, okx=600_002),
        600_002,
        IndexMethod.WEIGHTED,
    ),
    IndexCase(
        "two sources 20 % apart both deviate from their mean: the median (the mean)",
        fresh(binance=500_000, okx=600_001),
        550_000,  # 550,000.5 rounds half to even
        IndexMethod.MEDIAN,
        outliers=("binance", "okx"),
    ),
    IndexCase(
        "even count: median = mean of the middle two, outlier measured from it",
        fresh(binance=600_000, coinbase=600_100, kraken=600_200, okx=700_000),
        600_100,  # median 600,150; okx +16.6 % is dropped; mean of the other three
        IndexMethod.WEIGHTED,
        outliers=("okx",),
    ),
]


@pytest.mark.parametrize("case", INDEX_CASES, ids=lambda c: c.name)
def test_index(case: IndexCase) -> None:
    assert compute_index(case.quotes, NOW, case.config) == case.index_ticks
    detail = compute_index_detail(case.quotes, NOW, case.config)
    if case.index_ticks is None:
        assert detail is None
        return
    assert detail is not None
    assert detail.method is case.method
    assert detail.outliers == case.outliers


def test_index_reports_stale_sources() -> None:
    quotes = {**fresh(binance=600_000), "okx": (600_000, NOW - 11 * S)}
    detail = compute_index_detail(quotes, NOW, EQUAL)
    assert detail is not None
    assert detail.used == ("binance",)
    assert detail.stale == ("bybit", "coinbase", "kraken", "okx")


@pytest.mark.parametrize(
    "config_args",
    [({},), ({"a": 0},), ({"a": -1},), ({"a": 1}, 10, 0), ({"a": 1}, -1)],
    ids=["no sources", "zero weight", "negative weight", "zero deviation", "negative stale"],
)
def test_index_config_rejects(config_args: tuple[object, ...]) -> None:
    with pytest.raises(ValueError):
        IndexConfig(*config_args)  # type: ignore[arg-type]


def test_index_rejects_non_positive_price() -> None:
    with pytest.raises(ValueError):
        compute_index(fresh(binance=0), NOW, EQUAL)


@pytest.mark.parametrize(
    ("numerator", "denominator", "expected"),
    [
        (5, 2, 2),
        (7, 2, 4),
        (-5, 2, -2),
        (-7, 2, -4),
        (10, 4, 2),
        (11, 4, 3),
        (9, 4, 2),
        (5, -2, -2),
        (1, 3, 0),
        (2, 3, 1),
    ],
)
def test_div_half_even(numerator: int, denominator: int, expected: int) -> None:
    assert div_half_even(numerator, denominator) == expected


# -- mark: the three modes and the Binance median ------------------------------------------

INTERVAL = 8 * 3600 * S


@dataclass(frozen=True)
class MarkCase:
    name: str
    mode: MarkMode
    index: int | None
    last: int | None
    mark: int | None
    basis_sum_half: int = 0
    basis_count: int = 0
    rate_e8: int = 0
    to_funding_ns: int = 0


MARK_CASES = [
    MarkCase("index mode: mark = index", MarkMode.INDEX, 600_000, 650_000, 600_000),
    MarkCase("last mode: mark = last price", MarkMode.LAST, 600_000, 570_000, 570_000),
    MarkCase("last mode before any trade: the index", MarkMode.LAST, 600_000, None, 600_000),
    MarkCase("no index: no mark", MarkMode.BINANCE, None, 600_000, None),
    MarkCase(
        # Price 1 = 600,000 x (1 + 0.0001 x 4h/8h) = 600,030; Price 2 = 600,000 + 20 = 600,020
        "median picks Price 1 between Price 2 and the last price",
        MarkMode.BINANCE,
        600_000,
        600_100,
        600_030,
        basis_sum_half=60 * 40,
        basis_count=60,
        rate_e8=10_000,
        to_funding_ns=INTERVAL // 2,
    ),
    MarkCase(
        "median picks Price 2 (the basis average) between Price 1 and the last price",
        MarkMode.BINANCE,
        600_000,
        600_100,
        600_020,
        basis_sum_half=60 * 40,
        basis_count=60,
        rate_e8=0,
    ),
    MarkCase(
        "median picks the last price when it lies between the other two",
        MarkMode.BINANCE,
        600_000,
        600_010,
        600_010,
        basis_sum_half=60 * 40,
        basis_count=60,
        rate_e8=0,
    ),
    MarkCase(
        "no basis samples: Price 2 = index",
        MarkMode.BINANCE,
        600_000,
        610_000,
        600_000,
    ),
    MarkCase(
        "before the first trade the last price is the index",
        MarkMode.BINANCE,
        600_000,
        None,
        600_000,
        basis_sum_half=600,
        basis_count=1,
    ),
    MarkCase(
        # Price 2 = 600,000 + 1/4 tick (half ticks 1 over 2 samples); Price 1 = 600,000.
        "the exact median rounds once, half to even",
        MarkMode.BINANCE,
        600_000,
        600_001,
        600_000,
        basis_sum_half=1,
        basis_count=2,
    ),
    MarkCase(
        # A negative funding rate pulls Price 1 below the index; 8h to go counts fully.
        "negative funding, a full interval to go",
        MarkMode.BINANCE,
        600_000,
        590_000,
        599_400,
        basis_sum_half=0,
        basis_count=10,
        rate_e8=-100_000,
        to_funding_ns=INTERVAL,
    ),
    MarkCase(
        "time to funding beyond the interval is clamped to the interval",
        MarkMode.BINANCE,
        600_000,
        590_000,
        599_400,
        basis_sum_half=0,
        basis_count=10,
        rate_e8=-100_000,
        to_funding_ns=3 * INTERVAL,
    ),
]


@pytest.mark.parametrize("case", MARK_CASES, ids=lambda c: c.name)
def test_mark(case: MarkCase) -> None:
    mark = compute_mark(
        case.mode,
        index_ticks=case.index,
        last_price_ticks=case.last,
        basis_sum_half_ticks=case.basis_sum_half,
        basis_count=case.basis_count,
        funding_rate_e8=case.rate_e8,
        time_to_funding_ns=case.to_funding_ns,
        funding_interval_ns=INTERVAL,
    )
    assert mark == case.mark


def test_mark_never_below_one_tick() -> None:
    assert (
        compute_mark(
            MarkMode.BINANCE,
            index_ticks=1,
            last_price_ticks=1,
            funding_rate_e8=-99_000_000,
            time_to_funding_ns=INTERVAL,
            basis_sum_half_ticks=-1,
            basis_count=1,
        )
        == 1
    )


# -- MarkState: sampling on the virtual clock ----------------------------------------------


def test_samples_are_taken_on_the_5_second_grid() -> None:
    state = MarkState()
    state.on_sample(0, 599_990, 600_010, 600_000)  # first call: one sample
    state.on_sample(1 * S, 599_990, 600_030, 600_000)  # same grid point: nothing
    state.on_sample(4 * S + 999_999_999, 599_990, 600_030, 600_000)
    assert state.basis(5 * S - 1) == (0, 1)
    state.on_sample(5 * S, 599_990, 600_030, 600_000)  # point 1: basis +10 ticks = 20 halves
    assert state.basis(5 * S) == (20, 2)
    # The clock jumps to 60 s: points 2..12 all held the values passed now.
    state.on_sample(60 * S, 600_000, 600_010, 600_000)
    assert state.basis(60 * S) == (20 + 11 * 10, 13)


def test_one_sided_book_records_no_sample() -> None:
    state = MarkState()
    state.on_sample(0, 599_990, 600_010, 600_000)
    state.on_sample(5 * S, None, 600_010, 600_000)  # no bid
    state.on_sample(10 * S, 599_990, None, 600_000)  # no ask
    state.on_sample(15 * S, 599_990, 600_010, None)  # no index yet
    assert state.basis(15 * S) == (0, 1)


def test_the_window_is_five_minutes_of_grid_points() -> None:
    state = MarkState()
    state.on_sample(0, 600_000, 600_020, 600_000)  # basis +10 ticks
    state.on_sample(295 * S, 600_000, 600_020, 600_000)  # points 1..59: the window is full
    assert state.basis(295 * S) == (60 * 20, 60)
    state.on_sample(300 * S, None, None, 600_000)  # point 60: one-sided, point 0 ages out
    assert state.basis(300 * S) == (59 * 20, 59)
    # Six minutes of a one-sided book: every sample has aged out and Price 2 is the index.
    state.on_sample(660 * S, None, None, 600_000)
    assert state.basis(660 * S) == (0, 0)
    assert state.mark(660 * S, 600_000, 590_000) == 600_000


def test_memory_is_bounded_by_the_window() -> None:
    state = MarkState(MarkConfig(window_samples=60))
    state.on_sample(0, 599_990, 600_010, 600_000)
    state.on_sample(10**6 * S, 599_990, 600_010, 600_000)  # 200,000 grid points later
    assert len(state.record()[1]) == 60
    assert state.basis(10**6 * S) == (0, 60)


def test_clock_cannot_go_backwards() -> None:
    state = MarkState()
    state.on_sample(10 * S, 599_990, 600_010, 600_000)
    with pytest.raises(ValueError):
        state.on_sample(4 * S, 599_990, 600_010, 600_000)


def test_record_round_trip_gives_the_same_marks() -> None:
    state = MarkState()
    for t in range(0, 400, 5):
        state.on_sample(t * S, 600_000 + t, 600_050 + t, 600_000)
    copy = MarkState.from_record(state.record())
    assert copy.record() == state.record()
    for later in (400, 500, 1000):
        assert copy.mark(later * S, 600_000, 601_000) == state.mark(later * S, 600_000, 601_000)


def test_whale_sweep_leaves_the_binance_mark_at_the_index() -> None:
    """A whale sweeps the bids 5 % down while the index holds (issue 3, DESIGN.md §5).

    A 1 BTC 20x long from 60,000 (isolated margin 3,000) liquidates at
    (3,000 + 50 − 60,000) / (0.005 − 1) = 57,236.18 (MECHANICS.md §1.4, bracket 2): a last
    price of 57,000 is below it. The Binance mark is the median of two index-anchored
    prices and the last price, so one swept print cannot move it; the debug "last" mode can.
    """
    index = 600_000
    binance = MarkState(MarkConfig(MarkMode.BINANCE))
    last = MarkState(MarkConfig(MarkMode.LAST))
    for t in range(0, 300, 5):  # five quiet minutes: a one-tick spread around the index
        for state in (binance, last):
            state.on_sample(t * S, 599_995, 600_005, index)
    # The sweep at 300 s: bids gone down to 57,000, the last trade printed there.
    swept_last = 570_000
    for state in (binance, last):
        state.on_sample(300 * S, swept_last, 600_005, index)
    funding = {"funding_rate_e8": 10_000, "next_funding_ns": 8 * 3600 * S}
    mark = binance.mark(300 * S, index, swept_last, **funding)
    assert mark is not None
    assert abs(mark - index) * 1000 <= index  # within 0.1 % of the index
    assert mark > 572_362  # above the 20x long's liquidation price
    assert last.mark(300 * S, index, swept_last, **funding) == swept_last
