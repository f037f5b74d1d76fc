"""The trading routes over real HTTP, and the order history behind them.

Orders, algo orders and trades as Binance shows them (BINANCE_API.md §3, §4.3, §4.4): placed,
queried, modified and canceled on a running server whose maker "mm" quotes BTCUSDT 59,999.5 /
60,000.5 (tests/server_harness.py), compared with the facade's own state read in the writer
thread. Each test trades on an account of its own (a key made for it), so the tests share one
server and do not see each other. The history's user-stream payloads and its liquidation and
ADL orders are checked on an in-process exchange, where the events are at hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from perpex.core.markets import Market
from perpex.core.messages import AutoDeleveraged, TradeExecuted
from perpex.defaults import default_brackets
from perpex.exchange import Exchange
from perpex.server.account_history import ADL_CLIENT_ID, AccountHistory
from perpex.server.state import fund_new_accounts
from server_harness import Served, StaticDriver, serve, signed_request

BTC = "BTCUSDT"
BEST_BID = "59999.5"
BEST_ASK = "60000.5"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(Path(tmp_path_factory.mktemp("trade"))) as s:
        yield s


class Trader:
    """An account of its own on the shared server, funded with 10,000 USDT."""

    def __init__(self, s: Served, name: str) -> None:
        self.s = s
        self.name = name
        self.key, self.secret = s.new_key(name)
        # the server funds new keys on its next tick; fund it now rather than wait for one
        s.state.seq.call_sync(lambda ex: fund_new_accounts(s.state))
        assert read(s, lambda ex: name in ex.engine.accounts)

    def call(self, method: str, path: str, **params: Any) -> tuple[int, Any]:
        with self.s.client() as client:
            r = signed_request(client, method, path, self.key, self.secret, **params)
        return r.status_code, r.json()

    def ok(self, method: str, path: str, **params: Any) -> Any:
        status, body = self.call(method, path, **params)
        assert status == 200, body
        return body

    def refused(self, method: str, path: str, **params: Any) -> int:
        status, body = self.call(method, path, **params)
        assert status == 400, body
        assert set(body) == {"code", "msg"}
        return int(body["code"])

    def position(self) -> Decimal:
        return Decimal(read(self.s, lambda ex: ex.position(self.name, BTC).size))


def read(s: Served, fn: Callable[[Exchange], Any]) -> Any:
    return s.state.seq.call_sync(fn, write=False)


def is_flat(t: Trader) -> bool:
    return t.position() == 0


def wait_for(check: Callable[[], Any], seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def limit(side: str, qty: str, price: str, **extra: Any) -> dict[str, Any]:
    return {
        "symbol": BTC,
        "side": side,
        "type": "LIMIT",
        "quantity": qty,
        "price": price,
        "timeInForce": "GTC",
        **extra,
    }


def market(side: str, qty: str, **extra: Any) -> dict[str, Any]:
    return {
        "symbol": BTC,
        "side": side,
        "type": "MARKET",
        "quantity": qty,
        "newOrderRespType": "RESULT",
        **extra,
    }


# -- one order ------------------------------------------------------------------------------
def test_limit_order_rests_then_cancels_and_stays_queryable(served: Served) -> None:
    t = Trader(served, "limit_rests")
    placed = t.ok("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="r1"))
    assert placed["status"] == "NEW" and placed["clientOrderId"] == "r1"
    assert (placed["price"], placed["origQty"], placed["executedQty"]) == (
        "59000.0",
        "0.010",
        "0.000",
    )
    assert placed["type"] == placed["origType"] == "LIMIT" and placed["timeInForce"] == "GTC"
    assert placed["positionSide"] == "BOTH" and placed["reduceOnly"] is False
    assert isinstance(placed["orderId"], int) and placed["time"] == placed["updateTime"] > 0
    oid = placed["orderId"]
    assert read(served, lambda ex: [o.order_id for o in ex.open_orders(t.name)]) == [oid]
    assert t.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=oid) == placed
    assert t.ok("GET", "/fapi/v1/openOrder", symbol=BTC, origClientOrderId="r1") == placed
    assert [o["orderId"] for o in t.ok("GET", "/fapi/v1/openOrders", symbol=BTC)] == [oid]
    assert [o["orderId"] for o in t.ok("GET", "/fapi/v1/openOrders")] == [oid]

    canceled = t.ok("DELETE", "/fapi/v1/order", symbol=BTC, origClientOrderId="r1")
    assert canceled["orderId"] == oid and canceled["status"] == "CANCELED"
    assert canceled["updateTime"] >= placed["time"]
    assert read(served, lambda ex: ex.open_orders(t.name)) == []
    assert t.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=oid) == canceled  # still there
    assert t.ok("GET", "/fapi/v1/openOrders", symbol=BTC) == []
    assert t.refused("GET", "/fapi/v1/openOrder", symbol=BTC, orderId=oid) == -2013
    assert t.refused("DELETE", "/fapi/v1/order", symbol=BTC, orderId=oid) == -2011
    assert t.refused("GET", "/fapi/v1/order", symbol=BTC, orderId=10**12) == -2013
    assert t.refused("GET", "/fapi/v1/order", symbol="ETHUSDT", orderId=oid) == -2013


def test_market_order_result_comes_back_filled_with_its_average(served: Served) -> None:
    t = Trader(served, "market_result")
    filled = t.ok("POST", "/fapi/v1/order", **market("BUY", "0.010"))
    assert filled["status"] == "FILLED" and filled["type"] == "MARKET"
    assert (filled["avgPrice"], filled["executedQty"]) == (BEST_ASK, "0.010")
    assert filled["cumQuote"] == "600.00500000"  # 0.010 x 60,000.5
    assert t.position() == Decimal("0.010")
    assert t.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=filled["orderId"]) == filled
    # ACK: the order as it was accepted, without waiting for its fills
    ack = t.ok("POST", "/fapi/v1/order", **market("SELL", "0.010", newOrderRespType="ACK"))
    assert (ack["status"], ack["executedQty"]) == ("NEW", "0.000")
    after = t.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=ack["orderId"])
    assert (after["status"], after["avgPrice"]) == ("FILLED", BEST_BID)
    assert t.position() == 0


def test_order_refusals_carry_binance_codes(served: Served) -> None:
    t = Trader(served, "refusals")
    assert (
        t.refused("POST", "/fapi/v1/order", **market("SELL", "0.010", reduceOnly="true")) == -2022
    )
    assert t.refused("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000.05")) == -4014
    assert t.refused("POST", "/fapi/v1/order", **limit("BUY", "0.0105", "59000")) in (-4023, -1111)
    assert t.refused("POST", "/fapi/v1/order", **limit("BUY", "0", "59000")) == -4003
    assert (
        t.refused(
            "POST", "/fapi/v1/order", **{**limit("BUY", "0.010", "59000"), "symbol": "NOPEUSDT"}
        )
        == -1121
    )
    for missing in ("symbol", "side", "type"):
        params = limit("BUY", "0.010", "59000")
        del params[missing]
        status, body = t.call("POST", "/fapi/v1/order", **params)
        assert (status, body["code"]) == (400, -1102) and missing in body["msg"]
    assert t.refused("POST", "/fapi/v1/order", **market("BUY", "0.010", quantity="")) == -1102
    assert (
        t.refused("POST", "/fapi/v1/order", **{**limit("BUY", "0.010", "59000"), "side": "UP"})
        == -1117
    )
    assert (
        t.refused("POST", "/fapi/v1/order", **{**limit("BUY", "0.010", "59000"), "type": "ICE"})
        == -1116
    )
    assert (
        t.refused("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", positionSide="LONG"))
        == -4061
    )
    assert (
        t.refused("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", priceMatch="OPPONENT"))
        == -1106
    )
    assert (
        t.refused(
            "POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="bad id!")
        )
        == -1100
    )
    assert (
        t.refused("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", timeInForce="GTD"))
        == -1115
    )
    # accepted and not acted on: one-way BOTH, a self-trade prevention mode, priceProtect
    ok = t.ok(
        "POST",
        "/fapi/v1/order",
        **limit(
            "BUY",
            "0.010",
            "59000",
            positionSide="BOTH",
            selfTradePreventionMode="EXPIRE_MAKER",
            priceProtect="false",
        ),
    )
    assert ok["status"] == "NEW"
    assert t.refused("GET", "/fapi/v1/order", symbol=BTC) == -1102
    assert t.refused("DELETE", "/fapi/v1/order", symbol=BTC) == -1102
    assert read(served, lambda ex: len(ex.open_orders(t.name))) == 1  # nothing else happened


def test_a_resent_client_order_id_applies_once(served: Served) -> None:
    t = Trader(served, "resent")
    first = t.ok("POST", "/fapi/v1/order", **market("BUY", "0.010", newClientOrderId="once-1"))
    again = t.ok("POST", "/fapi/v1/order", **market("BUY", "0.010", newClientOrderId="once-1"))
    assert again == first and first["status"] == "FILLED"
    assert t.position() == Decimal("0.010")  # bought once
    resting = t.ok(
        "POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="once-2")
    )
    assert (
        t.ok("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="once-2"))
        == resting
    )
    assert len(t.ok("GET", "/fapi/v1/openOrders", symbol=BTC)) == 1
    # an algo order's id resent after it was canceled: still that algo order, nothing new
    stop = t.ok(
        "POST", "/fapi/v1/algoOrder", **stop_market("SELL", "0.010", "50000", clientAlgoId="once-3")
    )
    t.ok("DELETE", "/fapi/v1/algoOrder", algoId=stop["algoId"])
    resent = t.ok(
        "POST", "/fapi/v1/algoOrder", **stop_market("SELL", "0.010", "50000", clientAlgoId="once-3")
    )
    assert (resent["algoId"], resent["algoStatus"]) == (stop["algoId"], "CANCELED")
    assert t.ok("GET", "/fapi/v1/openAlgoOrders", symbol=BTC) == []
    # one client id names one order, whatever its kind
    assert (
        t.refused(
            "POST",
            "/fapi/v1/algoOrder",
            **stop_market("SELL", "0.010", "50000", clientAlgoId="once-2"),
        )
        == -4116
    )
    assert (
        t.refused(
            "POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="once-3")
        )
        == -4116
    )


def test_modify_keeps_the_order_id(served: Served) -> None:
    if not hasattr(Exchange, "modify_order"):
        pytest.skip("Exchange.modify_order is not there yet")
    t = Trader(served, "modify")
    placed = t.ok("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="m1"))
    modified = t.ok(
        "PUT",
        "/fapi/v1/order",
        symbol=BTC,
        orderId=placed["orderId"],
        side="BUY",
        quantity="0.020",
        price="59010.5",
    )
    assert modified["orderId"] == placed["orderId"] and modified["clientOrderId"] == "m1"
    assert (modified["price"], modified["origQty"], modified["status"]) == (
        "59010.5",
        "0.020",
        "NEW",
    )
    assert modified["time"] == placed["time"]
    assert t.ok("GET", "/fapi/v1/order", symbol=BTC, origClientOrderId="m1") == modified
    engine = read(
        served, lambda ex: [(o.order_id, o.price, o.orig_qty) for o in ex.open_orders(t.name)]
    )
    assert engine == [(placed["orderId"], Decimal("59010.5"), Decimal("0.020"))]
    # a new price across the book trades, same id
    crossed = t.ok(
        "PUT",
        "/fapi/v1/order",
        symbol=BTC,
        origClientOrderId="m1",
        side="BUY",
        quantity="0.020",
        price="60001",
    )
    assert (crossed["orderId"], crossed["status"], crossed["avgPrice"]) == (
        placed["orderId"],
        "FILLED",
        BEST_ASK,
    )
    assert (
        t.refused(
            "PUT",
            "/fapi/v1/order",
            symbol=BTC,
            orderId=placed["orderId"],
            side="BUY",
            quantity="0.030",
            price="59000",
        )
        == -2013
    )
    assert (
        t.refused(
            "PUT",
            "/fapi/v1/order",
            symbol=BTC,
            orderId=placed["orderId"],
            side="BUY",
            quantity="0.030",
        )
        == -1102
    )


# -- batches and lists ----------------------------------------------------------------------
def test_batch_orders_answer_slot_by_slot(served: Served) -> None:
    t = Trader(served, "batch")
    batch = [
        limit("BUY", "0.001", "59000"),
        limit("BUY", "0.001", "59000.05"),
        {**limit("SELL", "0.002", "61000"), "newClientOrderId": "b3"},
    ]
    first, bad, third = t.ok("POST", "/fapi/v1/batchOrders", batchOrders=json.dumps(batch))
    assert first["status"] == "NEW" and first["price"] == "59000.0"
    assert bad == {"code": -4014, "msg": "Price not increased by tick size."}
    assert third["clientOrderId"] == "b3" and third["side"] == "SELL"
    ids = [o["orderId"] for o in t.ok("GET", "/fapi/v1/openOrders", symbol=BTC)]
    assert ids == sorted([first["orderId"], third["orderId"]])
    assert (
        t.refused("POST", "/fapi/v1/batchOrders", batchOrders=json.dumps([batch[0]] * 6)) == -1130
    )
    assert t.refused("POST", "/fapi/v1/batchOrders", batchOrders="[{") == -1130
    canceled = t.ok(
        "DELETE",
        "/fapi/v1/batchOrders",
        symbol=BTC,
        orderIdList=json.dumps([first["orderId"], 10**12]),
    )
    assert canceled[0]["status"] == "CANCELED" and canceled[1]["code"] == -2011
    by_client = t.ok(
        "DELETE", "/fapi/v1/batchOrders", symbol=BTC, origClientOrderIdList=json.dumps(["b3"])
    )
    assert by_client[0]["orderId"] == third["orderId"] and by_client[0]["status"] == "CANCELED"
    assert read(served, lambda ex: ex.open_orders(t.name)) == []


def test_all_orders_after_fills_and_cancels(served: Served) -> None:
    t = Trader(served, "history")
    bought = t.ok("POST", "/fapi/v1/order", **market("BUY", "0.003"))
    resting = t.ok("POST", "/fapi/v1/order", **limit("BUY", "0.001", "58000"))
    canceled = t.ok("POST", "/fapi/v1/order", **limit("BUY", "0.001", "58100"))
    t.ok("DELETE", "/fapi/v1/order", symbol=BTC, orderId=canceled["orderId"])
    # an IOC that finds nothing at its price expires
    expired = t.ok(
        "POST",
        "/fapi/v1/order",
        **limit("BUY", "0.001", "59000", timeInForce="IOC", newOrderRespType="RESULT"),
    )
    assert expired["status"] == "EXPIRED"
    rows = t.ok("GET", "/fapi/v1/allOrders", symbol=BTC)
    assert [(r["orderId"], r["status"]) for r in rows] == [
        (bought["orderId"], "FILLED"),
        (resting["orderId"], "NEW"),
        (canceled["orderId"], "CANCELED"),
        (expired["orderId"], "EXPIRED"),
    ]
    assert rows[0]["avgPrice"] == BEST_ASK and rows[0]["executedQty"] == "0.003"
    newest = t.ok("GET", "/fapi/v1/allOrders", symbol=BTC, limit=2)
    assert [r["orderId"] for r in newest] == [canceled["orderId"], expired["orderId"]]
    since = t.ok("GET", "/fapi/v1/allOrders", symbol=BTC, orderId=resting["orderId"], limit=2)
    assert [r["orderId"] for r in since] == [resting["orderId"], canceled["orderId"]]
    start = rows[0]["time"]
    window = t.ok("GET", "/fapi/v1/allOrders", symbol=BTC, startTime=start, endTime=start + 60_000)
    assert [r["orderId"] for r in window] == [r["orderId"] for r in rows]
    assert t.ok("GET", "/fapi/v1/allOrders", symbol="ETHUSDT") == []
    assert t.refused("GET", "/fapi/v1/allOrders", symbol=BTC, limit=1001) == -1130
    assert t.refused("GET", "/fapi/v1/allOrders") == -1102
    done = t.ok("DELETE", "/fapi/v1/allOpenOrders", symbol=BTC)
    assert done == {"code": 200, "msg": "The operation of cancel all open order is done."}
    assert read(served, lambda ex: ex.open_orders(t.name)) == []
    assert (
        t.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=resting["orderId"])["status"]
        == "CANCELED"
    )


def test_user_trades_rows(served: Served) -> None:
    t = Trader(served, "trades")
    bought = t.ok("POST", "/fapi/v1/order", **market("BUY", "0.010"))
    sold = t.ok("POST", "/fapi/v1/order", **market("SELL", "0.010"))
    buy, sell = t.ok("GET", "/fapi/v1/userTrades", symbol=BTC)
    assert buy["orderId"] == bought["orderId"] and sell["orderId"] == sold["orderId"]
    assert (buy["side"], buy["price"], buy["qty"], buy["quoteQty"]) == (
        "BUY",
        BEST_ASK,
        "0.010",
        "600.00500000",
    )
    assert buy["commission"] == "0.30000300"  # 0.05 % taker of 600.005 = 0.3000025, atoms up
    assert (buy["buyer"], buy["maker"], buy["realizedPnl"]) == (True, False, "0.00000000")
    assert (sell["side"], sell["price"], sell["buyer"]) == ("SELL", BEST_BID, False)
    assert sell["realizedPnl"] == "-0.01000000"  # (59,999.5 - 60,000.5) x 0.010
    assert buy["commissionAsset"] == buy["marginAsset"] == "USDT" and buy["positionSide"] == "BOTH"
    assert isinstance(buy["id"], int) and sell["id"] > buy["id"] and buy["time"] > 0
    wallet = read(served, lambda ex: ex.account(t.name).wallet_balance)
    fees = Decimal(buy["commission"]) + Decimal(sell["commission"])
    assert wallet == Decimal(10000) + Decimal(sell["realizedPnl"]) - fees
    assert t.ok("GET", "/fapi/v1/userTrades", symbol=BTC, fromId=sell["id"]) == [sell]
    assert t.ok("GET", "/fapi/v1/userTrades", symbol=BTC, limit=1) == [sell]
    assert t.ok("GET", "/fapi/v1/userTrades", symbol=BTC, orderId=bought["orderId"]) == [buy]
    assert t.ok("GET", "/fapi/v1/userTrades", symbol=BTC, startTime=buy["time"]) == [buy, sell]
    assert t.ok("GET", "/fapi/v1/userTrades", symbol="ETHUSDT") == []
    week = 7 * 24 * 3600 * 1000
    assert (
        t.refused("GET", "/fapi/v1/userTrades", symbol=BTC, startTime=0, endTime=week + 1) == -1127
    )
    assert t.refused("GET", "/fapi/v1/userTrades", symbol=BTC, fromId=1, startTime=0) == -1128
    assert t.refused("GET", "/fapi/v1/userTrades", symbol=BTC, limit=1001) == -1130
    assert t.refused("GET", "/fapi/v1/userTrades", symbol="NOPE") == -1121


# -- algo orders ----------------------------------------------------------------------------
def stop_market(side: str, qty: str, trigger: str, **extra: Any) -> dict[str, Any]:
    return {
        "algoType": "CONDITIONAL",
        "symbol": BTC,
        "side": side,
        "type": "STOP_MARKET",
        "quantity": qty,
        "triggerPrice": trigger,
        "workingType": "MARK_PRICE",
        "newOrderRespType": "RESULT",
        **extra,
    }


def test_algo_orders_fire_and_show_the_order_they_placed(served: Served) -> None:
    """A STOP_MARKET (algoOrder), a TRAILING_STOP_MARKET at 1 % (algoOrder) and an old-style
    STOP_MARKET sent to /fapi/v1/order, each closing a long, all fired by one drop of the
    index to 58,900."""
    stop, trail, legacy = (Trader(served, n) for n in ("algo_stop", "algo_trail", "algo_legacy"))
    for t in (stop, trail, legacy):
        t.ok("POST", "/fapi/v1/order", **market("BUY", "0.010"))
    placed = stop.ok(
        "POST",
        "/fapi/v1/algoOrder",
        **stop_market("SELL", "0.010", "59000", reduceOnly="true", clientAlgoId="s1"),
    )
    assert (placed["algoStatus"], placed["orderType"], placed["algoType"]) == (
        "NEW",
        "STOP_MARKET",
        "CONDITIONAL",
    )
    assert (placed["triggerPrice"], placed["quantity"], placed["clientAlgoId"]) == (
        "59000.0",
        "0.010",
        "s1",
    )
    assert placed["actualOrderId"] == "" and placed["reduceOnly"] is True
    assert placed["workingType"] == "MARK_PRICE" and placed["createTime"] > 0
    trailing = trail.ok(
        "POST",
        "/fapi/v1/algoOrder",
        **stop_market(
            "SELL", "0.010", "", type="TRAILING_STOP_MARKET", callbackRate="1", reduceOnly="true"
        ),
    )
    assert (trailing["orderType"], trailing["callbackRate"], trailing["algoStatus"]) == (
        "TRAILING_STOP_MARKET",
        "1",
        "NEW",
    )
    old = legacy.ok(
        "POST",
        "/fapi/v1/order",
        symbol=BTC,
        side="SELL",
        type="STOP_MARKET",
        quantity="0.010",
        stopPrice="59000",
        reduceOnly="true",
        workingType="MARK_PRICE",
    )
    assert (old["type"], old["status"], old["stopPrice"]) == ("STOP_MARKET", "NEW", "59000.0")
    for t, algo_id in ((stop, placed["algoId"]), (trail, trailing["algoId"])):
        assert [a["algoId"] for a in t.ok("GET", "/fapi/v1/openAlgoOrders", symbol=BTC)] == [
            algo_id
        ]
        assert t.ok("GET", "/fapi/v1/openOrders", symbol=BTC) == []  # regular orders only
    # would trigger at once: refused
    assert (
        stop.refused("POST", "/fapi/v1/algoOrder", **stop_market("SELL", "0.010", "60100")) == -2021
    )
    assert (
        stop.refused(
            "POST", "/fapi/v1/algoOrder", **stop_market("SELL", "0.010", "59000", type="MARKET")
        )
        == -1116
    )
    assert (
        stop.refused(
            "POST", "/fapi/v1/algoOrder", **stop_market("SELL", "0.010", "59000", algoType="TWAP")
        )
        == -1130
    )

    # freqtrade's stop-loss on exchange, through ccxt (BINANCE_API.md §7.2)
    bot = Trader(served, "algo_ccxt")
    bot.ok("POST", "/fapi/v1/order", **market("BUY", "0.010"))
    client = ccxt_client(served, bot)
    client.load_markets()
    bot_stop = client.create_order(
        "BTC/USDT:USDT",
        "stop_market",
        "sell",
        0.01,
        None,
        {"stopPrice": 59000, "reduceOnly": True, "workingType": "MARK_PRICE"},
    )
    assert bot_stop["status"] == "open"

    driver = served.state.driver
    assert isinstance(driver, StaticDriver)
    before = dict(driver.prices)
    driver.prices = {**before, BTC: 589_000}  # the next tick publishes it
    try:
        for t in (stop, trail, legacy, bot):
            wait_for(partial(is_flat, t))
    finally:
        driver.prices = before
    for t, algo_id in ((stop, placed["algoId"]), (trail, trailing["algoId"])):
        fired = t.ok("GET", "/fapi/v1/algoOrder", algoId=algo_id)
        assert fired["algoStatus"] == "FINISHED" and fired["triggerTime"] > 0
        actual = t.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=int(fired["actualOrderId"]))
        assert (actual["status"], actual["executedQty"], actual["type"]) == (
            "FILLED",
            "0.010",
            "MARKET",
        )
        assert actual["origType"] == fired["orderType"] and actual["reduceOnly"] is True
        assert fired["avgPrice"] == actual["avgPrice"] and fired["executedQty"] == "0.010"
        (trade,) = t.ok("GET", "/fapi/v1/userTrades", symbol=BTC, orderId=actual["orderId"])
        assert trade["price"] == actual["avgPrice"] and trade["side"] == "SELL"
        assert t.ok("GET", "/fapi/v1/openAlgoOrders") == []
        history = t.ok("GET", "/fapi/v1/allAlgoOrders", symbol=BTC)
        assert [a["algoId"] for a in history] == [algo_id]
    by_client = stop.ok("GET", "/fapi/v1/algoOrder", clientAlgoId="s1")
    assert by_client["algoId"] == placed["algoId"]
    assert stop.refused("DELETE", "/fapi/v1/algoOrder", algoId=placed["algoId"]) == -2011
    old_now = legacy.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=old["orderId"])
    assert (old_now["status"], old_now["executedQty"]) == ("FILLED", "0.010")
    seen = client.fetch_order(bot_stop["id"], "BTC/USDT:USDT", params={"stop": True})
    assert seen["status"] == "closed"
    actual = client.fetch_order(seen["info"]["actualOrderId"], "BTC/USDT:USDT")
    assert (actual["status"], actual["filled"], actual["reduceOnly"]) == ("closed", 0.01, True)


def test_algo_cancels(served: Served) -> None:
    t = Trader(served, "algo_cancel")
    take = t.ok(
        "POST",
        "/fapi/v1/algoOrder",
        **stop_market(
            "BUY", "0.010", "59000", type="TAKE_PROFIT", price="59000", timeInForce="GTC"
        ),
    )
    stop = t.ok(
        "POST", "/fapi/v1/algoOrder", **stop_market("BUY", "0.010", "61500", clientAlgoId="c2")
    )
    assert (take["orderType"], take["price"]) == ("TAKE_PROFIT", "59000.0")
    reply = t.ok("DELETE", "/fapi/v1/algoOrder", clientAlgoId="c2")
    assert reply == {
        "algoId": stop["algoId"],
        "clientAlgoId": "c2",
        "code": "200",
        "msg": "success",
    }
    assert t.ok("GET", "/fapi/v1/algoOrder", algoId=stop["algoId"])["algoStatus"] == "CANCELED"
    done = t.ok("DELETE", "/fapi/v1/algoOpenOrders", symbol=BTC)
    assert done["code"] == 200
    assert t.ok("GET", "/fapi/v1/algoOrder", algoId=take["algoId"])["algoStatus"] == "CANCELED"
    assert read(served, lambda ex: ex.open_orders(t.name)) == []
    assert t.refused("GET", "/fapi/v1/algoOrder") == -1102
    assert t.refused("GET", "/fapi/v1/algoOrder", algoId=10**12) == -2013


def test_one_account_never_sees_or_touches_anothers_orders(served: Served) -> None:
    alice, bob = Trader(served, "iso_alice"), Trader(served, "iso_bob")
    order = alice.ok(
        "POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="mine")
    )
    algo = alice.ok(
        "POST", "/fapi/v1/algoOrder", **stop_market("BUY", "0.010", "61000", clientAlgoId="mine-a")
    )
    oid = order["orderId"]
    assert bob.refused("GET", "/fapi/v1/order", symbol=BTC, orderId=oid) == -2013
    assert bob.refused("GET", "/fapi/v1/order", symbol=BTC, origClientOrderId="mine") == -2013
    assert bob.refused("GET", "/fapi/v1/openOrder", symbol=BTC, orderId=oid) == -2013
    assert bob.refused("DELETE", "/fapi/v1/order", symbol=BTC, orderId=oid) == -2011
    assert bob.refused("DELETE", "/fapi/v1/order", symbol=BTC, origClientOrderId="mine") == -2011
    assert (
        bob.refused(
            "PUT",
            "/fapi/v1/order",
            symbol=BTC,
            orderId=oid,
            side="BUY",
            quantity="0.020",
            price="59001",
        )
        == -2013
    )
    assert bob.refused("GET", "/fapi/v1/algoOrder", algoId=algo["algoId"]) == -2013
    assert bob.refused("DELETE", "/fapi/v1/algoOrder", algoId=algo["algoId"]) == -2011
    assert bob.refused("GET", "/fapi/v1/order", symbol=BTC, orderId=algo["algoId"]) == -2013
    deleted = bob.ok("DELETE", "/fapi/v1/batchOrders", symbol=BTC, orderIdList=json.dumps([oid]))
    assert deleted == [{"code": -2011, "msg": "Unknown order sent."}]
    bob.ok("DELETE", "/fapi/v1/allOpenOrders", symbol=BTC)
    bob.ok("DELETE", "/fapi/v1/algoOpenOrders", symbol=BTC)
    assert bob.ok("GET", "/fapi/v1/openOrders") == []
    assert bob.ok("GET", "/fapi/v1/openAlgoOrders") == []
    assert bob.ok("GET", "/fapi/v1/allOrders", symbol=BTC) == []
    # a client id is per account: bob may use alice's
    assert (
        bob.ok("POST", "/fapi/v1/order", **limit("BUY", "0.001", "58000", newClientOrderId="mine"))[
            "orderId"
        ]
        != oid
    )
    assert alice.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=oid)["status"] == "NEW"
    assert alice.ok("GET", "/fapi/v1/algoOrder", algoId=algo["algoId"])["algoStatus"] == "NEW"
    assert [o.order_id for o in read(served, lambda ex: ex.open_orders("iso_alice"))] == sorted(
        [oid, algo["algoId"]]
    )


def test_history_is_rebuilt_from_the_journal_on_restart(tmp_path: Path) -> None:
    with serve(tmp_path) as s:
        t = Trader(s, "restart")
        t.ok("POST", "/fapi/v1/order", **market("BUY", "0.010"))
        t.ok("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="keep"))
        t.ok("POST", "/fapi/v1/algoOrder", **stop_market("SELL", "0.010", "50000"))
        # an order placed with another self-trade prevention mode shows it after the restart
        t.ok("POST", "/fapi/v1/order", **limit("SELL", "0.010", "60000.4"))
        t.ok("POST", "/fapi/v1/order", **limit("BUY", "0.010", "60000.4",
             selfTradePreventionMode="EXPIRE_BOTH"))  # fmt: skip
        before = (
            t.ok("GET", "/fapi/v1/allOrders", symbol=BTC),
            t.ok("GET", "/fapi/v1/allAlgoOrders", symbol=BTC),
            t.ok("GET", "/fapi/v1/userTrades", symbol=BTC),
        )
        key, secret = t.key, t.secret
    with serve(tmp_path) as s:
        t = Trader.__new__(Trader)
        t.s, t.name, t.key, t.secret = s, "restart", key, secret
        after = (
            t.ok("GET", "/fapi/v1/allOrders", symbol=BTC),
            t.ok("GET", "/fapi/v1/allAlgoOrders", symbol=BTC),
            t.ok("GET", "/fapi/v1/userTrades", symbol=BTC),
        )
        assert after == before
        modes = [(o["status"], o["selfTradePreventionMode"]) for o in after[0]]
        assert modes[-2:] == [("EXPIRED_IN_MATCH", "EXPIRE_TAKER"),
                              ("EXPIRED_IN_MATCH", "EXPIRE_BOTH")]  # fmt: skip
        # and the resent client id still applies once
        resent = t.ok(
            "POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000", newClientOrderId="keep")
        )
        assert resent == before[0][1]


# -- the history and the user stream, in process ----------------------------------------------
def stream_of(history: AccountHistory, account: str, event: str | None = None) -> list[Any]:
    """The account's user-stream payloads (typed Any: JSON as the publisher sends it)."""
    found: list[Any] = [m for a, m in history.user_messages if a == account]
    return [m for m in found if event is None or m["e"] == event]


def zero_fee_btc() -> Market:
    return Market(
        symbol=BTC,
        tick_size="0.1",
        step_size="0.001",
        brackets=list(default_brackets()[BTC]),
        maker_fee="0",
        taker_fee="0",
        max_quantity="1000",
        max_market_quantity="1000",
    )


def test_user_stream_payloads_for_an_order_life() -> None:
    ex = Exchange(mark_price="index")
    history = AccountHistory(list(ex._specs.values()))
    history.live = True
    ex.deposit("mm", "1000000")
    ex.deposit("bob", "10000")
    ex.set_index_price(BTC, "60000")
    ex.advance_time(1)
    ex.place_order("mm", BTC, "SELL", "LIMIT", "0.020", "60000.5", client_order_id="ask")
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.030", "60000.5", client_order_id="bid")
    ex.modify_order("bob", BTC, client_order_id="bid", side="BUY", quantity="0.025", price="60000")
    ex.cancel_order("bob", BTC, client_order_id="bid")
    events = ex.take_events()
    history.apply(events)
    bob = stream_of(history, "bob")
    steps = [(m["o"]["x"], m["o"]["X"], m["o"]["l"], m["o"]["z"]) for m in bob]
    assert steps == [
        ("NEW", "NEW", "0.000", "0.000"),
        ("TRADE", "PARTIALLY_FILLED", "0.020", "0.020"),
        ("AMENDMENT", "PARTIALLY_FILLED", "0.000", "0.020"),
        ("CANCELED", "CANCELED", "0.000", "0.020"),
    ]
    trade = bob[1]
    assert trade["e"] == "ORDER_TRADE_UPDATE" and trade["E"] == trade["T"] == ex.time_ns // 10**6
    o = trade["o"]
    assert (o["s"], o["c"], o["S"], o["o"], o["f"], o["q"], o["p"]) == (
        BTC,
        "bid",
        "BUY",
        "LIMIT",
        "GTC",
        "0.030",
        "60000.5",
    )
    assert (o["ap"], o["L"], o["m"], o["R"], o["ps"], o["n"], o["N"]) == (
        "60000.5",
        "60000.5",
        False,
        False,
        "BOTH",
        "0.60000500",
        "USDT",
    )
    assert o["b"] == "600.00500000" and o["a"] == "0.00000000"  # the 0.010 left, bid side
    assert isinstance(o["t"], int) and o["i"] == bob[0]["o"]["i"]
    expected = {
        "s",
        "c",
        "S",
        "o",
        "f",
        "q",
        "p",
        "ap",
        "sp",
        "x",
        "X",
        "i",
        "l",
        "z",
        "L",
        "N",
        "n",
        "T",
        "t",
        "b",
        "a",
        "m",
        "R",
        "wt",
        "ot",
        "ps",
        "cp",
        "AP",
        "cr",
        "pP",
        "si",
        "ss",
        "rp",
        "V",
        "pm",
        "gtd",
    }
    assert set(o) == expected
    amended = bob[2]["o"]
    assert (amended["q"], amended["p"]) == ("0.025", "60000.0")
    mm = [m["o"]["x"] for m in stream_of(history, "mm")]
    assert mm == ["NEW", "TRADE"]
    # not live (the start-up replay): the same history, no payloads
    replayed = AccountHistory(list(ex._specs.values()))
    for event in events:  # (one event at a time: the chunking makes no difference)
        replayed.apply([event])
    assert replayed.user_messages == []
    assert replayed.orders("bob", BTC) == history.orders("bob", BTC)
    assert replayed.trades("bob", BTC) == history.trades("bob", BTC)


def test_algo_update_payloads() -> None:
    ex = Exchange(mark_price="index")
    history = AccountHistory(list(ex._specs.values()))
    history.live = True
    ex.deposit("mm", "1000000")
    ex.deposit("bob", "10000")
    ex.set_index_price(BTC, "60000")
    ex.place_order("mm", BTC, "BUY", "LIMIT", "1", "59000")
    ex.place_order("mm", BTC, "SELL", "LIMIT", "1", "60001")
    ex.place_order("bob", BTC, "BUY", "MARKET", "0.010")
    stop = ex.place_order(
        "bob",
        BTC,
        "SELL",
        "STOP_MARKET",
        "0.010",
        stop_price="59500",
        reduce_only=True,
        client_order_id="st",
    )
    ex.set_index_price(BTC, "59400")
    history.apply(ex.take_events())
    algo = stream_of(history, "bob", "ALGO_UPDATE")
    statuses = [m["o"]["X"] for m in algo]
    assert statuses == ["NEW", "TRIGGERED", "FINISHED"]
    done = algo[-1]["o"]
    assert (done["aid"], done["caid"], done["at"], done["o"], done["tp"]) == (
        stop.order_id,
        "st",
        "CONDITIONAL",
        "STOP_MARKET",
        "59500.0",
    )
    assert (done["ap"], done["aq"], done["act"], done["R"]) == ("59000.0", "0.010", "MARKET", True)
    actual = history.order("bob", int(done["ai"]))
    assert actual is not None and actual.status == "FILLED" and actual.client_order_id == "st"
    fills = [
        m["o"]
        for m in stream_of(history, "bob", "ORDER_TRADE_UPDATE")
        if m["o"]["i"] == actual.order_id
    ]
    assert [(f["x"], f["X"], f["ot"], f["sp"]) for f in fills] == [
        ("NEW", "NEW", "STOP_MARKET", "59500.0"),
        ("TRADE", "FILLED", "STOP_MARKET", "59500.0"),
    ]


def test_liquidation_and_adl_fills_belong_to_their_accounts() -> None:
    """alice (isolated long 1 BTC at 100,000, 20x: bankruptcy 95,000) is liquidated at 94,600
    with one bid of 0.3 at 95,500 in the book and no insurance fund: the liquidation order
    takes the bid, ADL closes the other 0.7 against the shorts at 95,000."""
    ex = Exchange(markets=[zero_fee_btc()], mark_price="index")
    history = AccountHistory(list(ex._specs.values()))
    history.live = True
    ex.set_index_price(BTC, "100000")
    ex.deposit("alice", "5000")
    ex.set_margin_mode("alice", BTC, "ISOLATED")
    ex.set_leverage("alice", BTC, 20)
    for name, leverage, qty in (("s_hi", 50, "0.2"), ("s_lo", 10, "0.8")):
        ex.deposit(name, "100000")
        ex.set_margin_mode(name, BTC, "ISOLATED")
        ex.set_leverage(name, BTC, leverage)
        ex.place_order(name, BTC, "SELL", "LIMIT", qty, "100000")
    assert ex.place_order("alice", BTC, "BUY", "LIMIT", "1", "100000").status == "FILLED"
    ex.deposit("bids", "1000000")
    ex.place_order("bids", BTC, "BUY", "LIMIT", "0.3", "95500")
    ex.set_index_price(BTC, "97000")
    history.apply(ex.take_events())
    history.user_messages.clear()
    ex.set_index_price(BTC, "94600")
    events = ex.take_events()
    history.apply(events)
    adl = [e for e in events if isinstance(e, AutoDeleveraged)]
    assert sum(e.qty_lots for e in adl) == 700 and {e.counterparty_account for e in adl} <= {
        "s_hi",
        "s_lo",
    }
    book_fills = [e for e in events if isinstance(e, TradeExecuted) and e.liquidation]
    assert [(e.qty_lots, e.price_ticks) for e in book_fills] == [(300, 955_000)]

    alice_orders = [o for o in history.orders("alice", BTC) if o.type == "LIQUIDATION"]
    assert alice_orders and all(o.client_order_id.startswith("autoclose-") for o in alice_orders)
    assert all(o.reduce_only and o.side == -1 and not o.is_open for o in alice_orders)
    assert sum(o.filled_lots for o in alice_orders) == 1000  # the whole position
    alice_trades = history.trades("alice", BTC)
    assert sum(t.qty_lots for t in alice_trades if t.side == -1) == 1000
    stream = [m["o"] for m in stream_of(history, "alice")]
    assert {o["o"] for o in stream} == {"LIQUIDATION"}
    assert all(o["c"].startswith("autoclose-") for o in stream)
    for e in adl:
        (order,) = [
            o for o in history.orders(e.counterparty_account, BTC) if o.type == "LIQUIDATION"
        ]
        assert (order.client_order_id, order.status, order.side) == (ADL_CLIENT_ID, "FILLED", 1)
        (trade,) = [
            t for t in history.trades(e.counterparty_account, BTC) if t.order_id == order.order_id
        ]
        # a short from 100,000 closed at 95,000: +5,000 per BTC, exactly as the engine booked it
        assert trade.realized_pnl_atoms == e.qty_lots * 5_000 * 1_000
        assert trade.price_ticks == 950_000 and trade.fee_atoms == 0
    # the engine agrees: the counterparties' wallets hold that realized PnL
    for name in {e.counterparty_account for e in adl}:
        gained = sum(t.realized_pnl_atoms for t in history.trades(name, BTC))
        assert ex.account(name).wallet_balance == Decimal(100000) + Decimal(gained) / 10**6


# -- ccxt -----------------------------------------------------------------------------------
def ccxt_client(s: Served, t: Trader) -> Any:
    """ccxt.binanceusdm configured as BINANCE_API.md §1.2: URLs only, fetchCurrencies off."""
    ccxt = pytest.importorskip("ccxt")
    api = {
        name: f"{s.base_url}/fapi/{version}"
        for name, version in (
            ("fapiPublic", "v1"),
            ("fapiPublicV2", "v2"),
            ("fapiPublicV3", "v3"),
            ("fapiPrivate", "v1"),
            ("fapiPrivateV2", "v2"),
            ("fapiPrivateV3", "v3"),
        )
    }
    api["fapiData"] = f"{s.base_url}/futures/data"
    api["sapi"] = f"{s.base_url}/sapi/v1"
    return ccxt.binanceusdm(
        {
            "apiKey": t.key,
            "secret": t.secret,
            "enableRateLimit": False,
            "options": {"fetchCurrencies": False},
            "urls": {"api": api},
        }
    )


def test_ccxt_orders_round_trip(served: Served) -> None:
    t = Trader(served, "ccxt")
    ex = ccxt_client(served, t)
    symbol = "BTC/USDT:USDT"
    ex.load_markets()
    resting = ex.create_order(symbol, "limit", "buy", 0.01, 59000)
    assert (resting["status"], resting["price"], resting["amount"]) == ("open", 59000.0, 0.01)
    fetched = ex.fetch_order(resting["id"], symbol)
    assert (fetched["id"], fetched["status"], fetched["clientOrderId"]) == (
        resting["id"],
        "open",
        resting["clientOrderId"],
    )
    if hasattr(Exchange, "modify_order"):
        edited = ex.edit_order(resting["id"], symbol, "limit", "buy", 0.02, 59010)
        assert (edited["id"], edited["price"], edited["amount"]) == (resting["id"], 59010.0, 0.02)
    assert [o["id"] for o in ex.fetch_open_orders(symbol)] == [resting["id"]]
    assert ex.cancel_order(resting["id"], symbol)["status"] == "canceled"

    bought = ex.create_order(symbol, "market", "buy", 0.02)
    assert (bought["status"], bought["filled"], bought["average"]) == ("closed", 0.02, 60000.5)
    closed = ex.create_order(symbol, "market", "sell", 0.005, params={"reduceOnly": True})
    assert (closed["status"], closed["reduceOnly"]) == ("closed", True)
    stop = ex.create_order(
        symbol, "market", "sell", 0.005, params={"stopLossPrice": 59000, "reduceOnly": True}
    )
    take = ex.create_order(
        symbol, "market", "sell", 0.005, params={"takeProfitPrice": 61000, "reduceOnly": True}
    )
    trail = ex.create_order(
        symbol, "market", "sell", 0.005, params={"trailingPercent": 1, "reduceOnly": True}
    )
    assert (stop["status"], stop["triggerPrice"]) == ("open", 59000.0)
    assert (take["status"], take["triggerPrice"]) == ("open", 61000.0)
    assert trail["info"]["orderType"] == "TRAILING_STOP_MARKET"
    open_triggers = ex.fetch_open_orders(symbol, params={"trigger": True})
    assert sorted(o["id"] for o in open_triggers) == sorted([stop["id"], take["id"], trail["id"]])
    assert ex.fetch_open_orders(symbol) == []
    ex.cancel_order(take["id"], symbol, params={"trigger": True})
    assert ex.fetch_order(take["id"], symbol, params={"trigger": True})["status"] == "canceled"
    ex.create_order(symbol, "limit", "buy", 0.01, 58000)
    ex.cancel_all_orders(symbol)
    assert ex.fetch_open_orders(symbol) == []
    ex.cancel_all_orders(symbol, params={"trigger": True})
    assert ex.fetch_open_orders(symbol, params={"trigger": True}) == []

    trades = ex.fetch_my_trades(symbol)
    assert [(x["side"], x["amount"], x["takerOrMaker"]) for x in trades] == [
        ("buy", 0.02, "taker"),
        ("sell", 0.005, "taker"),
    ]
    assert trades[0]["price"] == 60000.5 and trades[0]["fee"]["currency"] == "USDT"
    assert trades[0]["order"] == bought["id"]
    statuses = sorted(o["status"] for o in ex.fetch_orders(symbol))
    assert statuses == ["canceled", "canceled", "closed", "closed"]


# -- self-trade prevention ------------------------------------------------------------------
OWN_ASK = "60000.4"  # inside the maker's spread (59,999.5 / 60,000.5): the best ask


@pytest.mark.parametrize(
    ("mode", "echo", "buy_status", "ask_status"),
    [
        (None, "EXPIRE_TAKER", "EXPIRED_IN_MATCH", "NEW"),
        ("NONE", "EXPIRE_TAKER", "EXPIRED_IN_MATCH", "NEW"),
        ("EXPIRE_TAKER", "EXPIRE_TAKER", "EXPIRED_IN_MATCH", "NEW"),
        ("EXPIRE_MAKER", "EXPIRE_MAKER", "NEW", "EXPIRED_IN_MATCH"),
        ("EXPIRE_BOTH", "EXPIRE_BOTH", "EXPIRED_IN_MATCH", "EXPIRED_IN_MATCH"),
    ],
)
def test_self_trade_prevention_modes(
    served: Served, mode: str | None, echo: str, buy_status: str, ask_status: str
) -> None:
    """A buy that reaches the account's own best ask: Binance's three modes (NONE and none
    sent: expire the taker, as this exchange never lets an account trade with itself)."""
    t = Trader(served, f"stp-{mode or 'default'}".lower().replace("_", "-"))
    ask = t.ok("POST", "/fapi/v1/order", **limit("SELL", "0.010", OWN_ASK))
    extra = {} if mode is None else {"selfTradePreventionMode": mode}
    buy = t.ok(
        "POST",
        "/fapi/v1/order",
        **limit("BUY", "0.010", OWN_ASK, newOrderRespType="RESULT", **extra),
    )
    assert (buy["status"], buy["selfTradePreventionMode"], buy["executedQty"]) == (
        buy_status,
        echo,
        "0.000",
    )
    ask_now = t.ok("GET", "/fapi/v1/order", symbol=BTC, orderId=ask["orderId"])
    assert ask_now["status"] == ask_status
    assert ask_now["selfTradePreventionMode"] == "EXPIRE_TAKER"  # as it was placed
    assert t.position() == 0  # never a trade with itself
    t.ok("DELETE", "/fapi/v1/allOpenOrders", symbol=BTC)


def test_self_trade_prevention_refusals(served: Served) -> None:
    t = Trader(served, "stp-refused")
    assert t.refused("POST", "/fapi/v1/order", **limit("BUY", "0.010", "59000",
                     selfTradePreventionMode="DECREMENT")) == -1130  # fmt: skip
    # a conditional order's placed order always expires the taker: asking otherwise is refused
    assert t.refused("POST", "/fapi/v1/algoOrder", **stop_market("SELL", "0.010", "50000",
                     selfTradePreventionMode="EXPIRE_MAKER")) == -1106  # fmt: skip
    assert t.ok("GET", "/fapi/v1/openOrders", symbol=BTC) == []
