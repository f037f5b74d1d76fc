"""Fixed-point units: exact decimal parsing, the one rounding helper, and the unit constants.

Units: prices in ticks, sizes in lots, money in atoms of the settlement asset (1 atom = 10^-6
USDT, so one tick times one lot is a whole number of atoms for every listed market and a
position of 2^60 atoms is more than a trillion USDT), rates in ppm (10^-6).

Nothing here rounds silently: a decimal that is not an exact multiple of its unit is an error,
and every division names its rounding mode.
"""

from __future__ import annotations

import enum
from decimal import Decimal, InvalidOperation
from typing import Final

PPM: Final = 1_000_000
ATOM_DECIMALS: Final = 6
ATOMS_PER_UNIT: Final = 10**ATOM_DECIMALS  # atoms per 1 USDT
ATOM: Final = Decimal(1).scaleb(-ATOM_DECIMALS)

# Every per-position quantity the vector risk code multiplies must stay below this bound, so
# that sums over a handful of positions still fit NumPy int64 (2^63) without wrapping.
NOTIONAL_BOUND_ATOMS: Final = 2**60

DecimalLike = str | int | Decimal

# No input has more than 10^18 of anything; larger numbers are rejected before arithmetic,
# which also keeps every Decimal operation below the default 28-digit context precision.
MAX_INPUT_DIGITS: Final = 18


class Rounding(enum.Enum):
    """How a division rounds. Named at every call site; there is no default."""

    FLOOR = "floor"  # toward -inf
    CEIL = "ceil"  # toward +inf
    TRUNC = "trunc"  # toward zero
    AWAY = "away"  # away from zero


def div(numerator: int, denominator: int, rounding: Rounding) -> int:
    """Exact integer division with an explicit rounding mode (denominator must be non-zero)."""
    if denominator == 0:
        raise ZeroDivisionError("division by zero")
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    q, r = divmod(numerator, denominator)  # floor semantics, 0 <= r < denominator
    if r == 0 or rounding is Rounding.FLOOR:
        return q
    if rounding is Rounding.CEIL:
        return q + 1
    if rounding is Rounding.TRUNC:
        return q + 1 if numerator < 0 else q
    return q if numerator < 0 else q + 1  # AWAY


class ParseFailure(enum.Enum):
    NOT_A_NUMBER = "not a number"
    NOT_POSITIVE = "not positive"
    NEGATIVE = "negative"
    TOO_PRECISE = "more decimals than allowed"
    OFF_GRID = "not a multiple of the unit"
    TOO_LARGE = "too large"


class ParseError(ValueError):
    """A decimal input that cannot be represented exactly in the unit it was meant for."""

    def __init__(self, failure: ParseFailure, value: object) -> None:
        super().__init__(f"{value!r}: {failure.value}")
        self.failure = failure
        self.value = value


def to_decimal(value: object) -> Decimal:
    """Parse a str, int, Decimal (or a float through its shortest repr) exactly; finite only."""
    if isinstance(value, bool):
        raise ParseError(ParseFailure.NOT_A_NUMBER, value)
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        # repr() is the shortest string that round-trips, i.e. what the user typed.
        d = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if not text or text != value or "_" in text:
            raise ParseError(ParseFailure.NOT_A_NUMBER, value)
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise ParseError(ParseFailure.NOT_A_NUMBER, value) from None
    else:
        raise ParseError(ParseFailure.NOT_A_NUMBER, value)
    if not d.is_finite():
        raise ParseError(ParseFailure.NOT_A_NUMBER, value)
    return d


def decimals_of(d: Decimal) -> int:
    """Number of significant decimals after the point (trailing zeros do not count)."""
    if d == 0:
        return 0
    exponent = d.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return max(0, -exponent)


def to_units(
    value: object,
    unit: Decimal,
    *,
    max_decimals: int | None = None,
    positive: bool = False,
    allow_negative: bool = False,
) -> int:
    """Exact count of `unit` in `value`; raises ParseError instead of rounding."""
    d = to_decimal(value)
    if positive and d <= 0:
        raise ParseError(ParseFailure.NOT_POSITIVE, value)
    if not allow_negative and d < 0:
        raise ParseError(ParseFailure.NEGATIVE, value)
    if max_decimals is not None and decimals_of(d) > max_decimals:
        raise ParseError(ParseFailure.TOO_PRECISE, value)
    if d.adjusted() > MAX_INPUT_DIGITS:
        raise ParseError(ParseFailure.TOO_LARGE, value)
    count, remainder = divmod(d, unit)
    if remainder != 0:
        raise ParseError(ParseFailure.OFF_GRID, value)
    return int(count)


def to_atoms(value: object, *, allow_negative: bool = False, positive: bool = False) -> int:
    return to_units(
        value, ATOM, max_decimals=ATOM_DECIMALS, allow_negative=allow_negative, positive=positive
    )


def to_ppm(value: object) -> int:
    """A rate as an exact number of ppm (0.004 -> 4000); finer rates are an error."""
    return to_units(value, Decimal(1).scaleb(-6), allow_negative=True)


def atoms_to_decimal(atoms: int) -> Decimal:
    return Decimal(atoms).scaleb(-ATOM_DECIMALS)


def units_to_decimal(count: int, unit: Decimal) -> Decimal:
    return Decimal(count) * unit
