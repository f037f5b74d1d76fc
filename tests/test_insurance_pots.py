"""Insurance funds per symbol: BTCUSDT and ETHUSDT with funds of their own, the rest sharing one.

MECHANICS.md §1.8 ("BTCUSDT and ETHUSDT have their own funds; other perpetuals share one"),
`LiquidationConfig.fund_symbols`. The money of every fund is one ledger bucket, INSURANCE; the
liquidator splits it into shares ("" the common fund, else a symbol). A liquidation of a
symbol is paid by, and pays into, that symbol's fund only: its takeover of the book past
bankruptcy is limited by that fund's balance, and what it cannot afford goes to ADL even when
another fund is rich.

The crash is the one of tests/test_liquidation.py §2 (`_crash_setup`), whose derivation
(MECHANICS.md §1.5, §2.3) gives the figures used here: alice's isolated long 1 BTC at 100,000,
20x, goes bust at 95,000; at a 94,600 mark the book holds 0.3 at 95,500 (+150 over
bankruptcy), 0.3 at 94,000 (-1,000 per BTC) and 0.4 at 93,000 (-2,000 per BTC). A fund of
1,000 or more covers all of it (150 - 300 - 800 = -950); a fund of 500 buys 0.3 at 94,000 and
0.175 at 93,000, pays 500 and leaves 0.225 BTC to ADL (s_hi 0.1, s_mid 0.1, s_early 0.025).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec
import pytest

from perpex import Exchange, ExchangeError
from perpex.core.engine import Engine, EngineError
from perpex.core.liquidation import LiquidationConfig
from perpex.core.messages import (
    AnyCommand,
    AutoDeleveraged,
    Command,
    DepositInsurance,
    FundReason,
    InsuranceFundChanged,
    RequestRejected,
    TradeExecuted,
)
from perpex.errors import error_for
from streams import default_specs
from test_liquidation import (
    ATOMS,
    BANKRUPTCY_TICKS,
    BTC,
    ETH,
    TICK_BTC,
    assert_sound,
    btc_market,
    eth_market,
    liquidated,
    move_index,
    open_position,
)
from test_risk_mirror import crash_stream

OWN_FUNDS: Final = LiquidationConfig(fund_symbols=(BTC, ETH))  # Binance (MECHANICS.md §1.8)
BTC_ONLY: Final = LiquidationConfig(fund_symbols=(BTC,))  # ETHUSDT draws on the common fund
LOT_BTC: Final = Decimal("0.001")


def pots(ex: Exchange) -> dict[str, Decimal]:
    """Each fund's balance through the facade: "" the common fund."""
    funds = ("", *ex.engine.liquidator.config.fund_symbols)
    return {fund: ex.insurance_fund(fund) for fund in funds}


def new_exchange(
    funds: dict[str, str], config: LiquidationConfig, journal: Path | None = None
) -> Exchange:
    """BTCUSDT and ETHUSDT without trading fees (test_liquidation's markets), seeded funds."""
    ex = Exchange(
        markets=[btc_market(), eth_market()],
        insurance_fund=funds,
        liquidation=config,
        mark_price="index",
        journal=journal,
    )
    ex.deposit("maker", "100000000")  # the counterparty of every opening trade, 1x
    for symbol in (BTC, ETH):
        ex.set_leverage("maker", symbol, 1)
    return ex


def crash_setup(funds: dict[str, str], config: LiquidationConfig) -> Exchange:
    """test_liquidation's `_crash_setup` on an exchange with both markets and several funds:
    alice isolated long 1 BTC at 100,000, 20x; isolated shorts s_hi 0.1 (50x), s_mid 0.1
    (20x), s_lo 0.8 (10x) at 100,000 and s_early 0.1 at 101,000 (10x); bids 0.3 at 95,500,
    0.3 at 94,000, 0.4 at 93,000; index 97,000."""
    ex = new_exchange(funds, config)
    ex.set_index_price(BTC, "100000")
    ex.set_index_price(ETH, "3000")
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
    ex.deposit("bids", "1000000")
    ex.place_order("bids", BTC, "BUY", "LIMIT", "0.3", "95500")
    ex.set_index_price(BTC, "97000")  # the band now admits bids down to 92,150
    ex.place_order("bids", BTC, "BUY", "LIMIT", "0.3", "94000")
    ex.place_order("bids", BTC, "BUY", "LIMIT", "0.4", "93000")
    assert ex.position("alice", BTC).bankruptcy_price == Decimal("95000")
    return ex


# == 1. a BTC crash is paid by the BTC fund only ================================================


@dataclass(frozen=True)
class PotCrash:
    name: str
    config: LiquidationConfig
    funds: dict[str, str]
    fills: list[tuple[str, str]]  # (price, qty) of alice's liquidation fills, in order
    adl: list[tuple[str, str]]  # (counterparty, qty), in order
    funds_after: dict[str, str]


POT_CRASHES = [
    PotCrash("one fund for all: 2,000,500 covers the slippage", LiquidationConfig(),
             {"": "2000500"}, [("95500", "0.3"), ("94000", "0.3"), ("93000", "0.4")], [],
             {"": "1999550"}),
    PotCrash("BTC fund 500 runs out while ETH and common are rich: ADL 0.225", OWN_FUNDS,
             {BTC: "500", ETH: "1000000", "": "1000000"},
             [("95500", "0.3"), ("94000", "0.3"), ("93000", "0.175")],
             [("s_hi", "0.1"), ("s_mid", "0.1"), ("s_early", "0.025")],
             {BTC: "0", ETH: "1000000", "": "1000000"}),
    PotCrash("BTC fund 500, ETH on the common fund of 2,000,000", BTC_ONLY,
             {BTC: "500", "": "2000000"},
             [("95500", "0.3"), ("94000", "0.3"), ("93000", "0.175")],
             [("s_hi", "0.1"), ("s_mid", "0.1"), ("s_early", "0.025")],
             {BTC: "0", "": "2000000"}),
    PotCrash("BTC fund 1,000 covers it: 50 left, the others untouched", OWN_FUNDS,
             {BTC: "1000", ETH: "7", "": "3"},
             [("95500", "0.3"), ("94000", "0.3"), ("93000", "0.4")], [],
             {BTC: "50", ETH: "7", "": "3"}),
]  # fmt: skip


@pytest.mark.parametrize("case", POT_CRASHES, ids=lambda c: c.name)
def test_btc_crash_draws_on_the_btc_fund_only(case: PotCrash) -> None:
    ex = crash_setup(case.funds, case.config)
    assert pots(ex) == {fund: Decimal(v) for fund, v in case.funds.items()}
    total_before = ex.insurance_fund()
    events = move_index(ex, BTC, "94600")
    assert liquidated(events) == ["alice"]
    fills = [e for e in events if isinstance(e, TradeExecuted)]
    assert [(e.price_ticks * TICK_BTC, e.qty_lots * LOT_BTC) for e in fills] == [
        (Decimal(p), Decimal(q)) for p, q in case.fills
    ]
    assert fills[0].price_ticks >= BANKRUPTCY_TICKS
    adl = [e for e in events if isinstance(e, AutoDeleveraged)]
    assert [(e.counterparty_account, e.qty_lots * LOT_BTC) for e in adl] == [
        (name, Decimal(q)) for name, q in case.adl
    ]
    assert pots(ex) == {fund: Decimal(v) for fund, v in case.funds_after.items()}
    paid = sum(Decimal(v) for v in case.funds.values()) - sum(
        Decimal(v) for v in case.funds_after.values()
    )
    assert ex.insurance_fund() == total_before - paid  # the total is the sum of the funds
    # every change names BTCUSDT and shows the balance of the BTC fund (or the only fund)
    changes = [e for e in events if isinstance(e, InsuranceFundChanged)]
    assert changes and all(e.symbol == BTC and e.account == "alice" for e in changes)
    assert changes[-1].balance_atoms == int(ex.insurance_fund(BTC) * ATOMS)
    assert ex.account("alice").wallet_balance == 0  # non-recourse
    assert_sound(ex)


def test_surplus_of_a_btc_liquidation_lands_in_the_btc_fund() -> None:
    """test_liquidation's surplus case: a stale bid at 97,000 buys alice's 1 BTC, 2,000 over
    bankruptcy: the clearance fee 485 (0.5 % of 97,000, §1.8) and the surplus 1,515 go to the
    BTC fund; the ETH and common funds do not move. The history shows the BTC fund's balance."""
    ex = new_exchange({BTC: "100", ETH: "200", "": "300"}, OWN_FUNDS)
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "6000")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.deposit("bidder", "1000000")
    ex.place_order("bidder", BTC, "BUY", "LIMIT", "1", "97000")
    events = move_index(ex, BTC, "95400")
    assert liquidated(events) == ["alice"]
    changes = [
        (e.delta_atoms, e.balance_atoms, e.reason, e.symbol)
        for e in events
        if isinstance(e, InsuranceFundChanged)
    ]
    assert changes == [
        (485 * ATOMS, 585 * ATOMS, FundReason.CLEARANCE_FEE, BTC),
        (1515 * ATOMS, 2100 * ATOMS, FundReason.LIQUIDATION_SURPLUS, BTC),
    ]
    assert pots(ex) == {BTC: Decimal(2100), ETH: Decimal(200), "": Decimal(300)}
    assert ex.insurance_fund() == Decimal(2600)
    history = [(h.reason, h.symbol, h.balance) for h in ex.insurance_fund_history()]
    assert history == [
        ("DEPOSIT", "", Decimal(300)),  # the seeds: the common fund first, then by symbol
        ("DEPOSIT", BTC, Decimal(100)),
        ("DEPOSIT", ETH, Decimal(200)),
        ("CLEARANCE_FEE", BTC, Decimal(585)),
        ("LIQUIDATION_SURPLUS", BTC, Decimal(2100)),
    ]
    assert_sound(ex)


def test_a_resting_close_past_bankruptcy_is_covered_by_its_symbols_fund() -> None:
    """test_non_recourse's case (`Engine._cover_flat_deficit`): a 125x isolated long 0.5 BTC at
    60,000 (margin 240) closes at 59,000 through a resting order: 240 - 500 = -260 with no
    fees here; the BTC fund pays it, the common fund does not move."""
    ex = new_exchange({BTC: "1000", "": "5000"}, BTC_ONLY)
    ex.set_index_price(BTC, "60000")
    ex.deposit("trader", "240")
    ex.set_leverage("trader", BTC, 125)
    ex.set_margin_mode("trader", BTC, "ISOLATED")
    ex.place_order("maker", BTC, "SELL", "LIMIT", "0.5", "60000")
    ex.place_order("trader", BTC, "BUY", "MARKET", "0.5")
    ex.place_order("trader", BTC, "SELL", "LIMIT", "0.5", "59000")  # rests: no bid to cross
    before = len(ex.events())
    ex.place_order("maker", BTC, "BUY", "MARKET", "0.5")  # lifts it
    paid = [e for e in ex.events()[before:] if isinstance(e, InsuranceFundChanged)]
    assert [(e.delta_atoms, e.balance_atoms, e.symbol) for e in paid] == [
        (-260 * ATOMS, 740 * ATOMS, BTC)
    ]
    assert ex.account("trader").wallet_balance == 0
    assert pots(ex) == {BTC: Decimal(740), "": Decimal(5000)}
    assert_sound(ex)


# == 2. deposits and the facade ==================================================================


def test_deposits_go_to_the_fund_named() -> None:
    """A deposit names a symbol (its fund: its own, or the common one it draws on) or ""."""
    engine = Engine(default_specs(), "index", liquidation=BTC_ONLY)
    deposits = [(5, BTC), (7, ""), (11, ETH), (13, BTC)]  # ETHUSDT draws on the common fund
    for usdt, symbol in deposits:
        events = engine.apply(DepositInsurance(usdt * ATOMS, symbol))
        assert events == [
            InsuranceFundChanged(
                usdt * ATOMS,
                engine.liquidator.fund_atoms(symbol),
                FundReason.DEPOSIT,
                "",
                symbol,
            )
        ]
    assert engine.liquidator.pots == {BTC: 18 * ATOMS, "": 18 * ATOMS}
    assert engine.ledger.insurance.balance == 36 * ATOMS
    assert engine.liquidator.fund_atoms() == 36 * ATOMS
    assert engine.liquidator.fund_atoms(ETH) == 18 * ATOMS
    engine.check_invariants()


def test_facade_seeds_and_reads_the_funds() -> None:
    ex = new_exchange({BTC: "1.5", "": "2"}, BTC_ONLY)
    assert ex.insurance_fund() == Decimal("3.5")  # all funds
    assert ex.insurance_fund(BTC) == Decimal("1.5")
    assert ex.insurance_fund(ETH) == Decimal("2")  # no fund of its own: the common one
    assert ex.insurance_fund("") == Decimal("2")
    # a plain amount still seeds the common fund, with one fund or several
    assert Exchange(insurance_fund="10", liquidation=OWN_FUNDS).insurance_fund("") == 10
    assert Exchange(insurance_fund="10").insurance_fund(BTC) == 10
    # zero amounts are no deposits
    quiet = Exchange(insurance_fund={BTC: "0", "": 0}, liquidation=BTC_ONLY)
    assert quiet.insurance_fund_history() == []


def test_one_fund_keeps_the_old_state_layout() -> None:
    """Without `fund_symbols` the liquidator's record is [config, queue], as before funds per
    symbol existed: the state hash and a journal's config fingerprint do not change."""
    engine = Engine(default_specs(), "index", insurance_fund_atoms=5 * ATOMS)
    config, queue = engine.liquidator.record()
    assert len(config) == 7 and queue == []
    assert engine.liquidator.pots == {"": 5 * ATOMS}
    own = Engine(default_specs(), "index", liquidation=OWN_FUNDS, insurance_fund_atoms=5 * ATOMS)
    config, queue, shares = own.liquidator.record()
    assert config[7] == [BTC, ETH] and shares == [["", 5 * ATOMS], [BTC, 0], [ETH, 0]]
    # the shares are state: the same bucket split differently hashes differently
    other = Engine(default_specs(), "index", liquidation=OWN_FUNDS)
    other.apply(DepositInsurance(5 * ATOMS, BTC))
    assert other.ledger.insurance.balance == own.ledger.insurance.balance
    assert other.state_hash() != own.state_hash()


def test_an_old_journal_deposit_decodes_into_the_common_fund() -> None:
    """`DepositInsurance.symbol` is last and defaults to "": a command journaled before it
    existed ([tag, amount]) decodes as a deposit into the common fund."""
    old = msgspec.msgpack.encode(["DepositInsurance", 1_000 * ATOMS])
    assert msgspec.msgpack.decode(old, type=AnyCommand) == DepositInsurance(1_000 * ATOMS, "")


# == 3. the shares always split the bucket ========================================================


def pot_stream(seed: int, config: LiquidationConfig) -> list[Command]:
    """test_risk_mirror's crash stream (both symbols gap by up to 6 % a tick, liquidations,
    fund payments, ADL, queues) with small deposits into each fund first."""
    rng = random.Random(seed)
    seeds: list[Command] = []
    for fund in ("", *config.fund_symbols):
        usdt = rng.choice((0, 50, 500, 5_000))
        if usdt:
            seeds.append(DepositInsurance(usdt * ATOMS, fund))
    return seeds + crash_stream(seed)


def check_shares(engine: Engine) -> None:
    pots_now = engine.liquidator.pots
    assert set(pots_now) == {"", *engine.liquidator.config.fund_symbols}
    assert all(atoms >= 0 for atoms in pots_now.values()), pots_now
    assert sum(pots_now.values()) == engine.ledger.insurance.balance
    engine.check_invariants()  # calls `Liquidator.check`: the same, where it is read


@pytest.mark.parametrize("config", [OWN_FUNDS, BTC_ONLY], ids=["BTC and ETH", "BTC only"])
def test_shares_sum_to_the_bucket_after_every_command_of_a_crash_stream(
    config: LiquidationConfig,
) -> None:
    """After every command: the shares sum to INSURANCE, none below zero; every fund change
    names a symbol, moves that symbol's fund by its delta and shows that fund's new balance."""
    moved: dict[str, int] = {}  # fund -> payouts seen, to make sure the test is not vacuous
    for seed in range(6):
        engine = Engine(default_specs(), "index", liquidation=config)
        for command in pot_stream(seed, config):
            before = dict(engine.liquidator.pots)
            events = engine.apply(command)
            for e in events:
                if isinstance(e, InsuranceFundChanged):
                    fund = engine.liquidator.fund_of(e.symbol)
                    before[fund] += e.delta_atoms
                    assert e.balance_atoms == before[fund], (command, e)
                    if e.delta_atoms < 0:
                        moved[fund] = moved.get(fund, 0) + 1
            assert before == engine.liquidator.pots, command
            check_shares(engine)
    # every fund that pays for a traded symbol paid something
    assert set(moved) == {engine.liquidator.fund_of(symbol) for symbol in (BTC, ETH)}


def test_snapshot_restore_keeps_the_shares() -> None:
    """Snapshot half-way through a crash stream: the restored engine has the same shares and
    hash, and the rest of the stream gives the same events and state on both."""
    for seed in range(3):
        commands = pot_stream(seed, OWN_FUNDS)
        half = len(commands) // 2 + seed * 37
        engine = Engine(default_specs(), "index", liquidation=OWN_FUNDS)
        for command in commands[:half]:
            engine.apply(command)
        twin = Engine.restore(engine.snapshot())
        assert twin.liquidator.pots == engine.liquidator.pots
        assert twin.liquidator.config == OWN_FUNDS
        assert twin.state_hash() == engine.state_hash()
        for command in commands[half:]:
            assert twin.apply(command) == engine.apply(command), command
        assert twin.state_hash() == engine.state_hash()
        assert twin.liquidator.pots == engine.liquidator.pots
        check_shares(twin)


def test_one_fund_restores_from_the_bucket() -> None:
    """With one fund the record holds no shares: the restored common fund is the bucket."""
    engine = Engine(default_specs(), "index")
    for command in pot_stream(1, LiquidationConfig()):
        engine.apply(command)
    assert engine.liquidator.pots == {"": engine.ledger.insurance.balance}
    twin = Engine.restore(engine.snapshot())
    assert twin.liquidator.pots == engine.liquidator.pots
    assert twin.state_hash() == engine.state_hash()


def test_funds_survive_the_journal(tmp_path: Path) -> None:
    """The seeds are journaled deposits applied once; reopening replays the liquidation and
    gives the same funds and state hash."""
    db = tmp_path / "exchange.db"
    funds = {BTC: "1000", ETH: "300", "": "200"}
    ex = new_exchange(funds, OWN_FUNDS, journal=db)
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5000")
    open_position(ex, "alice", BTC, "BUY", "1", "100000", 20)
    ex.deposit("bidder", "1000000")
    ex.place_order("bidder", BTC, "BUY", "LIMIT", "1", "94000")
    assert liquidated(move_index(ex, BTC, "95000")) == ["alice"]
    assert pots(ex) == {BTC: Decimal(0), ETH: Decimal(300), "": Decimal(200)}  # paid 1,000
    state = ex.state_hash()
    ex.close()
    again = Exchange(
        markets=[btc_market(), eth_market()],
        insurance_fund=funds,
        liquidation=OWN_FUNDS,
        mark_price="index",
        journal=db,
    )
    assert again.state_hash() == state  # the seeds were not applied a second time
    assert pots(again) == {BTC: Decimal(0), ETH: Decimal(300), "": Decimal(200)}
    again.check_invariants()
    again.close()


# == 4. bad input ================================================================================


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (DepositInsurance(100 * ATOMS, "XRPUSDT"), -1121),  # not listed
        (DepositInsurance(100 * ATOMS, "btcusdt"), -1121),  # symbols are upper case
        (DepositInsurance(0, BTC), -1013),
        (DepositInsurance(-5 * ATOMS, ""), -1013),
    ],
    ids=["unknown symbol", "lower case", "zero", "negative"],
)
def test_a_refused_deposit_changes_nothing(command: DepositInsurance, code: int) -> None:
    engine = Engine(default_specs(), "index", liquidation=BTC_ONLY)
    engine.apply(DepositInsurance(10 * ATOMS, BTC))
    state, shares = engine.state_hash(), dict(engine.liquidator.pots)
    events = engine.apply(command)
    assert len(events) == 1 and isinstance(events[0], RequestRejected)
    assert events[0].symbol == command.symbol  # the refusal names the symbol it was given
    assert error_for(events[0].reason).code == code
    assert engine.state_hash() == state and engine.liquidator.pots == shares
    engine.check_invariants()


def test_facade_refuses_a_fund_for_an_unlisted_symbol() -> None:
    with pytest.raises(ExchangeError) as seeded:
        Exchange(insurance_fund={"XRPUSDT": "100"}, liquidation=BTC_ONLY)
    assert seeded.value.code == -1121
    ex = Exchange(insurance_fund={BTC: "100"}, liquidation=BTC_ONLY)
    with pytest.raises(ExchangeError) as read:
        ex.insurance_fund("XRPUSDT")
    assert read.value.code == -1121
    with pytest.raises(ExchangeError) as amount:
        Exchange(insurance_fund={BTC: "-1"}, liquidation=BTC_ONLY)
    assert amount.value.code == -1013


@pytest.mark.parametrize(
    "fund_symbols",
    [(BTC, BTC), ("",), ["BTCUSDT"]],
    ids=["twice", "empty name", "not a tuple"],
)
def test_bad_fund_symbols_are_refused(fund_symbols: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        LiquidationConfig(fund_symbols=fund_symbols)


def test_a_fund_for_an_unlisted_symbol_is_refused() -> None:
    with pytest.raises(EngineError):
        Engine(default_specs(), "index", liquidation=LiquidationConfig(fund_symbols=("XRPUSDT",)))
