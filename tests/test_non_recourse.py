"""Non-recourse for a trader's own closing orders (DESIGN.md §6 promise 4).

A 125x position's bankruptcy price is under 1 % away while the price band lets a market order
walk 5 %: without a rule, closing it into a thin book would leave the wallet below zero. A
closing taker order therefore never fills past the price where the position's margin balance,
taker fee included, reaches zero; what would fill beyond expires (reason BANKRUPTCY).

Numbers (BTCUSDT, taker fee 0.05 %, maker 0.02 %): a 0.5 BTC isolated long at 60,000 with 125x
holds 240 of margin, 225 after the 15 opening fee; closing all of it at p leaves
225 + 0.5·p − 30,000 − 0.0005·0.5·p, zero at p = 29,775 / 0.49975 = 59,579.789..., so the
cap is 59,579.8 (rounded up, the trader's side).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from perpex import Exchange
from perpex.core.messages import EndReason, InsuranceFundChanged, OrderCanceled

BTC = "BTCUSDT"


def long_125x(mode: str = "ISOLATED") -> Exchange:
    ex = Exchange(mark_price="index", insurance_fund="1000")
    ex.set_index_price(BTC, "60000")
    ex.deposit("mm", "10000000")
    ex.deposit("trader", "240") if mode == "ISOLATED" else ex.deposit("trader", "255")
    ex.set_leverage("trader", BTC, 125)
    if mode == "ISOLATED":
        ex.set_margin_mode("trader", BTC, mode)
    ex.place_order(
        "mm", BTC, side="SELL", type="LIMIT", quantity="0.5", price="60000", time_in_force="GTC"
    )
    ex.place_order("trader", BTC, side="BUY", type="MARKET", quantity="0.5")
    # a thin bid side: a little near the mark, the rest far below the bankruptcy price
    ex.place_order(
        "mm", BTC, side="BUY", type="LIMIT", quantity="0.1", price="59900", time_in_force="GTC"
    )
    ex.place_order(
        "mm", BTC, side="BUY", type="LIMIT", quantity="1", price="57500", time_in_force="GTC"
    )
    return ex


def expired(ex: Exchange) -> list[OrderCanceled]:
    return [e for e in ex.events() if isinstance(e, OrderCanceled) and e.account == "trader"]


@pytest.mark.parametrize("mode", ["ISOLATED", "CROSSED"])
def test_a_market_close_stops_at_the_bankruptcy_price(mode: str) -> None:
    ex = long_125x(mode)
    order = ex.place_order("trader", BTC, side="SELL", type="MARKET", quantity="0.5")
    assert order.executed_qty == Decimal("0.1")  # 59,900 only: 57,500 is past bankruptcy
    assert [e.reason for e in expired(ex)] == [EndReason.BANKRUPTCY]
    assert ex.position("trader", BTC).size == Decimal("0.4")
    assert ex.account("trader").margin_balance >= 0
    ex.check_invariants()


def test_without_the_cap_the_same_close_would_sink_the_wallet() -> None:
    # the arithmetic the cap prevents: 0.1 at 59,900 and 0.4 at 57,500 lose 1,010 + fees on a
    # 225 margin
    loss = Decimal("0.1") * (60000 - 59900) + Decimal("0.4") * (60000 - 57500)
    assert loss > 225


def test_a_crossing_limit_close_past_bankruptcy_does_not_rest_crossed() -> None:
    ex = long_125x()
    order = ex.place_order(
        "trader", BTC, side="SELL", type="LIMIT", quantity="0.5", price="57500", time_in_force="GTC"
    )
    assert order.executed_qty == Decimal("0.1")
    assert order.status == "EXPIRED"
    book = ex.order_book(BTC)
    assert book["asks"] == []  # it did not rest below the 57,500 bid
    ex.check_invariants()


def test_a_close_inside_the_cap_fills_normally() -> None:
    ex = long_125x()
    ex.place_order(
        "mm", BTC, side="BUY", type="LIMIT", quantity="0.4", price="59600", time_in_force="GTC"
    )
    order = ex.place_order("trader", BTC, side="SELL", type="MARKET", quantity="0.5")
    assert order.executed_qty == Decimal("0.5")
    assert expired(ex) == []
    assert ex.position("trader", BTC).size == 0
    assert ex.account("trader").wallet_balance >= 0
    ex.check_invariants()


def test_a_resting_close_filled_past_bankruptcy_is_covered_by_the_fund() -> None:
    """A limit sell resting below the bankruptcy price (it crossed nothing when placed) is
    lifted later: the wallet would end below zero, so the fund pays the deficit."""
    ex = Exchange(mark_price="index", insurance_fund="1000")
    ex.set_index_price(BTC, "60000")
    ex.deposit("mm", "10000000")
    ex.deposit("trader", "240")
    ex.set_leverage("trader", BTC, 125)
    ex.set_margin_mode("trader", BTC, "ISOLATED")
    ex.place_order(
        "mm", BTC, side="SELL", type="LIMIT", quantity="0.5", price="60000", time_in_force="GTC"
    )
    ex.place_order("trader", BTC, side="BUY", type="MARKET", quantity="0.5")
    ex.place_order(
        "trader", BTC, side="SELL", type="LIMIT", quantity="0.5", price="59000", time_in_force="GTC"
    )  # rests: no bid to cross
    ex.place_order("mm", BTC, side="BUY", type="MARKET", quantity="0.5")  # lifts it
    assert ex.position("trader", BTC).size == 0
    assert ex.account("trader").wallet_balance == 0
    paid = [e for e in ex.events() if isinstance(e, InsuranceFundChanged) and e.delta_atoms < 0]
    assert len(paid) == 1 and paid[0].account == "trader"
    # 225 + 0.5·(59,000 − 60,000) − 0.0002·29,500 (maker fee) = −280.9
    assert paid[0].delta_atoms == -280_900_000
    ex.check_invariants()
