"""A scenario as typed data: what `perpex.sim.scenario` reads from TOML and the runner runs.

Every table of a scenario file is one frozen dataclass here (or in
`perpex.sim.agents.config` for the agents); a key is a field, its type hint says what a value
may be and `__post_init__` says which values are refused, so the loader can name the key's
path and the reason for anything wrong. Money in USDT, fractions as fractions (0.05 = 5 %),
times as ISO-8601 UTC text or seconds from the start of the run.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from os import PathLike
from typing import Any, Literal

from perpex.sim.agents.config import (
    MakerConfig,
    MomentumConfig,
    NoiseConfig,
    StrategyConfig,
    TraderConfig,
    WhaleConfig,
)

MAX_STEPS = 5_000_000
MAX_PATTERN = 10_000  # returns of a "pattern" path
MAX_TOKENS = 16  # tokens of one scenario (the engine takes up to 64)
_TOKEN_NAME_RE = re.compile(r"[A-Z0-9]{1,32}")  # the facade's rule (`perpex.exchange_tokens`)


@dataclass(frozen=True)
class DataSection:
    """Historical replay (``[data]``): candles, their intrabar path, the real mark and funding.

    `candles` is a shipped series name (``"BTCUSDT-1h"``, ``"BTCUSDT-15m"``) or a file path
    (the CLI's ``--data PATH`` replaces it). `mark` is a shipped mark series or file, or ""
    (the exchange computes the mark from the index). `funding` is ``"binance"`` (Binance's
    published BTCUSDT rates replayed at each funding time) or ``"computed"`` (the engine's own
    premium-index rate). Each candle becomes `steps_per_candle` steps (open, the extremes in
    `intrabar` order, close, linear in between; or with `shape = "wicks"` a straight body from
    open to close with each extreme a brief spike of `wick_steps` steps)."""

    candles: str = "BTCUSDT-1h"
    mark: str = ""
    funding: Literal["binance", "computed"] = "computed"
    start: str = ""
    end: str = ""
    steps_per_candle: int = 60
    intrabar: Literal["auto", "high_first", "low_first"] = "auto"
    shape: Literal["legs", "wicks"] = "legs"  # "wicks": extremes as brief spikes off the body
    wick_steps: int = 1  # steps out to an extreme (and as many back) with shape = "wicks"

    def __post_init__(self) -> None:
        if not self.candles:
            raise ValueError("candles must name a shipped series or a file")
        if not 4 <= self.steps_per_candle <= 3_600:
            raise ValueError(f"steps_per_candle must be in [4, 3600], got {self.steps_per_candle}")
        if not 1 <= self.wick_steps <= 600:
            raise ValueError(f"wick_steps must be in [1, 600], got {self.wick_steps}")
        if self.shape == "wicks" and self.steps_per_candle < 6 * self.wick_steps + 1:
            raise ValueError("shape 'wicks' needs steps_per_candle >= 6 x wick_steps + 1")


@dataclass(frozen=True)
class PathSection:
    """A synthetic path (``[path]``): GBM, Merton jump-diffusion or a two-state regime
    switch, seeded from the run's seed; or a deterministic ``pattern`` whose step k moves the
    price by `returns[(k - 1) % len(returns)]` (exact in ticks: `perpex.sim.paths.pattern`).
    Volatilities and drifts are per step."""

    kind: Literal["gbm", "merton", "regime", "pattern"] = "gbm"
    start: str = "2024-01-01T00:00:00Z"
    start_price: float = 60_000.0
    steps: int = 1_440
    step_seconds: float = 60.0
    sigma: float = 0.001
    drift: float = 0.0
    jump_intensity: float = 0.0  # merton: expected jumps per step
    jump_mean: float = 0.0  # merton: mean log jump
    jump_sigma: float = 0.0  # merton
    storm_sigma: float = 0.005  # regime: the stressed state's sigma (`sigma` is the calm one)
    p_calm_to_storm: float = 0.001  # regime
    p_storm_to_calm: float = 0.01  # regime
    funding: Literal["binance", "computed"] = "computed"
    returns: tuple[float, ...] = ()  # pattern: the returns of steps 1, 2, ..., repeated

    def __post_init__(self) -> None:
        if not self.start_price > 0:
            raise ValueError(f"start_price must be > 0, got {self.start_price}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be in [1, {MAX_STEPS}], got {self.steps}")
        if not 0.001 <= self.step_seconds <= 86_400:
            raise ValueError(f"step_seconds must be in [0.001, 86400], got {self.step_seconds}")
        if not 0 <= self.sigma < 1 or not 0 <= self.storm_sigma < 1:
            raise ValueError("sigma and storm_sigma must be in [0, 1)")
        if not 0 <= self.jump_intensity <= 1:
            raise ValueError("jump_intensity must be in [0, 1]")
        for name in ("p_calm_to_storm", "p_storm_to_calm"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.kind == "pattern":
            if not 1 <= len(self.returns) <= MAX_PATTERN:
                raise ValueError(f"returns must hold 1 to {MAX_PATTERN} returns for a pattern")
            if not all(-1 < r <= 10 for r in self.returns):
                raise ValueError("returns must each be in (-1, 10] (a fraction: 0.05 = +5 %)")
        elif self.returns:
            raise ValueError("returns must be empty unless kind is 'pattern'")


@dataclass(frozen=True)
class ShockSpec:
    """One shock on the path (``[[shocks]]``): ``drop`` / ``pump`` of `percent` over `minutes`;
    ``liquidity_gap`` (the makers vanish for `seconds`); ``divergence`` (the local last
    target moves `percent`, signed, for `seconds` while the index holds)."""

    kind: Literal["drop", "pump", "liquidity_gap", "divergence"] = "drop"
    at: str = "0"
    percent: float = 0.0
    minutes: float = 0.0
    seconds: float = 0.0


@dataclass(frozen=True)
class ExchangeSection:
    """The exchange's parameters (``[exchange]``), in the facade's words."""

    mark_price: Literal["binance", "index", "last"] = "binance"
    insurance_fund: float = 1_000_000.0  # USDT, the fund's seed
    clearance_fee: float = 0.005  # of the liquidated notional
    partial_liquidation: bool = False  # from bracket 2 up, down one bracket (BitMEX/Bybit)
    adl: bool = True
    maker_fee: float = 0.0002
    taker_fee: float = 0.0005
    price_band: float = 0.05  # limit prices within mark x (1 +- band)
    mmr_multiplier: float = 1.0  # every bracket's maintenance margin rate x this
    # the real Binance bracket table: 2024-10-24 (BTCUSDT tier 1: 0-50k USDT, 125x) or
    # 2026-05-07 (tier 1: 0-300k USDT, 150x)
    brackets: Literal["binance-2024-10-24", "binance-2026-05-07"] = "binance-2024-10-24"
    max_liquidations_per_tick: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.insurance_fund <= 1e12:
            raise ValueError("insurance_fund must be in [0, 1e12]")
        if not 0 <= self.clearance_fee < 0.1:
            raise ValueError("clearance_fee must be in [0, 0.1)")
        for name in ("maker_fee", "taker_fee"):
            if not -0.01 <= getattr(self, name) <= 0.01:
                raise ValueError(f"{name} must be in [-0.01, 0.01]")
        if not 0.001 <= self.price_band <= 0.9:
            raise ValueError("price_band must be in [0.001, 0.9]")
        if not 0.1 <= self.mmr_multiplier <= 10:
            raise ValueError("mmr_multiplier must be in [0.1, 10]")
        if not 1 <= self.max_liquidations_per_tick <= 100_000:
            raise ValueError("max_liquidations_per_tick must be in [1, 100000]")


@dataclass(frozen=True)
class TokenConfig:
    """One leveraged token of ``[tokens]`` (`perpex.core.tokens`): its name, its signed
    target leverage (+3 a BTCUP3, -3 a BTCDOWN3), its creation and redemption fees (fractions
    of the amount) and the market orders its daily rebalance is split into (1: at once; more:
    a TWAP a minute apart)."""

    name: str
    leverage: float
    creation_fee: float = 0.001
    redemption_fee: float = 0.001
    slices: int = 1

    def __post_init__(self) -> None:
        if _TOKEN_NAME_RE.fullmatch(self.name) is None:
            raise ValueError(f"name must be 1-32 upper-case letters and digits, got {self.name!r}")
        ppm = Decimal(repr(self.leverage)).scaleb(6)  # the engine's unit: exact, or refused
        if self.leverage == 0 or abs(self.leverage) > 10 or ppm != ppm.to_integral_value():
            raise ValueError(
                f"leverage must be non-zero, within 10x either way, in steps of 1e-6,"
                f" got {self.leverage}"
            )
        for name in ("creation_fee", "redemption_fee"):
            if not 0 <= getattr(self, name) < 0.1:
                raise ValueError(f"{name} must be in [0, 0.1), got {getattr(self, name)}")
        if not 1 <= self.slices <= 1_440:
            raise ValueError(f"slices must be in [1, 1440], got {self.slices}")


@dataclass(frozen=True)
class TokensSection:
    """Leveraged tokens held through the run (``[tokens]``), beside a static margin position.

    At the start a holder account creates each token of `list` with `hold` USDT, and another
    account deposits `hold` USDT and opens a position of `static_leverage` x `hold` (signed: a
    negative leverage is a short; 0: none), the yardstick the tokens are compared with.
    `frictionless` makes the rebalances cost nothing: no trading, creation or redemption fee,
    no funding, and a deep book one tick either side of the index (MECHANICS.md §6.3's
    arithmetic, to about 1e-5 with `hold` of 1,000,000 USDT: a token's exposure is whole lots).
    """

    list: tuple[TokenConfig, ...] = (
        TokenConfig("BTCUP3", 3.0),
        TokenConfig("BTCDOWN3", -3.0),
    )
    hold: float = 1_000_000.0
    static_leverage: float = 3.0
    frictionless: bool = False

    def __post_init__(self) -> None:
        if not 1 <= len(self.list) <= MAX_TOKENS:
            raise ValueError(f"list must hold 1 to {MAX_TOKENS} tokens, got {len(self.list)}")
        names = [t.name for t in self.list]
        if len(set(names)) != len(names):
            raise ValueError(f"list must not name a token twice, got {names}")
        if not 100 <= self.hold <= 1e9:
            raise ValueError(f"hold must be in [100, 1e9] USDT, got {self.hold}")
        if not -10 <= self.static_leverage <= 10:
            raise ValueError(f"static_leverage must be in [-10, 10], got {self.static_leverage}")


@dataclass(frozen=True)
class AgentsSection:
    """``[agents.*]``: each kind present or absent (None)."""

    makers: MakerConfig | None = None
    traders: TraderConfig | None = None
    momentum: MomentumConfig | None = None
    noise: NoiseConfig | None = None
    whale: WhaleConfig | None = None


@dataclass(frozen=True)
class Scenario:
    """A whole scenario. Exactly one of `data` (a replay) and `path` (synthetic) is set."""

    name: str
    question: str
    symbol: str = "BTCUSDT"
    data: DataSection | None = None
    path: PathSection | None = None
    shocks: tuple[ShockSpec, ...] = ()
    exchange: ExchangeSection = field(default_factory=ExchangeSection)
    agents: AgentsSection = field(default_factory=AgentsSection)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    tokens: TokensSection | None = None
    source: str = ""  # where it was loaded from (a shipped name or a path); not a TOML key

    def __post_init__(self) -> None:
        if (self.data is None) == (self.path is None):
            raise ValueError("a scenario has exactly one of [data] (a replay) and [path]")

    # The reader of TOML lives in `perpex.sim.scenario`, which imports this module; these two
    # entry points reach it at call time (importlib, not an import cycle between the modules).
    @classmethod
    def load(cls, name_or_path: str | PathLike[str]) -> Scenario:
        """A shipped scenario by name (`perpex scenarios`) or a TOML file; a bad one raises
        `perpex.sim.scenario.ScenarioError` naming the key and the reason."""
        loaded: Scenario = _reader().load_scenario(name_or_path)
        return loaded

    def with_overrides(self, overrides: Mapping[str, object]) -> Scenario:
        """This scenario with dotted keys set (``{"exchange.insurance_fund": 0}``), validated
        as a file is (None removes a key or table)."""
        changed: Scenario = _reader().with_overrides(self, overrides)
        return changed


def _reader() -> Any:
    return importlib.import_module("perpex.sim.scenario")


__all__ = [
    "AgentsSection",
    "DataSection",
    "ExchangeSection",
    "PathSection",
    "Scenario",
    "ShockSpec",
    "TokenConfig",
    "TokensSection",
]
