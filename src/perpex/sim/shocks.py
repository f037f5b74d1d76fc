"""Shocks on top of any price path: a drop, a pump, a liquidity gap, an index/last divergence.

Each function takes a `PricePath` and returns a new one; the input is never modified. Windows
are given in ns: a shock at `at_ns` lasting `duration_ns` covers the steps with
at_ns <= time < at_ns + duration_ns, and must lie inside the path, i.e.
path.start_ns <= at_ns and at_ns + duration_ns <= path.end_ns (the last step holds for
`step_ns`). Prices are scaled in float64 (products and quotients only, correctly rounded on
every IEEE-754 machine) and rounded to ticks with `np.rint` (half to even), clamped to
[1, MAX_TICKS]: the same ticks everywhere.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perpex.sim.paths import MAX_TICKS, BoolArray, FloatArray, Int64Array, PricePath


def _number(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    x = float(value)
    if not np.isfinite(x):
        raise ValueError(f"{name} {value!r} must be finite")
    return x


def _window(
    path: PricePath, at_ns: int, duration_ns: int, what: str, *, allow_zero: bool = False
) -> None:
    for name, value in (("at_ns", at_ns), (what, duration_ns)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if duration_ns < 0 or (duration_ns == 0 and not allow_zero):
        rule = "must not be negative" if allow_zero else "must be positive"
        raise ValueError(f"{what} {duration_ns} {rule}")
    if not path.start_ns <= at_ns < path.end_ns:
        raise ValueError(f"at_ns {at_ns} is outside the path [{path.start_ns}, {path.end_ns})")
    if at_ns + duration_ns > path.end_ns:
        raise ValueError(
            f"the shock ends at {at_ns + duration_ns}, after the path ends at {path.end_ns}"
        )


def _in_window(path: PricePath, at_ns: int, duration_ns: int) -> BoolArray:
    mask: BoolArray = (path.time_ns >= at_ns) & (path.time_ns < at_ns + duration_ns)
    if not bool(np.any(mask)):
        raise ValueError(
            f"no step of the path falls in [{at_ns}, {at_ns + duration_ns}): "
            f"the window is shorter than a step"
        )
    return mask


def _scale(ticks: Int64Array, factor: FloatArray) -> Int64Array:
    scaled = np.rint(ticks.astype(np.float64) * factor)
    out: Int64Array = np.clip(scaled, 1.0, float(MAX_TICKS)).astype(np.int64)
    return out


def _ramp(path: PricePath, at_ns: int, over_ns: int, change: float) -> PricePath:
    """Multiply every price column by 1 + change * fraction of [at_ns, at_ns + over_ns] done."""
    if over_ns == 0:
        done = (path.time_ns >= at_ns).astype(np.float64)
    else:
        elapsed = np.clip(path.time_ns - at_ns, 0, over_ns)
        done = elapsed.astype(np.float64) / float(over_ns)
    factor = 1.0 + change * done
    return dataclasses.replace(
        path,
        price_ticks=_scale(path.price_ticks, factor),
        index_ticks=None if path.index_ticks is None else _scale(path.index_ticks, factor),
        mark_ticks=None if path.mark_ticks is None else _scale(path.mark_ticks, factor),
    )


def drop(path: PricePath, at_ns: int, percent: float, over_ns: int) -> PricePath:
    """A fall of `percent` % spread linearly over [at_ns, at_ns + over_ns], then the rest.

    Every price column (last target, index, mark where present) is multiplied by
    1 - percent/100 * min(1, max(0, (t - at_ns) / over_ns)): before `at_ns` the path is
    unchanged, during the fall it slides down linearly in time, and from `at_ns + over_ns` on
    the original path continues from the new level (shifted multiplicatively). `over_ns = 0`
    is an instant gap down at `at_ns`. `percent` must be in (0, 100).
    """
    p = _number("percent", percent)
    if not 0.0 < p < 100.0:
        raise ValueError(f"drop percent {percent!r} must be in (0, 100)")
    _window(path, at_ns, over_ns, "over_ns", allow_zero=True)
    return _ramp(path, at_ns, over_ns, -p / 100.0)


def pump(path: PricePath, at_ns: int, percent: float, over_ns: int) -> PricePath:
    """A rise of `percent` % over [at_ns, at_ns + over_ns]: `drop` upward.

    The factor is 1 + percent/100 * fraction done; `percent` must be in (0, 1000].
    """
    p = _number("percent", percent)
    if not 0.0 < p <= 1000.0:
        raise ValueError(f"pump percent {percent!r} must be in (0, 1000]")
    _window(path, at_ns, over_ns, "over_ns", allow_zero=True)
    return _ramp(path, at_ns, over_ns, p / 100.0)


def liquidity_gap(path: PricePath, at_ns: int, duration_ns: int) -> PricePath:
    """The makers vanish: `makers_away` is True for at_ns <= t < at_ns + duration_ns.

    Earlier gaps on the path stay (the flags are OR-ed). The window must hold at least one step.
    """
    _window(path, at_ns, duration_ns, "duration_ns")
    mask = _in_window(path, at_ns, duration_ns)
    return dataclasses.replace(path, makers_away=path.gaps | mask)


def divergence(path: PricePath, at_ns: int, duration_ns: int, percent: float) -> PricePath:
    """The local last target moves `percent` % while the index holds.

    For at_ns <= t < at_ns + duration_ns, `price_ticks` becomes rint(price * (1 + percent/100))
    (clamped to >= 1 tick); `index_ticks` is set to the path's index before the shock (its
    `index_ticks`, or its `price_ticks` where the path had none), so the index stays on the
    original path; after the window the last target rejoins it. The mark series, if any, is
    left alone. `percent` is signed: in (-100, 1000], not 0. The window must hold a step.
    """
    p = _number("percent", percent)
    if p == 0.0 or not -100.0 < p <= 1000.0:
        raise ValueError(f"divergence percent {percent!r} must be in (-100, 1000] and not 0")
    _window(path, at_ns, duration_ns, "duration_ns")
    mask = _in_window(path, at_ns, duration_ns)
    factor = np.where(mask, 1.0 + p / 100.0, 1.0)
    moved = np.where(mask, _scale(path.price_ticks, factor), path.price_ticks)
    return dataclasses.replace(
        path, price_ticks=moved.astype(np.int64), index_ticks=path.index.copy()
    )
