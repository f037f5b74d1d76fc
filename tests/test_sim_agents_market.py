"""The market-side agents of the simulator (issue 12): the depth profile of the real book, the
makers' ladder, the noise and momentum takers, the whale.

Every agent runs against a real `Exchange` (mark = index) through a `MarketWorld`, driven
step by step the way the runner does it: AdvanceClock, the world advanced, the makers' commands,
UpdateIndex, the world refreshed, the other agents' commands, then `observe` of all the
step's events. BTCUSDT defaults: tick 0.1, lot 0.001 BTC, band 5 %, min notional 5 USDT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final, Protocol

import numpy as np
import pytest

from perpex.core.book import BUY, SELL
from perpex.core.messages import (
    AdvanceClock,
    Command,
    Deposit,
    Event,
    MassQuote,
    OrderRejected,
    OrderType,
    PlaceOrder,
    PositionChanged,
    RequestRejected,
    TimeInForce,
    TradeExecuted,
    UpdateIndex,
)
from perpex.core.units import PPM
from perpex.exchange import Exchange
from perpex.sim.agents.config import MakerConfig, MomentumConfig, NoiseConfig, WhaleConfig
from perpex.sim.agents.makers import MIN_SIDE_SHARE, MarketMakers
from perpex.sim.agents.takers import MomentumTakers, NoiseTakers, market_orders
from perpex.sim.agents.whale import Phase, Whale, at_ns
from perpex.sim.depth import (
    FLAT,
    PROFILE_FILE,
    SNAPSHOT_FILE,
    DepthProfile,
    derive_profile,
    load_profile,
)
from perpex.sim.world import MarketWorld

SYM: Final = "BTCUSDT"
START_S: Final = 1_723_161_255  # 2024-08-08, the day of the depth snapshot
NS: Final = 1_000_000_000
STEP_NS: Final = NS  # one-second steps
MID_TICKS: Final = 600_000  # 60,000 USDT
BP: Final = 1e-4
SNAPSHOT: Final = Path(__file__).resolve().parents[2] / "shared" / "data" / SNAPSHOT_FILE
SHIPPED: Final = Path(__file__).resolve().parents[1] / "src" / "perpex" / "data" / PROFILE_FILE


class AnyAgent(Protocol):
    name: str

    def start(self, world: MarketWorld, rng: np.random.Generator) -> list[Command]: ...
    def step(self, world: MarketWorld) -> list[Command]: ...
    def observe(self, events: Sequence[Event]) -> None: ...


class Driver:
    """The runner's step, by hand. `sent[name]` holds each agent's commands, one list a step."""

    def __init__(
        self, makers: Sequence[AnyAgent], others: Sequence[AnyAgent] = (), seed: int = 1
    ) -> None:
        self.ex = Exchange(mark_price="index", start_time=START_S)
        self.world = MarketWorld(self.ex, SYM, STEP_NS)
        self.makers = list(makers)
        self.others = list(others)
        self.seed = seed
        self.time_ns = START_S * NS
        self.n = 0
        self.sent: dict[str, list[list[Command]]] = {a.name: [] for a in self.agents}
        self.events: list[Event] = []

    @property
    def agents(self) -> list[AnyAgent]:
        return [*self.makers, *self.others]

    def submit(self, commands: Sequence[Command]) -> list[Event]:
        return [e for events in self.ex.submit(list(commands)) for e in events]

    def step(self, target_ticks: int, away: bool = False) -> list[Event]:
        self.time_ns += STEP_NS
        events = self.submit([AdvanceClock(self.time_ns)])
        self.world.advance(self.n, self.time_ns, target_ticks, target_ticks, away)
        if self.n == 0:  # the runner starts the agents after the first index
            events += self.submit([UpdateIndex(SYM, target_ticks)])
            self.world.refresh()
            for i, agent in enumerate(self.agents):
                rng = np.random.default_rng([self.seed, i])
                events += self.submit(agent.start(self.world, rng))
        for agent in self.makers:
            self.sent[agent.name].append(cmds := agent.step(self.world))
            events += self.submit(cmds)
        events += self.submit([UpdateIndex(SYM, target_ticks)])
        self.world.refresh()
        for agent in self.others:
            self.sent[agent.name].append(cmds := agent.step(self.world))
            events += self.submit(cmds)
        for agent in self.agents:
            agent.observe(events)
        self.n += 1
        self.events = events
        return events

    def depth_within_btc(self, distance: float, mid_ticks: int) -> tuple[float, float]:
        """BTC resting on (bids, asks) within `distance` of `mid_ticks`."""
        bids, asks = self.world.depth(10_000)
        lo, hi = mid_ticks * (1 - distance), mid_ticks * (1 + distance)
        return (
            sum(q for p, q in bids if p >= lo) / 1000,
            sum(q for p, q in asks if p <= hi) / 1000,
        )


def calm_path(n: int, seed: int, start: int = MID_TICKS, sigma: float = 1e-4) -> list[int]:
    rng = np.random.default_rng(seed)
    return [round(start * math.exp(x)) for x in np.cumsum(rng.normal(0.0, sigma, n))]


def rejections(events: Sequence[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, OrderRejected | RequestRejected)]


# -- the depth profile -------------------------------------------------------------------------


def test_profile_loads_cached_and_cumulative_is_monotone() -> None:
    profile = load_profile()
    assert profile is load_profile()
    assert profile.mid_usdt == 61800.25  # (61,800.2 + 61,800.3) / 2, the README's best levels
    d = np.linspace(0.0, 0.02, 401)
    for side in (BUY, SELL):
        cum = profile.cumulative_btc(side, d)
        assert cum[0] == 0.0
        assert np.all(np.diff(cum) >= 0.0)
        assert np.all(np.diff(cum[200:]) > 0.0)  # the extrapolated tail keeps growing
    # the whole snapshot, 396.998 BTC of bids reaching 23.76 bp and 384.589 of asks reaching
    # 28.47 bp (its README), lies between the last whole bucket and the next
    assert profile.cumulative_btc(BUY, 23 * BP) < 396.998 < profile.cumulative_btc(BUY, 24 * BP)
    assert profile.cumulative_btc(SELL, 28 * BP) < 384.589 < profile.cumulative_btc(SELL, 29 * BP)


@pytest.mark.skipif(not SNAPSHOT.exists(), reason="the shared depth snapshot is not here")
def test_profile_matches_the_snapshot() -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(SNAPSHOT).to_pydict()
    side = np.array(table["side"])
    price = np.array(table["price"])
    qty = np.array(table["qty"])
    bids, asks = side == "bid", side == "ask"
    mid = (price[bids].max() + price[asks].min()) / 2
    profile = load_profile()
    assert profile.mid_usdt == pytest.approx(mid)
    for k in range(1, 24):  # whole buckets the bids reach
        # shifted off the bucket edge by a hair, so a level exactly on it cannot flip
        edge = (k - 1e-9) * BP
        want = qty[bids & ((mid - price) / mid < edge)].sum()
        assert profile.cumulative_btc(BUY, k * BP) == pytest.approx(want, abs=1e-6)
    for k in range(1, 29):
        edge = (k - 1e-9) * BP
        want = qty[asks & ((price - mid) / mid < edge)].sum()
        assert profile.cumulative_btc(SELL, k * BP) == pytest.approx(want, abs=1e-6)
    # the shipped CSV is what the derivation gives
    assert derive_profile(SNAPSHOT) == SHIPPED.read_text("utf-8")


def test_ladder_sizes_follow_the_cumulative_profile() -> None:
    profile = load_profile()
    d = DepthProfile.ladder_distances(20, 0.01, 0.0001)
    assert d[0] == pytest.approx(0.0001) and d[-1] == pytest.approx(0.01)
    bid_btc, ask_btc = profile.ladder_sizes(20, 0.01, 0.5, 0.0001)
    for side, sizes in ((BUY, bid_btc), (SELL, ask_btc)):
        assert np.all(sizes >= 0.0)
        np.testing.assert_allclose(np.cumsum(sizes), 0.5 * profile.cumulative_btc(side, d))
    flat_bid, flat_ask = load_profile(FLAT).ladder_sizes(20, 0.01, 0.5, 0.0001)
    np.testing.assert_allclose(flat_bid, np.full(20, bid_btc.sum() / 20))
    np.testing.assert_allclose(flat_ask, np.full(20, ask_btc.sum() / 20))
    with pytest.raises(ValueError):
        load_profile("binance-1999")


# -- makers -------------------------------------------------------------------------------------


def quotes_of(commands: Sequence[Command]) -> dict[str, tuple[tuple[int, int, int], ...]]:
    out: dict[str, tuple[tuple[int, int, int], ...]] = {}
    for c in commands:
        assert isinstance(c, MassQuote)
        out[c.account] = c.quotes
    return out


def test_makers_quote_the_profile_inside_the_band_one_mass_quote_each() -> None:
    cfg = MakerConfig(count=4)
    makers = MarketMakers(cfg, SYM)
    drv = Driver([makers])
    events = drv.step(MID_TICKS)
    assert not rejections(events)
    first = drv.sent["makers"][0]
    assert [c.account for c in first] == ["mm-0", "mm-1", "mm-2", "mm-3"]  # type: ignore[attr-defined]
    bid_btc, ask_btc = load_profile().ladder_sizes(20, 0.01, 1.0 / 4, 0.0001)
    band = drv.world.spec.price_band_ppm
    for quotes in quotes_of(first).values():
        bids = [(p, q) for s, p, q in quotes if s == BUY]
        asks = [(p, q) for s, p, q in quotes if s == SELL]
        assert max(p for p, _ in bids) < min(p for p, _ in asks)
        assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
        assert [p for p, _ in asks] == sorted(p for p, _ in asks)
        # sizes: the profile's share, rounded down to lots (every level >= 1 lot here)
        assert [q for _, q in bids] == [math.floor(x * 1000) for x in bid_btc]
        assert [q for _, q in asks] == [math.floor(x * 1000) for x in ask_btc]
        # prices: rounded away from the target; the best level 1 bp out, the last 1 %
        assert bids[0][0] == math.floor(MID_TICKS * (1 - 0.0001))
        assert asks[0][0] == math.ceil(MID_TICKS * (1 + 0.0001))
        assert asks[-1][0] == math.ceil(MID_TICKS * 1.01)
        for p, _ in (*bids, *asks):
            assert p * PPM <= MID_TICKS * (PPM + band) and p * PPM >= MID_TICKS * (PPM - band)
    # the book holds all four ladders: the real book's depth within 1 %, to rounding
    bid_depth, ask_depth = drv.depth_within_btc(0.01, MID_TICKS)
    real = load_profile()
    assert bid_depth == pytest.approx(real.cumulative_btc(BUY, 0.01), abs=4 * 20 * 0.001)
    assert ask_depth == pytest.approx(real.cumulative_btc(SELL, 0.01), abs=4 * 20 * 0.001)
    # an unchanged ladder is not resent; a moved one is, one MassQuote per maker
    drv.step(MID_TICKS)
    assert drv.sent["makers"][1] == []
    drv.step(MID_TICKS + 100)
    assert sorted(quotes_of(drv.sent["makers"][2])) == ["mm-0", "mm-1", "mm-2", "mm-3"]
    assert len(drv.sent["makers"][2]) == 4


def test_requote_ticks_skips_small_moves() -> None:
    makers = MarketMakers(MakerConfig(count=2, requote_ticks=50), SYM)
    drv = Driver([makers])
    drv.step(MID_TICKS)
    drv.step(MID_TICKS + 30)  # every price moves by < 50 ticks
    assert drv.sent["makers"][1] == []
    drv.step(MID_TICKS + 60)
    assert len(drv.sent["makers"][2]) == 2


def test_ladder_is_clamped_to_the_band_around_the_mark() -> None:
    makers = MarketMakers(MakerConfig(count=1, max_distance=0.2, levels=40, size_scale=0.01), SYM)
    drv = Driver([makers])
    events = drv.step(MID_TICKS)
    assert not rejections(events)
    (quotes,) = quotes_of(drv.sent["makers"][0]).values()
    prices = [p for _, p, _ in quotes]
    assert min(prices) >= MID_TICKS * 0.95 and max(prices) <= MID_TICKS * 1.05
    assert 20 < len(quotes) < 80  # the levels past 5 % are dropped


def test_makers_retreat_when_volatility_jumps_and_come_back() -> None:
    makers = MarketMakers(MakerConfig(count=4), SYM)
    drv = Driver([makers])
    calm = calm_path(60, seed=3)
    for target in calm:
        drv.step(target)
    before = drv.depth_within_btc(0.01, calm[-1])
    assert min(before) > 1000.0
    assert all(m.reaction == 0.0 for m in makers.makers)
    # three steps of -5 %: the kind of move of a crash candle
    target = calm[-1]
    for _ in range(3):
        target = round(target * 0.95)
        assert not rejections(drv.step(target))
    after_path = calm_path(150, seed=4, start=target)
    drv.step(after_path[0])
    assert all(m.stress > 1.0 and m.reaction == 1.0 for m in makers.makers)
    during = drv.depth_within_btc(0.01, after_path[0])
    assert during[0] < 0.5 * before[0] and during[1] < 0.5 * before[1]
    for t in after_path[1:]:
        drv.step(t)
    # the jumps leave the 60-step volatility window, then the makers relax over 30 steps
    assert all(m.reaction == 0.0 for m in makers.makers)
    after = drv.depth_within_btc(0.01, after_path[-1])
    assert after[0] > 0.9 * before[0] and after[1] > 0.9 * before[1]


def test_inventory_skews_the_ladder_and_caps_it() -> None:
    cfg = MakerConfig(count=1, skew_per_btc=0.0001, max_inventory_btc=20.0)
    makers = MarketMakers(cfg, SYM)
    drv = Driver([makers])
    drv.step(MID_TICKS)
    # a taker buys 10 BTC from the maker: the maker is short 10 BTC
    drv.submit([Deposit("taker", 10**14)])
    fills = drv.submit(
        [PlaceOrder("taker", SYM, BUY, OrderType.MARKET, TimeInForce.IOC, 10_000, 0)]
    )
    makers.observe(fills)
    drv.step(MID_TICKS)
    assert makers.makers[0].inventory_lots == -10_000
    (quotes,) = quotes_of(drv.sent["makers"][1]).values()
    best_bid = next(p for s, p, _ in quotes if s == BUY)
    best_ask = next(p for s, p, _ in quotes if s == SELL)
    shift = MID_TICKS * 0.0001 * 10  # 10 bp up for a short of 10 BTC
    assert best_bid == math.floor((MID_TICKS + shift) * (1 - 0.0001))
    assert best_ask == math.ceil((MID_TICKS + shift) * (1 + 0.0001))
    # at twice max_inventory_btc the side adding to it (asks, for a short) keeps only
    # MIN_SIDE_SHARE of its size; the reducing side keeps all of it
    full = MarketMakers(replace(cfg, max_inventory_btc=50.0), SYM)
    capped = MarketMakers(replace(cfg, max_inventory_btc=5.0), SYM)
    sizes = []
    for m in (full, capped):
        m.start(drv.world, np.random.default_rng(0))
        m.makers[0].inventory_lots = -10_000
        ladder = m.ladder(drv.world, m.makers[0])
        sizes.append({side: sum(q for s, _, q in ladder if s == side) for side in (BUY, SELL)})
    assert sizes[1][BUY] == sizes[0][BUY]
    assert 0 < sizes[1][SELL] <= MIN_SIDE_SHARE * sizes[0][SELL] * 1.05


def test_makers_away_pull_every_quote_and_come_back() -> None:
    makers = MarketMakers(MakerConfig(count=3), SYM)
    drv = Driver([makers])
    drv.step(MID_TICKS)
    assert drv.world.best_bid() is not None and drv.world.best_ask() is not None
    drv.step(MID_TICKS, away=True)
    assert drv.sent["makers"][1] == [MassQuote(f"mm-{i}", SYM, ()) for i in range(3)]
    assert drv.world.best_bid() is None and drv.world.best_ask() is None
    drv.step(MID_TICKS + 50, away=True)
    assert drv.sent["makers"][2] == []  # nothing while away
    drv.step(MID_TICKS + 50)
    assert len(drv.sent["makers"][3]) == 3
    assert drv.world.best_bid() is not None and drv.world.best_ask() is not None


# -- takers -------------------------------------------------------------------------------------


def test_noise_takers_trade_towards_the_target_and_respect_their_limit() -> None:
    makers = MarketMakers(MakerConfig(count=2, size_scale=0.2), SYM)
    noise = NoiseTakers(NoiseConfig(count=100, max_position_btc=0.3), SYM)
    drv = Driver([makers], [noise])
    # a slow climb (+0.3 bp a step) with 1 bp of noise
    path = [round(t * (1 + 0.00003 * i)) for i, t in enumerate(calm_path(200, seed=7))]
    towards = total = 0
    gaps = []
    for i, target in enumerate(path):
        # what the noise traders will see: the last trade now (the makers never take)
        last = drv.ex.engine.state.markets[SYM].last_trade_ticks or 0
        events = drv.step(target)
        assert any(isinstance(e, TradeExecuted) for e in events)
        opening = [c for c in drv.sent["noise"][i] if not c.reduce_only]  # type: ignore[attr-defined]
        if last and last != target:
            total += len(opening)
            towards += sum(c.side == (BUY if last < target else SELL) for c in opening)  # type: ignore[attr-defined]
        if i:
            gaps.append(abs(drv.world.last_ticks - target) / target)
    # the last stays within 6 bp of the target, 2 bp typically
    assert max(gaps) < 6 * BP and float(np.median(gaps)) < 2 * BP
    # pull 0.8: ~90 % of the orders go towards the target (80 % + half of the other 20 %)
    assert total > 1000 and 0.85 < towards / total < 0.95
    # nobody is over max_position_btc (300 lots): past it a trader only reduces
    for account in noise.accounts:
        assert abs(drv.world.position(account).size_lots) <= 300
    assert any(c.reduce_only for cmds in drv.sent["noise"] for c in cmds)  # type: ignore[attr-defined]
    for cmds in drv.sent["noise"]:
        assert len({c.account for c in cmds}) == len(cmds)  # type: ignore[attr-defined]
        for c in cmds:
            assert isinstance(c, PlaceOrder)
            assert c.order_type == OrderType.MARKET and c.time_in_force == TimeInForce.IOC
            assert c.price_ticks == 0 and c.qty_lots >= 1


def test_momentum_takers_join_a_move_and_close_after_hold() -> None:
    makers = MarketMakers(MakerConfig(count=2), SYM)
    cfg = MomentumConfig(count=25, activity=0.5, lookback=10, threshold=0.005, hold_steps=20)
    mom = MomentumTakers(cfg, SYM)
    drv = Driver([makers], [mom])
    for _ in range(20):
        drv.step(MID_TICKS)
    assert all(c == [] for c in drv.sent["momentum"])
    target = MID_TICKS
    for _ in range(15):  # +0.1 % a step: past 0.5 % over 10 steps from the 6th step
        target = round(target * 1.001)
        drv.step(target)
    entries = [c for cmds in drv.sent["momentum"] for c in cmds if isinstance(c, PlaceOrder)]
    assert mom.joins >= 20 and len(entries) == mom.joins
    assert all(c.side == BUY and not c.reduce_only for c in entries)
    assert sum(drv.world.position(a).size_lots > 0 for a in mom.accounts) == mom.in_position.sum()
    for _ in range(30):
        drv.step(target)
    closes = [
        c
        for cmds in drv.sent["momentum"][35:]
        for c in cmds
        if isinstance(c, PlaceOrder) and c.reduce_only
    ]
    assert len(closes) == mom.joins and all(c.side == SELL for c in closes)
    assert all(drv.world.position(a).size_lots == 0 for a in mom.accounts)
    assert not mom.in_position.any()


def test_momentum_trader_freed_when_flattened_elsewhere() -> None:
    mom = MomentumTakers(MomentumConfig(count=3), SYM)
    mom.in_position[:] = True
    mom.observe([PositionChanged("mom-1", SYM, 0, 0, 0)])  # e.g. liquidated
    assert mom.in_position.tolist() == [True, False, True]


def test_market_orders_split_at_the_max_market_quantity() -> None:
    spec = Exchange().engine.state.markets[SYM].spec
    assert spec.max_market_qty_lots == 120_000
    orders = market_orders("whale", SYM, SELL, 250_000, spec, True)
    assert [o.qty_lots for o in orders] == [120_000, 120_000, 10_000]  # type: ignore[attr-defined]
    assert all(o.reduce_only and o.side == SELL for o in orders)  # type: ignore[attr-defined]


# -- whale ---------------------------------------------------------------------------------------


def test_whale_at_parses_seconds_and_iso_text() -> None:
    start = START_S * NS
    assert at_ns("0", start) == start
    assert at_ns("90.5", start) == start + 90_500_000_000
    assert at_ns("2024-08-09T00:00:00Z", start) == 1_723_161_600 * NS
    assert at_ns("2024-08-09 00:00", start) == 1_723_161_600 * NS  # no offset: UTC
    with pytest.raises(ValueError):
        at_ns("soon", start)
    with pytest.raises(ValueError):
        at_ns("-5", start)


def test_whale_pushes_a_thin_book_then_closes() -> None:
    makers = MarketMakers(MakerConfig(count=2, size_scale=0.05), SYM)
    cfg = WhaleConfig(at="5", side="BUY", notional=20_000_000.0, push=0.008, steps=10, hold_steps=5)
    whale = Whale(cfg, SYM, START_S * NS)
    drv = Driver([makers], [whale])
    lasts = []
    for _ in range(40):
        drv.step(MID_TICKS)
        lasts.append(drv.world.last_ticks)
    sent = drv.sent["whale"]
    push_steps = [i for i, c in enumerate(sent) if c and not c[0].reduce_only]  # type: ignore[attr-defined]
    close_steps = [i for i, c in enumerate(sent) if c and c[0].reduce_only]  # type: ignore[attr-defined]
    # from the first step at or after start + 5 s (step i is at start + (i + 1) s)
    assert push_steps[0] == 4
    # 2 M USDT (33 BTC) a step, the book refilled around the target each step; stopped
    # early, on the price: the last moved `push` (and not much further)
    assert push_steps == list(range(4, 4 + len(push_steps))) and 2 <= len(push_steps) < 10
    assert whale.traded_atoms < 20_000_000 * 10**6
    assert MID_TICKS * 1.008 <= max(lasts) <= MID_TICKS * 1.015
    # held `hold_steps`, then closed with reduce-only sells until flat
    assert close_steps[0] == push_steps[-1] + 1 + cfg.hold_steps
    assert all(c.side == SELL for i in close_steps for c in sent[i])  # type: ignore[attr-defined]
    # > 120 BTC held: the first close is split at the max market quantity
    closes = sent[close_steps[0]]
    assert closes[0].qty_lots == 120_000 and len(closes) >= 2  # type: ignore[attr-defined]
    assert all(c.qty_lots <= 120_000 for c in closes)  # type: ignore[attr-defined]
    assert whale.phase is Phase.DONE
    assert drv.world.position("whale").size_lots == 0


def test_maker_losses_stress_it_too() -> None:
    # deposit 1M, loss_limit 0.1 %: a 1,000 USDT drawdown is the threshold
    cfg = MakerConfig(count=1, deposit=1_000_000.0, size_scale=0.01, loss_limit=0.001)
    makers = MarketMakers(cfg, SYM)
    drv = Driver([makers])
    drv.step(MID_TICKS)
    drv.submit([Deposit("taker", 10**14)])
    makers.observe(
        drv.submit([PlaceOrder("taker", SYM, SELL, OrderType.MARKET, TimeInForce.IOC, 5_000, 0)])
    )
    drv.step(MID_TICKS)
    assert makers.makers[0].inventory_lots == 5_000 and makers.makers[0].stress == 0.0
    drv.step(round(MID_TICKS * 0.995))  # long 5 BTC, down 0.5 %: about 1,500 USDT lost
    # the makers act before the step's index update: they see the mark of the step before
    assert makers.makers[0].stress == 0.0
    drv.step(round(MID_TICKS * 0.995))
    m = makers.makers[0]
    assert makers.vol_stress == 0.0  # still in the calm-volatility warm-up
    assert 1.3 < m.stress < 1.7 and 0.3 < m.reaction < 0.7


def run_population(seed: int) -> list[list[list[Command]]]:
    agents: list[AnyAgent] = [
        NoiseTakers(NoiseConfig(count=30), SYM),
        MomentumTakers(MomentumConfig(count=10, activity=0.5), SYM),
        Whale(WhaleConfig(at="40", notional=5_000_000.0, push=0.003), SYM, START_S * NS),
    ]
    drv = Driver([MarketMakers(MakerConfig(count=2, size_scale=0.2), SYM)], agents, seed=seed)
    path = calm_path(40, seed=11)
    path += [round(path[-1] * (1 + 0.001 * i)) for i in range(1, 21)]  # a +2 % run
    for target in path:
        drv.step(target)
    return list(drv.sent.values())


def test_same_seed_same_commands_another_seed_other_commands() -> None:
    first = run_population(1)
    assert sum(len(step) for agent in first for step in agent) > 300
    assert run_population(1) == first
    assert run_population(2) != first
