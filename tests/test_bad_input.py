"""Bad input: every refusal raises ExchangeError with Binance's code and changes nothing.

One table. Each row is a call on an exchange that already holds balances, a position, resting
orders on both sides and a full set of open orders on a small market, so a half-applied
refusal would show in `state_hash()`. Codes and wording: BINANCE_API.md §5.4.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from perpex import Exchange, ExchangeError, Market
from perpex.defaults import default_brackets, default_markets

BTC = "BTCUSDT"
ETH = "ETHUSDT"
STEP = "STEPUSDT"  # step 0.005 with quantity precision 3; at most 2 open orders per account


@pytest.fixture(scope="module")
def prepared() -> Exchange:
    step_market = Market(
        symbol=STEP,
        tick_size="0.1",
        step_size="0.005",
        quantity_precision=3,
        brackets=default_brackets()[BTC],
        max_open_orders=2,
    )
    ex = Exchange(markets=[*default_markets(), step_market])
    ex.set_index_price(BTC, "60000")
    ex.set_index_price(ETH, "3000")
    ex.set_index_price(STEP, "100")
    ex.deposit("alice", "10000")
    ex.deposit("bob", "1000000")
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.5", "60100")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.5", "59900")
    assert ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "60100").status == "FILLED"
    for _ in range(2):
        ex.place_order("alice", STEP, "BUY", "LIMIT", "0.1", "99")
    ex.check_invariants()
    return ex


Call = Callable[[Exchange], object]


@dataclass(frozen=True)
class Case:
    name: str
    call: Call
    code: int
    msg: str  # a substring of the message


def order(**overrides: object) -> Call:
    """alice places a small, valid BTC limit buy, with `overrides` applied."""
    params: dict[str, object] = {
        "account": "alice",
        "symbol": BTC,
        "side": "BUY",
        "type": "LIMIT",
        "quantity": "0.01",
        "price": "59000",
    }
    params.update(overrides)
    return lambda ex: ex.place_order(**params)  # type: ignore[arg-type]


CASES = [
    # -- symbol
    Case("unknown symbol", order(symbol="XRPUSDT"), -1121, "Invalid symbol"),
    Case("lower-case symbol", order(symbol="btcusdt"), -1121, "Invalid symbol"),
    Case("unknown symbol: leverage", lambda ex: ex.set_leverage("alice", "XRPUSDT", 5), -1121,
         "Invalid symbol"),
    Case("unknown symbol: index", lambda ex: ex.set_index_price("XRPUSDT", "1"), -1121,
         "Invalid symbol"),
    Case("unknown symbol: cancel", lambda ex: ex.cancel_order("alice", "XRPUSDT", 1), -1121,
         "Invalid symbol"),
    # -- price
    Case("price off the tick (0.1)", order(price="60000.05"), -4014, "tick size"),
    Case("price with more decimals than the precision (2)", order(price="60000.001"), -1111,
         "Precision"),
    Case("price zero", order(price="0"), -4013, "min price"),
    Case("price negative", order(price="-59000"), -4013, "min price"),
    Case("price huge", order(price="1e30"), -4013, "max price"),
    Case("price above max_price", order(price="4529764.6"), -4013, "max price"),
    Case("price not a number", order(price="abc"), -1013, "Invalid price"),
    Case("price NaN", order(price="NaN"), -1013, "Invalid price"),
    Case("price missing on LIMIT", order(price=None), -1102, "'price'"),
    Case("price sent with MARKET", order(type="MARKET", price="59000"), -1106, "'price'"),
    Case("index off the tick", lambda ex: ex.set_index_price(BTC, "60000.05"), -4014,
         "tick size"),
    Case("index zero", lambda ex: ex.set_index_price(BTC, "0"), -4013, "min price"),
    # -- quantity
    Case("quantity with more decimals than the precision (3)", order(quantity="0.0001"), -1111,
         "Precision"),
    Case("quantity off the step (0.005)", order(symbol=STEP, quantity="0.001", price="99"), -4023,
         "step size"),
    Case("quantity zero", order(quantity="0"), -4003, "less than or equal to zero"),
    Case("quantity negative", order(quantity="-1"), -4003, "less than or equal to zero"),
    Case("quantity NaN", order(quantity="NaN"), -1013, "Invalid quantity"),
    Case("quantity inf", order(quantity="inf"), -1013, "Invalid quantity"),
    Case("quantity -Infinity", order(quantity="-Infinity"), -1013, "Invalid quantity"),
    Case("quantity float nan", order(quantity=float("nan")), -1013, "Invalid quantity"),
    Case("quantity not a number", order(quantity="abc"), -1013, "Invalid quantity"),
    Case("quantity with spaces", order(quantity=" 1"), -1013, "Invalid quantity"),
    Case("quantity bool", order(quantity=True), -1013, "Invalid quantity"),
    Case("quantity missing", order(quantity=None), -1102, "'quantity'"),
    Case("quantity huge", order(quantity="1e30"), -4005, "max quantity"),
    Case("quantity above LOT_SIZE max", order(quantity="1000.001"), -4005, "max quantity"),
    # -- leverage
    Case("leverage 0", lambda ex: ex.set_leverage("alice", BTC, 0), -4028, "Leverage 0"),
    Case("leverage 126 (max 125)", lambda ex: ex.set_leverage("alice", BTC, 126), -4028,
         "Leverage 126"),
    Case("leverage not a number", lambda ex: ex.set_leverage("alice", BTC, "x"),  # type: ignore[arg-type]
         -4028, "not valid"),
    Case("leverage a float", lambda ex: ex.set_leverage("alice", BTC, 2.5),  # type: ignore[arg-type]
         -4028, "not valid"),
    # -- business rules
    Case("insufficient margin", order(quantity="5", price="60000"), -2019, "insufficient"),
    Case("reduce-only would increase the long", order(reduce_only=True), -2022, "ReduceOnly"),
    Case("reduce-only without a position", order(symbol=ETH, side="SELL", price="3000",
                                                  reduce_only=True), -2022, "ReduceOnly"),
    Case("post-only would cross", order(price="60100", time_in_force="GTX"), -5022, "Post Only"),
    Case("FOK not fillable (0.4 on the book)", order(quantity="0.45", price="60100",
                                                     time_in_force="FOK"), -5021, "FOK"),
    Case("unknown order id", lambda ex: ex.cancel_order("alice", BTC, 999_999), -2011,
         "Unknown order"),
    Case("unknown client order id", lambda ex: ex.cancel_order("alice", BTC,
                                                               client_order_id="nope"),
         -2011, "Unknown order"),
    Case("cancel without an id", lambda ex: ex.cancel_order("alice", BTC), -1102, "'orderId'"),
    Case("too many open orders (2)", order(symbol=STEP, quantity="0.1", price="99"), -2025,
         "max open order"),
    Case("min notional (0.001 x 3,000 = 3 USDT)", order(symbol=ETH, quantity="0.001",
                                                         price="3000"), -4164,
         "no smaller than 5"),
    Case("limit price above the band", order(price="63000.1"), -4016, "higher than 63000.0"),
    Case("limit price below the band", order(side="SELL", price="56999.9"), -4024,
         "lower than 57000.0"),
    Case("duplicate margin type", lambda ex: ex.set_margin_mode("alice", BTC, "CROSSED"), -4046,
         "No need"),
    Case("margin type with a position", lambda ex: ex.set_margin_mode("alice", BTC, "ISOLATED"),
         -4048, "position"),
    Case("margin type with open orders", lambda ex: ex.set_margin_mode("alice", STEP,
                                                                        "ISOLATED"),
         -4047, "open orders"),
    Case("unknown margin type", lambda ex: ex.set_margin_mode("alice", ETH, "cross"), -4044,
         "ISOLATED or CROSSED"),
    Case("isolated margin on a cross position", lambda ex: ex.add_isolated_margin("alice", BTC,
                                                                                  "10"),
         -4054, "position"),
    # -- parameters
    Case("side lower case", order(side="buy"), -1117, "Invalid side"),
    Case("side unknown", order(side="HOLD"), -1117, "Invalid side"),
    Case("type unknown", order(type="FOO"), -1116, "Invalid orderType"),
    Case("type lower case", order(type="limit"), -1116, "Invalid orderType"),
    Case("time in force unknown", order(time_in_force="DAY"), -1115, "Invalid timeInForce"),
    Case("time in force None", order(time_in_force=None), -1115, "Invalid timeInForce"),
    Case("stopPrice on a LIMIT order", order(stop_price="58000"), -1106, "'stopPrice'"),
    Case("callbackRate on a LIMIT order", order(callback_rate="1"), -1106, "'callbackRate'"),
    Case("client order id with a space", order(client_order_id="my id"), -1100,
         "newClientOrderId"),
    Case("client order id too long (37)", order(client_order_id="x" * 37), -1100,
         "newClientOrderId"),
    Case("client order id empty", order(client_order_id=""), -1100, "newClientOrderId"),
    Case("account with a space", order(account="al ice"), -1100, "'account'"),
    Case("account empty", order(account=""), -1100, "'account'"),
    Case("account non-ASCII", order(account="alïce"), -1100, "'account'"),
    Case("account too long (65)", order(account="a" * 65), -1100, "'account'"),
    Case("account not a string", order(account=7), -1100, "'account'"),
    # -- money
    Case("withdraw over the available balance", lambda ex: ex.withdraw("alice", "10000"), -2018,
         "Balance is insufficient"),
    Case("withdraw from an unknown account", lambda ex: ex.withdraw("nobody", "1"), -2018,
         "Balance is insufficient"),
    Case("withdraw negative", lambda ex: ex.withdraw("alice", "-1"), -1013, "Invalid amount"),
    Case("deposit negative", lambda ex: ex.deposit("alice", "-5"), -1013, "Invalid amount"),
    Case("deposit zero", lambda ex: ex.deposit("alice", "0"), -1013, "Invalid amount"),
    Case("deposit NaN", lambda ex: ex.deposit("alice", "NaN"), -1013, "Invalid amount"),
    Case("deposit float inf", lambda ex: ex.deposit("alice", float("inf")), -1013,
         "Invalid amount"),
    Case("deposit huge", lambda ex: ex.deposit("alice", "1e30"), -1013, "Invalid amount"),
    Case("deposit below the atom", lambda ex: ex.deposit("alice", "0.0000001"), -1111,
         "Precision"),
    Case("deposit to a bad account name", lambda ex: ex.deposit("bad name", "1"), -1100,
         "'account'"),
    Case("isolated margin not a number", lambda ex: ex.add_isolated_margin("alice", BTC, "abc"),
         -1013, "Invalid amount"),
    Case("clock backwards", lambda ex: ex.advance_time("-1"), -1013, "Invalid time step"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input_is_refused_and_changes_nothing(prepared: Exchange, case: Case) -> None:
    before = prepared.state_hash()
    open_before = prepared.open_orders("alice")
    with pytest.raises(ExchangeError) as info:
        case.call(prepared)
    assert info.value.code == case.code, info.value
    assert case.msg in info.value.msg, info.value.msg
    assert str(info.value).startswith(f"{case.code}: ")
    assert prepared.state_hash() == before
    assert prepared.open_orders("alice") == open_before
    prepared.check_invariants()
    deposits, held = prepared.engine.conservation_atoms()
    assert deposits == held


def test_the_prepared_state_accepts_good_input() -> None:
    """The fixture is not broken: the neighbours of the bad inputs are accepted."""
    ex = Exchange()
    ex.set_index_price(BTC, "60000")
    ex.deposit("alice", "10000")
    assert ex.place_order("alice", BTC, "BUY", "LIMIT", "0.01", "59000.1").status == "NEW"
    assert ex.place_order("alice", BTC, "BUY", "LIMIT", "0.001", "59000.10").status == "NEW"
    assert ex.set_leverage("alice", BTC, 125) == 125
    assert ex.set_leverage("alice", BTC, 1) == 1
    assert ex.withdraw("alice", "1") == 10000 - 1
    ex.check_invariants()
