"""Fuzzing every documented route from the app's own OpenAPI schema (schemathesis): a request,
valid or malformed, is answered 2xx or 4xx with Binance's error body, never 5xx.

The schema is the app's (`create_app(...).openapi()`, what `/openapi.json` serves), so every
path and method the app documents is exercised, one test per operation. For each operation
schemathesis draws cases in both of its modes: positive (values the declared parameters allow)
and negative (values they refuse: wrong types, missing required ones, out-of-range numbers).
To every case the test adds up to five of the parameters Binance's clients send (`symbol`,
`side`, `quantity`, `orderId`, `limit`, ...) with plausible or hostile values, so that a route
whose declaration is missing or partial is still fed what it reads. Every case is sent to a real
server (`server_harness.serve`, uvicorn on loopback) twice:

- as drawn (for a signed route that means no key or signature: the auth layer answers);
- "authorised": the drawn query and body signed as ccxt signs them with the demo account's
  key (the drawn `timestamp`, `recvWindow` and `signature` replaced), and `/admin` requests
  carrying the admin token, so that the route's own parameter checks are what answers.

What must hold (BINANCE_API.md §5.1): the status is below 500; a 4xx has a JSON body that is
exactly {"code": int < 0, "msg": str}; a 2xx with a JSON content type parses. The limits are
raised so that fuzzing is not answered with 429. Deterministic: Hypothesis derandomized, no
example database; bounded: `MAX_EXAMPLES` cases per mode and operation.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.validation import has_invalid_characters

from perpex.server import ServerConfig, create_app
from perpex.server.config import Limits
from server_harness import Served, serve

MAX_EXAMPLES: Final = 10  # per mode and operation (x2 requests each)
UNLIMITED: Final = 10**9
AUTH_PARAMS: Final = frozenset({"timestamp", "recvWindow", "signature"})
ADMIN_PREFIX: Final = "/admin"

# Parameters the Binance clients send (BINANCE_API.md §3) and the admin routes read, added to
# the drawn cases with plausible and hostile values: an operation that declares nothing is
# still fed the parameters its route reads, and a declared one gets more than its declaration.
CLIENT_PARAMS: Final = (
    "symbol", "pair", "side", "type", "quantity", "price", "timeInForce", "newClientOrderId",
    "newOrderRespType", "reduceOnly", "positionSide", "orderId", "origClientOrderId", "limit",
    "startTime", "endTime", "fromId", "interval", "leverage", "marginType", "dualSidePosition",
    "multiAssetsMargin", "incomeType", "amount", "batchOrders", "algoType", "algoId",
    "clientAlgoId", "triggerPrice", "stopPrice", "callbackRate", "activatePrice",
    "closePosition", "workingType", "listenKey", "speed", "percent", "minutes", "kind",
    "account", "dualSidePosition", "selfTradePreventionMode",
)  # fmt: skip
PLAUSIBLE_VALUES: Final = (
    "BTCUSDT", "ETHUSDT", "btcusdt", "NOPEUSDT", "BUY", "SELL", "LIMIT", "MARKET", "STOP",
    "GTC", "IOC", "GTX", "FOK", "RESULT", "ACK", "true", "false", "CROSSED", "ISOLATED", "BOTH",
    "LONG", "1m", "1h", "FUNDING_FEE", "CONDITIONAL", "drop", "pump", "MARK_PRICE", "0.001",
    "0.01", "60000", "60000.1", "59000.05", "1", "5", "20", "125", "1000", "1500",
)  # fmt: skip
HOSTILE_VALUES: Final = (
    "", "0", "-1", "-0.001", "1e3", "1e309", "NaN", "Infinity", "0x10", "99999999999999999999",
    "1" * 40, "0.0000000001", "1,5", "[]", '[{"symbol":"BTCUSDT"}]', "[{}]", "{}", "null",
    "%00", "\x00", "a" * 300, "é", "🚀", " BTCUSDT", "BTC USDT", "9223372036854775808",
)  # fmt: skip
EXTRAS: Final = st.dictionaries(
    st.sampled_from(CLIENT_PARAMS),
    st.one_of(
        st.sampled_from(PLAUSIBLE_VALUES),
        st.sampled_from(HOSTILE_VALUES),
        st.text(st.characters(codec="utf-8"), max_size=12),
    ),
    max_size=5,
)


def app_schema() -> dict[str, Any]:
    """The OpenAPI document, built without starting the app (no state is opened)."""
    app = create_app(ServerConfig(data_dir=Path("/nonexistent/perpex-schema-test")))
    schema: dict[str, Any] = app.openapi()
    return schema


RAW_SCHEMA: Final = app_schema()
SCHEMA: Final = schemathesis.openapi.from_dict(RAW_SCHEMA)
OPERATIONS: Final = sorted(
    (method.upper(), path)
    for path, item in RAW_SCHEMA.get("paths", {}).items()
    for method in item
    if method in ("get", "post", "put", "delete", "patch")
)


def undeclared_operations() -> list[str]:
    """Operations that declare neither parameters nor a body (the fuzzer can only vary their
    path and method; the route owners should declare what the route reads)."""
    out = []
    for method, path in OPERATIONS:
        op = RAW_SCHEMA["paths"][path][method.lower()]
        if not op.get("parameters") and "requestBody" not in op:
            out.append(f"{method} {path}")
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    limits = Limits(
        weight_per_minute=UNLIMITED, orders_per_minute=UNLIMITED, orders_per_10s=UNLIMITED
    )
    with serve(Path(tmp_path_factory.mktemp("schema")), limits=limits) as s:
        yield s


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


# -- sending ---------------------------------------------------------------------------------
def authorised(prepared: requests.PreparedRequest, s: Served) -> requests.PreparedRequest:
    """The same request signed with the demo key (or carrying the admin token)."""
    url = urllib.parse.urlsplit(prepared.url or "")
    if url.path.startswith(ADMIN_PREFIX):
        prepared.headers["X-Admin-Token"] = s.admin_token
        return prepared
    pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    pairs = [(k, v) for k, v in pairs if k not in AUTH_PARAMS]
    pairs += [("timestamp", str(int(time.time() * 1000))), ("recvWindow", "10000")]
    query = urllib.parse.urlencode(pairs)
    raw_body = prepared.body or b""
    body = raw_body.encode() if isinstance(raw_body, str) else raw_body
    assert isinstance(body, bytes)  # requests' prepared bodies are bytes or str
    signature = hmac.new(s.secret.encode(), query.encode() + body, hashlib.sha256).hexdigest()
    query += f"&signature={signature}"
    prepared.url = urllib.parse.urlunsplit(url._replace(query=query))
    prepared.headers["X-MBX-APIKEY"] = s.api_key
    return prepared


def check(response: requests.Response, what: str) -> None:
    status = response.status_code
    assert status < 500, f"{what}: HTTP {status} {response.text[:300]}"
    is_json = response.headers.get("content-type", "").startswith("application/json")
    if 400 <= status < 500:
        assert is_json, f"{what}: HTTP {status} is not JSON: {response.text[:300]}"
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"code", "msg"}, f"{what}: {body}"
        assert isinstance(body["code"], int) and not isinstance(body["code"], bool), what
        assert body["code"] < 0, f"{what}: {body}"
        assert isinstance(body["msg"], str) and body["msg"], f"{what}: {body}"
    elif is_json:
        response.json()  # a 2xx JSON body parses


def send_both(
    case: Case[Any], extras: dict[str, str], s: Served, session: requests.Session
) -> None:
    if extras and isinstance(case.query, dict | None):
        case.query = {**extras, **(case.query or {})}
    kwargs = case.as_transport_kwargs(base_url=s.base_url)
    kwargs.pop("timeout", None)
    try:
        prepared = session.prepare_request(requests.Request(**kwargs))
    except (ValueError, UnicodeError, requests.RequestException):
        return  # not expressible as an HTTP request (e.g. a header with a newline)
    if any(has_invalid_characters(k, v) for k, v in prepared.headers.items()):
        return  # RFC 9110 forbids it: uvicorn answers 400 text/plain before the app sees it
    what = f"{case.method} {prepared.url} body={str(prepared.body)[:200]}"
    for request in (prepared, authorised(prepared.copy(), s)):
        try:
            response = session.send(request, timeout=10)
        except requests.exceptions.InvalidHeader:
            return
        check(response, what)


# -- the tests -------------------------------------------------------------------------------
def test_the_served_schema_is_the_one_fuzzed(served: Served, session: requests.Session) -> None:
    """`/openapi.json` documents the same operations, the order routes among them."""
    served_schema = session.get(f"{served.base_url}/openapi.json", timeout=10).json()
    operations = sorted(
        (method.upper(), path)
        for path, item in served_schema["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    )
    assert operations == OPERATIONS
    for expected in [("POST", "/fapi/v1/order"), ("DELETE", "/fapi/v1/order")]:
        assert expected in operations


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_request_is_answered_with_a_5xx(
    method: str, path: str, served: Served, session: requests.Session
) -> None:
    operation = SCHEMA[path][method]
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        try:
            strategies.append(operation.as_strategy(generation_mode=mode))
        except Exception:  # nothing declared to break: the negative mode has no cases
            continue
    assert strategies

    @settings(
        max_examples=MAX_EXAMPLES * len(strategies),
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=st.one_of(*strategies), extras=EXTRAS)
    def fuzz(case: Case[Any], extras: dict[str, str]) -> None:
        send_both(case, extras, served, session)

    fuzz()
