"""The history a fresh server shows before it opened: one-minute candles a driver makes, laid
before the server's first minute, kept in the data directory so that a restart (the journal's
replay) lays exactly the same ones.

A driver that has a past (`perpex.live.ScenarioDriver`: a replay's data before its start, or
the synthetic path's kind generated backwards from its start price) offers
`history(symbol, minutes) -> MinuteHistory | None`; a driver without the method (the tests'
`StaticDriver`) has none, and its candles begin at the server's start as before.

The history's funding settlements (`FundingRows`) come with it, so that GET
/fapi/v1/fundingRate has a past too: a replay of data with Binance's funding series brings the
real settlements before its start (`perpex.live.history`); any other history (a synthetic path,
a replay without a series, a driver that brings none) gets them computed here
(`computed_funding`) at the server clock's funding times of the market's `FundingConfig` (the
one the driver's `exchange_options` gives the engine), from the history's premium minutes with
the engine's own rule (`perpex.core.funding.FundingState`: average premium, interest, clamp,
cap and floor). A history's premium is 0 (mark = index at rest), so every computed rate is the
interest rate, 0.01 % per 8 h: what Binance shows on calm days. The mark of a settlement is the
close of the history's mark candle of the minute that ends at it (the mark that held when it
came due). A settlement belongs to the history when that minute does: (end - n minutes, end],
90 of them in 30 days of 8-hour funding, 720 of hourly funding.

Units: prices in ticks, premiums and rates in 1e-8, sizes in lots, quote volumes in tick-lots
(price_ticks x qty_lots), one row per minute, oldest first; the rows carry no time: the last
one is the minute before the server's first minute, whatever the data's own dates (a replay's
candles are shifted onto the server's clock). Settlements carry their time as an offset in ns
from the history's end (<= 0), the start of the server's first minute.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from perpex.core.funding import FundingConfig, FundingState
from perpex.server.candles import (
    CLOSE,
    COUNT,
    FIRST_ID,
    I64,
    LAST_ID,
    LAST_LAYOUT,
    NO_FIRST_ID,
    NO_LAST_ID,
    NS_PER_MINUTE,
    OPEN,
    PRICE_LAYOUT,
    QUOTE,
    TAKER_QUOTE,
    TAKER_VOLUME,
    VOLUME,
)

log = logging.getLogger("perpex.server")

HISTORY_DAYS: Final = 30  # a fresh server's past: 720 1h candles, 43,200 1m candles
HISTORY_MINUTES: Final = HISTORY_DAYS * 24 * 60
PREMIUM_SCALE: Final = 10**8
_FORMAT: Final = 2  # of the files in <data dir>/history (2: with the funding settlements)
_FUNDING_KEYS: Final = ("offset_ns", "rate_e8", "rate_divisor", "mark_ticks")


@dataclass(frozen=True, eq=False)
class FundingRows:
    """Funding settlements before a history's end, oldest first (all (k,) int64).

    `offset_ns`: the settlement's time minus the history's end (<= 0; the server lays it at
    its first minute's start + offset); `rate_e8`: F per funding interval; `rate_divisor`:
    settlements per interval (each charged F / divisor); `mark_ticks`: the mark it was paid
    at. The rows of `MarketHistory.funding`, but for the time."""

    offset_ns: I64
    rate_e8: I64
    rate_divisor: I64
    mark_ticks: I64

    def __post_init__(self) -> None:
        n = len(self.offset_ns)
        for name in _FUNDING_KEYS:
            column = getattr(self, name)
            if not isinstance(column, np.ndarray) or column.dtype != np.int64:
                raise ValueError(f"funding {name} must be an int64 array")
            if column.shape != (n,):
                raise ValueError(f"funding {name} has shape {column.shape}, expected ({n},)")
        if n and (self.offset_ns[-1] > 0 or (np.diff(self.offset_ns) <= 0).any()):
            raise ValueError("funding offsets must increase and end at or before 0")
        if (self.rate_divisor <= 0).any():
            raise ValueError("funding rate divisors must be positive")

    def __len__(self) -> int:
        return len(self.offset_ns)

    @classmethod
    def at_minutes(
        cls, history: MinuteHistory, offset_ns: I64, rate_e8: I64, rate_divisor: I64
    ) -> FundingRows:
        """The settlements at `offset_ns` that fall in `history` ((end - n minutes, end]),
        each at the close of the history's mark candle of the minute that ends at it."""
        row = len(history) + (offset_ns - 1) // NS_PER_MINUTE  # the minute ending at it
        inside = (row >= 0) & (offset_ns <= 0)
        row = row[inside]
        return cls(
            offset_ns=offset_ns[inside].astype(np.int64),
            rate_e8=rate_e8[inside].astype(np.int64),
            rate_divisor=rate_divisor[inside].astype(np.int64),
            mark_ticks=history.mark[row, 3].astype(np.int64),
        )

    def tail(self, minutes: int) -> FundingRows:
        """The settlements of the last `minutes` minutes: offsets in (-minutes, 0]."""
        keep = self.offset_ns > -max(minutes, 0) * NS_PER_MINUTE
        if keep.all():
            return self
        return FundingRows(**{name: getattr(self, name)[keep] for name in _FUNDING_KEYS})

    def arrays(self) -> dict[str, I64]:
        return {name: getattr(self, name) for name in _FUNDING_KEYS}

    def rows(self, end_ns: int) -> list[tuple[int, int, int, int]]:
        """(time ns, rate e8, divisor, mark ticks) of each, at `end_ns` + its offset: the rows
        of `MarketHistory.funding`."""
        return [
            (end_ns + int(t), int(r), int(d), int(m))
            for t, r, d, m in zip(
                self.offset_ns, self.rate_e8, self.rate_divisor, self.mark_ticks, strict=True
            )
        ]


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
    funding: FundingRows | None = None  # None: none of its own (the server computes them)

    def __post_init__(self) -> None:
        n = len(self.count)
        for name in _COLUMNS:
            column = getattr(self, name)
            if not isinstance(column, np.ndarray) or column.dtype != np.int64:
                raise ValueError(f"{name} must be an int64 array")
            shape = (n, 4) if column.ndim == 2 else (n,)
            if column.shape != shape:
                raise ValueError(f"{name} has shape {column.shape}, expected {shape}")

    def __len__(self) -> int:
        return len(self.count)

    def tail(self, n: int) -> MinuteHistory:
        """The last `n` minutes (and their settlements)."""
        if n >= len(self):
            return self
        start = len(self) - max(n, 0)
        funding = None if self.funding is None else self.funding.tail(n)
        return MinuteHistory(
            **{name: getattr(self, name)[start:] for name in _COLUMNS}, funding=funding
        )

    def arrays(self) -> dict[str, I64]:
        """The candle columns by name (the settlements are `funding`'s)."""
        return {name: getattr(self, name) for name in _COLUMNS}


_COLUMNS: Final = tuple(f.name for f in fields(MinuteHistory) if f.name != "funding")


def premium_e8_array(mark_ticks: I64, index_ticks: I64) -> I64:
    """(mark - index) / index in 1e-8, rounded half to even (`market_history.premium_e8`)."""
    q, r = np.divmod((mark_ticks - index_ticks) * PREMIUM_SCALE, index_ticks)
    up = (2 * r > index_ticks) | ((2 * r == index_ticks) & (q % 2 == 1))
    out: I64 = q + up.astype(np.int64)
    return out


def computed_funding(history: MinuteHistory, end_ns: int, config: FundingConfig) -> FundingRows:
    """The settlements the engine would have made over `history` laid before `end_ns` (a
    minute's start): at each funding time of `config` in (end - n minutes, end], F from the
    premium of its period by `FundingState` itself. A minute's premium stands for the samples
    of its grid points: its candle's (open + high + low + close) / 4, truncated toward zero
    (as the engine truncates P̄). With the premium 0 of a history at rest, F is the interest
    rate (0.01 % per 8 h by default)."""
    n = len(history)
    empty = np.zeros(0, dtype=np.int64)
    if n == 0:
        return FundingRows(empty, empty, empty, empty)
    start_ns = end_ns - n * NS_PER_MINUTE
    # Only `on_premium` is used: the impact notional and the tick-lot value never enter.
    state = FundingState(config, impact_notional_atoms=1, atoms_per_tick_lot=1, start_ns=start_ns)
    sums = history.premium.sum(axis=1)
    minute_e8 = np.sign(sums) * (np.abs(sums) // 4)  # truncated toward zero
    # Runs of equal premium: one call per run and per settlement, not per minute.
    run_last = np.append(np.flatnonzero(np.diff(minute_e8)), n - 1)
    times: list[int] = []
    rates: list[int] = []
    divisors: list[int] = []
    for k in run_last.tolist():
        premium_e8 = int(minute_e8[k])
        until_ns = start_ns + (k + 1) * NS_PER_MINUTE
        while state.next_funding_ns <= until_ns:
            funding_ns = state.next_funding_ns
            state.on_premium(funding_ns, premium_e8)
            settlement = state.settle_rate(funding_ns)
            times.append(funding_ns - end_ns)
            rates.append(settlement.rate_e8)
            divisors.append(settlement.rate_divisor)
        state.on_premium(until_ns, premium_e8)
    return FundingRows.at_minutes(
        history,
        np.array(times, dtype=np.int64),
        np.array(rates, dtype=np.int64),
        np.array(divisors, dtype=np.int64),
    )


def funding_config(options: Mapping[str, Any], symbol: str) -> FundingConfig:
    """The `FundingConfig` an `Exchange(**options)` gives `symbol`'s market (the default when
    the options name none, as the engine's)."""
    funding = options.get("funding")
    if isinstance(funding, FundingConfig):
        return funding
    if isinstance(funding, Mapping):
        config = funding.get(symbol)
        if isinstance(config, FundingConfig):
            return config
    return FundingConfig()


HistorySource = Callable[[str, int], "MinuteHistory | None"]


PRICE_UPDATES_PER_MINUTE: Final = 60  # the count of a history minute of a price series


def last_rows(history: MinuteHistory) -> I64:
    """The history's last-price candles in the live series' layout (`candles.LAST_LAYOUT`):
    a minute without trades is flat at the close before it, and no row has trade ids (the
    engine's begin at the server's start)."""
    n = len(history)
    count = history.count
    traded = count > 0
    last_traded = np.maximum.accumulate(np.where(traded, np.arange(n), -1))
    closes = history.last[:, 3]
    carried_close = np.where(last_traded >= 0, closes[np.maximum(last_traded, 0)], closes)
    ohlc = np.where(traded[:, None], history.last, carried_close[:, None])
    rows: I64 = np.empty((n, len(LAST_LAYOUT)), dtype=np.int64)
    rows[:, OPEN : CLOSE + 1] = ohlc
    rows[:, COUNT] = count
    rows[:, VOLUME] = np.where(traded, history.volume_lots, 0)
    rows[:, QUOTE] = np.where(traded, history.quote, 0)
    rows[:, TAKER_VOLUME] = np.where(traded, history.taker_volume_lots, 0)
    rows[:, TAKER_QUOTE] = np.where(traded, history.taker_quote, 0)
    rows[:, FIRST_ID] = NO_FIRST_ID
    rows[:, LAST_ID] = NO_LAST_ID
    return rows


def price_rows(ohlc: I64) -> I64:
    """A price series' (mark, index, premium) history candles in `candles.PRICE_LAYOUT`."""
    rows: I64 = np.zeros((len(ohlc), len(PRICE_LAYOUT)), dtype=np.int64)
    rows[:, OPEN : CLOSE + 1] = ohlc
    rows[:, COUNT] = PRICE_UPDATES_PER_MINUTE
    return rows


class BackfillStore:
    """`get(symbol, end_minute)`: the history to lay before `end_minute` (minutes since the
    epoch), read from `directory` when it was made for that same minute, else asked of the
    driver's `history` (its settlements computed when it brings none, `computed_funding`
    with the driver's `exchange_options`' funding config) and written there (atomically) for
    the next start."""

    def __init__(self, directory: Path, driver: Any, minutes: int = HISTORY_MINUTES) -> None:
        self.directory = directory
        self.minutes = minutes
        self._make: Callable[[str, int], MinuteHistory | None] | None = getattr(
            driver, "history", None
        )
        options = getattr(driver, "exchange_options", None)
        self._options: Mapping[str, Any] = options() if options is not None else {}

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
        if made.funding is None:
            config = funding_config(self._options, symbol)
            funding = computed_funding(made, end_minute * NS_PER_MINUTE, config)
            made = replace(made, funding=funding)
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
                funding = FundingRows(
                    **{key: data[f"funding_{key}"].astype(np.int64) for key in _FUNDING_KEYS}
                )
                columns = {name: data[name].astype(np.int64) for name in _COLUMNS}
                return MinuteHistory(**columns, funding=funding)
        except (OSError, KeyError, ValueError):
            log.warning("ignoring the unreadable history file %s", path)
            return None

    def _write(self, path: Path, history: MinuteHistory, end_minute: int) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            meta = np.array([_FORMAT, end_minute], dtype=np.int64)
            arrays: dict[str, Any] = {"meta": meta, **history.arrays()}
            if history.funding is not None:
                for key, column in history.funding.arrays().items():
                    arrays[f"funding_{key}"] = column
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, path)
        except OSError:  # the driver re-derives it on the next start: the same candles
            log.exception("could not keep the history in %s", path)


__all__ = [
    "HISTORY_DAYS",
    "HISTORY_MINUTES",
    "NS_PER_MINUTE",
    "BackfillStore",
    "FundingRows",
    "HistorySource",
    "MinuteHistory",
    "computed_funding",
    "funding_config",
    "last_rows",
    "premium_e8_array",
    "price_rows",
]
