"""The admin endpoints under `/admin`: the controls of the person running the server (the
dashboard's admin panel), not part of Binance's API.

Every route answers only a loopback client (127.0.0.0/8, ::1) that sends the header
`X-Admin-Token: <token>` (printed at start; the dashboard reads it from the URL's fragment,
`/#admin=<token>`); anything else is 403 `{"code": -2015, "msg": ...}`, the same body whether
the token or the address was wrong. The token is never accepted in the URL (it would land in
logs).

- GET  /admin/status: the driver's status, the sequencer's counters, the insurance fund, open
  interest, each market's index, mark and last price;
- POST /admin/pause, /admin/resume: freeze or move the scenario's path (the driver's status);
- POST /admin/speed `speed` (scenario seconds per wall second): the driver's status;
- POST /admin/shock `kind` = drop | pump | gap | divergence, `percent`, `minutes`, `seconds`:
  the shock as the driver took it;
- POST /admin/deposit `account`, `amount` (USDT): the account's new balance;
- POST /admin/snapshot: the seq the journal's snapshot was taken at;
- GET  /admin/demo-key: the demo account's `api_key` and `secret`.

Parameters come in the query string, a form body or a JSON object body. Every change runs as
a sequencer job (the driver's methods too: they run in the writer thread, between its ticks);
a refused value is 400 with Binance's body (-1102 missing, -1100 malformed, -1130 not valid).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from fastapi import APIRouter, Request, Response

from perpex.exchange import Exchange
from perpex.server import wire
from perpex.server.config import DEMO_ACCOUNT
from perpex.server.driver import MarketDriver
from perpex.server.errors import ApiError, illegal, mandatory
from perpex.server.http import reply, state_of
from perpex.server.params import MAX_BODY_BYTES, Params
from perpex.server.sequencer import wall_clock_ns
from perpex.server.state import ServerState

TOKEN_HEADER: Final = "X-Admin-Token"
SHOCK_KINDS: Final = frozenset({"drop", "pump", "gap", "liquidity_gap", "divergence"})
NOT_ADMIN: Final = -2015  # Binance's "Invalid API-key, IP, or permissions for action."
UNSUPPORTED: Final = -1020  # Binance's "This operation is not supported."

router = APIRouter(prefix="/admin", tags=["admin"])


# -- who may call -------------------------------------------------------------------------------
def is_loopback(host: str | None) -> bool:
    """127.0.0.0/8, ::1 and ::ffff:127.x (an IPv4 client on a dual-stack socket)."""
    if not host:
        return False
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def _check_caller(request: Request, state: ServerState) -> None:
    if not is_loopback(request.client.host if request.client else None):
        raise ApiError(NOT_ADMIN, "Admin endpoints answer loopback clients only.", 403)
    token = request.headers.get(TOKEN_HEADER, "")
    if not token or not hmac.compare_digest(token.encode(), state.admin_token.encode()):
        raise ApiError(NOT_ADMIN, "Invalid admin token.", 403)


# -- parameters -------------------------------------------------------------------------------
async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(-1000, "Request body too large.", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _json_values(raw: bytes) -> dict[str, str]:
    """A JSON object body as name -> text (numbers as written, strings as they are)."""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(-1100, "Illegal characters found in a parameter.") from None
    if not isinstance(data, dict):
        raise ApiError(-1100, "Illegal characters found in a parameter.")
    values: dict[str, str] = {}
    for name, value in data.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise illegal(str(name))
        values[str(name)] = value if isinstance(value, str) else json.dumps(value)
    return values


async def _admin(request: Request) -> tuple[ServerState, dict[str, str]]:
    """The state and the parameters (query, then a form or JSON body) of an admin call."""
    state = state_of(request)
    _check_caller(request, state)
    raw_body = await _body(request) if request.method == "POST" else b""
    content_type = request.headers.get("content-type", "")
    is_json = "json" in content_type or raw_body.lstrip()[:1] == b"{"
    params = Params(request.scope.get("query_string", b""), b"" if is_json else raw_body)
    values = {name: value for name in params if (value := params.get(name)) is not None}
    if is_json and raw_body.strip():
        for name, value in _json_values(raw_body).items():
            if name in values:
                raise ApiError(-1101, f"Duplicate values for parameter '{name}'.")
            if value != "":
                values[name] = value
    return state, values


def _number(values: Mapping[str, str], name: str) -> float | None:
    text = values.get(name)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        raise illegal(name) from None
    if not math.isfinite(number):
        raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
    return number


def _driver(state: ServerState) -> MarketDriver:
    if state.driver is None:
        raise ApiError(UNSUPPORTED, "This operation is not supported: the server has no market "
                       "driver.")  # fmt: skip
    return state.driver


def _not_valid(exc: ValueError) -> ApiError:
    return ApiError(-1130, f"Data sent is not valid: {exc}")


# -- views ------------------------------------------------------------------------------------
def _open_interest_lots(ex: Exchange, symbol: str) -> int:
    accounts = ex.engine.accounts
    lots = 0
    for name in ex.engine.state.holders.get(symbol, ()):
        pos = accounts[name].positions.get(symbol)
        if pos is not None and pos.size_lots > 0:
            lots += pos.size_lots
    return lots


def status_of(state: ServerState, ex: Exchange) -> dict[str, Any]:
    """What /admin/status answers (a sequencer job: it reads the exchange)."""
    markets: dict[str, Any] = {}
    open_interest: dict[str, str] = {}
    for symbol, spec in state.specs.items():
        market = ex.engine.state.markets[symbol]
        oi = wire.qty_lots(spec, _open_interest_lots(ex, symbol))
        open_interest[symbol] = oi
        markets[symbol] = {
            "indexPrice": wire.price_ticks(spec, market.index_ticks)
            if market.index_ticks
            else None,
            "markPrice": wire.price_ticks(spec, market.mark_ticks) if market.mark_ticks else None,
            "lastPrice": (
                wire.price_ticks(spec, market.last_trade_ticks) if market.last_trade_ticks else None
            ),
            "openInterest": oi,
            "insuranceFund": wire.money(ex.insurance_fund(symbol)),
        }
    journal = ex.journal
    return {
        "serverTime": wire.ms(wall_clock_ns()),
        "engineTime": wire.ms(ex.time_ns),
        "startedAt": wire.ms(state.started_ns),
        "driver": dict(state.driver.status()) if state.driver is not None else None,
        "sequencer": {
            "batches": state.seq.batches,
            "jobs": state.seq.jobs,
            "journalSeq": journal.last_seq if journal is not None else 0,
            "lastSnapshotSeq": journal.last_snapshot_seq if journal is not None else 0,
        },
        "accounts": len(ex.engine.accounts),
        "insuranceFund": wire.money(ex.insurance_fund()),
        "openInterest": open_interest,
        "markets": markets,
    }


# -- routes -------------------------------------------------------------------------------------
@router.get("/status")
async def admin_status(request: Request) -> Response:
    """The market driver's status, the sequencer's counters, the insurance fund, open interest
    and each market's index, mark and last price."""
    state, _ = await _admin(request)
    data = await state.seq.call(lambda ex: status_of(state, ex), write=False)
    return reply(request, data)


@router.post("/pause")
async def admin_pause(request: Request) -> Response:
    """Freeze the scenario's path (the book stays live)."""
    state, _ = await _admin(request)
    driver = _driver(state)

    def pause(ex: Exchange) -> dict[str, Any]:
        driver.pause()
        return dict(driver.status())

    return reply(request, await state.seq.call(pause, write=False))


@router.post("/resume")
async def admin_resume(request: Request) -> Response:
    """Let the path move again, from where it was paused."""
    state, _ = await _admin(request)
    driver = _driver(state)

    def resume(ex: Exchange) -> dict[str, Any]:
        driver.resume()
        return dict(driver.status())

    return reply(request, await state.seq.call(resume, write=False))


@router.post("/speed")
async def admin_speed(request: Request) -> Response:
    """`speed`: scenario seconds per wall-clock second (the price stays continuous)."""
    state, values = await _admin(request)
    driver = _driver(state)
    speed = _number(values, "speed")
    if speed is None:
        raise mandatory("speed")

    def set_speed(ex: Exchange) -> dict[str, Any]:
        try:
            driver.set_speed(speed)
        except ValueError as exc:
            raise _not_valid(exc) from None
        return dict(driver.status())

    return reply(request, await state.seq.call(set_speed, write=False))


@router.post("/shock")
async def admin_shock(request: Request) -> Response:
    """`kind` = drop | pump (`percent` over `minutes`/`seconds`), gap (the makers pull out for
    `seconds`), divergence (the local book moves `percent` for `seconds`, the index holds)."""
    state, values = await _admin(request)
    driver = _driver(state)
    kind = values.get("kind")
    if kind is None:
        raise mandatory("kind")
    if kind not in SHOCK_KINDS:
        raise ApiError(-1130, "Data sent for parameter 'kind' is not valid.")
    params: dict[str, float] = {}
    for name in ("percent", "minutes", "seconds"):
        number = _number(values, name)
        if number is not None:
            params[name] = number

    def inject(ex: Exchange) -> dict[str, Any]:
        try:
            return dict(driver.inject(kind, params))
        except ValueError as exc:
            raise _not_valid(exc) from None

    return reply(request, await state.seq.call(inject, write=False))


@router.post("/deposit")
async def admin_deposit(request: Request) -> Response:
    """Credit `amount` USDT to `account` (made if new), through the facade."""
    state, values = await _admin(request)
    account = values.get("account")
    if account is None:
        raise mandatory("account")
    amount = values.get("amount")
    if amount is None:
        raise mandatory("amount")

    def deposit(ex: Exchange) -> dict[str, Any]:
        balance = ex.deposit(account, amount)  # ExchangeError for a bad name or amount
        return {
            "account": account,
            "amount": wire.money(Decimal(amount)),
            "balance": wire.money(balance),
        }

    return reply(request, await state.seq.call(deposit))


@router.post("/snapshot")
async def admin_snapshot(request: Request) -> Response:
    """Snapshot the journal now (after the current batch commits); answers the seq."""
    state, _ = await _admin(request)
    journal = state.ex.journal
    if journal is None:
        raise ApiError(UNSUPPORTED, "This operation is not supported: the exchange has no journal.")
    # A snapshot cannot be taken inside a batch's transaction: `then` runs after the commit,
    # still in the writer thread.
    seq = await state.seq.call(lambda ex: None, then=lambda _: journal.snapshot(), write=False)
    return reply(request, {"seq": seq})


@router.get("/demo-key")
async def admin_demo_key(request: Request) -> Response:
    """The demo account's API key and secret (the dashboard trades with it)."""
    state, _ = await _admin(request)
    record = state.keys.by_name(DEMO_ACCOUNT)
    if record is None or record.revoked or record.secret is None:
        raise ApiError(UNSUPPORTED, "This operation is not supported: the demo key was revoked.")
    return reply(
        request, {"account": record.name, "api_key": record.api_key, "secret": record.secret}
    )


__all__ = ["SHOCK_KINDS", "TOKEN_HEADER", "is_loopback", "router", "status_of"]
