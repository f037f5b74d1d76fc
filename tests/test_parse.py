"""`perpex.parse`: strict, exact parsing of decimals into integer units, against a reference.

The reference (`reference_units`) is the rule written the slow, obvious way: the exact value
as a Fraction, then the checks in Binance's order (sign, precision, size, grid). The parser's
fast paths (plain "123" / "123.45" strings, ints, the per-scale cache) must give the same
answer, or the same failure, for every input.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from typing import Final

import pytest
from hypothesis import given, settings, strategies as st

from perpex import parse
from perpex.parse import INT64_LIMIT, Failure, NumberError, UnitScale

# Binance's number pattern, plus a sign and an exponent (the module docstring says why).
GRAMMAR: Final = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")


def reference_units(
    value: object, unit: Decimal, max_decimals: int, positive: bool, allow_negative: bool
) -> int | Failure:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        return Failure.NOT_A_NUMBER
    if isinstance(value, str) and not (value.isascii() and GRAMMAR.fullmatch(value)):
        return Failure.NOT_A_NUMBER
    if isinstance(value, Decimal) and not value.is_finite():
        return Failure.NOT_A_NUMBER
    exact = Fraction(Decimal(value)) if not isinstance(value, int) else Fraction(value)
    if exact <= 0 and positive:
        return Failure.NOT_POSITIVE
    if exact < 0 and not allow_negative:
        return Failure.NEGATIVE
    if exact == 0:
        return 0
    decimals = 0
    while (exact * 10**decimals).denominator != 1:
        decimals += 1
    if decimals > max_decimals:
        return Failure.TOO_PRECISE
    count = exact / Fraction(unit)
    if abs(count) >= INT64_LIMIT:
        return Failure.TOO_LARGE
    if count.denominator != 1:
        return Failure.OFF_GRID
    return int(count)


def parsed(scale: UnitScale, value: object, positive: bool, allow_negative: bool) -> int | Failure:
    try:
        return scale.units(value, positive=positive, allow_negative=allow_negative)
    except NumberError as exc:
        return exc.failure


UNITS: Final = ["0.1", "0.01", "0.001", "0.005", "0.5", "1", "5", "0.000001", "0.0001", "0.25"]

digits = st.text("0123456789", min_size=1, max_size=22)
decimal_strings = st.builds(
    lambda sign, whole, fraction, exponent: sign + whole + fraction + exponent,
    st.sampled_from(["", "", "", "-"]),
    digits,
    st.one_of(st.just(""), st.builds(lambda f: "." + f, digits)),
    st.one_of(
        st.just(""),
        st.builds(lambda e, n: e + str(n), st.sampled_from(["e", "E", "e+", "e-", "E-"]),
                  st.integers(0, 30)),
    ),
)  # fmt: skip
odd_strings = st.text(alphabet="0123456789.-+eE _１٠\n ", max_size=12)
values = st.one_of(
    decimal_strings,
    odd_strings,
    st.integers(-(2**70), 2**70),
    st.decimals(allow_nan=True, allow_infinity=True, places=None).filter(
        lambda d: not d.is_finite() or abs(d.adjusted()) < 40
    ),
    st.booleans(),
    st.floats(),
)


@settings(max_examples=3000, deadline=None, derandomize=True, database=None)
@given(
    values,
    st.sampled_from(UNITS),
    st.integers(0, 9),
    st.booleans(),
    st.booleans(),
)
def test_the_parser_agrees_with_the_reference(
    value: object, unit: str, extra_decimals: int, positive: bool, allow_negative: bool
) -> None:
    unit_decimal = Decimal(unit)
    unit_decimals = max(0, -unit_decimal.as_tuple().exponent)  # type: ignore[operator]
    max_decimals = max(0, unit_decimals + extra_decimals - 4)  # below, at and above the unit's
    scale = UnitScale(unit_decimal, max_decimals)
    expected = reference_units(value, unit_decimal, max_decimals, positive, allow_negative)
    assert parsed(scale, value, positive, allow_negative) == expected
    # a second time: from the cache when it was a plain string, with the same answer
    assert parsed(scale, value, positive, allow_negative) == expected


@pytest.mark.parametrize(
    ("text", "ticks"),
    [("60000", 600_000), ("60000.1", 600_001), ("60000.10", 600_001), ("060000.1", 600_001),
     ("6E+4", 600_000), ("6e4", 600_000), ("600001e-1", 600_001), ("60000.1000000000000", 600_001)],
)  # fmt: skip
def test_accepted_shapes_of_a_price(text: str, ticks: int) -> None:
    assert parse.price_ticks(UnitScale(Decimal("0.1"), 2), text) == ticks


@pytest.mark.parametrize(
    ("value", "failure"),
    [("1e999999999999", Failure.TOO_LARGE), ("1e-999999999999", Failure.TOO_PRECISE),
     ("-1e999999999999", Failure.NOT_POSITIVE), ("1e" + "9" * 5000, Failure.TOO_LARGE),
     ("1e-" + "9" * 5000, Failure.TOO_PRECISE), ("0e999999999999", Failure.NOT_POSITIVE),
     (10**5000, Failure.TOO_LARGE), (-(10**5000), Failure.NOT_POSITIVE),
     ("9" * 5000, Failure.TOO_LARGE), ("0." + "0" * 5000 + "1", Failure.TOO_PRECISE),
     ("0" * 5000 + "1", 10), ("1." + "0" * 5000, 10),
     (Decimal("1e999999999999"), Failure.TOO_LARGE), (Decimal("sNaN"), Failure.NOT_A_NUMBER),
     ("１０", Failure.NOT_A_NUMBER), ("١", Failure.NOT_A_NUMBER), ("1\n", Failure.NOT_A_NUMBER),
     (" 1", Failure.NOT_A_NUMBER), ("1_0", Failure.NOT_A_NUMBER), ("+1", Failure.NOT_A_NUMBER),
     (".5", Failure.NOT_A_NUMBER), ("5.", Failure.NOT_A_NUMBER), ("NaN", Failure.NOT_A_NUMBER),
     ("Infinity", Failure.NOT_A_NUMBER), (1.0, Failure.NOT_A_NUMBER),
     (True, Failure.NOT_A_NUMBER), ("-0", Failure.NOT_POSITIVE), ("0.05", Failure.OFF_GRID)],
    ids=lambda v: v.name if isinstance(v, Failure) else parse.shown(v),
)  # fmt: skip
def test_hostile_numbers_are_classified_without_big_arithmetic(
    value: object, failure: Failure | int
) -> None:
    assert parsed(UnitScale(Decimal("0.1"), 2), value, True, False) == failure


def test_the_cache_is_bounded() -> None:
    scale = UnitScale(Decimal("0.1"), 1)
    for i in range(1, 3 * parse.MAX_CACHED_STRINGS):
        assert scale.units(str(i)) == 10 * i
        assert len(scale.cache) <= parse.MAX_CACHED_STRINGS


@pytest.mark.parametrize(
    ("name", "ok"),
    [("alice", True), ("a" * 64, True), ("a.b:c@d-e_f", True), ("alice\n", False),
     ("", False), ("a" * 65, False), ("ａlice", False), ("al ice", False), (["alice"], False),
     (None, False), (b"alice", False)],
)  # fmt: skip
def test_account_names_match_whole(name: object, ok: bool) -> None:
    if ok:
        assert parse.account(name) == name
    else:
        with pytest.raises(parse.ExchangeError) as info:
            parse.account(name)
        assert info.value.code == -1100


def test_a_str_subclass_comes_out_a_plain_str() -> None:
    class Name(str):
        def __hash__(self) -> int:
            raise RuntimeError("never hashed")

    checked = parse.account(Name("alice"))
    assert type(checked) is str and checked == "alice"
