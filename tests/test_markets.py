"""Markets and units: bracket tables load, validate and behave as MECHANICS.md §1.1-1.3 says;
the fixed-point helpers parse exactly and round only where told to.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from dataclasses import dataclass, replace
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from perpex import Bracket, Exchange, Market, MarketError
from perpex.core.markets import (
    compile_brackets,
    compile_market,
    parse_binance_tiers_json,
    parse_bracket_csv,
)
from perpex.core.units import (
    ATOMS_PER_UNIT,
    NOTIONAL_BOUND_ATOMS,
    ParseError,
    ParseFailure,
    Rounding,
    div,
    to_atoms,
    to_ppm,
    to_units,
)
from perpex.defaults import default_brackets, default_markets

# ../shared/ lies beside the checkout, in a session and in CI alike.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_CSV = SHARED_DATA / "binance_usdm_leverage_tiers_BTC_ETH.csv"
SHARED_JSON = SHARED_DATA / "binance_usdm_leverage_tiers_2024-10.json"
SYMBOLS = ("BTCUSDT", "ETHUSDT")


def atoms(usdt: str | int) -> int:
    return int(Decimal(usdt) * ATOMS_PER_UNIT)


def specs(symbol: str) -> tuple[tuple[int, int, int, int, int], ...]:
    """(floor, cap, max leverage, mmr ppm, cum) of the shipped table, in integers."""
    return tuple(
        (b.floor_atoms, b.cap_atoms, b.max_leverage, b.mmr_ppm, b.cum_atoms)
        for b in compile_brackets(symbol, default_brackets()[symbol])
    )


# -- the shipped tables ------------------------------------------------------------------------


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_shipped_brackets_match_the_2024_10_24_rows_of_the_shared_csv(symbol: str) -> None:
    if not SHARED_CSV.exists():
        pytest.skip(f"{SHARED_CSV} is absent")
    with SHARED_CSV.open(newline="") as f:
        rows = [
            r for r in csv.DictReader(f) if r["snapshot_date"] == "2024-10-24"
            and r["symbol"] == symbol
        ]
    rows.sort(key=lambda r: int(r["tier"]))
    assert len(rows) == 12
    expected = tuple(
        (
            atoms(r["min_notional_usdt"]),
            atoms(r["max_notional_usdt"]),
            int(Decimal(r["max_leverage"])),
            int(Decimal(r["maint_margin_rate"]) * 1_000_000),
            atoms(r["maint_amount_cum_usdt"]),
        )
        for r in rows
    )
    assert specs(symbol) == expected
    assert len(default_brackets()[symbol]) == 12


def test_shipped_btc_brackets_are_table_a() -> None:
    """MECHANICS.md §1.1 table (a), row by row."""
    table_a = [
        ("0", "50000", 125, "0.004", "0"),
        ("50000", "600000", 100, "0.005", "50"),
        ("600000", "3000000", 75, "0.0065", "950"),
        ("3000000", "12000000", 50, "0.01", "11450"),
        ("12000000", "70000000", 25, "0.02", "131450"),
        ("70000000", "100000000", 20, "0.025", "481450"),
        ("100000000", "230000000", 10, "0.05", "2981450"),
        ("230000000", "480000000", 5, "0.1", "14481450"),
        ("480000000", "600000000", 4, "0.125", "26481450"),
        ("600000000", "800000000", 3, "0.15", "41481450"),
        ("800000000", "1200000000", 2, "0.25", "121481450"),
        ("1200000000", "1800000000", 1, "0.5", "421481450"),
    ]
    expected = tuple(
        (atoms(f), atoms(c), lev, int(Decimal(m) * 1_000_000), atoms(cum))
        for f, c, lev, m, cum in table_a
    )
    assert specs("BTCUSDT") == expected
    # §1.1: "ETHUSDT ... identical brackets 1-4 ... bracket 5: 12M-50M, 25x, 2 %, cum 131,450;
    # bracket 6: 50M-65M, 20x, 2.5 %, cum 381,450"
    eth = specs("ETHUSDT")
    assert eth[:4] == expected[:4]
    assert eth[4] == (atoms(12_000_000), atoms(50_000_000), 25, 20_000, atoms(131_450))
    assert eth[5] == (atoms(50_000_000), atoms(65_000_000), 20, 25_000, atoms(381_450))


def test_csv_loader_filters_by_snapshot_date() -> None:
    text = (
        "snapshot_date,symbol,tier,min_notional_usdt,max_notional_usdt,maint_margin_rate,"
        "max_leverage,maint_amount_cum_usdt\n"
        "2026-05-07,BTCUSDT,1,0.0,300000.0,0.004,150.0,0.0\n"
        "2024-10-24,BTCUSDT,2,50000.0,600000.0,0.005,100.0,50.0\n"
        "2024-10-24,BTCUSDT,1,0.0,50000.0,0.004,125.0,0.0\n"
    )
    tables = parse_bracket_csv(text, "2024-10-24")
    assert tables == {
        "BTCUSDT": [
            Bracket("0", "50000", 125, "0.004", "0"),
            Bracket("50000", "600000", 100, "0.005", "50"),
        ]
    }
    assert len(parse_bracket_csv(text)["BTCUSDT"]) == 3


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_json_loader_agrees_with_the_csv(symbol: str) -> None:
    if not SHARED_JSON.exists():
        pytest.skip(f"{SHARED_JSON} is absent")
    from_json = parse_binance_tiers_json(SHARED_JSON.read_text("utf-8"), symbol)
    assert compile_brackets(symbol, from_json) == compile_brackets(
        symbol, default_brackets()[symbol]
    )


def _tier(n: int, floor: str, cap: str, lev: str) -> dict[str, object]:
    return {
        "tier": float(n),
        "info": {
            "bracket": str(n),
            "initialLeverage": lev,
            "notionalCap": cap,
            "notionalFloor": floor,
            "maintMarginRatio": "0.004",
            "cum": "0.0",
        },
    }


def test_json_loader_takes_the_perpetual_not_a_delivery_contract() -> None:
    text = json.dumps(
        {
            "BTC/USDT:USDT-241227": [_tier(1, "0", "50000", "50")],
            "BTC/USDT:USDT": [_tier(1, "0", "50000", "125")],
        }
    )
    assert parse_binance_tiers_json(text, "BTCUSDT")[0].max_leverage == 125


def test_json_loader_unknown_symbol() -> None:
    with pytest.raises(MarketError, match="XRPUSDT"):
        parse_binance_tiers_json(json.dumps({"BTC/USDT:USDT": []}), "XRPUSDT")


# -- bad tables --------------------------------------------------------------------------------

GOOD = [
    Bracket("0", "50000", 125, "0.004", "0"),
    Bracket("50000", "600000", 100, "0.005", "50"),
    Bracket("600000", "3000000", 75, "0.0065", "950"),
]


@dataclass(frozen=True)
class BadTable:
    name: str
    brackets: list[Bracket]
    message: str  # a substring of the MarketError, naming the bracket


def _with(n: int, **changes: object) -> list[Bracket]:
    table = list(GOOD)
    table[n - 1] = replace(table[n - 1], **changes)  # type: ignore[arg-type]
    return table


BAD_TABLES = [
    BadTable("empty", [], "empty"),
    BadTable("gap between brackets", _with(2, floor="60000", cum="50"), "bracket 2: floor 60000"),
    BadTable("overlap", _with(3, floor="500000", cum="800"), "bracket 3: floor 500000"),
    BadTable("wrong cum", _with(3, cum="951"), "bracket 3: cum 951"),
    BadTable("first cum not 0", _with(1, cum="1"), "bracket 1: the first bracket's cum"),
    BadTable("leverage increasing", _with(3, max_leverage=110), "bracket 3: max_leverage 110"),
    BadTable("first floor not 0", [replace(GOOD[0], floor="1")], "bracket 1: the first bracket"),
    BadTable("cap not above floor", _with(3, cap="600000"), "bracket 3: cap 600000"),
    BadTable("mmr decreasing", _with(2, mmr="0.003", cum="-50"), "bracket 2: mmr 0.003"),
    BadTable("mmr zero", _with(1, mmr="0"), "bracket 1: mmr 0"),
    BadTable("mmr one", _with(3, mmr="1"), "bracket 3: mmr 1"),
    BadTable("leverage zero", _with(2, max_leverage=0), "bracket 2: max_leverage 0"),
    BadTable("leverage not an integer", _with(2, max_leverage=99.5), "bracket 2: max_leverage"),
    BadTable("cap not a number", _with(2, cap="abc"), "bracket 2"),
    BadTable("cap beyond the int64 bound", _with(3, cap="1e13"), "bracket 3: cap"),
]


@pytest.mark.parametrize("case", BAD_TABLES, ids=lambda c: c.name)
def test_bad_bracket_tables_are_rejected(case: BadTable) -> None:
    with pytest.raises(MarketError) as info:
        compile_brackets("BTCUSDT", case.brackets)
    assert "BTCUSDT" in str(info.value)
    assert case.message in str(info.value), str(info.value)
    # the same table in a Market is refused when the exchange is built
    market = Market(symbol="BTCUSDT", tick_size="0.1", step_size="0.001", brackets=case.brackets)
    with pytest.raises(MarketError):
        Exchange(markets=[market])


def test_the_good_table_is_accepted() -> None:
    assert len(compile_brackets("BTCUSDT", GOOD)) == 3


# -- lookup, maintenance margin, leverage caps ------------------------------------------------


def _btc_spec():  # type: ignore[no-untyped-def]
    return compile_market(default_markets()[0])


@pytest.mark.parametrize(
    ("notional", "bracket"),
    [
        ("0", 1),
        ("49999.999999", 1),
        ("50000", 2),  # on the boundary: the higher bracket (§1.2)
        ("50000.000001", 2),
        ("599999.999999", 2),
        ("600000", 3),
        ("1200000000", 12),
        ("1800000000", 12),  # the last bracket's cap and beyond stay in the last bracket
        ("5000000000", 12),
    ],
)
def test_bracket_lookup_on_boundaries_takes_the_higher_bracket(notional: str, bracket: int) -> None:
    assert _btc_spec().bracket_for(atoms(notional)).index == bracket


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_maintenance_margin_is_continuous_at_every_boundary(symbol: str) -> None:
    """§1.2: the cum term makes MM = N x MMR - cum continuous in N."""
    spec = compile_market(next(m for m in default_markets() if m.symbol == symbol))
    brackets = spec.brackets
    for below, above in itertools.pairwise(brackets):
        n = above.floor_atoms
        # exactly (in ppm-atoms), with either bracket's MMR and cum
        assert n * below.mmr_ppm - below.cum_atoms * 1_000_000 == (
            n * above.mmr_ppm - above.cum_atoms * 1_000_000
        )
        # and the engine's rounded MM moves by at most one atom across the boundary
        step = spec.maintenance_margin_atoms(n) - spec.maintenance_margin_atoms(n - 1)
        assert 0 <= step <= 1
    # MM itself (§1.2 example): 600,000 x 0.65 % - 950 = 2,950 = 600,000 x 0.5 % - 50
    assert spec.maintenance_margin_atoms(atoms(600_000)) == atoms(2950)
    # §1.4 example A: 100,000 x 0.5 % - 50 = 450
    assert spec.maintenance_margin_atoms(atoms(100_000)) == atoms(450)


def test_maintenance_margin_rounds_up() -> None:
    spec = _btc_spec()
    # 0.000001 x 0.4 % = 4e-9 USDT, rounded up to one atom
    assert spec.maintenance_margin_atoms(1) == 1
    assert spec.maintenance_margin_atoms(250) == 1
    assert spec.maintenance_margin_atoms(251) == 2


@pytest.mark.parametrize(
    ("leverage", "cap"),
    [
        (125, "50000"),
        (126, "0"),  # no bracket allows it
        (101, "50000"),
        (100, "600000"),
        (75, "3000000"),
        (51, "3000000"),
        (50, "12000000"),
        (25, "70000000"),
        (21, "70000000"),
        (20, "100000000"),
        (1, "1800000000"),
    ],
)
def test_max_notional_at_leverage(leverage: int, cap: str) -> None:
    """§1.3: L is allowed while the notional is within the cap of the last bracket allowing L."""
    assert _btc_spec().max_notional_atoms_at(leverage) == atoms(cap)


# -- market-level checks -----------------------------------------------------------------------


def test_int64_bound_proof_rejects_an_absurd_max_price() -> None:
    absurd = Market(symbol="BTCUSDT", tick_size="0.1", step_size="0.001",
                    brackets=default_brackets()["BTCUSDT"], max_price="1000000000000000")
    with pytest.raises(MarketError, match="int64"):
        compile_market(absurd)


@pytest.mark.parametrize("market", default_markets(), ids=lambda m: m.symbol)
def test_int64_bound_holds_for_the_default_markets(market: Market) -> None:
    spec = compile_market(market)
    largest = max(spec.max_limit_qty_lots, spec.max_market_qty_lots)
    assert largest <= spec.max_position_lots
    assert spec.max_position_lots * spec.max_price_ticks * spec.atoms_per_tick_lot <= (
        NOTIONAL_BOUND_ATOMS
    )


@pytest.mark.parametrize(
    ("tick", "step"),
    [("0.01", "0.00001"), ("0.0001", "0.001"), ("0.3", "0.0000033")],
)
def test_tick_times_step_must_be_whole_atoms(tick: str, step: str) -> None:
    market = Market(symbol="XUSDT", tick_size=tick, step_size=step,
                    brackets=default_brackets()["BTCUSDT"])
    with pytest.raises(MarketError, match="whole number of atoms"):
        compile_market(market)


def test_tick_times_step_whole_atoms_accepted() -> None:
    # 0.01 x 0.0001 = 1e-6: exactly one atom
    market = Market(symbol="XUSDT", tick_size="0.01", step_size="0.0001",
                    brackets=default_brackets()["BTCUSDT"])
    assert compile_market(market).atoms_per_tick_lot == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"symbol": "btcusdt"}, "upper-case"),
        ({"tick_size": "0"}, "positive"),
        ({"price_precision": 0}, "coarser"),
        ({"maker_fee": "1"}, "fees"),
        ({"price_band": "0"}, "price_band"),
        ({"default_leverage": 126}, "default_leverage"),
        ({"max_open_orders": 0}, "max_open_orders"),
        ({"max_price": "60000.05"}, "max_price"),
    ],
    ids=lambda v: str(v),
)
def test_bad_market_parameters(changes: dict[str, object], message: str) -> None:
    market = replace(default_markets()[0], **changes)  # type: ignore[arg-type]
    with pytest.raises(MarketError, match=message):
        compile_market(market)


# -- units: the rounding helper ----------------------------------------------------------------

F, C, T, A = Rounding.FLOOR, Rounding.CEIL, Rounding.TRUNC, Rounding.AWAY


@pytest.mark.parametrize(
    ("numerator", "denominator", "floor", "ceil", "trunc", "away"),
    [
        (7, 2, 3, 4, 3, 4),
        (-7, 2, -4, -3, -3, -4),
        (7, -2, -4, -3, -3, -4),
        (-7, -2, 3, 4, 3, 4),
        (1, 3, 0, 1, 0, 1),
        (-1, 3, -1, 0, 0, -1),
        (2, 3, 0, 1, 0, 1),
        (-2, 3, -1, 0, 0, -1),
        (6, 3, 2, 2, 2, 2),  # exact: every mode agrees
        (-6, 3, -2, -2, -2, -2),
        (0, 5, 0, 0, 0, 0),
        (0, -5, 0, 0, 0, 0),
        (10**30 + 1, 10**15, 10**15, 10**15 + 1, 10**15, 10**15 + 1),  # no float anywhere
    ],
)
def test_div_rounding_table(
    numerator: int, denominator: int, floor: int, ceil: int, trunc: int, away: int
) -> None:
    got = [div(numerator, denominator, mode) for mode in (F, C, T, A)]
    assert got == [floor, ceil, trunc, away]


def test_div_agrees_with_exact_fractions() -> None:
    for n in range(-25, 26):
        for d in (-7, -3, -2, -1, 1, 2, 3, 7):
            x = Fraction(n, d)
            assert div(n, d, F) == math.floor(x)
            assert div(n, d, C) == math.ceil(x)
            assert div(n, d, T) == math.trunc(x)
            assert div(n, d, A) == (math.ceil(x) if x >= 0 else math.floor(x))


def test_div_by_zero() -> None:
    with pytest.raises(ZeroDivisionError):
        div(1, 0, F)


# -- units: exact parsing ----------------------------------------------------------------------

TENTH = Decimal("0.1")


@pytest.mark.parametrize(
    ("value", "failure", "kwargs"),
    [
        ("NaN", ParseFailure.NOT_A_NUMBER, {}),
        ("sNaN", ParseFailure.NOT_A_NUMBER, {}),
        ("inf", ParseFailure.NOT_A_NUMBER, {}),
        ("-Infinity", ParseFailure.NOT_A_NUMBER, {}),
        (float("nan"), ParseFailure.NOT_A_NUMBER, {}),
        (float("inf"), ParseFailure.NOT_A_NUMBER, {}),
        ("abc", ParseFailure.NOT_A_NUMBER, {}),
        ("", ParseFailure.NOT_A_NUMBER, {}),
        (" 1", ParseFailure.NOT_A_NUMBER, {}),
        ("1_000", ParseFailure.NOT_A_NUMBER, {}),
        (None, ParseFailure.NOT_A_NUMBER, {}),
        (True, ParseFailure.NOT_A_NUMBER, {}),
        ("0.15", ParseFailure.OFF_GRID, {}),
        # never rounds, however close: 28 significant digits, one unit in the last place off
        ("0.1000000000000000000000000001", ParseFailure.OFF_GRID, {}),
        ("0.15", ParseFailure.TOO_PRECISE, {"max_decimals": 1}),
        ("0.10000001", ParseFailure.TOO_PRECISE, {"max_decimals": 2}),
        ("-0.1", ParseFailure.NEGATIVE, {}),
        ("0", ParseFailure.NOT_POSITIVE, {"positive": True}),
        ("-0.1", ParseFailure.NOT_POSITIVE, {"positive": True, "allow_negative": True}),
        ("1e19", ParseFailure.TOO_LARGE, {}),
        ("1e30", ParseFailure.TOO_LARGE, {}),
    ],
    ids=lambda v: repr(v),
)
def test_to_units_rejects(value: object, failure: ParseFailure, kwargs: dict[str, object]) -> None:
    with pytest.raises(ParseError) as info:
        to_units(value, TENTH, **kwargs)  # type: ignore[arg-type]
    assert info.value.failure is failure


@pytest.mark.parametrize(
    ("value", "count", "kwargs"),
    [
        ("0.1", 1, {}),
        ("60000.0", 600_000, {}),
        ("1.50", 15, {"max_decimals": 1}),  # trailing zeros are not extra precision
        ("1E+2", 1000, {}),
        (Decimal("2.3"), 23, {}),
        (7, 70, {}),
        (0.3, 3, {}),  # a float goes through its shortest repr, "0.3", not 0.2999...
        ("-0.5", -5, {"allow_negative": True}),
        ("0", 0, {}),
        ("1e18", 10**19, {}),
    ],
    ids=lambda v: repr(v),
)
def test_to_units_accepts_exact_values(
    value: object, count: int, kwargs: dict[str, object]
) -> None:
    assert to_units(value, TENTH, **kwargs) == count  # type: ignore[arg-type]


def test_atoms_and_ppm() -> None:
    assert to_atoms("1535443.01") == 1_535_443_010_000
    assert to_atoms("0.000001") == 1
    with pytest.raises(ParseError):
        to_atoms("0.0000001")
    assert to_atoms("-1", allow_negative=True) == -ATOMS_PER_UNIT
    assert to_ppm("0.0065") == 6500
    assert to_ppm("0.0002") == 200
    with pytest.raises(ParseError):
        to_ppm("0.00000001")
