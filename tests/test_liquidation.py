"""Liquidation, insurance fund and auto-deleveraging: the process of DESIGN.md §5 held to its rules.

Sources: MECHANICS.md §0 (equity <= MM triggers), §1.4-1.5 (liquidation and bankruptcy
prices), §1.8 (process, clearance fee, insurance fund), §2.3 (the fund aggresses the book past
bankruptcy), §2.4 (ADL ranking PnL% × effective leverage). Markets use the 2024 BTCUSDT and
ETHUSDT brackets perpex ships (MECHANICS.md §1.1 table (a)) with zero fees unless a test is
about fees, so every figure below is derived by hand from those sections:

    isolated long 1 BTC at 100,000, 20x: margin 5,000, bankruptcy 95,000 (§1.5),
    liquidation 95,427.14 (§1.4 worked example A).

Everything goes through the public facade and `Engine.apply`; the index moves the mark
(mark_price="index").
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from perpex import Exchange, ExchangeError, Market
from perpex.core.engine import Engine
from perpex.core.liquidation import Candidate, LiquidationConfig, _more_underwater
from perpex.core.messages import (
    AutoDeleveraged,
    EndReason,
    Event,
    FundReason,
    InsuranceFundChanged,
    LiquidationTriggered,
    MarginCall,
    OrderCanceled,
    TradeExecuted,
    UpdateIndex,
)
from perpex.defaults import default_brackets

BTC = "BTCUSDT"
ETH = "ETHUSDT"
TICK_BTC = Decimal("0.1")
ATOMS = 10**6  # atoms per USDT


def btc_market(maker_fee: str = "0", taker_fee: str = "0") -> Market:
    return Market(
        symbol=BTC,
        tick_size="0.1",
        step_size="0.001",
        brackets=list(default_brackets()[BTC]),
        maker_fee=maker_fee,
        taker_fee=taker_fee,
        max_quantity="1000",
        max_market_quantity="1000",
    )


def eth_market() -> Market:
    return Market(
        symbol=ETH,
        tick_size="0.01",
        step_size="0.001",
        brackets=list(default_brackets()[ETH]),
        maker_fee="0",
        taker_fee="0",
        max_quantity="10000",
    )


def new_exchange(
    insurance_fund: str | None = None,
    markets: list[Market] | None = None,
    config: LiquidationConfig | None = None,
) -> Exchange:
    ex = Exchange(
        markets=markets or [btc_market()],
        insurance_fund=insurance_fund,
        liquidation=config,
        mark_price="index",
    )
    ex.deposit("maker", "100000000")  # the counterparty of every opening trade, 1x
    for m in markets or [btc_market()]:
        ex.set_leverage("maker", m.symbol, 1)
    return ex


def open_position(
    ex: Exchange,
    account: str,
    symbol: str,
    side: str,
    qty: str,
    entry: str,
    leverage: int,
    mode: str = "ISOLATED",
    counterparty: str = "maker",
) -> None:
    """The counterparty rests at the entry, the account takes it (the mark must allow it)."""
    if mode == "ISOLATED" and ex.position(account, symbol).margin_mode != "ISOLATED":
        ex.set_margin_mode(account, symbol, "ISOLATED")
    ex.set_leverage(account, symbol, leverage)
    other = "SELL" if side == "BUY" else "BUY"
    ex.place_order(counterparty, symbol, other, "LIMIT", qty, entry)
    assert ex.place_order(account, symbol, side, "LIMIT", qty, entry).status == "FILLED"


def move_index(ex: Exchange, symbol: str, price: str) -> list[Event]:
    """Set the index (= mark) and return the events of that one tick."""
    before = len(ex.events())
    ex.set_index_price(symbol, price)
    return ex.events()[before:]


def liquidated(events: list[Event]) -> list[str]:
    return [e.account for e in events if isinstance(e, LiquidationTriggered)]


def assert_sound(ex: Exchange) -> None:
    """Invariants, conservation and non-recourse after a pass (no trader closes by hand here)."""
    engine = ex.engine
    engine.check_invariants()
    deposited, held = engine.conservation_atoms()
    assert deposited == held
    assert engine.ledger.insurance.balance >= 0
    for name, acct in engine.accounts.items():
        assert acct.wallet.balance >= 0, f"{name}: wallet below zero"
        for pos in acct.positions.values():
            assert pos.margin.balance >= 0, f"{name}/{pos.symbol}: isolated margin below zero"


def ticks(price: Decimal, tick: Decimal) -> Fraction:
    return Fraction(price) / Fraction(tick)


# == 1. the liquidation price shown is where liquidation happens ==============================


@dataclass(frozen=True)
class TriggerCase:
    name: str
    mode: str
    side: str  # BUY opens a long
    qty: str
    entry: str
    leverage: int
    deposit: str
    setup: Callable[[Exchange], None] | None = None  # more positions before the check


def _eth_short_losing(ex: Exchange) -> None:
    """The trader is also short 10 ETH at 3,000 and ETH rises to 3,100 (UPNL1 = -1,000)."""
    ex.set_index_price(ETH, "3000")
    open_position(ex, "trader", ETH, "SELL", "10", "3000", 20, mode="CROSSED")
    ex.set_index_price(ETH, "3100")


ISO, CROSS = "ISOLATED", "CROSSED"
TRIGGER_CASES = [
    TriggerCase("isolated long 1 BTC 20x, bracket 2", ISO, "BUY", "1", "100000", 20, "5000"),
    TriggerCase("isolated short 1 BTC 20x, bracket 2", ISO, "SELL", "1", "100000", 20, "5000"),
    TriggerCase("isolated long 10 BTC 10x, bracket 3", ISO, "BUY", "10", "100000", 10, "100000"),
    TriggerCase("isolated short 40 BTC 5x, bracket 4", ISO, "SELL", "40", "100000", 5, "800000"),
    TriggerCase("cross long 1 BTC, wallet 5,000", CROSS, "BUY", "1", "100000", 20, "5000"),
    TriggerCase("cross short 10 BTC, bracket 3", CROSS, "SELL", "10", "100000", 10, "100000"),
    TriggerCase(
        "cross long 1 BTC beside a losing ETH short (TMM1, UPNL1)",
        CROSS,
        "BUY",
        "1",
        "100000",
        20,
        "10000",
        setup=_eth_short_losing,
    ),
]


@pytest.mark.parametrize("case", TRIGGER_CASES, ids=lambda c: c.name)
def test_liquidation_happens_exactly_at_the_shown_liquidation_price(case: TriggerCase) -> None:
    ex = new_exchange(markets=[btc_market(), eth_market()])
    ex.deposit("trader", case.deposit)
    if case.setup is not None:
        case.setup(ex)
    ex.set_index_price(BTC, case.entry)
    open_position(ex, "trader", BTC, case.side, case.qty, case.entry, case.leverage, case.mode)
    shown = ex.position("trader", BTC).liquidation_price
    assert shown is not None
    lp = ticks(shown, TICK_BTC)
    if case.side == "BUY":  # a long goes when the mark falls to LP or below
        safe, hit = math.floor(lp) + 1, math.floor(lp)
    else:  # a short goes when the mark rises to LP or above
        safe, hit = math.ceil(lp) - 1, math.ceil(lp)
    events = move_index(ex, BTC, str(safe * TICK_BTC))
    assert "trader" not in liquidated(events), f"liquidated one tick before {shown}"
    assert ex.position("trader", BTC).size != 0
    events = move_index(ex, BTC, str(hit * TICK_BTC))
    assert "trader" in liquidated(events), f"not liquidated one tick past {shown}"
    assert ex.position("trader", BTC).size == 0
    assert_sound(ex)


def test_equity_exactly_at_maintenance_margin_liquidates() -> None:
    """§0: liquidation when equity <= MM, equality included. Isolated long 1 BTC at 100,000
    with margin 5,425: at 95,000 equity = 425 = 95,000 x 0.5 % - 50 (bracket 2), so the shown
    LP is exactly 95,000.0; at 95,000.1 equity exceeds MM by 0.0995 and nothing happens."""
    ex = new_exchange()
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5425")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.add_isolated_margin("alice", BTC, "425")
    assert ex.position("alice", BTC).liquidation_price == Decimal("95000")
    assert liquidated(move_index(ex, BTC, "95000.1")) == []
    events = move_index(ex, BTC, "95000")
    assert [
        (e.margin_balance_atoms, e.maint_margin_atoms)
        for e in events
        if isinstance(e, LiquidationTriggered)
    ] == [(425 * ATOMS, 425 * ATOMS)]
    assert_sound(ex)


# == 2. thin book crash: slippage past bankruptcy, the fund pays, then ADL ====================

BANKRUPTCY_TICKS = 950_000  # 95,000.0: alice's isolated long, 1 BTC at 100,000 with 5,000


def _crash_setup(fund: str, config: LiquidationConfig | None = None) -> Exchange:
    """alice: isolated long 1 BTC at 100,000, 20x (bankruptcy 95,000, LP 95,427.14).

    Shorts against her, isolated, entry 100,000: s_hi 0.1 at 50x, s_mid 0.1 at 20x, s_lo 0.8
    at 10x; s_early is short 0.1 at 101,000 (isolated, 10x) against a 1x long. Bids: 0.3 at
    95,500 (above bankruptcy), 0.3 at 94,000 and 0.4 at 93,000 (below). Index at 97,000.
    """
    ex = new_exchange(insurance_fund=fund, config=config)
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5000")
    ex.set_margin_mode("alice", BTC, "ISOLATED")
    ex.set_leverage("alice", BTC, 20)
    for name, leverage, qty in (("s_hi", 50, "0.1"), ("s_mid", 20, "0.1"), ("s_lo", 10, "0.8")):
        ex.deposit(name, "100000")
        ex.set_margin_mode(name, BTC, "ISOLATED")
        ex.set_leverage(name, BTC, leverage)
        ex.place_order(name, BTC, "SELL", "LIMIT", qty, "100000")
    assert ex.place_order("alice", BTC, "BUY", "LIMIT", "1", "100000").status == "FILLED"
    ex.deposit("s_early", "100000")
    ex.set_margin_mode("s_early", BTC, "ISOLATED")
    ex.set_leverage("s_early", BTC, 10)
    ex.deposit("lender", "100000")
    open_position(ex, "lender", BTC, "BUY", "0.1", "101000", 1, counterparty="s_early")
    # s_mid also rests an ask far away: ADL must cancel it.
    ex.place_order("s_mid", BTC, "SELL", "LIMIT", "0.05", "104000")
    ex.deposit("bids", "1000000")
    ex.place_order("bids", BTC, "BUY", "LIMIT", "0.3", "95500")
    ex.set_index_price(BTC, "97000")  # the band now admits bids down to 92,150
    ex.place_order("bids", BTC, "BUY", "LIMIT", "0.3", "94000")
    ex.place_order("bids", BTC, "BUY", "LIMIT", "0.4", "93000")
    position = ex.position("alice", BTC)
    assert position.bankruptcy_price == Decimal("95000")
    assert position.liquidation_price == Decimal("95427.13567839")
    return ex


@dataclass(frozen=True)
class CrashCase:
    name: str
    fund: str
    fills: list[tuple[str, str]]  # (price, qty) of alice's liquidation fills, in order
    fund_after: str
    adl: list[tuple[str, str]]  # (counterparty, qty) in order


# Derivation (§1.5, §2.3): the 0.3 at 95,500 is 500 over bankruptcy per BTC (+150); each BTC
# sold at 94,000 costs 1,000 and at 93,000 costs 2,000. The fund may spend its balance plus
# the 150. Fund 1,000: all of it fits (150 - 300 - 800 = -950 paid, 50 left). Fund 500: 650
# buys 0.3 at 94,000 (300) and 0.175 at 93,000 (350); 0.225 left for ADL, the fund pays 500.
# Fund 0: 150 buys 0.15 at 94,000; 0.55 to ADL; nothing paid. ADL goes by the ranking below.
CRASH_CASES = [
    CrashCase("fund 1,000 covers the slippage", "1000",
              [("95500", "0.3"), ("94000", "0.3"), ("93000", "0.4")], "50", []),
    CrashCase("fund 500 runs out: ADL 0.225", "500",
              [("95500", "0.3"), ("94000", "0.3"), ("93000", "0.175")], "0",
              [("s_hi", "0.1"), ("s_mid", "0.1"), ("s_early", "0.025")]),
    CrashCase("no fund: ADL 0.55", "0",
              [("95500", "0.3"), ("94000", "0.15")], "0",
              [("s_hi", "0.1"), ("s_mid", "0.1"), ("s_early", "0.1"), ("s_lo", "0.25")]),
]  # fmt: skip


@pytest.mark.parametrize("case", CRASH_CASES, ids=lambda c: c.name)
def test_thin_book_crash_fund_pays_then_adl(case: CrashCase) -> None:
    ex = _crash_setup(case.fund)
    fund_before = ex.insurance_fund()
    assert fund_before == Decimal(case.fund)
    events = move_index(ex, BTC, "94600")
    assert liquidated(events) == ["alice"]
    fills = [e for e in events if isinstance(e, TradeExecuted)]
    assert all(e.liquidation and e.taker_account == "alice" for e in fills)
    assert all(e.taker_fee_atoms == 0 for e in fills)
    got = [(str(e.price_ticks * TICK_BTC), str(e.qty_lots * Decimal("0.001"))) for e in fills]
    assert [(Decimal(p), Decimal(q)) for p, q in got] == [
        (Decimal(p), Decimal(q)) for p, q in case.fills
    ]
    # slipped past bankruptcy: every fill after the first is below 95,000
    assert fills[0].price_ticks >= BANKRUPTCY_TICKS
    assert all(e.price_ticks < BANKRUPTCY_TICKS for e in fills[1:])
    assert ex.insurance_fund() == Decimal(case.fund_after)
    adl = [e for e in events if isinstance(e, AutoDeleveraged)]
    assert [(e.counterparty_account, e.qty_lots * Decimal("0.001")) for e in adl] == [
        (name, Decimal(q)) for name, q in case.adl
    ]
    assert all(e.price_ticks == BANKRUPTCY_TICKS and e.liquidated_account == "alice" for e in adl)
    if any(name == "s_mid" for name, _ in case.adl):
        canceled = [e for e in events if isinstance(e, OrderCanceled) and e.account == "s_mid"]
        assert [e.reason for e in canceled] == [EndReason.AUTO_DELEVERAGE]
    assert ex.position("alice", BTC).size == 0
    assert ex.account("alice").wallet_balance == 0  # she keeps nothing and owes nothing
    assert_sound(ex)


def test_adl_off_the_fund_walks_the_book_and_leaves_bad_debt() -> None:
    """ADL off, no fund: the rest after the bounded fund phase goes through the whole book
    (0.4 at 93,000 too), nobody is deleveraged, and the 950 the fund cannot pay stays on
    alice's account below zero: the bad debt a risk team compares with ADL's cost."""
    ex = _crash_setup("0", LiquidationConfig(adl=False))
    events = move_index(ex, BTC, "94600")
    assert liquidated(events) == ["alice"]
    fills = [(e.price_ticks, e.qty_lots) for e in events if isinstance(e, TradeExecuted)]
    # the bounded fund phase buys what 150 of room pays for (0.15 at 94,000), then the rest
    assert fills == [(955_000, 300), (940_000, 150), (940_000, 150), (930_000, 400)]
    assert not [e for e in events if isinstance(e, AutoDeleveraged)]
    assert ex.position("alice", BTC).size == 0
    assert ex.insurance_fund() == 0
    # +150 over bankruptcy at 95,500, -300 at 94,000, -800 at 93,000
    assert ex.account("alice").wallet_balance == Decimal("-950")
    ex.engine.check_invariants()
    deposited, held = ex.engine.conservation_atoms()
    assert deposited == held
    # the switch is state: hashed, snapshotted, restored
    twin = Engine.restore(ex.engine.snapshot())
    assert twin.state_hash() == ex.engine.state_hash()
    assert twin.liquidator.config.adl is False
    off = _crash_setup("0", LiquidationConfig(adl=False))
    assert _crash_setup("0").state_hash() != off.state_hash()


def test_adl_ranking_is_pnl_percent_times_effective_leverage() -> None:
    """The ADL order equals MECHANICS.md §2.4 computed here from the shown positions."""
    ex = _crash_setup("0")
    ex.set_index_price(BTC, "95500")  # not yet liquidated (LP 95,427.14)
    mark = Fraction(94600)
    expected: list[tuple[Fraction, str]] = []
    for name in ("s_hi", "s_mid", "s_lo", "s_early"):
        p = ex.position(name, BTC)
        qty = -Fraction(p.size)
        entry = Fraction(p.entry_price)
        assert p.margin_mode == "ISOLATED"
        behind = Fraction(p.isolated_margin)
        bankrupt = entry + behind / qty  # §1.5, short
        mark_value, entry_value, bankrupt_value = -qty * mark, -qty * entry, -qty * bankrupt
        pnl_pct = (mark_value - entry_value) / abs(entry_value)
        effective_leverage = abs(mark_value) / (mark_value - bankrupt_value)
        expected.append((pnl_pct * effective_leverage, name))
    order = [name for _, name in sorted(expected, key=lambda t: (-t[0], t[1]))]
    events = move_index(ex, BTC, "94600")
    adl = [e.counterparty_account for e in events if isinstance(e, AutoDeleveraged)]
    assert adl == order == ["s_hi", "s_mid", "s_early", "s_lo"]


def test_position_shows_adl_lights() -> None:
    """`Exchange.position().adl_quantile`: 1-5 lights, Binance-like (perpex.core.adl), derived
    here from §2.4 at a 95,500 mark. Shorts s_hi, s_mid, s_early, s_lo (0.1, 0.1, 0.1, 0.8 BTC)
    are all profitable; in score order the quantity at or above each is 0.1, 0.2, 0.3 and
    1.1 of 1.1 BTC: ceil(5 x share) = 1, 1, 2, 5 -> 5, 5, 4, 1 lights. The longs (alice,
    lender) are losing: 1 light each. An account without a position shows 0."""
    ex = _crash_setup("0")
    ex.set_index_price(BTC, "95500")
    mark = Fraction(95500)
    shorts = ("s_hi", "s_mid", "s_lo", "s_early")
    scored: list[tuple[Fraction, str, Fraction]] = []
    for name in shorts:
        p = ex.position(name, BTC)
        qty = -Fraction(p.size)
        entry = Fraction(p.entry_price)
        bankrupt = entry + Fraction(p.isolated_margin) / qty  # §1.5, short
        mark_value, entry_value, bankrupt_value = -qty * mark, -qty * entry, -qty * bankrupt
        pnl_pct = (mark_value - entry_value) / abs(entry_value)
        assert pnl_pct > 0
        score = pnl_pct * abs(mark_value) / (mark_value - bankrupt_value)
        scored.append((score, name, qty))
    scored.sort(key=lambda t: (-t[0], t[1]))
    total = sum(qty for _, _, qty in scored)
    expected: dict[str, int] = {}
    above = Fraction(0)
    for _, name, qty in scored:
        above += qty
        expected[name] = 6 - math.ceil(5 * above / total)
    assert expected == {"s_hi": 5, "s_mid": 5, "s_early": 4, "s_lo": 1}
    assert {name: ex.position(name, BTC).adl_quantile for name in shorts} == expected
    assert ex.position("alice", BTC).adl_quantile == 1
    assert ex.position("lender", BTC).adl_quantile == 1
    assert ex.position("bids", BTC).adl_quantile == 0


# == 3. what the fills make over bankruptcy goes to the fund ==================================


def test_surplus_over_bankruptcy_goes_to_the_fund_clearance_fee_first() -> None:
    """A stale bid at 97,000 buys alice's 1 BTC: 2,000 over bankruptcy. Fee 0.5 % of 97,000 =
    485 (§1.8), the other 1,515 is surplus; alice keeps her cross wallet, nothing more."""
    ex = new_exchange(insurance_fund="100")
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "6000")  # 5,000 goes into the isolated margin, 1,000 stays
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.deposit("bidder", "1000000")
    ex.place_order("bidder", BTC, "BUY", "LIMIT", "1", "97000")
    events = move_index(ex, BTC, "95400")
    assert liquidated(events) == ["alice"]
    changes = [(e.delta_atoms, e.reason) for e in events if isinstance(e, InsuranceFundChanged)]
    assert changes == [
        (485 * ATOMS, FundReason.CLEARANCE_FEE),
        (1515 * ATOMS, FundReason.LIQUIDATION_SURPLUS),
    ]
    assert ex.insurance_fund() == Decimal("2100")
    assert ex.account("alice").wallet_balance == Decimal("1000")
    history = ex.insurance_fund_history()
    assert [(h.reason, h.balance) for h in history] == [
        ("DEPOSIT", Decimal("100")),
        ("CLEARANCE_FEE", Decimal("585")),
        ("LIQUIDATION_SURPLUS", Decimal("2100")),
    ]
    assert_sound(ex)


def test_clearance_fee_is_capped_by_what_is_left() -> None:
    """Sold at 95,300: 300 over bankruptcy < 0.5 % x 95,300 = 476.5, so the fee is 300."""
    ex = new_exchange()
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5000")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.deposit("bidder", "1000000")
    ex.place_order("bidder", BTC, "BUY", "LIMIT", "1", "95300")
    events = move_index(ex, BTC, "95400")
    changes = [(e.delta_atoms, e.reason) for e in events if isinstance(e, InsuranceFundChanged)]
    assert changes == [(300 * ATOMS, FundReason.CLEARANCE_FEE)]
    assert_sound(ex)


def test_liquidation_fills_pay_maker_fees_and_no_taker_fee() -> None:
    ex = new_exchange(markets=[btc_market(maker_fee="0.0002", taker_fee="0.0005")])
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5100")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.deposit("bidder", "1000000")
    ex.place_order("bidder", BTC, "BUY", "LIMIT", "1", "97000")
    fees_before = ex.fees_collected()
    events = move_index(ex, BTC, "95000")
    fills = [e for e in events if isinstance(e, TradeExecuted)]
    assert [(e.taker_fee_atoms, e.maker_fee_atoms, e.liquidation) for e in fills] == [
        (0, 19_400_000, True)  # 0.02 % of 97,000 = 19.4
    ]
    assert ex.fees_collected() - fees_before == Decimal("19.4")
    assert_sound(ex)


def test_fund_closes_no_further_than_the_distance_bound() -> None:
    """With the bound at 1.6 %, ceil(94,600 x 0.984) = 93,086.4: the 0.4 bid at 93,000 is out
    of the fund's reach although its balance could pay, so that part goes to ADL."""
    ex = _crash_setup("1000000", LiquidationConfig(max_fund_distance_ppm=16_000))
    events = move_index(ex, BTC, "94600")
    fills = [e for e in events if isinstance(e, TradeExecuted)]
    assert [(e.price_ticks, e.qty_lots) for e in fills] == [(955_000, 300), (940_000, 300)]
    assert sum(e.qty_lots for e in events if isinstance(e, AutoDeleveraged)) == 400
    assert ex.insurance_fund() == Decimal("1000000") - 150  # 150 - 300 = -150 paid
    assert_sound(ex)


# == 4. cascades ================================================================================


def cascade_setup() -> Exchange:
    """Longs at 100,000: carol 1 BTC 50x isolated (bankruptcy 98,000), bob 2 BTC 25x cross
    (96,000), alice 1 BTC 20x isolated (95,000). At a 98,500 mark, three 40-50x cross accounts
    rest bids above the coming crash: dave 1 at 97,000, frank 1 at 96,500, gina 1 at 96,000;
    erin rests deep bids 0.7 at 94,500, 1 at 94,000, 1 at 93,600. Fund 300. The index then
    crashes to 95,200 in one tick."""
    ex = new_exchange(insurance_fund="300")
    ex.set_index_price(BTC, "100000")
    ex.deposit("carol", "2000")
    open_position(ex, "carol", BTC, "BUY", "1", "100000", 50)
    ex.deposit("bob", "8000")
    open_position(ex, "bob", BTC, "BUY", "2", "100000", 25, mode="CROSSED")
    ex.deposit("alice", "5000")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.set_index_price(BTC, "98500")
    for name, deposit, leverage, price in (
        ("dave", "2000", 50, "97000"),
        ("frank", "1950", 50, "96500"),
        ("gina", "2450", 40, "96000"),
    ):
        ex.deposit(name, deposit)
        ex.set_leverage(name, BTC, leverage)
        ex.place_order(name, BTC, "BUY", "LIMIT", "1", price)
    ex.deposit("erin", "1000000")
    for qty, price in (("0.7", "94500"), ("1", "94000"), ("1", "93600")):
        ex.place_order("erin", BTC, "BUY", "LIMIT", qty, price)
    assert not liquidated(ex.events())
    return ex


CRASH_TICKS = 952_000


def cascade_run() -> tuple[Exchange, list[Event]]:
    ex = cascade_setup()
    return ex, move_index(ex, BTC, "95200")


def test_cascade_follows_in_the_same_tick_deterministically() -> None:
    ex, events = cascade_run()
    order = liquidated(events)
    # Most underwater first: carol (equity -2,800) and bob (-1,600) are past bankruptcy,
    # alice has 200 against an MM of 426. dave had no position when the tick began: the
    # liquidations filled his stale 97,000 bid at a loss to a 95,200 mark, in the same tick.
    assert order[:3] == ["carol", "bob", "alice"]
    assert "dave" in order
    dave_fill = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, TradeExecuted) and e.maker_account == "dave" and e.liquidation
    )
    dave_liq = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, LiquidationTriggered) and e.account == "dave"
    )
    assert dave_fill < dave_liq
    assert_sound(ex)
    # the same commands give the same events and the same state, every time
    again, events_again = cascade_run()
    assert events_again == events
    assert again.state_hash() == ex.state_hash()


def test_cascade_replays_identically_on_a_restored_engine() -> None:
    """Snapshot just before the crash: the restored engine (holder index rebuilt) gives the
    same liquidations, fills and ADL as the original, and the same state."""
    before = cascade_setup().engine
    twin = Engine.restore(before.snapshot())
    assert twin.state_hash() == before.state_hash()
    assert twin.holders == before.holders
    crash = UpdateIndex(BTC, CRASH_TICKS)
    assert twin.apply(crash) == before.apply(crash)
    assert twin.state_hash() == before.state_hash() == cascade_run()[0].state_hash()


def test_print_one_cascade_run() -> None:
    """The figures of issue 3's closing note (visible with pytest -s)."""
    ex, events = cascade_run()
    history = ex.insurance_fund_history()
    fund_before = history[0].balance
    adl_lots = sum(e.qty_lots for e in events if isinstance(e, AutoDeleveraged))
    book_lots = sum(e.qty_lots for e in events if isinstance(e, TradeExecuted) and e.liquidation)
    paid = sum(-h.delta for h in history if h.reason == "LIQUIDATION_DEFICIT")
    received = sum(h.delta for h in history if h.reason != "DEPOSIT" and h.delta > 0)
    print(
        f"\ncascade: {len(liquidated(events))} liquidations in one tick "
        f"({', '.join(liquidated(events))}); liquidation fills {book_lots / 1000} BTC; "
        f"fund {fund_before} -> {ex.insurance_fund()} (received {received}, paid {paid}); "
        f"ADL volume {adl_lots / 1000} BTC"
    )
    assert len(liquidated(events)) >= 4
    assert ex.insurance_fund() >= 0


# == 5. bounded passes: at most N per tick, the rest queued ===================================


def test_at_most_n_per_tick_the_rest_queued_and_first_next_time() -> None:
    config = LiquidationConfig(max_liquidations_per_tick=1)
    ex = new_exchange(insurance_fund="100000", config=config)
    ex.set_index_price(BTC, "100000")
    for name, leverage in (("a_10x", 10), ("b_50x", 50), ("c_20x", 20)):
        ex.deposit(name, "10000")
        open_position(ex, name, BTC, "BUY", "1", "100000", leverage)
    ex.deposit("bidder", "10000000")
    ex.place_order("bidder", BTC, "BUY", "LIMIT", "10", "95000")
    # At 89,000 everyone is past bankruptcy: equity a -1,000, b -9,000, c -6,000.
    events = move_index(ex, BTC, "89000")
    assert liquidated(events) == ["b_50x"]
    queue = ex.engine.liquidator.queue
    assert queue == [("c_20x", BTC), ("a_10x", BTC)]  # deepest first
    with_queue = ex.state_hash()
    ex.engine.liquidator.queue = []
    assert ex.state_hash() != with_queue  # the queue is part of the state hash
    ex.engine.liquidator.queue = queue
    # the queue is state: a restored engine has it and handles it the same way
    twin = Engine.restore(ex.engine.snapshot())
    assert twin.liquidator.queue == ex.engine.liquidator.queue
    events = move_index(ex, BTC, "89000")
    assert liquidated(events) == ["c_20x"]
    assert twin.apply(UpdateIndex(BTC, 890_000)) == events
    events = move_index(ex, BTC, "89000")
    assert liquidated(events) == ["a_10x"]
    assert ex.engine.liquidator.queue == []
    assert_sound(ex)


def _cand(equity: int, mm: int, account: str, symbol: str = BTC) -> Candidate:
    return Candidate(equity, mm, account, symbol, True)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(_cand(-5, 1, "z"), _cand(-1, 100, "a"), id="deeper deficit first"),
        pytest.param(_cand(0, 1, "z"), _cand(1, 100, "a"), id="bankrupt before solvent"),
        pytest.param(_cand(10, 9, "z"), _cand(10, 8, "a"), id="higher MM/equity first"),
        pytest.param(_cand(3, 3, "z"), _cand(7, 6, "a"), id="ratio 1 before 6/7"),
        pytest.param(_cand(2, 1, "a"), _cand(4, 2, "b"), id="equal ratio: by name"),
        pytest.param(_cand(2, 1, "a", BTC), _cand(2, 1, "a", ETH), id="then by symbol"),
    ],
)
def test_most_underwater_first_exactly(first: Candidate, second: Candidate) -> None:
    key = functools.cmp_to_key(_more_underwater)
    assert sorted([second, first], key=key) == [first, second]
    assert sorted([first, second], key=key) == [first, second]


# == 6. cross accounts, margin calls ===========================================================


def test_cross_account_goes_whole() -> None:
    """bob is cross long 1 BTC and short 5 ETH (wallet 7,000). At a 93,300 BTC mark his margin
    balance is 300, below the 416.5 + ETH MM: every cross position and every order goes; the
    first position gives up its share of the balance (§5.2), the rest follows, wallet 0."""
    ex = new_exchange(insurance_fund="100000", markets=[btc_market(), eth_market()])
    ex.set_index_price(BTC, "100000")
    ex.set_index_price(ETH, "3000")
    ex.deposit("bob", "7000")
    open_position(ex, "bob", BTC, "BUY", "1", "100000", 20, mode="CROSSED")
    open_position(ex, "bob", ETH, "SELL", "5", "3000", 20, mode="CROSSED")
    ex.deposit("book", "10000000")
    ex.place_order("book", BTC, "BUY", "LIMIT", "2", "95500")
    ex.place_order("book", ETH, "SELL", "LIMIT", "10", "3005")
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.5", "104000")  # open orders, both symbols
    ex.place_order("bob", ETH, "BUY", "LIMIT", "1", "2900")
    assert liquidated(move_index(ex, BTC, "93600")) == []  # balance 600 > MM
    events = move_index(ex, BTC, "93300")
    triggered = [
        (e.account, e.symbol, e.isolated) for e in events if isinstance(e, LiquidationTriggered)
    ]
    assert triggered == [("bob", BTC, False), ("bob", ETH, False)]
    canceled = [e.reason for e in events if isinstance(e, OrderCanceled) and e.account == "bob"]
    assert canceled == [EndReason.LIQUIDATION, EndReason.LIQUIDATION]
    assert ex.position("bob", BTC).size == 0 and ex.position("bob", ETH).size == 0
    assert ex.account("bob").wallet_balance == 0
    assert_sound(ex)


def test_isolated_liquidation_leaves_the_rest_of_the_account() -> None:
    """alice's isolated BTC long goes; her cross ETH position, its order and wallet stay."""
    ex = new_exchange(insurance_fund="1000", markets=[btc_market(), eth_market()])
    ex.set_index_price(BTC, "100000")
    ex.set_index_price(ETH, "3000")
    ex.deposit("alice", "7000")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    open_position(ex, "alice", ETH, "BUY", "5", "3000", 20, mode="CROSSED")
    ex.place_order("alice", ETH, "SELL", "LIMIT", "1", "3100")
    wallet = ex.account("alice").cross_wallet_balance
    events = move_index(ex, BTC, "95000")
    assert liquidated(events) == ["alice"]
    assert ex.position("alice", ETH).size == Decimal("5")
    assert len(ex.open_orders("alice", ETH)) == 1
    assert ex.account("alice").cross_wallet_balance == wallet
    assert_sound(ex)


def test_margin_call_when_the_ratio_crosses_80_percent() -> None:
    """alice's isolated long (margin 5,000): MM/equity = 80 % near 95,9xx; call once."""
    ex = new_exchange(insurance_fund="1000")
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5000")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    calls = [e for e in move_index(ex, BTC, "97000") if isinstance(e, MarginCall)]
    assert calls == []  # equity 2,000, MM 435: 21.75 %
    calls = [e for e in move_index(ex, BTC, "95500") if isinstance(e, MarginCall)]
    # equity 500, MM 95,500 x 0.5 % - 50 = 427.5: ratio 85.5 %
    assert calls == [MarginCall("alice", BTC, 855_000, True)]
    calls = [e for e in move_index(ex, BTC, "95480") if isinstance(e, MarginCall)]
    assert calls == []  # still above 80 %: no new call
    assert_sound(ex)


# == 7. non-recourse over random crashes ======================================================


def random_crash_run(seed: int) -> tuple[int, int]:
    """One random run: 10 traders with random modes and leverage (up to 100x) trade with each
    other and with a deep-pocketed lp, rest a thin ladder, then the index jumps around (gaps
    of up to 6 %, well past many bankruptcy prices) with a small fund or none. Checked after
    every pass; returns (liquidations, ADL fills)."""
    rng = random.Random(seed)
    ex = new_exchange(insurance_fund=str(rng.choice((0, 0, 50, 500, 5000))))
    ex.set_index_price(BTC, "100000")
    traders = [f"t{i}" for i in range(10)]
    for name in traders:
        ex.deposit(name, str(rng.randint(1_000, 20_000)))
        if rng.random() < 0.5:
            ex.set_margin_mode(name, BTC, "ISOLATED")
        ex.set_leverage(name, BTC, rng.choice((5, 10, 20, 50, 100)))
    ex.deposit("lp", "100000000")
    for _ in range(16):
        maker, taker = rng.sample([*traders, "lp"], 2)
        side = rng.choice(("BUY", "SELL"))
        qty = str(Decimal(rng.randint(10, 150)) / 1000)
        price = str(100000 + rng.randint(-300, 300))
        try:
            ex.place_order(maker, BTC, "SELL" if side == "BUY" else "BUY", "LIMIT", qty, price)
            ex.place_order(taker, BTC, side, "LIMIT", qty, price)
        except ExchangeError:  # not enough margin for that draw
            pass
    for _ in range(30):  # a thin ladder on both sides, partly from the traders themselves
        who = rng.choice([*traders, "lp"])
        side = rng.choice(("BUY", "SELL"))
        offset = rng.randint(50, 4_800)
        price = 100000 - offset if side == "BUY" else 100000 + offset
        try:
            qty = str(Decimal(rng.randint(1, 80)) / 1000)
            ex.place_order(who, BTC, side, "LIMIT", qty, str(price))
        except ExchangeError:  # refused (margin, band): fine
            pass
    assert_sound(ex)
    mark = 100000
    for _ in range(25):
        mark = max(1000, mark + rng.randint(-6_000, 6_000))
        ex.set_index_price(BTC, str(mark))
        assert_sound(ex)
    events = ex.events()
    return (
        sum(isinstance(e, LiquidationTriggered) for e in events),
        sum(isinstance(e, AutoDeleveraged) for e in events),
    )


def test_non_recourse_after_every_pass_random_crashes() -> None:
    """After every pass: no wallet or isolated margin below zero, the fund >= 0, the ledger
    sums to zero, conservation holds, long lots = short lots (`check_invariants`)."""
    liquidations = adl_fills = 0
    for seed in range(60):
        n_liq, n_adl = random_crash_run(seed)
        liquidations += n_liq
        adl_fills += n_adl
    assert liquidations >= 100 and adl_fills >= 20, (liquidations, adl_fills)  # not vacuous


def test_fund_seed_and_liquidations_survive_the_journal(tmp_path: Path) -> None:
    """The seed is a journaled command (EXTERNAL -> INSURANCE) applied once, on a fresh
    journal; liquidations are recomputed on replay: reopening gives the same fund and state
    hash. (The history is read from the event log, which a recovery rebuilds only from the
    commands it replays after the last snapshot.)"""
    db = tmp_path / "exchange.db"
    ex = Exchange(markets=[btc_market()], journal=db, insurance_fund="1000", mark_price="index")
    ex.deposit("maker", "100000000")
    ex.set_leverage("maker", BTC, 1)
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5000")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.deposit("bidder", "1000000")
    ex.place_order("bidder", BTC, "BUY", "LIMIT", "1", "94000")
    assert liquidated(move_index(ex, BTC, "95000")) == ["alice"]
    assert ex.insurance_fund() == Decimal("0")  # sold at 94,000: the fund paid 1,000
    assert [h.reason for h in ex.insurance_fund_history()] == ["DEPOSIT", "LIQUIDATION_DEFICIT"]
    state = ex.state_hash()
    ex.close()
    again = Exchange(
        markets=[btc_market()], journal=db, insurance_fund="1000", mark_price="index"
    )
    assert again.state_hash() == state  # the seed was not applied a second time
    assert again.insurance_fund() == Decimal("0")
    again.engine.check_invariants()
    again.close()
