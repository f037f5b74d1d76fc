"""What every route does first: find the server's state, read the parameters, authenticate,
charge the limits; and how it answers (JSON bytes with Binance's usage headers).

Routes are `async def name(request: Request) -> Response` and start with one of
`public(request, weight)`, `signed(request, weight, orders)` or `keyed(request)`; they run
their work as a sequencer job (`state.seq.call(...)`) and answer with `reply(request, data)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec
from fastapi import Request, Response

from perpex.server.auth import api_key_of, verify_signed
from perpex.server.errors import ApiError
from perpex.server.limits import RateLimited, Usage
from perpex.server.params import Params, read_params
from perpex.server.state import ServerState

_encode: Final = msgspec.json.Encoder().encode
WEIGHT_HEADER: Final = "X-MBX-USED-WEIGHT-1M"
ORDER_HEADER: Final = "X-MBX-ORDER-COUNT-1M"


@dataclass(frozen=True)
class Call:
    state: ServerState
    params: Params
    account: str  # "" for a public call


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.perpex
    return state


def _client(request: Request) -> str:
    return "ip:" + (request.client.host if request.client else "?")


def _remember(request: Request, usage: Usage) -> None:
    request.state.usage = usage


def _charge(request: Request, state: ServerState, who: str, weight: int, orders: int = 0) -> None:
    """Charge the limits; a 429 still reports the usage in its headers, as Binance's do."""
    try:
        usage = state.limiter.charge(who, weight, orders)
    except RateLimited as exc:
        _remember(request, exc.usage)
        raise
    _remember(request, usage)


async def public(request: Request, weight: int = 1) -> Call:
    state = state_of(request)
    _charge(request, state, _client(request), weight)
    params = await read_params(request)
    return Call(state, params, "")


async def signed(request: Request, weight: int = 1, orders: int = 0) -> Call:
    state = state_of(request)
    params = await read_params(request)
    try:
        record = verify_signed(request.headers, params, state.keys, state.config.limits)
    except ApiError:
        _charge(request, state, _client(request), 1)  # failed attempts count, per address
        raise
    _charge(request, state, "key:" + record.api_key, weight, orders)
    return Call(state, params, record.name)


async def keyed(request: Request, weight: int = 1) -> Call:
    """The listenKey calls: the key header only, no timestamp, no signature."""
    state = state_of(request)
    record = api_key_of(request.headers, state.keys)
    _charge(request, state, "key:" + record.api_key, weight)
    params = await read_params(request)
    return Call(state, params, record.name)


def usage_headers(request: Request) -> dict[str, str]:
    usage: Usage | None = getattr(request.state, "usage", None)
    if usage is None:
        return {}
    headers = {WEIGHT_HEADER: str(usage.weight_1m)}
    if usage.orders_1m is not None:
        headers[ORDER_HEADER] = str(usage.orders_1m)
    return headers


def reply(request: Request, data: Any, status: int = 200) -> Response:
    """`data` (dicts, lists, str, int, bool; decimals already strings) as JSON."""
    return Response(
        _encode(data),
        status_code=status,
        media_type="application/json",
        headers=usage_headers(request),
    )


__all__ = [
    "ORDER_HEADER",
    "WEIGHT_HEADER",
    "Call",
    "keyed",
    "public",
    "reply",
    "signed",
    "state_of",
    "usage_headers",
]
