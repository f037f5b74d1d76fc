"""Funding through the engine and the facade: premium sampled from our own book, settlement at
00:00/08:00/16:00 UTC, isolated positions paying from their margin, replayed history rates.

Numbers: MECHANICS.md §1.7 (P̄ = 0.10 % -> F = 0.05 %; 1 BTC at 60,000 x 0.05 % = 30 USDT).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.engine import Engine
from perpex.core.funding import FundingConfig, FundingSchedule
from perpex.core.messages import AdvanceClock, FundingPaid, FundingSettled

BTC = "BTCUSDT"
HOUR = 3600
NS = 1_000_000_000
EIGHT_HOURS_NS = 8 * HOUR * NS
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def settled(ex: Exchange) -> list[FundingSettled]:
    return [e for e in ex.events() if isinstance(e, FundingSettled)]


def long_and_short(ex: Exchange, long_mode: str = "CROSSED") -> None:
    """'long' buys 1 BTC from 'short' at 60,000 (index 60,000, zero-fee market not needed:
    fees are paid at the trade, funding comes later)."""
    ex.set_index_price(BTC, "60000")
    ex.deposit("long", "100000")
    ex.deposit("short", "100000")
    if long_mode == "ISOLATED":
        ex.set_margin_mode("long", BTC, "ISOLATED")
    ex.place_order(
        "short", BTC, side="SELL", type="LIMIT", quantity="1", price="60000", time_in_force="GTC"
    )
    ex.place_order("long", BTC, side="BUY", type="MARKET", quantity="1")


def premium_book(ex: Exchange) -> None:
    """A market maker bids 0.1 % over the index (deep enough for the 25,000 USDT impact
    notional) and asks above it: every premium sample is +0.10 %."""
    ex.deposit("mm", "10000000")
    ex.place_order(
        "mm", BTC, side="BUY", type="LIMIT", quantity="2", price="60060", time_in_force="GTC"
    )
    ex.place_order(
        "mm", BTC, side="SELL", type="LIMIT", quantity="2", price="60100", time_in_force="GTC"
    )


def test_a_premium_of_0_10_percent_settles_0_05_percent_and_1_btc_pays_30_usdt() -> None:
    ex = Exchange(mark_price="index")
    long_and_short(ex)
    premium_book(ex)
    assert ex.funding_rate(BTC).predicted_funding_rate == Decimal("0.0001")  # no sample yet
    ex.advance_time(4 * HOUR)
    rate = ex.funding_rate(BTC)
    assert rate.predicted_funding_rate == Decimal("0.0005")
    assert rate.next_funding_time_ns == EIGHT_HOURS_NS
    long_before = ex.account("long").wallet_balance
    short_before = ex.account("short").wallet_balance
    ex.advance_time(4 * HOUR)  # 08:00 UTC
    [s] = settled(ex)
    assert (s.time_ns, s.rate_e8, s.mark_ticks, s.premium_e8) == (
        EIGHT_HOURS_NS,
        50_000,
        600_000,
        100_000,
    )
    assert ex.account("long").wallet_balance == long_before - 30
    assert ex.account("short").wallet_balance == short_before + 30
    assert [(p.symbol, p.income, p.funding_rate) for p in ex.funding_history("long")] == [
        (BTC, Decimal("-30"), Decimal("0.0005"))
    ]
    assert ex.funding_history("short")[0].income == Decimal("30")
    assert ex.funding_rate(BTC).last_funding_rate == Decimal("0.0005")
    assert ex.funding_rate(BTC).next_funding_time_ns == 2 * EIGHT_HOURS_NS
    ex.check_invariants()
    deposited, held = ex.engine.conservation_atoms()
    assert deposited == held


def test_no_premium_sample_settles_the_interest_rate() -> None:
    ex = Exchange(mark_price="index")
    long_and_short(ex)  # an empty book: every sample is skipped, P̄ = 0, F = I = 0.01 %
    ex.advance_time(8 * HOUR)
    [s] = settled(ex)
    assert (s.rate_e8, s.premium_e8) == (10_000, 0)
    assert ex.funding_history("long")[0].income == Decimal("-6")


def test_an_isolated_position_pays_from_its_margin() -> None:
    ex = Exchange(mark_price="index")
    long_and_short(ex, long_mode="ISOLATED")
    premium_book(ex)
    margin = ex.position("long", BTC).isolated_margin
    wallet = ex.account("long").cross_wallet_balance
    ex.advance_time(8 * HOUR)
    assert ex.position("long", BTC).isolated_margin == margin - 30
    assert ex.account("long").cross_wallet_balance == wallet


def test_a_step_over_three_funding_times_settles_each_at_its_own_time() -> None:
    ex = Exchange(mark_price="index")
    long_and_short(ex)
    ex.advance_time(24 * HOUR + 1)
    assert [s.time_ns // (HOUR * NS) for s in settled(ex)] == [8, 16, 24]
    assert len(ex.funding_history("long")) == 3


def test_hourly_settlement_charges_an_eighth_of_the_rate_each_hour() -> None:
    ex = Exchange(mark_price="index", funding=FundingConfig(hourly_split=True))
    long_and_short(ex)
    premium_book(ex)
    ex.advance_time(8 * HOUR)
    payments = [p.income for p in ex.funding_history("long")]
    assert payments == [Decimal("-3.75")] * 8  # 30 / 8 each hour: the same 30 over 8 h


def test_replayed_rates_are_charged_as_published() -> None:
    history = FundingSchedule([(EIGHT_HOURS_NS, 50_000), (2 * EIGHT_HOURS_NS, -37_500)])
    ex = Exchange(mark_price="index", funding_history={BTC: history})
    long_and_short(ex)
    ex.advance_time(16 * HOUR)
    assert [p.income for p in ex.funding_history("long")] == [Decimal("-30"), Decimal("22.5")]
    with pytest.raises(ExchangeError) as caught:  # past the end of the history: refused whole
        ex.advance_time(8 * HOUR)
    assert caught.value.code == -1130 and "no funding rate" in caught.value.msg
    assert len(ex.funding_history("long")) == 2


def test_funding_survives_snapshot_and_restore() -> None:
    ex = Exchange(mark_price="index")
    long_and_short(ex)
    premium_book(ex)
    ex.advance_time(3 * HOUR)
    twin = Engine.restore(ex.engine.snapshot())
    assert twin.state_hash() == ex.state_hash()
    ex.advance_time(6 * HOUR)
    events = twin.apply(AdvanceClock(ex.time_ns))
    assert twin.state_hash() == ex.state_hash()
    assert [e for e in events if isinstance(e, FundingPaid)] == [
        e for e in ex.events() if isinstance(e, FundingPaid)
    ]


def test_a_step_too_large_is_refused() -> None:
    ex = Exchange(mark_price="index", funding=FundingConfig(interval_ns=HOUR * NS))
    long_and_short(ex)
    before = ex.state_hash()
    with pytest.raises(ExchangeError) as caught:
        ex.advance_time(200_000 * HOUR)  # 200,000 hourly settlements in one step
    assert caught.value.code == -1130
    assert ex.state_hash() == before


# -- the real 2021 bull run (issue 4 §4) ----------------------------------------------------


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is not beside the checkout")
def test_a_1_btc_long_over_the_2021_bull_run_pays_what_binance_charged() -> None:
    pytest.importorskip("pyarrow")
    from perpex.history import load_funding_schedule, load_mark_series_1h, parse_utc_ns

    marks = load_mark_series_1h(
        SHARED_DATA / "binance_usdm_BTCUSDT_1h_mark_2019-12_2026-05.feather"
    )
    history = load_funding_schedule()
    start = parse_utc_ns("2020-12-31T23:00:00Z")
    end = parse_utc_ns("2021-04-14T16:00:00Z")
    ex = Exchange(
        mark_price="index",
        start_time=start // NS,
        funding_history={BTC: history},
        insurance_fund="0",
    )
    tick = Decimal("0.1")
    ex.set_index_price(BTC, str(marks.open_ticks_at(start, tick) * tick))
    ex.deposit("long", "1000000")
    ex.deposit("short", "1000000")
    ex.set_leverage("long", BTC, 1)
    ex.set_leverage("short", BTC, 1)
    price = ex.index_price(BTC)
    ex.place_order(
        "short", BTC, side="SELL", type="LIMIT", quantity="1", price=str(price), time_in_force="GTC"
    )
    ex.place_order("long", BTC, side="BUY", type="MARKET", quantity="1")
    expected = Decimal(0)
    for funding_ns, rate_e8 in history.between(start + 1, end):
        # the index (= mark) of the hour the settlement falls on, set just before it
        mark_ticks = marks.open_ticks_at(funding_ns, tick)
        ex.advance_time(Decimal(funding_ns - 1 - ex.time_ns) / NS)
        ex.set_index_price(BTC, str(mark_ticks * tick))
        ex.advance_time(Decimal(1) / NS)
        # |size| x mark x rate, rounded up to the atom (the payer's side)
        owed = Decimal(mark_ticks) * tick * Decimal(rate_e8) / 10**8
        expected += owed.quantize(Decimal("0.000001"), rounding="ROUND_CEILING")
    paid = -sum(p.income for p in ex.funding_history("long"))
    assert len(ex.funding_history("long")) == 312
    assert paid == expected
    assert paid == Decimal("9153.332791")
    ex.check_invariants()
