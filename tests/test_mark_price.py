"""The index from several sources and the mark built on it, through the engine and the facade.

MECHANICS.md §1.6: the index is the weighted mean of the sources within 5 % of their median
(the median of all when more than one deviates; a stale source drops out); the Binance mark
is median(Price 1, Price 2, last price) with Price 2 = index + the moving average of the basis
(book mid − index) sampled every 5 s over 5 minutes. Margin and liquidation use the mark, never
the last price, which is what the whale-sweep test below is about.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.messages import LiquidationTriggered, MarkPriceUpdated

BTC = "BTCUSDT"


def liquidations(ex: Exchange) -> list[LiquidationTriggered]:
    return [e for e in ex.events() if isinstance(e, LiquidationTriggered)]


# -- the index ----------------------------------------------------------------------------------


def test_the_index_is_the_weighted_mean_of_the_sources() -> None:
    ex = Exchange(mark_price="index", index_sources={"a": 1, "b": 3})
    assert ex.update_sources(BTC, {"a": "60000", "b": "60400"}) == Decimal("60300")
    assert ex.mark_price(BTC) == Decimal("60300")


def test_the_weighted_mean_rounds_half_to_even_on_the_tick() -> None:
    ex = Exchange(mark_price="index", index_sources={"a": 1, "b": 1})
    # (60000.1 + 60000.2) / 2 = 60000.15 -> the even tick 60000.2; (.2 + .3) / 2 -> .2
    assert ex.update_sources(BTC, {"a": "60000.1", "b": "60000.2"}) == Decimal("60000.2")
    assert ex.update_sources(BTC, {"a": "60000.2", "b": "60000.3"}) == Decimal("60000.2")


@pytest.mark.parametrize(
    ("quotes", "index"),
    [
        # one source 10 % away gets weight 0: the mean of the other five
        ({"binance": 60000, "okx": 60010, "bybit": 60020, "coinbase": 59990, "kraken": 59980,
          "bitget": 66000}, "60000"),
        # two deviate: the median of all six, (60000 + 60010) / 2
        ({"binance": 60000, "okx": 60010, "bybit": 60020, "coinbase": 59990, "kraken": 54000,
          "bitget": 66000}, "60005"),
        # exactly 5 % from the median still counts ("more than 5 %" is dropped)
        ({"binance": 60000, "okx": 60000, "bybit": 60000, "coinbase": 60000, "kraken": 60000,
          "bitget": 63000}, "60500"),
    ],
)
def test_outliers_are_dropped(quotes: dict[str, int], index: str) -> None:
    ex = Exchange(mark_price="index")  # the six default venues, equal weights
    assert ex.update_sources(BTC, quotes) == Decimal(index)


def test_a_stale_source_stops_counting_after_60_seconds() -> None:
    ex = Exchange(mark_price="index", index_sources={"a": 1, "b": 1})
    ex.update_sources(BTC, {"a": "60000", "b": "61000"})
    ex.advance_time(60)
    assert ex.update_sources(BTC, {"b": "61000"}) == Decimal("60500")  # a is 60 s old: fresh
    ex.advance_time(1)
    assert ex.update_sources(BTC, {"b": "61000"}) == Decimal("61000")  # a is 61 s old: stale


def test_set_index_price_overrides_the_sources() -> None:
    ex = Exchange(mark_price="index", index_sources={"a": 1, "b": 1})
    ex.update_sources(BTC, {"a": "60000", "b": "61000"})
    ex.set_index_price(BTC, "59000")
    assert ex.index_price(BTC) == Decimal("59000")
    # the next quotes start afresh: b alone, a's old quote is gone
    assert ex.update_sources(BTC, {"b": "61000"}) == Decimal("61000")


@pytest.mark.parametrize(
    ("quotes", "code"),
    [
        ({"nowhere": "60000"}, -1130),  # a source the index does not list
        ({}, -1102),  # nothing quoted
        ({"binance": "60000.05"}, -4014),  # off the tick: refused, never rounded
        ({"binance": "-1"}, -4013),
        ({"binance": "NaN"}, -1013),
        ({"binance": "0.01"}, -4014),
        ({"binance": "10"}, -4013),  # below the market's min price
    ],
)
def test_bad_quotes_change_nothing(quotes: dict[str, str], code: int) -> None:
    ex = Exchange()
    ex.update_sources(BTC, {"binance": "60000"})
    before = ex.state_hash()
    with pytest.raises(ExchangeError) as caught:
        ex.update_sources(BTC, quotes)
    assert caught.value.code == code
    assert ex.state_hash() == before


def test_unknown_symbol_for_sources() -> None:
    with pytest.raises(ExchangeError) as caught:
        Exchange().update_sources("DOGEUSDT", {"binance": "1"})
    assert caught.value.code == -1121


def test_an_unknown_mark_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="mark_price"):
        Exchange(mark_price="median")


# -- the Binance mark ---------------------------------------------------------------------------


def quoted_market(mark_price: str = "binance") -> Exchange:
    """Index 60,000; a maker quotes 60,010 / 60,020 (mid 60,015: basis +15); one trade at 60,020."""
    ex = Exchange(mark_price=mark_price)
    ex.set_index_price(BTC, "60000")
    ex.deposit("mm", "1000000")
    ex.deposit("taker", "100000")
    ex.place_order("mm", BTC, side="BUY", type="LIMIT", quantity="5", price="60010",
                   time_in_force="GTC")
    ex.place_order("mm", BTC, side="SELL", type="LIMIT", quantity="5", price="60020",
                   time_in_force="GTC")
    ex.place_order("taker", BTC, side="BUY", type="MARKET", quantity="0.1")
    return ex


def test_the_mark_is_the_index_until_the_clock_samples_the_basis() -> None:
    ex = quoted_market()
    # Price 1 = index (no funding yet), Price 2 = index (no sample), last 60,020: median 60,000
    assert ex.mark_price(BTC) == Decimal("60000")


def test_the_mark_follows_the_basis_moving_average() -> None:
    ex = quoted_market()
    ex.advance_time(300)  # 60 samples of +15 (and the first, at t = 0)
    # median(Price 1 = 60,000, Price 2 = 60,015, last = 60,020) = 60,015
    assert ex.mark_price(BTC) == Decimal("60015")
    updates = [e for e in ex.events() if isinstance(e, MarkPriceUpdated)]
    assert updates and updates[-1].mark_ticks == 600150


def test_the_basis_average_covers_5_minutes_only() -> None:
    ex = quoted_market()
    ex.advance_time(300)
    ex.set_index_price(BTC, "60010")  # the basis is now +5 (mid 60,015)
    ex.advance_time(150)  # 30 new samples of +5, 30 old ones of +15 left in the window: +10
    assert ex.mark_price(BTC) == Decimal("60020")  # median(60,010, 60,020, 60,020)
    ex.advance_time(150)
    # Price 2 = 60,015 now, but Price 1 carries the predicted funding rate (the 0.01 % interest:
    # the premium is inside the clamp) over the 28,200 s left to 08:00:
    # 60,010 × (1 + 0.0001 × 28,200 / 28,800) = 60,015.876 -> median(60,015.9, 60,015, 60,020)
    assert ex.mark_price(BTC) == Decimal("60015.9")


def test_mark_modes_side_by_side() -> None:
    marks = {}
    for mode in ("binance", "index", "last"):
        ex = quoted_market(mode)
        ex.advance_time(300)
        marks[mode] = ex.mark_price(BTC)
    assert marks == {"binance": Decimal("60015"), "index": Decimal("60000"),
                     "last": Decimal("60020")}


def test_the_oracle_state_survives_snapshot_and_restore() -> None:
    ex = quoted_market()
    ex.advance_time(200)
    restored = type(ex.engine).restore(ex.engine.snapshot())
    assert restored.state_hash() == ex.state_hash()
    ex.advance_time(100)
    from perpex.core.messages import AdvanceClock

    restored.apply(AdvanceClock(ex.time_ns))
    assert restored.state_hash() == ex.state_hash()
    assert restored.markets[BTC].mark_ticks == 600150


# -- the whale sweep (issue 3 §8): the median mark keeps a local sweep from liquidating ---------


def whale_sweep(mark_price: str) -> Exchange:
    """A 20x isolated long of 1 BTC at 60,000 (isolated margin 2,970 after the taker fee:
    liquidation price 57,266.33); bids every 100 USDT down to 57,000, the bottom of the 5 % band;
    a whale market-sells through all of them while the index stays at 60,000."""
    ex = Exchange(mark_price=mark_price)
    ex.set_index_price(BTC, "60000")
    ex.deposit("mm", "10000000")
    ex.deposit("long", "5000")
    ex.deposit("whale", "1000000")
    ex.place_order("mm", BTC, side="SELL", type="LIMIT", quantity="2", price="60000",
                   time_in_force="GTC")
    for price in range(59_900, 56_999, -100):
        ex.place_order("mm", BTC, side="BUY", type="LIMIT", quantity="0.05", price=str(price),
                       time_in_force="GTC")
    ex.set_leverage("long", BTC, 20)
    ex.set_margin_mode("long", BTC, "ISOLATED")
    ex.place_order("long", BTC, side="BUY", type="MARKET", quantity="1")
    pos = ex.position("long", BTC)
    assert pos.size == 1 and pos.liquidation_price == Decimal("57266.33165829")
    ex.advance_time(300)  # five minutes of a calm book: basis (59,900 + 60,000) / 2 − 60,000
    assert ex.mark_price(BTC) == Decimal("60000")
    ex.place_order("whale", BTC, side="SELL", type="MARKET", quantity="1.5")
    assert ex.order_book(BTC)["bids"] == []  # swept down to the band
    ex.advance_time(1)  # the next mark
    return ex


def test_a_whale_sweep_does_not_liquidate_under_the_binance_mark() -> None:
    ex = whale_sweep("binance")
    last_fill = [e for e in ex.events() if type(e).__name__ == "TradeExecuted"][-1]
    assert last_fill.price_ticks == 570_000  # the last price is at the bottom of the band
    # median(Price 1 = 60,000, Price 2 = 60,000 − 50 (no sample since: one side is empty),
    # last 57,000) = 59,950, far above the liquidation price
    assert ex.mark_price(BTC) == Decimal("59950")
    assert liquidations(ex) == []
    assert ex.position("long", BTC).size == 1
    ex.check_invariants()


def test_the_same_sweep_liquidates_when_the_mark_is_the_last_price() -> None:
    ex = whale_sweep("last")
    assert ex.mark_price(BTC) == Decimal("57000")
    assert [(e.account, e.symbol) for e in liquidations(ex)] == [("long", BTC)]
    assert ex.position("long", BTC).size == 0
    ex.check_invariants()
