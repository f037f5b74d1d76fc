"""The agents' parameters: one frozen dataclass per kind, the shape of a scenario's
``[agents.*]`` tables.

`perpex.sim.scenario` reads TOML into these generically (field names are the keys, the type
hints say what a value may be, `__post_init__` says which values are refused), so a new
parameter is one field here with a default and a check. Money is in USDT, sizes in BTC
(the base asset), distances and shares as fractions (0.01 = 1 %), times in steps of the path
unless a name says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from perpex.sim.agents.base import Dist

MAX_AGENTS = 100_000  # accounts one population may open (the engine's account limit is higher)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def _share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")


def _count(name: str, value: int, low: int = 0) -> None:
    if not low <= value <= MAX_AGENTS:
        raise ValueError(f"{name} must be in [{low}, {MAX_AGENTS}], got {value}")


def _dist_in(
    name: str, dist: Dist, low: float, high: float = math.inf, *, above_low: bool = False
) -> None:
    """Every value the scenario wrote for `dist` lies in [low, high] ((low, high] with
    `above_low`): a fixed value, a uniform's bounds, a choice's values, a lognormal's `low` and
    `high` when given. A distribution that can draw a negative margin or a leverage of 0 is
    refused, not clipped; the open tails of a lognormal are the agents' to clip."""
    lo, hi = dist.bounds()
    check_lo = dist.kind != "lognormal" or dist.low != 0
    check_hi = dist.kind != "lognormal" or dist.high != 0
    lo_ok = not check_lo or lo > low or (lo == low and not above_low)
    if not (lo_ok and (not check_hi or hi <= high)):
        opening = "(" if above_low else "["
        upper = "inf)" if math.isinf(high) else f"{high:g}]"
        shown = f"{lo:g}" if lo == hi else f"{lo:g} to {hi:g}"
        raise ValueError(
            f"{name} must draw values in {opening}{low:g}, {upper}, it can draw {shown}"
        )


@dataclass(frozen=True)
class MakerConfig:
    """Market makers quoting a ladder around the path's target (`perpex.sim.agents.makers`).

    The ladder's shape is the real Binance BTCUSDT book of 2024-08-08 (``profile =
    "binance-2024-08-08"``: the size resting at each distance from the mid, scaled by
    `size_scale` and shared among the makers) or ``"flat"`` (equal size per level). Each maker
    replaces its whole ladder with one `MassQuote` per step (or only when its ladder moved by
    `requote_ticks` or more). When realised volatility rises above `vol_threshold` times its
    calm level, or the maker lost more than `loss_limit` of its deposit over `vol_window`
    steps, it widens its spread (up to `widen_max` times) and pulls size (up to `pull_max` of
    it); it comes back over `recover_steps` steps once things calm down.
    """

    count: int = 4
    deposit: float = 20_000_000.0  # USDT per maker
    leverage: int = 20
    profile: Literal["binance-2024-08-08", "flat"] = "binance-2024-08-08"
    size_scale: float = 1.0  # x the real book's size (all makers together)
    levels: int = 20  # price levels per side and maker (<= 50: a MassQuote holds 100)
    max_distance: float = 0.01  # the ladder spans this fraction of the mid on each side
    spread: float = 0.0001  # half-spread of the best level, a fraction of the mid
    skew_per_btc: float = 0.00002  # quotes shift by this fraction per BTC of inventory
    max_inventory_btc: float = 500.0  # beyond it a maker quotes only the reducing side
    requote_ticks: int = 0  # 0: requote every step
    vol_window: int = 30  # steps of realised volatility and loss tracking
    vol_threshold: float = 2.0  # react above this multiple of the calm volatility
    widen_max: float = 8.0
    pull_max: float = 0.9
    loss_limit: float = 0.01
    recover_steps: int = 30

    def __post_init__(self) -> None:
        _count("count", self.count)
        _positive("deposit", self.deposit)
        if not 1 <= self.leverage <= 125:
            raise ValueError(f"leverage must be in [1, 125], got {self.leverage}")
        _positive("size_scale", self.size_scale)
        if not 1 <= self.levels <= 50:
            raise ValueError(f"levels must be in [1, 50], got {self.levels}")
        if not 0 < self.max_distance <= 0.5:
            raise ValueError(f"max_distance must be in (0, 0.5], got {self.max_distance}")
        if not 0 <= self.spread < self.max_distance:
            raise ValueError("spread must be >= 0 and below max_distance")
        if not self.skew_per_btc >= 0:
            raise ValueError("skew_per_btc must be >= 0")
        _positive("max_inventory_btc", self.max_inventory_btc)
        if self.requote_ticks < 0:
            raise ValueError("requote_ticks must be >= 0")
        if not 2 <= self.vol_window <= 10_000:
            raise ValueError("vol_window must be in [2, 10000]")
        if not self.vol_threshold >= 1.0:
            raise ValueError("vol_threshold must be >= 1")
        if not self.widen_max >= 1.0:
            raise ValueError("widen_max must be >= 1")
        _share("pull_max", self.pull_max)
        _share("loss_limit", self.loss_limit)
        if not 1 <= self.recover_steps <= 100_000:
            raise ValueError("recover_steps must be in [1, 100000]")


@dataclass(frozen=True)
class TraderConfig:
    """A population of leveraged traders (`perpex.sim.agents.traders`).

    Each trader is drawn once: a margin (`margin`, USDT), a leverage (rounded to a whole
    number and capped by the brackets), a side (long with probability `long_share`), a margin
    mode (isolated with probability `isolated_share`), whether it sets a stop at entry
    (`stop_share`, at `stop_distance` from the entry) or scales out through an exit ladder
    (`ladder_share`, targets at `ladder_targets` fractions from the entry, equal parts), and an
    entry step (a share `initial_share` open at the first step, the rest uniformly over the
    run). It opens with a market order of margin x leverage and holds until stopped,
    liquidated, or `hold_steps` later. After a liquidation it re-enters with probability
    `reenter_share`, `reenter_delay` steps later, on the side `reenter_side` says ("same",
    "trend": the direction of the last `trend_window` steps' move, or "random"). With
    `opening_desk`, the crowd's net opening size at the first step is matched by a
    well-capitalised basis desk (`perpex.sim.agents.desk`) instead of the makers' ladders.
    """

    count: int = 1_000
    margin: Dist = field(
        default_factory=lambda: Dist("lognormal", median=500.0, sigma=1.0, low=20.0, high=50_000.0)
    )
    leverage: Dist = field(
        default_factory=lambda: Dist("lognormal", median=10.0, sigma=0.9, low=1.0, high=125.0)
    )
    long_share: float = 0.5
    isolated_share: float = 0.5
    stop_share: float = 0.2
    stop_distance: Dist = field(default_factory=lambda: Dist("uniform", low=0.01, high=0.05))
    ladder_share: float = 0.0
    ladder_targets: tuple[float, ...] = (0.01, 0.02, 0.03)
    initial_share: float = 0.7
    hold_steps: Dist = field(default_factory=lambda: Dist("fixed", value=0.0))  # 0: hold
    reenter_share: float = 0.3
    reenter_delay: Dist = field(default_factory=lambda: Dist("uniform", low=1.0, high=60.0))
    reenter_side: Literal["same", "trend", "random"] = "trend"
    trend_window: int = 30
    opening_desk: bool = True  # a basis desk holds the other side of the opening crowd (desk.py)

    def __post_init__(self) -> None:
        _count("count", self.count)
        _dist_in("margin", self.margin, 0.0, above_low=True)
        # Never below 1x; a draw above what the market's brackets allow is capped (the tail of
        # a lognormal is), and `perpex.sim.build` refuses one whose every draw would be.
        _dist_in("leverage", self.leverage, 1.0)
        _dist_in("stop_distance", self.stop_distance, 0.0, 0.9, above_low=True)
        _dist_in("hold_steps", self.hold_steps, 0.0)
        _dist_in("reenter_delay", self.reenter_delay, 0.0)
        for name in ("long_share", "isolated_share", "stop_share", "ladder_share"):
            _share(name, getattr(self, name))
        if self.stop_share + self.ladder_share > 1.0:
            raise ValueError("stop_share + ladder_share must not exceed 1")
        _share("initial_share", self.initial_share)
        _share("reenter_share", self.reenter_share)
        if not 1 <= len(self.ladder_targets) <= 10 or not all(
            0 < t < 1 for t in self.ladder_targets
        ):
            raise ValueError("ladder_targets must be 1 to 10 fractions in (0, 1)")
        if list(self.ladder_targets) != sorted(set(self.ladder_targets)):
            raise ValueError("ladder_targets must be strictly increasing")
        if not 1 <= self.trend_window <= 10_000:
            raise ValueError("trend_window must be in [1, 10000]")


@dataclass(frozen=True)
class MomentumConfig:
    """Momentum takers (`perpex.sim.agents.takers`): when the target moved more than
    `threshold` over `lookback` steps, each joins the move with probability `activity` per
    step with a market order of `size_btc`, and closes `hold_steps` later. Cascades feed on
    themselves through them."""

    count: int = 25
    deposit: float = 200_000.0
    leverage: int = 10
    lookback: int = 10
    threshold: float = 0.005
    activity: float = 0.2
    size_btc: Dist = field(
        default_factory=lambda: Dist("lognormal", median=0.5, sigma=0.8, low=0.001, high=20.0)
    )
    hold_steps: int = 30

    def __post_init__(self) -> None:
        _count("count", self.count)
        _positive("deposit", self.deposit)
        if not 1 <= self.leverage <= 125:
            raise ValueError(f"leverage must be in [1, 125], got {self.leverage}")
        if not 1 <= self.lookback <= 10_000:
            raise ValueError("lookback must be in [1, 10000]")
        _positive("threshold", self.threshold)
        _share("activity", self.activity)
        _dist_in("size_btc", self.size_btc, 0.0, above_low=True)
        if not 1 <= self.hold_steps <= 1_000_000:
            raise ValueError("hold_steps must be in [1, 1000000]")


@dataclass(frozen=True)
class NoiseConfig:
    """Noise takers (`perpex.sim.agents.takers`): each trades with probability `activity` per
    step, buying or selling at random (buying more when the last price is below the target,
    `pull` of the time), with a market order of `size_btc`. They keep the last price near the
    path and give the makers flow."""

    count: int = 50
    deposit: float = 100_000.0
    leverage: int = 5
    activity: float = 0.2
    pull: float = 0.8
    size_btc: Dist = field(
        default_factory=lambda: Dist("lognormal", median=0.05, sigma=1.0, low=0.001, high=5.0)
    )
    max_position_btc: float = 5.0

    def __post_init__(self) -> None:
        _count("count", self.count)
        _positive("deposit", self.deposit)
        if not 1 <= self.leverage <= 125:
            raise ValueError(f"leverage must be in [1, 125], got {self.leverage}")
        _share("activity", self.activity)
        _share("pull", self.pull)
        _dist_in("size_btc", self.size_btc, 0.0, above_low=True)
        _positive("max_position_btc", self.max_position_btc)


@dataclass(frozen=True)
class WhaleConfig:
    """One large trader (`perpex.sim.agents.whale`) that sweeps the local book: from `at`
    (ISO-8601 UTC or seconds from the start) it sends market orders on `side` over `steps`
    steps until it has traded `notional` USDT or the last price is `push` (a fraction) away
    from where it started, then holds `hold_steps` steps and closes."""

    deposit: float = 50_000_000.0
    leverage: int = 10
    at: str = "0"
    side: Literal["BUY", "SELL"] = "BUY"
    notional: float = 100_000_000.0
    push: float = 0.10
    steps: int = 5
    hold_steps: int = 10

    def __post_init__(self) -> None:
        _positive("deposit", self.deposit)
        if not 1 <= self.leverage <= 125:
            raise ValueError(f"leverage must be in [1, 125], got {self.leverage}")
        _positive("notional", self.notional)
        if not 0 < self.push <= 1.0:
            raise ValueError(f"push must be in (0, 1], got {self.push}")
        if not 1 <= self.steps <= 100_000:
            raise ValueError("steps must be in [1, 100000]")
        if not 0 <= self.hold_steps <= 1_000_000:
            raise ValueError("hold_steps must be in [0, 1000000]")


@dataclass(frozen=True)
class StrategyConfig:
    """The user's strategy (`perpex.sim.agents.strategy`): its account's deposit, how many
    path steps make one bar for `on_bar` (0: one candle of a replay, or one step of a synthetic
    path), and the class (``"module:Class"``; the CLI's ``--strategy`` overrides it)."""

    deposit: float = 10_000.0
    bar_steps: int = 0
    cls: str = ""

    def __post_init__(self) -> None:
        _positive("deposit", self.deposit)
        if not 0 <= self.bar_steps <= 1_000_000:
            raise ValueError("bar_steps must be in [0, 1000000]")


__all__ = [
    "MAX_AGENTS",
    "MakerConfig",
    "MomentumConfig",
    "NoiseConfig",
    "StrategyConfig",
    "TraderConfig",
    "WhaleConfig",
]
