"""Funding's rulebook: premium from the real book, the rate, its settlement, and real history.

Market: the default BTCUSDT perpetual (tick 0.1, step 0.001, 100 atoms per tick-lot, 125x max
leverage → impact notional 200 × 125 = 25,000 USDT), so 600_000 ticks = 60,000.0 USDT and
1_000 lots = 1 BTC. Rates in 1e-8: 10_000 = 0.01 %. Sources: MECHANICS.md §1.7 (Binance),
§2.1 (BitMEX), §4 (Hyperliquid hourly split), §5.4 (dYdX).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from itertools import pairwise
from pathlib import Path
from typing import Final

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from perpex.core.book import BUY, SELL, OrderBook, RestingOrder
from perpex.core.funding import (
    MAX_IMPACT_LEVELS,
    MAX_SETTLEMENTS_PER_ADVANCE,
    NS_PER_HOUR,
    FundingConfig,
    FundingRateMissing,
    FundingSchedule,
    FundingSettlement,
    FundingState,
    ImpactShortfall,
    PremiumWeighting,
    format_utc,
    funding_payments,
    funding_payments_scalar,
    funding_rate_e8,
    impact_notional_atoms,
    impact_prices,
    premium_e8,
    sample_premium_e8,
)
from perpex.core.markets import Bracket, Market, compile_market
from perpex.core.oracle import FUNDING_RATE_SCALE, NS_PER_SECOND
from perpex.defaults import default_markets
from perpex.history import (
    FUNDING_CSV,
    HistoryError,
    MarkSeries,
    e8_to_ticks,
    load_funding_history,
    load_funding_schedule,
    load_mark_series_1h,
    parse_funding_csv,
    parse_utc_ns,
)
from reference_book import ReferenceBook

BTC = next(compile_market(m) for m in default_markets() if m.symbol == "BTCUSDT")
K: Final = BTC.atoms_per_tick_lot  # 100 atoms per tick-lot
IMPACT_ATOMS: Final = 25_000 * 10**6  # 200 USDT x 125
S: Final = NS_PER_SECOND
H: Final = NS_PER_HOUR
DAY: Final = 24 * H
PCT: Final = FUNDING_RATE_SCALE // 100  # 1 % in 1e-8
INDEX_60K: Final = 600_000  # 60,000.0 USDT
ONE_BTC: Final = 1_000  # lots
DATA_DIR: Final = Path(__file__).resolve().parents[2] / "shared" / "data"
MARK_FEATHER: Final = DATA_DIR / "binance_usdm_BTCUSDT_1h_mark_2019-12_2026-05.feather"

Book = OrderBook | ReferenceBook


def bps(hundredths_of_a_percent: int) -> int:
    """0.01 % steps: bps(1) = 0.01 % = 10_000 in 1e-8."""
    return hundredths_of_a_percent * 10_000


def make_book(
    bids: Sequence[tuple[int, int]] = (),
    asks: Sequence[tuple[int, int]] = (),
    kind: type = OrderBook,
) -> Book:
    book: Book = kind()
    order_id = 0
    for side, levels in ((BUY, bids), (SELL, asks)):
        for price_ticks, lots in levels:
            order_id += 1
            book.add(RestingOrder(order_id, "mm", side, price_ticks, lots))
    return book


def btc_state(
    config: FundingConfig | None = None,
    start_ns: int = 0,
    schedule: FundingSchedule | None = None,
) -> FundingState:
    return FundingState.for_market(BTC, start_ns, config, schedule)


# == config ==================================================================================


def test_defaults_follow_binance_btcusdt() -> None:
    config = FundingConfig()
    assert config.interval_ns == 8 * H
    assert config.sample_interval_ns == 5 * S
    assert config.interest_e8 == bps(1)  # 0.01 % per 8 h (MECHANICS.md §1.7)
    assert config.clamp_e8 == bps(5)  # ±0.05 %
    assert (config.floor_e8, config.cap_e8) == (-300_000, 300_000)  # ±0.3 % = 0.75 x 0.4 % MMR
    assert config.weighting is PremiumWeighting.LINEAR
    assert config.shortfall is ImpactShortfall.SKIP
    assert (config.period_ns, config.rate_divisor) == (8 * H, 1)
    # 200 USDT of margin at 125x: 25,000 USDT of notional (MECHANICS.md §1.7).
    assert impact_notional_atoms(config, BTC) == IMPACT_ATOMS


@pytest.mark.parametrize(
    ("interval_h", "interest_e8"),
    [
        (1, 1_250),
        (2, 2_500),
        (3, 3_750),
        (4, 5_000),
        (6, 7_500),
        (8, 10_000),
        (12, 15_000),
        (24, 30_000),
    ],
)
def test_interest_is_0_03_percent_a_day_pro_rata(interval_h: int, interest_e8: int) -> None:
    assert FundingConfig(interval_ns=interval_h * H).interest_e8 == interest_e8


def test_explicit_interest_wins_bnb_has_none() -> None:
    assert FundingConfig(interest_rate_e8=0).interest_e8 == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval_ns": 7 * H}, "must divide 24 h"),
        ({"interval_ns": 0}, "must divide 24 h"),
        ({"interval_ns": 48 * H}, "must divide 24 h"),
        ({"interval_ns": True}, "must be an int"),
        ({"sample_interval_ns": 7 * S}, "divide the settlement period"),
        ({"sample_interval_ns": 0}, "divide the settlement period"),
        ({"interval_ns": DAY, "sample_interval_ns": S // 2}, "samples per interval"),
        ({"interval_ns": 15 * 60 * S}, "give interest_rate_e8 explicitly"),
        ({"interest_rate_e8": FUNDING_RATE_SCALE + 1}, "interest_rate_e8"),
        ({"clamp_e8": -1}, "clamp_e8"),
        ({"cap_e8": -1}, "floor_e8 <= 0 <= cap_e8"),
        ({"floor_e8": 1}, "floor_e8 <= 0 <= cap_e8"),
        ({"cap_e8": FUNDING_RATE_SCALE + 1}, "floor_e8 <= 0 <= cap_e8"),
        ({"impact_margin_atoms": 0}, "impact_margin_atoms"),
        ({"weighting": "linear"}, "PremiumWeighting"),
        ({"shortfall": "skip"}, "ImpactShortfall"),
        ({"hourly_split": 1}, "hourly_split must be a bool"),
        ({"hourly_split": True, "interval_ns": 30 * 60 * S, "interest_rate_e8": 1}, "hours"),
    ],
    ids=lambda v: str(v),
)
def test_bad_config_is_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FundingConfig(**kwargs)  # type: ignore[arg-type]


def test_config_round_trips_through_msgpack_and_is_validated_on_decode() -> None:
    config = FundingConfig(interval_ns=4 * H, hourly_split=True, weighting=PremiumWeighting.EQUAL)
    blob = msgspec.msgpack.encode(config)
    assert msgspec.msgpack.decode(blob, type=FundingConfig) == config
    bad = msgspec.msgpack.encode([7 * H])
    with pytest.raises(ValueError, match="must divide 24 h"):
        msgspec.msgpack.decode(bad, type=FundingConfig)


# == the rate ================================================================================


DEFAULT_CONFIG: Final = FundingConfig()


@dataclass(frozen=True)
class RateCase:
    name: str
    premium_e8: int
    rate_e8: int
    config: FundingConfig = DEFAULT_CONFIG


RATE_CASES = [
    RateCase("§1.7: P̄ 0.03 % → I − P̄ = −0.02 % inside ±0.05 % → F = I = 0.01 %", bps(3), bps(1)),
    RateCase("§1.7: P̄ 0.10 % → clamp(−0.09 %) = −0.05 % → F = 0.05 %", bps(10), bps(5)),
    RateCase("§1.7: P̄ −0.10 % → clamp(0.11 %) = 0.05 % → F = −0.05 %", -bps(10), -bps(5)),
    RateCase("no premium: F = I", 0, bps(1)),
    RateCase("I − P̄ exactly −0.05 % is inside the clamp", bps(6), bps(1)),
    RateCase("one 1e-8 beyond the clamp", bps(6) + 1, bps(1) + 1),
    RateCase(
        "§2.1 BitMEX: P = −0.184 %, I = 0.01 % → F = −0.184 % + 0.05 % = −0.134 %",
        -184_000,
        -134_000,
    ),
    RateCase("P̄ 1 % → 0.95 %, capped at 0.3 % (0.75 x 0.4 % MMR)", PCT, 300_000),
    RateCase("P̄ −1 % → floored at −0.3 %", -PCT, -300_000),
    RateCase(
        "Hyperliquid cap 4 %/h as an 8 h rate: 32 %",
        50 * PCT,
        32 * PCT,
        FundingConfig(cap_e8=32 * PCT, floor_e8=-32 * PCT, hourly_split=True),
    ),
    RateCase("BNB: no interest, P̄ 0.02 % → F = 0", bps(2), 0, FundingConfig(interest_rate_e8=0)),
]


@pytest.mark.parametrize("case", RATE_CASES, ids=lambda c: c.name)
def test_funding_rate(case: RateCase) -> None:
    assert funding_rate_e8(case.premium_e8, case.config) == case.rate_e8


# == impact prices and the premium =========================================================


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["fast", "reference"])
def kind(request: pytest.FixtureRequest) -> type:
    made: type = request.param
    return made


def as_fraction(ratio: tuple[int, int] | None) -> Fraction | None:
    return None if ratio is None else Fraction(*ratio)


def naive_impact(levels: Sequence[tuple[int, int]], target_atoms: int) -> Fraction | None:
    """The average fill price of `target_atoms` of notional, base quantity kept as a Fraction."""
    left = Fraction(target_atoms)
    base_lots = Fraction(0)
    for price_ticks, lots in levels:
        take_atoms = min(left, Fraction(price_ticks * lots * K))
        base_lots += take_atoms / (price_ticks * K)
        left -= take_atoms
        if left == 0:
            return Fraction(target_atoms) / (K * base_lots)
    return None


def test_impact_price_of_one_deep_level_is_that_level(kind: type) -> None:
    book = make_book(bids=[(INDEX_60K, ONE_BTC)], asks=[(600_001, ONE_BTC)], kind=kind)
    bid, ask = impact_prices(book, IMPACT_ATOMS, K)
    assert (bid, ask) == ((600_000, 1), (600_001, 1))


def test_impact_price_walks_levels_and_takes_the_last_one_by_notional(kind: type) -> None:
    # 0.2 BTC at 60,001.0 (12,000.2 USDT) then 1 BTC at 60,010.0: the remaining 12,999.8 USDT
    # buy 12,999.8 / 60,010 BTC there. Average = 25,000 USDT / total BTC.
    book = make_book(
        bids=[(599_990, ONE_BTC)], asks=[(600_010, 200), (600_100, ONE_BTC)], kind=kind
    )
    _, ask = impact_prices(book, IMPACT_ATOMS, K)
    average_usdt = Fraction(25_000) / (Fraction("0.2") + Fraction("12999.8") / 60_010)
    assert as_fraction(ask) == average_usdt * 10  # in ticks of 0.1
    assert 60_005 < average_usdt < 60_006


def test_a_side_too_thin_for_the_impact_notional(kind: type) -> None:
    # 0.1 BTC of bids = 6,000 USDT < 25,000 USDT.
    book = make_book(bids=[(INDEX_60K, 100)], asks=[(600_010, ONE_BTC)], kind=kind)
    assert impact_prices(book, IMPACT_ATOMS, K)[0] is None
    assert impact_prices(book, IMPACT_ATOMS, K, allow_partial=True)[0] == (INDEX_60K, 1)
    assert sample_premium_e8(book, INDEX_60K, IMPACT_ATOMS, K) is None  # SKIP
    assert sample_premium_e8(book, INDEX_60K, IMPACT_ATOMS, K, ImpactShortfall.PARTIAL) == 0


def test_an_empty_side_skips_even_with_partial(kind: type) -> None:
    book = make_book(asks=[(600_010, ONE_BTC)], kind=kind)
    assert impact_prices(book, IMPACT_ATOMS, K, allow_partial=True) == (None, (600_010, 1))
    assert sample_premium_e8(book, INDEX_60K, IMPACT_ATOMS, K, ImpactShortfall.PARTIAL) is None
    assert sample_premium_e8(make_book(kind=kind), INDEX_60K, IMPACT_ATOMS, K) is None


def test_no_index_or_no_book_skips() -> None:
    book = make_book(bids=[(INDEX_60K, ONE_BTC)], asks=[(600_010, ONE_BTC)])
    assert sample_premium_e8(book, None, IMPACT_ATOMS, K) is None
    assert sample_premium_e8(None, INDEX_60K, IMPACT_ATOMS, K) is None


def test_impact_walk_goes_past_the_first_depth_page(kind: type) -> None:
    # 300 levels of 1 lot (60 USDT each) on each side: 25,000 USDT needs ~417 of them, more
    # than are resting, so SKIP; a 12,000 USDT notional needs 200 levels, past the first page.
    bids = [(INDEX_60K - i, 1) for i in range(300)]
    asks = [(INDEX_60K + 1 + i, 1) for i in range(300)]
    book = make_book(bids=bids, asks=asks, kind=kind)
    assert impact_prices(book, IMPACT_ATOMS, K) == (None, None)
    target = 12_000 * 10**6
    bid, ask = impact_prices(book, target, K)
    assert as_fraction(bid) == naive_impact(bids, target)
    assert as_fraction(ask) == naive_impact(asks, target)


def test_impact_walk_is_bounded() -> None:
    asks = [(INDEX_60K + 1 + i, 1) for i in range(MAX_IMPACT_LEVELS + 5)]
    book = make_book(bids=[(INDEX_60K, ONE_BTC * 100)], asks=asks)
    # The notional of MAX_IMPACT_LEVELS + 1 levels cannot be reached within the bound.
    target = sum(p * q * K for p, q in asks[: MAX_IMPACT_LEVELS + 1])
    assert impact_prices(book, target, K)[1] is None
    target_inside = sum(p * q * K for p, q in asks[:MAX_IMPACT_LEVELS])
    assert as_fraction(impact_prices(book, target_inside, K)[1]) == naive_impact(
        asks, target_inside
    )


@settings(max_examples=200, deadline=None)
@given(
    levels=st.lists(
        st.tuples(st.integers(1, 50), st.integers(1, 3_000)),
        min_size=0,
        max_size=80,
        unique_by=lambda t: t[0],
    ),
    target_usdt=st.integers(1, 2_000_000),
)
def test_impact_prices_match_a_naive_fractional_walk(
    levels: list[tuple[int, int]], target_usdt: int
) -> None:
    asks = sorted((INDEX_60K + 10 * d, q) for d, q in levels)
    bids = sorted(((INDEX_60K - 10 * d, q) for d, q in levels), reverse=True)
    target = target_usdt * 10**6
    for kind in (OrderBook, ReferenceBook):
        bid, ask = impact_prices(make_book(bids, asks, kind), target, K)
        assert as_fraction(bid) == naive_impact(bids, target)
        assert as_fraction(ask) == naive_impact(asks, target)


@dataclass(frozen=True)
class PremiumCase:
    name: str
    bid: tuple[int, int]
    ask: tuple[int, int]
    index_ticks: int
    premium_e8: int


PREMIUM_CASES = [
    PremiumCase(
        "impact bid 60,030 over index 60,000: +0.05 %",
        (600_300, 1),
        (600_400, 1),
        INDEX_60K,
        bps(5),
    ),
    PremiumCase(
        "impact ask 59,940 under index 60,000: −0.1 %",
        (599_300, 1),
        (599_400, 1),
        INDEX_60K,
        -bps(10),
    ),
    PremiumCase("index inside the impact spread: 0", (599_990, 1), (600_010, 1), INDEX_60K, 0),
    PremiumCase("a third, truncated: +33,333,333", (4, 1), (5, 1), 3, 33_333_333),
    PremiumCase("minus a third, truncated toward zero", (1, 1), (2, 1), 3, -33_333_333),
    PremiumCase(
        "rational impact price 600,000.5 ticks", (1_200_001, 2), (1_200_003, 2), INDEX_60K, 83
    ),
]


@pytest.mark.parametrize("case", PREMIUM_CASES, ids=lambda c: c.name)
def test_premium(case: PremiumCase) -> None:
    assert premium_e8(case.bid, case.ask, case.index_ticks) == case.premium_e8


def test_a_sample_is_clamped_to_100_percent() -> None:
    book = make_book(bids=[(3 * INDEX_60K, ONE_BTC)], asks=[(3 * INDEX_60K + 1, ONE_BTC)])
    assert sample_premium_e8(book, INDEX_60K, IMPACT_ATOMS, K) == FUNDING_RATE_SCALE


# == the state: sampling, averaging, settling ==============================================


def premium_book(premium_ticks: int) -> OrderBook:
    """A deep book whose impact bid (premium > 0) or impact ask (< 0) sits off the index."""
    if premium_ticks >= 0:
        return make_book(
            bids=[(INDEX_60K + premium_ticks, ONE_BTC)],
            asks=[(INDEX_60K + premium_ticks + 1, ONE_BTC)],
        )  # type: ignore[return-value]
    return make_book(
        bids=[(INDEX_60K + premium_ticks - 1, ONE_BTC)], asks=[(INDEX_60K + premium_ticks, ONE_BTC)]
    )  # type: ignore[return-value]


def test_funding_times_are_aligned_to_utc() -> None:
    five_am = parse_utc_ns("2021-01-01T05:00:00Z")
    assert btc_state(start_ns=five_am).next_funding_ns == parse_utc_ns("2021-01-01T08:00:00Z")
    four_h = FundingConfig(interval_ns=4 * H)
    assert btc_state(four_h, five_am).next_funding_ns == parse_utc_ns("2021-01-01T08:00:00Z")
    one_h = FundingConfig(interval_ns=H)
    assert btc_state(one_h, five_am).next_funding_ns == parse_utc_ns("2021-01-01T06:00:00Z")
    hourly = FundingConfig(hourly_split=True)
    assert btc_state(hourly, five_am).next_funding_ns == parse_utc_ns("2021-01-01T06:00:00Z")
    sixteen = parse_utc_ns("2021-01-01T16:00:00Z")
    # Starting on a funding time: nobody held a position, the next one is 8 h later.
    assert btc_state(start_ns=sixteen).next_funding_ns == parse_utc_ns("2021-01-02T00:00:00Z")


def test_a_full_interval_of_0_1_percent_premium_settles_0_05_percent() -> None:
    state = btc_state()
    book = premium_book(600)  # impact bid 60,060.0: 60 USDT over 60,000 = 0.1 %
    assert sample_premium_e8(book, INDEX_60K, IMPACT_ATOMS, K) == bps(10)
    assert state.advance(8 * H - 1, book, INDEX_60K) == []
    settlements = state.advance(8 * H, book, INDEX_60K)
    assert settlements == [FundingSettlement(8 * H, bps(5), 1, bps(10), 5_760)]
    assert state.last_rate_e8 == bps(5)
    assert state.last_settlement_ns == 8 * H
    assert state.next_funding_ns == 16 * H
    assert state.sample_count == 0


def test_the_point_at_the_funding_time_belongs_to_the_closing_period() -> None:
    state = btc_state()
    state.advance(8 * H, premium_book(600), INDEX_60K)
    state.advance(8 * H + 5 * S, premium_book(-600), INDEX_60K)
    assert state.sample_count == 1
    assert state.average_premium_e8() == -bps(10)


def test_values_hold_over_a_gap_and_the_book_is_walked_once() -> None:
    calls = 0

    class CountingBook:
        def __init__(self) -> None:
            self.book = premium_book(600)

        def depth(self, levels: int = 20) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
            nonlocal calls
            calls += 1
            return self.book.depth(levels)

    state = btc_state()
    settlements = state.advance(24 * H + 30 * S, CountingBook(), INDEX_60K)
    assert [s.time_ns for s in settlements] == [8 * H, 16 * H, 24 * H]
    assert [s.samples for s in settlements] == [5_760, 5_760, 5_760]
    assert state.sample_count == 6
    assert calls == 1


def test_linear_weights_make_later_samples_count_more() -> None:
    # First half of the interval at 0, second half at 0.08 %. Equal weights: 0.04 %.
    # Binance's 1..n weights: Σ_{i=2881}^{5760} i / Σ_{i=1}^{5760} i of 0.08 %.
    results = {}
    for weighting in PremiumWeighting:
        state = btc_state(FundingConfig(weighting=weighting))
        state.on_premium(4 * H, 0)
        state.on_premium(8 * H, bps(8))
        results[weighting] = state.average_premium_e8()
    assert results[PremiumWeighting.EQUAL] == bps(4)
    later = sum(range(2_881, 5_761))
    total = sum(range(1, 5_761))
    assert results[PremiumWeighting.LINEAR] == int(Fraction(bps(8) * later, total))
    assert results[PremiumWeighting.LINEAR] > bps(4)


def test_skipped_points_count_in_neither_sum() -> None:
    state = btc_state()
    state.on_premium(4 * H, None)  # e.g. an empty book side for four hours
    state.on_premium(8 * H, bps(8))
    assert state.sample_count == 2_880
    assert state.average_premium_e8() == bps(8)


def test_no_sample_at_all_settles_the_interest_rate() -> None:
    state = btc_state()
    [settlement] = state.advance(8 * H, make_book(), INDEX_60K)
    assert (settlement.rate_e8, settlement.premium_e8, settlement.samples) == (bps(1), 0, 0)


def test_predicted_rate_is_the_rate_if_the_period_ended_now() -> None:
    state = btc_state()
    assert state.predicted_rate_e8() == bps(1)
    state.advance(2 * H, premium_book(600), INDEX_60K)
    assert state.predicted_rate_e8() == bps(5)
    [settlement] = state.advance(8 * H, premium_book(600), INDEX_60K)
    assert settlement.rate_e8 == bps(5)


def test_a_period_started_late_averages_the_samples_it_has() -> None:
    state = btc_state(start_ns=6 * H)
    [settlement] = state.advance(8 * H, premium_book(600), INDEX_60K)
    assert settlement.samples == 2 * 3_600 // 5
    assert settlement.premium_e8 == bps(10)


def test_due_settlements_and_the_lower_level_protocol() -> None:
    state = btc_state()
    assert state.due_settlements(8 * H - 1) == ()
    assert state.due_settlements(25 * H) == (8 * H, 16 * H, 24 * H)
    state.on_sample(25 * H, premium_book(600), INDEX_60K)  # stops at the funding time
    assert state.sample_count == 5_760
    with pytest.raises(ValueError, match="next funding time"):
        state.settle_rate(16 * H)
    first = state.settle_rate(8 * H)
    assert first.rate_e8 == bps(5)
    state.on_sample(25 * H, premium_book(0), INDEX_60K)
    assert state.sample_count == 5_760
    assert state.settle_rate(16 * H).rate_e8 == bps(1)


def test_points_never_sampled_before_a_settlement_are_lost_not_moved() -> None:
    state = btc_state()
    state.on_premium(4 * H, bps(8))
    state.settle_rate(8 * H)  # the caller skipped sampling 04:00-08:00
    state.on_premium(8 * H + 10 * S, bps(2))
    assert state.sample_count == 2


def test_the_clock_cannot_go_backwards() -> None:
    state = btc_state()
    state.advance(H, premium_book(0), INDEX_60K)
    with pytest.raises(ValueError, match="backwards"):
        state.advance(H - 5 * S, premium_book(0), INDEX_60K)


def test_a_jump_over_too_many_settlements_is_refused() -> None:
    state = btc_state(FundingConfig(hourly_split=True))
    with pytest.raises(ValueError, match="smaller steps"):
        state.advance((MAX_SETTLEMENTS_PER_ADVANCE + 1) * H, None, None)
    assert state.next_funding_ns == H  # nothing happened


def test_hourly_split_settles_every_hour_an_eighth_of_the_8h_rate() -> None:
    state = btc_state(FundingConfig(hourly_split=True))
    settlements = state.advance(3 * H, premium_book(600), INDEX_60K)
    assert settlements == [FundingSettlement(t * H, bps(5), 8, bps(10), 720) for t in (1, 2, 3)]
    # 1 BTC long at 60,000 pays 0.05 % / 8 of 60,000 = 3.75 USDT every hour.
    sizes = np.array([ONE_BTC, -ONE_BTC], dtype=np.int64)
    payments, dust = funding_payments(sizes, INDEX_60K, K, bps(5), 8)
    assert payments.tolist() == [3_750_000, -3_750_000]
    assert dust == 0


def test_hourly_split_does_not_round_the_eighth_on_its_own() -> None:
    # F = 1e-8 per 8 h, 800 USDT of notional: 800 x 1e-8 / 8 = 1e-6 USDT = exactly 1 atom.
    # Rounding F/8 to 1e-8 first would have charged 0.
    sizes = np.array([80, -80], dtype=np.int64)  # 0.08 BTC at 10,000.0 = 800 USDT
    payments, dust = funding_payments(sizes, 100_000, K, 1, 8)
    assert payments.tolist() == [1, -1]
    assert dust == 0


def test_for_market_and_constructor_validation() -> None:
    with pytest.raises(ValueError, match="impact_notional_atoms"):
        FundingState(FundingConfig(), impact_notional_atoms=0, atoms_per_tick_lot=K, start_ns=0)
    with pytest.raises(ValueError, match="start_ns"):
        FundingState(FundingConfig(), impact_notional_atoms=1, atoms_per_tick_lot=K, start_ns=-1)
    schedule = FundingSchedule([(8 * H, 1)])
    with pytest.raises(ValueError, match="hourly_split"):
        btc_state(FundingConfig(hourly_split=True), schedule=schedule)
    assert btc_state().impact_notional_atoms == IMPACT_ATOMS


# == the naive twin of FundingState ==========================================================


class NaiveFunding:
    """Every grid point one at a time, samples kept in a list: the readable specification."""

    def __init__(self, config: FundingConfig, start_ns: int) -> None:
        self.config = config
        self.period = config.period_ns
        self.sample = config.sample_interval_ns
        self.next = (start_ns // self.period + 1) * self.period
        self.last_point = start_ns // self.sample
        self.samples: list[tuple[int, int]] = []  # (weight, premium)

    def advance(self, now_ns: int, premium: int | None) -> list[FundingSettlement]:
        out = []
        for point in range(self.last_point + 1, now_ns // self.sample + 1):
            start_point = (self.next - self.period) // self.sample
            if premium is not None:
                linear = self.config.weighting is PremiumWeighting.LINEAR
                self.samples.append((point - start_point if linear else 1, premium))
            if point * self.sample == self.next:
                out.append(self.settle())
        self.last_point = now_ns // self.sample
        return out

    def settle(self) -> FundingSettlement:
        total = sum(w for w, _ in self.samples)
        avg = int(Fraction(sum(w * p for w, p in self.samples), total)) if total else 0
        c = self.config
        rate = max(
            c.floor_e8, min(c.cap_e8, avg + max(-c.clamp_e8, min(c.clamp_e8, c.interest_e8 - avg)))
        )
        settlement = FundingSettlement(self.next, rate, c.rate_divisor, avg, len(self.samples))
        self.samples = []
        self.next += self.period
        return settlement


SMALL_CONFIGS = [
    FundingConfig(interval_ns=H, sample_interval_ns=60 * S),
    FundingConfig(interval_ns=H, sample_interval_ns=60 * S, weighting=PremiumWeighting.EQUAL),
    FundingConfig(
        interval_ns=2 * H,
        sample_interval_ns=5 * 60 * S,
        clamp_e8=bps(2),
        cap_e8=bps(20),
        floor_e8=-bps(7),
    ),
    FundingConfig(sample_interval_ns=10 * 60 * S, hourly_split=True),
]

# A step of the clock: mostly whole seconds (up to 3 h, so periods end mid-test), sometimes
# any ns; the premium held over it, within ±0.5 % so the cap does not hide the average.
steps = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 3 * 3_600).map(lambda sec: sec * S), st.integers(0, 3 * H)),
        st.one_of(st.none(), st.integers(-PCT // 2, PCT // 2)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config_index=st.integers(0, len(SMALL_CONFIGS) - 1),
    start_ns=st.integers(0, 5 * H),
    steps=steps,
)
def test_state_matches_its_naive_twin(
    config_index: int, start_ns: int, steps: list[tuple[int, int | None]]
) -> None:
    config = SMALL_CONFIGS[config_index]
    fast = FundingState(
        config, impact_notional_atoms=IMPACT_ATOMS, atoms_per_tick_lot=K, start_ns=start_ns
    )
    naive = NaiveFunding(config, start_ns)
    now = start_ns
    for dt, premium in steps:
        now += dt
        got = []
        for t in fast.due_settlements(now):
            fast.on_premium(t, premium)
            got.append(fast.settle_rate(t))
        fast.on_premium(now, premium)
        assert got == naive.advance(now, premium)


@settings(max_examples=100, deadline=None)
@given(steps=steps, cut=st.integers(0, 40), split=st.integers(1, 5))
def test_snapshot_restore_and_step_size_do_not_change_anything(
    steps: list[tuple[int, int | None]], cut: int, split: int
) -> None:
    config = SMALL_CONFIGS[0]

    def fresh() -> FundingState:
        return FundingState(
            config, impact_notional_atoms=IMPACT_ATOMS, atoms_per_tick_lot=K, start_ns=0
        )

    def run(state: FundingState, t: int, premium: int | None) -> list[FundingSettlement]:
        out = []
        for due in state.due_settlements(t):
            state.on_premium(due, premium)
            out.append(state.settle_rate(due))
        state.on_premium(t, premium)
        return out

    a, b = fresh(), fresh()
    now = 0
    for i, (dt, premium) in enumerate(steps):
        if i == cut:
            blob = msgspec.msgpack.encode(b.record())
            b = FundingState.from_record(
                msgspec.msgpack.decode(blob),
                config,
                impact_notional_atoms=IMPACT_ATOMS,
                atoms_per_tick_lot=K,
            )
        out_a = run(a, now + dt, premium)
        # b takes the same step in `split` smaller steps with the same held values.
        out_b: list[FundingSettlement] = []
        for j in range(1, split + 1):
            out_b += run(b, now + dt * j // split, premium)
        now += dt
        assert out_a == out_b
        assert a.record() == b.record()


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ([8 * H, 0, 0, 0, 0, 0], "7 fields"),
        ([8 * H + 1, 0, 0, 0, 0, 0, None], "not a funding time"),
        ([8 * H, 8 * H // (5 * S) + 1, 0, 0, 0, 0, None], "outside the current period"),
        ([16 * H, 0, 0, 0, 0, 0, None], "outside the current period"),
        ([8 * H, 10, 0, 0, 1, 0, None], "count and weights"),
        ([8 * H, 10, FUNDING_RATE_SCALE * 2, 1, 1, 0, None], "out of range"),
        ([8 * H, 10, 0, 0, 0, FUNDING_RATE_SCALE + 1, None], "last rate"),
        ([8 * H, 10, 0, 0, 0, 0, "x"], "last settlement"),
        ([8 * H, 10.0, 0, 0, 0, 0, None], "not an int"),
    ],
)
def test_a_bad_record_is_refused(record: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FundingState.from_record(
            record, FundingConfig(), impact_notional_atoms=IMPACT_ATOMS, atoms_per_tick_lot=K
        )


# == settlement ==============================================================================


def test_one_btc_long_at_60000_with_0_05_percent_pays_30_usdt() -> None:
    # MECHANICS.md §1.7: "1 BTC long at mark 60,000 with F = 0.05% pays 30 USDT to shorts".
    sizes = np.array([ONE_BTC, -ONE_BTC], dtype=np.int64)
    payments, dust = funding_payments(sizes, INDEX_60K, K, bps(5))
    assert payments.tolist() == [30_000_000, -30_000_000]
    assert dust == 0
    # A negative rate: shorts pay longs.
    payments, _ = funding_payments(sizes, INDEX_60K, K, -bps(5))
    assert payments.tolist() == [-30_000_000, 30_000_000]
    assert funding_payments_scalar([ONE_BTC, -ONE_BTC], INDEX_60K, K, bps(5)) == (
        [30_000_000, -30_000_000],
        0,
    )


def test_freqtrade_ada_short_vector() -> None:
    # MECHANICS.md §1.7, FT test__fetch_and_calculate_funding_fees: ADA short 30 contracts,
    # rates −0.000008 (00:00) and −0.000003 (08:00) at mark 2.77 → −0.0006648 − 0.0002493 =
    # −0.0009141 USDT. Binance ADAUSDT: tick 0.0001, step 1 → 100 atoms per tick-lot.
    ada = compile_market(
        Market(
            symbol="ADAUSDT",
            tick_size="0.0001",
            step_size="1",
            brackets=[Bracket(floor="0", cap="10000", max_leverage=75, mmr="0.005", cum="0")],
            max_price="100",
            max_quantity="1000000",
            max_market_quantity="1000000",
        )
    )
    k = ada.atoms_per_tick_lot
    assert k == 100
    mark_ticks = 27_700
    sizes = [-30, 30]  # the short and its counterparty
    rates = [-800, -300]
    exact_atoms = sum(Fraction(-30 * mark_ticks * k * r, FUNDING_RATE_SCALE) for r in rates)
    assert -exact_atoms / 10**6 == Fraction(Decimal("-0.0009141"))  # the short's view
    paid = received = dust_total = 0
    for rate in rates:
        payments, dust = funding_payments(np.array(sizes, dtype=np.int64), mark_ticks, k, rate)
        assert (payments.tolist(), dust) == funding_payments_scalar(sizes, mark_ticks, k, rate)
        paid += int(payments[0])
        received -= int(payments[1])
        dust_total += dust
    # Toward the payer: 664.8 → 665 and 249.3 → 250 atoms paid; 664 + 249 received.
    assert (paid, received, dust_total) == (915, 913, 2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sizes": [1, 0]}, "net to 0"),
        ({"mark": 0}, "mark"),
        ({"k": 0}, "atoms_per_tick_lot"),
        ({"rate": FUNDING_RATE_SCALE + 1}, "within ±1e8"),
        ({"divisor": 0}, "rate_divisor"),
        ({"divisor": 25}, "rate_divisor"),
        ({"sizes": [2**60, -(2**60)], "mark": 2}, "bound"),
    ],
)
def test_bad_payment_inputs_are_refused_by_both_twins(
    kwargs: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"sizes": [1, -1], "mark": INDEX_60K, "k": K, "rate": 1, "divisor": 1}
    args.update(kwargs)
    sizes = args.pop("sizes")
    with pytest.raises(ValueError, match=message):
        funding_payments_scalar(sizes, *args.values())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        funding_payments(np.array(sizes, dtype=np.int64), *args.values())  # type: ignore[arg-type]


def test_the_int64_bound_holds_at_its_edge() -> None:
    sizes = [2**60, -(2**59), -(2**59)]
    for rate in (FUNDING_RATE_SCALE, -FUNDING_RATE_SCALE, 12_345_678):
        for divisor in (1, 7, 24):
            payments, dust = funding_payments(np.array(sizes, dtype=np.int64), 1, 1, rate, divisor)
            assert (payments.tolist(), dust) == funding_payments_scalar(sizes, 1, 1, rate, divisor)


@st.composite
def open_positions(draw: st.DrawFn) -> tuple[list[int], int, int]:
    mark = draw(st.integers(1, 10_000_000))
    k = draw(st.sampled_from([1, 10, 100, 1_000]))
    max_lots = (2**60) // (mark * k)
    longs = draw(st.lists(st.integers(1, min(max_lots, 10**9)), min_size=0, max_size=12))
    shorts: list[int] = []
    left = sum(longs)
    for _ in range(draw(st.integers(0, 6))):
        if not left:
            break
        take = draw(st.integers(1, min(left, max_lots)))
        shorts.append(-take)
        left -= take
    while left:  # the rest in positions as large as the bound allows
        take = min(left, max_lots)
        shorts.append(-take)
        left -= take
    sizes = draw(st.permutations(longs + shorts + [0] * draw(st.integers(0, 2))))
    return list(sizes), mark, k


@settings(max_examples=300, deadline=None)
@given(
    positions=open_positions(),
    rate=st.integers(-FUNDING_RATE_SCALE, FUNDING_RATE_SCALE),
    divisor=st.sampled_from([1, 2, 8, 24]),
)
def test_vector_payments_equal_the_scalar_twin_and_round_toward_the_payer(
    positions: tuple[list[int], int, int], rate: int, divisor: int
) -> None:
    sizes, mark, k = positions
    payments, dust = funding_payments(np.array(sizes, dtype=np.int64), mark, k, rate, divisor)
    scalar_payments, scalar_dust = funding_payments_scalar(sizes, mark, k, rate, divisor)
    assert payments.tolist() == scalar_payments
    assert dust == scalar_dust == sum(scalar_payments)
    assert 0 <= dust < max(len(sizes), 1)
    for size, payment in zip(sizes, scalar_payments, strict=True):
        exact = Fraction(size * mark * k * rate, FUNDING_RATE_SCALE * divisor)
        assert 0 <= payment - exact < 1  # a payer pays at most 1 atom more, a receiver gets less


# == history =================================================================================


def test_format_and_parse_utc() -> None:
    assert parse_utc_ns("1970-01-01T00:00:00Z") == 0
    assert parse_utc_ns("2021-01-01T08:00:00Z") == 1_609_488_000 * S
    assert parse_utc_ns("2021-01-01T08:00:00.5Z") == 1_609_488_000 * S + S // 2
    assert format_utc(1_609_488_000 * S) == "2021-01-01T08:00:00Z"
    assert format_utc(1_609_488_000 * S + 1) == "2021-01-01T08:00:00.000000001Z"
    for bad in (
        "2021-01-01 08:00:00Z",
        "2021-01-01T08:00:00",
        "2021-02-30T00:00:00Z",
        "2021-01-01T08:00:00+00:00",
    ):
        with pytest.raises(ValueError):
            parse_utc_ns(bad)


@settings(max_examples=300, deadline=None)
@given(time_ns=st.integers(-(10**18), 2**63 - 1))
def test_format_utc_agrees_with_datetime(time_ns: int) -> None:
    seconds, ns = divmod(time_ns, S)
    expected = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert format_utc(time_ns) == (f"{expected}.{ns:09d}Z" if ns else f"{expected}Z")


GOOD_CSV = (
    "funding_time,funding_rate\n2021-01-01T00:00:00Z,0.00010000\n2021-01-01T08:00:00Z,-0.00000210\n"
)


def test_parse_funding_csv() -> None:
    t0 = parse_utc_ns("2021-01-01T00:00:00Z")
    assert parse_funding_csv(GOOD_CSV) == ((t0, 10_000), (t0 + 8 * H, -210))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("time,rate\n2021-01-01T00:00:00Z,0.0001\n", "header"),
        ("funding_time,funding_rate\n", "no funding rates"),
        ("", "header"),
        ("funding_time,funding_rate\n2021-01-01T00:00:00Z,0.000000001\n", "line 2"),
        ("funding_time,funding_rate\n2021-01-01T00:00:00Z,nan\n", "line 2"),
        ("funding_time,funding_rate\n2021-01-01T00:00:00Z,\n", "line 2"),
        ("funding_time,funding_rate\n2021-01-01T00:00:00Z,1.5\n", "±100 %"),
        ("funding_time,funding_rate\n2021-01-01,0.0001\n", "line 2"),
        ("funding_time,funding_rate\n2021-01-01T00:00:00Z,0.0001,x\n", "2 fields"),
        (GOOD_CSV + "2021-01-01T08:00:00Z,0.0001\n", "line 4"),
        (GOOD_CSV + "2020-01-01T08:00:00Z,0.0001\n", "not after"),
    ],
)
def test_a_bad_funding_csv_is_refused(text: str, message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        parse_funding_csv(text)


def test_shipped_funding_history_is_binance_btcusdt_2019_2026() -> None:
    # ../shared/data/README.md §1: 7,323 rows, 2019-09-10 08:00 → 2026-05-17 00:00 UTC, every
    # 8 h, min −0.003 at 2020-03-13 08:00, max +0.003 at 2020-02-12 00:00.
    history = load_funding_history()
    assert len(history) == 7_323
    assert history[0] == (parse_utc_ns("2019-09-10T08:00:00Z"), 10_000)
    assert history[-1] == (parse_utc_ns("2026-05-17T00:00:00Z"), 4_037)
    assert all(b[0] - a[0] == 8 * H for a, b in pairwise(history))
    assert min(history, key=lambda r: r[1]) == (parse_utc_ns("2020-03-13T08:00:00Z"), -300_000)
    assert max(history, key=lambda r: r[1]) == (parse_utc_ns("2020-02-12T00:00:00Z"), 300_000)
    # Never outside the default cap: the 0.75 x MMR rule held for BTCUSDT all along.
    config = FundingConfig()
    assert all(config.floor_e8 <= r <= config.cap_e8 for _, r in history)


@pytest.mark.skipif(not DATA_DIR.is_dir(), reason="../shared/data is not here")
def test_shipped_funding_csv_is_the_shared_copy() -> None:
    shipped = Path(__file__).resolve().parents[1] / "src" / "perpex" / "data" / FUNDING_CSV
    assert shipped.read_bytes() == (DATA_DIR / FUNDING_CSV).read_bytes()
    assert load_funding_history(DATA_DIR / FUNDING_CSV) == load_funding_history()


def test_schedule_lookup_is_exact() -> None:
    schedule = load_funding_schedule()
    assert len(schedule) == 7_323
    assert schedule.rate_at(parse_utc_ns("2020-03-13T08:00:00Z")) == -300_000
    with pytest.raises(FundingRateMissing, match="2020-03-13T09:00:00Z"):
        schedule.rate_at(parse_utc_ns("2020-03-13T09:00:00Z"))
    with pytest.raises(FundingRateMissing, match=r"2019-09-10T08:00:00Z \.\. 2026-05-17T00:00:00Z"):
        schedule.rate_at(0)
    day = schedule.between(
        parse_utc_ns("2021-01-01T00:00:00Z"), parse_utc_ns("2021-01-02T00:00:00Z")
    )
    assert [t for t, _ in day] == [
        parse_utc_ns("2021-01-01T00:00:00Z") + i * 8 * H for i in range(4)
    ]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], "at least one"),
        ([(2, 0), (1, 0)], "out of order"),
        ([(1, 0), (1, 0)], "out of order"),
        ([(1, FUNDING_RATE_SCALE + 1)], "100 %"),
        ([(1.0, 0)], "int"),
    ],
)
def test_a_bad_schedule_is_refused(history: list[tuple[int, int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FundingSchedule(history)


def test_state_replays_a_schedule() -> None:
    schedule = load_funding_schedule()
    start = parse_utc_ns("2021-01-01T00:00:00Z")
    state = btc_state(start_ns=start, schedule=schedule)
    assert state.predicted_rate_e8() == schedule.rate_at(start + 8 * H)
    settlements = state.advance(start + DAY, premium_book(600), INDEX_60K)
    assert [(s.time_ns, s.rate_e8, s.rate_divisor) for s in settlements] == [
        (t, r, 1) for t, r in schedule.between(start + 1, start + DAY)
    ]
    assert settlements[0].premium_e8 == bps(10)  # the book is still sampled, for display
    early = btc_state(start_ns=0, schedule=schedule)
    with pytest.raises(FundingRateMissing, match="1970-01-01T08:00:00Z"):
        early.advance(8 * H, None, None)
    assert early.next_funding_ns == 8 * H  # nothing changed


def test_e8_to_ticks_rounds_half_to_even() -> None:
    assert e8_to_ticks(755_944_418_192, "0.1") == 75_594  # 7,559.44418192
    assert e8_to_ticks(755_945_000_000, "0.1") == 75_594  # 7,559.45: tie, to even
    assert e8_to_ticks(755_955_000_000, "0.1") == 75_596  # 7,559.55: tie, to even
    assert e8_to_ticks(755_945_000_001, "0.1") == 75_595
    with pytest.raises(ValueError, match="1e-8"):
        e8_to_ticks(1, "0.000000001")


def test_mark_series_lookup() -> None:
    series = MarkSeries((0, H), (1, 2), (1, 2), (1, 2), (1, 2))
    assert series.open_e8_at(H) == 2
    with pytest.raises(LookupError, match="1970-01-01T00:30:00Z"):
        series.open_e8_at(H // 2)


@pytest.fixture(scope="module")
def mark_series() -> MarkSeries:
    if not MARK_FEATHER.is_file():
        pytest.skip("../shared/data is not here")
    pytest.importorskip("pyarrow")
    return load_mark_series_1h(MARK_FEATHER)


def test_mark_series_is_exact(mark_series: MarkSeries) -> None:
    # ../shared/data/README.md §1: 56,084 rows, 2019-12-23 11:00 → 2026-05-17 06:00, no gaps.
    assert len(mark_series) == 56_084
    assert mark_series.open_time_ns[0] == parse_utc_ns("2019-12-23T11:00:00Z")
    assert mark_series.open_time_ns[-1] == parse_utc_ns("2026-05-17T06:00:00Z")
    assert mark_series.open_e8[0] == 755_944_418_192  # 7,559.44418192 exactly
    times = mark_series.open_time_ns
    assert all(b - a == H for a, b in pairwise(times))


# 2021 bull run: every settlement from 2021-01-01 00:00 to 2021-04-14 16:00 UTC inclusive.
BULL_FROM: Final = "2021-01-01T00:00:00Z"
BULL_TO: Final = "2021-04-14T16:00:00Z"
BULL_LONG_PAID_USDT: Final = Decimal("9153.332791")


def test_one_btc_long_over_the_2021_bull_run(
    mark_series: MarkSeries, capsys: pytest.CaptureFixture[str]
) -> None:
    schedule = load_funding_schedule()
    rows = schedule.between(parse_utc_ns(BULL_FROM), parse_utc_ns(BULL_TO))
    assert len(rows) == 104 * 3  # 31 + 28 + 31 + 14 days, three settlements a day
    tick = BTC.tick_size
    sizes = np.array([ONE_BTC, -ONE_BTC], dtype=np.int64)  # the long and its counterparty
    vector_paid_atoms = vector_received_atoms = dust_atoms = 0
    decimal_paid = Decimal(0)
    unrounded = Decimal(0)
    for time_ns, rate_e8 in rows:
        mark_ticks = mark_series.open_ticks_at(time_ns, tick)
        payments, dust = funding_payments(sizes, mark_ticks, K, rate_e8)
        vector_paid_atoms += int(payments[0])
        vector_received_atoms -= int(payments[1])
        dust_atoms += dust
        # Plain Decimal: 1 BTC x mark x rate, rounded up to the atom for the payer.
        rate = Decimal(rate_e8).scaleb(-8)
        payment = Decimal(1) * (mark_ticks * tick) * rate
        decimal_paid += payment.quantize(Decimal("0.000001"), rounding=ROUND_CEILING)
        # And with Binance's own 8-decimal mark, no rounding at all.
        unrounded += Decimal(mark_series.open_e8_at(time_ns)).scaleb(-8) * rate
    vector_paid = Decimal(vector_paid_atoms).scaleb(-6)
    with capsys.disabled():
        print(
            f"\n1 BTC long, {BULL_FROM} .. {BULL_TO} ({len(rows)} settlements): paid "
            f"{vector_paid} USDT (vector), {decimal_paid} (Decimal), {unrounded} (8-decimal "
            f"mark, unrounded); the short received {Decimal(vector_received_atoms).scaleb(-6)}"
        )
    assert vector_paid == decimal_paid == BULL_LONG_PAID_USDT
    assert vector_paid_atoms - vector_received_atoms == dust_atoms
    assert abs(unrounded - vector_paid) < Decimal("0.001")
