"""Shaping a run's series for the charts: the time axis, downsampling, time buckets, intervals.

Everything here is display: inputs are the run's integer arrays (ns, ticks, lots, atoms) or
floats made from them; outputs are float64 arrays sized for a browser (at most a few thousand
points a trace), so a 10,000-step, 2M-event run still gives a small HTML file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

MAX_LINE_POINTS = 5_000
"""Points of one line trace at most (min and max per bucket, so wicks stay)."""

MAX_BARS = 2_000
"""Time buckets of one bar chart at most."""

NS_PER_MINUTE = 60_000_000_000
_NICE_BUCKET_MINUTES = (1, 2, 5, 10, 15, 30, 60, 120, 240, 360, 720, 1440, 2880, 10080)

# A run that starts before 2000-01-01 is a synthetic path counted from 0, not a real date:
# its axis shows the time since the start instead of a 1970 calendar.
_REAL_DATE_FROM_NS = 946_684_800 * 1_000_000_000


@dataclass(frozen=True)
class TimeAxis:
    """How times in ns become x values: UTC dates for a replay of real data, minutes or hours
    since the start for a synthetic path."""

    start_ns: int
    end_ns: int

    @property
    def is_date(self) -> bool:
        return self.start_ns >= _REAL_DATE_FROM_NS

    @property
    def _unit_ns(self) -> int:
        return (
            NS_PER_MINUTE
            if self.end_ns - self.start_ns <= 2 * 1440 * NS_PER_MINUTE
            else (60 * NS_PER_MINUTE)
        )

    def x(self, time_ns: npt.NDArray[Any]) -> FloatArray:
        times = np.asarray(time_ns, dtype=np.int64)
        if self.is_date:
            # Plotly reads a number on a date axis as milliseconds since the epoch: 8 bytes a
            # point in the file instead of a 24-character date string.
            return (times // 1_000_000).astype(np.float64)
        return (times - self.start_ns).astype(np.float64) / self._unit_ns

    def layout(self) -> dict[str, Any]:
        if self.is_date:
            return {
                "type": "date",
                "title": {"text": "time (UTC)"},
                "hoverformat": "%Y-%m-%d %H:%M:%S",
            }
        unit = "minutes" if self._unit_ns == NS_PER_MINUTE else "hours"
        return {"type": "linear", "title": {"text": f"{unit} since the start"}}

    def label(self, time_ns: int) -> str:
        """One time in words, for the captions."""
        if self.is_date:
            return datetime.fromtimestamp(time_ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        minutes = (time_ns - self.start_ns) / NS_PER_MINUTE
        return f"minute {minutes:,.0f}" if minutes < 600 else f"hour {minutes / 60:,.1f}"


def minmax_indices(values: npt.NDArray[Any], max_points: int = MAX_LINE_POINTS) -> IntArray:
    """Indices of `values` to draw: all of them when few, otherwise the first and last and, in
    each of about max_points/2 equal buckets, the minimum and the maximum (in order), so spikes
    and wicks survive the thinning. NaN (a gap) is never picked over a number."""
    n = len(values)
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    per_bucket = -(-n // max(1, max_points // 2))
    n_buckets = -(-n // per_bucket)
    data = np.asarray(values, dtype=np.float64)
    # Padding repeats the last value: argmin/argmax return the first occurrence, a real row.
    padded = np.concatenate([data, np.full(n_buckets * per_bucket - n, data[-1])])
    grid = padded.reshape(n_buckets, per_bucket)
    nan = np.isnan(grid)
    lows = np.argmin(np.where(nan, np.inf, grid), axis=1)
    highs = np.argmax(np.where(nan, -np.inf, grid), axis=1)
    base = np.arange(n_buckets, dtype=np.int64) * per_bucket
    picked = np.concatenate([[0, n - 1], base + lows, base + highs])
    return np.unique(picked[picked < n]).astype(np.int64)


def bucket_ns_for(span_ns: int, min_bucket_ns: int, max_buckets: int = MAX_BARS) -> int:
    """The smallest round bucket (1 min, 2, 5, 10, 15, 30 min, 1 h, ..., 1 week, then whole
    weeks) at least `min_bucket_ns` long that cuts `span_ns` into at most `max_buckets`."""
    for minutes in _NICE_BUCKET_MINUTES:
        bucket_ns = minutes * NS_PER_MINUTE
        if bucket_ns >= min_bucket_ns and span_ns // bucket_ns < max_buckets:
            return bucket_ns
    week_ns = _NICE_BUCKET_MINUTES[-1] * NS_PER_MINUTE
    weeks = max(-(-span_ns // (week_ns * max_buckets)), -(-min_bucket_ns // week_ns), 1)
    return int(weeks * week_ns)


def bucket_words(bucket_ns: int) -> str:
    minutes = bucket_ns // NS_PER_MINUTE
    if minutes < 60:
        return "minute" if minutes == 1 else f"{minutes} minutes"
    if minutes < 1440:
        return "hour" if minutes == 60 else f"{minutes // 60} hours"
    return "day" if minutes == 1440 else f"{minutes // 1440} days"


def bucket_sums(
    time_ns: IntArray, weights: FloatArray, start_ns: int, end_ns: int, bucket_ns: int
) -> tuple[IntArray, FloatArray]:
    """Sums of `weights` per time bucket (floor of time to the bucket, on the epoch grid), over
    every bucket from start to end: (bucket start times in ns, sums)."""
    first_ns = start_ns // bucket_ns * bucket_ns
    n_buckets = max(1, (max(end_ns, start_ns) - first_ns) // bucket_ns + 1)
    times = np.asarray(time_ns, dtype=np.int64)
    index = np.clip((times - first_ns) // bucket_ns, 0, n_buckets - 1)
    sums = np.bincount(index, weights=weights, minlength=n_buckets).astype(np.float64)
    starts = first_ns + bucket_ns * np.arange(n_buckets, dtype=np.int64)
    return starts, sums


def true_intervals(
    mask: npt.NDArray[np.bool_], time_ns: IntArray, step_ns: int, max_intervals: int = 200
) -> list[tuple[int, int]]:
    """The time spans where `mask` holds, each step lasting until the next (the last one
    `step_ns`); spans closer than the gap that keeps them under `max_intervals` are merged."""
    flags = np.asarray(mask, dtype=bool)
    if not flags.any():
        return []
    ends_ns = np.append(time_ns[1:], time_ns[-1] + step_ns)
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts = np.flatnonzero(edges == 1)
    stops = np.flatnonzero(edges == -1) - 1
    spans = [(int(time_ns[a]), int(ends_ns[b])) for a, b in zip(starts, stops, strict=True)]
    if len(spans) <= max_intervals:
        return spans
    gaps = sorted(spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1))
    min_gap = gaps[len(spans) - max_intervals - 1]  # merging every gap up to it is enough
    merged = [spans[0]]
    for start, stop in spans[1:]:
        if start - merged[-1][1] <= min_gap:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((start, stop))
    return merged


def drawdown(equity: FloatArray) -> FloatArray:
    """Drawdown from the running peak, as a fraction (0 at a peak, -0.25 a quarter below)."""
    peak = np.maximum.accumulate(equity)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(peak > 0, equity / peak - 1.0, 0.0)


def compact(value: float) -> str:
    """A money or size amount in words: 12,345 / 56.7M / 1.23B (display only)."""
    size = abs(value)
    if size >= 1e9:
        return f"{value / 1e9:,.2f}B"
    if size >= 1e6:
        return f"{value / 1e6:,.1f}M"
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 1:
        return f"{value:,.2f}"
    return f"{value:.4g}"


def amount(value: float) -> str:
    """A balance in full, so that a small change shows: 1,000,000 / 999,850 / 12.50 (compact
    from a billion on)."""
    size = abs(value)
    if size >= 1e9:
        return compact(value)
    return f"{value:,.0f}" if size >= 100 else f"{value:,.2f}"


__all__ = [
    "MAX_BARS",
    "MAX_LINE_POINTS",
    "NS_PER_MINUTE",
    "TimeAxis",
    "amount",
    "bucket_ns_for",
    "bucket_sums",
    "bucket_words",
    "compact",
    "drawdown",
    "minmax_indices",
    "true_intervals",
]
