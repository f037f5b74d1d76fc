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


class UnitText:
    """Exact text of integer multiples of a decimal unit (a tick, a step, 1e-8), with the
    unit's decimals, by integer string operations (exact, no rounding): the hot path of every
    order, trade and kline rendered (Decimal.quantize costs ~5 µs a field, and a kline answer
    is up to 1,500 x 8 of them, made in the writer thread)."""

    __slots__ = ("multiple", "places", "scale", "template")

    def __init__(self, unit: Decimal) -> None:
        self.places = places_of(unit)
        scaled = unit.scaleb(self.places)
        if scaled != scaled.to_integral_value() or scaled <= 0:
            raise ValueError(f"unit {unit} is not a positive multiple of 10^-{self.places}")
        self.multiple = int(scaled)
        self.scale = 10**self.places
        self.template = f"%d.%0{self.places}d"

    def __call__(self, count: int) -> str:
        value = count * self.multiple
        if value < 0:
            return "-" + self(-count)
        if not self.places:
            return str(value)
        text: str = self.template % divmod(value, self.scale)
        return text


@functools.lru_cache(maxsize=256)
def unit_text(unit: Decimal) -> UnitText:
    """The `UnitText` of a tick or step size (one per unit)."""
    return UnitText(unit)


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
    return unit_text(spec.tick_size)(ticks)


def qty_lots(spec: MarketSpec, lots: int) -> str:
    return unit_text(spec.step_size)(lots)


def money(value: Decimal) -> str:
    return fixed(value, MONEY_PLACES)


def rate(value: Decimal) -> str:
    return fixed(value, RATE_PLACES)


PREMIUM_TEXT: Final = UnitText(Decimal(1).scaleb(-8))  # a premium index in 1e-8


def ms(ns: int) -> int:
    """Nanoseconds -> Binance's integer milliseconds (floored)."""
    return ns // NS_PER_MS


__all__ = [
    "MONEY_PLACES",
    "NS_PER_MS",
    "PREMIUM_TEXT",
    "RATE_PLACES",
    "UnitText",
    "fixed",
    "money",
    "ms",
    "places_of",
    "price",
    "price_ticks",
    "qty",
    "qty_lots",
    "rate",
    "unit_text",
]
