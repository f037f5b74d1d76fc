"""The leveraged trader population (perpex.sim.agents.traders), driven by hand through a real
`Exchange(mark_price="index")`, a `MarketWorld` and a deep ladder maker, step by step as the
runner does it (common.md; the harness is tests/sim_driver.py): the draws follow the config,
entries happen at their steps with their protection, a crash liquidates the highest leverage
first and some come back.

Figures: BTCUSDT brackets (perpex/data, Binance 2024-10-24): bracket 1 to 50,000 USDT at
125x, MMR 0.4 %; bracket 2 to 600,000 at 100x, 0.5 %; bracket 3 to 3,000,000 at 75x.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
import pytest

from perpex.core.messages import (
    Deposit,
    Deposited,
    Event,
    ExitLadderPlaced,
    LiquidationTriggered,
    OrderAccepted,
    SetLeverage,
    SetMarginMode,
)
from perpex.core.units import PPM
from perpex.exchange import Exchange
from perpex.sim.agents.base import Dist, fixed
from perpex.sim.agents.config import TraderConfig
from perpex.sim.agents.traders import (
    PROTECT_LADDER,
    PROTECT_NONE,
    PROTECT_STOP,
    LeveragedTraders,
    cap_leverage,
    draw_traders,
)
from perpex.sim.world import MarketWorld
from sim_driver import BTC, PRICE_TICKS, STEP_NS, T0, Market

SEED = 7  # the traders' generators are the children of SeedSequence(SEED)


def share_ok(hits: int, n: int, p: float) -> bool:
    """`hits` of `n` is within 4.5 standard deviations of a share `p`."""
    return abs(hits - n * p) <= 4.5 * math.sqrt(n * p * (1 - p)) + 1


# -- the draws -----------------------------------------------------------------------------------
MIXED = TraderConfig(
    count=4_000,
    margin=fixed(100.0),  # 100 USDT x 100x fits bracket 2: no leverage is capped
    leverage=Dist("choice", values=(5, 10, 20, 50, 100), weights=(4, 3, 2, 1, 1)),
    long_share=0.6,
    isolated_share=0.3,
    stop_share=0.2,
    ladder_share=0.1,
    initial_share=0.7,
)


def test_draws_follow_the_config_shares() -> None:
    d = draw_traders(
        MIXED, Exchange().engine.state.markets[BTC].spec, 500, np.random.default_rng(1)
    )
    n = MIXED.count
    counts = Counter(d.leverage.tolist())
    assert set(counts) == {5, 10, 20, 50, 100}
    for lev, weight in zip((5, 10, 20, 50, 100), (4, 3, 2, 1, 1), strict=True):
        assert share_ok(counts[lev], n, weight / 11), (lev, counts[lev])
    assert share_ok(int((d.side == 1).sum()), n, 0.6)
    assert set(d.side.tolist()) == {1, -1}
    assert share_ok(int(d.isolated.sum()), n, 0.3)
    protection = Counter(d.protection.tolist())
    assert share_ok(protection[PROTECT_STOP], n, 0.2)
    assert share_ok(protection[PROTECT_LADDER], n, 0.1)
    assert share_ok(protection[PROTECT_NONE], n, 0.7)
    assert share_ok(int((d.entry_step == 0).sum()), n, 0.7)
    later = d.entry_step[d.entry_step > 0]
    assert later.min() >= 1 and later.max() < 500
    assert abs(later.mean() - 250) < 15  # uniform over [1, 500)
    assert ((d.stop_distance >= 0.01) & (d.stop_distance <= 0.05)).all()
    assert (d.margin_atoms == 100_000_000).all()
    assert ((d.reenter_delay >= 1) & (d.reenter_delay <= 60)).all()


def test_draws_are_deterministic_for_a_seed() -> None:
    market_spec = Exchange().engine.state.markets[BTC].spec
    a = draw_traders(MIXED, market_spec, 500, np.random.default_rng(42))
    b = draw_traders(MIXED, market_spec, 500, np.random.default_rng(42))
    c = draw_traders(MIXED, market_spec, 500, np.random.default_rng(43))
    for name in ("margin_atoms", "leverage", "side", "isolated", "entry_step", "stop_distance"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert not np.array_equal(a.entry_step, c.entry_step)


def test_leverage_is_capped_by_the_brackets() -> None:
    market_spec = Exchange().engine.state.markets[BTC].spec
    # 10,000 USDT at 125x is 1,250,000 (bracket 3 allows only 75x): 100x is 1,000,000, over
    # bracket 2's cap of 600,000; 75x is 750,000, inside bracket 3.
    capped = cap_leverage(
        market_spec,
        np.array([10_000, 1_000, 400, 100], dtype=np.int64) * 1_000_000,
        np.array([125, 125, 125, 125], dtype=np.int64),
    )
    # 1,000 x 100 = 100,000 fits bracket 2 (<= 600,000 at 100x), 1,000 x 101 is over 50,000;
    # 400 x 125 = 50,000 is exactly bracket 1's cap.
    assert capped.tolist() == [75, 100, 125, 125]
    # Against the naive rule (the largest L <= drawn with margin x L <= cap at L), at random.
    rng = np.random.default_rng(5)
    margin_atoms = (np.exp(rng.uniform(np.log(20), np.log(5e7), 2_000)) * 1e6).astype(np.int64)
    drawn = rng.integers(1, 126, 2_000)
    fast = cap_leverage(market_spec, margin_atoms, drawn)
    for m, lev, got in zip(margin_atoms.tolist(), drawn.tolist(), fast.tolist(), strict=True):
        want = lev
        while want > 1 and m * want > market_spec.max_notional_atoms_at(want):
            want -= 1
        assert got == want, (m, lev)


def test_accounts_and_setup_commands() -> None:
    config = TraderConfig(count=12, margin=fixed(123.4567891), isolated_share=0.5)
    traders = LeveragedTraders(config, BTC, 10)
    assert traders.accounts[0] == "t-00" and traders.accounts[-1] == "t-11"
    assert LeveragedTraders(TraderConfig(count=10_000), BTC, 10).accounts[-1] == "t-09999"
    ex = Exchange(mark_price="index")
    world = MarketWorld(ex, BTC, STEP_NS)
    commands = traders.start(world, np.random.default_rng(3))
    d = traders.draws
    assert d is not None
    deposits = [c for c in commands if isinstance(c, Deposit)]
    assert [c.account for c in deposits] == traders.accounts
    assert {c.amount_atoms for c in deposits} == {123_456_789}  # rounded down to the atom
    levels = [c for c in commands if isinstance(c, SetLeverage)]
    assert [c.leverage for c in levels] == d.leverage.tolist()
    modes = [c.account for c in commands if isinstance(c, SetMarginMode)]
    assert modes == [a for a, iso in zip(traders.accounts, d.isolated, strict=True) if iso]
    assert all(c.isolated for c in commands if isinstance(c, SetMarginMode))


# -- entries and protection ----------------------------------------------------------------
FLAT_STEPS = 40
PROTECTED = TraderConfig(
    count=300,
    leverage=Dist("choice", values=(2, 5, 10, 20, 50, 100)),
    stop_share=0.3,
    ladder_share=0.3,
    initial_share=0.5,
    ladder_targets=(0.01, 0.02, 0.03),
)


@dataclass
class FlatRun:
    market: Market
    traders: LeveragedTraders


@pytest.fixture(scope="module")
def flat_run() -> FlatRun:
    traders = LeveragedTraders(PROTECTED, BTC, FLAT_STEPS)
    market = Market([traders], seed=SEED)
    market.run([PRICE_TICKS] * FLAT_STEPS)
    return FlatRun(market, traders)


def test_every_trader_enters_at_its_step(flat_run: FlatRun) -> None:
    traders = flat_run.traders
    d = traders.draws
    assert d is not None
    assert traders.rejections == 0 and traders.entries_failed == 0
    assert len(traders.entries) == PROTECTED.count
    by_account = {e.account: e for e in traders.entries}
    for i, account in enumerate(traders.accounts):
        e = by_account[account]
        assert e.step == d.entry_step[i]
        assert e.side == d.side[i] and e.leverage == d.leverage[i]
        assert e.isolated == d.isolated[i] and e.margin_atoms == d.margin_atoms[i]
        assert e.time_ns == T0 + e.step * STEP_NS
        assert not e.reentry
        pos = flat_run.market.world.position(account)
        assert pos.size_lots * e.side > 0


def test_the_position_uses_the_margin_at_the_leverage(flat_run: FlatRun) -> None:
    world = flat_run.market.world
    k = world.spec.atoms_per_tick_lot
    for e in flat_run.traders.entries:
        size_lots = abs(world.position(e.account).size_lots)
        # What the engine's margin check charged: notional / leverage, plus the open loss of
        # filling above (below) the mark, which stands at the target on a flat path.
        open_loss_atoms = max(0, e.side * (e.entry_ticks - PRICE_TICKS)) * size_lots * k
        used_atoms = size_lots * e.entry_ticks * k / e.leverage + open_loss_atoms
        one_lot_atoms = e.entry_ticks * k / e.leverage + open_loss_atoms / size_lots
        # All of it but the sizing room (0.5 %) and the rounding down to a whole lot.
        assert e.margin_atoms * 0.99 - one_lot_atoms <= used_atoms <= e.margin_atoms, e


def test_liquidation_distance_is_about_one_over_leverage_less_mmr(flat_run: FlatRun) -> None:
    world = flat_run.market.world
    market_spec = world.spec
    k = market_spec.atoms_per_tick_lot
    fee = market_spec.taker_fee_ppm / PPM
    for e in flat_run.traders.entries:
        assert e.liquidation_ticks is not None
        notional_atoms = abs(world.position(e.account).size_lots) * e.entry_ticks * k
        # MM = notional x MMR - cum of its bracket: as a rate, the MMR less cum / notional.
        mmr = market_spec.maintenance_margin_atoms(notional_atoms) / notional_atoms
        # The margin behind the position, a share of its notional, after the entry's taker
        # fee: 1/leverage isolated; the whole deposit cross (a little more than 1/leverage:
        # the sizing room, and whole lots at low leverage).
        behind = 1 / e.leverage if e.isolated else e.margin_atoms / notional_atoms
        # Liquidation where margin + uPnL = MMR x notional at that price:
        # d = (behind - mmr) / (1 - side x mmr), measured from the entry.
        want = (behind - fee - mmr) / (1 - e.side * mmr)
        distance = e.side * (e.entry_ticks - e.liquidation_ticks) / e.entry_ticks
        assert distance == pytest.approx(want, abs=0.0006), e
        if e.isolated:
            assert distance < 1 / e.leverage


def test_stop_traders_have_a_stop_market_at_their_distance(flat_run: FlatRun) -> None:
    traders = flat_run.traders
    d = traders.draws
    assert d is not None
    ex = flat_run.market.ex
    entries = {e.account: e for e in traders.entries}
    stoppers = [i for i in range(PROTECTED.count) if d.protection[i] == PROTECT_STOP]
    assert len(stoppers) > 50
    for i in stoppers:
        account = traders.accounts[i]
        orders = ex.open_orders(account, BTC)
        assert [o.type for o in orders] == ["STOP_MARKET"]
        stop = orders[0]
        assert stop.side == ("SELL" if d.side[i] > 0 else "BUY") and stop.reduce_only
        # At the drawn distance from the entry estimate (the target), rounded to a tick.
        want = PRICE_TICKS * (1 - d.side[i] * d.stop_distance[i])
        assert abs(ex.to_ticks(BTC, stop.stop_price) - want) <= 1
        position = ex.position(account, BTC)
        assert stop.orig_qty == abs(position.size)
        assert entries[account].side * (stop.stop_price - position.entry_price) < 0


def test_ladder_traders_get_an_exit_ladder(flat_run: FlatRun) -> None:
    traders = flat_run.traders
    d = traders.draws
    assert d is not None
    placed = {e.account: e for e in flat_run.market.events if isinstance(e, ExitLadderPlaced)}
    # The ladder goes in the step after the entry fills (the fill is seen in `observe`).
    ladder = {
        traders.accounts[i]
        for i in range(PROTECTED.count)
        if d.protection[i] == PROTECT_LADDER and d.entry_step[i] < FLAT_STEPS - 1
    }
    assert len(ladder) > 50
    assert set(placed) == ladder
    ex = flat_run.market.ex
    for account in ladder:
        i = traders.accounts.index(account)
        orders = ex.open_orders(account, BTC)
        kinds = Counter(o.type for o in orders)
        assert kinds["STOP_MARKET"] == 1
        assert 1 <= kinds["TAKE_PROFIT_MARKET"] <= 3
        assert len(placed[account].target_order_ids) == kinds["TAKE_PROFIT_MARKET"]
        entry = ex.position(account, BTC).entry_price
        targets = sorted(o.stop_price for o in orders if o.type == "TAKE_PROFIT_MARKET")
        side = int(d.side[i])
        first = entry * (1 + side * Decimal("0.01"))
        nearest = targets[0] if side > 0 else targets[-1]
        assert abs(nearest - first) <= Decimal("0.2")  # rounded to a tick, from the entry


def test_unprotected_traders_have_no_conditional_orders(flat_run: FlatRun) -> None:
    traders = flat_run.traders
    d = traders.draws
    assert d is not None
    ex = flat_run.market.ex
    for i in range(PROTECTED.count):
        if d.protection[i] == PROTECT_NONE:
            assert ex.open_orders(traders.accounts[i], BTC) == []


def test_a_ladder_leaves_out_targets_the_mark_has_passed() -> None:
    config = TraderConfig(
        count=1, margin=fixed(1_000.0), leverage=fixed(10.0), long_share=1.0,
        stop_share=0.0, ladder_share=1.0, initial_share=1.0, ladder_targets=(0.001, 0.002, 0.01),
    )  # fmt: skip
    traders = LeveragedTraders(config, BTC, 5)
    market = Market([traders], seed=SEED)
    market.step(PRICE_TICKS)  # the entry fills
    events = market.step(PRICE_TICKS + 900)  # +0.15 %: the first target is behind the mark
    ladders = [e for e in events if isinstance(e, ExitLadderPlaced)]
    assert len(ladders) == 1 and len(ladders[0].target_order_ids) == 2


# -- holding time, determinism -------------------------------------------------------------
def hold_run(seed: int) -> tuple[Market, LeveragedTraders]:
    config = TraderConfig(
        count=40, initial_share=1.0, hold_steps=fixed(5.0), stop_share=0.5, ladder_share=0.0
    )
    traders = LeveragedTraders(config, BTC, 12)
    market = Market([traders], seed=seed)
    return market, traders


def test_a_trader_closes_after_its_holding_time() -> None:
    market, traders = hold_run(11)
    market.run([PRICE_TICKS] * 5)  # steps 0-4
    assert all(market.world.position(a).size_lots for a in traders.accounts)
    market.step(PRICE_TICKS)  # step 5: reduce-only market orders close every position
    assert not any(market.world.position(a).size_lots for a in traders.accounts)
    assert all(market.ex.open_orders(a, BTC) == [] for a in traders.accounts)  # stops gone


def test_a_run_is_deterministic_for_a_seed() -> None:
    hashes = []
    for seed in (3, 3, 4):
        market, _ = hold_run(seed)
        market.run([PRICE_TICKS + 50 * (i % 3) for i in range(8)])
        hashes.append(market.ex.state_hash())
    assert hashes[0] == hashes[1] != hashes[2]


# -- a crash -------------------------------------------------------------------------------
LEVERAGES = (5, 10, 25, 50, 100)
CRASH = TraderConfig(
    count=400,
    margin=fixed(200.0),
    leverage=Dist("choice", values=LEVERAGES),
    long_share=1.0,
    initial_share=1.0,
    stop_share=0.0,
    reenter_share=0.5,
    reenter_delay=fixed(3.0),
    reenter_side="same",
)


def crash_path() -> list[int]:
    """10 steps at 60,000, down 15 % in 60 equal steps, then 20 steps at 51,000."""
    down = [round(PRICE_TICKS * (1 - 0.15 * i / 60)) for i in range(1, 61)]
    return [PRICE_TICKS] * 10 + down + [down[-1]] * 20


def first_liquidations(events: Sequence[Event], traders: LeveragedTraders) -> dict[str, int]:
    """Account -> step of its first liquidation (from the traders' own log)."""
    first: dict[str, int] = {}
    for step, i in traders.liquidation_log:
        first.setdefault(traders.accounts[i], step)
    assert {e.account for e in events if isinstance(e, LiquidationTriggered)} >= set(first)
    return first


@pytest.fixture(scope="module")
def crash_run() -> tuple[Market, LeveragedTraders]:
    traders = LeveragedTraders(CRASH, BTC, 90)
    market = Market([traders], seed=SEED)
    market.run(crash_path())
    return market, traders


def test_a_crash_liquidates_the_highest_leverage_first(
    crash_run: tuple[Market, LeveragedTraders],
) -> None:
    market, traders = crash_run
    d = traders.draws
    assert d is not None
    first = first_liquidations(market.events, traders)
    steps_by_leverage: dict[int, list[int]] = {lev: [] for lev in LEVERAGES}
    for i, account in enumerate(traders.accounts):
        if account in first:
            steps_by_leverage[int(d.leverage[i])].append(first[account])
    # 5x longs are liquidated about 19.6 % down (1/5 - MMR): not in a 15 % fall.
    assert steps_by_leverage[5] == []
    count = Counter(d.leverage.tolist())
    for lev in (10, 25, 50, 100):
        assert len(steps_by_leverage[lev]) == count[lev], lev  # all of them, once at least
    # Strictly in order: the last 100x before the first 50x, and so on.
    for high, low in ((100, 50), (50, 25), (25, 10)):
        assert max(steps_by_leverage[high]) < min(steps_by_leverage[low]), (high, low)
    # Each about where 1/leverage - MMR puts it (0.25 % a step from step 10).
    for lev in (10, 25, 50, 100):
        fall = (1 / lev - 0.004) / 0.0025
        assert all(abs(s - 10 - fall) <= 2 for s in steps_by_leverage[lev]), lev


def test_some_come_back_after_a_liquidation(crash_run: tuple[Market, LeveragedTraders]) -> None:
    market, traders = crash_run
    seen = traders.liquidations_seen
    assert seen == len(traders.liquidation_log) >= 300
    assert share_ok(traders.reentries, seen, CRASH.reenter_share)
    reentries = [e for e in traders.entries if e.reentry]
    assert len(reentries) == traders.reentries  # the book is deep: every one filled
    liquidated_at: dict[str, list[int]] = {}
    for step, i in traders.liquidation_log:
        liquidated_at.setdefault(traders.accounts[i], []).append(step)
    for e in reentries:
        assert e.side == 1  # reenter_side = "same"
        assert e.step - 3 in liquidated_at[e.account]  # reenter_delay = 3
    # A fresh deposit of the same margin for each re-entry.
    deposits = Counter(e.account for e in market.events if isinstance(e, Deposited))
    for account, n in Counter(e.account for e in reentries).items():
        assert deposits[account] == 1 + n


def test_trend_reentries_follow_the_fall() -> None:
    config = TraderConfig(
        count=60, margin=fixed(200.0), leverage=fixed(100.0), long_share=1.0,
        initial_share=1.0, stop_share=0.0, reenter_share=1.0, reenter_delay=fixed(2.0),
        reenter_side="trend", trend_window=5,
    )  # fmt: skip
    traders = LeveragedTraders(config, BTC, 30)
    market = Market([traders], seed=SEED)
    market.run(crash_path()[:30])
    reentries = [e for e in traders.entries if e.reentry]
    assert traders.reentries == len(reentries) == 60
    assert {e.side for e in reentries} == {-1}  # the target fell over the last 5 steps


def test_entries_wait_while_there_is_no_book() -> None:
    config = TraderConfig(count=5, initial_share=1.0, stop_share=0.0, margin=fixed(100.0))
    traders = LeveragedTraders(config, BTC, 10)
    market = Market([traders], seed=SEED)
    market.maker.levels = 0  # no book: an order would find nothing
    market.run([PRICE_TICKS] * 2)
    assert traders.entries == [] and traders.waiting == 5
    assert not any(isinstance(e, OrderAccepted) for e in market.events)  # nothing was sent
    market.maker.levels = 50
    market.step(PRICE_TICKS)
    assert len(traders.entries) == 5 and {e.step for e in traders.entries} == {2}
    assert traders.waiting == 0 and traders.entry_retries == 0


def test_a_crowd_enters_in_turn_as_the_book_allows() -> None:
    config = TraderConfig(
        count=100, margin=fixed(1_000.0), leverage=fixed(10.0), long_share=1.0,
        initial_share=1.0, stop_share=0.0,
    )  # fmt: skip
    traders = LeveragedTraders(config, BTC, 10)
    market = Market([traders], seed=SEED)
    # 5 asks of 2 BTC: 10 BTC a step, for 100 x 10,000 USDT = 16.7 BTC of buying.
    market.maker.levels, market.maker.level_lots = 5, 2_000
    market.run([PRICE_TICKS] * 4)
    assert len(traders.entries) == 100 and traders.waiting == 0
    steps = [e.step for e in traders.entries]
    assert steps == sorted(steps) and steps[0] == 0 < steps[-1] <= 2  # in turn, in order
    assert [e.account for e in traders.entries] == traders.accounts  # first come, first served
    assert traders.rejections == 0 and traders.entry_retries == 0


def test_a_refused_entry_is_tried_again_then_given_up() -> None:
    config = TraderConfig(count=2, initial_share=1.0, stop_share=0.0, margin=fixed(100.0))
    traders = LeveragedTraders(config, BTC, 10)
    market = Market([traders], seed=SEED)
    poor, later = traders.accounts
    market.ex.withdraw(poor, "100")  # its entries are refused for margin
    market.ex.withdraw(later, "100")
    market.step(PRICE_TICKS)
    market.ex.deposit(later, "100")  # back before its second try
    market.run([PRICE_TICKS] * 4)
    assert [(e.account, e.step) for e in traders.entries] == [(later, 1)]
    assert traders.rejections == 3 + 1  # poor: all three tries; later: its first
    assert traders.entry_retries == 2 + 1 and traders.entries_failed == 1


def test_observe_ignores_other_accounts() -> None:
    traders = LeveragedTraders(TraderConfig(count=3), BTC, 5)
    market = Market([traders], seed=SEED)
    traders.observe([LiquidationTriggered("mm", BTC, False, 0, 1)])
    assert traders.liquidations_seen == 0
    traders.observe([LiquidationTriggered("t-1", BTC, False, 0, 1)])
    assert traders.liquidations_seen == 1 and traders.liquidation_log == [(0, 1)]
    assert market.world.step == 0
