"""The index price from several spot sources, and the mark price built on it (MECHANICS.md §1.6).

Units: prices in ticks, time in ns of the virtual clock, source weights as plain positive
integers (ppm or any other scale: only their ratios matter), funding rates in 1e-8 (Binance
publishes them with eight decimals, "0.00010000" = 10_000). Internally the basis between the
book mid and the index is kept in half ticks (bid + ask − 2 × index) so that a mid between two
ticks is exact; every candidate mark is an exact rational, and the one rounding to whole ticks
happens last.

Rounding: the index and the mark round half to even (banker's rounding) to the tick, so no side
is favoured on average; the helper is built on `perpex.core.units.div(..., FLOOR)`. A mark is
never below one tick.

Pure and deterministic: no clock is read; `MarkState` is fed samples on the virtual clock and
keeps at most `window_samples` of them.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from perpex.core.units import PPM, Rounding, div

NS_PER_SECOND: Final = 1_000_000_000
FUNDING_RATE_SCALE: Final = 100_000_000  # funding rates are integers in units of 1e-8
DEFAULT_MAX_DEVIATION_PPM: Final = 50_000  # 5 % (BN-MARK "deviates more than 5 %")
DEFAULT_SAMPLE_INTERVAL_NS: Final = 5 * NS_PER_SECOND  # one basis sample every 5 s
DEFAULT_WINDOW_SAMPLES: Final = 60  # 60 samples x 5 s = the 5-minute moving average
MAX_WINDOW_SAMPLES: Final = 100_000  # bounded memory for any configuration
MAX_SOURCES: Final = 64


def div_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, ties to the even one."""
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    q = div(numerator, denominator, Rounding.FLOOR)
    twice_rest = 2 * (numerator - q * denominator)  # in [0, 2 x denominator)
    if twice_rest > denominator or (twice_rest == denominator and q % 2 == 1):
        return q + 1
    return q


# -- index ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexConfig:
    """The sources of one symbol's index and how they are protected (BN-MARK).

    `sources` maps a source name to its weight (a positive int; Binance weights by relative
    volume). Quotes from names not listed here are ignored. A quote older than
    `stale_after_ns` (strictly) is dropped.
    """

    sources: Mapping[str, int]
    stale_after_ns: int = 60 * NS_PER_SECOND
    max_deviation_ppm: int = DEFAULT_MAX_DEVIATION_PPM

    def __post_init__(self) -> None:
        if not self.sources:
            raise ValueError("an index needs at least one source")
        if len(self.sources) > MAX_SOURCES:
            raise ValueError(f"at most {MAX_SOURCES} index sources")
        for name, weight in self.sources.items():
            if not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0:
                raise ValueError(f"source {name!r}: weight must be a positive int, got {weight!r}")
        if not 0 < self.max_deviation_ppm <= PPM:
            raise ValueError("max_deviation_ppm must be in (0, 1e6]")
        if self.stale_after_ns < 0:
            raise ValueError("stale_after_ns must be >= 0")


# Six spot venues, equal weights (Binance weights by relative volume, which moves daily; a
# fixed equal weighting keeps replays reproducible). `Exchange(index_sources=...)` overrides.
DEFAULT_INDEX_SOURCES: Final = ("binance", "okx", "bybit", "coinbase", "kraken", "bitget")
DEFAULT_INDEX_CONFIG: Final = IndexConfig(dict.fromkeys(DEFAULT_INDEX_SOURCES, 1))


class IndexMethod(enum.Enum):
    WEIGHTED = "weighted"  # weighted average of the sources within the band of the median
    MEDIAN = "median"  # more than one source deviated: the plain median of all fresh sources


@dataclass(frozen=True, slots=True)
class IndexResult:
    index_ticks: int
    method: IndexMethod
    used: tuple[str, ...]  # sources that carried weight (all fresh ones for MEDIAN)
    outliers: tuple[str, ...]  # fresh sources more than max_deviation from the median
    stale: tuple[str, ...]  # configured sources dropped as stale or missing


def _twice_median(prices_sorted: list[int]) -> int:
    """2 x the median, exact (the median of an even count is the mean of the middle two)."""
    n = len(prices_sorted)
    mid = n // 2
    if n % 2:
        return 2 * prices_sorted[mid]
    return prices_sorted[mid - 1] + prices_sorted[mid]


def compute_index_detail(
    quotes: Mapping[str, tuple[int, int]], now_ns: int, config: IndexConfig
) -> IndexResult | None:
    """The index and how it was formed; None when no configured source is fresh.

    quotes: name -> (price_ticks, updated_ns). Rules (BN-MARK):
    1. drop sources that are missing or stale (now − updated > stale_after_ns);
    2. median m of the fresh prices (even count: mean of the middle two, kept exact);
    3. a source with |p − m| > max_deviation × m is an outlier (compared exactly);
    4. more than one outlier: the index is m (rounded half to even); otherwise the weighted
       average of the non-outliers, Σ w·p / Σ w, rounded half to even.
    """
    fresh: list[tuple[str, int, int]] = []  # (name, price, weight), in name order
    stale: list[str] = []
    for name in sorted(config.sources):
        quote = quotes.get(name)
        if quote is None:
            stale.append(name)
            continue
        price_ticks, updated_ns = quote
        if price_ticks <= 0:
            raise ValueError(f"source {name!r}: price {price_ticks} ticks is not positive")
        if now_ns - updated_ns > config.stale_after_ns:
            stale.append(name)
            continue
        fresh.append((name, price_ticks, config.sources[name]))
    if not fresh:
        return None
    twice_median = _twice_median(sorted(p for _, p, _ in fresh))
    # |p − M2/2| > dev/1e6 × M2/2  <=>  |2p − M2| × 1e6 > dev × M2 (all integers, exact)
    outliers = tuple(
        name
        for name, p, _ in fresh
        if abs(2 * p - twice_median) * PPM > config.max_deviation_ppm * twice_median
    )
    if len(outliers) > 1:
        return IndexResult(
            div_half_even(twice_median, 2),
            IndexMethod.MEDIAN,
            tuple(name for name, _, _ in fresh),
            outliers,
            tuple(stale),
        )
    kept = [(name, p, w) for name, p, w in fresh if name not in outliers]
    weighted_sum = sum(p * w for _, p, w in kept)
    total_weight = sum(w for _, _, w in kept)
    return IndexResult(
        div_half_even(weighted_sum, total_weight),
        IndexMethod.WEIGHTED,
        tuple(name for name, _, _ in kept),
        outliers,
        tuple(stale),
    )


def compute_index(
    quotes: Mapping[str, tuple[int, int]], now_ns: int, config: IndexConfig
) -> int | None:
    """The index price in ticks (see `compute_index_detail`); None when every source is stale."""
    result = compute_index_detail(quotes, now_ns, config)
    return None if result is None else result.index_ticks


# -- mark -----------------------------------------------------------------------------------


class MarkMode(enum.Enum):
    BINANCE = "binance"  # median(Price 1, Price 2, last price), MECHANICS.md §1.6
    INDEX = "index"  # mark = index (handy in tests)
    LAST = "last"  # mark = last traded price (a debug option: shows what the median prevents)


@dataclass(frozen=True, slots=True)
class MarkConfig:
    mode: MarkMode = MarkMode.BINANCE
    sample_interval_ns: int = DEFAULT_SAMPLE_INTERVAL_NS
    window_samples: int = DEFAULT_WINDOW_SAMPLES

    def __post_init__(self) -> None:
        if self.sample_interval_ns <= 0:
            raise ValueError("sample_interval_ns must be positive")
        if not 1 <= self.window_samples <= MAX_WINDOW_SAMPLES:
            raise ValueError(f"window_samples must be in [1, {MAX_WINDOW_SAMPLES}]")


# A rational price in ticks: (numerator, denominator > 0).
_Ratio = tuple[int, int]


def _median_of_three(a: _Ratio, b: _Ratio, c: _Ratio) -> _Ratio:
    def less(x: _Ratio, y: _Ratio) -> bool:
        return x[0] * y[1] < y[0] * x[1]  # denominators are positive

    if less(b, a):
        a, b = b, a
    if less(c, b):
        b = c
        if less(b, a):
            b = a
    return b


def compute_mark(
    mode: MarkMode,
    *,
    index_ticks: int | None,
    last_price_ticks: int | None,
    basis_sum_half_ticks: int = 0,
    basis_count: int = 0,
    funding_rate_e8: int = 0,
    time_to_funding_ns: int = 0,
    funding_interval_ns: int = 8 * 3600 * NS_PER_SECOND,
) -> int | None:
    """The mark price in ticks (None without an index; LAST falls back to the index).

    BINANCE (MECHANICS.md §1.6): median of
      Price 1 = index × (1 + funding rate × time to funding / funding interval),
      Price 2 = index + moving average of the basis (sum / count; 0 without samples),
      the last traded price (the index when nothing has traded yet),
    computed exactly and rounded half to even once; never below 1 tick. The time to funding is
    clamped to [0, interval].
    """
    if index_ticks is None:
        return None
    if index_ticks <= 0:
        raise ValueError(f"index {index_ticks} ticks is not positive")
    if last_price_ticks is not None and last_price_ticks <= 0:
        raise ValueError(f"last price {last_price_ticks} ticks is not positive")
    if mode is MarkMode.INDEX:
        return index_ticks
    if mode is MarkMode.LAST:
        return index_ticks if last_price_ticks is None else last_price_ticks
    if funding_interval_ns <= 0:
        raise ValueError("funding_interval_ns must be positive")
    if basis_count < 0:
        raise ValueError("basis_count must be >= 0")
    to_funding_ns = min(max(time_to_funding_ns, 0), funding_interval_ns)
    scale = FUNDING_RATE_SCALE * funding_interval_ns
    price1 = (index_ticks * (scale + funding_rate_e8 * to_funding_ns), scale)
    if basis_count:
        price2 = (2 * basis_count * index_ticks + basis_sum_half_ticks, 2 * basis_count)
    else:
        price2 = (index_ticks, 1)
    last = (index_ticks if last_price_ticks is None else last_price_ticks, 1)
    numerator, denominator = _median_of_three(price1, price2, last)
    return max(1, div_half_even(numerator, denominator))


class MarkState:
    """The moving-average basis of one symbol, fed on the virtual clock, and its mark.

    Samples are due on a fixed grid: every multiple of `sample_interval_ns` since time 0.
    `on_sample(now, ...)` records one sample for each grid point in (previous call, now] (the
    first call records one), all with the values passed, so call it *before* applying a command
    that changes the book or the index: the values passed are then the ones that held over the
    whole gap. A grid point where the book has no two-sided quote (a side missing, or
    bid >= ask) or there is no index yet records nothing. The moving average covers the samples
    of the last `window_samples` grid points (5 minutes by default), so a skipped point
    shortens the average instead of stretching it back in time; with no sample in the window
    the basis is 0 and Price 2 is the index. Memory: at most `window_samples` samples.
    """

    __slots__ = ("_last_point", "_samples", "config")

    def __init__(self, config: MarkConfig | None = None) -> None:
        self.config = config or MarkConfig()
        # (grid point number, basis in half ticks = bid + ask − 2 × index)
        self._samples: deque[tuple[int, int]] = deque(maxlen=self.config.window_samples)
        self._last_point: int | None = None

    def on_sample(
        self,
        now_ns: int,
        best_bid_ticks: int | None,
        best_ask_ticks: int | None,
        index_ticks: int | None,
    ) -> None:
        point = now_ns // self.config.sample_interval_ns
        if self._last_point is None:
            due = 1
        else:
            if point < self._last_point:
                raise ValueError(f"the clock went backwards: {now_ns} ns")
            due = point - self._last_point
        if due == 0:
            return
        self._last_point = point
        two_sided = (
            best_bid_ticks is not None
            and best_ask_ticks is not None
            and 0 < best_bid_ticks < best_ask_ticks
        )
        if not two_sided or index_ticks is None or index_ticks <= 0:
            return
        assert best_bid_ticks is not None and best_ask_ticks is not None
        basis_half_ticks = best_bid_ticks + best_ask_ticks - 2 * index_ticks
        window = self.config.window_samples
        for p in range(point - min(due, window) + 1, point + 1):
            self._samples.append((p, basis_half_ticks))

    def basis(self, now_ns: int) -> tuple[int, int]:
        """(sum of the basis samples in half ticks, their count) over the window ending now."""
        point = now_ns // self.config.sample_interval_ns
        oldest = point - self.config.window_samples + 1
        total = count = 0
        for p, basis_half_ticks in self._samples:
            if p >= oldest:
                total += basis_half_ticks
                count += 1
        return total, count

    def mark(
        self,
        now_ns: int,
        index_ticks: int | None,
        last_price_ticks: int | None,
        funding_rate_e8: int = 0,
        next_funding_ns: int = 0,
        funding_interval_ns: int = 8 * 3600 * NS_PER_SECOND,
    ) -> int | None:
        """The mark now, per the configured mode (see `compute_mark`)."""
        basis_sum, basis_count = self.basis(now_ns)
        return compute_mark(
            self.config.mode,
            index_ticks=index_ticks,
            last_price_ticks=last_price_ticks,
            basis_sum_half_ticks=basis_sum,
            basis_count=basis_count,
            funding_rate_e8=funding_rate_e8,
            time_to_funding_ns=next_funding_ns - now_ns,
            funding_interval_ns=funding_interval_ns,
        )

    # -- snapshot (the samples shape future marks, so they are part of the state) -----------
    def record(self) -> list[Any]:
        return [self._last_point, [list(s) for s in self._samples]]

    @classmethod
    def from_record(cls, record: list[Any], config: MarkConfig | None = None) -> MarkState:
        state = cls(config)
        last_point, samples = record
        state._last_point = last_point
        items: Iterable[tuple[int, int]] = ((int(p), int(b)) for p, b in samples)
        state._samples.extend(items)
        return state


__all__ = [
    "DEFAULT_INDEX_CONFIG",
    "DEFAULT_INDEX_SOURCES",
    "FUNDING_RATE_SCALE",
    "IndexConfig",
    "IndexMethod",
    "IndexResult",
    "MarkConfig",
    "MarkMode",
    "MarkState",
    "compute_index",
    "compute_index_detail",
    "compute_mark",
    "div_half_even",
]
