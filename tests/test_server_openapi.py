"""The OpenAPI schema declares every operation's parameters (`perpex.server.openapi_params`).

The routes read their parameters themselves from the raw query and body, so FastAPI cannot see
them; the table in `openapi_params` declares them. What must hold:

- the table names exactly the app's documented routes (a new route without a declaration, or a
  declaration of a route that is gone, fails here);
- every operation of `app.openapi()` declares exactly the table's parameters, once each;
- the required flags and enums of the key operations are Binance's (BINANCE_API.md §3 and
  Binance's USDⓈ-M reference: New Order needs symbol, side, type; Kline needs symbol and
  interval; a signed call needs timestamp, signature and the X-MBX-APIKEY header);
- on a real server, the names a route reads are the names its operation declares (the reads
  are recorded on `Params` while each operation is called once with its required parameters
  and those with an example), but for a few named exceptions;
- the schema fuzzer's `undeclared_operations()` lists only the operations Binance documents
  with no parameters at all (ping, time, exchangeInfo, fundingInfo);
- `declare_parameters` keeps what FastAPI itself declares, adds the rest once, is idempotent,
  and refuses to run once the schema has been built (FastAPI would not see the change).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Query, Request, Response
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

import test_server_schema
from perpex.server import ServerConfig, create_app, routes_trade, trade_params
from perpex.server.openapi_params import (
    OPERATIONS,
    Operation,
    Param,
    api_routes,
    declare_parameters,
)
from perpex.server.params import Params
from server_harness import Served, serve, signed_request


def declared_app() -> FastAPI:
    app = create_app(ServerConfig(data_dir=Path("/nonexistent/perpex-openapi-test")))
    declare_parameters(app)  # until app.py does it: then this second call is a no-op
    return app


APP: Final = declared_app()
SCHEMA: Final[dict[str, Any]] = APP.openapi()
METHODS: Final = ("get", "post", "put", "delete", "patch")
SCHEMA_OPERATIONS: Final = {
    (method.upper(), path): op
    for path, item in SCHEMA["paths"].items()
    for method, op in item.items()
    if method in METHODS
}
TABLE: Final = sorted(OPERATIONS)
AUTH: Final = {"timestamp", "signature", "X-MBX-APIKEY"}  # required on every signed call
# Binance documents these with no parameters at all ("Parameters: NONE").
PARAMETERLESS: Final = [
    "GET /fapi/v1/exchangeInfo",
    "GET /fapi/v1/fundingInfo",
    "GET /fapi/v1/ping",
    "GET /fapi/v1/time",
]


def declared(op: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p["in"], p["name"]) for p in op.get("parameters", [])]


def by_name(op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in op.get("parameters", [])}


# -- the table and the app agree ----------------------------------------------------------------
def test_the_table_names_every_documented_route_and_no_other() -> None:
    routes = {
        (method, route.path_format)
        for route in api_routes(APP.router.routes)
        if route.include_in_schema
        for method in route.methods or ()
    }
    assert routes == set(OPERATIONS), (
        f"routes without a declaration: {sorted(routes - set(OPERATIONS))}; "
        f"declarations without a route: {sorted(set(OPERATIONS) - routes)}"
    )
    assert set(SCHEMA_OPERATIONS) == set(OPERATIONS)
    assert len(OPERATIONS) == 69


@pytest.mark.parametrize("key", TABLE, ids=[f"{m} {p}" for m, p in TABLE])
def test_every_operation_declares_the_table_parameters_once(key: tuple[str, str]) -> None:
    op = SCHEMA_OPERATIONS[key]
    names = declared(op)
    assert len(names) == len(set(names)), f"duplicates: {names}"
    operation = OPERATIONS[key]
    assert set(names) == {(p.location, p.name) for p in operation.params}
    assert op["tags"] == [operation.tag]
    assert op["summary"]
    for param in op.get("parameters", []):
        assert param["schema"]["type"] in ("string", "integer", "number", "boolean"), param
        if "enum" in param["schema"]:
            assert param["schema"]["enum"], param
            if "default" in param["schema"]:
                assert param["schema"]["default"] in param["schema"]["enum"], param
        Draft202012Validator.check_schema(param["schema"])
        if "example" in param:  # schemathesis sends the examples first (explicit phase)
            Draft202012Validator(param["schema"]).validate(param["example"])


@pytest.mark.parametrize("key", TABLE, ids=[f"{m} {p}" for m, p in TABLE])
def test_a_signed_operation_declares_the_whole_signature(key: tuple[str, str]) -> None:
    params = by_name(SCHEMA_OPERATIONS[key])
    if "signature" not in params:
        assert "timestamp" not in params and "recvWindow" not in params
        return
    for name in AUTH:
        assert params[name]["required"], name
    assert params["X-MBX-APIKEY"]["in"] == "header"
    assert params["timestamp"]["schema"]["type"] == "integer"
    assert params["recvWindow"]["schema"]["maximum"] == 60_000  # BINANCE_API.md §2
    assert not params["recvWindow"]["required"]


# -- Binance's required flags and enums ---------------------------------------------------------
REQUIRED_CASES: Final = [
    # (method, path, the required parameters: BINANCE_API.md §3 and Binance's reference)
    ("POST", "/fapi/v1/order", {"symbol", "side", "type"} | AUTH),
    ("GET", "/fapi/v1/klines", {"symbol", "interval"}),
    ("GET", "/fapi/v1/markPriceKlines", {"symbol", "interval"}),
    ("GET", "/fapi/v1/indexPriceKlines", {"pair", "interval"}),  # pair, not symbol
    ("GET", "/fapi/v1/depth", {"symbol"}),
    ("GET", "/fapi/v1/ticker/24hr", set()),  # no symbol: every symbol
    ("GET", "/fapi/v1/premiumIndex", set()),
    ("GET", "/fapi/v1/aggTrades", {"symbol"}),
    ("GET", "/fapi/v1/order", {"symbol"} | AUTH),  # orderId or origClientOrderId
    ("DELETE", "/fapi/v1/order", {"symbol"} | AUTH),
    ("PUT", "/fapi/v1/order", {"symbol", "side", "quantity", "price"} | AUTH),
    ("POST", "/fapi/v1/algoOrder", {"algoType", "symbol", "side", "type"} | AUTH),
    ("POST", "/fapi/v1/batchOrders", {"batchOrders"} | AUTH),
    ("GET", "/fapi/v1/openOrders", AUTH),
    ("GET", "/fapi/v1/allOrders", {"symbol"} | AUTH),
    ("GET", "/fapi/v1/userTrades", {"symbol"} | AUTH),
    ("POST", "/fapi/v1/leverage", {"symbol", "leverage"} | AUTH),
    ("POST", "/fapi/v1/marginType", {"symbol", "marginType"} | AUTH),
    ("GET", "/fapi/v3/account", AUTH),
    ("GET", "/fapi/v3/positionRisk", AUTH),
    ("GET", "/fapi/v1/income", AUTH),
    ("POST", "/fapi/v1/listenKey", {"X-MBX-APIKEY"}),  # the key only, no signature
    ("PUT", "/fapi/v1/listenKey", {"X-MBX-APIKEY"}),
    ("POST", "/admin/shock", {"kind", "X-Admin-Token"}),
    ("GET", "/admin/status", {"X-Admin-Token"}),
]


@pytest.mark.parametrize(
    ("method", "path", "required"), REQUIRED_CASES, ids=[f"{m} {p}" for m, p, _ in REQUIRED_CASES]
)
def test_required_flags_are_binances(method: str, path: str, required: set[str]) -> None:
    params = by_name(SCHEMA_OPERATIONS[(method, path)])
    assert {name for name, p in params.items() if p["required"]} == required


ENUM_CASES: Final = [
    ("POST", "/fapi/v1/order", "side", {"BUY", "SELL"}),
    ("POST", "/fapi/v1/order", "type", {
        "LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
        "TRAILING_STOP_MARKET",
    }),
    ("POST", "/fapi/v1/order", "timeInForce", {"GTC", "IOC", "FOK", "GTX"}),
    ("POST", "/fapi/v1/order", "newOrderRespType", {"ACK", "RESULT"}),
    ("POST", "/fapi/v1/algoOrder", "workingType", {"MARK_PRICE", "CONTRACT_PRICE"}),
    ("POST", "/fapi/v1/algoOrder", "algoType", {"CONDITIONAL"}),
    ("POST", "/fapi/v1/marginType", "marginType", {"ISOLATED", "CROSSED"}),
    ("GET", "/fapi/v1/klines", "interval", {
        "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w",
        "1M",
    }),
    ("GET", "/fapi/v1/income", "incomeType", {
        "TRANSFER", "REALIZED_PNL", "FUNDING_FEE", "COMMISSION", "INSURANCE_CLEAR",
    }),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "name", "values"),
    ENUM_CASES,
    ids=[f"{m} {p} {n}" for m, p, n, _ in ENUM_CASES],
)
def test_enums_are_binances(method: str, path: str, name: str, values: set[str]) -> None:
    assert set(by_name(SCHEMA_OPERATIONS[(method, path)])[name]["schema"]["enum"]) == values


def test_binance_types() -> None:
    """LONG/INT -> integer, DECIMAL -> number, as Binance's reference types them."""
    order = by_name(SCHEMA_OPERATIONS[("POST", "/fapi/v1/order")])
    assert order["quantity"]["schema"]["type"] == "number"
    assert order["price"]["schema"]["type"] == "number"
    assert order["reduceOnly"]["schema"]["type"] == "boolean"
    klines = by_name(SCHEMA_OPERATIONS[("GET", "/fapi/v1/klines")])
    assert klines["limit"]["schema"] | {"format": "int64"} == {
        "type": "integer", "format": "int64", "minimum": 1, "maximum": 1500, "default": 500,
    }  # fmt: skip
    assert klines["startTime"]["schema"]["type"] == "integer"
    leverage = by_name(SCHEMA_OPERATIONS[("POST", "/fapi/v1/leverage")])["leverage"]
    assert (leverage["schema"]["minimum"], leverage["schema"]["maximum"]) == (1, 125)


# -- the schema fuzzer's view -------------------------------------------------------------------
def test_only_binances_parameterless_operations_declare_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(test_server_schema, "RAW_SCHEMA", SCHEMA)
    assert test_server_schema.undeclared_operations() == PARAMETERLESS
    assert sorted(f"{m} {p}" for (m, p), op in OPERATIONS.items() if not op.params) == (
        PARAMETERLESS
    )


# -- what the routes read, on a real server -----------------------------------------------------
def _value(param: Param) -> str:
    """A plausible value for a required parameter (its example, else one its schema allows)."""
    if param.example is not None:
        return str(param.example)
    if param.enum:
        return str(param.enum[0])
    if param.type == "boolean":
        return "false"
    if param.type == "integer":
        return str(param.minimum if param.minimum is not None else 1)
    if param.type == "number":
        return "1"
    return "perpex"


def _call(client: httpx.Client, s: Served, method: str, path: str, op: Operation) -> httpx.Response:
    """The operation with its required query parameters and those with an example, authorised
    as its declaration says."""
    names = {p.name for p in op.params}
    values = {
        p.name: _value(p)
        for p in op.params
        if (p.required or p.example is not None)
        and p.location == "query"
        and p.name not in ("timestamp", "signature")
    }
    if "signature" in names:
        return signed_request(client, method, path, s.api_key, s.secret, **values)
    headers = {}
    if "X-MBX-APIKEY" in names:
        headers["X-MBX-APIKEY"] = s.api_key
    if "X-Admin-Token" in names:
        headers["X-Admin-Token"] = s.admin_token
    return client.request(method, path, params=values, headers=headers)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The parameter names the server's routes read (`Params.get` and `in`), except those of a
    batchOrders slot (the keys of one order inside the `batchOrders` JSON)."""
    names: list[str] = []
    get, contains, slot_params = Params.get, Params.__contains__, trade_params.slot_params

    def recording_get(self: Params, name: str) -> str | None:
        if not getattr(self, "slot", False):
            names.append(name)
        return get(self, name)

    def recording_contains(self: Params, name: str) -> bool:
        if not getattr(self, "slot", False):
            names.append(name)
        return contains(self, name)

    def marked_slot(item: object) -> Params:
        params = slot_params(item)
        params.slot = True  # type: ignore[attr-defined]
        return params

    monkeypatch.setattr(Params, "get", recording_get)
    monkeypatch.setattr(Params, "__contains__", recording_contains)
    monkeypatch.setattr(routes_trade, "slot_params", marked_slot)  # the name routes_trade calls
    yield names


# Declared query parameters the calls below do not read through `Params`, and why.
SIGNATURE_ONLY: Final = {"signature"}  # checked over the raw bytes, never looked up by name
NOT_READ: Final = {
    # ccxt signs them; the stubs answer [] and check nothing.
    ("GET", "/sapi/v1/capital/config/getall"): {"timestamp", "recvWindow", "signature"},
    ("GET", "/sapi/v1/margin/allPairs"): {"timestamp", "recvWindow", "signature"},
    # Read from the admin call's name -> value dict, only the names sent.
    ("POST", "/admin/shock"): {"percent", "minutes", "seconds"},
    # Looked up only when orderIdList (sent: it has an example) is not.
    ("DELETE", "/fapi/v1/batchOrders"): {"origClientOrderIdList", "signature"},
}


def test_routes_read_exactly_the_declared_parameters(tmp_path: Path, reads: list[str]) -> None:
    """Every name a route reads is declared; every declared name is read (but `NOT_READ`)."""
    undeclared: dict[str, set[str]] = {}
    unread: dict[str, set[str]] = {}
    silent: list[str] = []
    with serve(tmp_path) as s, s.client() as client:
        # The admin calls last: a shock or a pause would change the market under the others.
        for method, path in sorted(TABLE, key=lambda k: (k[1].startswith("/admin"), k)):
            op = OPERATIONS[(method, path)]
            reads.clear()
            response = _call(client, s, method, path, op)
            assert response.status_code < 500, f"{method} {path}: {response.text}"
            query_names = {p.name for p in op.params if p.location == "query"}
            if set(reads) - query_names:
                undeclared[f"{method} {path}"] = set(reads) - query_names
            never = query_names - set(reads) - NOT_READ.get((method, path), SIGNATURE_ONLY)
            if never:
                unread[f"{method} {path}"] = never
            if query_names and not reads and not path.startswith("/sapi/"):
                silent.append(f"{method} {path}")  # the call never reached the route's reads
    assert not undeclared, f"read but not declared: {undeclared}"
    assert not unread, f"declared but never read: {unread}"
    # The sapi stubs answer [] to anyone (ccxt signs them; nothing is checked).
    assert not silent, f"no parameter read: {silent}"


# -- declare_parameters itself ------------------------------------------------------------------
def _small_app() -> tuple[FastAPI, APIRouter]:
    """A fresh router (declare_parameters changes the routes it is given)."""
    router = APIRouter()

    @router.get(
        "/q",
        openapi_extra={
            "parameters": [{"name": "own", "in": "query", "schema": {"type": "string"}}]
        },
    )
    async def q(request: Request, symbol: str | None = Query(None)) -> Response:
        return Response()

    @router.get("/plain")
    async def plain(request: Request) -> Response:
        return Response()

    app = FastAPI()
    app.include_router(router)
    return app, router


SMALL_TABLE: Final = {
    ("GET", "/q"): Operation(
        "trade",
        "Q",
        (
            Param("symbol", required=True),
            Param("limit", "integer"),
            Param("X-Key", location="header"),
        ),
    )
}


def test_fastapis_own_declarations_are_kept_and_the_rest_added_once() -> None:
    app, _ = _small_app()
    declare_parameters(app, SMALL_TABLE)
    declare_parameters(app, SMALL_TABLE)  # idempotent
    schema = app.openapi()
    op = schema["paths"]["/q"]["get"]
    assert declared(op) == [
        ("query", "symbol"),  # FastAPI's (Query(None): not required), kept as it is
        ("query", "limit"),
        ("header", "X-Key"),
        ("query", "own"),  # the route's own openapi_extra, which the table lacks
    ]
    assert by_name(op)["symbol"]["required"] is False
    assert (op["tags"], op["summary"]) == (["trade"], "Q")
    assert "parameters" not in schema["paths"]["/plain"]["get"]  # not in the table: untouched


def test_declaring_after_the_schema_is_built_is_refused() -> None:
    app, _ = _small_app()
    app.openapi()
    with pytest.raises(RuntimeError, match="already built"):
        declare_parameters(app, SMALL_TABLE)
