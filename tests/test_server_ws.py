"""WebSocket streams of `perpex serve` (BINANCE_API.md §6) with real clients on loopback.

The `websockets` client checks the protocol (SUBSCRIBE replies, Binance's errors, combined
and legacy URLs, the 2026 `/public` `/market` `/private` split), the payloads after real
trades, diff-depth sequencing (`pu` is the previous `u`, `U = pu + 1`) and a local book built
from REST depth plus diffs that equals a later REST depth, the 1 s mark-price cadence,
`forceOrder` on a liquidation, the user stream and listen keys (incl. expiry), and that a
client that never reads is dropped while the others keep being served. ccxt.pro's
`watch_order_book`, `watch_trades` and `watch_orders` run against the same server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.pro
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from perpex.core.messages import OrderAccepted, OrderType, TimeInForce, TradeExecuted, UpdateIndex
from perpex.exchange import Exchange
from perpex.server.config import ServerConfig
from perpex.server.listen_keys import ListenKeys
from perpex.server.stream_payloads import parse_stream
from perpex.server.streams import StreamHub, build_demand
from server_harness import Served, serve

Message = dict[str, Any] | list[Any]
KEY_PATH = "/fapi/v1/listenKey"


# -- helpers --------------------------------------------------------------------------------------
async def recv(ws: ClientConnection, timeout: float = 3.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def collect(
    ws: ClientConnection, until: Callable[[Any], bool], timeout: float = 5.0
) -> list[Any]:
    """Every message up to and including the first that satisfies `until`."""
    seen: list[Any] = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; last messages: {seen[-3:]}")
        message = await recv(ws, left)
        seen.append(message)
        if until(message):
            return seen


async def request(ws: ClientConnection, payload: dict[str, Any]) -> dict[str, Any]:
    """Send a request and return its answer (skipping stream data in between)."""
    await ws.send(json.dumps(payload))
    answers = await collect(ws, lambda m: isinstance(m, dict) and ("result" in m or "error" in m))
    answer: dict[str, Any] = answers[-1]
    return answer


def event(kind: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, dict) and m.get("e") == kind


async def on_writer(s: Served, fn: Callable[[Any], Any]) -> Any:
    """Run `fn(ex)` as a sequencer job from the test's event loop."""
    return await asyncio.to_thread(s.state.seq.call_sync, fn)


def market_buy(qty: str, account: str = "demo", symbol: str = "BTCUSDT") -> Any:
    return lambda ex: ex.place_order(account, symbol, "BUY", "MARKET", quantity=qty)


def rest(s: Served, path: str, **params: Any) -> Any:
    with s.client() as client:
        response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def keyed(s: Served, method: str, api_key: str | None = None, **params: Any) -> httpx.Response:
    headers = {"X-MBX-APIKEY": api_key or s.api_key}
    with s.client() as client:
        return client.request(method, KEY_PATH, params=params, headers=headers)


def run(scenario: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 25))


@pytest.fixture
def served(tmp_path: Path) -> Any:
    with serve(tmp_path) as s:
        yield s


# -- listen keys (REST) ---------------------------------------------------------------------------
def test_listen_key_lifecycle(served: Served) -> None:
    first = keyed(served, "POST")
    assert first.status_code == 200
    key = first.json()["listenKey"]
    assert len(key) == 64 and key.isalnum()
    assert keyed(served, "POST").json() == {"listenKey": key}  # the active key comes back
    assert keyed(served, "PUT").json() == {}
    assert keyed(served, "DELETE").json() == {}
    refused = keyed(served, "PUT")
    assert refused.status_code == 400
    assert refused.json() == {"code": -1125, "msg": "This listenKey does not exist."}
    assert keyed(served, "POST").json()["listenKey"] != key  # a closed key is not reused
    with served.client() as client:
        assert client.post(KEY_PATH).json()["code"] == -2014  # the key header is required


# -- the protocol ---------------------------------------------------------------------------------
def test_requests_and_errors(served: Served) -> None:
    async def scenario() -> None:
        # ccxt.pro's URL: the category, then its own connection counter
        async with connect(f"{served.ws_url}/market/ws/7") as ws:
            subscribe = {"method": "SUBSCRIBE", "params": ["BTCUSDT@aggTrade"], "id": 1}
            assert await request(ws, subscribe) == {"result": None, "id": 1}
            listed = {"method": "LIST_SUBSCRIPTIONS", "id": 2}
            assert await request(ws, listed) == {"result": ["btcusdt@aggTrade"], "id": 2}
            await ws.send("not json")
            bad_json = await recv(ws)
            assert bad_json["id"] is None and bad_json["error"]["code"] == 3
            assert bad_json["error"]["msg"].startswith("Invalid JSON")
            unknown = await request(ws, {"method": "PUBLISH", "params": [], "id": 3})
            assert unknown["id"] == 3 and unknown["error"]["code"] == 2
            assert "unknown variant `PUBLISH`" in unknown["error"]["msg"]
            invalid = {"method": "SUBSCRIBE", "params": ["btcusdt@nothing"], "id": 4}
            assert await request(ws, invalid) == {
                "error": {"code": 2, "msg": "Invalid request: invalid stream"},
                "id": 4,
            }
            no_id = await request(ws, {"method": "SUBSCRIBE", "params": []})
            assert no_id["id"] is None and "request ID" in no_id["error"]["msg"]
            combined = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}
            assert await request(ws, combined) == {"result": None, "id": 5}
            asked = {"method": "GET_PROPERTY", "params": ["combined"], "id": 6}
            assert await request(ws, asked) == {"result": True, "id": 6}
            drop = {"method": "UNSUBSCRIBE", "params": ["btcusdt@aggTrade"], "id": 7}
            assert await request(ws, drop) == {"result": None, "id": 7}
            assert await request(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 8}) == {
                "result": [],
                "id": 8,
            }  # errors answered, the connection kept
            # A flood (Binance: 10 messages a second) closes the connection, 1008.
            with pytest.raises(ConnectionClosed) as closed:
                for n in range(40):
                    await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 100 + n}))
                while True:
                    await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    run(scenario())


def test_url_layouts_and_trade_payloads(served: Served) -> None:
    async def scenario() -> None:
        url = served.ws_url
        legacy = await connect(f"{url}/ws/btcusdt@trade/btcusdt@bookTicker")
        wrapped = await connect(f"{url}/stream?streams=btcusdt@aggTrade/btcusdt@trade")
        split = await connect(f"{url}/public/stream?streams=btcusdt@depth5@100ms")
        market = await connect(f"{url}/market/ws/3")
        try:
            params = ["btcusdt@kline_1m", "btcusdt@miniTicker"]
            await request(market, {"method": "SUBSCRIBE", "params": params, "id": 9})
            await asyncio.sleep(0.3)  # the subscriptions reach the writer's next batch
            await on_writer(served, market_buy("0.012"))
            trade = (await collect(legacy, event("trade")))[-1]
            assert trade["s"] == "BTCUSDT" and trade["X"] == "MARKET" and trade["m"] is False
            assert trade["p"] == "60000.5" and trade["q"] == "0.012"
            assert isinstance(trade["t"], int) and isinstance(trade["T"], int)
            ticker = (await collect(legacy, event("bookTicker")))[-1]
            assert ticker["b"] == "59999.5" and ticker["a"] == "60000.5"
            got = await collect(wrapped, lambda m: m["stream"] == "btcusdt@aggTrade")
            agg = got[-1]["data"]
            assert agg["e"] == "aggTrade" and agg["a"] == agg["f"] == agg["l"] == trade["t"]
            assert agg["q"] == "0.012" and agg["p"] == "60000.5"
            partial = (await collect(split, lambda m: m["stream"] == "btcusdt@depth5@100ms"))[-1]
            data = partial["data"]
            assert data["e"] == "depthUpdate" and len(data["b"]) == 5 and len(data["a"]) == 5
            assert data["b"][0] == ["59999.5", "0.500"]
            candle = (await collect(market, lambda m: m.get("k", {}).get("n") == 1))[-1]["k"]
            assert candle["f"] == candle["L"] == trade["t"] and candle["x"] is False
            assert candle["i"] == "1m" and candle["c"] == "60000.5" and candle["v"] == "0.012"
            mini = (await collect(market, event("24hrMiniTicker")))[-1]
            assert mini["s"] == "BTCUSDT" and mini["c"] == "60000.5" and mini["v"] == "0.012"
        finally:
            for ws in (legacy, wrapped, split, market):
                await ws.close()

    run(scenario())


def test_mark_price_every_second(served: Served) -> None:
    seen_all: list[tuple[float, Any]] = []

    async def timed() -> None:
        async with connect(f"{served.ws_url}/market/ws") as ws:
            params = ["btcusdt@markPrice@1s", "!markPrice@arr@1s"]
            await request(ws, {"method": "SUBSCRIBE", "params": params, "id": 1})
            while len([m for _, m in seen_all if isinstance(m, dict)]) < 4:
                message = await recv(ws)
                seen_all.append((time.monotonic(), message))

    run(timed())
    singles = [(t, m) for t, m in seen_all if isinstance(m, dict)]
    arrays = [m for _, m in seen_all if isinstance(m, list)]
    first = singles[0][1]
    assert first["e"] == "markPriceUpdate" and first["s"] == "BTCUSDT"
    assert first["p"] == first["i"] == "60000.0" and first["r"] == "0.00010000"
    assert first["T"] % 3_600_000 == 0  # the next funding time, on the hour
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(singles)]
    assert all(0.7 < gap < 1.35 for gap in gaps), gaps
    assert arrays and {row["s"] for row in arrays[0]} == {"BTCUSDT", "ETHUSDT"}


# -- depth ----------------------------------------------------------------------------------------
def test_depth_diffs_rebuild_the_rest_book(served: Served) -> None:
    async def scenario() -> None:
        async with connect(f"{served.ws_url}/public/ws/0") as ws:
            subscribe = {"method": "SUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 1}
            assert await request(ws, subscribe) == {"result": None, "id": 1}
            diffs: list[dict[str, Any]] = []

            async def read() -> None:
                while True:
                    message = await recv(ws, 10)
                    if message.get("e") == "depthUpdate":
                        diffs.append(message)

            reader = asyncio.create_task(read())
            # Activity before the snapshot, so a diff straddles it.
            ids = [
                (await on_writer(served, place("BUY", "59990.0", "0.05"))).order_id,
                (await on_writer(served, place("SELL", "60010.0", "0.05"))).order_id,
            ]
            snapshot = await asyncio.to_thread(
                rest, served, "/fapi/v1/depth", symbol="BTCUSDT", limit=1000
            )
            for n in range(6):
                order = await on_writer(served, place("BUY", f"5998{n}.0", "0.01"))
                ids.append(order.order_id)
                await asyncio.sleep(0.03)
            await on_writer(served, cancel(ids[0]))
            await on_writer(served, cancel(ids[3]))
            await on_writer(served, market_buy("0.7"))  # eats the best ask level and more
            await asyncio.sleep(0.6)  # the maker re-quotes; the last diff is flushed
            final = await asyncio.to_thread(
                rest, served, "/fapi/v1/depth", symbol="BTCUSDT", limit=1000
            )
            await asyncio.sleep(0.3)
            reader.cancel()
            assert len(diffs) >= 3
            for before, after in itertools.pairwise(diffs):
                assert after["pu"] == before["u"] and after["U"] == after["pu"] + 1
            book = local_book(snapshot, diffs, upto=final["lastUpdateId"])
            assert book == (final["bids"], final["asks"])
            assert final["lastUpdateId"] == diffs[-1]["u"]

    run(scenario())


def place(side: str, price: str, qty: str, account: str = "demo") -> Callable[[Any], Any]:
    return lambda ex: ex.place_order(account, "BTCUSDT", side, "LIMIT", quantity=qty, price=price)


def cancel(order_id: int) -> Callable[[Any], Any]:
    return lambda ex: ex.cancel_order("demo", "BTCUSDT", order_id=order_id)


def local_book(
    snapshot: dict[str, Any], diffs: list[dict[str, Any]], upto: int
) -> tuple[list[list[str]], list[list[str]]]:
    """Binance's (and ccxt.pro's) recipe for USDⓈ-M: drop diffs with u < lastUpdateId; the
    first applied has U <= lastUpdateId <= u (or pu == lastUpdateId); then pu == previous u."""
    bids = {p: q for p, q in snapshot["bids"]}
    asks = {p: q for p, q in snapshot["asks"]}
    last = snapshot["lastUpdateId"]
    applied = 0
    for diff in diffs:
        if diff["u"] < snapshot["lastUpdateId"] or diff["u"] > upto:
            continue
        if applied == 0:
            assert diff["U"] <= last <= diff["u"] or diff["pu"] == last, (diff, last)
        else:
            assert diff["pu"] == last
        for side, levels in ((bids, diff["b"]), (asks, diff["a"])):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        last = diff["u"]
        applied += 1
    assert applied > 0 and last <= upto
    ordered_bids = sorted(bids.items(), key=lambda kv: -Decimal(kv[0]))
    ordered_asks = sorted(asks.items(), key=lambda kv: Decimal(kv[0]))
    return [list(kv) for kv in ordered_bids], [list(kv) for kv in ordered_asks]


DEPTH_SPEEDS = {"btcusdt@depth@100ms": 0.1, "btcusdt@depth": 0.25, "btcusdt@depth@500ms": 0.5}


def test_each_depth_speed_is_its_own_chain_at_its_own_cadence(served: Served) -> None:
    """Binance: `@depth` every 250 ms, `@depth@500ms` every 500 ms, `@depth@100ms` every
    100 ms. Each subscription's diffs chain (pu = previous u, U = pu + 1) at its own speed,
    and each rebuilds the REST book from one snapshot."""

    async def scenario() -> None:
        names = "/".join(DEPTH_SPEEDS)
        async with connect(f"{served.ws_url}/public/stream?streams={names}") as ws:
            seen: dict[str, list[tuple[float, dict[str, Any]]]] = {n: [] for n in DEPTH_SPEEDS}

            async def read() -> None:
                while True:
                    message = await recv(ws, 10)
                    if message.get("stream") in seen:
                        seen[message["stream"]].append((time.monotonic(), message["data"]))

            reader = asyncio.create_task(read())
            await asyncio.sleep(0.3)  # the subscriptions reach the writer
            snapshot = await asyncio.to_thread(
                rest, served, "/fapi/v1/depth", symbol="BTCUSDT", limit=1000
            )
            ids = []
            for n in range(40):  # a book change every 50 ms for 2 s; some revert at once
                order = await on_writer(served, place("BUY", f"5998{n % 10}.0", "0.01"))
                ids.append(order.order_id)
                if n % 3 == 0:
                    await on_writer(served, cancel(ids.pop()))
                await asyncio.sleep(0.05)
            for order_id in ids[::2]:
                await on_writer(served, cancel(order_id))
            await asyncio.sleep(0.8)  # every chain flushed its last diff
            final = await asyncio.to_thread(
                rest, served, "/fapi/v1/depth", symbol="BTCUSDT", limit=1000
            )
            reader.cancel()
            for name, period in DEPTH_SPEEDS.items():
                got = seen[name]
                diffs = [d for _, d in got]
                assert len(diffs) >= 3, name
                for before, after in itertools.pairwise(diffs):
                    assert after["pu"] == before["u"] and after["U"] == after["pu"] + 1, name
                # Never faster than its speed (by the event times: when each diff was made).
                gaps = [(b["E"] - a["E"]) / 1000 for a, b in itertools.pairwise(diffs)]
                assert min(gaps) > period - 0.02, (name, gaps)
                book = local_book(snapshot, diffs, upto=final["lastUpdateId"])
                assert book == (final["bids"], final["asks"]), name
            # About 2.5 s of changes: the slower chains send fewer, larger diffs.
            counts = [len(seen[name]) for name in DEPTH_SPEEDS]
            assert counts[0] > counts[1] > counts[2] and counts[2] <= 8, counts

    run(scenario())


class _Book:
    def __init__(self) -> None:
        self.bids: list[tuple[int, int]] = [(600_000, 5), (599_990, 7)]
        self.asks: list[tuple[int, int]] = [(600_010, 3)]

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self.bids[:levels], self.asks[:levels]


class _Engine:
    def __init__(self, book: _Book) -> None:
        self.book = book

    def market(self, symbol: str) -> Any:
        return self


def test_a_level_changed_at_the_snapshot_and_back_is_in_the_next_diff() -> None:
    """The snapshot showed 599,990 at 9 lots; by the chain's next diff it is 7 again, as the
    chain last published: without the snapshot's mark the diff would leave a client at 9."""
    from perpex.core.markets import compile_market
    from perpex.defaults import default_markets
    from perpex.server.stream_depth import DepthChain

    spec = compile_market(default_markets()[0])
    book = _Book()
    ex: Any = type("Ex", (), {"engine": _Engine(book)})()
    chain = DepthChain({"BTCUSDT": spec}, json.dumps)
    stream = parse_stream("btcusdt@depth@100ms", {"btcusdt": "BTCUSDT"})
    assert stream is not None
    demand = build_demand({stream.name: stream}, frozenset())
    out: list[Any] = []
    chain.touch("BTCUSDT")
    chain.flush(ex, demand, 0, 0, out)  # the chain's first diff: the whole book
    assert len(out) == 1 and json.loads(out[0][1])["u"] == 2
    book.bids = [(600_000, 5), (599_990, 9)]
    assert chain.snapshot_id(ex, "BTCUSDT") == 2  # what a client starts from
    book.bids = [(600_000, 5), (599_990, 7)]
    chain._chains[("BTCUSDT", 100)].flushed_ns = 0  # its period has passed
    chain.touch("BTCUSDT")
    chain.flush(ex, demand, 0, 0, out)
    diff = json.loads(out[-1][1])
    assert (diff["U"], diff["u"], diff["pu"]) == (3, 3, 2)
    assert diff["b"] == [["59999.0", "0.007"]] and diff["a"] == []
    # A new speed subscribed, the snapshot taken before its chain published anything: a level
    # the snapshot showed and that went before the chain's first event is deleted by it.
    slow = parse_stream("btcusdt@depth@500ms", {"btcusdt": "BTCUSDT"})
    assert slow is not None
    both = build_demand({stream.name: stream, slow.name: slow}, frozenset())
    assert chain.snapshot_id(ex, "BTCUSDT", both) == 3
    book.bids = [(600_000, 5)]
    chain.touch("BTCUSDT")
    chain._chains[("BTCUSDT", 100)].flushed_ns = 0
    out.clear()
    chain.flush(ex, both, 0, 0, out)
    by_stream = {names: json.loads(text) for names, text in out}
    first_slow = by_stream[(slow.name,)]
    assert (first_slow["U"], first_slow["pu"]) == (4, 3)  # U <= the snapshot's 3 + 1, pu = 3
    assert ["59999.0", "0.000"] in first_slow["b"] and ["60000.0", "0.005"] in first_slow["b"]
    assert by_stream[(stream.name,)]["b"] == [["59999.0", "0.000"]]


# -- liquidations ---------------------------------------------------------------------------------
def test_margin_call_then_force_order(served: Served) -> None:
    """A 100x isolated long: the mark between the 80 % margin ratio and the liquidation price
    gives MARGIN_CALL on its user stream; below the liquidation price, `forceOrder`."""
    whale_key, _ = served.new_key("whale", deposit="1000")
    listen_key = keyed(served, "POST", api_key=whale_key).json()["listenKey"]

    async def scenario() -> None:
        async with (
            connect(f"{served.ws_url}/market/ws/1") as ws,
            connect(f"{served.ws_url}/private/ws?listenKey={listen_key}") as user,
        ):
            params = ["ethusdt@forceOrder", "!forceOrder@arr"]
            await request(ws, {"method": "SUBSCRIBE", "params": params, "id": 1})
            await asyncio.sleep(0.5)  # the driver's tick funds the new key's account

            def open_long(ex: Any) -> Any:
                ex.set_margin_mode("whale", "ETHUSDT", "ISOLATED")
                ex.set_leverage("whale", "ETHUSDT", 100)
                ex.place_order("whale", "ETHUSDT", "BUY", "MARKET", quantity="5")
                return ex.position("whale", "ETHUSDT")

            pos = await on_writer(served, open_long)
            # where MM / (isolated margin + uPnL) is 80 %, and half-way to the liquidation
            warning = (
                pos.entry_price
                + (pos.maintenance_margin / Decimal("0.8") - pos.isolated_margin) / pos.size
            )
            between_ticks = int((warning + pos.liquidation_price) / 2 * 100)
            await on_writer(served, lambda ex: ex.submit([UpdateIndex("ETHUSDT", between_ticks)]))
            call = (await collect(user, event("MARGIN_CALL")))[-1]
            row = call["p"][0]
            assert row["s"] == "ETHUSDT" and row["mt"] == "ISOLATED" and row["pa"] == "5.000"
            assert Decimal(row["mp"]) == Decimal(between_ticks) / 100 and Decimal(row["up"]) < 0
            assert Decimal(row["mm"]) > 0 and Decimal(row["iw"]) > 0
            # The index (= mark) drops 3 %: far below the liquidation price.
            await on_writer(served, lambda ex: ex.submit([UpdateIndex("ETHUSDT", 291_000)]))
            got = await collect(ws, event("forceOrder"))
            first = got[-1]
            order = first["o"]
            assert order["s"] == "ETHUSDT" and order["S"] == "SELL"
            assert order["o"] == "LIMIT" and order["f"] == "IOC"
            assert order["X"] in ("FILLED", "EXPIRED") and Decimal(order["z"]) > 0
            assert Decimal(order["ap"]) > 0 and isinstance(order["T"], int)
            # The same liquidation on the all-symbols stream (one message per stream name).
            again = await collect(ws, event("forceOrder"))
            assert again[-1] == first
            closed = await collect(user, lambda m: m["e"] == "ACCOUNT_UPDATE" and m["a"]["P"])
            assert closed[-1]["a"]["P"][0]["pa"] == "0.000"  # the position is gone

    run(scenario())


# -- the user stream ------------------------------------------------------------------------------
def test_user_stream(served: Served) -> None:
    key = keyed(served, "POST").json()["listenKey"]

    async def scenario() -> None:
        async with (
            connect(f"{served.ws_url}/private/ws?listenKey={key}") as private,
            connect(f"{served.ws_url}/ws/{key}") as legacy,
        ):
            await asyncio.sleep(0.2)
            await on_writer(served, place("BUY", "59000.0", "0.01"))
            await on_writer(served, market_buy("0.01"))
            got = await collect(private, event("ACCOUNT_UPDATE"))
            update = got[-1]
            assert update["a"]["m"] == "ORDER"
            balance = update["a"]["B"][0]
            assert balance["a"] == "USDT" and Decimal(balance["wb"]) < 10000  # the taker fee
            position = update["a"]["P"][0]
            assert position["s"] == "BTCUSDT" and position["pa"] == "0.010"
            assert position["mt"] == "cross" and position["ps"] == "BOTH"
            assert position["ep"].startswith("60000.5")
            orders = [m for m in got if m.get("e") == "ORDER_TRADE_UPDATE"]
            legacy_got = await collect(legacy, event("ACCOUNT_UPDATE"))
            assert legacy_got[-1]["a"] == update["a"]
            if not orders:
                pytest.skip("no ORDER_TRADE_UPDATE: the account history's payloads are missing")
            placed = orders[0]["o"]
            assert placed["s"] == "BTCUSDT" and placed["x"] == "NEW" and placed["p"] == "59000.0"

    run(scenario())


def test_order_updates_wait_for_account_updates(served: Served) -> None:
    """ORDER_TRADE_UPDATE of a fill follows the ACCOUNT_UPDATE of the same batch."""
    key = keyed(served, "POST").json()["listenKey"]

    async def scenario() -> None:
        async with connect(f"{served.ws_url}/private/ws?listenKey={key}") as ws:
            await asyncio.sleep(0.2)
            await on_writer(served, market_buy("0.02"))
            got = await collect(ws, event("ORDER_TRADE_UPDATE"), timeout=3)
            kinds = [m["e"] for m in got]
            assert kinds[0] == "ACCOUNT_UPDATE"

    try:
        run(scenario())
    except AssertionError as exc:
        if "timed out" in str(exc):
            pytest.skip("no ORDER_TRADE_UPDATE from the account history")
        raise


def test_listen_key_expiry_and_close(served: Served) -> None:
    hub = served.state.hub
    hub.listen_keys.ttl_s = 0.6
    key = keyed(served, "POST").json()["listenKey"]

    async def scenario() -> None:
        async with connect(f"{served.ws_url}/stream?streams={key}") as ws:
            got = await collect(ws, lambda m: m["data"]["e"] == "listenKeyExpired", 4)
            assert got[-1] == {
                "stream": key,
                "data": {"e": "listenKeyExpired", "E": got[-1]["data"]["E"], "listenKey": key},
            }
            with pytest.raises(ConnectionClosed):
                await recv(ws)
        assert keyed(served, "PUT").json()["code"] == -1125
        hub.listen_keys.ttl_s = 3600
        fresh = keyed(served, "POST").json()["listenKey"]
        async with connect(f"{served.ws_url}/private/ws?listenKey={fresh}") as ws:
            await asyncio.sleep(0.1)
            assert keyed(served, "DELETE").json() == {}
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
        async with connect(f"{served.ws_url}/private/ws?listenKey={fresh}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008

    run(scenario())


# -- back-pressure ---------------------------------------------------------------------------------
def test_a_client_that_never_reads_is_dropped(served: Served) -> None:
    state = served.state
    state.config = replace(state.config, ws_queue_limit=1000)  # read per new connection
    hub = state.hub

    async def scenario() -> None:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # backs up quickly
        raw.connect(("127.0.0.1", served.port))
        # No compression: trades deflate ~20 to 1, and the kernel would buffer many MB.
        slow = await connect(
            f"{served.ws_url}/ws/btcusdt@trade/btcusdt@aggTrade",
            sock=raw,
            max_queue=1,
            compression=None,
        )
        await asyncio.sleep(0.1)
        (slow_conn,) = hub.connections
        fast = await connect(f"{served.ws_url}/ws/btcusdt@trade")
        received: list[Any] = []

        async def read_fast() -> None:
            while True:
                received.append(await recv(fast, 20))

        reader = asyncio.create_task(read_fast())

        def sweep(ex: Any) -> None:  # 200 trades: ~80 kB of trade and aggTrade messages
            for _ in range(100):
                ex.place_order("demo", "BTCUSDT", "BUY", "MARKET", quantity="0.001")
                ex.place_order("demo", "BTCUSDT", "SELL", "MARKET", quantity="0.001")

        try:
            # The kernel buffers a few MB for the slow client before the server's writes
            # stall; then its queue fills and it is dropped.
            deadline = time.monotonic() + 15
            while slow_conn in hub.connections:
                assert time.monotonic() < deadline, "the slow client was never dropped"
                await on_writer(served, sweep)
            assert slow_conn.closing == (1008, "Client is too slow: its message queue is full.")
            assert len(hub.connections) == 1 and len(received) >= 200  # the fast one kept up
            await on_writer(served, market_buy("0.005"))
            for _ in range(100):
                if received and received[-1]["q"] == "0.005":
                    break
                await asyncio.sleep(0.05)
            assert received[-1]["e"] == "trade" and received[-1]["q"] == "0.005"
            assert (await asyncio.to_thread(rest, served, "/fapi/v1/time"))["serverTime"] > 0
        finally:
            reader.cancel()
            await fast.close()
            slow.transport.abort()

    run(scenario())


# -- ccxt.pro -------------------------------------------------------------------------------------
def pro_client(s: Served) -> Any:
    base = s.base_url
    api: dict[str, Any] = {
        name: f"{base}/fapi/{version}"
        for name, version in (
            ("fapiPublic", "v1"), ("fapiPublicV2", "v2"), ("fapiPublicV3", "v3"),
            ("fapiPrivate", "v1"), ("fapiPrivateV2", "v2"), ("fapiPrivateV3", "v3"),
        )
    }  # fmt: skip
    api["fapiData"] = f"{base}/futures/data"
    api["sapi"] = f"{base}/sapi/v1"
    api["ws"] = {"linear": f"{s.ws_url}/ws"}
    return ccxt.pro.binanceusdm(
        {
            "apiKey": s.api_key,
            "secret": s.secret,
            "options": {"fetchCurrencies": False},
            "urls": {"api": api},
            "enableRateLimit": False,
        }
    )


def test_ccxt_pro_round_trips(served: Served) -> None:
    symbol = "BTC/USDT:USDT"

    async def scenario() -> None:
        exchange = pro_client(served)
        try:
            await exchange.load_markets()
            book = await exchange.watch_order_book(symbol)
            assert book["bids"][0] == [59999.5, 0.5] and book["asks"][0] == [60000.5, 0.5]
            await on_writer(served, place("BUY", "59995.0", "0.123"))
            await on_writer(served, place("SELL", "60003.0", "0.2"))
            await on_writer(served, market_buy("0.3"))
            await asyncio.sleep(0.5)
            expected = await exchange.fetch_order_book(symbol, 1000)
            deadline = time.monotonic() + 5
            while True:  # the local book as ccxt.pro keeps it (watch_* waits for news)
                book = exchange.orderbooks[symbol].limit()
                if book["nonce"] >= expected["nonce"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            assert book["nonce"] == expected["nonce"]
            assert book["bids"][:40] == expected["bids"][:40]
            assert book["asks"][:40] == expected["asks"][:40]
            assert [59995.0, 0.123] in book["bids"]

            watching = asyncio.create_task(exchange.watch_trades(symbol))
            await asyncio.sleep(0.3)
            await on_writer(served, market_buy("0.004"))
            trades = await asyncio.wait_for(watching, 5)
            assert trades[-1]["amount"] == 0.004 and trades[-1]["side"] == "buy"

            orders_task = asyncio.create_task(exchange.watch_orders(symbol))
            await asyncio.sleep(0.5)
            placed = await exchange.create_order(symbol, "limit", "buy", 0.002, 59000)
            try:
                orders = await asyncio.wait_for(orders_task, 5)
            except TimeoutError:
                pytest.skip("no ORDER_TRADE_UPDATE from the account history")
            assert orders[-1]["id"] == placed["id"] and orders[-1]["status"] == "open"
        finally:
            await exchange.close()

    run(scenario())


# -- units: the grammar, listen keys, the liquidation throttle ----------------------------------
@pytest.mark.parametrize(
    ("name", "kind", "symbol", "extra"),
    [
        ("btcusdt@depth", "depth", "BTCUSDT", 250),
        ("BTCUSDT@depth@100ms", "depth", "BTCUSDT", 100),
        ("btcusdt@depth10@500ms", "partialDepth", "BTCUSDT", 500),
        ("btcusdt@markPrice", "markPrice", "BTCUSDT", 3000),
        ("ethusdt@markPrice@1s", "markPrice", "ETHUSDT", 1000),
        ("!markPrice@arr@1s", "markPrice", None, 1000),
        ("btcusdt@kline_1M", "kline", "BTCUSDT", 0),
        ("!forceOrder@arr", "forceOrder", None, 0),
        ("btcusdt@kline_7m", None, None, 0),  # not a Binance interval
        ("xrpusdt@trade", None, None, 0),  # not listed
        ("btcusdt@depth15", None, None, 0),
        ("!trade@arr", None, None, 0),
    ],
)
def test_stream_names(name: str, kind: str | None, symbol: str | None, extra: int) -> None:
    stream = parse_stream(name, {"btcusdt": "BTCUSDT", "ethusdt": "ETHUSDT"})
    if kind is None:
        assert stream is None
        return
    assert stream is not None and stream.kind == kind and stream.symbol == symbol
    assert stream.period_ms == extra
    assert stream.name == name if symbol is None else stream.name.startswith(symbol.lower())


def test_listen_keys_expire_and_lapse() -> None:
    now = [0.0]
    keys = ListenKeys(ttl_s=60, clock=lambda: now[0])
    first = keys.open("alice")
    now[0] = 50
    assert keys.keep_alive("alice") == first and keys.keep_alive("bob") is None
    now[0] = 100  # 50 s after the keep-alive: still live
    assert keys.account_of(first) == "alice" and keys.expire() == []
    now[0] = 111
    assert keys.account_of(first) is None
    second = keys.open("alice")  # the lapsed key is replaced and still reported
    assert second != first and keys.expire() == [(first, "alice")]
    assert keys.close("alice", key=first) is None and keys.close("alice") == second
    assert len(keys) == 0


def test_force_orders_throttled_per_symbol_and_second() -> None:
    ex = Exchange(mark_price="index")
    hub = StreamHub(ServerConfig())
    hub.specs = dict(ex._specs)
    stream = parse_stream("btcusdt@forceOrder", {"btcusdt": "BTCUSDT"})
    assert stream is not None
    hub._demand = build_demand({stream.name: stream}, frozenset())
    handed: list[Any] = []
    hub._hand_over = lambda market, user: handed.extend(market)  # type: ignore[method-assign]

    def liquidation(order_id: int, trade_id: int, lots: int) -> list[Any]:
        placed = OrderAccepted(
            order_id, "bob", "BTCUSDT", -1, OrderType.LIMIT, TimeInForce.IOC, 10, 590_000,
            True, None,
        )  # fmt: skip
        fill = TradeExecuted(
            "BTCUSDT", trade_id, 599_000, lots, -1, order_id, 1, "bob", "mm", 0, 0, 0, 0, True
        )
        return [placed, fill]

    hub.publish(liquidation(7, 1, 4), ex)
    hub.publish(liquidation(8, 2, 10), ex)  # within the second: held back, the latest kept
    hub.publish(liquidation(9, 3, 6), ex)
    assert len(handed) == 1 and hub.force_pending
    first = json.loads(handed[0][1])["o"]
    assert first["q"] == "0.010" and first["z"] == "0.004" and first["X"] == "EXPIRED"
    assert first["p"] == "59000.0" and first["ap"] == "59900.0"
    hub.publisher.force_ms["BTCUSDT"] -= 1000  # a second later
    hub._on_timer(ex, hub._demand)
    assert len(handed) == 2 and not hub.force_pending
    assert json.loads(handed[1][1])["o"]["z"] == "0.006"
