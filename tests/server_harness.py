"""A real server for the server tests: uvicorn on a free loopback port, in a thread.

`Served` gives the base URL, the demo account's key and secret, the admin token and the
server's state (for comparing with the facade). `StaticDriver` is a deterministic market: a
fixed index per symbol and one maker ("mm") quoting a ladder around it, re-quoted each tick.
Signing helpers build what ccxt sends (BINANCE_API.md §2).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from perpex.live.static import StaticDriver
from perpex.server import ServerConfig, create_app
from perpex.server.config import DEMO_ACCOUNT, Limits
from perpex.server.state import ServerState, open_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    base_url: str
    port: int
    data_dir: Path
    api_key: str
    secret: str
    admin_token: str
    state: ServerState
    config: ServerConfig

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def new_key(self, name: str, deposit: str = "10000") -> tuple[str, str]:
        made = self.state.keys.create(name, deposit=deposit)
        assert made.secret is not None
        return made.api_key, made.secret


def sign(params: Mapping[str, Any], secret: str, *, timestamp_ms: int | None = None) -> str:
    """`timestamp` first, the params, `recvWindow`, then `signature`: ccxt's order."""
    stamp = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    items = [("timestamp", str(stamp))]
    items += [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()]
    if "recvWindow" not in params:
        items.append(("recvWindow", "10000"))
    query = urllib.parse.urlencode(items)
    signature = hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{query}&signature={signature}"


def signed_request(
    client: httpx.Client, method: str, path: str, api_key: str, secret: str, **params: Any
) -> httpx.Response:
    """GET/DELETE with the query string, POST/PUT with a form body, as ccxt sends them."""
    payload = sign(params, secret)
    headers = {"X-MBX-APIKEY": api_key}
    if method in ("GET", "DELETE"):
        return client.request(method, f"{path}?{payload}", headers=headers)
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    return client.request(method, path, content=payload.encode(), headers=headers)


@contextlib.contextmanager
def serve(
    tmp_path: Path,
    driver: Any = None,
    *,
    limits: Limits | None = None,
    tick_seconds: float = 0.2,
) -> Iterator[Served]:
    """Start a server (the `StaticDriver` unless `driver` is given), yield it, stop it."""
    port = free_port()
    config = ServerConfig(
        data_dir=tmp_path / "perpex-data",
        port=port,
        tick_seconds=tick_seconds,
        limits=limits or Limits(),
    )
    state = open_state(config, driver if driver is not None else StaticDriver())
    app = create_app(config, state=state)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
            # One encoding fanned out to every subscriber: no per-connection compression.
            ws_per_message_deflate=False,
        )
    )
    thread = threading.Thread(target=server.run, name="perpex-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    demo = state.keys.by_name(DEMO_ACCOUNT)
    assert demo is not None and demo.secret is not None
    try:
        yield Served(
            base_url=f"http://127.0.0.1:{port}",
            port=port,
            data_dir=config.data_dir,
            api_key=demo.api_key,
            secret=demo.secret,
            admin_token=state.admin_token,
            state=state,
            config=config,
        )
    finally:
        server.should_exit = True
        thread.join(30)


__all__ = ["Served", "StaticDriver", "free_port", "serve", "sign", "signed_request"]
