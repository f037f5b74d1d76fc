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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from perpex.core.messages import MassQuote, UpdateIndex
from perpex.server import ServerConfig, create_app
from perpex.server.config import DEMO_ACCOUNT, Limits
from perpex.server.state import ServerState, open_state


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StaticDriver:
    """A fixed index (BTCUSDT 60,000, ETHUSDT 3,000) and a maker ladder of `levels` levels a
    side, one tick apart from `spread_ticks` out, `qty_lots` each."""

    name: str = "static"
    prices: Mapping[str, int] = field(
        default_factory=lambda: {"BTCUSDT": 600_000, "ETHUSDT": 300_000}
    )
    levels: int = 20
    spread_ticks: int = 5
    qty_lots: int = 500
    paused: bool = False
    speed: float = 1.0
    shocks: list[dict[str, Any]] = field(default_factory=list)

    def exchange_options(self) -> Mapping[str, Any]:
        return {"mark_price": "index", "insurance_fund": "1000000"}

    def start(self, ex: Any, now_ns: int) -> None:
        if "mm" not in ex.engine.accounts:
            ex.deposit("mm", "100000000")
        self.step(ex, now_ns)

    def step(self, ex: Any, now_ns: int) -> None:
        commands: list[Any] = []
        for symbol, index in self.prices.items():
            commands.append(UpdateIndex(symbol, index))
            gap, lots = self.spread_ticks, self.qty_lots
            quotes = [(1, index - gap - i, lots) for i in range(self.levels)]
            quotes += [(-1, index + gap + i, lots) for i in range(self.levels)]
            commands.append(MassQuote("mm", symbol, tuple(quotes)))
        ex.submit(commands)

    def status(self) -> Mapping[str, Any]:
        return {"scenario": self.name, "paused": self.paused, "speed": self.speed}

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def set_speed(self, speed: float) -> None:
        self.speed = speed

    def inject(self, kind: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        if kind != "drop":
            raise ValueError(f"unknown shock kind {kind!r}")
        pct = float(params.get("percent", 10))
        self.prices = {s: int(p * (100 - pct) / 100) for s, p in self.prices.items()}
        shock = {"kind": kind, "percent": pct}
        self.shocks.append(shock)
        return shock


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
