"""Shocks injected into a live market from now on: the simulator's kinds on a running clock.

`perpex.sim.shocks` bends a whole `PricePath` before a run; a live market has no whole path,
only "now", so here a shock is an overlay on the path clock (the driver's continuous scenario
time, in ns, frozen while paused) with exactly those semantics:

- ``drop`` / ``pump``: every price (the local target and the index) x
  1 -+ percent/100 x min(1, max(0, (t - start) / duration)); the move is spread linearly over
  `minutes` (and `seconds`; 0: a gap at once), then the path goes on from the new level;
  percent in (0, 100) for a drop, (0, 1000] for a pump;
- ``gap`` (the simulator's ``liquidity_gap``): the makers pull every quote for `seconds`
  (and `minutes`), > 0;
- ``divergence``: the local target (where the makers quote) x (1 + percent/100) for `seconds`
  while the index holds; percent signed, in (-100, 1000], not 0.

Durations are scenario time (at speed 60, "a drop over 5 minutes" takes 5 wall seconds).
Units: times in ns of the path clock; percent in percent, as in scenario files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

NS_PER_SECOND: Final = 1_000_000_000
MAX_SHOCK_SECONDS: Final = 86_400.0  # a day of scenario time: longer is a new scenario
KINDS: Final = ("drop", "pump", "gap", "divergence")
ALIASES: Final = {"liquidity_gap": "gap"}  # the scenario files' name
PARAMS: Final = frozenset({"percent", "minutes", "seconds"})


@dataclass(frozen=True)
class LiveShock:
    """One injected shock: its kind, size (percent) and window on the path clock."""

    kind: str
    percent: float
    start_ns: int
    duration_ns: int

    @property
    def end_ns(self) -> int:
        return self.start_ns + self.duration_ns

    def done(self, clock_ns: int) -> float:
        """The share of the shock's window behind `clock_ns`, in [0, 1] (sim/shocks.py `_ramp`)."""
        if clock_ns < self.start_ns:
            return 0.0
        if self.duration_ns == 0 or clock_ns >= self.end_ns:
            return 1.0
        return (clock_ns - self.start_ns) / self.duration_ns

    def price_factor(self, clock_ns: int) -> float:
        """What a drop or pump multiplies every price by at `clock_ns` (1 for other kinds)."""
        if self.kind == "drop":
            return 1.0 - self.percent / 100.0 * self.done(clock_ns)
        if self.kind == "pump":
            return 1.0 + self.percent / 100.0 * self.done(clock_ns)
        return 1.0

    def active(self, clock_ns: int) -> bool:
        """Inside its window: a gap or divergence holds, a drop or pump is under way."""
        return self.start_ns <= clock_ns < self.end_ns

    def finished(self, clock_ns: int) -> bool:
        return clock_ns >= self.end_ns

    def describe(self, clock_ns: int) -> dict[str, Any]:
        """JSON-ready, for the admin's status."""
        return {
            "kind": self.kind,
            "percent": self.percent,
            "seconds": self.duration_ns / NS_PER_SECOND,
            "done": round(self.done(clock_ns), 6),
            "active": self.active(clock_ns),
        }


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def make_shock(kind: str, params: Mapping[str, Any], start_ns: int) -> LiveShock:
    """A shock of `kind` starting at `start_ns` on the path clock, its parameters checked as
    `perpex.sim.shocks` checks them; ValueError names the parameter and the rule."""
    name = ALIASES.get(kind, kind)
    if name not in KINDS:
        raise ValueError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (a shock takes percent, minutes, "
                         "seconds)")  # fmt: skip
    percent = _number("percent", params.get("percent", 0.0))
    minutes = _number("minutes", params.get("minutes", 0.0))
    seconds = _number("seconds", params.get("seconds", 0.0))
    if minutes < 0 or seconds < 0:
        raise ValueError("minutes and seconds must not be negative")
    duration_s = minutes * 60.0 + seconds
    if duration_s > MAX_SHOCK_SECONDS:
        raise ValueError(f"a shock lasts at most {MAX_SHOCK_SECONDS:g} s, got {duration_s:g}")
    if name == "drop" and not 0.0 < percent < 100.0:
        raise ValueError(f"drop percent must be in (0, 100), got {percent:g}")
    if name == "pump" and not 0.0 < percent <= 1000.0:
        raise ValueError(f"pump percent must be in (0, 1000], got {percent:g}")
    if name == "divergence" and (percent == 0.0 or not -100.0 < percent <= 1000.0):
        raise ValueError(f"divergence percent must be in (-100, 1000] and not 0, got {percent:g}")
    if name == "gap" and percent != 0.0:
        raise ValueError("a gap takes no percent (the makers pull out for seconds)")
    if name in ("gap", "divergence") and duration_s <= 0.0:
        raise ValueError(f"a {name} needs seconds (or minutes) > 0")
    return LiveShock(name, percent, start_ns, round(duration_s * NS_PER_SECOND))


__all__ = ["ALIASES", "KINDS", "MAX_SHOCK_SECONDS", "LiveShock", "make_shock"]
