"""Partial liquidation of positions in high brackets (BitMEX, Bybit, OKX), held to its numbers.

Sources: MECHANICS.md §2.3 (BitMEX: for higher risk-limit tiers, a Fill-or-Kill order sized to
bring the position below a lower risk limit, then the full process if that fails or is not
enough), §3.1 (Bybit: the same), §3.2 (OKX: drop two tiers), §1.8 (the clearance fee only on
the liquidated amount), §1.2 (brackets; a notional on a boundary takes the higher bracket).
Off by default (`partial_from_bracket=0`): Binance's published process closes the position.

Every case starts from the same position, BTCUSDT brackets of MECHANICS.md §1.1 table (a), fees
0 except the 0.5 % clearance fee:

    isolated (or cross) long 10 BTC at 100,000, 10x: margin 100,000, bankruptcy 90,000 (§1.5).
    At a 90,450 mark: notional 904,500, bracket 3 (0.65 %, cum 950): MM = 4,929.25 and
    equity = 100,000 - 10 x 9,550 = 4,500 <= MM, so it is liquidated (§0).
    Bracket 2 ends at 600,000: 6.633 BTC x 90,450 = 599,954.85 fits, 6.634 (600,045.3) does
    not, so the partial order sells 3.367 BTC. Closed at the mark, the part realizes exactly its
    uPnL and the whole margin stays behind the rest: equity stays 4,500, less the fee
    0.5 % x 3.367 x 90,450 = 1,522.72575, i.e. 2,977.27425, against the new MM
    0.5 % x 599,954.85 - 50 = 2,949.77425 (bracket 2): compliant, by 27.5 USDT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import pytest

from perpex import Exchange
from perpex.core.liquidation import LiquidationConfig
from perpex.core.messages import (
    FundReason,
    InsuranceFundChanged,
    LiquidationTriggered,
    OrderAccepted,
    TimeInForce,
    TradeExecuted,
)
from test_liquidation import BTC, assert_sound, btc_market, move_index, new_exchange, open_position

BTC_LOT = Decimal("0.001")
TICK = Decimal("0.1")


@dataclass(frozen=True)
class Case:
    name: str
    config: LiquidationConfig
    bids: list[tuple[str, str]]  # (price, qty) resting before the tick
    fills: list[tuple[str, str]]  # (price, qty) of the trader's liquidation fills, in order
    partial: bool  # the first order was the Fill-or-Kill partial one
    size_after: str
    fund_after: str  # from a fund of 100,000
    mode: str = "ISOLATED"
    notes: list[str] = field(default_factory=list)


PARTIAL = LiquidationConfig(partial_from_bracket=3)
CASES = [
    Case("off by default: the whole position", LiquidationConfig(), [("90450", "20")],
         [("90450", "10")], False, "0",
         # sold at 90,450: 4,500 over bankruptcy; fee 0.5 % x 904,500 = 4,522.5 capped at 4,500
         "104500"),
    Case("bracket 3 -> 2 is enough: 6.633 BTC stay", PARTIAL, [("90450", "20")],
         [("90450", "3.367")], True, "6.633", "101522.72575"),
    Case("cross account, same figures: the fee comes from the wallet", PARTIAL,
         [("90450", "20")], [("90450", "3.367")], True, "6.633", "101522.72575", mode="CROSSED"),
    # At 90,400 the partial loses 50 x 3.367 = 168.35 more and its fee is 1,521.884: equity
    # 2,809.766 < 2,949.77425, so the rest goes too (its new bankruptcy 90,450 - 2,809.766 /
    # 6.633 = 90,026.4 is below the bid). The fund gets 1,521.884, then all that is left.
    Case("partial not enough: the full process follows", PARTIAL, [("90400", "20")],
         [("90400", "3.367"), ("90400", "6.633")], True, "0", "104000"),
    # Only 2 BTC bid at or above bankruptcy: the Fill-or-Kill of 3.367 cannot fill, so the
    # position goes whole: 2 at 90,450 (+900), 8 taken by the fund at 89,500 (-4,000).
    Case("the book cannot take the Fill-or-Kill: full process", PARTIAL,
         [("90450", "2"), ("89500", "10")], [("90450", "2"), ("89500", "8")], False, "0",
         "96900"),
    Case("bracket 3 is below partial_from_bracket 4: whole position",
         LiquidationConfig(partial_from_bracket=4), [("90450", "20")], [("90450", "10")], False,
         "0", "104500"),
    # Half: 5 BTC sold, fee 0.5 % x 452,250 = 2,261.25; equity 2,238.75 > MM of 452,250 in
    # bracket 2 = 2,261.25 - 50 = 2,211.25.
    Case("a fraction instead: half the position",
         LiquidationConfig(partial_from_bracket=3, partial_fraction_ppm=500_000),
         [("90450", "20")], [("90450", "5")], True, "5", "102261.25"),
    # OKX drops two tiers: bracket 1 ends at 50,000, 0.552 BTC (49,928.4) stay, 9.448 sold; fee
    # 0.5 % x 854,571.6 = 4,272.858; equity 227.142 > MM 0.4 % x 49,928.4 = 199.7136.
    Case("two brackets down (OKX): to bracket 1",
         LiquidationConfig(partial_from_bracket=3, partial_brackets_down=2),
         [("90450", "20")], [("90450", "9.448")], True, "0.552", "104272.858"),
]  # fmt: skip


def liquidate(case: Case) -> tuple[Exchange, list[object]]:
    ex = new_exchange(insurance_fund="100000", markets=[btc_market()], config=case.config)
    ex.set_index_price(BTC, "100000")
    ex.deposit("trader", "100000")
    open_position(ex, "trader", BTC, "BUY", "10", "100000", 10, mode=case.mode)
    move_index(ex, BTC, "92000")  # equity 20,000: safe, and the band admits the bids below
    ex.deposit("bidder", "10000000")
    for price, qty in case.bids:
        ex.place_order("bidder", BTC, "BUY", "LIMIT", qty, price)
    return ex, list(move_index(ex, BTC, "90450"))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_partial_liquidation(case: Case) -> None:
    ex, events = liquidate(case)
    triggered = [e for e in events if isinstance(e, LiquidationTriggered)]
    assert [(e.account, e.margin_balance_atoms, e.maint_margin_atoms) for e in triggered] == [
        ("trader", 4_500_000_000, 4_929_250_000)
    ]
    fills = [e for e in events if isinstance(e, TradeExecuted) and e.taker_account == "trader"]
    assert all(e.liquidation and e.taker_fee_atoms == 0 for e in fills)
    assert [(e.price_ticks * TICK, e.qty_lots * BTC_LOT) for e in fills] == [
        (Decimal(p), Decimal(q)) for p, q in case.fills
    ]
    orders = [e for e in events if isinstance(e, OrderAccepted) and e.account == "trader"]
    if case.partial:
        assert orders[0].time_in_force == TimeInForce.FOK
        assert orders[0].price_ticks == 900_000  # limited at the bankruptcy price
    assert all(o.time_in_force != TimeInForce.FOK for o in orders[int(case.partial) :])
    assert ex.position("trader", BTC).size == Decimal(case.size_after)
    assert ex.insurance_fund() == Decimal(case.fund_after)
    assert_sound(ex)


def test_what_stays_after_a_partial_liquidation() -> None:
    """Case "bracket 3 -> 2": the margin behind the 6.633 BTC left is 100,000 - 3.367 x 9,550
    - 1,522.72575 = 66,322.42425 (nothing is released to the wallet), its MM is bracket 2's,
    and one fee event of 1,522.72575 was booked for the part closed."""
    ex, events = liquidate(CASES[1])
    pos = ex.position("trader", BTC)
    assert pos.isolated_margin == Decimal("66322.42425")
    assert pos.maintenance_margin == Decimal("2949.77425")
    assert pos.unrealized_pnl + pos.isolated_margin == Decimal("2977.27425")
    assert ex.account("trader").cross_wallet_balance == 0
    fees = [(e.delta_atoms, e.reason) for e in events if isinstance(e, InsuranceFundChanged)]
    assert fees == [(1_522_725_750, FundReason.CLEARANCE_FEE)]


def test_after_a_partial_the_next_liquidation_is_a_bracket_2_one() -> None:
    """Equity falls 6.633 per 1.0 of mark and MM 0.033165: at 90,449 equity 2,970.64125 > MM
    2,949.741585; at 90,440 equity 2,910.94425 <= MM 2,949.4426, and bracket 2 is below
    `partial_from_bracket`: the whole rest goes in one IOC order."""
    ex, _ = liquidate(CASES[1])
    assert not any(isinstance(e, LiquidationTriggered) for e in move_index(ex, BTC, "90449"))
    events = move_index(ex, BTC, "90440")
    assert [e.account for e in events if isinstance(e, LiquidationTriggered)] == ["trader"]
    orders = [e for e in events if isinstance(e, OrderAccepted) and e.account == "trader"]
    assert [(o.time_in_force, o.qty_lots) for o in orders] == [(TimeInForce.IOC, 6_633)]
    assert ex.position("trader", BTC).size == 0
    assert_sound(ex)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"partial_from_bracket": 1},  # no lower bracket to go to
        {"partial_from_bracket": -1},
        {"partial_brackets_down": 0},
        {"partial_fraction_ppm": 1_000_000},  # all of it is not partial
        {"partial_fraction_ppm": -1},
    ],
)
def test_config_rejects(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        LiquidationConfig(**kwargs)


def test_partial_config_is_state() -> None:
    """The new fields are in the state hash and survive a snapshot."""
    from perpex.core.engine import Engine

    plain = Exchange(markets=[btc_market()], mark_price="index")
    partial = Exchange(markets=[btc_market()], liquidation=PARTIAL, mark_price="index")
    assert plain.state_hash() != partial.state_hash()
    twin = Engine.restore(partial.engine.snapshot())
    assert twin.liquidator.config == PARTIAL
