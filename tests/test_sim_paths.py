"""Price paths (perpex.sim.paths) and shocks (perpex.sim.shocks): seeded, exact in ticks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from perpex.sim.candles import Candles
from perpex.sim.paths import (
    PricePath,
    gbm,
    intrabar_path,
    merton,
    regime_states,
    regime_switch,
)
from perpex.sim.shocks import divergence, drop, liquidity_gap, pump

HOUR = 3_600 * 10**9
MINUTE = 60 * 10**9
SECOND = 10**9
T0 = 1_584_007_200 * 10**9  # 2020-03-12 10:00 UTC


def i64(*values: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    return np.array(values, dtype=np.int64)


def candles(*ohlc: tuple[int, int, int, int], interval: int = HOUR) -> Candles:
    """Hand-made hourly candles (O, H, L, C) in ticks, back to back from T0."""
    n = len(ohlc)
    cols = list(zip(*ohlc, strict=True))
    return Candles(
        "BTCUSDT",
        interval,
        T0 + interval * np.arange(n, dtype=np.int64),
        i64(*cols[0]),
        i64(*cols[1]),
        i64(*cols[2]),
        i64(*cols[3]),
        np.ones(n, dtype=np.int64),
    )


RED = (7_900, 7_950, 5_600, 5_700)  # a crash hour: close < open
GREEN = (5_700, 6_100, 5_500, 6_000)  # close > open
DOJI = (6_000, 6_050, 5_950, 6_000)


def flat(n: int = 61, level: int = 50_000, step: int = MINUTE) -> PricePath:
    return PricePath(
        time_ns=T0 + step * np.arange(n, dtype=np.int64),
        price_ticks=np.full(n, level, dtype=np.int64),
        step_ns=step,
    )


# --- PricePath ------------------------------------------------------------------------------


def test_price_path_validates_its_columns() -> None:
    good = flat(3)
    assert len(good) == 3 and good.end_ns == T0 + 3 * MINUTE
    assert good.index is good.price_ticks and not good.gaps.any()
    with pytest.raises(ValueError, match="strictly increasing"):
        PricePath(i64(0, 0, 1), i64(1, 1, 1), 1)
    with pytest.raises(ValueError, match="below 1 tick"):
        PricePath(i64(0, 1, 2), i64(5, 0, 5), 1)
    with pytest.raises(ValueError, match="has 2 rows"):
        PricePath(i64(0, 1, 2), i64(5, 5), 1)
    with pytest.raises(ValueError, match="int64"):
        PricePath(i64(0, 1), np.array([5.0, 5.0]), 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        PricePath(i64(0, 1), i64(5, 5), 0)
    with pytest.raises(ValueError, match="makers_away"):
        PricePath(i64(0, 1), i64(5, 5), 1, makers_away=i64(0, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        PricePath(i64(), i64(), 1)


# --- historical replay ----------------------------------------------------------------------


def test_red_candle_goes_high_first_and_green_low_first() -> None:
    path = intrabar_path(candles(RED, GREEN, DOJI))
    assert path.price_ticks.tolist() == [
        *(7_900, 7_950, 5_600, 5_700),  # red: O -> H -> L -> C
        *(5_700, 5_500, 6_100, 6_000),  # green: O -> L -> H -> C
        *(6_000, 5_950, 6_050, 6_000),  # doji counts as green
    ]
    assert path.mark_ticks is None and path.index_ticks is None and path.makers_away is None


@pytest.mark.parametrize(
    ("order", "first"),
    [("high_first", [7_950, 6_100]), ("low_first", [5_600, 5_500])],
)
def test_order_is_configurable(order: Any, first: list[int]) -> None:
    path = intrabar_path(candles(RED, GREEN), order=order)
    assert path.price_ticks[[1, 5]].tolist() == first
    with pytest.raises(ValueError, match="order"):
        intrabar_path(candles(RED), order="sideways")  # type: ignore[arg-type]


@pytest.mark.parametrize("steps", [4, 5, 6, 7, 10, 13, 60])
def test_every_candle_point_appears_and_steps_are_linear(steps: int) -> None:
    c = candles(RED, GREEN, DOJI, (100, 101, 99, 100))
    path = intrabar_path(c, steps_per_candle=steps)
    assert len(path) == steps * len(c)
    grid = path.price_ticks.reshape(len(c), steps)
    assert grid[:, 0].tolist() == c.open_ticks.tolist()
    assert grid[:, -1].tolist() == c.close_ticks.tolist()
    assert (grid.max(axis=1) == c.high_ticks).all() and (grid.min(axis=1) == c.low_ticks).all()
    ohlc = np.stack([c.open_ticks, c.high_ticks, c.low_ticks, c.close_ticks], axis=1).tolist()
    for row, (o, h, lo, cl) in zip(grid, ohlc, strict=True):
        first, second = (h, lo) if cl < o else (lo, h)
        values = row.tolist()
        # the four points in order, and monotone legs between them
        i1 = values.index(first)
        i2 = i1 + values[i1:].index(second)
        assert 0 < i1 < i2 < steps - 1
        for a, b in ((0, i1), (i1, i2), (i2, steps - 1)):
            leg = np.diff(row[a : b + 1])
            assert (leg >= 0).all() or (leg <= 0).all()
            # linear: consecutive moves differ by at most one tick
            assert np.ptp(leg) <= 1
    # times: monotone, evenly spread inside each candle, the candle's open time first
    times = path.time_ns.reshape(len(c), steps)
    assert (np.diff(path.time_ns) > 0).all()
    assert times[:, 0].tolist() == c.time_ns.tolist()
    assert ((times - c.time_ns[:, None]) < c.interval_ns).all()
    assert np.ptp(np.diff(times, axis=1)) <= 1
    assert path.step_ns == HOUR // steps


def test_interpolation_rounds_half_up_exactly() -> None:
    # 5 steps: legs of 1, 1 and 2 moves; the 2-move leg's midpoint is x.5 and rounds up
    path = intrabar_path(candles((100, 103, 99, 100)), steps_per_candle=5, order="low_first")
    assert path.price_ticks.tolist() == [100, 99, 103, 102, 100]  # 101.5 -> 102
    path = intrabar_path(candles((100, 103, 96, 99)), steps_per_candle=5, order="high_first")
    assert path.price_ticks.tolist() == [100, 103, 96, 98, 99]  # 97.5 -> 98


def test_mark_series_path_and_close() -> None:
    last = candles(GREEN, GREEN)
    mark = candles((5_710, 5_800, 5_650, 5_790), (5_790, 5_800, 5_780, 5_785))
    walked = intrabar_path(last, mark=mark)
    assert walked.mark_ticks is not None
    assert walked.mark_ticks.tolist() == [5_710, 5_650, 5_800, 5_790, 5_790, 5_800, 5_780, 5_785]
    closes = intrabar_path(last, mark=mark, mark_points="close")
    assert closes.mark_ticks is not None
    assert closes.mark_ticks.tolist() == [5_710] * 3 + [5_790] * 4 + [5_785]
    shifted = Candles(
        "BTCUSDT",
        HOUR,
        mark.time_ns + 1,
        mark.open_ticks,
        mark.high_ticks,
        mark.low_ticks,
        mark.close_ticks,
        mark.volume_lots,
    )
    with pytest.raises(ValueError, match="mark candle 0"):
        intrabar_path(last, mark=shifted)
    with pytest.raises(ValueError, match="same interval and count"):
        intrabar_path(last, mark=candles(GREEN))
    with pytest.raises(ValueError, match="mark_points"):
        intrabar_path(last, mark=mark, mark_points="open")  # type: ignore[arg-type]


def test_bad_replay_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 4"):
        intrabar_path(candles(RED), steps_per_candle=3)
    with pytest.raises(ValueError, match="must be an int"):
        intrabar_path(candles(RED), steps_per_candle=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exceeds the interval"):
        intrabar_path(candles(RED, interval=3), steps_per_candle=4)
    with pytest.raises(ValueError, match="price candle 1"):
        intrabar_path(candles(RED, (100, 99, 98, 100)))  # high below the open
    with pytest.raises(ValueError, match="no candles"):
        intrabar_path(candles(RED).between(0, 1))
    overlapping = Candles(
        "BTCUSDT",
        HOUR,
        i64(T0, T0 + MINUTE),
        i64(1, 1),
        i64(1, 1),
        i64(1, 1),
        i64(1, 1),
        i64(1, 1),
    )
    with pytest.raises(ValueError, match="candle 1 opens before"):
        intrabar_path(overlapping)


# --- synthetic paths ------------------------------------------------------------------------


SYNTHETIC = {
    "gbm": lambda seed: gbm(60_000, 2_000, MINUTE, 0.002, seed=seed, start_ns=T0),
    "merton": lambda seed: merton(60_000, 2_000, MINUTE, 0.002, 0.01, -0.05, 0.02, seed=seed),
    "regime": lambda seed: regime_switch(60_000, 2_000, MINUTE, 0.001, 0.01, 0.01, 0.05, seed=seed),
}


@pytest.mark.parametrize("kind", sorted(SYNTHETIC))
def test_same_seed_same_ticks_different_seed_different(kind: str) -> None:
    make = SYNTHETIC[kind]
    a, b, c = make(7), make(7), make(8)
    assert a.price_ticks.dtype == np.int64 and len(a) == 2_001
    assert np.array_equal(a.price_ticks, b.price_ticks) and np.array_equal(a.time_ns, b.time_ns)
    assert not np.array_equal(a.price_ticks, c.price_ticks)
    assert a.price_ticks[0] == 60_000 and (a.price_ticks >= 1).all()
    assert (np.diff(a.time_ns) == MINUTE).all() and a.step_ns == MINUTE


def test_gbm_pinned_ticks() -> None:
    """The exact ticks of one seed: a change of generator or rounding shows up here."""
    path = gbm(60_000, 5, SECOND, 0.01, seed=1, start_ns=T0)
    assert path.price_ticks.tolist() == [60_000, 60_205, 60_698, 60_896, 60_105, 60_648]
    assert path.time_ns.tolist() == [T0 + k * SECOND for k in range(6)]


def test_gbm_log_return_std_is_sigma() -> None:
    sigma = 0.01
    path = gbm(10**9, 20_000, SECOND, sigma, seed=12345)
    returns = np.diff(np.log(path.price_ticks.astype(np.float64)))
    assert abs(returns.std() - sigma) < 0.05 * sigma
    assert abs(returns.mean() + 0.5 * sigma**2) < 4 * sigma / np.sqrt(len(returns))


def test_gbm_drift_and_zero_sigma() -> None:
    still = gbm(1_000, 10, SECOND, 0.0, seed=0)
    assert (still.price_ticks == 1_000).all()
    rising = gbm(1_000_000, 10, SECOND, 0.0, 0.01, seed=0)
    assert rising.price_ticks.tolist() == [round(1_000_000 * np.exp(0.01 * k)) for k in range(11)]


def test_prices_are_clamped_to_one_tick() -> None:
    crash = gbm(3, 200, SECOND, 0.0, -0.5, seed=0)
    assert crash.price_ticks[-1] == 1 and (crash.price_ticks >= 1).all()


def test_merton_jumps_only_with_intensity() -> None:
    base = gbm(60_000, 5_000, MINUTE, 0.001, seed=3)
    none = merton(60_000, 5_000, MINUTE, 0.001, 0.0, -0.05, 0.01, seed=3)
    assert np.array_equal(none.price_ticks, base.price_ticks)  # intensity 0 is plain GBM
    some = merton(60_000, 5_000, MINUTE, 0.001, 0.002, -0.05, 0.01, seed=3)
    big = np.abs(np.diff(np.log(some.price_ticks.astype(np.float64)))) > 0.02  # > 20 sigma
    assert 1 <= big.sum() <= 40  # about 10 expected
    quiet = np.abs(np.diff(np.log(none.price_ticks.astype(np.float64)))) > 0.02
    assert not quiet.any()


def test_regime_switch_visits_both_states() -> None:
    states = regime_states(20_000, 0.01, 0.05, seed=4)
    assert states.any() and not states.all()
    assert 0.08 < states.mean() < 0.28  # stationary storm share 0.01 / 0.06 ~ 0.17
    path = regime_switch(10**8, 20_000, SECOND, 0.001, 0.01, 0.01, 0.05, seed=4)
    returns = np.diff(np.log(path.price_ticks.astype(np.float64)))
    assert abs(returns[~states].std() - 0.001) < 0.0002
    assert abs(returns[states].std() - 0.01) < 0.001
    stuck = regime_states(1_000, 0.0, 0.5, seed=4)
    assert not stuck.any()
    assert regime_states(1_000, 0.0, 0.0, seed=4, start_storm=True).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: gbm(0, 10, SECOND, 0.01, seed=0), "start_ticks"),
        (lambda: gbm(100, -1, SECOND, 0.01, seed=0), "n_steps"),
        (lambda: gbm(100, 10, 0, 0.01, seed=0), "step_ns"),
        (lambda: gbm(100, 10, SECOND, -0.01, seed=0), "sigma_per_step"),
        (lambda: gbm(100, 10, SECOND, float("nan"), seed=0), "finite"),
        (lambda: gbm(100, 10, SECOND, 0.01, seed=-1), "seed"),
        (lambda: gbm(100, 10, SECOND, 0.01, seed=1.5), "seed"),
        (lambda: merton(100, 10, SECOND, 0.01, -1.0, 0.0, 0.1, seed=0), "jump_intensity"),
        (lambda: merton(100, 10, SECOND, 0.01, 0.1, 0.0, -0.1, seed=0), "jump_sigma"),
        (lambda: regime_switch(100, 10, SECOND, 0.01, 0.02, 1.5, 0.1, seed=0), "p_calm_to_storm"),
        (lambda: regime_states(10, 0.1, -0.1, seed=0), "p_storm_to_calm"),
    ],
)
def test_bad_synthetic_arguments_are_refused(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()


# --- shocks ---------------------------------------------------------------------------------


def test_drop_reaches_the_level_and_the_rest_continues_from_it() -> None:
    at, over = T0 + 10 * MINUTE, 5 * MINUTE
    path = flat()
    fallen = drop(path, at, 10, over)
    assert fallen.price_ticks[:11].tolist() == [50_000] * 11
    assert fallen.price_ticks[11:16].tolist() == [49_000, 48_000, 47_000, 46_000, 45_000]
    assert (fallen.price_ticks[15:] == 45_000).all()
    assert np.array_equal(path.price_ticks, flat().price_ticks)  # the input is unchanged
    # on a moving path: 90 % of the level at the end of the fall, the rest shifted by 0.9
    moving = gbm(60_000, 60, MINUTE, 0.002, seed=9, start_ns=T0)
    moved = drop(moving, at, 10, over)
    end = 15
    assert abs(int(moved.price_ticks[end]) - 0.9 * int(moving.price_ticks[end])) <= 1
    assert (np.abs(moved.price_ticks[end:] - 0.9 * moving.price_ticks[end:]) <= 0.5).all()
    assert np.array_equal(moved.price_ticks[:11], moving.price_ticks[:11])
    assert (np.diff(moved.time_ns) > 0).all() and np.array_equal(moved.time_ns, moving.time_ns)


def test_drop_moves_index_and_mark_too_and_zero_duration_is_a_gap() -> None:
    path = intrabar_path(candles(GREEN, GREEN), mark=candles(GREEN, GREEN))
    fallen = drop(path, T0 + HOUR, 20, 0)
    assert fallen.mark_ticks is not None
    assert fallen.price_ticks[:4].tolist() == path.price_ticks[:4].tolist()
    assert fallen.price_ticks[4:].tolist() == [round(0.8 * p) for p in path.price_ticks[4:]]
    assert fallen.mark_ticks[4:].tolist() == fallen.price_ticks[4:].tolist()


def test_pump_rises_by_the_percent() -> None:
    up = pump(flat(), T0, 30, 10 * MINUTE)
    assert up.price_ticks[0] == 50_000 and up.price_ticks[5] == 57_500
    assert (up.price_ticks[10:] == 65_000).all()


def test_liquidity_gap_flags_exactly_the_window() -> None:
    path = flat(600, step=SECOND)
    at, duration = T0 + 100 * SECOND, 30 * SECOND
    gapped = liquidity_gap(path, at, duration)
    expected = (path.time_ns >= at) & (path.time_ns < at + duration)
    assert gapped.makers_away is not None and np.array_equal(gapped.makers_away, expected)
    assert gapped.makers_away.sum() == 30
    assert np.array_equal(gapped.price_ticks, path.price_ticks)
    twice = liquidity_gap(gapped, T0 + 500 * SECOND, 10 * SECOND)
    assert twice.gaps.sum() == 40 and twice.gaps[100] and twice.gaps[509] and not twice.gaps[510]


def test_divergence_moves_the_last_and_leaves_the_index() -> None:
    path = gbm(60_000, 120, SECOND, 0.001, seed=5, start_ns=T0)
    at, duration = T0 + 30 * SECOND, 20 * SECOND
    split = divergence(path, at, duration, 10)
    assert split.index_ticks is not None
    assert np.array_equal(split.index_ticks, path.price_ticks)
    window = (path.time_ns >= at) & (path.time_ns < at + duration)
    assert np.array_equal(
        split.price_ticks[window], np.rint(path.price_ticks[window] * 1.1).astype(np.int64)
    )
    assert np.array_equal(split.price_ticks[~window], path.price_ticks[~window])
    down = divergence(split, at + 60 * SECOND, 5 * SECOND, -5)  # stacks: index stays original
    assert down.index_ticks is not None
    assert np.array_equal(down.index_ticks, path.price_ticks)
    assert (down.price_ticks[90:95] < path.price_ticks[90:95]).all()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda p: drop(p, T0, 0, MINUTE), r"drop percent 0 must be in \(0, 100\)"),
        (lambda p: drop(p, T0, 100, MINUTE), "drop percent"),
        (lambda p: drop(p, T0, -5, MINUTE), "drop percent"),
        (lambda p: drop(p, T0, "10", MINUTE), "must be a number"),
        (lambda p: drop(p, T0 - 1, 10, MINUTE), "outside the path"),
        (lambda p: drop(p, T0 + 61 * MINUTE, 10, MINUTE), "outside the path"),
        (lambda p: drop(p, T0 + 60 * MINUTE, 10, 2 * MINUTE), "after the path ends"),
        (lambda p: drop(p, T0, 10, -1), "over_ns -1 must not be negative"),
        (lambda p: pump(p, T0, 0, MINUTE), "pump percent"),
        (lambda p: pump(p, T0, 2000, MINUTE), "pump percent"),
        (lambda p: liquidity_gap(p, T0, 0), "duration_ns 0 must be positive"),
        (lambda p: liquidity_gap(p, T0 + 1, SECOND), "no step of the path"),
        (lambda p: liquidity_gap(p, T0, 1.5), "must be an int"),
        (lambda p: divergence(p, T0, MINUTE, 0), "divergence percent"),
        (lambda p: divergence(p, T0, MINUTE, -100), "divergence percent"),
        (lambda p: divergence(p, T0, 100 * MINUTE, 5), "after the path ends"),
    ],
)
def test_bad_shock_arguments_are_refused(call: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(flat())


# --- intrabar shape "wicks" -----------------------------------------------------------------
def test_wicks_walk_the_body_and_spike_to_each_extreme() -> None:
    """Green 100 -> 120 with L 80 and H 160, 13 steps, 2 steps out and back: the body is the
    straight line open -> close; the low spikes at a third, the high at two thirds."""
    c = candles((100, 160, 80, 120))
    path = intrabar_path(c, steps_per_candle=13, shape="wicks", wick_steps=2)
    want = [100, 102, 103, 92, 80, 95, 110, 135, 160, 139, 117, 118, 120]
    assert path.price_ticks.tolist() == want


@pytest.mark.parametrize("ohlc", [RED, GREEN, DOJI])
def test_wicks_keep_every_ohlc_point_and_stay_inside_the_candle(
    ohlc: tuple[int, int, int, int],
) -> None:
    c = candles(ohlc, ohlc)
    path = intrabar_path(c, steps_per_candle=60, shape="wicks", wick_steps=1)
    rows = path.price_ticks.reshape(2, 60)
    o, h, lo, cl = ohlc
    for row in rows:
        assert row[0] == o and row[-1] == cl and row.max() == h and row.min() == lo
        # the extremes last one step each: a wick, not a third of the hour
        assert (row == h).sum() == 1 and (row == lo).sum() == 1


def test_wicks_need_room_for_their_spikes() -> None:
    with pytest.raises(ValueError, match="needs steps_per_candle >= 13"):
        intrabar_path(candles(GREEN), steps_per_candle=12, shape="wicks", wick_steps=2)
    with pytest.raises(ValueError, match="shape"):
        intrabar_path(candles(GREEN), steps_per_candle=12, shape="spikes")  # type: ignore[arg-type]
