"""Takers: noise traders that keep the last price near the path, and momentum traders that
chase a move. Both trade only with market orders (IOC, no price).

* `NoiseTakers` ("noise-0", ...): each step each trader is active with probability
  `activity`; it buys or sells, towards the target `pull` of the time (buy when the last
  price is below it) and at random otherwise, a size drawn from `size_btc`. A trader whose
  position would pass `max_position_btc` trades only to reduce it (reduce-only).
* `MomentumTakers` ("mom-0", ...): when the target moved more than `threshold` over the last
  `lookback` steps, each trader not in a position joins the move with probability `activity`
  (a market order of `size_btc` on the side of the move) and closes it with a reduce-only
  market order `hold_steps` later, unless it is already flat (liquidated, say).

The random draws of a step are one array per kind for the whole population (vectorised);
the per-step Python work is proportional to the traders that act. Sizes are whole lots, at
least one lot and the min notional, and a market order larger than the market's maximum is
split (`market_orders`).

Units: prices in ticks, sizes in lots (integers sent); sizes drawn in BTC, shares as fractions.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from perpex.core.book import BUY, SELL
from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    Command,
    Deposit,
    Event,
    OrderRejected,
    OrderType,
    PlaceOrder,
    PositionChanged,
    SetLeverage,
    TimeInForce,
)
from perpex.core.units import ATOMS_PER_UNIT
from perpex.sim.agents.base import FloatArray, World
from perpex.sim.agents.config import MomentumConfig, NoiseConfig

IntArray = npt.NDArray[np.int64]


def market_orders(
    account: str, symbol: str, side: int, qty_lots: int, spec: MarketSpec, reduce_only: bool
) -> list[Command]:
    """Market orders for `qty_lots` on `side`, split at the market's max market quantity."""
    out: list[Command] = []
    left = qty_lots
    while left > 0:
        part = min(left, spec.max_market_qty_lots)
        out.append(
            PlaceOrder(
                account, symbol, side, OrderType.MARKET, TimeInForce.IOC, part, 0, reduce_only
            )
        )
        left -= part
    return out


def lots_from_btc(sizes_btc: FloatArray, spec: MarketSpec, price_ticks: int) -> IntArray:
    """Whole lots of each size (nearest), at least one lot and the min notional at
    `price_ticks` (the price a market order is checked at is the mark's; close enough)."""
    lots = np.rint(sizes_btc / float(spec.step_size)).astype(np.int64)
    per_lot_atoms = max(price_ticks, 1) * spec.atoms_per_tick_lot
    floor_lots = max(1, -(-spec.min_notional_atoms // per_lot_atoms))
    return np.maximum(lots, floor_lots)


def reference_ticks(world: World) -> int:
    """The price a size is valued at: the last trade, else the mark, else the target."""
    return world.last_ticks or world.mark_ticks or world.target_ticks


def _funding(accounts: list[str], symbol: str, deposit: float, leverage: int) -> list[Command]:
    amount_atoms = round(deposit * ATOMS_PER_UNIT)
    commands: list[Command] = []
    for account in accounts:
        commands.append(Deposit(account, amount_atoms))
        commands.append(SetLeverage(account, symbol, leverage))
    return commands


class NoiseTakers:
    """Noise traders (`Agent`), accounts ``noise-0`` .. ``noise-{count-1}``."""

    def __init__(self, config: NoiseConfig, symbol: str, name: str = "noise") -> None:
        self.name = name
        self.config = config
        self.symbol = symbol
        self.accounts = [f"noise-{i}" for i in range(config.count)]
        self._rng: np.random.Generator | None = None

    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        self._rng = rng
        cfg = self.config
        return _funding(self.accounts, self.symbol, cfg.deposit, cfg.leverage)

    def step(self, world: World) -> list[Command]:
        rng = self._rng
        cfg = self.config
        n = cfg.count
        if rng is None or n == 0:
            return []
        spec = world.spec
        # One draw per kind for the whole population: [active, towards the target, coin].
        u = rng.random((3, n))
        sizes_btc = cfg.size_btc.sample(rng, n)
        active = np.flatnonzero(u[0] < cfg.activity)
        if not len(active):
            return []
        price_ticks = reference_ticks(world)
        last, target = world.last_ticks, world.target_ticks
        towards = 0 if not last else BUY if last < target else SELL if last > target else 0
        sides = np.where(u[2, active] < 0.5, BUY, SELL)
        if towards:
            sides = np.where(u[1, active] < cfg.pull, towards, sides)
        lots = lots_from_btc(sizes_btc[active], spec, price_ticks)
        # + 1e-9: 0.3 / 0.001 is 299.99999999999994 in floats
        max_lots = math.floor(cfg.max_position_btc / float(spec.step_size) + 1e-9)
        commands: list[Command] = []
        for i, side, qty in zip(active.tolist(), sides.tolist(), lots.tolist(), strict=True):
            account = self.accounts[i]
            held = world.position(account).size_lots
            reduce_only = False
            if abs(held + side * qty) > max_lots:
                if held == 0:
                    qty = max_lots  # a first trade larger than the limit: the limit
                else:
                    side = SELL if held > 0 else BUY
                    qty = min(qty, abs(held))
                    reduce_only = True
            if qty > 0:
                commands.extend(market_orders(account, self.symbol, side, qty, spec, reduce_only))
        return commands

    def observe(self, events: Sequence[Event]) -> None:
        return None  # positions are read from the world when a trader acts


class MomentumTakers:
    """Momentum traders (`Agent`), accounts ``mom-0`` .. ``mom-{count-1}``."""

    def __init__(self, config: MomentumConfig, symbol: str, name: str = "momentum") -> None:
        self.name = name
        self.config = config
        self.symbol = symbol
        self.accounts = [f"mom-{i}" for i in range(config.count)]
        self._index = {a: i for i, a in enumerate(self.accounts)}
        self._rng: np.random.Generator | None = None
        self._targets: deque[int] = deque(maxlen=config.lookback + 1)
        self.in_position = np.zeros(config.count, dtype=bool)  # joined and not closed yet
        self.close_step = np.zeros(config.count, dtype=np.int64)
        self.joins = 0  # entries sent (for tests and the summary)
        self._step = 0  # the last step seen

    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        self._rng = rng
        cfg = self.config
        return _funding(self.accounts, self.symbol, cfg.deposit, cfg.leverage)

    def step(self, world: World) -> list[Command]:
        rng = self._rng
        cfg = self.config
        if rng is None or cfg.count == 0:
            return []
        spec = world.spec
        self._step = world.step
        commands: list[Command] = []
        # Close what is due (hold_steps after joining); retried each step until flat.
        for i in np.flatnonzero(self.in_position & (self.close_step <= world.step)).tolist():
            account = self.accounts[i]
            held = world.position(account).size_lots
            if held == 0:
                self.in_position[i] = False
                continue
            side = SELL if held > 0 else BUY
            commands.extend(market_orders(account, self.symbol, side, abs(held), spec, True))
        if world.target_ticks > 0:
            self._targets.append(world.target_ticks)
        if len(self._targets) <= cfg.lookback:
            return commands
        move = self._targets[-1] / self._targets[0] - 1.0
        if abs(move) <= cfg.threshold:
            return commands
        side = BUY if move > 0 else SELL
        u = rng.random(cfg.count)
        sizes_btc = cfg.size_btc.sample(rng, cfg.count)
        joining = np.flatnonzero(~self.in_position & (u < cfg.activity))
        if not len(joining):
            return commands
        lots = lots_from_btc(sizes_btc[joining], spec, reference_ticks(world))
        for i, qty in zip(joining.tolist(), lots.tolist(), strict=True):
            commands.extend(market_orders(self.accounts[i], self.symbol, side, qty, spec, False))
        self.in_position[joining] = True
        self.close_step[joining] = world.step + cfg.hold_steps
        self.joins += len(joining)
        return commands

    def observe(self, events: Sequence[Event]) -> None:
        index = self._index
        for e in events:
            if type(e) is PositionChanged and e.size_lots == 0:
                # Flat (closed, liquidated, deleveraged): free to join again.
                i = index.get(e.account)
                if i is not None and e.symbol == self.symbol:
                    self.in_position[i] = False
            elif type(e) is OrderRejected:
                # An entry (or a close) refused: look at the position next step, closing
                # whatever is held or freeing the trader if it is flat.
                i = index.get(e.account)
                if i is not None and e.symbol == self.symbol and self.in_position[i]:
                    self.close_step[i] = min(int(self.close_step[i]), self._step + 1)


__all__ = ["MomentumTakers", "NoiseTakers", "lots_from_btc", "market_orders", "reference_ticks"]
