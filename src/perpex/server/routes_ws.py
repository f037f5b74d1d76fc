"""WebSocket endpoints (market and user streams) and the listen-key REST calls.

URL layouts (BINANCE_API.md §6.1), both served:

* 2026 split: `/public/ws[/<anything>]`, `/market/ws[/<anything>]` (ccxt.pro appends its own
  connection counter, a meaningless segment), `/public/stream?streams=a/b`,
  `/market/stream?...`, `/private/ws?listenKey=<key>`.
* legacy: `/ws`, `/ws/<stream>/<stream>...`, `/ws/<listenKey>`, `/stream?streams=...`.

`/stream` paths are combined streams: each message is wrapped `{"stream": name, "data": ...}`.
Any path takes SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY
requests (`{"method", "params", "id"}`), answered `{"result": ..., "id"}` or Binance's
`{"error": {"code", "msg"}, "id"}`; a bad request is answered, not fatal. Binance's limits:
10 incoming messages a second (a flood closes the connection, 1008), 1024 streams per
connection, 24 hours per connection. Ping/pong is the WebSocket server's.

Listen keys: `POST /fapi/v1/listenKey` (the API-key header only) returns `{"listenKey"}` (the
active one if there is one), `PUT` extends it 60 minutes (-1125 when the account has none),
`DELETE` closes it (`{}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import msgspec
from fastapi import APIRouter, FastAPI, Request, Response, WebSocket

from perpex.server import stream_payloads as wire_ws
from perpex.server.errors import ApiError
from perpex.server.http import keyed, reply
from perpex.server.listen_keys import NO_SUCH_KEY, looks_like_listen_key
from perpex.server.state import ServerState
from perpex.server.streams import CLOSE_TIMEOUT_S, MAX_STREAMS, Connection, StreamHub

MESSAGES_PER_S: Final = 10  # Binance: incoming messages per second per connection
MAX_MESSAGE_CHARS: Final = 65_536  # a request larger than this is garbage: the socket closes
METHODS: Final = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_MAX_ID: Final = 2**64 - 1
_MAX_ID_CHARS: Final = 36
_decode: Final = msgspec.json.Decoder().decode
_encode: Final = msgspec.json.Encoder().encode
# Binance's WebSocket error messages (codes 0-3)
BAD_ID: Final = (2, "Invalid request: request ID must be an unsigned integer")
NO_METHOD: Final = (2, "Invalid request: missing field `method`")
BAD_PARAMS: Final = (2, "Invalid request: invalid type: expected a sequence of strings")
BAD_STREAM: Final = (2, "Invalid request: invalid stream")
TOO_MANY_STREAMS: Final = (2, f"Invalid request: too many streams (at most {MAX_STREAMS})")
TOO_MANY_PARAMS: Final = (2, "Invalid request: too many parameters")
BAD_PROPERTY_NAME: Final = (2, "Invalid request: property name must be a string")
UNKNOWN_PROPERTY: Final = (0, "Unknown property")
NOT_BOOLEAN: Final = (1, "Invalid value type: expected Boolean")
BAD_JSON: Final = 3


@contextlib.asynccontextmanager
async def _bind_hub(app: FastAPI) -> AsyncIterator[None]:
    # Runs inside the app's lifespan, once the state is open: the hub then knows the server
    # (its sequencer and the account history whose user-stream queue it drains).
    state: ServerState | None = getattr(app.state, "perpex", None)
    if state is not None:
        state.hub.bind(state)
    yield


router = APIRouter(lifespan=_bind_hub)


# -- listen keys (REST) -------------------------------------------------------------------------
@router.post("/fapi/v1/listenKey", summary="Start a user data stream")
async def listen_key_new(request: Request) -> Response:
    call = await keyed(request)
    hub = _hub(call.state)
    return reply(request, {"listenKey": hub.listen_keys.open(call.account)})


@router.put("/fapi/v1/listenKey", summary="Keep a user data stream alive (60 minutes)")
async def listen_key_keep_alive(request: Request) -> Response:
    call = await keyed(request)
    hub = _hub(call.state)
    if hub.listen_keys.keep_alive(call.account, call.params.get("listenKey")) is None:
        raise ApiError(*NO_SUCH_KEY)
    return reply(request, {})


@router.delete("/fapi/v1/listenKey", summary="Close a user data stream")
async def listen_key_close(request: Request) -> Response:
    call = await keyed(request)
    hub = _hub(call.state)
    key = call.params.get("listenKey")
    if hub.close_listen_key(call.account, key) is None and key is not None:
        raise ApiError(*NO_SUCH_KEY)
    return reply(request, {})


def _hub(state: ServerState) -> StreamHub:
    hub = state.hub
    hub.bind(state)
    return hub


# -- WebSocket endpoints ------------------------------------------------------------------------
@router.websocket("/ws")
async def ws_root(websocket: WebSocket) -> None:
    await _serve(websocket, "", combined=False)


@router.websocket("/ws/{rest:path}")
async def ws_path(websocket: WebSocket, rest: str) -> None:
    await _serve(websocket, rest, combined=False)


@router.websocket("/stream")
async def stream_root(websocket: WebSocket) -> None:
    await _serve(websocket, "", combined=True)


@router.websocket("/{section}/ws")
async def section_ws(websocket: WebSocket, section: str) -> None:
    await _section(websocket, section, "", combined=False)


@router.websocket("/{section}/ws/{rest:path}")
async def section_ws_path(websocket: WebSocket, section: str, rest: str) -> None:
    await _section(websocket, section, rest, combined=False)


@router.websocket("/{section}/stream")
async def section_stream(websocket: WebSocket, section: str) -> None:
    await _section(websocket, section, "", combined=True)


async def _section(websocket: WebSocket, section: str, rest: str, *, combined: bool) -> None:
    if section not in ("public", "market", "private"):
        await websocket.close(1008, "Unknown path.")  # before accept: an HTTP 403
        return
    await _serve(websocket, rest, combined=combined, private=section == "private")


async def _serve(websocket: WebSocket, rest: str, *, combined: bool, private: bool = False) -> None:
    state: ServerState = websocket.app.state.perpex
    hub = _hub(state)
    await websocket.accept()
    conn = Connection(websocket, combined=combined, limit=state.config.ws_queue_limit)
    hub.register(conn)
    sender = conn.sender = asyncio.create_task(conn.run_sender())
    reader = asyncio.create_task(_read(hub, conn))
    try:
        problem = _open(hub, conn, rest, websocket.query_params, private)
        if problem is not None:
            conn.close(1008, problem)
        await asyncio.wait((sender, reader), return_when=asyncio.FIRST_COMPLETED)
        hub.unregister(conn)  # at once: nothing more is queued for it
        if conn.closing is not None:
            if not sender.done():  # flushing what was queued before the close
                await asyncio.wait((sender,), timeout=CLOSE_TIMEOUT_S)
            reader.cancel()
            sender.cancel()
            code, reason = conn.closing
            with contextlib.suppress(Exception):
                await asyncio.wait_for(websocket.close(code, reason), CLOSE_TIMEOUT_S)
    finally:
        reader.cancel()
        sender.cancel()
        hub.unregister(conn)
        await asyncio.wait((sender, reader))
        for task in (sender, reader):
            if not task.cancelled():
                task.exception()  # retrieved: a client that went away is not an error


def _open(
    hub: StreamHub, conn: Connection, rest: str, query: Mapping[str, str], private: bool
) -> str | None:
    """The streams the URL names; a reason to close the connection, or None."""
    names = [segment for segment in rest.split("/") if segment]
    if query.get("streams"):
        names += [n for n in query["streams"].split("/") if n]
    key = query.get("listenKey")
    if key:
        names.append(key)
    streams = []
    keys = []
    for name in names:
        if looks_like_listen_key(name):
            keys.append(name)
        elif name.startswith("!") or "@" in name:
            stream = hub.parse(name)
            if stream is None:
                return f"Invalid stream name: {name[:64]}"
            streams.append(stream)
        # anything else is a path suffix (ccxt.pro's connection counter): ignored
    if len(streams) + len(keys) > MAX_STREAMS:
        return f"Too many streams (at most {MAX_STREAMS})."
    if private and not keys:
        return "Invalid request: a listenKey is required."
    for listen_key in keys:
        if not hub.bind_listen_key(conn, listen_key):
            return "Invalid listenKey."
    hub.subscribe(conn, streams)
    return None


async def _read(hub: StreamHub, conn: Connection) -> None:
    """Answer the client's requests until it goes away or floods."""
    ws = conn.ws
    tokens = float(MESSAGES_PER_S)
    refilled_s = time.monotonic()
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        now_s = time.monotonic()
        tokens = min(float(MESSAGES_PER_S), tokens + (now_s - refilled_s) * MESSAGES_PER_S)
        refilled_s = now_s
        if tokens < 1:
            conn.close(1008, "Too many messages: at most 10 a second.", flush=False)
            return
        tokens -= 1
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        if len(data) > MAX_MESSAGE_CHARS:
            conn.close(1009, "Message too big.", flush=False)
            return
        answer = handle_request(hub, conn, data)
        conn.push(_encode(answer).decode())


def handle_request(hub: StreamHub, conn: Connection, data: str | bytes) -> dict[str, Any]:
    """One request from the client -> its answer (a result or Binance's error)."""
    try:
        request = _decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return wire_ws.error(None, BAD_JSON, f"Invalid JSON: {_json_problem(exc)}")
    if not isinstance(request, dict):
        return wire_ws.error(None, 2, "Invalid request: expected a JSON object")
    request_id = request.get("id")
    if not _valid_id(request_id):
        return wire_ws.error(None, *BAD_ID)
    method = request.get("method")
    if method is None:
        return wire_ws.error(request_id, *NO_METHOD)
    if method not in METHODS:
        variants = ", ".join(f"`{m}`" for m in METHODS)
        shown = str(method)[:32]
        msg = f"Invalid request: unknown variant `{shown}`, expected one of {variants}"
        return wire_ws.error(request_id, 2, msg)
    params = request.get("params", [])
    if not isinstance(params, list):
        return wire_ws.error(request_id, *BAD_PARAMS)
    if method == "SUBSCRIBE":
        return _subscribe(hub, conn, request_id, params)
    if method == "UNSUBSCRIBE":
        if not all(isinstance(p, str) for p in params):
            return wire_ws.error(request_id, *BAD_PARAMS)
        names = []
        for name in params:
            stream = hub.parse(name)
            names.append(stream.name if stream is not None else name)
        hub.unsubscribe(conn, names)
        return wire_ws.result(request_id)
    if method == "LIST_SUBSCRIPTIONS":
        return wire_ws.result(request_id, [*conn.streams, *conn.keys])
    return _property(conn, request_id, method, params)


def _subscribe(
    hub: StreamHub, conn: Connection, request_id: object, params: list[Any]
) -> dict[str, Any]:
    if not all(isinstance(p, str) for p in params):
        return wire_ws.error(request_id, *BAD_PARAMS)
    streams = []
    keys = []
    for name in params:
        if looks_like_listen_key(name):
            keys.append(name)
            continue
        stream = hub.parse(name)
        if stream is None:
            return wire_ws.error(request_id, *BAD_STREAM)
        streams.append(stream)
    fresh = {s.name for s in streams if s.name not in conn.streams}
    fresh |= {k for k in keys if k not in conn.keys}
    if conn.stream_count + len(fresh) > MAX_STREAMS:
        return wire_ws.error(request_id, *TOO_MANY_STREAMS)
    for key in keys:
        if not hub.bind_listen_key(conn, key):
            return wire_ws.error(request_id, *BAD_STREAM)
    hub.subscribe(conn, streams)
    return wire_ws.result(request_id)


def _property(
    conn: Connection, request_id: object, method: str, params: list[Any]
) -> dict[str, Any]:
    """SET_PROPERTY ["combined", true|false] and GET_PROPERTY ["combined"]."""
    if not params or not isinstance(params[0], str):
        return wire_ws.error(request_id, *BAD_PROPERTY_NAME)
    if params[0] != "combined":
        return wire_ws.error(request_id, *UNKNOWN_PROPERTY)
    if method == "GET_PROPERTY":
        if len(params) != 1:
            return wire_ws.error(request_id, *TOO_MANY_PARAMS)
        return wire_ws.result(request_id, conn.combined)
    if len(params) != 2:
        return wire_ws.error(request_id, *TOO_MANY_PARAMS)
    if not isinstance(params[1], bool):
        return wire_ws.error(request_id, *NOT_BOOLEAN)
    conn.combined = params[1]
    return wire_ws.result(request_id)


def _valid_id(value: object) -> bool:
    """An unsigned integer (Binance), or a short string (Binance's newer APIs)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return 0 <= value <= _MAX_ID
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS


def _json_problem(exc: Exception) -> str:
    text = str(exc)
    return text[:120] if text else "expected value at line 1 column 1"


__all__ = [
    "MAX_MESSAGE_CHARS",
    "MESSAGES_PER_S",
    "METHODS",
    "handle_request",
    "router",
]
