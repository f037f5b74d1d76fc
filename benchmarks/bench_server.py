"""`perpex serve` over the wire: signed order placement over HTTP and WebSocket fan-out.

Issue 13's figure: signed order placement over HTTP from 8 concurrent keep-alive clients on
loopback, journal on; goal >= 3,000 orders/s with p99 <= 20 ms on the AMD benchmark machine
(Binance itself allows 1,200 orders a minute per account). While it runs, 50 WebSocket clients
subscribed to depth and trades measure the fan-out.

Three processes, so that no two share a GIL:

- the server: `python -m benchmarks.server_process` (uvicorn, the real app, the journal in a
  temporary directory with WAL and one fsync per group commit, limits raised so that nothing is
  refused with 429, a fixed market: index 60,000.0 and a maker ladder of 20 levels a side);
- this process, the load generator: 8 clients, each one keep-alive HTTP/1.1 connection and one
  API key (its own account), each in a loop: POST /fapi/v1/order a LIMIT GTC order 3 % away
  from the market (it rests; 0.001 BTC, side alternating, `newClientOrderId` and
  `newOrderRespType=RESULT` as ccxt sends them), then DELETE /fapi/v1/order that order, and
  so on: 50 % placements, 50 % cancels, every request signed as ccxt signs (HMAC-SHA256 over
  `timestamp=...&...&recvWindow=10000`, POST as a form body, DELETE in the query string). A
  ninth connection (the taker, its own key) sends a MARKET order of 0.001 BTC every 50 ms,
  side alternating, so that trades happen and the trade stream has something to carry; its
  orders are not counted. The HTTP client is a minimal one on asyncio streams (`RawConnection`):
  on a two-core machine every microsecond the client spends is taken from the server, and
  httpx's async client costs several times as much per request (`--client httpx` measures
  with it);
- the fan-out: 50 WebSocket clients in a process of their own, each subscribed (as ccxt.pro
  does: `/public/ws` and a SUBSCRIBE) to `btcusdt@depth@100ms` and `btcusdt@trade`, counting
  the messages received in the measured window and the lag of each: receive time minus the
  event's `E` (both the machine's wall clock, in ms).

A warm-up (3 s) is excluded; the window (20 s) counts the requests that complete in it.
orders/s = placements + cancels answered 200 per second, by the 8 clients. Any refusal fails
the run. The baseline is the plain order book of `bench_edge` measured in this run (ops/s of
the in-process book), as in `bench_sim`, because machines differ.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from benchmarks.bench_edge import generate, run_plain
from benchmarks.bench_engine import best_of

CLIENTS: Final = 8
WS_CLIENTS: Final = 50
WARMUP_S: Final = 3.0
MEASURE_S: Final = 20.0
TAKER_INTERVAL_S: Final = 0.05  # one market order every 50 ms: ~20 trades/s
SYMBOL: Final = "BTCUSDT"
STREAMS: Final = ("btcusdt@depth@100ms", "btcusdt@trade")
QTY: Final = "0.001"  # 58 USDT at 58,200: above the 5 USDT min notional
BID_TICKS: Final = 582_000  # 58,200.0: 3 % under the index, inside the 5 % price band
ASK_TICKS: Final = 618_000  # 61,800.0: 3 % over it
PRICE_SPREAD_TICKS: Final = 50  # a client's orders spread over 50 levels
RECV_WINDOW_MS: Final = "10000"  # ccxt's default
START_TIMEOUT_S: Final = 60.0
GOAL_ORDERS_PER_S: Final = 3_000
GOAL_P99_MS: Final = 20.0
REPO: Final = Path(__file__).resolve().parents[1]


# -- signing, as ccxt does it --------------------------------------------------------------------
def signed_payload(params: Sequence[tuple[str, str]], secret: bytes) -> bytes:
    """`timestamp` first, the parameters, `recvWindow`, then `signature` (BINANCE_API.md §2)."""
    items = [("timestamp", str(time.time_ns() // 1_000_000)), *params]
    items.append(("recvWindow", RECV_WINDOW_MS))
    query = urllib.parse.urlencode(items).encode()
    signature = hmac.new(secret, query, hashlib.sha256).hexdigest()
    return query + b"&signature=" + signature.encode()


def price_text(ticks: int) -> str:
    return f"{ticks // 10}.{ticks % 10}"  # tick 0.1


# -- HTTP connections ----------------------------------------------------------------------------
class Connection_(Protocol):
    async def request(
        self, method: str, path: str, api_key: str, body: bytes | None, query: bytes | None
    ) -> tuple[int, bytes]: ...

    async def close(self) -> None: ...


class RawConnection:
    """One keep-alive HTTP/1.1 connection on asyncio streams: requests one at a time, responses
    with a Content-Length (what uvicorn sends for the app's JSON)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def request(
        self, method: str, path: str, api_key: str, body: bytes | None, query: bytes | None
    ) -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        target = path if query is None else f"{path}?{query.decode()}"
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += f"X-MBX-APIKEY: {api_key}\r\n"
        if body is not None:
            head += "Content-Type: application/x-www-form-urlencoded\r\n"
            head += f"Content-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw_head = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw_head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length < 0:
            raise RuntimeError(f"a response without Content-Length: {raw_head!r}")
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()


class HttpxConnection:
    """The same through httpx's async client (one connection, keep-alive)."""

    def __init__(self, host: str, port: int) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            base_url=f"http://{host}:{port}",
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            timeout=30,
        )

    async def open(self) -> None:
        pass

    async def request(
        self, method: str, path: str, api_key: str, body: bytes | None, query: bytes | None
    ) -> tuple[int, bytes]:
        headers = {"X-MBX-APIKEY": api_key}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        target = path if query is None else f"{path}?{query.decode()}"
        response = await self.client.request(method, target, content=body, headers=headers)
        return response.status_code, response.content

    async def close(self) -> None:
        await self.client.aclose()


# -- the load ------------------------------------------------------------------------------------
@dataclass
class ClientStats:
    latencies_s: list[float] = field(default_factory=list)  # completed in the window
    placed: int = 0  # in the window
    canceled: int = 0
    refusals: list[str] = field(default_factory=list)


_decode: Final = msgspec.json.Decoder().decode


def refused(stats: ClientStats, what: str, status: int, body: bytes) -> None:
    if len(stats.refusals) < 5:
        stats.refusals.append(f"{what}: HTTP {status} {body[:200]!r}")
    else:
        stats.refusals.append("")


async def order_client(
    index: int,
    conn: Connection_,
    api_key: str,
    secret: bytes,
    window: tuple[float, float],
    stats: ClientStats,
) -> None:
    """Place a resting limit order, cancel it, again, until the window closes."""
    start_s, stop_s = window
    n = 0
    clock = time.perf_counter
    while True:
        n += 1
        side_buy = n % 2 == 1
        offset = (index * 7 + n) % PRICE_SPREAD_TICKS
        price_ticks = BID_TICKS - offset if side_buy else ASK_TICKS + offset
        place = signed_payload(
            [
                ("symbol", SYMBOL),
                ("side", "BUY" if side_buy else "SELL"),
                ("type", "LIMIT"),
                ("quantity", QTY),
                ("price", price_text(price_ticks)),
                ("timeInForce", "GTC"),
                ("newClientOrderId", f"x-bench-{index}-{n}"),
                ("newOrderRespType", "RESULT"),
            ],
            secret,
        )
        t0 = clock()
        status, body = await conn.request("POST", "/fapi/v1/order", api_key, place, None)
        t1 = clock()
        if status != 200:
            refused(stats, "place", status, body)
            return
        order = _decode(body)
        if t0 >= start_s and t1 <= stop_s:
            stats.latencies_s.append(t1 - t0)
            stats.placed += 1
        cancel = signed_payload([("symbol", SYMBOL), ("orderId", str(order["orderId"]))], secret)
        t0 = clock()
        status, body = await conn.request("DELETE", "/fapi/v1/order", api_key, None, cancel)
        t1 = clock()
        if status != 200 or _decode(body).get("status") != "CANCELED":
            refused(stats, "cancel", status, body)
            return
        if t0 >= start_s and t1 <= stop_s:
            stats.latencies_s.append(t1 - t0)
            stats.canceled += 1
        if t1 >= stop_s:
            return


async def taker(
    conn: Connection_, api_key: str, secret: bytes, stop_s: float, stats: ClientStats
) -> None:
    """A market order every TAKER_INTERVAL_S against the maker's ladder: the trades."""
    n = 0
    clock = time.perf_counter
    next_s = clock()
    while next_s < stop_s:
        n += 1
        payload = signed_payload(
            [
                ("symbol", SYMBOL),
                ("side", "BUY" if n % 2 else "SELL"),
                ("type", "MARKET"),
                ("quantity", QTY),
                ("newClientOrderId", f"x-taker-{n}"),
                ("newOrderRespType", "RESULT"),
            ],
            secret,
        )
        t0 = clock()
        status, body = await conn.request("POST", "/fapi/v1/order", api_key, payload, None)
        if status != 200:
            refused(stats, "market order", status, body)
            return
        stats.latencies_s.append(clock() - t0)
        stats.placed += 1
        next_s += TAKER_INTERVAL_S
        await asyncio.sleep(max(0.0, next_s - clock()))


def cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(event-loop thread, whole process) CPU time in clock ticks, from /proc (Linux); the
    server's event loop runs in its main thread, whose thread id is the process id."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            process = f.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/task/{pid}/stat", encoding="ascii") as f:
            main = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc)
    return int(main[11]) + int(main[12]), int(process[11]) + int(process[12])


async def cpu_probe(pid: int, window: tuple[float, float], out: list[float]) -> None:
    """CPU seconds spent inside the window by the server (event loop, whole process) and by
    this process (the load generator)."""
    clock = time.perf_counter
    await asyncio.sleep(max(0.0, window[0] - clock()))
    first, mine = cpu_ticks(pid), time.process_time()
    await asyncio.sleep(max(0.0, window[1] - clock()))
    last, mine = cpu_ticks(pid), time.process_time() - mine
    if first is not None and last is not None:
        hz = os.sysconf("SC_CLK_TCK")
        out.extend([(last[0] - first[0]) / hz, (last[1] - first[1]) / hz, mine])


async def run_load(
    port: int,
    keys: list[list[str]],
    window: tuple[float, float],
    make: Callable[[str, int], Any],
    server_pid: int = 0,
    cpu_out: list[float] | None = None,
) -> tuple[list[ClientStats], ClientStats]:
    *client_keys, (taker_key, taker_secret) = keys
    conns = [make("127.0.0.1", port) for _ in keys]
    for conn in conns:
        await conn.open()
    stats = [ClientStats() for _ in client_keys]
    taker_stats = ClientStats()
    try:
        await asyncio.gather(
            *(
                order_client(i, conns[i], key, secret.encode(), window, stats[i])
                for i, (key, secret) in enumerate(client_keys)
            ),
            taker(conns[-1], taker_key, taker_secret.encode(), window[1], taker_stats),
            cpu_probe(server_pid, window, cpu_out if cpu_out is not None else []),
        )
    finally:
        for conn in conns:
            await conn.close()
    return stats, taker_stats


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when it is importable (the server's uvicorn picks it the same way)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# -- the fan-out (a process of its own) ----------------------------------------------------------
@dataclass
class FanOutResult:
    messages: int = 0  # received in the window, all clients
    depth: int = 0
    trades: int = 0
    lags_ms: list[int] = field(default_factory=list)
    per_client_min: int = 0
    dropped: int = 0  # connections the server closed during the run
    error: str = ""


async def _subscriber(
    url: str, ready: asyncio.Event, go: asyncio.Future[tuple[float, float]], counts: list[int],
    result: FanOutResult,
) -> None:  # fmt: skip
    from websockets.asyncio.client import connect

    decode = msgspec.json.Decoder().decode
    try:
        async with connect(url, compression=None, max_queue=None, ping_interval=None) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": list(STREAMS), "id": 1}))
            while True:  # the acknowledgement, {"result": null, "id": 1}
                first = decode(await ws.recv())
                if isinstance(first, dict) and first.get("id") == 1:
                    break
            counts.append(0)
            slot = len(counts) - 1
            ready.set()
            start_wall, stop_wall = await go
            lags = result.lags_ms
            while True:
                raw = await ws.recv()
                now_ms = time.time_ns() // 1_000_000
                if now_ms >= stop_wall * 1000:
                    return
                if now_ms < start_wall * 1000:
                    continue
                message = decode(raw)
                data = message.get("data", message)  # combined-stream wrapping, if any
                kind = data.get("e")
                if kind == "depthUpdate":
                    result.depth += 1
                elif kind == "trade":
                    result.trades += 1
                else:
                    continue
                result.messages += 1
                counts[slot] += 1
                lags.append(now_ms - int(data["E"]))
    except Exception as exc:  # a dropped connection is a result, not a crash of the bench
        result.dropped += 1
        if not result.error:
            result.error = repr(exc)


async def _fan_out(url: str, clients: int, pipe: Connection) -> FanOutResult:
    loop = asyncio.get_running_loop()
    result = FanOutResult()
    counts: list[int] = []
    go: asyncio.Future[tuple[float, float]] = loop.create_future()
    readies = [asyncio.Event() for _ in range(clients)]
    tasks = [asyncio.create_task(_subscriber(url, ready, go, counts, result)) for ready in readies]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
    pipe.send("ready")
    window = await loop.run_in_executor(None, pipe.recv)
    go.set_result(window)
    stop_wall = window[1]
    await asyncio.sleep(max(0.0, stop_wall - time.time()) + 0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    result.per_client_min = min(counts) if len(counts) == clients else 0
    return result


def fan_out_main(url: str, clients: int, pipe: Connection) -> None:
    """The fan-out process: connect and subscribe, say "ready", wait for the window (two wall
    clock times), count, send the `FanOutResult` back."""
    try:
        result = new_loop().run_until_complete(_fan_out(url, clients, pipe))
    except Exception as exc:
        result = FanOutResult(error=repr(exc))
    pipe.send(result)


# -- the server process --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, data_dir: Path, names: list[str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "benchmarks.server_process", "--port", str(self.port),
                "--data-dir", str(data_dir), "--names", ",".join(names),
            ],
            cwd=REPO, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, name="bench-server-stdout", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def message(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("the benchmark server did not answer in time")
            try:
                line = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    raise RuntimeError(
                        f"the benchmark server exited ({self.proc.returncode})"
                    ) from None
                continue
            with contextlib.suppress(ValueError):
                message: dict[str, Any] = json.loads(line)
                return message

    def stop(self) -> dict[str, Any]:
        """SIGINT (uvicorn's graceful shutdown: the writer drains, the journal snapshots)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            stats = self.message(30)
        except RuntimeError:
            stats = {}
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return stats


def receive(
    pipe: Connection, process: multiprocessing.process.BaseProcess, timeout_s: float, what: str
) -> Any:
    """The fan-out process's next message; an error if it dies or takes too long."""
    deadline = time.monotonic() + timeout_s
    while not pipe.poll(0.2):
        if not process.is_alive():
            raise RuntimeError(f"the fan-out process exited ({process.exitcode}) before: {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the fan-out process did not {what} in time")
    return pipe.recv()


# -- the run -------------------------------------------------------------------------------------
@dataclass
class Figures:
    orders_per_s: float
    placed: int
    canceled: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    taker_orders: int
    batches: int
    jobs: int
    fan: FanOutResult
    measure_s: float
    loop: str
    client: str
    loop_cpu_s: float  # the server's event-loop thread, in the window (nan if unknown)
    server_cpu_s: float  # the whole server process
    client_cpu_s: float  # the load generator (this process)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


def measure(
    clients: int = CLIENTS,
    ws_clients: int = WS_CLIENTS,
    warmup_s: float = WARMUP_S,
    measure_s: float = MEASURE_S,
    client: str = "raw",
) -> Figures:
    names = [f"bench{i:02d}" for i in range(clients)] + ["taker"]
    make = RawConnection if client == "raw" else HttpxConnection
    with tempfile.TemporaryDirectory(prefix="perpex-bench-server-") as tmp:
        server = ServerProcess(Path(tmp) / "data", names)
        fan: multiprocessing.process.BaseProcess | None = None
        try:
            hello = server.message(START_TIMEOUT_S)
            assert hello.get("ready"), hello
            keys: list[list[str]] = hello["keys"]
            ctx = multiprocessing.get_context("spawn")
            parent_end, child_end = ctx.Pipe()
            if ws_clients:
                url = f"ws://127.0.0.1:{server.port}/public/ws"
                fan = ctx.Process(
                    target=fan_out_main, args=(url, ws_clients, child_end), name="bench-fan-out"
                )
                fan.start()
                answer = receive(parent_end, fan, START_TIMEOUT_S, "connect")
                if answer != "ready":
                    raise RuntimeError(f"the fan-out failed: {answer}")
            # The window in both clocks: wall (the fan-out process) and perf_counter (here).
            lead_s = 0.2
            wall0, perf0 = time.time(), time.perf_counter()
            start_wall = wall0 + lead_s + warmup_s
            if fan is not None:
                parent_end.send((start_wall, start_wall + measure_s))
            window = (perf0 + lead_s + warmup_s, perf0 + lead_s + warmup_s + measure_s)
            cpu: list[float] = []  # the server's CPU seconds in the window: loop, process
            loop = new_loop()
            try:
                stats, taker_stats = loop.run_until_complete(
                    run_load(server.port, keys, window, make, server.proc.pid, cpu)
                )
            finally:
                loop.close()
            fan_result = FanOutResult()
            if fan is not None:
                fan_result = receive(parent_end, fan, 30, "report")
                fan.join(10)
        finally:
            if fan is not None and fan.is_alive():
                fan.terminate()
            server_stats = server.stop()
    problems = [r for s in [*stats, taker_stats] for r in s.refusals if r]
    if problems or any(s.refusals for s in stats):
        raise RuntimeError("refused requests: " + "; ".join(problems))
    latencies = sorted(x for s in stats for x in s.latencies_s)
    placed = sum(s.placed for s in stats)
    canceled = sum(s.canceled for s in stats)
    return Figures(
        orders_per_s=(placed + canceled) / measure_s,
        placed=placed,
        canceled=canceled,
        p50_ms=1000 * percentile(latencies, 0.50),
        p99_ms=1000 * percentile(latencies, 0.99),
        max_ms=1000 * (latencies[-1] if latencies else float("nan")),
        taker_orders=taker_stats.placed,
        batches=int(server_stats.get("batches", 0)),
        jobs=int(server_stats.get("jobs", 0)),
        fan=fan_result,
        measure_s=measure_s,
        loop=str(hello.get("loop", "?")),
        client=client,
        loop_cpu_s=cpu[0] if cpu else float("nan"),
        server_cpu_s=cpu[1] if cpu else float("nan"),
        client_cpu_s=cpu[2] if cpu else float("nan"),
    )


def row(name: str, metric: str, value: float, baseline: float | None, goal: str) -> dict[str, Any]:
    ratio = value / baseline if baseline else None
    return {
        "benchmark": name,
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "goal": goal,
    }


def run_rows(**options: Any) -> list[dict[str, Any]]:
    ops = generate()  # the plain book first, before any other process competes for the CPU
    plain_s, _ = best_of(lambda: None, lambda _: run_plain(ops))
    plain_rate = len(ops) / plain_s
    f = measure(**options)
    fan = f.fan
    ws_clients = options.get("ws_clients", WS_CLIENTS)
    if ws_clients and not fan.messages:
        raise RuntimeError(f"the fan-out received nothing: {fan.error or 'no error'}")
    lags = sorted(fan.lags_ms)
    clients = options.get("clients", CLIENTS)
    per_batch = f.jobs / f.batches if f.batches else float("nan")
    label = (
        f"{clients} keep-alive clients ({f.client} HTTP/1.1), loopback, journal on, "
        f"{f.loop} server; "
        f"{f.placed:,} resting LIMIT GTC placed + {f.canceled:,} canceled in {f.measure_s:g} s; "
        f"plus {f.taker_orders:,} taker MARKET orders not counted; "
        f"{per_batch:.1f} jobs per group commit"
    )
    rows = [
        row("server: plain book (bench_edge's workload)", "ops/s", plain_rate, plain_rate,
            "the baseline"),
        row(f"server: signed POST+DELETE /fapi/v1/order over HTTP ({label})", "orders/s",
            f.orders_per_s, plain_rate, f">= {GOAL_ORDERS_PER_S:,} orders/s on the AMD"),
        row("server: order request latency p50 (place or cancel, client-side)", "ms",
            f.p50_ms, None, ""),
        row(f"server: order request latency p99 (max {f.max_ms:.1f} ms)", "ms", f.p99_ms, None,
            f"<= {GOAL_P99_MS:g} ms"),
    ]  # fmt: skip
    requests = f.placed + f.canceled
    if requests and f.server_cpu_s == f.server_cpu_s:  # not nan: /proc was readable
        loop_us = 1e6 * f.loop_cpu_s / requests
        client_us = 1e6 * f.client_cpu_s / requests
        rows.append(row(
            f"server: CPU per counted request in the window (event loop {loop_us:.0f} us, "
            f"the rest: writer thread and others; includes the taker's and the fan-out's "
            f"share; the load generator: {client_us:.0f} us)",
            "us", 1e6 * f.server_cpu_s / requests, None, "informational",
        ))  # fmt: skip
    if not ws_clients:
        return rows
    return [
        *rows,
        row(f"server: WebSocket fan-out, {ws_clients} clients on {' + '.join(STREAMS)} "
            f"({fan.depth:,} depth + {fan.trades:,} trade messages; fewest per client "
            f"{fan.per_client_min:,}; {fan.dropped} dropped)", "msgs/s",
            fan.messages / f.measure_s, None, "informational"),
        row(f"server: fan-out lag, receive time - E (p50 {percentile(lags, 0.5):.0f} ms, "
            f"p99 {percentile(lags, 0.99):.0f} ms)", "max ms",
            float(lags[-1]) if lags else float("nan"), None, "informational"),
    ]  # fmt: skip


def run() -> list[dict[str, Any]]:
    return run_rows()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_server")
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--ws-clients", type=int, default=WS_CLIENTS)
    parser.add_argument("--warmup", type=float, default=WARMUP_S)
    parser.add_argument("--seconds", type=float, default=MEASURE_S)
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    args = parser.parse_args(argv)
    rows = run_rows(
        clients=args.clients,
        ws_clients=args.ws_clients,
        warmup_s=args.warmup,
        measure_s=args.seconds,
        client=args.client,
    )
    for r in rows:
        ratio = "" if r["ratio"] is None else f", ratio {r['ratio']:.4f}x"
        print(f"{r['benchmark']}: {r['value']:,.1f} {r['metric']}{ratio}")
    return 0


if __name__ == "__main__":  # python -m benchmarks.bench_server [--seconds S ...]
    os.chdir(REPO)
    sys.exit(main())
