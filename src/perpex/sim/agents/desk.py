"""The opening desk: the other side of the crowd's positions at the start of a run.

A replay starts in the middle of a market: on 2020-03-12 the crowd already held its longs, and
someone held the shorts (on a perpetual, mostly basis traders short the perpetual against spot,
well capitalised and at low leverage). Without them the makers would have to sell the whole
opening crowd its positions in the first minutes, end far outside their inventory limits and
quote one side only. The desk is that counterparty: at the first step, before the traders
act, it rests the crowd's net opening size (long minus short lots of the traders who enter at
step 0, at their drawn margin x leverage) on the opposite side, in a few levels within
`SPREAD` of the target, as post-only quotes (one `MassQuote`); at the second step it pulls
what is left (an empty `MassQuote`). From then on it unwinds as a basis trader does: when the
perpetual trades more than `ARB_THRESHOLD` through the index on the side that lets it close
(a short desk buys when the best ask is below index x (1 - threshold)), it sends a reduce-only
IOC limit at that price for up to `UNWIND_SHARE` of its opening size. In a crash this is who
buys the liquidations back from the makers, and open interest falls as it did on the real
days. Like any account it pays and receives funding and can be auto-deleveraged.

Units: prices in ticks, sizes in lots, money in atoms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.mass_quote import MAX_MASS_QUOTES
from perpex.core.messages import (
    Command,
    Deposit,
    Event,
    MassQuote,
    OrderType,
    PlaceOrder,
    SetLeverage,
    TimeInForce,
)
from perpex.sim.agents.base import World
from perpex.sim.agents.traders import LeveragedTraders

ACCOUNT = "desk"
LEVELS = 5
SPREAD = 0.001  # the desk's levels lie within 0.1 % of the target
LEVERAGE = 2  # a basis trader's leverage: far from any liquidation in a day
SIZE_MARGIN = 1.05  # rest 5 % more than the net, for the traders' own rounding
ARB_THRESHOLD = 0.002  # the desk closes when the book is 0.2 % through the index
UNWIND_SHARE = 0.01  # of its opening size per step, at most


class OpeningDesk:
    """Holds the other side of the opening crowd (see the module docstring)."""

    def __init__(self, symbol: str, traders: LeveragedTraders) -> None:
        self.name = "desk"
        self.symbol = symbol
        self.traders = traders
        self.net_lots = 0  # the crowd's net opening size: > 0 long (the desk sells)
        self.rested = False
        self.pulled = False

    @property
    def accounts(self) -> list[str]:
        return [ACCOUNT]

    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        return []  # everything happens at the first step, once the traders have drawn

    def step(self, world: World) -> list[Command]:
        if self.pulled:
            return self._unwind(world)
        if self.rested:
            self.pulled = True
            return [MassQuote(ACCOUNT, self.symbol, ())] if self.net_lots else []
        self.rested = True
        d = self.traders.draws
        if d is None:
            raise RuntimeError("the traders must have started before the desk's first step")
        opening = d.entry_step == 0
        notional_atoms = int((d.margin_atoms * d.leverage * d.side)[opening].sum())
        target = world.target_ticks
        self.net_lots = notional_atoms // (target * world.spec.atoms_per_tick_lot)
        if not self.net_lots:
            return []
        side = SELL if self.net_lots > 0 else BUY
        total = int(abs(self.net_lots) * SIZE_MARGIN)
        # a level holds at most the market's max limit quantity
        max_lots = world.spec.max_limit_qty_lots
        levels = min(max(LEVELS, -(-total // max_lots)), MAX_MASS_QUOTES)
        total = min(total, levels * max_lots)
        quotes: list[tuple[int, int, int]] = []
        left = total
        for i in range(levels):
            lots = total // levels if i < levels - 1 else left
            offset = round(target * SPREAD * i / (levels - 1))
            price = target + offset if side == SELL else target - offset
            if lots > 0:
                quotes.append((side, max(price, 1), lots))
                left -= lots
        # margin for the position at 2x, twice over: the desk is never the story's casualty
        deposit_atoms = total * target * world.spec.atoms_per_tick_lot * 2 // LEVERAGE
        return [
            Deposit(ACCOUNT, deposit_atoms),
            SetLeverage(ACCOUNT, self.symbol, LEVERAGE),
            MassQuote(ACCOUNT, self.symbol, tuple(quotes)),
        ]

    def _unwind(self, world: World) -> list[Command]:
        size = world.position(ACCOUNT).size_lots
        if not size:
            return []
        lots = min(abs(size), max(1, int(abs(self.net_lots) * UNWIND_SHARE)))
        index = world.index_ticks
        if size < 0:
            ask = world.best_ask()
            limit = int(index * (1.0 - ARB_THRESHOLD))
            if ask is None or ask > limit:
                return []
            side = BUY
        else:
            bid = world.best_bid()
            limit = -int(-index * (1.0 + ARB_THRESHOLD) // 1)
            if bid is None or bid < limit:
                return []
            side = SELL
        return [
            PlaceOrder(
                ACCOUNT, self.symbol, side, OrderType.LIMIT, TimeInForce.IOC, lots, limit,
                reduce_only=True,
            )
        ]  # fmt: skip

    def observe(self, events: Sequence[Event]) -> None:
        return None


__all__ = ["ACCOUNT", "OpeningDesk"]
