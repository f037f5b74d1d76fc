"""Candles as exact integers: the one shape that market data, price paths and scenarios share.

Units: times in ns since the Unix epoch (UTC, the candle's open time), prices in ticks of the
market the candles were read for, volumes in lots of that market. Arrays are NumPy `int64`,
one row per candle, sorted by time with no duplicates (`Candles.__post_init__` checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Candles:
    """OHLCV candles of one market at one interval, in ticks and lots."""

    symbol: str
    interval_ns: int
    time_ns: Int64Array
    open_ticks: Int64Array
    high_ticks: Int64Array
    low_ticks: Int64Array
    close_ticks: Int64Array
    volume_lots: Int64Array

    def __post_init__(self) -> None:
        columns = (
            self.time_ns,
            self.open_ticks,
            self.high_ticks,
            self.low_ticks,
            self.close_ticks,
            self.volume_lots,
        )
        n = len(self.time_ns)
        for column in columns:
            if column.dtype != np.int64 or column.ndim != 1 or len(column) != n:
                raise ValueError("candle columns must be 1-d int64 arrays of one length")
        if self.interval_ns <= 0:
            raise ValueError(f"interval_ns {self.interval_ns} must be positive")
        if n > 1 and not bool(np.all(np.diff(self.time_ns) > 0)):
            raise ValueError("candle times must be strictly increasing")

    def __len__(self) -> int:
        return len(self.time_ns)

    def between(self, start_ns: int, end_ns: int) -> Candles:
        """The candles that open in [start_ns, end_ns)."""
        lo, hi = np.searchsorted(self.time_ns, [start_ns, end_ns], side="left")
        return Candles(
            self.symbol,
            self.interval_ns,
            self.time_ns[lo:hi],
            self.open_ticks[lo:hi],
            self.high_ticks[lo:hi],
            self.low_ticks[lo:hi],
            self.close_ticks[lo:hi],
            self.volume_lots[lo:hi],
        )
