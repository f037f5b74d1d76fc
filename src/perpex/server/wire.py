"""Numbers as Binance writes them: decimal strings with a market's precision, times in ms.

Prices carry the tick's decimals ("60000.1" for a 0.1 tick), quantities the step's ("0.010"
for a 0.001 step), USDT amounts 8 decimals ("10000.00000000"), rates 8 ("0.00010000"). An
exact value is never rounded for show except where Binance itself shows a computed figure
(an average price, a PnL): those are rounded half-even to the shown places.
"""

from __future__ import annotations

import functools
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

from perpex.core.markets import MarketSpec

NS_PER_MS: Final = 1_000_000
MONEY_PLACES: Final = 8
RATE_PLACES: Final = 8


@functools.lru_cache(maxsize=256)
def places_of(step: Decimal) -> int:
    """Decimals of a tick or step size: 0.1 -> 1, 0.001 -> 3, 1 -> 0."""
    exponent = step.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


@functools.lru_cache(maxsize=256)
def _integer_step(step: Decimal) -> tuple[int, int]:
    """(m, p) with step = m x 10^-p, m an integer: so units x step prints from integers."""
    p = places_of(step)
    return int(step.scaleb(p)), p


def _units(units: int, step: Decimal) -> str:
    """`units` x `step` with the step's decimals, by integer arithmetic (exact, no rounding):
    the hot path of every order and trade rendered (Decimal.quantize costs ~5 µs a field)."""
    m, p = _integer_step(step)
    scaled = units * m
    if p == 0:
        return str(scaled)
    whole, frac = divmod(abs(scaled), 10**p)
    sign = "-" if scaled < 0 else ""
    return f"{sign}{whole}.{frac:0{p}d}"


def fixed(value: Decimal | int, places: int) -> str:
    """`value` with exactly `places` decimals (half-even when it has more)."""
    quantum = Decimal(1).scaleb(-places)
    shown = Decimal(value).quantize(quantum, rounding=ROUND_HALF_EVEN)
    return format(shown.copy_abs() if shown == 0 else shown, "f")  # never "-0.00"


def price(spec: MarketSpec, value: Decimal) -> str:
    return fixed(value, places_of(spec.tick_size))


def qty(spec: MarketSpec, value: Decimal) -> str:
    return fixed(value, places_of(spec.step_size))


def price_ticks(spec: MarketSpec, ticks: int) -> str:
    return _units(ticks, spec.tick_size)


def qty_lots(spec: MarketSpec, lots: int) -> str:
    return _units(lots, spec.step_size)


def money(value: Decimal) -> str:
    return fixed(value, MONEY_PLACES)


def rate(value: Decimal) -> str:
    return fixed(value, RATE_PLACES)


def ms(ns: int) -> int:
    """Nanoseconds -> Binance's integer milliseconds (floored)."""
    return ns // NS_PER_MS


__all__ = [
    "MONEY_PLACES",
    "NS_PER_MS",
    "RATE_PLACES",
    "fixed",
    "money",
    "ms",
    "places_of",
    "price",
    "price_ticks",
    "qty",
    "qty_lots",
    "rate",
]
