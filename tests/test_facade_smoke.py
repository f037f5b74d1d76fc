"""A short story told through the public facade (DESIGN.md §7).

Alice (cross) and Bob (isolated) each deposit 10,000 USDT, trade 0.5 BTC against each other at
60,000 with 20x, and the index moves to 61,000. Every expected number is derived below from
the default market (BTCUSDT: maker 0.02 %, taker 0.05 %, bracket 1 below 50,000 USDT at MMR
0.4 %, cum 0) and the liquidation-price formula of MECHANICS.md §1.4 (bankruptcy: §1.5).
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.messages import TradeExecuted

JAN_1_2024_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
QTY = Fraction("0.5")
ENTRY = Fraction(60_000)
MARK = Fraction(61_000)
NOTIONAL_AT_ENTRY = QTY * ENTRY  # 30,000
NOTIONAL_AT_MARK = QTY * MARK  # 30,500
TAKER_FEE = NOTIONAL_AT_ENTRY * Fraction("0.0005")  # 15 (alice takes)
MAKER_FEE = NOTIONAL_AT_ENTRY * Fraction("0.0002")  # 6 (bob makes)
MMR = Fraction("0.004")  # bracket 1: notional < 50,000
LEVERAGE = 20


def shown(value: Fraction) -> Decimal:
    """8 decimals, as positionRisk shows prices (DESIGN.md §7)."""
    return Decimal(round(value * 10**8)).scaleb(-8)


def liquidation_price(wallet: Fraction, side: int, other_upnl: Fraction = Fraction(0)) -> Decimal:
    """MECHANICS.md §1.4, one-way mode, one contract in the bracket of MMR 0.4 %, cum 0."""
    return shown((wallet + other_upnl - side * QTY * ENTRY) / (QTY * MMR - side * QTY))


def bankruptcy_price(wallet: Fraction, side: int) -> Decimal:
    """MECHANICS.md §1.5: where the margin behind the position is exactly zero."""
    return shown(ENTRY - side * wallet / QTY)


@pytest.fixture
def ex() -> Exchange:
    """Alice long 0.5 BTC at 60,000 (taker, cross), Bob short (maker, isolated), mark 61,000."""
    ex = Exchange(start_time="2024-01-01T00:00:00Z")
    for name in ("alice", "bob"):
        ex.deposit(name, "10000")
        ex.set_leverage(name, "BTCUSDT", LEVERAGE)
    ex.set_margin_mode("bob", "BTCUSDT", "ISOLATED")
    ex.set_index_price("BTCUSDT", "60000")
    ask = ex.place_order("bob", "BTCUSDT", "SELL", "LIMIT", quantity="0.5", price="60000")
    assert ask.status == "NEW"
    bid = ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", quantity="0.5", price="60000")
    assert (bid.status, bid.executed_qty, bid.avg_price) == ("FILLED", Decimal("0.5"), ENTRY)
    ex.set_index_price("BTCUSDT", "61000")
    return ex


def test_the_clock_starts_where_it_is_told() -> None:
    assert Exchange().time_ns == 0
    ex = Exchange(start_time="2024-01-01T00:00:00Z")
    assert ex.time_ns == JAN_1_2024_NS
    assert ex.advance_time(seconds=3600) == JAN_1_2024_NS + 3600 * 10**9
    assert ex.time_ns == JAN_1_2024_NS + 3_600_000_000_000


def test_alice_cross_long(ex: Exchange) -> None:
    pos = ex.position("alice", "BTCUSDT")
    wallet = 10_000 - TAKER_FEE  # 9,985
    assert pos.size == Decimal("0.5")
    assert pos.entry_price == Decimal("60000")
    assert pos.mark_price == Decimal("61000")
    assert pos.unrealized_pnl == QTY * (MARK - ENTRY) == 500
    assert pos.margin_mode == "CROSSED"
    assert pos.leverage == LEVERAGE
    assert pos.isolated_margin == 0
    assert pos.maintenance_margin == NOTIONAL_AT_MARK * MMR == 122
    assert pos.liquidation_price == liquidation_price(wallet, +1) == Decimal("40190.76305221")
    assert pos.bankruptcy_price == bankruptcy_price(wallet, +1) == Decimal("40030")
    assert pos.liquidation_price < pos.mark_price


def test_bob_isolated_short(ex: Exchange) -> None:
    pos = ex.position("bob", "BTCUSDT")
    # The position's margin is its initial margin at entry, less the maker fee it paid.
    isolated = NOTIONAL_AT_ENTRY / LEVERAGE - MAKER_FEE  # 1,494
    assert pos.size == Decimal("-0.5")
    assert pos.entry_price == Decimal("60000")
    assert pos.unrealized_pnl == -500
    assert pos.margin_mode == "ISOLATED"
    assert pos.leverage == LEVERAGE
    assert pos.isolated_margin == isolated
    assert pos.maintenance_margin == 122
    assert pos.liquidation_price == liquidation_price(isolated, -1)
    assert pos.bankruptcy_price == bankruptcy_price(isolated, -1) == Decimal("62988")
    assert pos.mark_price < pos.liquidation_price < pos.bankruptcy_price

    # 500 more margin moves both prices away from the mark by 500 / 0.5 = 1,000 (bankruptcy).
    assert ex.add_isolated_margin("bob", "BTCUSDT", "500") == isolated + 500
    pos = ex.position("bob", "BTCUSDT")
    assert pos.liquidation_price == liquidation_price(isolated + 500, -1)
    assert pos.bankruptcy_price == Decimal("63988")
    # Taking it back out is refused: 1,494 margin - 500 open loss < 1,525 initial margin.
    before = ex.state_hash()
    with pytest.raises(ExchangeError) as refused:
        ex.add_isolated_margin("bob", "BTCUSDT", "-500")
    assert refused.value.code == -4051
    assert isolated - 500 < NOTIONAL_AT_MARK / LEVERAGE
    assert ex.state_hash() == before


def test_accounts(ex: Exchange) -> None:
    alice = ex.account("alice")
    assert alice.wallet_balance == 10_000 - TAKER_FEE == Decimal("9985")
    assert alice.unrealized_pnl == 500
    assert alice.margin_balance == 10_485
    assert alice.maintenance_margin == 122
    # available = cross wallet + cross uPnL - initial margin at the mark (30,500 / 20)
    assert alice.available_balance == 9_985 + 500 - NOTIONAL_AT_MARK / LEVERAGE == 8_960
    bob = ex.account("bob")
    assert bob.wallet_balance == 10_000 - MAKER_FEE  # cross wallet + isolated margin
    assert bob.unrealized_pnl == -500
    assert bob.margin_balance == 10_000 - MAKER_FEE - 500
    # Conservation: what the traders lost in fees is what the exchange holds.
    assert ex.fees_collected() == TAKER_FEE + MAKER_FEE == 21
    assert ex.insurance_fund() == 0


def test_events_and_state_hash(ex: Exchange) -> None:
    events = ex.events()
    assert events, "the event log is empty"
    trades = [e for e in events if isinstance(e, TradeExecuted)]
    assert len(trades) == 1
    assert (trades[0].taker_account, trades[0].maker_account) == ("alice", "bob")

    before = ex.state_hash()
    with pytest.raises(ExchangeError) as refused:  # 100 BTC on 10,000 USDT at 20x
        ex.place_order("alice", "BTCUSDT", side="BUY", quantity="100", price="61000")
    assert refused.value.code == -2019
    assert ex.state_hash() == before, "a refused order changed the state"

    ex.deposit("alice", "1")
    after_deposit = ex.state_hash()
    assert after_deposit != before

    ex.advance_time(seconds=3600)
    assert ex.state_hash() != after_deposit, "the clock is part of the state"
    assert len(ex.events()) > len(events)
    ex.check_invariants()
