"""Market makers: `count` accounts each quoting a ladder shaped like the real book, through one
`MassQuote` per step, that retreat when the market turns violent.

Each maker ("mm-0", "mm-1", ...) quotes `levels` prices per side from `spread` to
`max_distance` of a reference mid (spaced quadratically: fine near the mid, coarse far out),
the path's target (`World.target_ticks`: where the market "should" trade). Level sizes follow
`perpex.sim.depth` (the 2024-08-08 Binance book, or flat): the ladder's cumulative size at
each distance is the real book's there, times `size_scale`, shared equally among the makers.

Adjustments, per maker and step:

* inventory skew: the whole ladder moves by `-skew_per_btc` x inventory (BTC) of the mid, so
  a long maker quotes lower and sells its inventory (the shift is capped at half the ladder's
  span); beyond `max_inventory_btc` the side that adds to the inventory shrinks linearly, to
  `MIN_SIDE_SHARE` of its size at twice the limit, so the book stays two-sided;
* stress: ``max(vol / calm_vol / vol_threshold, drawdown / (loss_limit x deposit))``, where
  `vol` is the world's realised volatility, `calm_vol` the median of its first `vol_window`
  steps then a slow average (`CALM_WINDOWS` x `vol_window` steps) of readings capped at
  `vol_threshold` x calm (a spike does not teach the maker that spikes are normal; a lasting
  regime does, slowly), and `drawdown` the fall of the maker's equity from its high of the
  last `vol_window` steps. Stress 1 is the threshold; the retreat `reaction` grows linearly to
  1 at stress `STRESS_FULL`, jumps up at once and decays by 1/`recover_steps` a step. At
  reaction r the ladder is stretched x (1 + (widen_max - 1) r) (spread and every distance) and
  its sizes cut x (1 - pull_max r);
* limits: prices are rounded away from the mid (bids down, asks up); a level is dropped when
  under one lot, outside the price band around the mark (both sides of mark x (1 +- band);
  the engine refuses bids above it and asks below it), or outside the market's price range;
  sizes are bumped to the min notional and capped at the max limit quantity; the far levels
  that would take a side's exposure past the leverage cap are dropped; a ladder never
  crosses itself and holds at most `MAX_MASS_QUOTES` (and the open-order limit) quotes.

A maker sends its ladder (one `MassQuote`) only when it differs from the one it last sent (or,
with `requote_ticks` set, moved that many ticks), or one of its quotes traded or was refused
since. After a jump of the mid, a maker whose resting ladder another maker's new ladder (sent
before its own) would cross first sends an empty `MassQuote`: otherwise the post-only quotes
of the first maker to requote would be refused against the others' stale ones. When the world
says `makers_away`, each maker sends one empty `MassQuote` (pulling every quote) and then
nothing until they are back.

Units: prices in ticks, sizes in lots (integers sent); distances and shares as fractions.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import ceil, floor

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.markets import MarketSpec
from perpex.core.mass_quote import MAX_MASS_QUOTES
from perpex.core.messages import (
    Command,
    Deposit,
    Event,
    MassQuote,
    OrderRejected,
    SetLeverage,
    TradeExecuted,
)
from perpex.core.units import ATOMS_PER_UNIT, PPM
from perpex.sim.agents.base import FloatArray, World
from perpex.sim.agents.config import MakerConfig
from perpex.sim.depth import DepthProfile, load_profile

CALM_WINDOWS = 20  # the calm volatility follows a lasting regime over 20 x vol_window steps
VOL_FLOOR = 1e-5  # per-step volatility (0.1 bp) under which "calm" is not measured more finely
STRESS_FULL = 2.0  # stress at which the retreat is complete (1 = the threshold)
MIN_SIDE_SHARE = 0.2  # the side adding to an inventory at twice the limit keeps this share

Quote = tuple[int, int, int]  # (side, price_ticks, qty_lots)


@dataclass
class MakerState:
    """One maker's account and what it remembers between steps (read by tests and reports)."""

    account: str
    stress: float = 0.0  # >= 1: above a threshold (volatility or loss)
    reaction: float = 0.0  # 0 calm .. 1 fully retreated (widened and pulled)
    inventory_lots: int = 0
    equity_atoms: deque[int] = field(default_factory=deque)  # the last vol_window + 1 steps
    quotes: tuple[Quote, ...] | None = None  # the ladder last sent (None: send the next one)
    stale: bool = False  # a quote traded or was refused since the last ladder: send it again
    pulled: bool = False  # away, and its empty MassQuote sent


def _best(quotes: tuple[Quote, ...]) -> tuple[int, int]:
    """(best bid, best ask) of a ladder (bids then asks, best first); 0 for a missing side."""
    bid = next((p for side, p, _ in quotes if side == BUY), 0)
    ask = next((p for side, p, _ in quotes if side == SELL), 0)
    return bid, ask


class MarketMakers:
    """The market-making population (`Agent`): its accounts are ``mm-0`` .. ``mm-{count-1}``."""

    def __init__(self, config: MakerConfig, symbol: str, name: str = "makers") -> None:
        self.name = name
        self.config = config
        self.symbol = symbol
        self.makers = [
            MakerState(f"mm-{i}", equity_atoms=deque(maxlen=config.vol_window + 1))
            for i in range(config.count)
        ]
        self._by_account = {m.account: m for m in self.makers}
        self._deposit_atoms = round(config.deposit * ATOMS_PER_UNIT)
        self.distances: FloatArray = DepthProfile.ladder_distances(
            config.levels, config.max_distance, config.spread
        )
        share = config.size_scale / config.count if config.count else 0.0
        profile = load_profile(config.profile)
        # Per maker, best level first, in BTC (lots once the market's step is known).
        self.bid_btc, self.ask_btc = profile.ladder_sizes(
            config.levels, config.max_distance, share, config.spread
        )
        # The ladder's figures as plain lists (`ladder` works on floats: see there); the lots
        # per level once `start` knows the market's step.
        self._distance_list: list[float] = self.distances.tolist()
        self._bid_lot_list: list[float] = self.bid_btc.tolist()
        self._ask_lot_list: list[float] = self.ask_btc.tolist()
        self._lots_per_btc = 0.0
        self._cap_atoms = 0  # the leverage cap of a maker's position (notional), from start
        self.calm_vol = 0.0  # 0 until the first vol_window steps are seen
        self.vol_stress = 0.0
        self._warmup: list[float] = []

    @property
    def accounts(self) -> list[str]:
        return [m.account for m in self.makers]

    # -- Agent ----------------------------------------------------------------------------------
    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        self._lots_per_btc = 1.0 / float(world.spec.step_size)
        self._cap_atoms = world.spec.max_notional_atoms_at(self.config.leverage)
        self._bid_lot_list = (self.bid_btc * self._lots_per_btc).tolist()
        self._ask_lot_list = (self.ask_btc * self._lots_per_btc).tolist()
        commands: list[Command] = []
        for m in self.makers:
            commands.append(Deposit(m.account, self._deposit_atoms))
            # Cross margin is the engine's default: no SetMarginMode (it would be refused as
            # unchanged).
            commands.append(SetLeverage(m.account, self.symbol, self.config.leverage))
        return commands

    def step(self, world: World) -> list[Command]:
        self._update_vol(world.volatility)
        commands: list[Command] = []
        sends: list[tuple[MakerState, tuple[Quote, ...]]] = []
        for m in self.makers:
            pos = world.position(m.account)
            m.inventory_lots = pos.size_lots
            m.equity_atoms.append(pos.equity_atoms)
            m.stress = max(self.vol_stress, self._loss_stress(m))
            intensity = min(1.0, max(0.0, (m.stress - 1.0) / (STRESS_FULL - 1.0)))
            m.reaction = max(intensity, m.reaction - 1.0 / self.config.recover_steps, 0.0)
            if world.makers_away:
                if not m.pulled:
                    commands.append(MassQuote(m.account, self.symbol, ()))
                    m.pulled = True
                    m.quotes = None
                continue
            m.pulled = False
            quotes = self.ladder(world, m)
            if self._should_send(m, quotes):
                sends.append((m, quotes))
        commands.extend(self._pre_pulls(sends))
        for m, quotes in sends:
            commands.append(MassQuote(m.account, self.symbol, quotes))
            m.quotes = quotes
            m.stale = False
        return commands

    def observe(self, events: Sequence[Event]) -> None:
        by_account = self._by_account
        for e in events:
            if type(e) is TradeExecuted:  # exact types: this loop sees every event
                m = by_account.get(e.maker_account)
            elif type(e) is OrderRejected:
                m = by_account.get(e.account)  # e.g. a quote crossing someone else's order
            else:
                continue
            if m is not None:
                m.stale = True

    # -- decisions ------------------------------------------------------------------------------
    def _update_vol(self, vol: float) -> None:
        cfg = self.config
        if len(self._warmup) < cfg.vol_window:
            self._warmup.append(vol)
            if len(self._warmup) == cfg.vol_window:
                self.calm_vol = max(statistics.median(self._warmup), VOL_FLOOR)
            self.vol_stress = 0.0
            return
        calm = self.calm_vol
        self.vol_stress = vol / calm / cfg.vol_threshold
        reading = min(vol, cfg.vol_threshold * calm)
        calm += (reading - calm) / (CALM_WINDOWS * cfg.vol_window)
        self.calm_vol = max(calm, VOL_FLOOR)

    def _loss_stress(self, m: MakerState) -> float:
        if self.config.loss_limit <= 0 or not m.equity_atoms:
            return 0.0  # loss_limit 0: losses never stress the maker
        drawdown_atoms = max(m.equity_atoms) - m.equity_atoms[-1]
        return drawdown_atoms / (self.config.loss_limit * self._deposit_atoms)

    def ladder(self, world: World, m: MakerState) -> tuple[Quote, ...]:
        """The ladder `m` would quote now: bids best first, then asks best first."""
        cfg = self.config
        spec = world.spec
        ref_ticks = world.target_ticks or world.mark_ticks
        if ref_ticks <= 0 or not self.makers:
            return ()
        mark_ticks = world.mark_ticks or ref_ticks
        r = m.reaction
        widen = 1.0 + (cfg.widen_max - 1.0) * r
        keep_share = 1.0 - cfg.pull_max * r
        inventory_btc = m.inventory_lots / self._lots_per_btc
        # the skew moves the ladder at most half its span: a maker leans, it does not leave
        half_span = cfg.max_distance / 2
        skew = min(max(cfg.skew_per_btc * inventory_btc, -half_span), half_span)
        center = ref_ticks * (1.0 - skew)
        band = spec.price_band_ppm
        lo_ticks = max(-(-mark_ticks * (PPM - band) // PPM), spec.min_price_ticks)
        hi_ticks = min(mark_ticks * (PPM + band) // PPM, spec.max_price_ticks)
        limit = min(MAX_MASS_QUOTES, spec.max_open_orders)
        cap = self._cap_atoms
        max_inventory_lots = cfg.max_inventory_btc * self._lots_per_btc
        # Past its inventory limit a maker shrinks the side that would add to it, linearly
        # down to `MIN_SIDE_SHARE` at twice the limit: it leans hard but keeps a two-sided book
        # (what exchanges' market-maker programmes oblige), and stress thins it further.
        excess = abs(m.inventory_lots) / max_inventory_lots - 1.0
        heavy_share = max(MIN_SIDE_SHARE, 1.0 - excess) if excess > 0 else 1.0
        bid_share = keep_share * (heavy_share if m.inventory_lots > 0 else 1.0)
        ask_share = keep_share * (heavy_share if m.inventory_lots < 0 else 1.0)
        # Plain floats and ints, not NumPy: a ladder is a few dozen levels, where a NumPy call
        # costs more than the arithmetic (the same IEEE operations in the same order: the
        # ladder is identical to the vectorised one it replaced, tests/test_maker_ladder_fast.py)
        d = self._distance_list if widen == 1.0 else [x * widen for x in self._distance_list]
        bid_lots = self._bid_lot_list
        if bid_share != 1.0:
            bid_lots = [x * bid_share for x in bid_lots]
        ask_lots = self._ask_lot_list
        if ask_share != 1.0:
            ask_lots = [x * ask_share for x in ask_lots]
        bids = self._side(
            BUY, [floor(center * (1.0 - x)) for x in d], bid_lots, lo_ticks, hi_ticks,
            max(m.inventory_lots, 0), cap, spec,
        )  # fmt: skip
        asks = self._side(
            SELL, [ceil(center * (1.0 + x)) for x in d], ask_lots, lo_ticks, hi_ticks,
            max(-m.inventory_lots, 0), cap, spec,
        )  # fmt: skip
        if bids and asks:
            best_bid = bids[0][1]
            asks = [q for q in asks if q[1] > best_bid]  # rounding at spread 0 may touch
        if len(bids) + len(asks) > limit:  # only on a market with a low open-order limit
            n_bids = min(len(bids), max(limit // 2, limit - len(asks)))
            bids, asks = bids[:n_bids], asks[: limit - n_bids]
        return (*bids, *asks)

    @staticmethod
    def _side(
        side: int,
        prices: list[int],
        lots: list[float],
        lo_ticks: int,
        hi_ticks: int,
        held_lots: int,
        cap_atoms: int,
        spec: MarketSpec,
    ) -> list[Quote]:
        """One side's quotes, best first: whole lots (a level under one lot dropped), inside
        [lo_ticks, hi_ticks], at least the min notional, at most the max limit quantity, and
        only the levels that keep the side's exposure (the position `held_lots` on this side
        plus the quotes so far) within the leverage cap, as the engine checks each order.
        The cap cuts the side at its first level past it, if the side's whole exposure is."""
        k = spec.atoms_per_tick_lot
        min_notional_atoms = spec.min_notional_atoms
        max_qty_lots = spec.max_limit_qty_lots
        # float: the products can pass int64 for a huge ladder; the cap is a decision here
        cap = float(cap_atoms)
        quotes: list[Quote] = []
        exposure_lots = held_lots
        exposure_atoms = 0.0
        first_over = -1  # the first level whose exposure passes the cap
        for price_ticks, level_lots in zip(prices, lots, strict=True):
            qty_lots = floor(level_lots)
            if qty_lots < 1 or price_ticks < lo_ticks or price_ticks > hi_ticks:
                continue
            need_lots = -(-min_notional_atoms // (price_ticks * k))
            if qty_lots < need_lots:
                qty_lots = need_lots
            if qty_lots > max_qty_lots:
                qty_lots = max_qty_lots
            exposure_lots += qty_lots
            exposure_atoms = exposure_lots * float(price_ticks) * k
            if first_over < 0 and exposure_atoms > cap:
                first_over = len(quotes)
            quotes.append((side, price_ticks, qty_lots))
        if exposure_atoms > cap:  # the last level's: the whole side passes the cap
            del quotes[first_over:]
        return quotes

    def _pre_pulls(self, sends: list[tuple[MakerState, tuple[Quote, ...]]]) -> list[Command]:
        """Empty `MassQuote`s, sent first, for the makers whose resting ladder the new ladder
        of a maker before them would cross. After a jump of the mid the first maker to
        requote would otherwise find the others' old quotes across its new ones, and its
        post-only quotes there would be refused."""
        out: list[Command] = []
        if len(sends) < 2:
            return out  # the first maker to send has no maker before it
        new_best = [_best(quotes) for _, quotes in sends]
        for i, (m, _) in enumerate(sends):
            if not m.quotes:
                continue
            old_bid, old_ask = _best(m.quotes)
            for new_bid, new_ask in new_best[:i]:
                if (old_bid and new_ask and new_ask <= old_bid) or (
                    old_ask and new_bid and new_bid >= old_ask
                ):
                    out.append(MassQuote(m.account, self.symbol, ()))
                    break
        return out

    def _should_send(self, m: MakerState, quotes: tuple[Quote, ...]) -> bool:
        if m.quotes is None or m.stale:
            return True
        if quotes == m.quotes:
            return False
        ticks = self.config.requote_ticks
        if ticks <= 0 or len(quotes) != len(m.quotes):
            return True
        for (side, price, qty), (old_side, old_price, old_qty) in zip(
            quotes, m.quotes, strict=True
        ):
            if side != old_side or qty != old_qty or abs(price - old_price) >= ticks:
                return True
        return False


__all__ = ["CALM_WINDOWS", "STRESS_FULL", "VOL_FLOOR", "MakerState", "MarketMakers"]
