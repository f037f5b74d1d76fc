"""The history a fresh server shows before it opened: one-minute candles a driver makes, laid
before the server's first minute, kept in the data directory so that a restart (the journal's
replay) lays exactly the same ones.

A driver that has a past (`perpex.live.ScenarioDriver`: a replay's data before its start, or
the synthetic path's kind generated backwards from its start price) offers
`history(symbol, minutes) -> MinuteHistory | None`; a driver without the method (the tests'
`StaticDriver`) has none, and its candles begin at the server's start as before.

Units: prices in ticks, premiums in 1e-8, sizes in lots, quote volumes in tick-lots
(price_ticks x qty_lots), one row per minute, oldest first; the rows carry no time: the last
one is the minute before the server's first minute, whatever the data's own dates (a replay's
candles are shifted onto the server's clock).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]

log = logging.getLogger("perpex.server")

HISTORY_DAYS: Final = 30  # a fresh server's past: 720 1h candles, 43,200 1m candles
HISTORY_MINUTES: Final = HISTORY_DAYS * 24 * 60
PREMIUM_SCALE: Final = 10**8
_FORMAT: Final = 1  # of the files in <data dir>/history


@dataclass(frozen=True, eq=False)
class MinuteHistory:
    """`n` one-minute candles before a market opened, oldest first (all int64).

    `last`, `mark`, `index`, `premium`: (n, 4) open, high, low, close (premium in 1e-8);
    `volume_lots`, `quote`, `taker_volume_lots`, `taker_quote`, `count`: (n,) of the last
    price's candles (a minute with `count` 0 had no trade: it shows flat at the previous
    close, as Binance's)."""

    last: I64
    mark: I64
    index: I64
    premium: I64
    volume_lots: I64
    quote: I64
    taker_volume_lots: I64
    taker_quote: I64
    count: I64

    def __post_init__(self) -> None:
        n = len(self.count)
        for f in fields(self):
            column = getattr(self, f.name)
            if not isinstance(column, np.ndarray) or column.dtype != np.int64:
                raise ValueError(f"{f.name} must be an int64 array")
            shape = (n, 4) if column.ndim == 2 else (n,)
            if column.shape != shape:
                raise ValueError(f"{f.name} has shape {column.shape}, expected {shape}")

    def __len__(self) -> int:
        return len(self.count)

    def tail(self, n: int) -> MinuteHistory:
        """The last `n` minutes."""
        if n >= len(self):
            return self
        start = len(self) - max(n, 0)
        return MinuteHistory(**{f.name: getattr(self, f.name)[start:] for f in fields(self)})

    def arrays(self) -> dict[str, I64]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def premium_e8_array(mark_ticks: I64, index_ticks: I64) -> I64:
    """(mark - index) / index in 1e-8, rounded half to even (`market_history.premium_e8`)."""
    q, r = np.divmod((mark_ticks - index_ticks) * PREMIUM_SCALE, index_ticks)
    up = (2 * r > index_ticks) | ((2 * r == index_ticks) & (q % 2 == 1))
    out: I64 = q + up.astype(np.int64)
    return out


HistorySource = Callable[[str, int], "MinuteHistory | None"]


class BackfillStore:
    """`get(symbol, end_minute)`: the history to lay before `end_minute` (minutes since the
    epoch), read from `directory` when it was made for that same minute, else asked of the
    driver's `history` and written there (atomically) for the next start."""

    def __init__(self, directory: Path, driver: Any, minutes: int = HISTORY_MINUTES) -> None:
        self.directory = directory
        self.minutes = minutes
        self._make: Callable[[str, int], MinuteHistory | None] | None = getattr(
            driver, "history", None
        )

    def _path(self, symbol: str) -> Path:
        return self.directory / f"{symbol}.npz"

    def get(self, symbol: str, end_minute: int) -> MinuteHistory | None:
        path = self._path(symbol)
        kept = self._read(path, end_minute)
        if kept is not None:
            return kept.tail(self.minutes)
        if self._make is None:
            return None
        try:
            made = self._make(symbol, self.minutes)
        except Exception:  # a market without a past still serves: candles from now on
            log.exception("could not make the history of %s", symbol)
            return None
        if made is None or len(made) == 0:
            return None
        self._write(path, made, end_minute)
        return made.tail(self.minutes)

    @staticmethod
    def _read(path: Path, end_minute: int) -> MinuteHistory | None:
        if not path.exists():
            return None
        try:
            with np.load(path) as data:
                meta = data["meta"].tolist()
                if meta != [_FORMAT, end_minute]:  # another server's (the journal was new)
                    return None
                names = [f.name for f in fields(MinuteHistory)]
                return MinuteHistory(**{name: data[name].astype(np.int64) for name in names})
        except (OSError, KeyError, ValueError):
            log.warning("ignoring the unreadable history file %s", path)
            return None

    def _write(self, path: Path, history: MinuteHistory, end_minute: int) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            meta = np.array([_FORMAT, end_minute], dtype=np.int64)
            arrays: dict[str, Any] = {"meta": meta, **history.arrays()}
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, path)
        except OSError:  # the driver re-derives it on the next start: the same candles
            log.exception("could not keep the history in %s", path)


__all__ = [
    "HISTORY_DAYS",
    "HISTORY_MINUTES",
    "BackfillStore",
    "HistorySource",
    "MinuteHistory",
    "premium_e8_array",
]
