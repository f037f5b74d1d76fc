"""ccxt's `binanceusdm`, configured only by URLs (BINANCE_API.md §1.2), trading on perpex.

The calls a bot makes, in the order a bot makes them, against a real server on loopback:
markets, balance, leverage and margin mode, every order kind ccxt sends (limit, market,
reduce-only, stop-loss, take-profit, trailing), edit, fetch, cancel, positions (the
liquidation price equal to the facade's), trades, funding, candles, brackets, and the error
classes (with the §5.3 patch that gives a local URL the linear table)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest

from perpex.server.state import fund_new_accounts
from server_harness import Served, serve

SYMBOL = "BTC/USDT:USDT"


def client_config(base_url: str, api_key: str, secret: str) -> dict[str, Any]:
    """The README's configuration: URLs only, `fetchCurrencies` off (no sapi leak)."""
    api = {
        name: f"{base_url}/fapi/{version}"
        for name, version in (
            ("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3"),
            ("fapiPrivate", "v1"), ("fapiPrivateV2", "v2"), ("fapiPrivateV3", "v3"),
        )
    }  # fmt: skip
    api["fapiData"] = f"{base_url}/futures/data"
    api["sapi"] = f"{base_url}/sapi/v1"
    return {
        "apiKey": api_key,
        "secret": secret,
        "options": {"fetchCurrencies": False},
        "urls": {"api": api},
        "enableRateLimit": False,
    }


def exchange_for(base_url: str, api_key: str, secret: str) -> ccxt.binanceusdm:
    exchange = ccxt.binanceusdm(client_config(base_url, api_key, secret))
    # §5.3 (1): a local URL gets only ccxt's generic error table; merge the linear one.
    exchange.exceptions["exact"].update(exchange.exceptions["linear"]["exact"])
    return exchange


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(Path(tmp_path_factory.mktemp("ccxt"))) as s:
        yield s


@pytest.fixture(scope="module")
def ex(served: Served) -> ccxt.binanceusdm:
    exchange = exchange_for(served.base_url, served.api_key, served.secret)
    exchange.load_markets()
    return exchange


def facade(s: Served, fn: Any) -> Any:
    return s.state.seq.call_sync(fn, write=False)


def test_markets_and_balance(ex: ccxt.binanceusdm) -> None:
    market = ex.market(SYMBOL)
    assert market["swap"] and market["linear"] and market["settle"] == "USDT"
    assert market["precision"]["price"] == 0.1 and market["precision"]["amount"] == 0.001
    balance = ex.fetch_balance()
    assert balance["USDT"]["total"] == 10000.0 and balance["USDT"]["free"] == 10000.0


def test_orders_round_trip(served: Served, ex: ccxt.binanceusdm) -> None:
    ex.set_margin_mode("isolated", SYMBOL)
    with pytest.raises(ccxt.MarginModeAlreadySet):  # -4046 "No need to change margin type."
        ex.set_margin_mode("isolated", SYMBOL)
    ex.set_leverage(20, SYMBOL)
    # A resting limit, fetched, edited (same id), cancelled.
    order = ex.create_order(SYMBOL, "limit", "buy", 0.01, 58000)
    assert order["status"] == "open" and order["price"] == 58000
    fetched = ex.fetch_order(order["id"], SYMBOL)
    assert fetched["id"] == order["id"] and fetched["amount"] == 0.01
    if hasattr(served.state.ex, "modify_order"):
        edited = ex.edit_order(order["id"], SYMBOL, "limit", "buy", 0.02, 58100)
        assert edited["id"] == order["id"] and edited["price"] == 58100
        assert edited["amount"] == 0.02
    assert [o["id"] for o in ex.fetch_open_orders(SYMBOL)] == [order["id"]]
    canceled = ex.cancel_order(order["id"], SYMBOL)
    assert canceled["status"] == "canceled"
    assert ex.fetch_order(order["id"], SYMBOL)["status"] == "canceled"  # stays queryable
    # A market entry comes back filled with its average (freqtrade relies on it).
    entry = ex.create_order(SYMBOL, "market", "buy", 0.1)
    assert entry["status"] == "closed" and entry["filled"] == 0.1 and entry["average"] > 0
    # Protection and exits: stop-loss, take-profit, trailing (algo orders), reduce-only.
    stop = ex.create_order(SYMBOL, "market", "sell", 0.1, None, {"stopLossPrice": 57000})
    take = ex.create_order(SYMBOL, "market", "sell", 0.1, None, {"takeProfitPrice": 63000})
    trail = ex.create_order(SYMBOL, "market", "sell", 0.1, None, {"trailingPercent": 1.0})
    for algo in (stop, take, trail):
        assert algo["status"] == "open" and algo["id"]
    trigger_open = ex.fetch_open_orders(SYMBOL, params={"trigger": True})
    assert {o["id"] for o in trigger_open} >= {stop["id"], take["id"], trail["id"]}
    ex.cancel_order(trail["id"], SYMBOL, params={"trigger": True})
    limit_exit = ex.create_order(SYMBOL, "limit", "sell", 0.05, 61000, {"reduceOnly": True})
    assert limit_exit["reduceOnly"] is True
    ex.cancel_all_orders(SYMBOL)
    assert ex.fetch_open_orders(SYMBOL) == []
    # Positions: ccxt's figures are the facade's.
    (position,) = ex.fetch_positions([SYMBOL])
    view = facade(served, lambda e: e.position("demo", "BTCUSDT"))
    assert position["side"] == "long" and position["contracts"] == 0.1
    assert position["marginMode"] == "isolated"
    assert Decimal(str(position["liquidationPrice"])) == view.liquidation_price.quantize(
        Decimal("0.00000001")
    )
    trades = ex.fetch_my_trades(SYMBOL)
    assert trades and trades[-1]["side"] == "buy" and trades[-1]["fee"]["cost"] > 0
    # Close the position; nothing left.
    ex.create_order(SYMBOL, "market", "sell", 0.1, None, {"reduceOnly": True})
    assert ex.fetch_positions([SYMBOL]) == []


def test_market_data(served: Served, ex: ccxt.binanceusdm) -> None:
    rate = ex.fetch_funding_rate(SYMBOL)
    assert rate["markPrice"] > 0 and rate["fundingTimestamp"] > 0
    assert isinstance(ex.fetch_funding_rate_history(SYMBOL), list)
    candles = ex.fetch_ohlcv(SYMBOL, "1m", limit=10)
    assert candles and all(len(c) == 6 for c in candles)
    assert [c[0] for c in candles] == sorted(c[0] for c in candles)
    tiers = ex.fetch_leverage_tiers([SYMBOL])[SYMBOL]
    assert tiers[0]["minNotional"] == 0 and tiers[0]["maxLeverage"] == 125
    book = ex.fetch_order_book(SYMBOL, 5)
    assert book["bids"][0][0] < book["asks"][0][0]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda e: e.create_order(SYMBOL, "limit", "buy", 5, 59000), ccxt.InsufficientFunds),
        # -5022: a post-only buy priced through the best ask (60,000.5)
        (
            lambda e: e.create_order(SYMBOL, "limit", "buy", 0.01, 60001, {"postOnly": True}),
            ccxt.InvalidOrder,
        ),
        (lambda e: e.fetch_order("999999999", SYMBOL), ccxt.OrderNotFound),
        (lambda e: e.cancel_order("999999999", SYMBOL), ccxt.OrderNotFound),
        (
            lambda e: e.create_order(SYMBOL, "market", "sell", 0.01, None, {"reduceOnly": True}),
            ccxt.InvalidOrder,
        ),
        (lambda e: e.set_leverage(126, SYMBOL), ccxt.BadRequest),
    ],
)
def test_errors_map_to_ccxt_classes(ex: ccxt.binanceusdm, call: Any, error: type) -> None:
    with pytest.raises(error):
        call(ex)


def test_bad_credentials(served: Served) -> None:
    wrong = exchange_for(served.base_url, served.api_key, "0" * 64)
    wrong.markets = {}
    with pytest.raises(ccxt.AuthenticationError):
        wrong.fetch_balance()
    unknown = exchange_for(served.base_url, "A" * 64, served.secret)
    with pytest.raises(ccxt.AuthenticationError):
        unknown.fetch_balance()


def test_cancel_orders_by_ids_and_by_client_ids(ex: ccxt.binanceusdm) -> None:
    """ccxt's cancel_orders sends `orderidlist` / `origclientorderidlist` (lower case, as
    Binance also takes them): every named order is canceled, an unknown one answers -2011."""
    first = ex.create_order(SYMBOL, "limit", "buy", 0.01, 57000)
    second = ex.create_order(SYMBOL, "limit", "buy", 0.01, 57001)
    done = ex.cancel_orders([first["id"], second["id"], "999999"], SYMBOL)
    assert [o["id"] for o in done if o["id"]] == [first["id"], second["id"]]
    assert {o["status"] for o in done if o["id"]} == {"canceled"}
    named = ex.create_order(SYMBOL, "limit", "buy", 0.01, 57002, {"clientOrderId": "batch-c1"})
    done = ex.cancel_orders([], SYMBOL, {"clientOrderIds": ["batch-c1", "nope"]})
    assert [o["id"] for o in done if o["id"]] == [named["id"]]
    assert ex.fetch_open_orders(SYMBOL) == []
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):  # ccxt reads the one slot's code
        ex.fapiPrivateDeleteBatchOrders({"symbol": "BTCUSDT", "orderidlist": ["1"]})


def test_add_and_reduce_isolated_margin(served: Served, ex: ccxt.binanceusdm) -> None:
    """POST /fapi/v1/positionMargin through ccxt: isolated only, Binance's codes otherwise."""
    key, secret = served.new_key("margin", deposit="5000")
    served.state.seq.call_sync(lambda e: fund_new_accounts(served.state))  # not on a tick
    trader = exchange_for(served.base_url, key, secret)
    trader.load_markets()
    trader.create_order(SYMBOL, "market", "buy", 0.01)
    with pytest.raises(ccxt.ExchangeError, match="-4054"):  # a cross position: none isolated
        trader.add_margin(SYMBOL, 10)
    trader.create_order(SYMBOL, "market", "sell", 0.01, None, {"reduceOnly": True})
    trader.set_margin_mode("isolated", SYMBOL)
    trader.create_order(SYMBOL, "market", "buy", 0.01)
    (before,) = trader.fetch_positions([SYMBOL])
    added = trader.add_margin(SYMBOL, 10)
    assert (added["type"], added["amount"], added["status"]) == ("add", 10.0, "ok")
    reduced = trader.reduce_margin(SYMBOL, 4)
    assert (reduced["type"], reduced["amount"]) == ("reduce", 4.0)
    (after,) = trader.fetch_positions([SYMBOL])
    assert after["collateral"] == pytest.approx(before["collateral"] + 6, abs=0.01)
    with pytest.raises(ccxt.BadRequest, match="-4055"):  # Binance: "Amount must be positive."
        trader.fapiPrivatePostPositionMargin({"symbol": "BTCUSDT", "amount": "0", "type": 1})
    with pytest.raises(ccxt.InsufficientFunds, match="-4051"):
        trader.reduce_margin(SYMBOL, 100_000)
    with pytest.raises(ccxt.InsufficientFunds, match="-4050"):
        trader.add_margin(SYMBOL, 1_000_000)
    trader.create_order(SYMBOL, "market", "sell", 0.01, None, {"reduceOnly": True})
