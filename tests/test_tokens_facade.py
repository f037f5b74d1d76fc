"""Leveraged tokens through the `Exchange` facade (issue 14): the listing, creation and
redemption, the views, the refusals, the journal and the driver path.

The worked example is FTX's (MECHANICS.md §6.1), scaled x1000 so the pool's trades are whole
lots: 200,000 USDT of a +3x token at NAV 100 is 2,000 tokens holding 10 BTC at 60,000; +5 %
takes NAV to 115 and the leverage to 630,000 / 230,000 = 2.7391x; the daily rebalance buys
back to 3 x 230,000 / 63,000 = 10.952380 BTC, i.e. 952 lots of 0.001 BTC (the target is
truncated to the lot). A maker quotes both sides at the mark with no trading fees, so every
fill is at the mark and NAV moves only with it.

The clock starts at the epoch (1970-01-01 00:00 UTC), so "00:02" is 120 s in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest

from perpex import Exchange, ExchangeError, Token, TokenInfo
from perpex.core.messages import (
    CreateTokens,
    RedeemTokens,
    RequestRejected,
    TokenHalted,
    TokenRebalanced,
    TokenRebalanceReason,
    TokensCreated,
)
from perpex.core.tokens import TOKEN_UNITS, TokenSpec
from perpex.defaults import default_markets
from perpex.exchange_tokens import compile_token
from perpex.journal import ConfigMismatch

BTC: Final = "BTCUSDT"
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ATOMS: Final = 10**6
BTCUP3: Final = Token(
    name="BTCUP3", symbol=BTC, leverage="3", creation_fee="0.001", redemption_fee="0.001",
    rebalance_time="00:02", threshold="0.3333", slices=1, slice_interval=60, initial_nav="100",
)  # fmt: skip
FREE_BTCUP3: Final = dataclasses.replace(BTCUP3, creation_fee="0", redemption_fee="0")
BTCDOWN3: Final = dataclasses.replace(BTCUP3, name="BTCDOWN3", leverage="-3")


def fee_free_markets() -> list[object]:
    """BTCUSDT without trading fees (the worked example's frictionless book), ETHUSDT as is."""
    return [
        dataclasses.replace(m, maker_fee="0", taker_fee="0") if m.symbol == BTC else m
        for m in default_markets()
    ]


def quote_at(ex: Exchange, mark: str, qty: str = "20") -> None:
    """The maker's ask at the mark, its bid one tick below."""
    bid = str(Decimal(mark) - Decimal("0.1"))
    ex.mass_quote("mm", BTC, bids=[(bid, qty)], asks=[(mark, qty)])


def exchange(tokens: list[Token], journal: Path | None = None) -> Exchange:
    return Exchange(fee_free_markets(), mark_price="index", journal=journal, tokens=tokens)  # type: ignore[arg-type]


def fund(ex: Exchange) -> None:
    ex.set_index_price(BTC, "60000")
    ex.deposit("mm", "1000000000")
    ex.deposit("alice", "1000000")
    quote_at(ex, "60000")


def ftx_example(ex: Exchange) -> None:
    """Create 200,000 USDT of BTCUP3, +5 %, then the clock to the daily rebalance at 00:02."""
    fund(ex)
    assert ex.create_tokens("alice", "BTCUP3", "200000") == Decimal(2000)
    ex.mass_quote("mm", BTC)  # pulled, so the index move trades nothing
    ex.set_index_price(BTC, "63000")
    quote_at(ex, "63000")
    ex.advance_time(120)


# -- the worked example ------------------------------------------------------------------------
def test_the_ftx_example_through_the_facade() -> None:
    ex = exchange([FREE_BTCUP3])
    fund(ex)
    assert ex.create_tokens("alice", "BTCUP3", "200000") == Decimal(2000)
    assert ex.token_balance("alice", "BTCUP3") == Decimal(2000)
    created = ex.token("BTCUP3")
    assert (created.nav, created.leverage, created.exposure) == (100, 3, 600_000)
    assert (created.tokens_outstanding, created.pool_equity) == (2000, 200_000)
    assert ex.position("#BTCUP3", BTC).size == Decimal(10)

    ex.mass_quote("mm", BTC)
    ex.set_index_price(BTC, "63000")
    moved = ex.token("BTCUP3")
    assert moved.nav == 115  # (200,000 + 10 x 3,000) / 2,000
    assert moved.leverage == Decimal("2.739130")  # 630,000 / 230,000, truncated to the ppm
    assert moved.last_rebalance is None
    assert moved.next_rebalance == EPOCH + timedelta(minutes=2)

    quote_at(ex, "63000")
    ex.take_events()
    ex.advance_time(120)
    (rebalance,) = [e for e in ex.events() if isinstance(e, TokenRebalanced)]
    assert rebalance.reason is TokenRebalanceReason.DAILY
    assert (rebalance.side, rebalance.filled_lots, rebalance.slippage_atoms) == (1, 952, 0)
    assert ex.position("#BTCUP3", BTC).size == Decimal("10.952")
    after = ex.token("BTCUP3")
    assert after == TokenInfo(
        name="BTCUP3", symbol=BTC, target_leverage=Decimal(3), nav=Decimal(115),
        leverage=Decimal("2.999895"),  # 10.952 x 63,000 / 230,000: the lot's rounding
        exposure=Decimal("689976"), tokens_outstanding=Decimal(2000),
        pool_equity=Decimal(230_000), halted=False,
        last_rebalance=EPOCH + timedelta(minutes=2),
        next_rebalance=EPOCH + timedelta(days=1, minutes=2),
    )  # fmt: skip
    ex.check_invariants()


def test_redemption_pays_nav_and_the_pool_sells_its_share() -> None:
    ex = exchange([FREE_BTCUP3])
    ftx_example(ex)
    wallet = ex.account("alice").wallet_balance
    # 1,000 of 2,000 tokens at NAV 115; the pool sells half its 10.952 BTC at the bid, one
    # tick under the mark (0.5476 USDT), and the redeemer bears its share of that exit:
    # half of 229,999.4524 = 114,999.7262.
    assert ex.redeem_tokens("alice", "BTCUP3", "1000") == Decimal("114999.7262")
    assert ex.account("alice").wallet_balance == wallet + Decimal("114999.7262")
    assert ex.token_balance("alice", "BTCUP3") == Decimal(1000)
    assert ex.position("#BTCUP3", BTC).size == Decimal("5.476")
    info = ex.token("BTCUP3")
    assert info.tokens_outstanding == 1000
    # the holders left keep exactly their half: the exit's slippage went with the redeemer
    assert info.pool_equity == Decimal("114999.7262")
    ex.check_invariants()


def test_the_nav_history_reads_the_event_log() -> None:
    ex = exchange([FREE_BTCUP3])
    ftx_example(ex)
    start, two_minutes = EPOCH, EPOCH + timedelta(minutes=2)
    assert ex.token_nav_history("BTCUP3") == [
        (start, Decimal(100)),  # TokensCreated: minted at 100
        (start, Decimal(100)),  # the creation's trade at the mark
        (two_minutes, Decimal(115)),  # the daily rebalance (the index move is no event)
    ]
    ex.take_events()  # the history covers what take_events has not handed over
    assert ex.token_nav_history("BTCUP3") == []
    ex.redeem_tokens("alice", "BTCUP3", "1")
    assert [time for time, _ in ex.token_nav_history("BTCUP3")] == [two_minutes] * 2


def test_creation_and_redemption_fees_go_to_the_exchange() -> None:
    ex = exchange([BTCUP3])  # 0.1 % each way; no trading fees
    fund(ex)
    # 10,000 USDT: a 10 USDT fee, 9,990 at NAV 100 = 99.9 tokens; the pool buys
    # 3 x 9,990 / 60,000 = 0.4995 BTC -> 0.499 at the mark, so its equity stays 9,990.
    assert ex.create_tokens("alice", "BTCUP3", "10000") == Decimal("99.9")
    assert ex.fees_collected() == Decimal(10)
    assert ex.token("BTCUP3").pool_equity == Decimal(9990)
    # Half back: the pool first sells its share, 0.249 of 0.499 BTC (rounded toward zero),
    # at the bid one tick under the mark (0.0249 USDT), so its equity is 9,989.9751; half of
    # it is 4,994.98755, less a 0.1 % fee rounded up (4.994988): 4,989.992562 paid.
    assert ex.redeem_tokens("alice", "BTCUP3", "49.95") == Decimal("4989.992562")
    assert ex.fees_collected() == Decimal("14.994988")
    assert ex.token_balance("alice", "BTCUP3") == Decimal("49.95")
    assert ex.token("BTCUP3").pool_equity == Decimal("4994.98755")
    assert ex.account("alice").wallet_balance == Decimal(1_000_000 - 10_000) + Decimal(
        "4989.992562"
    )
    ex.check_invariants()


def test_redeeming_dust_is_refused_and_the_smallest_paying_redemption_is_not() -> None:
    ex = exchange([BTCUP3])  # 0.1 % each way; no trading fees
    fund(ex)
    # 99.9 tokens on an equity of 9,990 USDT: 1e-8 token is worth exactly 1e-6 USDT (1 atom),
    # and the 0.1 % fee rounded up takes that atom: it would burn the token for nothing.
    assert ex.create_tokens("alice", "BTCUP3", "10000") == Decimal("99.9")
    assert_refused(ex, lambda x: x.redeem_tokens("alice", "BTCUP3", "0.00000001"), -1013)
    # 2e-8 token: 2 atoms less a 1-atom fee.
    assert ex.redeem_tokens("alice", "BTCUP3", "0.00000002") == Decimal("0.000001")
    assert ex.token_balance("alice", "BTCUP3") == Decimal("99.89999998")
    ex.check_invariants()


def test_a_short_token_sells_its_exposure() -> None:
    ex = exchange([FREE_BTCUP3, dataclasses.replace(BTCDOWN3, creation_fee="0")])
    fund(ex)
    assert ex.create_tokens("alice", "BTCDOWN3", "60000") == Decimal(600)
    info = ex.token("BTCDOWN3")
    assert ex.position("#BTCDOWN3", BTC).size == Decimal(-3)
    # sold at the bid, a tick under the mark: 3 BTC x 0.1 = 0.3 USDT of slippage, paid by the
    # pool, so its leverage is 180,000 / 59,999.7 = 3.000015x short
    assert (info.target_leverage, info.exposure) == (-3, -180_000)
    assert info.pool_equity == Decimal("59999.7")
    assert info.leverage == Decimal("-3.000015")


def test_a_halted_token_refuses_creation_and_redemption() -> None:
    """A gap through the pool's liquidation (an empty book: no threshold sale can fill)
    leaves it no equity: the token halts and both calls get Binance's -2010."""
    ex = exchange([FREE_BTCUP3])
    fund(ex)
    ex.create_tokens("alice", "BTCUP3", "200000")
    ex.mass_quote("mm", BTC)
    ex.take_events()
    ex.set_index_price(BTC, "36000")  # -40 %: a 3x pool loses 120 % of its equity
    assert any(isinstance(e, TokenHalted) for e in ex.events())
    info = ex.token("BTCUP3")
    assert info.halted and info.nav == 0
    assert_refused(ex, lambda x: x.create_tokens("alice", "BTCUP3", "100"), -2010)
    assert_refused(ex, lambda x: x.redeem_tokens("alice", "BTCUP3", "1"), -2010)
    assert ex.token_nav_history("BTCUP3")[-1][1] == 0


# -- refusals ------------------------------------------------------------------------------------
def assert_refused(ex: Exchange, call: Callable[[Exchange], object], code: int) -> None:
    before = ex.state_hash()
    with pytest.raises(ExchangeError) as info:
        call(ex)
    assert info.value.code == code, info.value
    assert info.value.msg
    assert ex.state_hash() == before


@dataclass(frozen=True)
class Case:
    name: str
    call: Callable[[Exchange], object]
    code: int


def create(account: object = "alice", token: object = "BTCUP3", amount: object = "100") -> Case:
    return Case("", lambda ex: ex.create_tokens(account, token, amount), 0)  # type: ignore[arg-type]


def redeem(account: object = "alice", token: object = "BTCUP3", qty: object = "1") -> Case:
    return Case("", lambda ex: ex.redeem_tokens(account, token, qty), 0)  # type: ignore[arg-type]


def case(name: str, template: Case, code: int) -> Case:
    return Case(name, template.call, code)


BAD_INPUT: Final = [
    case("create: unknown token", create(token="ETHUP3"), -1121),
    case("create: token in lower case", create(token="btcup3"), -1121),
    case("create: token a list", create(token=["BTCUP3"]), -1121),
    case("create: zero", create(amount="0"), -1013),
    case("create: negative", create(amount="-100"), -1013),
    case("create: more decimals than an atom", create(amount="100.0000001"), -1111),
    case("create: NaN", create(amount=Decimal("NaN")), -1013),
    case("create: a float", create(amount=100.0), -1013),
    case("create: 1e999999999999", create(amount="1e999999999999"), -1013),
    case("create: more than the balance", create(amount="2000000"), -2018),
    case("create: an account that never deposited", create(account="dave"), -2018),
    case("create: an account name with a space", create(account="al ice"), -1100),
    case("create: the pool's own account", create(account="#BTCUP3"), -1100),
    case("redeem: unknown token", redeem(token="BTCDOWN9"), -1121),
    case("redeem: zero", redeem(qty="0"), -4003),
    case("redeem: negative", redeem(qty="-1"), -4003),
    case("redeem: more decimals than TOKEN_UNITS", redeem(qty="1.000000001"), -1111),
    case("redeem: NaN", redeem(qty=Decimal("NaN")), -1013),
    case("redeem: a float", redeem(qty=1.0), -1013),
    case("redeem: 1e999999999999", redeem(qty="1e999999999999"), -4005),
    case("redeem: past the supply bound", redeem(qty="46116860184.27387905"), -4005),  # 2^62+1
    case("redeem: more than held", redeem(qty="2000.00000001"), -2019),
    case("redeem: an account holding none", redeem(account="bob"), -2019),
    case("redeem: an account that does not exist", redeem(account="dave"), -2019),
    Case("view: unknown token", lambda ex: ex.token("NOPE"), -1121),
    Case("balance: bad account", lambda ex: ex.token_balance("al ice", "BTCUP3"), -1100),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=lambda c: c.name)
def test_bad_input_is_refused_and_changes_nothing(case: Case) -> None:
    ex = exchange([FREE_BTCUP3])
    fund(ex)
    ex.deposit("bob", "100")
    ex.create_tokens("alice", "BTCUP3", "200000")  # alice holds 2,000 tokens
    assert_refused(ex, case.call, case.code)
    assert ex.token_balance("alice", "BTCUP3") == Decimal(2000)
    ex.check_invariants()


# -- the listing -------------------------------------------------------------------------------
def test_a_token_compiles_to_the_engines_integers() -> None:
    token = Token("ETHHALF", "ETHUSDT", leverage="-0.5", creation_fee="0.0005",
                  rebalance_time="23:59:30", threshold="0.5", slices=4, slice_interval="0.5",
                  initial_nav="10.25")  # fmt: skip
    assert compile_token(token) == TokenSpec(
        "ETHHALF", "ETHUSDT", -500_000, 500, 1_000, (23 * 3600 + 59 * 60 + 30) * 10**9,
        500_000, 4, 500_000_000, 10_250_000,
    )  # fmt: skip


BAD_TOKENS: Final = [
    (dataclasses.replace(BTCUP3, leverage="0"), "leverage"),
    (dataclasses.replace(BTCUP3, leverage="3.0000001"), "leverage"),
    (dataclasses.replace(BTCUP3, leverage="11"), "leverage"),
    (dataclasses.replace(BTCUP3, leverage="three"), "leverage"),
    (dataclasses.replace(BTCUP3, name="btcup3"), "name"),
    (dataclasses.replace(BTCUP3, name=""), "name"),
    (dataclasses.replace(BTCUP3, creation_fee="0.1"), "creation_fee"),
    (dataclasses.replace(BTCUP3, redemption_fee="-0.001"), "redemption_fee"),
    (dataclasses.replace(BTCUP3, rebalance_time="24:00"), "rebalance_time"),
    (dataclasses.replace(BTCUP3, rebalance_time="0:02"), "rebalance_time"),
    (dataclasses.replace(BTCUP3, threshold="0"), "threshold"),
    (dataclasses.replace(BTCUP3, slices=0), "slices"),
    (dataclasses.replace(BTCUP3, slices=True), "slices"),
    (dataclasses.replace(BTCUP3, slices=1440, slice_interval=61), "slices"),
    (dataclasses.replace(BTCUP3, slice_interval="0"), "slice_interval"),
    (dataclasses.replace(BTCUP3, initial_nav="0"), "initial_nav"),
    (dataclasses.replace(BTCUP3, symbol="XRPUSDT"), "not listed"),
]


@pytest.mark.parametrize(("token", "says"), BAD_TOKENS, ids=lambda v: str(v)[:60])
def test_a_bad_token_is_a_value_error_at_construction(token: Token, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Exchange(tokens=[token])


def test_a_token_listed_twice_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="listed twice"):
        Exchange(tokens=[BTCUP3, BTCUP3])


def test_a_start_time_with_tokens() -> None:
    ex = Exchange(start_time="2024-01-01T00:01:00Z", tokens=[BTCUP3])
    assert ex.token("BTCUP3").next_rebalance == datetime(2024, 1, 1, 0, 2, tzinfo=UTC)


# -- the journal ---------------------------------------------------------------------------------
def test_a_journaled_exchange_with_tokens_recovers_the_same_state(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with exchange([FREE_BTCUP3, BTCDOWN3], journal=path) as ex:
        ftx_example(ex)
        ex.create_tokens("alice", "BTCDOWN3", "1000")
        digest, up, down = ex.state_hash(), ex.token("BTCUP3"), ex.token("BTCDOWN3")
    with exchange([FREE_BTCUP3, BTCDOWN3], journal=path) as again:  # from the snapshot
        assert again.state_hash() == digest
        assert (again.token("BTCUP3"), again.token("BTCDOWN3")) == (up, down)
        assert again.token_balance("alice", "BTCUP3") == Decimal(2000)
        again.redeem_tokens("alice", "BTCUP3", "500")
        digest = again.state_hash()
        assert again.journal is not None
        again.journal.close(snapshot=False)  # as a crash: the redemption is in the rows only
    with exchange([FREE_BTCUP3, BTCDOWN3], journal=path) as third:
        assert third.state_hash() == digest
        assert third.token_balance("alice", "BTCUP3") == Decimal(1500)
        # the replayed events begin at the snapshot's clock (00:02), not at the epoch
        assert [time for time, _ in third.token_nav_history("BTCUP3")] == [
            EPOCH + timedelta(minutes=2)
        ] * 2
        third.check_invariants()


def test_tokens_are_part_of_the_journals_configuration(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    exchange([FREE_BTCUP3], journal=path).close()
    with pytest.raises(ConfigMismatch, match="tokens BTCUP3"):
        exchange([dataclasses.replace(FREE_BTCUP3, leverage="2")], journal=path)
    with pytest.raises(ConfigMismatch):
        exchange([], journal=path)


# -- the driver path -----------------------------------------------------------------------------
def test_submit_applies_typed_token_commands() -> None:
    ex = exchange([FREE_BTCUP3])
    fund(ex)
    created, redeemed, refused = ex.submit(
        [
            CreateTokens("alice", "BTCUP3", 1_000 * ATOMS),
            RedeemTokens("alice", "BTCUP3", 4 * TOKEN_UNITS),
            RedeemTokens("alice", "BTCUP3", 7 * TOKEN_UNITS),  # the engine's refusal: an event
        ]
    )
    assert isinstance(created[0], TokensCreated) and created[0].units == 10 * TOKEN_UNITS
    assert not isinstance(redeemed[0], RequestRejected)
    assert isinstance(refused[0], RequestRejected)
    assert ex.token_balance("alice", "BTCUP3") == Decimal(6)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (CreateTokens("alice", "ETHUP3", 1_000 * ATOMS), -1121),
        (CreateTokens("alice", "BTCUP3", 0), -1013),
        (CreateTokens("alice", "BTCUP3", 2**63), -1013),
        (CreateTokens("al ice", "BTCUP3", 1_000 * ATOMS), -1100),
        (CreateTokens("#BTCUP3", "BTCUP3", 1_000 * ATOMS), -1100),
        (RedeemTokens("alice", "BTCUP3", 0), -4003),
        (RedeemTokens("alice", "BTCUP3", True), -1013),
        (RedeemTokens("alice", "BTCUP3", 2**62 + 1), -4005),
        (RedeemTokens("alice", 3, 1), -1121),  # type: ignore[arg-type]
    ],
    ids=repr,
)
def test_submit_refuses_a_malformed_token_command_whole(command: object, code: int) -> None:
    ex = exchange([FREE_BTCUP3])
    fund(ex)
    before = ex.state_hash()
    with pytest.raises(ExchangeError) as info:
        ex.submit([CreateTokens("alice", "BTCUP3", 1_000 * ATOMS), command])  # type: ignore[list-item]
    assert (info.value.code, info.value.index) == (code, 1)
    assert ex.state_hash() == before  # the valid first command was not applied either
