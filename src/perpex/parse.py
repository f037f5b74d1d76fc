"""Strict parsing at the edge: decimal strings, ids, names and enums to integers, or ExchangeError.

One module for every caller that speaks decimals: the `Exchange` facade now, the HTTP server
next. What comes out is an integer in the engine's units (ticks, lots, atoms, ppm, ns) that fits
the journal's 64-bit encoding; what cannot is refused with Binance's code and wording
(BINANCE_API.md §5.4), never rounded and never passed on.

Numbers (`price`, `quantity`, amounts, rates, seconds):

- `str`: ASCII only, as Binance's pattern `^([0-9]{1,20})(\\.[0-9]{1,20})?$` writes them, plus a
  leading `-` (so that "-1" is "less than or equal to zero", not "illegal characters") and an
  exponent (`1E+1` is what `str(Decimal)` writes). No whitespace, no `+`, no `_`, no `.5` or
  `5.`, no NaN or Infinity, no non-ASCII digits ("１０", "١"). A huge exponent is classified
  from its digit count ("too large" or "too precise"); no Decimal arithmetic ever sees it.
- `int` (not `bool`): exact. A 5,000-digit int is compared, never formatted.
- `Decimal`: finite only; exact.
- `float` is refused: 0.1 is not 0.1, and a price that silently becomes another is the classic
  bug this edge exists to stop. Pass `str(x)` to mean the float's shortest repr.

A value with more decimals than the market's precision is -1111; one inside the precision but
off the tick or step is -4014 / -4023; one that is zero (however written, "-0", "0E-9") or
negative where only positive makes sense is refused, as is anything whose integer form does
not fit in 63 bits. Checks run in Binance's order: sign, precision, size, grid.

Ids are `int` (not `bool`, `float` or `Decimal`) within 63 bits; names (accounts, client order
ids, index sources) are `str` matched with `re.fullmatch` before they touch a dict or a sort.
"""

from __future__ import annotations

import enum
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, TypeVar

from perpex.core.messages import (
    ConditionalKind,
    OrderType,
    SelfTradePrevention,
    TimeInForce,
    WorkingType,
)
from perpex.core.tokens import MAX_TOKEN_UNITS, TOKEN_UNITS
from perpex.errors import ExchangeError, mandatory, too_precise

NS_PER_SECOND: Final = 1_000_000_000
INT64_LIMIT: Final = 2**63  # every integer a command carries is below it (msgpack int64)
# Beyond this many digits (integer digits plus the unit's decimals) a value cannot fit in 63
# bits whatever the unit: it is "too large" before any big integer is built.
_MAX_DIGITS: Final = 40
# An exponent of more digits than this is classified by its sign alone.
_MAX_EXPONENT_DIGITS: Final = 9

ACCOUNT_RE: Final = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
CLIENT_ORDER_ID_RE: Final = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")  # Binance's newClientOrderId
SOURCE_RE: Final = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_NUMBER_RE: Final = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?")

MAX_SOURCES: Final = 64  # index sources quoted in one call
MAX_LADDER_TARGETS: Final = 64  # targets of one exit ladder the edge reads (the engine allows 9)
MAX_COUNT: Final = 2**31  # ladder step counts
MAX_CACHED_STRINGS: Final = 4096  # per unit scale (see UnitScale.cache)


class Failure(enum.Enum):
    NOT_A_NUMBER = "not a number"
    NOT_POSITIVE = "not positive"
    NEGATIVE = "negative"
    TOO_PRECISE = "more decimals than allowed"
    OFF_GRID = "not a multiple of the unit"
    TOO_LARGE = "too large"


class NumberError(Exception):
    """A number that cannot be had exactly in its unit. Carries no copy of the value: a
    5,000-digit int cannot even be formatted."""

    __slots__ = ("failure",)

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.value)
        self.failure = failure


def shown(value: object) -> str:
    """A short, safe rendering of a refused value for a message (bounded, never raises)."""
    if isinstance(value, bool):
        return repr(value)
    if isinstance(value, int):
        return str(value) if -(10**18) < value < 10**18 else "a huge integer"
    if isinstance(value, str | Decimal):
        text = value if isinstance(value, str) else f"Decimal({str(value)[:24]!r})"
        return repr(text[:24] + "...") if len(text) > 24 else repr(text)
    return f"a {type(value).__name__}"


def split_decimal(value: object) -> tuple[bool, str, int]:
    """(negative, significant digits, exponent): value = ±int(digits) × 10^exponent, digits
    without leading or trailing zeros ("" for zero). Raises NumberError(NOT_A_NUMBER)."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise NumberError(Failure.NOT_A_NUMBER)
    if isinstance(value, int):
        value = int.__int__(value)  # a subclass's own __abs__ or __str__ never runs
        negative = value < 0
        if abs(value) >= 10**_MAX_DIGITS:  # never formatted: a stand-in beyond every limit
            return negative, "1", _MAX_DIGITS
        digits = str(abs(value))
        exponent = 0
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise NumberError(Failure.NOT_A_NUMBER)
        sign, digit_tuple, exp = value.as_tuple()
        assert isinstance(exp, int)
        digits = "".join(map(str, digit_tuple))
        negative = bool(sign)
        exponent = exp
    else:
        match = _NUMBER_RE.fullmatch(value) if value.isascii() else None
        if match is None:
            raise NumberError(Failure.NOT_A_NUMBER)
        minus, whole, fraction, exp_text = match.groups()
        negative = bool(minus)
        fraction = fraction or ""
        digits = whole + fraction
        exponent = -len(fraction)
        if exp_text:
            if len(exp_text.lstrip("+-").lstrip("0")) > _MAX_EXPONENT_DIGITS:
                exponent += -(10**12) if exp_text.startswith("-") else 10**12
            else:
                exponent += int(exp_text)
    digits = digits.lstrip("0")
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    return negative, stripped, exponent


class UnitScale:
    """Exact conversion of decimals to a count of one unit (a tick, a lot, an atom, ...)."""

    __slots__ = (
        "cache",
        "decimals",
        "fast_decimals",
        "fast_int_digits",
        "max_decimals",
        "mult",
        "pad",
        "unit",
        "unit_num",
        "units_limit",
    )

    def __init__(self, unit: Decimal, max_decimals: int | None = None) -> None:
        if not unit.is_finite() or unit <= 0:
            raise ValueError(f"unit {unit} must be positive")
        _, _, exp = unit.as_tuple()
        assert isinstance(exp, int)
        self.unit = unit
        self.decimals = max(0, -exp)  # unit = unit_num × 10^-decimals
        self.unit_num: int = int(unit.scaleb(self.decimals))
        assert Decimal(self.unit_num).scaleb(-self.decimals) == unit
        self.max_decimals = self.decimals if max_decimals is None else max_decimals
        self.mult: int = 10**self.decimals
        self.units_limit: int = INT64_LIMIT * self.unit_num  # n (in 10^-decimals) below it
        self.pad: tuple[int, ...] = tuple(
            10 ** (self.decimals - k) for k in range(self.decimals + 1)
        )
        # The fast path takes "123" and "123.45" whose count is surely below 10^18 < 2^63.
        self.fast_decimals = min(self.decimals, self.max_decimals)
        self.fast_int_digits = max(0, 18 - self.decimals)
        # Parsed strings and their counts (positive ones: valid whatever the sign rule). A
        # client repeats its prices and sizes; a hit costs one dict lookup. Bounded.
        self.cache: dict[str, int] = {}

    def units(self, value: object, *, positive: bool = True, allow_negative: bool = False) -> int:
        """The exact count of units in `value`, or NumberError. `positive`: zero and negative
        are NOT_POSITIVE; else negative is NEGATIVE unless `allow_negative`."""
        if type(value) is str:
            hit = self.cache.get(value)
            if hit is not None:
                return hit
            # The shapes a client sends ("60000", "0.5", "60000.1"): split, check, int().
            whole, dot, fraction = value.partition(".")
            if (
                whole.isdigit()
                and value.isascii()
                and len(whole) <= self.fast_int_digits
                and (not dot or (fraction.isdigit() and len(fraction) <= self.fast_decimals))
            ):
                n = int(whole) * self.mult
                if fraction:
                    n += int(fraction) * self.pad[len(fraction)]
                unit_num = self.unit_num
                if n and (unit_num == 1 or not n % unit_num):
                    count = n if unit_num == 1 else n // unit_num
                    cache = self.cache
                    if len(cache) >= MAX_CACHED_STRINGS:
                        cache.clear()
                    cache[value] = count
                    return count
            # zero, off the grid or another shape: the general path says which
        elif type(value) is int:
            if value <= 0:
                if positive:
                    raise NumberError(Failure.NOT_POSITIVE)
                if value < 0 and not allow_negative:
                    raise NumberError(Failure.NEGATIVE)
            # (a 5,000-digit int is compared here, never formatted)
            if -INT64_LIMIT < value < INT64_LIMIT:
                n = value * self.mult
                limit = self.units_limit
                if -limit < n < limit:
                    if n % self.unit_num:
                        raise NumberError(Failure.OFF_GRID)
                    return n // self.unit_num
            raise NumberError(Failure.TOO_LARGE)
        return self._units(value, positive, allow_negative)

    def _units(self, value: object, positive: bool, allow_negative: bool) -> int:
        negative, digits, exponent = split_decimal(value)
        if not digits:
            if positive:
                raise NumberError(Failure.NOT_POSITIVE)
            return 0
        if negative:
            if positive:
                raise NumberError(Failure.NOT_POSITIVE)
            if not allow_negative:
                raise NumberError(Failure.NEGATIVE)
        if -exponent > self.max_decimals:
            raise NumberError(Failure.TOO_PRECISE)
        # |value| = digits × 10^exponent = n × 10^-decimals; |count| = n / unit_num < 2^63
        shift = exponent + self.decimals
        if len(digits) + shift > _MAX_DIGITS:
            raise NumberError(Failure.TOO_LARGE)
        significant = int(digits)
        if shift >= 0:
            n: int = significant * 10**shift
            if n >= self.units_limit:
                raise NumberError(Failure.TOO_LARGE)
        else:  # more decimals than the unit has (the precision allowed them): off the grid
            if significant >= self.units_limit * 10**-shift:
                raise NumberError(Failure.TOO_LARGE)
            raise NumberError(Failure.OFF_GRID)
        count, remainder = divmod(n, self.unit_num)
        if remainder:
            raise NumberError(Failure.OFF_GRID)
        return -count if negative else count


# -- the scales every market shares ------------------------------------------------------------
ATOM_SCALE: Final = UnitScale(Decimal("0.000001"))  # USDT amounts, in atoms
NS_SCALE: Final = UnitScale(Decimal("0.000000001"))  # seconds, in ns
CALLBACK_RATE_SCALE: Final = UnitScale(Decimal("0.0001"))  # per cent, in ppm
FRACTION_SCALE: Final = UnitScale(Decimal("0.000001"))  # exit-ladder fractions, in ppm
TOKEN_SCALE: Final = UnitScale(Decimal("0.00000001"))  # leveraged-token quantities, in units
assert TOKEN_SCALE.mult == TOKEN_UNITS


# -- numbers, with Binance's code for each parameter -------------------------------------------
# Binance's answer to each way a price or a quantity can fail (too many decimals is -1111 for
# both); `checks.py` gives the same answers for typed commands.
_PRICE_ERRORS: Final = {
    Failure.OFF_GRID: (-4014, "Price not increased by tick size."),
    Failure.NOT_POSITIVE: (-4013, "Price less than min price."),
    Failure.TOO_LARGE: (-4013, "Price greater than max price."),
}
_QTY_ERRORS: Final = {
    Failure.OFF_GRID: (-4023, "Quantity not increased by step size."),
    Failure.NOT_POSITIVE: (-4003, "Quantity less than or equal to zero."),
    Failure.TOO_LARGE: (-4005, "Quantity greater than max quantity."),
}


def price_error(failure: Failure) -> ExchangeError:
    """What a price that fails this way gets (-1013 for one that is no number at all)."""
    if failure is Failure.TOO_PRECISE:
        return too_precise()
    return ExchangeError(*_PRICE_ERRORS.get(failure, (-1013, "Invalid price.")))


def qty_error(failure: Failure) -> ExchangeError:
    """What a quantity that fails this way gets (-1013 for one that is no number at all)."""
    if failure is Failure.TOO_PRECISE:
        return too_precise()
    return ExchangeError(*_QTY_ERRORS.get(failure, (-1013, "Invalid quantity.")))


def price_ticks(scale: UnitScale, value: object) -> int:
    """A price in ticks, > 0 (-4013), on the tick (-4014), within the precision (-1111)."""
    try:
        return scale.units(value)
    except NumberError as exc:
        raise price_error(exc.failure) from None


def qty_lots(scale: UnitScale, value: object) -> int:
    """A quantity in lots, > 0 (-4003), on the step (-4023), within the precision (-1111)."""
    try:
        return scale.units(value)
    except NumberError as exc:
        raise qty_error(exc.failure) from None


def amount_atoms(value: object, *, allow_negative: bool = False) -> int:
    """A USDT amount in atoms: non-zero, positive unless `allow_negative`, 6 decimals."""
    try:
        atoms = ATOM_SCALE.units(value, positive=not allow_negative, allow_negative=True)
    except NumberError as exc:
        if exc.failure is Failure.TOO_PRECISE:
            raise too_precise() from None
        raise invalid_amount() from None
    if atoms == 0:
        raise invalid_amount()
    return atoms


def token_units(value: object) -> int:
    """A quantity of leveraged tokens in units (1e-8 token): > 0 (-4003), at most 8 decimals
    (-1111: never rounded), within the engine's supply bound `MAX_TOKEN_UNITS` (-4005)."""
    try:
        units = TOKEN_SCALE.units(value)
    except NumberError as exc:
        raise qty_error(exc.failure) from None
    if units > MAX_TOKEN_UNITS:
        raise qty_error(Failure.TOO_LARGE)
    return units


def seconds_ns(value: object) -> int:
    """A time step in ns: >= 0, at most 9 decimals (a step that rounds to no time is refused)."""
    try:
        return NS_SCALE.units(value, positive=False)
    except NumberError as exc:
        if exc.failure is Failure.TOO_LARGE:
            raise step_too_large() from None
        raise ExchangeError(-1013, f"Invalid time step: {shown(value)}.") from None


def callback_rate_ppm(value: object) -> int:
    """callbackRate in per cent ("1.5" = 1.5 %) to ppm, exactly; the range is the engine's."""
    try:
        return CALLBACK_RATE_SCALE.units(value)
    except NumberError:
        raise invalid_callback_rate() from None


def fraction_ppm(value: object) -> int:
    """An exit-ladder fraction (0 < f <= 1, the engine checks the sum) in ppm."""
    try:
        return FRACTION_SCALE.units(value)
    except NumberError:
        raise invalid_targets() from None


# -- ids, counts, flags ------------------------------------------------------------------------
def is_int(value: object) -> bool:
    """A real int: not a bool (True is not order 1)."""
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def order_id(value: object) -> int:
    if not is_int(value):
        raise mandatory("orderId")
    assert isinstance(value, int)
    if not 0 < value < INT64_LIMIT:
        raise unknown_order()
    return int(value)


def leverage(value: object) -> int:
    """An int within 63 bits; the range of the market (1..125) is the engine's (-4028)."""
    if not is_int(value) or not -INT64_LIMIT < value < INT64_LIMIT:  # type: ignore[operator]
        raise invalid_leverage(value)
    assert isinstance(value, int)
    return int(value)


def count(value: object, param: str) -> int:
    """A non-negative count of ladder steps (None = 0)."""
    if value is None:
        return 0
    if not is_int(value) or not 0 <= value < MAX_COUNT:  # type: ignore[operator]
        raise not_valid(param)
    assert isinstance(value, int)
    return int(value)


def flag(value: object, param: str) -> bool:
    if not isinstance(value, bool):
        raise mandatory(param)
    return value


# -- names -------------------------------------------------------------------------------------
def _plain(value: str) -> str:
    """A str subclass becomes a plain str (its own __eq__ or __hash__ never reaches the engine)."""
    return value if type(value) is str else str.__str__(value)


def account(value: object) -> str:
    if not isinstance(value, str) or ACCOUNT_RE.fullmatch(value) is None:
        raise ExchangeError(
            -1100,
            "Illegal characters found in parameter 'account'; legal range is "
            f"'^{ACCOUNT_RE.pattern}$'.",
        )
    return _plain(value)


def client_order_id(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or CLIENT_ORDER_ID_RE.fullmatch(value) is None:
        raise ExchangeError(
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; legal range is "
            f"'^{CLIENT_ORDER_ID_RE.pattern}$'.",
        )
    return _plain(value)


def source_name(value: object) -> str:
    if not isinstance(value, str) or SOURCE_RE.fullmatch(value) is None:
        raise not_valid("sources")
    return _plain(value)


T = TypeVar("T")


def choice(value: object, table: dict[str, T]) -> T | None:
    """`table[value]` for a str key, else None (a list or dict never reaches the lookup)."""
    return table.get(value) if isinstance(value, str) else None


# -- enums, by Binance's names ----------------------------------------------------------------
SIDES: Final = {"BUY": 1, "SELL": -1}
ORDER_TYPES: Final = {"LIMIT": OrderType.LIMIT, "MARKET": OrderType.MARKET}
CONDITIONAL_TYPES: Final = {k.name: k for k in ConditionalKind}
TIME_IN_FORCES: Final = {t.name: t for t in TimeInForce}
WORKING_TYPES: Final = {w.name: w for w in WorkingType}
MARGIN_MODES: Final = {"ISOLATED": True, "CROSSED": False}
# (side, type, timeInForce, workingType) of a plain order -> their engine values: the usual
# combinations in one lookup.
PLAIN_ORDER_ENUMS: Final = {
    (side, type_name, tif_name, working_name): (side_value, order_type, tif, working)
    for side, side_value in SIDES.items()
    for type_name, order_type in ORDER_TYPES.items()
    for tif_name, tif in TIME_IN_FORCES.items()
    for working_name, working in WORKING_TYPES.items()
}


def order_enums(
    side: object, order_type_name: object, time_in_force: object, working_type: object
) -> tuple[int, OrderType | None, ConditionalKind | None, TimeInForce, WorkingType]:
    """Side, order type (or conditional kind), time in force and working type of an order,
    checked one by one in Binance's order of complaints."""
    side_value = choice(side, SIDES)
    if side_value is None:
        raise invalid_side()
    order_type = choice(order_type_name, ORDER_TYPES)
    kind = None
    if order_type is None:
        kind = choice(order_type_name, CONDITIONAL_TYPES)
        if kind is None:
            raise invalid_order_type()
    tif = choice(time_in_force, TIME_IN_FORCES)
    if tif is None:
        raise invalid_time_in_force()
    working = choice(working_type, WORKING_TYPES)
    if working is None:
        raise invalid_working_type()
    return side_value, order_type, kind, tif, working


def start_time_ns(start_time: datetime | str | int) -> int:
    """`Exchange(start_time=...)`: seconds since the epoch (int), an ISO-8601 string or a
    datetime (naive = UTC), to ns. A configuration error is a ValueError."""
    if isinstance(start_time, int) and not isinstance(start_time, bool):
        return start_time * NS_PER_SECOND
    if isinstance(start_time, str):
        start_time = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    if isinstance(start_time, datetime):
        if start_time.tzinfo is None:
            start_time = start_time.replace(tzinfo=UTC)
        delta = start_time - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000
    raise ValueError(f"start_time {start_time!r}: give seconds, an ISO string or a datetime")


# -- Binance errors of the edge ----------------------------------------------------------------
def not_valid(param: str) -> ExchangeError:
    return ExchangeError(-1130, f"Data sent for parameter '{param}' is not valid.")


def invalid_targets() -> ExchangeError:
    return not_valid("targets")


def step_too_large() -> ExchangeError:
    return not_valid("seconds")


def invalid_amount() -> ExchangeError:
    return ExchangeError(-1013, "Invalid amount.")


def invalid_callback_rate() -> ExchangeError:
    return ExchangeError(-2007, "Invalid callBack rate.")


def invalid_leverage(value: object) -> ExchangeError:
    text = str(value) if is_int(value) and -1000 < value < 10**6 else shown(value)  # type: ignore[operator]
    return ExchangeError(-4028, f"Leverage {text} is not valid")


def unknown_order() -> ExchangeError:
    return ExchangeError(-2011, "Unknown order sent.")


def invalid_side() -> ExchangeError:
    return ExchangeError(-1117, "Invalid side.")


def invalid_order_type() -> ExchangeError:
    return ExchangeError(-1116, "Invalid orderType.")


def invalid_time_in_force() -> ExchangeError:
    return ExchangeError(-1115, "Invalid timeInForce.")


def invalid_self_trade_prevention() -> ExchangeError:
    return ExchangeError(-1100, "Illegal characters found in parameter 'selfTradePreventionMode'.")


def self_trade_prevention(mode: object) -> SelfTradePrevention:
    """EXPIRE_TAKER, EXPIRE_MAKER or EXPIRE_BOTH (Binance's `selfTradePreventionMode`)."""
    member = SelfTradePrevention.__members__.get(mode) if type(mode) is str else None
    if member is None:
        raise invalid_self_trade_prevention()
    return member


def invalid_working_type() -> ExchangeError:
    return ExchangeError(-1100, "Illegal characters found in parameter 'workingType'.")


def invalid_margin_type() -> ExchangeError:
    return ExchangeError(-4044, "The margin type must be ISOLATED or CROSSED.")
