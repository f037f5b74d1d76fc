"""Signed requests, API keys and rate limits of `perpex serve` (issue 13 §3, BINANCE_API.md §2).

Three layers: the rules on their own (`signed_payload`, `verify_signed` with a fixed server
clock, `RateLimiter` with a fake clock, `KeyStore`), then real HTTP through a running server.
The server tests use two probe routes added to the app by the test only (`/_probe/signed`,
`/_probe/public`), which run exactly what every route runs first (`http.signed` /
`http.public`), so they do not depend on the routes other modules serve; one last test uses
`GET /fapi/v3/account` and `GET /fapi/v2/balance` when they exist.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi import FastAPI, Request, Response
from starlette.datastructures import Headers

import server_harness as harness
from perpex.server import create_app, http
from perpex.server.auth import signature_ok, signed_payload, verify_signed
from perpex.server.config import Limits
from perpex.server.errors import ApiError
from perpex.server.keystore import REVALIDATE_S, KeyError_, KeyRecord, KeyStore
from perpex.server.limits import BUCKET_NS, RateLimited, RateLimiter
from perpex.server.params import Params
from server_harness import Served, serve

NOW_MS = 1_700_000_000_000  # the server's clock in the rule tests


# -- helpers -----------------------------------------------------------------------------------
def hmac_hex(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def ed25519_b64(private_pem: str, payload: str) -> str:
    key = load_pem_private_key(private_pem.encode(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return base64.b64encode(key.sign(payload.encode())).decode()


def refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()
    return info.value


@pytest.fixture
def keys(tmp_path: Path) -> Iterator[KeyStore]:
    store = KeyStore(tmp_path / "data" / "keys.db")
    yield store
    store.close()


# -- totalParams: the bytes the client signed ---------------------------------------------------
@pytest.mark.parametrize(
    ("query", "body", "payload"),
    [
        (
            "timestamp=1&symbol=X&recvWindow=10000&signature=ab",
            "",
            "timestamp=1&symbol=X&recvWindow=10000",
        ),
        ("", "timestamp=1&symbol=X&signature=ab", "timestamp=1&symbol=X"),  # ccxt POST (form body)
        ("symbol=X&signature=ab&timestamp=1", "", "symbol=X&timestamp=1"),  # in the middle
        ("signature=ab&symbol=X&timestamp=1", "", "symbol=X&timestamp=1"),  # first
        (
            "symbol=X&timeInForce=GTC",
            "quantity=1&timestamp=1&signature=ab",
            "symbol=X&timeInForce=GTCquantity=1&timestamp=1",
        ),
        ("symbol=X&signature=ab", "quantity=1&timestamp=1", "symbol=Xquantity=1&timestamp=1"),
        ("mysignature=1&signatures=2&signature=ab", "", "mysignature=1&signatures=2"),
        ("a=1&&b=%2B2&signature=ab", "", "a=1&&b=%2B2"),  # other bytes kept as received
        ("a=1&signatur%65=ab", "", "a=1"),  # the pair Params reads as the signature
        ("note=signature%3Dx&a=1&signature=ab", "", "note=signature%3Dx&a=1"),
    ],
)
def test_signed_payload_is_query_then_body_without_the_signature_pair(
    query: str, body: str, payload: str
) -> None:
    params = Params(query.encode(), body.encode())
    assert params.get("signature") == "ab"
    assert signed_payload(params) == payload.encode()


def test_binance_documented_hmac_examples_verify() -> None:
    """Binance's SIGNED endpoint examples (api docs, "SIGNED Endpoint Examples for POST
    /api/v3/order"): the same key and order signed from the query string (example 1) and from
    a query plus a body (example 3: totalParams is their concatenation, no `&` between)."""
    secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
    record = KeyRecord("doc", "vmPUZE6mv9SD5VNHk4Hl", "HMAC", secret, None, "0", 0, False)
    example1 = Params(
        b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
        b"&recvWindow=5000&timestamp=1499827319559"
        b"&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
        b"",
    )
    example3 = Params(
        b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC",
        b"quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
        b"&signature=0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77",
    )
    for params in (example1, example3):
        signature = params.get("signature")
        assert signature is not None
        assert signature_ok(record, signed_payload(params), signature)
        assert signature_ok(record, signed_payload(params), signature.upper())  # any case
    # Example 3's signature does not sign example 1's bytes, nor the other way round.
    assert not signature_ok(record, signed_payload(example1), example3.get("signature") or "")


# -- verify_signed: the refusals, with the server's clock fixed --------------------------------
def _request(secret: str, api_key: str, **params: str) -> tuple[Headers, Params]:
    """A GET as ccxt signs it: the query string and its HMAC."""
    query = urllib.parse.urlencode(params)
    query += "&signature=" + hmac_hex(secret, query)
    return Headers({"X-MBX-APIKEY": api_key}), Params(query.encode(), b"")


@dataclass(frozen=True)
class Refusal:
    name: str
    code: int
    status: int
    header: str | None = "good"  # "good", None (absent), or a literal header value
    timestamp: str | None = str(NOW_MS)
    recv_window: str | None = None
    signature: str | None = "good"  # "good", None (absent), or a literal value


REFUSALS = [
    Refusal("no key header", -2014, 401, header=None),
    Refusal("empty key header", -2014, 401, header=""),
    Refusal("malformed key header", -2014, 401, header="not a key!"),
    Refusal("unknown key", -2015, 401, header="a" * 64),
    Refusal("no timestamp", -1102, 400, timestamp=None),
    Refusal("malformed timestamp", -1102, 400, timestamp="12.5"),
    Refusal("timestamp 1000 ms ahead", -1021, 400, timestamp=str(NOW_MS + 1000)),
    Refusal("timestamp older than recvWindow", -1021, 400, timestamp=str(NOW_MS - 5001)),
    Refusal(
        "older than an explicit recvWindow",
        -1021,
        400,
        timestamp=str(NOW_MS - 101),
        recv_window="100",
    ),
    Refusal("recvWindow over 60000", -1021, 400, recv_window="60001"),
    Refusal("no signature", -1102, 400, signature=None),
    Refusal("wrong signature", -1022, 400, signature="0" * 64),
    Refusal("short signature", -1022, 400, signature="abc"),
    Refusal("non-ASCII signature", -1022, 400, signature="é" * 64),
]


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_verify_signed_refuses_like_binance(keys: KeyStore, case: Refusal) -> None:
    made = keys.create("alice")
    assert made.secret is not None
    params: dict[str, str] = {"symbol": "BTCUSDT"}
    if case.timestamp is not None:
        params["timestamp"] = case.timestamp
    if case.recv_window is not None:
        params["recvWindow"] = case.recv_window
    query = urllib.parse.urlencode(params)
    if case.signature == "good":
        query += "&signature=" + hmac_hex(made.secret, query)
    elif case.signature is not None:
        query += "&signature=" + urllib.parse.quote(case.signature)
    header = made.api_key if case.header == "good" else case.header
    headers = Headers({"X-MBX-APIKEY": header} if header is not None else {})
    err = refusal(
        lambda: verify_signed(headers, Params(query.encode(), b""), keys, Limits(), now_ms=NOW_MS)
    )
    assert (err.code, err.status) == (case.code, case.status)
    if case.code == -1102:
        assert err.msg.startswith("Mandatory parameter '")


@pytest.mark.parametrize(
    ("timestamp_ms", "recv_window"),
    [
        (NOW_MS + 999, None),  # ahead, but less than 1000 ms
        (NOW_MS - 5000, None),  # exactly Binance's default window (5000 ms) old
        (NOW_MS - 60_000, "60000"),  # the largest window
        (NOW_MS, "0"),
    ],
)
def test_verify_signed_accepts_the_edges_of_the_window(
    keys: KeyStore, timestamp_ms: int, recv_window: str | None
) -> None:
    made = keys.create("alice")
    assert made.secret is not None
    params = {"timestamp": str(timestamp_ms)}
    if recv_window is not None:
        params["recvWindow"] = recv_window
    headers, request = _request(made.secret, made.api_key, **params)
    assert verify_signed(headers, request, keys, Limits(), now_ms=NOW_MS).name == "alice"


def test_a_revoked_key_is_refused_at_once_in_the_same_process(keys: KeyStore) -> None:
    made = keys.create("alice")
    assert made.secret is not None
    headers, request = _request(made.secret, made.api_key, timestamp=str(NOW_MS))
    assert verify_signed(headers, request, keys, Limits(), now_ms=NOW_MS).name == "alice"
    assert keys.revoke("alice") is True
    err = refusal(lambda: verify_signed(headers, request, keys, Limits(), now_ms=NOW_MS))
    assert (err.code, err.status) == (-2015, 401)
    assert keys.revoke("alice") is False  # already revoked: nothing to do


def test_a_revocation_by_another_connection_is_seen_within_the_revalidation_delay(
    tmp_path: Path,
) -> None:
    path = tmp_path / "keys.db"
    server = KeyStore(path, revalidate_s=0.05)
    cli = KeyStore(path)  # another connection, as `perpex keys revoke` in another process
    try:
        made = cli.create("alice")
        assert server.lookup(made.api_key) is not None  # made elsewhere: found at once
        cli.revoke("alice")
        time.sleep(0.06)
        assert server.lookup(made.api_key) is None
    finally:
        server.close()
        cli.close()


def _ccxt_request(
    api_key: str, secret: str, method: str, path: str, api: str, params: dict[str, str]
) -> tuple[Headers, Params]:
    """The bytes ccxt 4.5.90 (`binanceusdm.sign`) sends for a call."""
    exchange = ccxt.binanceusdm({"apiKey": api_key, "secret": secret})
    signed = exchange.sign(path, [api], method, dict(params))
    query = urllib.parse.urlsplit(signed["url"]).query.encode()
    body = (signed["body"] or "").encode()
    return Headers(signed["headers"]), Params(query, body)


@pytest.mark.parametrize("ed25519", [False, True], ids=["hmac", "ed25519"])
@pytest.mark.parametrize(
    ("method", "path", "api", "params"),
    [
        ("GET", "account", "fapiPrivateV3", {}),
        ("DELETE", "order", "fapiPrivate", {"symbol": "BTCUSDT", "orderId": "7"}),
        (
            "POST",
            "order",
            "fapiPrivate",
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "quantity": "0.01",
                "price": "49000.1",
                "timeInForce": "GTC",
                "newClientOrderId": "x-cvBPrNm9+/=@",
            },
        ),
    ],
)
def test_ccxt_requests_verify_with_both_kinds_of_key(
    keys: KeyStore, ed25519: bool, method: str, path: str, api: str, params: dict[str, str]
) -> None:
    made = keys.create("alice", ed25519=ed25519)
    assert made.secret is not None
    assert ("PRIVATE KEY" in made.secret) is ed25519  # ccxt signs Ed25519 given the PEM
    headers, request = _ccxt_request(made.api_key, made.secret, method, path, api, params)
    assert verify_signed(headers, request, keys, Limits()).name == "alice"
    # One byte of the signed part changed: refused.
    old, new = b"recvWindow=10000", b"recvWindow=10001"
    assert old in request.raw_query + request.raw_body
    tampered = Params(request.raw_query.replace(old, new), request.raw_body.replace(old, new))
    assert refusal(lambda: verify_signed(headers, tampered, keys, Limits())).code == -1022


def test_ed25519_signature_is_checked_against_the_stored_public_key_only(keys: KeyStore) -> None:
    made = keys.create("bob", ed25519=True)
    assert made.secret is not None
    record = keys.by_name("bob")
    assert record is not None and record.kind == "ED25519"
    assert record.secret is None and record.public_key is not None and len(record.public_key) == 32
    query = f"symbol=BTCUSDT&timestamp={NOW_MS}"
    signature = ed25519_b64(made.secret, query)
    headers = Headers({"X-MBX-APIKEY": made.api_key})
    for sent in (
        urllib.parse.quote(signature, safe=""),  # what clients send
        signature.replace("+", "%2B").replace("/", "%2F").rstrip("="),  # no padding
        base64.urlsafe_b64encode(base64.b64decode(signature)).decode(),  # base64url
        signature.replace("/", "%2F").replace("=", "%3D"),  # a raw "+" (decoded as a space)
    ):
        request = Params(f"{query}&signature={sent}".encode(), b"")
        assert verify_signed(headers, request, keys, Limits(), now_ms=NOW_MS).name == "bob"
    other_pem = keys.create("carol", ed25519=True).secret
    assert other_pem is not None
    forged = urllib.parse.quote(ed25519_b64(other_pem, query), safe="")
    for sent in (forged, "not-base64!", hmac_hex("x", query)):
        bad = Params(f"{query}&signature={sent}".encode(), b"")
        with pytest.raises(ApiError) as info:
            verify_signed(headers, bad, keys, Limits(), now_ms=NOW_MS)
        assert info.value.code == -1022


# -- the key file ---------------------------------------------------------------------------------
def test_key_file_is_0600_and_a_new_data_dir_0700(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "perpex"
    store = KeyStore(data_dir / "keys.db")
    try:
        store.create("alice", deposit="5")
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        files = sorted(p.name for p in data_dir.iterdir())
        assert "keys.db" in files
        for name in files:  # keys.db and SQLite's -wal / -shm beside it
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    finally:
        store.close()


def test_an_existing_readable_key_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    KeyStore(path).close()
    os.chmod(path, 0o644)
    KeyStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_records_never_show_a_secret(keys: KeyStore) -> None:
    made = keys.create("alice")
    assert made.secret is not None
    record = keys.by_name("alice")
    assert record is not None and record.secret == made.secret
    for shown in (repr(made), repr(record), str(record), repr(keys.list())):
        assert made.secret not in shown
    pem = keys.create("bob", ed25519=True).secret
    assert pem is not None and "PRIVATE KEY" not in repr(keys.list())


@pytest.mark.parametrize(
    ("name", "deposit"),
    [
        ("bad name", "1"),
        ("", "1"),
        ("x" * 65, "1"),
        ("ok", "-1"),
        ("ok", "1.0000001"),
        ("ok", "NaN"),
        ("ok", "abc"),
        ("ok", "1000000001"),
    ],
)
def test_keystore_refuses_bad_names_and_deposits(keys: KeyStore, name: str, deposit: str) -> None:
    with pytest.raises(KeyError_):
        keys.create(name, deposit=deposit)
    assert keys.list() == []


def test_keystore_refuses_a_duplicate_name_even_once_revoked(keys: KeyStore) -> None:
    keys.create("alice", deposit="10000.50")
    keys.revoke("alice")
    with pytest.raises(KeyError_, match="exists already"):
        keys.create("alice")
    (record,) = keys.list()
    assert (record.deposit, record.revoked) == ("10000.5", True)


def test_pending_deposits_are_the_live_keys_with_a_deposit(keys: KeyStore) -> None:
    keys.create("alice", deposit="100")
    keys.create("bob", deposit="0")
    keys.create("carol", deposit="0.000001")
    keys.create("dave", deposit="7")
    keys.revoke("dave")
    assert keys.pending_deposits() == [("alice", "100"), ("carol", "0.000001")]


# -- the rate limiter, with a fake clock ---------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now_ns = 1_000 * BUCKET_NS

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


def test_weight_limit_is_a_rolling_minute_and_refusals_are_not_counted() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(weight_per_minute=10), clock=clock)
    assert limiter.charge("key:a", 4).weight_1m == 4
    clock.advance(30)
    assert limiter.charge("key:a", 6).weight_1m == 10
    with pytest.raises(RateLimited) as info:
        limiter.charge("key:a", 1)
    assert (info.value.code, info.value.status, info.value.usage.weight_1m) == (-1003, 429, 10)
    assert limiter.charge("key:b", 10).weight_1m == 10  # another key has its own allowance
    clock.advance(30.1)  # the first 4 leave the window; the refused 1 was never counted
    assert limiter.charge("key:a", 4).weight_1m == 10
    clock.advance(30)
    assert limiter.charge("key:a", 1).weight_1m == 5


def test_order_limits_per_minute_and_per_10s() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(orders_per_minute=5, orders_per_10s=3), clock=clock)
    counts = [limiter.charge("key:a", 1, orders=1).orders_1m for _ in range(3)]
    assert counts == [1, 2, 3]
    assert limiter.charge("key:a", 1).orders_1m is None  # a call that places no order
    with pytest.raises(RateLimited, match="3 orders per 10 SECONDS") as info:
        limiter.charge("key:a", 1, orders=1)
    assert info.value.code == -1015 and info.value.usage.orders_1m == 3
    clock.advance(10)
    assert limiter.charge("key:a", 1, orders=2).orders_1m == 5
    clock.advance(10)
    with pytest.raises(RateLimited, match="5 orders per MINUTE"):
        limiter.charge("key:a", 1, orders=1)
    clock.advance(40)  # the first 3 orders leave the minute
    assert limiter.charge("key:a", 1, orders=1).orders_1m == 3
    assert limiter.usage("key:a").weight_1m == 2  # only what is still inside the minute


def test_limiter_memory_is_bounded_by_buckets_and_idle_clients_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(Limits(weight_per_minute=10**9), clock=clock)
    for _ in range(20_000):  # 200 s of 100 requests a second, 10 in each 100 ms bucket
        limiter.charge("key:busy", 1, orders=0)
        clock.advance(0.01)
    # The clock is now at the start of a bucket: the window is that (empty) bucket and the 599
    # before it, which hold 10 each.
    assert limiter.usage("key:busy").weight_1m == 5990
    window = limiter._clients["key:busy"].weight_1m
    assert len(window.buckets) <= 60 * 1_000_000_000 // BUCKET_NS
    for i in range(3000):
        limiter.charge(f"ip:{i}", 1)
    clock.advance(61)
    for i in range(3000, 6000):
        limiter.charge(f"ip:{i}", 1)
    assert len(limiter) < 6000  # the idle ones were swept as the table grew


# -- through a running server ---------------------------------------------------------------------
def _with_probes(real_create_app: Any) -> Any:
    """`create_app` plus the probe routes: what every route runs first, and nothing else."""

    def probed_create_app(config: Any, driver: Any = None, *, state: Any = None) -> FastAPI:
        app: FastAPI = real_create_app(config, driver, state=state)

        async def signed_probe(request: Request) -> Response:
            call = await http.signed(request, 1, int(request.headers.get("x-probe-orders", "0")))
            return http.reply(request, {"account": call.account})

        async def public_probe(request: Request) -> Response:
            await http.public(request, 1)
            return http.reply(request, {"ok": True})

        app.add_api_route("/_probe/signed", signed_probe, methods=["GET", "POST", "PUT", "DELETE"])
        app.add_api_route("/_probe/public", public_probe, methods=["GET"])
        return app

    return probed_create_app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness, "create_app", _with_probes(create_app))
        with serve(tmp_path_factory.mktemp("auth")) as served:
            yield served


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    limits = Limits(weight_per_minute=5, orders_per_minute=5, orders_per_10s=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness, "create_app", _with_probes(create_app))
        with serve(tmp_path_factory.mktemp("limited"), limits=limits) as served:
            yield served


def _stamp() -> str:
    return str(int(time.time() * 1000))


def test_http_ccxt_style_get_and_form_post(server: Served) -> None:
    with server.client() as client:
        for method in ("GET", "POST", "PUT", "DELETE"):
            r = harness.signed_request(
                client, method, "/_probe/signed", server.api_key, server.secret, symbol="BTCUSDT"
            )
            assert r.status_code == 200, r.text
            assert r.json() == {"account": "demo"}
            assert int(r.headers["X-MBX-USED-WEIGHT-1M"]) >= 1
            assert "X-MBX-ORDER-COUNT-1M" not in r.headers


def test_http_official_connector_style_query_with_json_content_type(server: Served) -> None:
    """binance-futures-connector: POST params in the query string, JSON content type, no body
    (`urlencode(params, True).replace("%40", "@")`)."""
    params = {
        "symbol": "BTCUSDT",
        "newClientOrderId": "me@x",
        "recvWindow": "5000",
        "timestamp": _stamp(),
    }
    query = urllib.parse.urlencode(params, True).replace("%40", "@")
    query += "&signature=" + hmac_hex(server.secret, query)
    headers = {"X-MBX-APIKEY": server.api_key, "Content-Type": "application/json;charset=utf-8"}
    with server.client() as client:
        r = client.post(f"/_probe/signed?{query}", headers=headers)
    assert r.status_code == 200, r.text


def test_http_hummingbot_style_form_with_timestamp_last_and_no_recv_window(server: Served) -> None:
    body = urllib.parse.urlencode({"symbol": "BTCUSDT", "side": "BUY", "timestamp": _stamp()})
    body += "&signature=" + hmac_hex(server.secret, body)
    headers = {"X-MBX-APIKEY": server.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    with server.client() as client:
        r = client.post("/_probe/signed", content=body.encode(), headers=headers)
    assert r.status_code == 200, r.text


def test_http_params_split_between_query_and_body(server: Served) -> None:
    query = "symbol=BTCUSDT&side=BUY"
    body = f"quantity=0.01&timestamp={_stamp()}"
    body += "&signature=" + hmac_hex(server.secret, query + body)  # no "&" between the two
    headers = {"X-MBX-APIKEY": server.api_key, "Content-Type": "application/x-www-form-urlencoded"}
    with server.client() as client:
        r = client.post(f"/_probe/signed?{query}", content=body.encode(), headers=headers)
        assert r.status_code == 200, r.text
        # The same bytes signed with a "&" between query and body are not what Binance signs.
        wrong = f"quantity=0.01&timestamp={_stamp()}"
        wrong += "&signature=" + hmac_hex(server.secret, query + "&" + wrong)
        r = client.post(f"/_probe/signed?{query}", content=wrong.encode(), headers=headers)
        assert (r.status_code, r.json()["code"]) == (400, -1022)


@pytest.mark.parametrize(
    ("name", "code", "status"),
    [
        ("no key", -2014, 401),
        ("bad key format", -2014, 401),
        ("unknown key", -2015, 401),
        ("no timestamp", -1102, 400),
        ("stale timestamp", -1021, 400),
        ("future timestamp", -1021, 400),
        ("recvWindow 60001", -1021, 400),
        ("no signature", -1102, 400),
        ("bad signature", -1022, 400),
    ],
)
def test_http_refusals_carry_binance_codes_and_statuses(
    server: Served, name: str, code: int, status: int
) -> None:
    now = int(time.time() * 1000)
    params: dict[str, str] = {"symbol": "BTCUSDT", "timestamp": str(now)}
    headers = {"X-MBX-APIKEY": server.api_key}
    if name == "no key":
        headers = {}
    elif name == "bad key format":
        headers = {"X-MBX-APIKEY": "has spaces"}
    elif name == "unknown key":
        headers = {"X-MBX-APIKEY": "f" * 64}
    elif name == "no timestamp":
        del params["timestamp"]
    elif name == "stale timestamp":
        params["timestamp"] = str(now - 20_000)
    elif name == "future timestamp":
        params["timestamp"] = str(now + 5_000)
    elif name == "recvWindow 60001":
        params["recvWindow"] = "60001"
    query = urllib.parse.urlencode(params)
    if name == "bad signature":
        query += "&signature=" + hmac_hex("not-the-secret", query)
    elif name != "no signature":
        query += "&signature=" + hmac_hex(server.secret, query)
    with server.client() as client:
        r = client.get(f"/_probe/signed?{query}", headers=headers)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"code", "msg"} and r.json()["code"] == code


def test_http_ccxt_ed25519_key_made_while_running(server: Served) -> None:
    """A key made by another connection to the key file (the CLI's) works at once, Ed25519
    signed by ccxt with the private key `keys create --ed25519` printed."""
    other = KeyStore(server.config.keys_path)
    try:
        made = other.create("eddie", ed25519=True)
    finally:
        other.close()
    assert made.secret is not None
    for method, params in (("GET", {}), ("POST", {"symbol": "BTCUSDT", "side": "BUY"})):
        exchange = ccxt.binanceusdm({"apiKey": made.api_key, "secret": made.secret})
        signed = exchange.sign("order", ["fapiPrivate"], method, params)
        query = urllib.parse.urlsplit(signed["url"]).query
        with server.client() as client:
            r = client.request(
                method,
                "/_probe/signed" + (f"?{query}" if query else ""),
                content=(signed["body"] or "").encode(),
                headers=signed["headers"],
            )
        assert r.status_code == 200, r.text
        assert r.json() == {"account": "eddie"}


def test_http_key_made_while_running_is_funded_once(server: Served) -> None:
    other = KeyStore(server.config.keys_path)  # as `perpex keys create` does
    try:
        made = other.create("funded", deposit="1234.5")
    finally:
        other.close()
    assert made.secret is not None
    with server.client() as client:  # usable before the deposit lands
        r = harness.signed_request(client, "GET", "/_probe/signed", made.api_key, made.secret)
    assert r.status_code == 200, r.text

    def wallet() -> Decimal | None:
        def read(ex: Any) -> Decimal | None:
            if "funded" not in ex.engine.accounts:
                return None
            balance: Decimal = ex.account("funded").wallet_balance
            return balance

        result: Decimal | None = server.state.seq.call_sync(read, write=False)
        return result

    deadline = time.monotonic() + 2
    while wallet() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wallet() == Decimal("1234.5")
    time.sleep(3 * server.config.tick_seconds)  # more funding passes: never a second deposit
    assert wallet() == Decimal("1234.5")


def test_http_key_revoked_by_another_process_is_refused_within_a_second(server: Served) -> None:
    api_key, secret = server.new_key("leaving", deposit="0")
    with server.client() as client:
        r = harness.signed_request(client, "GET", "/_probe/signed", api_key, secret)
        assert r.status_code == 200  # cached by the server from now on
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "perpex.cli",
                "keys",
                "revoke",
                "leaving",
                "--data-dir",
                str(server.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        revoked_at = time.monotonic()
        while True:
            r = harness.signed_request(client, "GET", "/_probe/signed", api_key, secret)
            if r.status_code != 200 or time.monotonic() - revoked_at > 3:
                break
            time.sleep(0.05)
        elapsed = time.monotonic() - revoked_at
    assert (r.status_code, r.json()["code"]) == (401, -2015)
    assert elapsed <= REVALIDATE_S + 0.5


def test_http_weight_limit_429_per_address(limited: Served) -> None:
    with limited.client() as client:
        used = [int(client.get("/_probe/public").headers["X-MBX-USED-WEIGHT-1M"]) for _ in range(5)]
        assert used == [1, 2, 3, 4, 5]
        r = client.get("/_probe/public")
    assert r.status_code == 429
    assert r.json()["code"] == -1003
    assert "current limit is 5 request weight per 1 MINUTE" in r.json()["msg"]


def test_http_429_reports_the_used_weight(limited: Served) -> None:
    api_key, secret = limited.new_key("heavy", deposit="0")
    with limited.client() as client:
        for _ in range(5):
            assert (
                harness.signed_request(client, "GET", "/_probe/signed", api_key, secret).status_code
                == 200
            )
        r = harness.signed_request(client, "GET", "/_probe/signed", api_key, secret)
    assert r.status_code == 429
    assert r.headers.get("X-MBX-USED-WEIGHT-1M") == "5"


def test_http_order_limit_per_key(limited: Served) -> None:
    key_a, secret_a = limited.new_key("orders-a", deposit="0")
    key_b, secret_b = limited.new_key("orders-b", deposit="0")
    with limited.client() as client:
        client.headers["x-probe-orders"] = "1"
        counts = []
        for _ in range(3):
            r = harness.signed_request(client, "POST", "/_probe/signed", key_a, secret_a)
            assert r.status_code == 200, r.text
            counts.append(int(r.headers["X-MBX-ORDER-COUNT-1M"]))
        assert counts == [1, 2, 3]
        r = harness.signed_request(client, "POST", "/_probe/signed", key_a, secret_a)
        assert (r.status_code, r.json()["code"]) == (429, -1015)
        assert "Too many new orders" in r.json()["msg"]
        r = harness.signed_request(client, "POST", "/_probe/signed", key_b, secret_b)
        assert r.status_code == 200 and r.headers["X-MBX-ORDER-COUNT-1M"] == "1"


def test_http_real_signed_routes_with_hmac_and_ed25519(server: Served) -> None:
    """`GET /fapi/v3/account` and `GET /fapi/v2/balance` (routes_account), when present."""
    other = KeyStore(server.config.keys_path)
    try:
        made = other.create("real-ed", ed25519=True)
    finally:
        other.close()
    assert made.secret is not None
    with server.client() as client:
        for path in ("/fapi/v3/account", "/fapi/v2/balance"):
            r = harness.signed_request(client, "GET", path, server.api_key, server.secret)
            if r.status_code == 404:
                pytest.skip(f"{path} is not served yet")
            assert r.status_code == 200, r.text
            query = f"timestamp={_stamp()}"
            signature = urllib.parse.quote(ed25519_b64(made.secret, query), safe="")
            r = client.get(
                f"{path}?{query}&signature={signature}", headers={"X-MBX-APIKEY": made.api_key}
            )
            assert r.status_code == 200, r.text
            r = client.get(
                f"{path}?{query}&signature={'0' * 64}", headers={"X-MBX-APIKEY": made.api_key}
            )
            assert (r.status_code, r.json()["code"]) == (400, -1022)
            r = client.get(f"{path}?{query}", headers={"X-MBX-APIKEY": "z" * 64})
            assert (r.status_code, r.json()["code"]) == (401, -2015)
