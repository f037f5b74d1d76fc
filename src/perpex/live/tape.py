"""`Tape`: the small market orders that keep a served market trading (account ``tape``).

A real market always has a tape: trades print, candles form, the last price moves. The makers
alone never trade with each other, so without a taker a served market has no trades, no
``/fapi/v1/klines`` candles (they are built from trades) and bots that wait for candles never
act. The tape is that taker, light on purpose:

- arrivals are a Poisson process in WALL time, `per_minute` trades a minute on average (not
  scenario time: at ``--speed 60`` the journal takes as many tape orders a minute as at 1x);
  a tick of `elapsed_ns` wall time sends Poisson(per_minute x elapsed / 1 min) orders, at
  most `MAX_TRADES_PER_TICK` (the driver already caps a tick's wall time, so a server that
  stalled does not print a burst);
- each is a market order (IOC, price 0) through the makers' book, so its prices are the
  makers' quotes around the path, of a log-normal size around `MEDIAN_SIZE_BTC` in whole lots
  (at least one lot and the min notional, at most `MAX_SIZE_BTC`);
- its side is random but leans against its own position (buy with probability
  (1 - position / `MAX_POSITION_BTC`) / 2; past the limit it only reduces), so the tape's
  position (and hence the makers' inventory from it) stays a few hundredths of a BTC and is
  never near a liquidation: its account is funded with `DEPOSIT_USDT` at `LEVERAGE` when new;
- nothing is sent while the makers are away (a liquidity gap: the IOC would only expire) or
  when the side it would take is empty. The driver also sends nothing while paused.

Determinism: every draw comes from the tape's own generator, seeded from the driver's seed
and `TAPE_SEED`; the wall-clock intervals and the book are inputs. The same seed and the same
sequence of ticks give the same orders.

Units: sizes in lots (drawn in BTC), money in atoms, times in ns, rates per wall minute.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from perpex.core.book import BUY, SELL
from perpex.core.messages import Command, Deposit, SetLeverage
from perpex.core.units import ATOMS_PER_UNIT
from perpex.sim.agents.takers import lots_from_btc, market_orders, reference_ticks
from perpex.sim.world import MarketWorld

TAPE_ACCOUNT: Final = "tape"
TAPE_SEED: Final = 0x7A9E  # the tape's generator is seeded from (driver seed, this)
DEFAULT_TAPE_PER_MINUTE: Final = 20.0  # a quiet but visible tape: a 1m candle has ~20 trades
MAX_TAPE_PER_MINUTE: Final = 6_000.0  # 100 a second: more is load testing, not a tape
MAX_TRADES_PER_TICK: Final = 64
NS_PER_MINUTE: Final = 60_000_000_000
MEDIAN_SIZE_BTC: Final = 0.005  # ~390 USDT at 78,000: a retail-sized print
SIZE_SIGMA: Final = 0.8  # of log(size): 90 % of the prints between 0.0013 and 0.019 BTC
MAX_SIZE_BTC: Final = 0.05
MAX_POSITION_BTC: Final = 0.1  # the lean is full here; past it the tape only reduces
DEPOSIT_USDT: Final = 10_000_000.0  # fees and spread, ~0.3 USDT a print: years at 20 a minute
LEVERAGE: Final = 10


def check_tape_rate(per_minute: object) -> float:
    """A tape rate as a float in [0, MAX_TAPE_PER_MINUTE] (0: no tape); ValueError otherwise."""
    if isinstance(per_minute, bool) or not isinstance(per_minute, int | float):
        raise ValueError(f"the tape rate must be a number of trades a minute, got {per_minute!r}")
    x = float(per_minute)
    if not (math.isfinite(x) and 0.0 <= x <= MAX_TAPE_PER_MINUTE):
        raise ValueError(
            f"the tape rate must be in [0, {MAX_TAPE_PER_MINUTE:g}] trades a minute, "
            f"got {per_minute!r}"
        )
    return x


class Tape:
    """The tape taker of one symbol: `per_minute` small market orders a wall minute."""

    def __init__(self, symbol: str, per_minute: float, seed: int) -> None:
        self.symbol = symbol
        self.per_minute = check_tape_rate(per_minute)
        self.account = TAPE_ACCOUNT
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, TAPE_SEED]))
        self.orders = 0  # market orders sent since this process started (for the status)

    def start(self) -> list[Command]:
        """Its account's set-up (the driver drops what an existing account already has)."""
        if self.per_minute == 0.0:
            return []
        return [
            Deposit(self.account, round(DEPOSIT_USDT * ATOMS_PER_UNIT)),
            SetLeverage(self.account, self.symbol, LEVERAGE),
        ]

    def step(self, world: MarketWorld, elapsed_ns: int) -> list[Command]:
        """The market orders of `elapsed_ns` of wall time (0 while paused: nothing)."""
        if self.per_minute == 0.0 or elapsed_ns <= 0 or world.makers_away:
            return []
        rng = self.rng
        expected = self.per_minute * elapsed_ns / NS_PER_MINUTE
        count = min(int(rng.poisson(expected)), MAX_TRADES_PER_TICK)
        if count == 0:
            return []
        coins = rng.random(count)
        sizes_btc = np.minimum(
            MEDIAN_SIZE_BTC * np.exp(SIZE_SIGMA * rng.standard_normal(count)), MAX_SIZE_BTC
        )
        spec = world.spec
        lots = lots_from_btc(sizes_btc, spec, reference_ticks(world)).tolist()
        # + 1e-9: 0.1 / 0.001 is 99.99999999999999 in floats
        max_lots = max(math.floor(MAX_POSITION_BTC / float(spec.step_size) + 1e-9), 1)
        has_bids, has_asks = world.best_bid() is not None, world.best_ask() is not None
        held_lots = world.position(self.account).size_lots
        commands: list[Command] = []
        for coin, qty_lots in zip(coins.tolist(), lots, strict=True):
            # Lean against the position: flat, a fair coin; at +max, always sell.
            buy_share = min(max(0.5 * (1.0 - held_lots / max_lots), 0.0), 1.0)
            side = BUY if coin < buy_share else SELL
            if abs(held_lots + side * qty_lots) > max_lots and held_lots != 0:
                side = SELL if held_lots > 0 else BUY
                qty_lots = min(qty_lots, abs(held_lots))
            if not (has_asks if side == BUY else has_bids):
                continue  # nobody to trade with on that side: the IOC would only expire
            commands.extend(market_orders(self.account, self.symbol, side, qty_lots, spec, False))
            held_lots += side * qty_lots  # as if filled: the next print of the tick leans on it
        self.orders += len(commands)
        return commands


__all__ = [
    "DEFAULT_TAPE_PER_MINUTE",
    "MAX_TAPE_PER_MINUTE",
    "TAPE_ACCOUNT",
    "Tape",
    "check_tape_rate",
]
