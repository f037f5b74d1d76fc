"""The whale: one large trader (account "whale") that sweeps the book to push the price, holds,
then closes.

From `at` (an ISO-8601 UTC time, or seconds after the run's start) it sends market orders on
`side`, each step the notional still to trade divided by the steps left (of `steps`), valued
at the last price; it stops early once it has traded `notional` USDT or the last price moved
`push` (a fraction) in its direction from where it was when it began. It then holds
`hold_steps` steps and closes with reduce-only market orders, retried each step until flat
(or liquidated). An order above the market's max market quantity is split.

Units: prices in ticks, sizes in lots, money in atoms; `at` in ns once parsed.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.messages import Command, Deposit, Event, SetLeverage, TradeExecuted
from perpex.core.units import ATOMS_PER_UNIT
from perpex.parse import start_time_ns
from perpex.sim.agents.base import World
from perpex.sim.agents.config import WhaleConfig
from perpex.sim.agents.takers import market_orders, reference_ticks

ACCOUNT = "whale"
NS_PER_SECOND = 1_000_000_000


class Phase(enum.Enum):
    WAIT = "wait"  # before `at`
    PUSH = "push"  # sweeping the book
    HOLD = "hold"
    CLOSE = "close"  # reduce-only market orders until flat
    DONE = "done"


def at_ns(at: str, start_ns: int) -> int:
    """`WhaleConfig.at` as a clock time: seconds after `start_ns` (a number), or an ISO-8601
    time (no offset = UTC, as `perpex.parse.start_time_ns` reads it)."""
    text = at.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            return start_time_ns(text)
        except (ValueError, OverflowError):
            raise ValueError(
                f"at {at!r}: give seconds from the start or ISO-8601 UTC text"
            ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"at {at!r}: seconds from the start must be a finite number >= 0")
    return start_ns + round(seconds * NS_PER_SECOND)


class Whale:
    """The whale (`Agent`)."""

    def __init__(
        self, config: WhaleConfig, symbol: str, start_ns: int, name: str = "whale"
    ) -> None:
        self.name = name
        self.config = config
        self.symbol = symbol
        self.account = ACCOUNT
        self.accounts = [ACCOUNT]
        self.at_ns = at_ns(config.at, start_ns)
        self.side = BUY if config.side == "BUY" else SELL
        self.phase = Phase.WAIT
        self.start_ticks = 0  # the last price when the push began
        self.start_step = -1
        self.close_step = -1
        self.pushes = 0  # steps with orders sent in the push
        self.traded_atoms = 0  # notional traded in the push (from its fills)
        self._notional_atoms = round(config.notional * ATOMS_PER_UNIT)
        self._atoms_per_tick_lot = 0  # the market's, known at start

    def start(self, world: World, rng: np.random.Generator) -> list[Command]:
        self._atoms_per_tick_lot = world.spec.atoms_per_tick_lot
        return [
            Deposit(ACCOUNT, round(self.config.deposit * ATOMS_PER_UNIT)),
            SetLeverage(ACCOUNT, self.symbol, self.config.leverage),
        ]

    def step(self, world: World) -> list[Command]:
        if self.phase is Phase.WAIT:
            if world.time_ns < self.at_ns:
                return []
            self.phase = Phase.PUSH
            self.start_ticks = reference_ticks(world)
            self.start_step = world.step
        if self.phase is Phase.PUSH:
            commands = self._push(world)
            if commands:
                return commands
            self.phase = Phase.HOLD
            self.close_step = world.step + self.config.hold_steps
        if self.phase is Phase.HOLD:
            if world.step < self.close_step:
                return []
            self.phase = Phase.CLOSE
        if self.phase is Phase.CLOSE:
            held = world.position(ACCOUNT).size_lots
            if held == 0:
                self.phase = Phase.DONE
                return []
            side = SELL if held > 0 else BUY
            return market_orders(ACCOUNT, self.symbol, side, abs(held), world.spec, True)
        return []

    def _push(self, world: World) -> list[Command]:
        """This step's push orders, or [] when the push is over."""
        cfg = self.config
        steps_left = cfg.steps - self.pushes
        remaining_atoms = self._notional_atoms - self.traded_atoms
        if steps_left <= 0 or remaining_atoms <= 0:
            return []
        last = world.last_ticks
        if last and (last - self.start_ticks) * self.side >= cfg.push * self.start_ticks:
            return []
        price_ticks = reference_ticks(world)
        if price_ticks <= 0:
            return []
        per_lot_atoms = price_ticks * world.spec.atoms_per_tick_lot
        qty_lots = remaining_atoms // steps_left // per_lot_atoms
        self.pushes += 1
        if qty_lots <= 0:
            return []
        return market_orders(ACCOUNT, self.symbol, self.side, qty_lots, world.spec, False)

    def observe(self, events: Sequence[Event]) -> None:
        if self.phase is not Phase.PUSH:
            return
        for e in events:
            if type(e) is TradeExecuted and e.taker_account == ACCOUNT:
                self.traded_atoms += e.price_ticks * e.qty_lots * self._atoms_per_tick_lot


__all__ = ["ACCOUNT", "Phase", "Whale", "at_ns"]
