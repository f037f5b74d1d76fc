"""A scenario's price path read on a continuous clock, for a market that never ends.

`LivePath` answers "where is the path at scenario time t" for any t >= 0 (ns since the driver
began, the path clock): between two rows of the path it interpolates linearly, so at speed 1 a
path of one-minute steps moves every second instead of jumping once a minute (the rows
themselves are the simulator's, intrabar shape and all). When t passes the path's end the path
starts again, rescaled so that it starts where it ended (its last index row x the scale): a
loop, never a jump. `rebase` rescales it so that the index at t equals a given price (a
restart continues from the journal's index, not from the scenario's first price).

Units: prices in ticks (floats here: a scale and an interpolation are decisions, the driver
rounds once to whole ticks), times in ns.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Final

from perpex.sim.build import fed_index
from perpex.sim.paths import PricePath

MAX_SCALE: Final = 1e6  # a path rescaled this far is a bug, not a market


class LivePath:
    """The path of a scenario as a function of the path clock (ns from the driver's start)."""

    def __init__(self, path: PricePath) -> None:
        self.path = path
        self._offsets_ns: list[int] = (path.time_ns - path.start_ns).tolist()
        self._target: list[int] = path.price_ticks.tolist()
        self._index: list[int] = fed_index(path).tolist()
        self._gaps: list[bool] = path.gaps.tolist()
        self.length_ns = path.end_ns - path.start_ns
        self.loop_ratio = self._index[-1] / self._index[0]  # one loop's move, index end / start
        self.loops = 0  # completed loops
        self.loop_start_ns = 0  # the path clock at which the current loop began
        self.scale = 1.0  # every price of the current loop x this

    # -- the clock's position ---------------------------------------------------------------
    def _wrap(self, clock_ns: int) -> int:
        """Move to the loop holding `clock_ns` (rescaling at each wrap); its offset in it."""
        if clock_ns < self.loop_start_ns:
            raise ValueError(f"the path clock went back: {clock_ns} < {self.loop_start_ns}")
        laps = (clock_ns - self.loop_start_ns) // self.length_ns
        if laps:
            self.scale *= self.loop_ratio**laps
            self.loop_start_ns += laps * self.length_ns
            self.loops += laps
        return clock_ns - self.loop_start_ns

    def _row(self, offset_ns: int) -> tuple[int, float]:
        """The row at or before `offset_ns`, and how far it is to the next row (0 to 1)."""
        i = bisect_right(self._offsets_ns, offset_ns) - 1
        if i + 1 >= len(self._offsets_ns):
            return i, 0.0  # the last step holds until the loop ends
        t0, t1 = self._offsets_ns[i], self._offsets_ns[i + 1]
        return i, (offset_ns - t0) / (t1 - t0)

    @staticmethod
    def _between(series: list[int], i: int, frac: float) -> float:
        a = series[i]
        return float(a) if frac == 0.0 else a + (series[i + 1] - a) * frac

    # -- reads ------------------------------------------------------------------------------
    def at(self, clock_ns: int) -> tuple[float, float, bool]:
        """(target, index, makers away) at `clock_ns`: the local last-price target the makers
        quote around and the index to publish, in ticks x the scale (not rounded), and whether
        a liquidity gap of the scenario's own shocks holds there."""
        offset_ns = self._wrap(clock_ns)
        i, frac = self._row(offset_ns)
        target = self._between(self._target, i, frac) * self.scale
        index = self._between(self._index, i, frac) * self.scale
        return target, index, self._gaps[i]

    def scenario_time_ns(self, clock_ns: int) -> int:
        """The scenario's own date at `clock_ns` (its loop's), ns since the epoch."""
        return self.path.start_ns + self._wrap(clock_ns)

    def progress(self, clock_ns: int) -> float:
        """How far through the current loop, 0 to 1."""
        return self._wrap(clock_ns) / self.length_ns

    # -- changes ----------------------------------------------------------------------------
    def rebase(self, clock_ns: int, index_ticks: float) -> None:
        """Rescale so that the index at `clock_ns` is `index_ticks` (> 0)."""
        if not index_ticks > 0:
            raise ValueError(f"index_ticks must be > 0, got {index_ticks}")
        offset_ns = self._wrap(clock_ns)
        i, frac = self._row(offset_ns)
        scale = index_ticks / self._between(self._index, i, frac)
        if not 1.0 / MAX_SCALE < scale < MAX_SCALE:
            raise ValueError(f"rescaling the path by {scale:g} is out of range")
        self.scale = scale

    def multiply(self, factor: float) -> None:
        """Every later price x `factor` (a finished drop or pump stays in the path)."""
        self.scale *= factor


__all__ = ["MAX_SCALE", "LivePath"]
