"""A served scenario's past: the one-minute candles a fresh `perpex serve` shows before its
start (`perpex.server.backfill.MinuteHistory`), so that a bot asking for the last 500 candles
of its indicators gets them.

- A historical replay (``[data]``): the scenario's own candles before its ``start`` (the last
  `minutes` of them), walked as the replay walks its candles (`intrabar_path`: open, the
  extremes in the scenario's ``intrabar`` order, close) at `SUBSTEPS` steps a minute, each
  minute's candle the open, high, low and close of its steps: a candle of the data's interval
  aggregated from these minutes is the data's candle exactly. The data's volume is spread
  evenly over its minutes. The mark is the scenario's mark series where it has one (else the
  index), and the index is what the replay publishes (`perpex.sim.build.fed_index`: the mark
  series when there is one, else the candles). A scenario that starts at its data's first
  candle has no past (None). Its funding: a replay of Binance's funding (``funding =
  "binance"``, and not frictionless) brings the real settlements of the shipped series
  (`perpex.history.load_funding_schedule`) in the window, shifted onto the server's clock by
  the candles' own offset (a settlement at the scenario's start lands at the server's first
  minute), each at the mark of the history's minute that ends at it; any other has none of
  its own (`funding` None: the server computes them at its own funding times from the
  premium, `perpex.server.backfill.computed_funding`).
- A synthetic path (``[path]``): the path's own kind (gbm, merton, regime) with its own
  parameters per second of time, generated at `SUBSTEPS` steps a minute from the start price
  with the drift (and merton's mean jump) reversed, then read backwards: a walk that ends at
  the path's start price, seeded from (seed, `HISTORY_SEED`). A ``pattern`` path (a fixed
  sequence of returns, for tests) gets a gbm history whose sigma is the root mean square of
  its returns. The mark and index are the path (premium 0), as the live market's are at rest.
  The trades of each minute are the tape's (`perpex.live.tape`): Poisson(`per_minute`) prints
  of its log-normal size, half of the volume bought by takers on average.
  Its funding is the server's to compute (`funding` None): with the premium 0, each of the
  server clock's funding times in the window charges the interest rate, 0.01 % per 8 h,
  what Binance shows on calm days.

Times: the rows carry none; the server lays them on the minutes before its first minute (a
replay's candles shifted onto the server's clock, at speed 1: one data minute a server
minute, whatever `--speed` the market later runs at). Shocks of the scenario are of its future,
not of its past. Deterministic: a pure function of the scenario, the seed and `minutes`.

Units: prices in ticks, sizes in lots, quote volumes in tick-lots, premiums in 1e-8.
"""

from __future__ import annotations

import math
from dataclasses import replace
from decimal import Decimal
from typing import Final

import numpy as np

from perpex.core.markets import MarketSpec, compile_market
from perpex.history import load_funding_schedule
from perpex.live.tape import MEDIAN_SIZE_BTC, SIZE_SIGMA
from perpex.parse import start_time_ns
from perpex.server.backfill import FundingRows, MinuteHistory
from perpex.server.candles import I64
from perpex.sim.build import build_market, fed_index
from perpex.sim.data import load_candles
from perpex.sim.paths import PricePath, gbm, intrabar_path, merton, regime_switch
from perpex.sim.scenario_model import Scenario

SUBSTEPS: Final = 4  # path steps a minute (15 s): a minute's high and low are of these
HISTORY_SEED: Final = 0x415  # the history's generators are spawned from (seed, this)
NS_PER_MINUTE: Final = 60_000_000_000
SUBSTEP_SECONDS: Final = 60.0 / SUBSTEPS
VOLUME_SIGMA: Final = 0.3  # of log(volume) a minute beyond its count of prints


def scenario_history(
    scenario: Scenario, seed: int, minutes: int, per_minute: float
) -> MinuteHistory | None:
    """The last `minutes` (>= 1) one-minute candles before the scenario starts, with a Binance
    funding replay's real settlements in them (see the module docstring); `per_minute` is the
    tape's rate of prints, for a synthetic path's trades."""
    if minutes < 1:
        return None
    spec = compile_market(build_market(scenario))
    if scenario.data is not None:
        return _replay_history(scenario, spec, minutes)
    return _synthetic_history(scenario, spec, seed, minutes, per_minute)


# -- helpers ------------------------------------------------------------------------------------


def _minute_ohlc(samples: I64, per_minute: int) -> I64:
    """(n, 4) open, high, low, close of consecutive groups of `per_minute` samples."""
    groups = samples.reshape(-1, per_minute)
    out: I64 = np.stack(
        [groups[:, 0], groups.max(axis=1), groups.min(axis=1), groups[:, -1]], axis=1
    )
    return out


def _mean_ticks(ohlc: I64) -> I64:
    """A minute's typical price, for its quote volume: (O + H + L + C) / 4, rounded down."""
    out: I64 = ohlc.sum(axis=1) // 4
    return out


def _history(
    last: I64, index: I64, mark: I64, premium: I64, volume_lots: I64, taker_lots: I64, count: I64
) -> MinuteHistory:
    typical = _mean_ticks(last)
    return MinuteHistory(
        last=last,
        mark=mark,
        index=index,
        premium=premium,
        volume_lots=volume_lots,
        quote=volume_lots * typical,
        taker_volume_lots=taker_lots,
        taker_quote=taker_lots * typical,
        count=count,
    )


# -- a replay's data ------------------------------------------------------------------------------


def _replay_history(scenario: Scenario, spec: MarketSpec, minutes: int) -> MinuteHistory | None:
    d = scenario.data
    assert d is not None
    if not d.start:
        return None  # the replay begins at its data's first candle: nothing before it
    start_ns = start_time_ns(d.start)
    candles = load_candles(d.candles, spec, end=start_ns)
    if len(candles) == 0 or candles.interval_ns % NS_PER_MINUTE:
        return None
    per = candles.interval_ns // NS_PER_MINUTE  # minutes a candle
    first_ns = start_ns - minutes * NS_PER_MINUTE
    keep = candles.time_ns >= first_ns - candles.interval_ns
    if not keep.any():
        return None  # the data ends long before the start
    candles = candles.between(int(candles.time_ns[keep][0]), start_ns)
    mark = None
    if d.mark:
        marks = load_candles(d.mark, spec, off_tick="round", end=start_ns)
        marks = marks.between(int(candles.time_ns[0]), start_ns)
        if np.array_equal(marks.time_ns, candles.time_ns):
            mark = marks
    path = intrabar_path(candles, steps_per_candle=per * SUBSTEPS, order=d.intrabar, mark=mark)
    last = _minute_ohlc(path.price_ticks, SUBSTEPS)
    index = _minute_ohlc(fed_index(path), SUBSTEPS)
    marks_ohlc = index if path.mark_ticks is None else _minute_ohlc(path.mark_ticks, SUBSTEPS)
    premium = np.zeros_like(last)  # the index a replay publishes is its mark series
    # Each candle's volume spread over its minutes (the remainder on its first minutes).
    base, extra = np.divmod(candles.volume_lots, per)
    volume = (base[:, None] + (np.arange(per)[None, :] < extra[:, None])).reshape(-1)
    volume = volume.astype(np.int64)
    count = np.maximum(volume // _median_lots(spec), 1)
    # The minutes on the server's clock: minute k of candle j at its offset from the start.
    offsets = (candles.time_ns - start_ns) // NS_PER_MINUTE
    at = (offsets[:, None] + np.arange(per)[None, :]).reshape(-1) + minutes
    inside = (at >= 0) & (at < minutes)
    at = at[inside]
    if len(at) == 0:
        return None
    first = int(at[0])
    n = minutes - first
    # Gaps in the data are minutes without trades (flat at the close before them).
    full_count = np.zeros(n, dtype=np.int64)
    full_count[at - first] = count[inside]
    columns: list[I64] = []
    for values in (last, index, marks_ohlc, premium):
        table = np.repeat(values[inside][-1:], n, axis=0)
        table[at - first] = values[inside]
        columns.append(table)
    full_volume = np.zeros(n, dtype=np.int64)
    full_volume[at - first] = volume[inside]
    history = _history(
        columns[0], columns[1], columns[2], columns[3], full_volume, full_volume // 2, full_count
    )
    frictionless = scenario.tokens is not None and scenario.tokens.frictionless
    if d.funding != "binance" or frictionless:
        return history  # no series of its own: the server computes its settlements
    return replace(history, funding=_replay_funding(history, start_ns))


def _replay_funding(history: MinuteHistory, start_ns: int) -> FundingRows:
    """Binance's settlements in the `len(history)` minutes up to `start_ns` (the history's
    end), as offsets from it: the candles' shift onto the server's clock."""
    window = load_funding_schedule().between(start_ns - len(history) * NS_PER_MINUTE + 1, start_ns)
    times = np.array([t for t, _ in window], dtype=np.int64)
    rates = np.array([r for _, r in window], dtype=np.int64)
    # A schedule's rate is charged whole at its time (`FundingState.settle_rate`: divisor 1).
    return FundingRows.at_minutes(history, times - start_ns, rates, np.ones_like(rates))


def _median_lots(spec: MarketSpec) -> int:
    """The tape's median print in lots (at least 1): a history minute's trade count is its
    volume in prints of that size."""
    return max(int(Decimal(repr(MEDIAN_SIZE_BTC)) / spec.step_size), 1)


# -- a synthetic path -------------------------------------------------------------------------


def _seed(seed: int, stream: int) -> int:
    state = np.random.SeedSequence([seed, HISTORY_SEED, stream]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def _synthetic_history(
    scenario: Scenario, spec: MarketSpec, seed: int, minutes: int, per_minute: float
) -> MinuteHistory:
    p = scenario.path
    assert p is not None
    start_ticks = max(1, round(Decimal(repr(p.start_price)) / spec.tick_size))
    ratio = SUBSTEP_SECONDS / p.step_seconds  # a history step in the path's steps
    root = math.sqrt(ratio)
    n_steps = minutes * SUBSTEPS
    step_ns = round(SUBSTEP_SECONDS * 1e9)
    path_seed = _seed(seed, 0)
    path: PricePath
    if p.kind == "merton":
        path = merton(
            start_ticks, n_steps, step_ns, p.sigma * root, min(p.jump_intensity * ratio, 1e6),
            -p.jump_mean, p.jump_sigma, -p.drift * ratio, seed=path_seed,
        )  # fmt: skip
    elif p.kind == "regime":
        path = regime_switch(
            start_ticks, n_steps, step_ns, p.sigma * root, p.storm_sigma * root,
            min(p.p_calm_to_storm * ratio, 1.0), min(p.p_storm_to_calm * ratio, 1.0),
            -p.drift * ratio, seed=path_seed,
        )  # fmt: skip
    else:
        sigma = p.sigma
        drift = p.drift
        if p.kind == "pattern":
            returns = np.array(p.returns or (0.0,), dtype=np.float64)
            sigma = float(np.sqrt(np.mean(returns * returns)))
            drift = 0.0
        path = gbm(start_ticks, n_steps, step_ns, sigma * root, -drift * ratio, seed=path_seed)
    # Backwards: the walk ends at the start price; minute m spans samples mK .. (m+1)K.
    samples = path.price_ticks[::-1]
    groups = np.lib.stride_tricks.sliding_window_view(samples, SUBSTEPS + 1)[::SUBSTEPS]
    last: I64 = np.stack(
        [groups[:, 0], groups.max(axis=1), groups.min(axis=1), groups[:, -1]], axis=1
    ).astype(np.int64)
    rng = np.random.default_rng(_seed(seed, 1))
    rate = per_minute if per_minute > 0 else 20.0
    count = rng.poisson(rate, minutes).astype(np.int64)
    mean_size = MEDIAN_SIZE_BTC * math.exp(SIZE_SIGMA * SIZE_SIGMA / 2)
    btc = count * mean_size * np.exp(VOLUME_SIGMA * rng.standard_normal(minutes))
    lots = np.rint(btc / float(spec.step_size)).astype(np.int64)
    volume = np.where(count > 0, np.maximum(lots, 1), 0).astype(np.int64)
    taker = rng.binomial(volume, 0.5).astype(np.int64)
    return _history(last, last, last, np.zeros_like(last), volume, taker, count)


__all__ = ["HISTORY_SEED", "SUBSTEPS", "scenario_history"]
