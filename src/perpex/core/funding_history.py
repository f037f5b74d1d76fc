"""Realised funding rates by settlement time (`FundingSchedule`), for replaying history, and
the UTC formatting that funding messages use.

Units: time in ns since the Unix epoch (UTC), rates in 1e-8 (`FUNDING_RATE_SCALE`). The files
the rates come from are read at the edge (`perpex.history`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Final

from perpex.core.funding_config import MAX_RATE_E8, is_int
from perpex.core.oracle import NS_PER_SECOND
from perpex.core.units import Rounding, div

MAX_SCHEDULE_RATES: Final = 250_000  # > 28 years of hourly funding


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_MONTH_DAYS: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def format_utc(time_ns: int) -> str:
    """'2021-01-01T08:00:00Z' for a whole second, with the ns appended otherwise.

    Plain calendar arithmetic (the core may not import datetime, the clock's module); only
    error messages use it, so stepping a year at a time from 1970 is fast enough.
    """
    # FLOOR: times before 1970 belong to the day that started before them.
    days = div(time_ns, 86_400 * NS_PER_SECOND, Rounding.FLOOR)
    rest_ns = time_ns - days * 86_400 * NS_PER_SECOND
    year = 1970
    while days < 0:
        year -= 1
        days += 366 if _is_leap(year) else 365
    while days >= (366 if _is_leap(year) else 365):
        days -= 366 if _is_leap(year) else 365
        year += 1
    month = 1
    for month_days in _MONTH_DAYS:
        length = month_days + (1 if month == 2 and _is_leap(year) else 0)
        if days < length:
            break
        days -= length
        month += 1
    # FLOOR on a non-negative time of day: whole hours, minutes and seconds elapsed.
    day_seconds = div(rest_ns, NS_PER_SECOND, Rounding.FLOOR)
    ns = rest_ns - day_seconds * NS_PER_SECOND
    hours = div(day_seconds, 3_600, Rounding.FLOOR)
    minutes = div(day_seconds - hours * 3_600, 60, Rounding.FLOOR)
    seconds = day_seconds - hours * 3_600 - minutes * 60
    text = f"{year:04d}-{month:02d}-{days + 1:02d}T{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{text}.{ns:09d}Z" if ns else f"{text}Z"


class FundingRateMissing(LookupError):
    """A settlement time the history does not hold (replay needs an exact match)."""


class FundingSchedule:
    """Realised funding rates by settlement time, for replaying history (see perpex.history).

    `rate_at(time_ns)` needs an exact match: a time the history does not hold raises
    `FundingRateMissing`, naming the time and the covered range, rather than guessing.
    """

    __slots__ = ("_rates", "_times")

    def __init__(self, history: Iterable[tuple[int, int]]) -> None:
        times: list[int] = []
        rates: list[int] = []
        for time_ns, rate_e8 in history:
            if len(times) >= MAX_SCHEDULE_RATES:
                raise ValueError(f"a funding history holds at most {MAX_SCHEDULE_RATES} rates")
            if not is_int(time_ns) or not is_int(rate_e8):
                raise ValueError(f"funding history rows are (int, int), got {time_ns!r}")
            if times and time_ns <= times[-1]:
                raise ValueError(
                    f"funding history out of order at {format_utc(time_ns)} "
                    f"(after {format_utc(times[-1])})"
                )
            if abs(rate_e8) > MAX_RATE_E8:
                raise ValueError(f"funding rate {rate_e8} at {format_utc(time_ns)} beyond ±100 %")
            times.append(time_ns)
            rates.append(rate_e8)
        if not times:
            raise ValueError("a funding history needs at least one rate")
        self._times = tuple(times)
        self._rates = tuple(rates)

    def __len__(self) -> int:
        return len(self._times)

    @property
    def first_ns(self) -> int:
        return self._times[0]

    @property
    def last_ns(self) -> int:
        return self._times[-1]

    def get(self, time_ns: int) -> int | None:
        i = bisect.bisect_left(self._times, time_ns)
        if i < len(self._times) and self._times[i] == time_ns:
            return self._rates[i]
        return None

    def rate_at(self, time_ns: int) -> int:
        rate = self.get(time_ns)
        if rate is None:
            raise FundingRateMissing(
                f"no funding rate at {format_utc(time_ns)} in the history "
                f"({format_utc(self.first_ns)} .. {format_utc(self.last_ns)}, {len(self)} rates)"
            )
        return rate

    def between(self, start_ns: int, end_ns: int) -> list[tuple[int, int]]:
        """(time, rate) of every settlement with start <= time <= end, in time order."""
        lo = bisect.bisect_left(self._times, start_ns)
        hi = bisect.bisect_right(self._times, end_ns)
        return list(zip(self._times[lo:hi], self._rates[lo:hi], strict=True))
