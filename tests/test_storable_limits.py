"""Every value the engine accepts stays storable (issue 11 §3, "A state that can no longer be
hashed or snapshotted").

The state hash and the snapshot encode integers as MessagePack int64, so the engine bounds the
root of every balance: the money that entered from outside (deposits - withdrawals + the
insurance funds' deposits and seed) is at most `MAX_TOTAL_ATOMS` = 2^62 atoms
(4,611,686,018,427.387904 USDT; `perpex.core.store` argues what that bounds). A deposit that
would pass it is refused with `TOTAL_DEPOSITS_LIMIT` (Binance-style code -1130) and changes
nothing; times are bounded the same way (`MAX_CLOCK_NS`). Before the limit, three deposits of
4,000,000,000,000 USDT were each accepted and then `state_hash()` and the snapshot raised
`OverflowError`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.engine import MAX_CLOCK_NS, MAX_TOTAL_ATOMS, Engine, EngineError
from perpex.core.messages import (
    AdvanceClock,
    Deposit,
    Deposited,
    DepositInsurance,
    Event,
    FundingSettled,
    OrderType,
    PlaceOrder,
    Reason,
    RequestRejected,
    SetFundingRate,
    TimeInForce,
    UpdateIndex,
    Withdraw,
    Withdrawn,
)
from perpex.errors import REASON_CODES
from streams import default_specs

BTC: Final = "BTCUSDT"
ETH: Final = "ETHUSDT"
HALF: Final = MAX_TOTAL_ATOMS // 2
HOUR_NS: Final = 3_600 * 10**9
LIMIT_CODE: Final = -1130  # the code `errors.REASON_CODES` gives TOTAL_DEPOSITS_LIMIT


def refused(events: list[Event], reason: Reason) -> bool:
    return (
        len(events) == 1 and isinstance(events[0], RequestRejected) and (events[0].reason == reason)
    )


def round_trips(engine: Engine) -> None:
    """The hash and the snapshot can be taken, and the snapshot rebuilds an equal engine."""
    engine.check_invariants()
    twin = Engine.restore(engine.snapshot())
    twin.check_invariants()
    assert twin.state_hash() == engine.state_hash()
    assert twin.snapshot() == engine.snapshot()


@pytest.fixture
def engine_at_the_cap() -> Engine:
    """alice and bob hold half of `MAX_TOTAL_ATOMS` each: the exchange is full."""
    engine = Engine(default_specs(), "index")
    engine.apply(UpdateIndex(BTC, 600_000))  # 60,000.0
    engine.apply(UpdateIndex(ETH, 30_000))  # 3,000.00
    for name in ("alice", "bob"):
        events = engine.apply(Deposit(name, HALF))
        assert isinstance(events[0], Deposited), events
    assert -engine.ledger.external.balance == MAX_TOTAL_ATOMS
    return engine


def test_the_limit_is_coded_like_the_other_engine_limits() -> None:
    assert REASON_CODES[Reason.TOTAL_DEPOSITS_LIMIT][0] == LIMIT_CODE
    assert MAX_TOTAL_ATOMS == 2**62


def test_deposits_up_to_the_cap_are_accepted_and_stay_storable(engine_at_the_cap: Engine) -> None:
    round_trips(engine_at_the_cap)


def test_one_atom_more_is_refused_and_changes_nothing(engine_at_the_cap: Engine) -> None:
    engine = engine_at_the_cap
    before = engine.state_hash()
    assert refused(engine.apply(Deposit("carol", 1)), Reason.TOTAL_DEPOSITS_LIMIT)
    assert refused(engine.apply(Deposit("alice", 1)), Reason.TOTAL_DEPOSITS_LIMIT)
    assert refused(engine.apply(DepositInsurance(1, "")), Reason.TOTAL_DEPOSITS_LIMIT)
    assert refused(engine.apply(DepositInsurance(1, BTC)), Reason.TOTAL_DEPOSITS_LIMIT)
    assert engine.state_hash() == before
    assert "carol" not in engine.accounts  # not even created
    round_trips(engine)


def test_a_withdrawal_makes_room_again(engine_at_the_cap: Engine) -> None:
    engine = engine_at_the_cap
    assert isinstance(engine.apply(Withdraw("alice", 10))[0], Withdrawn)
    assert isinstance(engine.apply(Deposit("carol", 10))[0], Deposited)
    assert refused(engine.apply(Deposit("carol", 1)), Reason.TOTAL_DEPOSITS_LIMIT)
    round_trips(engine)


def test_the_insurance_fund_counts_toward_the_total() -> None:
    engine = Engine(default_specs(), "index", insurance_fund_atoms=MAX_TOTAL_ATOMS - 5)
    assert isinstance(engine.apply(Deposit("alice", 5))[0], Deposited)
    assert refused(engine.apply(Deposit("bob", 1)), Reason.TOTAL_DEPOSITS_LIMIT)
    round_trips(engine)
    with pytest.raises(EngineError):  # a seed past the cap cannot even be built
        Engine(default_specs(), "index", insurance_fund_atoms=MAX_TOTAL_ATOMS + 1)


def test_a_full_exchange_trades_and_settles_funding_and_stays_storable(
    engine_at_the_cap: Engine,
) -> None:
    """Positions, fees, realized PnL and funding on top of the whole total: every stored
    integer (balances, cost bases, the FEES and FUNDING buckets, SETTLEMENT) still fits."""
    engine = engine_at_the_cap
    lots = 1_000_000  # 1,000 BTC: a position worth 60,000,000 USDT
    maker = PlaceOrder("bob", BTC, -1, OrderType.LIMIT, TimeInForce.GTC, lots, 600_000)
    taker = PlaceOrder("alice", BTC, 1, OrderType.LIMIT, TimeInForce.IOC, lots, 600_000)
    for cmd in (maker, taker):
        assert not any(isinstance(e, RequestRejected) for e in engine.apply(cmd))
    assert engine.accounts["alice"].positions[BTC].size_lots == lots
    engine.apply(UpdateIndex(BTC, 630_000))  # +5 %
    events = engine.apply(AdvanceClock(8 * HOUR_NS))  # the first funding time
    assert any(isinstance(e, FundingSettled) for e in events)
    round_trips(engine)


def test_time_is_bounded_too() -> None:
    """A clock or a funding time past `MAX_CLOCK_NS` (about 2116) is refused, not stored
    (before the bound, `AdvanceClock(2**64)` was accepted and the hash overflowed)."""
    engine = Engine(default_specs(), "index")
    before = engine.state_hash()
    assert refused(engine.apply(AdvanceClock(MAX_CLOCK_NS + 1)), Reason.TIME_STEP_TOO_LARGE)
    assert refused(engine.apply(AdvanceClock(2**64)), Reason.TIME_STEP_TOO_LARGE)
    assert engine.state_hash() == before
    engine.apply(UpdateIndex(BTC, 600_000))  # funding periods start
    indexed = engine.state_hash()
    period_ns = engine.markets[BTC].funding_config.period_ns
    far = (MAX_CLOCK_NS // period_ns + 1) * period_ns  # a funding time past the bound
    assert refused(engine.apply(SetFundingRate(BTC, far, 1_000)), Reason.INVALID_FUNDING_RATE)
    assert engine.state_hash() == indexed
    assert engine.apply(SetFundingRate(BTC, period_ns, 1_000)) == []  # a near one is taken
    round_trips(engine)
    empty = Engine(default_specs(), "index")  # no index, no funding: one step to the bound
    assert not refused(empty.apply(AdvanceClock(MAX_CLOCK_NS)), Reason.TIME_STEP_TOO_LARGE)
    assert empty.clock_ns == MAX_CLOCK_NS
    round_trips(empty)


# -- through the facade ---------------------------------------------------------------------
TRILLIONS: Final = "4000000000000"  # 4e12 USDT = 4e18 atoms: one fits, two do not
REST_OF_THE_CAP: Final = Decimal(MAX_TOTAL_ATOMS - 4 * 10**18).scaleb(-6)  # 611686018427.387904


def test_the_facade_refuses_the_deposit_that_would_pass_the_cap() -> None:
    ex = Exchange()
    assert ex.deposit("alice", TRILLIONS) == Decimal(TRILLIONS)
    before = ex.state_hash()
    with pytest.raises(ExchangeError) as refusal:
        ex.deposit("bob", TRILLIONS)  # the second deposit
    assert refusal.value.code == LIMIT_CODE
    assert ex.state_hash() == before
    assert ex.deposit("bob", str(REST_OF_THE_CAP)) == REST_OF_THE_CAP  # exactly the cap
    full = ex.state_hash()
    with pytest.raises(ExchangeError) as refusal:
        ex.deposit("carol", "0.000001")  # one atom more
    assert refusal.value.code == LIMIT_CODE
    assert ex.state_hash() == full
