"""Price paths in exact ticks: historical replay of candles and seeded synthetic processes.

A `PricePath` is what the simulator drives the exchange with: one row per step, times in ns
since the Unix epoch, prices in integer ticks of one market. Shocks that bend a path (a drop, a
pump, a liquidity gap, an index/last divergence) live in `perpex.sim.shocks`.

Determinism. Every random path takes an explicit `seed` and draws from its own
`numpy.random.Generator` (PCG64); nothing touches a global generator. Floats are used only to
*generate* a synthetic path. The float64 prices are turned into ticks by `np.rint` (round half
to even) and clamped to [1, MAX_TICKS]. Sums, products and quotients of float64 are correctly
rounded on every IEEE-754 machine, so those steps give the same bits everywhere; `np.exp` is
the one transcendental on the way, and a last-ulp difference between libm/SIMD builds could move
a tick only when a price lies within one ulp of a half tick (about 1e-12 per step at BTC
prices). The replay of candles (`intrabar_path`) is pure integer arithmetic. A `pattern` (a
repeated list of returns: the leveraged-token scenarios of MECHANICS.md §6.3) draws nothing:
it compounds its returns in 60-digit decimals and rounds once per step, so each price is the
exact compounding to the nearest tick.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt

from perpex.sim.candles import Candles

Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

IntrabarOrder = Literal["auto", "high_first", "low_first"]
IntrabarShape = Literal["legs", "wicks"]
MarkPoints = Literal["path", "close"]

MAX_TICKS = 2**53
"""Upper clamp of a synthetic price: keeps the float -> int64 cast exact and far from overflow."""


def _check_column(name: str, column: object, n: int, dtype: type[np.generic]) -> None:
    if not isinstance(column, np.ndarray) or column.dtype != dtype or column.ndim != 1:
        raise ValueError(f"{name} must be a 1-d {np.dtype(dtype).name} array")
    if len(column) != n:
        raise ValueError(f"{name} has {len(column)} rows, time_ns has {n}")


@dataclass(frozen=True, eq=False)
class PricePath:
    """A price path: one row per step, in exact ticks.

    - `time_ns`: int64, strictly increasing; each step holds until the next one (the last one
      for `step_ns`).
    - `price_ticks`: int64 >= 1, the local last-price target at each step; also the index
      unless `index_ticks` says otherwise.
    - `index_ticks`: int64 >= 1 or None; set where the index differs from the local last
      target (a divergence shock). None means "the index is `price_ticks`".
    - `mark_ticks`: int64 >= 1 or None; a mark from a real mark series, when the scenario has
      one. None means "the exchange computes the mark".
    - `makers_away`: bool or None; True where the market makers have pulled out (liquidity
      gap). None means never.
    - `step_ns`: the nominal step interval (> 0).
    """

    time_ns: Int64Array
    price_ticks: Int64Array
    step_ns: int
    index_ticks: Int64Array | None = None
    mark_ticks: Int64Array | None = None
    makers_away: BoolArray | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.time_ns, np.ndarray) or self.time_ns.dtype != np.int64:
            raise ValueError("time_ns must be a 1-d int64 array")
        if self.time_ns.ndim != 1 or len(self.time_ns) == 0:
            raise ValueError("time_ns must be a non-empty 1-d int64 array")
        n = len(self.time_ns)
        if isinstance(self.step_ns, bool) or not isinstance(self.step_ns, int):
            raise ValueError(f"step_ns must be an int, got {self.step_ns!r}")
        if self.step_ns <= 0:
            raise ValueError(f"step_ns {self.step_ns} must be positive")
        if n > 1 and not bool(np.all(np.diff(self.time_ns) > 0)):
            raise ValueError("time_ns must be strictly increasing")
        for name in ("price_ticks", "index_ticks", "mark_ticks"):
            column = getattr(self, name)
            if column is None and name != "price_ticks":
                continue
            _check_column(name, column, n, np.int64)
            if not bool(np.all(column >= 1)):
                row = int(np.argmax(column < 1))
                raise ValueError(f"{name}[{row}] = {int(column[row])} is below 1 tick")
        if self.makers_away is not None:
            _check_column("makers_away", self.makers_away, n, np.bool_)

    def __len__(self) -> int:
        return len(self.time_ns)

    @property
    def start_ns(self) -> int:
        return int(self.time_ns[0])

    @property
    def end_ns(self) -> int:
        """When the last step ends: its time plus `step_ns`."""
        return int(self.time_ns[-1]) + self.step_ns

    @property
    def index(self) -> Int64Array:
        """The index at each step: `index_ticks` where set, else `price_ticks`."""
        return self.price_ticks if self.index_ticks is None else self.index_ticks

    @property
    def gaps(self) -> BoolArray:
        """`makers_away` as an array (all False when None)."""
        if self.makers_away is None:
            return np.zeros(len(self), dtype=np.bool_)
        return self.makers_away


# --- historical replay ----------------------------------------------------------------------


def _check_ohlc(candles: Candles, what: str) -> None:
    o, h, lo, c = candles.open_ticks, candles.high_ticks, candles.low_ticks, candles.close_ticks
    bad = (lo < 1) | (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
    if bool(np.any(bad)):
        row = int(np.argmax(bad))
        raise ValueError(
            f"{what} candle {row}: O {int(o[row])} H {int(h[row])} L {int(lo[row])} "
            f"C {int(c[row])} is not a candle (need 1 <= low <= open, close <= high)"
        )


def _anchors(candles: Candles, order: IntrabarOrder) -> Int64Array:
    """The four points of each candle in path order, shape (n, 4)."""
    o, h, lo, c = candles.open_ticks, candles.high_ticks, candles.low_ticks, candles.close_ticks
    if order == "auto":
        high_first = c < o  # red: open -> high -> low -> close; green or doji: low first
    elif order == "high_first":
        high_first = np.ones(len(candles), dtype=np.bool_)
    elif order == "low_first":
        high_first = np.zeros(len(candles), dtype=np.bool_)
    else:
        raise ValueError(f"order {order!r} must be 'auto', 'high_first' or 'low_first'")
    first = np.where(high_first, h, lo)
    second = np.where(high_first, lo, h)
    return np.stack([o, first, second, c], axis=1).astype(np.int64)


def _interpolate(anchors: Int64Array, steps: int) -> Int64Array:
    """`steps` points per row through the row's 4 anchors, linear integer steps between them.

    The `steps - 1` moves of a candle are split over its three legs as evenly as possible (leg
    i gets floor((steps-1)(i+1)/3) - floor((steps-1)i/3) moves; for 4 points one each). Point j
    of a leg from a to b with L moves is a + floor((2(b-a)j + L) / (2L)): the exact line rounded
    half up (toward +inf), in int64 only. Every anchor is hit exactly.
    """
    moves = steps - 1
    bounds = [moves * i // 3 for i in range(4)]  # anchor positions 0, p1, p2, steps-1
    leg = np.empty(steps, dtype=np.int64)
    offset = np.empty(steps, dtype=np.int64)
    length = np.empty(steps, dtype=np.int64)
    for k in range(steps):
        i = min(2, max(j for j in range(3) if bounds[j] <= k))
        leg[k], offset[k], length[k] = i, k - bounds[i], bounds[i + 1] - bounds[i]
    start = anchors[:, leg]
    delta = anchors[:, leg + 1] - start
    out: Int64Array = start + (2 * delta * offset + length) // (2 * length)
    return out


def _line(a: Int64Array, b: Int64Array, j: int, length: int) -> Int64Array:
    """Point j of the exact line from a to b in `length` moves, rounded half up (int64)."""
    out: Int64Array = a + (2 * (b - a) * j + length) // (2 * length)
    return out


def _wicks(candles: Candles, order: IntrabarOrder, steps: int, wick_steps: int) -> Int64Array:
    """Shape (n, steps): the body walks open -> close in a straight line; the two extremes
    are brief spikes (`wick_steps` moves out to the extreme and as many back), the first at a
    third of the candle and the second at two thirds, in `order`. A wick is a moment, not a
    third of the hour: a mark that averages the basis hardly follows it (2021-07-26)."""
    anchors = _anchors(candles, order)
    o, first, second, c = (anchors[:, i] for i in range(4))
    moves = steps - 1
    body = np.stack([_line(o, c, k, moves) for k in range(steps)], axis=1)
    out: Int64Array = body.copy()
    for centre, extreme in ((moves // 3, first), (2 * moves // 3, second)):
        for j in range(-wick_steps, wick_steps + 1):
            k = centre + j
            base = body[:, centre - wick_steps] if j < 0 else body[:, centre + wick_steps]
            out[:, k] = _line(extreme, base, abs(j), wick_steps)
    return out


def intrabar_path(
    candles: Candles,
    *,
    steps_per_candle: int = 4,
    order: IntrabarOrder = "auto",
    mark: Candles | None = None,
    mark_points: MarkPoints = "path",
    shape: IntrabarShape = "legs",
    wick_steps: int = 1,
) -> PricePath:
    """Replay candles as a path: `steps_per_candle` steps per candle through O, H/L, L/H, C.

    Order of the two extremes: "auto" (default) takes the high first in a red candle
    (close < open: open -> high -> low -> close) and the low first in a green candle or a doji
    (open -> low -> high -> close); "high_first" / "low_first" force one order for all candles.
    Between the four points the price moves in linear integer steps (see `_interpolate`: exact
    line, rounded half up); every candle's O, H, L and C appear in the path exactly.

    Times: step k of a candle opening at t is at t + floor(k * interval_ns / steps_per_candle),
    so the steps spread evenly inside the candle and the close sits at the last step;
    `step_ns` = floor(interval_ns / steps_per_candle).

    `mark`: candles of the mark price, aligned with `candles` (same times and interval). With
    `mark_points="path"` each mark candle is walked the same way (its own O/H/L/C, in the order
    the same `order` rule gives for the mark candle's own colour). With `mark_points="close"`
    the mark moves only at candle closes: it holds the previous mark close (the first candle:
    its mark open) and takes this candle's mark close at the candle's last step.

    `shape="wicks"`: instead of three legs, the price walks open -> close in a straight line
    and visits each extreme in a brief spike of `wick_steps` steps out and as many back (the
    first extreme at a third of the candle, the second at two thirds, in `order`); needs
    steps_per_candle >= 6 x wick_steps + 1. O, H, L and C still appear exactly. The mark
    candles, if any, take the same shape.
    """
    if shape not in ("legs", "wicks"):
        raise ValueError(f"shape {shape!r} must be 'legs' or 'wicks'")
    if isinstance(wick_steps, bool) or not isinstance(wick_steps, int) or wick_steps < 1:
        raise ValueError(f"wick_steps must be an int >= 1, got {wick_steps!r}")
    if shape == "wicks" and steps_per_candle < 6 * wick_steps + 1:
        raise ValueError(
            f"shape 'wicks' with wick_steps {wick_steps} needs steps_per_candle >= "
            f"{6 * wick_steps + 1}, got {steps_per_candle}"
        )

    def walk(c: Candles) -> Int64Array:
        if shape == "wicks":
            return _wicks(c, order, steps_per_candle, wick_steps).ravel()
        return _interpolate(_anchors(c, order), steps_per_candle).ravel()

    if isinstance(steps_per_candle, bool) or not isinstance(steps_per_candle, int):
        raise ValueError(f"steps_per_candle must be an int, got {steps_per_candle!r}")
    if steps_per_candle < 4:
        raise ValueError(f"steps_per_candle {steps_per_candle} must be at least 4 (O, H, L, C)")
    if len(candles) == 0:
        raise ValueError("no candles to replay")
    interval = candles.interval_ns
    if steps_per_candle > interval:
        raise ValueError(
            f"steps_per_candle {steps_per_candle} exceeds the interval of {interval} ns"
        )
    if len(candles) > 1 and not bool(np.all(np.diff(candles.time_ns) >= interval)):
        row = int(np.argmax(np.diff(candles.time_ns) < interval)) + 1
        raise ValueError(f"candle {row} opens before the previous candle's interval ends")
    _check_ohlc(candles, "price")
    offsets = np.array(
        [k * interval // steps_per_candle for k in range(steps_per_candle)], dtype=np.int64
    )
    time_ns = (candles.time_ns[:, None] + offsets[None, :]).ravel()
    price = walk(candles)

    mark_ticks: Int64Array | None = None
    if mark is not None:
        if mark.interval_ns != interval or len(mark) != len(candles):
            raise ValueError("mark candles must have the same interval and count as the prices")
        if not bool(np.array_equal(mark.time_ns, candles.time_ns)):
            row = int(np.argmax(mark.time_ns != candles.time_ns))
            raise ValueError(f"mark candle {row} is not at the time of price candle {row}")
        _check_ohlc(mark, "mark")
        if mark_points == "path":
            mark_ticks = walk(mark)
        elif mark_points == "close":
            held = np.concatenate([mark.open_ticks[:1], mark.close_ticks[:-1]])
            grid = np.repeat(held[:, None], steps_per_candle, axis=1)
            grid[:, -1] = mark.close_ticks
            mark_ticks = grid.ravel()
        else:
            raise ValueError(f"mark_points {mark_points!r} must be 'path' or 'close'")
    return PricePath(
        time_ns=time_ns.astype(np.int64),
        price_ticks=price.astype(np.int64),
        step_ns=interval // steps_per_candle,
        mark_ticks=None if mark_ticks is None else mark_ticks.astype(np.int64),
    )


# --- synthetic paths ------------------------------------------------------------------------


def _check_common(start_ticks: int, n_steps: int, step_ns: int, seed: int) -> None:
    for name, value in (
        ("start_ticks", start_ticks),
        ("n_steps", n_steps),
        ("step_ns", step_ns),
        ("seed", seed),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if not 1 <= start_ticks <= MAX_TICKS:
        raise ValueError(f"start_ticks {start_ticks} must be in [1, {MAX_TICKS}]")
    if n_steps < 0:
        raise ValueError(f"n_steps {n_steps} must not be negative")
    if step_ns <= 0:
        raise ValueError(f"step_ns {step_ns} must be positive")
    if seed < 0:
        raise ValueError(f"seed {seed} must not be negative")


def _check_real(name: str, value: float, *, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"{name} {value!r} must be finite")
    if low is not None and x < low:
        raise ValueError(f"{name} {value!r} must be >= {low}")
    return x


def _from_log_returns(
    start_ticks: int, log_returns: FloatArray, step_ns: int, start_ns: int
) -> PricePath:
    """Prices start * exp(cumsum(r)) as ticks: np.rint (half to even), clamped to [1, MAX]."""
    log_level = np.concatenate([[0.0], np.cumsum(log_returns)])
    log_level = np.minimum(log_level, 40.0 * np.log(2.0))  # exp never overflows (clamped after)
    prices = np.rint(float(start_ticks) * np.exp(log_level))
    ticks = np.clip(prices, 1.0, float(MAX_TICKS)).astype(np.int64)
    time_ns = start_ns + step_ns * np.arange(len(ticks), dtype=np.int64)
    return PricePath(time_ns=time_ns, price_ticks=ticks, step_ns=step_ns)


def gbm(
    start_ticks: int,
    n_steps: int,
    step_ns: int,
    sigma_per_step: float,
    drift_per_step: float = 0.0,
    *,
    seed: int,
    start_ns: int = 0,
) -> PricePath:
    """Geometric Brownian motion: `n_steps` moves after the start, so `n_steps + 1` rows.

    Log-return of each step: (drift - sigma^2 / 2) + sigma * Z with Z standard normal, so the
    expected price grows by exp(drift) per step and the log-returns' std is `sigma_per_step`.
    Step k is at `start_ns + k * step_ns`.
    """
    _check_common(start_ticks, n_steps, step_ns, seed)
    sigma = _check_real("sigma_per_step", sigma_per_step, low=0.0)
    drift = _check_real("drift_per_step", drift_per_step)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n_steps)
    return _from_log_returns(
        start_ticks, (drift - 0.5 * sigma * sigma) + sigma * z, step_ns, start_ns
    )


PATTERN_DIGITS = 60  # decimal digits of a pattern's compounding (rounded to ticks per step)


def pattern(
    start_ticks: int,
    n_steps: int,
    step_ns: int,
    returns: Sequence[float],
    *,
    start_ns: int = 0,
) -> PricePath:
    """A deterministic path: step k (1..n_steps) moves the price by `returns[(k-1) % len]`.

    `n_steps + 1` rows, step k at `start_ns + k * step_ns`. Each return is read as the decimal
    it is written as (0.05 is exactly 1/20), the level is their running product in 60-digit
    decimals and each row is that level x `start_ticks` to the nearest tick (half to even):
    the rounding never compounds, so after `+5 %, -5 %` x 15 the price is start x 0.9975^15
    to within half a tick.
    """
    _check_common(start_ticks, n_steps, step_ns, 0)
    if not returns:
        raise ValueError("returns must not be empty")
    steps = [Decimal(repr(_check_real("returns", r, low=-1.0))) for r in returns]
    if any(r <= -1 for r in steps):
        raise ValueError("returns must each be > -1 (a price stays positive)")
    ctx = Context(prec=PATTERN_DIGITS, rounding=ROUND_HALF_EVEN)
    one = Decimal(1)
    level = Decimal(start_ticks)
    ticks = np.empty(n_steps + 1, dtype=np.int64)
    ticks[0] = start_ticks
    for k in range(1, n_steps + 1):
        level = ctx.multiply(level, one + steps[(k - 1) % len(steps)])
        price = int(level.to_integral_value(rounding=ROUND_HALF_EVEN))
        ticks[k] = min(max(price, 1), MAX_TICKS)
    time_ns = start_ns + step_ns * np.arange(n_steps + 1, dtype=np.int64)
    return PricePath(time_ns=time_ns, price_ticks=ticks, step_ns=step_ns)


def merton(
    start_ticks: int,
    n_steps: int,
    step_ns: int,
    sigma_per_step: float,
    jump_intensity: float,
    jump_mean: float,
    jump_sigma: float,
    drift_per_step: float = 0.0,
    *,
    seed: int,
    start_ns: int = 0,
) -> PricePath:
    """Merton jump-diffusion: GBM plus Poisson jumps with normal log sizes.

    Each step draws N ~ Poisson(`jump_intensity`) jumps (the intensity is the expected number
    of jumps per step) whose summed log size is Normal(N * jump_mean, N * jump_sigma^2). The
    jumps are not compensated: a negative `jump_mean` makes a path that crashes, as a crash
    scenario wants. The diffusion draws come first from the generator, so with intensity 0 the
    path is exactly `gbm` with the same seed.
    """
    _check_common(start_ticks, n_steps, step_ns, seed)
    sigma = _check_real("sigma_per_step", sigma_per_step, low=0.0)
    drift = _check_real("drift_per_step", drift_per_step)
    intensity = _check_real("jump_intensity", jump_intensity, low=0.0)
    mean = _check_real("jump_mean", jump_mean)
    jump_sd = _check_real("jump_sigma", jump_sigma, low=0.0)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal(n_steps)
    counts = rng.poisson(intensity, n_steps).astype(np.float64)
    jz = rng.standard_normal(n_steps)
    jumps = counts * mean + np.sqrt(counts) * jump_sd * jz
    returns = (drift - 0.5 * sigma * sigma) + sigma * z + jumps
    return _from_log_returns(start_ticks, returns, step_ns, start_ns)


def _check_probability(name: str, p: float) -> float:
    x = _check_real(name, p, low=0.0)
    if x > 1.0:
        raise ValueError(f"{name} {p!r} must be in [0, 1]")
    return x


def _draw_states(
    rng: np.random.Generator,
    n_steps: int,
    p_calm_to_storm: float,
    p_storm_to_calm: float,
    start_storm: bool,
) -> BoolArray:
    """A two-state Markov chain, True = storm, drawn as geometric sojourns (one draw each)."""
    states = np.zeros(n_steps, dtype=np.bool_)
    k, storm = 0, start_storm
    while k < n_steps:
        p_leave = p_storm_to_calm if storm else p_calm_to_storm
        stay = n_steps - k if p_leave == 0.0 else int(rng.geometric(p_leave))
        states[k : k + stay] = storm
        k += stay
        storm = not storm
    return states


def regime_states(
    n_steps: int,
    p_calm_to_storm: float,
    p_storm_to_calm: float,
    *,
    seed: int,
    start_storm: bool = False,
) -> BoolArray:
    """The regimes `regime_switch` uses with the same arguments and seed: True = storm.

    Entry k is the regime of move k; after each move the chain leaves the calm state with
    probability `p_calm_to_storm` and the storm with `p_storm_to_calm`.
    """
    _check_common(1, n_steps, 1, seed)
    p_cs = _check_probability("p_calm_to_storm", p_calm_to_storm)
    p_sc = _check_probability("p_storm_to_calm", p_storm_to_calm)
    return _draw_states(np.random.default_rng(seed), n_steps, p_cs, p_sc, start_storm)


def regime_switch(
    start_ticks: int,
    n_steps: int,
    step_ns: int,
    calm_sigma: float,
    storm_sigma: float,
    p_calm_to_storm: float,
    p_storm_to_calm: float,
    drift_per_step: float = 0.0,
    *,
    seed: int,
    start_ns: int = 0,
    start_storm: bool = False,
) -> PricePath:
    """A two-state regime switch: GBM whose sigma per step is `calm_sigma` or `storm_sigma`.

    The regimes are a Markov chain (see `regime_states`, drawn first from the generator, so
    `regime_states` with the same seed returns the path's regimes); then one standard normal
    per move. `n_steps + 1` rows, step k at `start_ns + k * step_ns`.
    """
    _check_common(start_ticks, n_steps, step_ns, seed)
    calm = _check_real("calm_sigma", calm_sigma, low=0.0)
    storm = _check_real("storm_sigma", storm_sigma, low=0.0)
    p_cs = _check_probability("p_calm_to_storm", p_calm_to_storm)
    p_sc = _check_probability("p_storm_to_calm", p_storm_to_calm)
    drift = _check_real("drift_per_step", drift_per_step)
    rng = np.random.default_rng(seed)
    states = _draw_states(rng, n_steps, p_cs, p_sc, start_storm)
    sigma = np.where(states, storm, calm)
    z = rng.standard_normal(n_steps)
    return _from_log_returns(
        start_ticks, (drift - 0.5 * sigma * sigma) + sigma * z, step_ns, start_ns
    )
