"""What every simulated agent shares: the protocol, the read-only view of the market, and the
seeded distributions that populations are drawn from.

An agent never touches the book or the ledger directly: each step it returns engine commands
(`perpex.core.messages`, integer units) that the runner submits through `Exchange.submit`,
exactly as any other client's commands go in. What an agent may *read* is the `World`: the
path's target, the index, mark and last price, the best bid and ask, the realised volatility,
and its own accounts' positions and balances.

Determinism: an agent draws only from the `numpy.random.Generator` the runner hands it (seeded
from the scenario seed and the agent's place in the scenario), never from a global source.
Floats are allowed here (agents *decide*, the engine *settles*): every price and quantity an
agent sends is an integer number of ticks or lots, so the exchange's arithmetic stays exact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from perpex.core.markets import MarketSpec
from perpex.core.messages import Command, Event

FloatArray = npt.NDArray[np.float64]

DistKind = Literal["fixed", "uniform", "loguniform", "lognormal", "choice"]


@dataclass(frozen=True)
class Dist:
    """A distribution a population parameter is drawn from (a TOML inline table).

    - ``{kind = "fixed", value = 10}``
    - ``{kind = "uniform", low = 1, high = 5}``
    - ``{kind = "loguniform", low = 1, high = 100}``
    - ``{kind = "lognormal", median = 10, sigma = 0.8, low = 1, high = 125}``: exp(N(ln median,
      sigma)), clipped to [low, high] (the clip gives the heavy tail its cap)
    - ``{kind = "choice", values = [5, 10, 20, 50, 100], weights = [4, 3, 2, 1, 1]}``
    """

    kind: DistKind = "fixed"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    median: float = 1.0
    sigma: float = 0.0
    values: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("value", "low", "high", "median", "sigma"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        if self.kind in ("uniform", "loguniform") and not self.low <= self.high:
            raise ValueError(f"low {self.low} must not exceed high {self.high}")
        if self.kind == "loguniform" and self.low <= 0:
            raise ValueError("loguniform needs low > 0")
        if self.kind == "lognormal":
            if self.median <= 0 or self.sigma < 0:
                raise ValueError("lognormal needs median > 0 and sigma >= 0")
            if self.high and not self.low <= self.high:
                raise ValueError(f"low {self.low} must not exceed high {self.high}")
        if self.kind == "choice":
            if not self.values:
                raise ValueError("choice needs at least one value")
            if self.weights and len(self.weights) != len(self.values):
                raise ValueError("weights must have one entry per value")
            if self.weights and (min(self.weights) < 0 or sum(self.weights) <= 0):
                raise ValueError("weights must be >= 0 with a positive sum")
            if not all(math.isfinite(v) for v in (*self.values, *self.weights)):
                raise ValueError("values and weights must be finite numbers")
        if self.kind not in ("fixed", "uniform", "loguniform", "lognormal", "choice"):
            raise ValueError(
                f"kind {self.kind!r}: use fixed, uniform, loguniform, lognormal or choice"
            )

    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value a draw can take (`math.inf` for no cap). A lognormal
        draw is always > 0: its lower bound is max(low, 0), and 0 itself is never drawn."""
        if self.kind == "fixed":
            return self.value, self.value
        if self.kind in ("uniform", "loguniform"):
            return self.low, self.high
        if self.kind == "lognormal":
            return max(self.low, 0.0), self.high if self.high else math.inf
        return min(self.values), max(self.values)

    def sample(self, rng: np.random.Generator, n: int) -> FloatArray:
        """`n` draws as float64."""
        if self.kind == "fixed":
            return np.full(n, self.value, dtype=np.float64)
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high, n)
        if self.kind == "loguniform":
            return np.exp(rng.uniform(math.log(self.low), math.log(self.high), n))
        if self.kind == "lognormal":
            out = np.exp(rng.normal(math.log(self.median), self.sigma, n))
            high = self.high if self.high else np.inf
            return np.clip(out, self.low, high)
        p = None
        if self.weights:
            w = np.asarray(self.weights, dtype=np.float64)
            p = w / w.sum()
        return rng.choice(np.asarray(self.values, dtype=np.float64), size=n, p=p)


def fixed(value: float) -> Dist:
    return Dist("fixed", value=value)


@dataclass
class Position:
    """An account's position in the simulated symbol, as an agent sees it (integers)."""

    size_lots: int = 0  # signed: > 0 long
    entry_ticks: int = 0  # average entry, rounded to a tick (0 when flat)
    wallet_atoms: int = 0  # cross wallet balance
    equity_atoms: int = 0  # wallet + isolated margin + unrealized PnL at the mark


class World(Protocol):
    """The read-only market view the runner gives agents at each step."""

    symbol: str
    spec: MarketSpec  # tick/step sizes, fees, brackets, price band
    step: int  # 0-based step number on the path
    time_ns: int  # the step's time (the exchange clock already stands here)
    target_ticks: int  # the path's local last-price target at this step
    index_ticks: int  # the index this step publishes
    mark_ticks: int  # the exchange's mark after this step's index update (0 before the first)
    last_ticks: int  # the last trade price (0 before the first trade)
    makers_away: bool  # a liquidity gap: market makers are pulled out
    volatility: float  # realised volatility of the target: RMS of log returns per step
    step_ns: int  # the path's nominal step interval

    def best_bid(self) -> int | None: ...
    def best_ask(self) -> int | None: ...
    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids, asks) as (price_ticks, qty_lots), best first."""
        ...

    def position(self, account: str) -> Position: ...
    def liquidation_price_ticks(self, account: str) -> int | None:
        """The account's liquidation price rounded to a tick (None if flat or none)."""
        ...


class Agent(Protocol):
    """One participant or a population of them, each with its own accounts.

    The runner calls `start` once (deposits, leverage and margin-mode settings, an opening
    position), then at every step, in the scenario's agent order, `step`; the commands each
    returns are submitted at once, in order. After each step every agent's `observe` sees all
    the events of that step (it picks out its own accounts').
    """

    name: str

    def start(self, world: World, rng: np.random.Generator) -> list[Command]: ...
    def step(self, world: World) -> list[Command]: ...
    def observe(self, events: Sequence[Event]) -> None: ...


@dataclass
class AgentStats:
    """What an agent reports for the summary and the report (optional extras)."""

    accounts: list[str] = field(default_factory=list)


def lots_for_notional(spec: MarketSpec, notional_atoms: int, price_ticks: int) -> int:
    """Whole lots of `notional_atoms` at `price_ticks`, rounded down (0 when less than one)."""
    per_lot = price_ticks * spec.atoms_per_tick_lot
    return notional_atoms // per_lot if per_lot > 0 else 0


__all__ = ["Agent", "AgentStats", "Dist", "Position", "World", "fixed", "lots_for_notional"]
