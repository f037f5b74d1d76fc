"""The makers' ladder in plain Python is the ladder the NumPy version computed (issue 12, speed).

`MarketMakers.ladder` and `_side` were rewritten from NumPy arrays to Python floats and ints
(a ladder is a few dozen levels, where NumPy's per-call cost dominates). The rewrite must not
change one quote: this file keeps a copy of the vectorised version (`reference_ladder`) and
compares the two on many random makers, markets and states, covering every branch (levels
under a lot, the price band and range, the min notional, the max quantity, the leverage cap
cutting a side, the inventory skew and the side shrinking past the inventory limit, stress
widening and pulling, a ladder over the open-order limit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.markets import MarketSpec
from perpex.core.mass_quote import MAX_MASS_QUOTES
from perpex.core.units import PPM
from perpex.sim.agents.base import FloatArray
from perpex.sim.agents.config import MakerConfig
from perpex.sim.agents.makers import MIN_SIDE_SHARE, MakerState, MarketMakers, Quote
from streams import default_specs

CASES: Final = 3_000
BTC_SPEC: Final = default_specs()[0]


@dataclass
class StaticWorld:
    """What `MarketMakers.start` and `ladder` read of the world."""

    spec: MarketSpec
    target_ticks: int
    mark_ticks: int


@dataclass
class Coverage:
    """How often each branch of the reference ran: the comparison must reach all of them."""

    cap_cut: int = 0
    band_or_range_drop: int = 0
    under_a_lot: int = 0
    min_notional_bump: int = 0
    max_qty_cap: int = 0
    heavy_side: int = 0
    open_order_limit: int = 0
    empty: int = 0


# -- the vectorised ladder as it was (a verbatim copy but for the coverage counts) -----------
def reference_side(
    side: int,
    prices: FloatArray,
    lots: FloatArray,
    lo_ticks: int,
    hi_ticks: int,
    held_lots: int,
    cap_atoms: int,
    spec: MarketSpec,
    seen: Coverage,
) -> list[Quote]:
    qty = np.floor(lots)
    seen.under_a_lot += bool((qty < 1.0).any())
    seen.band_or_range_drop += bool(((prices < lo_ticks) | (prices > hi_ticks)).any())
    keep = (qty >= 1.0) & (prices >= lo_ticks) & (prices <= hi_ticks)
    if not keep.any():
        return []
    price_ticks = prices[keep].astype(np.int64)
    qty_lots = qty[keep].astype(np.int64)
    k = spec.atoms_per_tick_lot
    need_lots = -(-spec.min_notional_atoms // (price_ticks * k))
    seen.min_notional_bump += bool((need_lots > qty_lots).any())
    seen.max_qty_cap += bool((qty_lots > spec.max_limit_qty_lots).any())
    qty_lots = np.minimum(np.maximum(qty_lots, need_lots), spec.max_limit_qty_lots)
    exposure_atoms = (held_lots + np.cumsum(qty_lots)) * price_ticks.astype(np.float64) * k
    n = int(np.argmin(exposure_atoms <= cap_atoms)) if exposure_atoms[-1] > cap_atoms else None
    seen.cap_cut += n is not None
    return [
        (side, p, q) for p, q in zip(price_ticks[:n].tolist(), qty_lots[:n].tolist(), strict=True)
    ]


def reference_ladder(
    mm: MarketMakers, world: StaticWorld, m: MakerState, seen: Coverage
) -> tuple[Quote, ...]:
    cfg = mm.config
    spec = world.spec
    ref_ticks = world.target_ticks or world.mark_ticks
    if ref_ticks <= 0 or not mm.makers:
        return ()
    mark_ticks = world.mark_ticks or ref_ticks
    r = m.reaction
    widen = 1.0 + (cfg.widen_max - 1.0) * r
    keep_share = 1.0 - cfg.pull_max * r
    lots_per_btc = 1.0 / float(spec.step_size)
    inventory_btc = m.inventory_lots / lots_per_btc
    half_span = cfg.max_distance / 2
    skew = min(max(cfg.skew_per_btc * inventory_btc, -half_span), half_span)
    center = ref_ticks * (1.0 - skew)
    d = mm.distances * widen
    band = spec.price_band_ppm
    lo_ticks = max(-(-mark_ticks * (PPM - band) // PPM), spec.min_price_ticks)
    hi_ticks = min(mark_ticks * (PPM + band) // PPM, spec.max_price_ticks)
    limit = min(MAX_MASS_QUOTES, spec.max_open_orders)
    cap = spec.max_notional_atoms_at(cfg.leverage)
    max_inventory_lots = cfg.max_inventory_btc * lots_per_btc
    excess = abs(m.inventory_lots) / max_inventory_lots - 1.0
    heavy_share = max(MIN_SIDE_SHARE, 1.0 - excess) if excess > 0 else 1.0
    seen.heavy_side += excess > 0
    bid_share = keep_share * (heavy_share if m.inventory_lots > 0 else 1.0)
    ask_share = keep_share * (heavy_share if m.inventory_lots < 0 else 1.0)
    bid_lots = mm.bid_btc * lots_per_btc
    ask_lots = mm.ask_btc * lots_per_btc
    prices = np.floor(center * (1.0 - d))
    bids = reference_side(
        BUY, prices, bid_lots * bid_share, lo_ticks, hi_ticks,
        max(m.inventory_lots, 0), cap, spec, seen,
    )  # fmt: skip
    prices = np.ceil(center * (1.0 + d))
    asks = reference_side(
        SELL, prices, ask_lots * ask_share, lo_ticks, hi_ticks,
        max(-m.inventory_lots, 0), cap, spec, seen,
    )  # fmt: skip
    if bids and asks:
        best_bid = bids[0][1]
        asks = [q for q in asks if q[1] > best_bid]
    if len(bids) + len(asks) > limit:
        seen.open_order_limit += 1
        n_bids = min(len(bids), max(limit // 2, limit - len(asks)))
        bids, asks = bids[:n_bids], asks[: limit - n_bids]
    seen.empty += not (bids or asks)
    return (*bids, *asks)


# -- random makers, markets and states --------------------------------------------------------
def random_case(rng: np.random.Generator) -> tuple[MarketMakers, StaticWorld, MakerState]:
    max_distance = float(rng.choice([0.002, 0.01, 0.05, 0.3]))
    config = MakerConfig(
        count=int(rng.integers(1, 5)),
        leverage=int(rng.choice([1, 5, 20, 50, 100, 125])),
        profile="flat" if rng.random() < 0.3 else "binance-2024-08-08",
        size_scale=float(10 ** rng.uniform(-3.0, 2.5)),
        levels=int(rng.integers(1, 51)),
        max_distance=max_distance,
        spread=float(rng.uniform(0.0, max_distance * 0.5)) if rng.random() < 0.8 else 0.0,
        skew_per_btc=float(rng.choice([0.0, 0.00002, 0.001])),
        max_inventory_btc=float(rng.choice([0.5, 5.0, 500.0])),
        widen_max=float(rng.choice([1.0, 3.0, 8.0])),
        pull_max=float(rng.choice([0.0, 0.5, 0.9])),
    )
    spec = BTC_SPEC
    if rng.random() < 0.5:
        spec = dataclasses.replace(
            spec,
            min_notional_atoms=int(rng.choice([0, 5, 100, 5_000])) * 1_000_000,
            max_limit_qty_lots=int(rng.choice([1, 50, 1_000, spec.max_limit_qty_lots])),
            price_band_ppm=int(rng.choice([1_000, 20_000, spec.price_band_ppm])),
            max_open_orders=int(rng.choice([5, 11, spec.max_open_orders])),
        )
    target_ticks = int(rng.choice([0, 1, 7, 300_000, 600_000, 213_572, 10**8]))
    if target_ticks == 0 or rng.random() < 0.2:
        mark_ticks = target_ticks + int(rng.integers(1, 1_000))  # no target: the mark leads
    elif rng.random() < 0.7:
        mark_ticks = target_ticks
    else:  # the mark away from the target: the band cuts one side
        mark_ticks = max(1, round(target_ticks * float(rng.uniform(0.9, 1.1))))
    if rng.random() < 0.1:
        mark_ticks = 0
    world = StaticWorld(spec, target_ticks, mark_ticks)
    mm = MarketMakers(config, "BTCUSDT")
    mm.start(world, rng)  # type: ignore[arg-type]  # reads spec only
    m = mm.makers[int(rng.integers(0, config.count))]
    m.inventory_lots = int(rng.choice([0, 1, -1, 5_000, -5_000, 2_000_000, -2_000_000]))
    m.inventory_lots = int(m.inventory_lots * rng.uniform(0.0, 1.5))
    m.reaction = float(rng.choice([0.0, 1.0, rng.uniform(0.0, 1.0)]))
    return mm, world, m


def test_the_plain_ladder_is_the_vectorised_one() -> None:
    rng = np.random.default_rng(20261205)
    seen = Coverage()
    for case in range(CASES):
        mm, world, m = random_case(rng)
        expected = reference_ladder(mm, world, m, seen)
        got = mm.ladder(world, m)  # type: ignore[arg-type]  # reads spec, target, mark
        assert got == expected, f"case {case}: {mm.config}, {world}, {m}"
        for side, price, qty in got:  # exact ints, as the engine takes them
            assert type(side) is int and type(price) is int and type(qty) is int
    # the comparison reached every branch, many times
    for name, count in dataclasses.asdict(seen).items():
        assert count >= 20, f"{name} reached only {count} times: {seen}"


def test_the_benchmark_makers_ladder_is_unchanged_over_a_walk() -> None:
    """The bench's maker (1 maker, 10 levels, 0.05 x the real book) along a random walk with
    inventory and stress moving: the ladders it sends, step by step."""
    rng = np.random.default_rng(7)
    config = MakerConfig(count=1, levels=10, size_scale=0.05)
    world = StaticWorld(BTC_SPEC, 300_000, 300_000)
    mm = MarketMakers(config, "BTCUSDT")
    mm.start(world, rng)  # type: ignore[arg-type]
    m = mm.makers[0]
    seen = Coverage()
    for _ in range(2_000):
        world.target_ticks = max(
            1, round(world.target_ticks * float(np.exp(rng.normal(0, 0.0015))))
        )
        world.mark_ticks = world.target_ticks + int(rng.integers(-300, 301))
        m.inventory_lots += int(rng.integers(-400, 401))
        m.reaction = max(0.0, min(1.0, m.reaction + float(rng.normal(0.0, 0.1))))
        got = mm.ladder(world, m)  # type: ignore[arg-type]
        assert got == reference_ladder(mm, world, m, seen)
        assert len(got) >= 10  # a two-sided book of real levels, not an empty comparison
