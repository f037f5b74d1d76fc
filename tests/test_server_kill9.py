"""`kill -9` of `perpex serve` while clients place orders: after a restart on the same data dir
no acknowledged order is lost, and a resent `newClientOrderId` acts once (issue 13 §6; the
journal's own kill -9 test, tests/test_kill9.py, does the same below the HTTP layer).

The server runs as a real process (`python -m perpex.cli serve`), as a user starts it. Three
client threads sign and send resting limit orders (BUY at 96 % of the mark: inside the price
band, far below the market, so they rest) with their own client order ids, and record each
order the server acknowledged (HTTP 200, with its orderId). The process is killed with
SIGKILL in the middle of the stream, twice; after each restart:

- the demo key is the same (the key file), the mark carries on from where it was, and every
  acknowledged order is there, open, with its orderId (GET /fapi/v1/order by
  origClientOrderId, and the openOrders list);
- resending every order (acknowledged or cut off by the kill) with the same newClientOrderId
  answers 200 with the orderId it had, and the open orders are then exactly one per client
  order id: nothing doubled.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Final

import httpx

from server_harness import free_port, signed_request

SYMBOL: Final = "BTCUSDT"
CLIENTS: Final = 3
ROUNDS: Final = 2  # kills
ACKS_BEFORE_KILL: Final = 20  # per round, all clients together
MAX_ORDERS_PER_CLIENT: Final = 30  # per round: well under the 200 open orders a symbol allows
QTY: Final = "0.002"
START_TIMEOUT_S: Final = 60.0


class Server:
    """One `perpex serve` process; its banner gives the demo key and the admin token."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "perpex.cli", "serve", "--port", str(self.port),
             "--data-dir", str(data_dir), "--speed", "1"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.api_key, self.secret, self.admin_token = self._banner()
        self._wait_ready()

    def _banner(self) -> tuple[str, str, str]:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.log.read_text()
            found = [re.search(rf"^{label}\s+(\S+)", text, re.M) for label in
                     ("api key", "secret", "admin token")]  # fmt: skip
            if all(found):
                return tuple(m.group(1) for m in found if m is not None)  # type: ignore[return-value]
            assert self.proc.poll() is None, text
            time.sleep(0.05)
        raise AssertionError(f"no banner: {self.log.read_text()}")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                r = httpx.get(
                    f"{self.base_url}/admin/status",
                    headers={"X-Admin-Token": self.admin_token},
                    timeout=2,
                )
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"server not ready: {self.log.read_text()}")

    def mark(self) -> Decimal:
        r = httpx.get(
            f"{self.base_url}/admin/status", headers={"X-Admin-Token": self.admin_token}, timeout=5
        )
        return Decimal(r.json()["markets"][SYMBOL]["markPrice"])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self._out.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        self._out.close()


@dataclass
class Ledger:
    """What the clients know: acknowledged orders (client id -> orderId) and the ones whose
    answer the kill cut off (sent, fate unknown)."""

    acked: dict[str, int] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # answers other than 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def order_params(cid: str, price: str) -> dict[str, str]:
    return {
        "symbol": SYMBOL, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "quantity": QTY, "price": price, "newClientOrderId": cid,
    }  # fmt: skip


def place(client: httpx.Client, server: Server, cid: str, price: str) -> httpx.Response:
    return signed_request(
        client, "POST", "/fapi/v1/order", server.api_key, server.secret,
        **order_params(cid, price),
    )  # fmt: skip


def client_loop(server: Server, ledger: Ledger, name: str, price: str) -> None:
    """Send orders until the server dies (or the round's cap): record every answer."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for i in range(MAX_ORDERS_PER_CLIENT):
            cid = f"{name}-{i}"
            with ledger.lock:
                ledger.unknown.add(cid)
            try:
                r = place(client, server, cid, price)
            except httpx.TransportError:
                return  # killed: this one's fate is unknown
            if r.status_code != 200:
                with ledger.lock:
                    ledger.errors.append(f"{cid}: {r.status_code} {r.text}")
                return
            with ledger.lock:
                ledger.unknown.discard(cid)
                ledger.acked[cid] = r.json()["orderId"]


def resting_price(server: Server) -> str:
    return str((server.mark() * Decimal("0.96")).quantize(Decimal("0.1"), rounding=ROUND_DOWN))


def open_orders(client: httpx.Client, server: Server) -> dict[str, int]:
    r = signed_request(
        client, "GET", "/fapi/v1/openOrders", server.api_key, server.secret, symbol=SYMBOL
    )
    assert r.status_code == 200, r.text
    rows = r.json()
    by_cid = {row["clientOrderId"]: row["orderId"] for row in rows}
    assert len(by_cid) == len(rows), "two open orders share a client order id"
    return by_cid


def check_after_restart(server: Server, ledger: Ledger, price: str) -> int:
    """Check the orders after a restart, resend them all; returns how many of the orders cut
    off by the kill had reached the journal (their resend is the duplicate path)."""
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        resting = open_orders(client, server)
        journaled_unacked = len(ledger.unknown & resting.keys())
        assert set(resting) <= set(ledger.acked) | ledger.unknown, "an order nobody sent"
        for cid, order_id in ledger.acked.items():
            assert resting.get(cid) == order_id, (cid, order_id, resting.get(cid))
            r = signed_request(
                client, "GET", "/fapi/v1/order", server.api_key, server.secret,
                symbol=SYMBOL, origClientOrderId=cid,
            )  # fmt: skip
            assert r.status_code == 200, r.text
            assert r.json()["orderId"] == order_id and r.json()["status"] == "NEW"
        # Resend everything: the acknowledged ones answer their orderId; the cut-off ones
        # are placed now or were already in the journal, once either way.
        for cid in sorted(ledger.acked) + sorted(ledger.unknown):
            r = place(client, server, cid, price)
            assert r.status_code == 200, (cid, r.text)
            order_id = r.json()["orderId"]
            assert ledger.acked.setdefault(cid, order_id) == order_id, cid
        ledger.unknown.clear()
        after = open_orders(client, server)
        assert after == ledger.acked  # one open order per client order id, nothing else
    return journaled_unacked


def test_kill9_loses_no_acknowledged_order_and_a_resend_acts_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "perpex-data"
    ledger = Ledger()
    server = Server(data_dir, tmp_path / "serve-0.log")
    demo_key = (server.api_key, server.secret)
    price = resting_price(server)
    killed_with_orders_in_flight = 0
    journaled_unacked = 0
    for round_no in range(ROUNDS):
        before = ledger.count()
        mark_at_kill = server.mark()  # a second or so before the kill
        threads = [
            threading.Thread(
                target=client_loop, args=(server, ledger, f"r{round_no}c{c}", price), daemon=True
            )
            for c in range(CLIENTS)
        ]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while ledger.count() < before + ACKS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.001)
        assert not ledger.errors, ledger.errors
        assert ledger.count() >= before + ACKS_BEFORE_KILL, server.log.read_text()[-2000:]
        server.kill()  # mid-stream: the clients are still sending
        for t in threads:
            t.join(30)
        assert not ledger.errors, ledger.errors
        killed_with_orders_in_flight += len(ledger.unknown)

        server = Server(data_dir, tmp_path / f"serve-{round_no + 1}.log")
        assert (server.api_key, server.secret) == demo_key  # the key file survived too
        assert "recovered" in server.log.read_text()
        # The market carries on from the journal's price, not from the scenario's first one.
        assert abs(server.mark() / mark_at_kill - 1) < Decimal("0.01")
        journaled_unacked += check_after_restart(server, ledger, price)
    server.stop()
    assert "perpex serve: stopped" in server.log.read_text()  # Ctrl-C: a clean stop
    assert len(ledger.acked) >= ROUNDS * ACKS_BEFORE_KILL
    assert killed_with_orders_in_flight > 0, "no kill caught an order in flight"
    print(
        f"{ROUNDS} kills; {len(ledger.acked)} orders open, each once; "
        f"{killed_with_orders_in_flight} were in flight at a kill, {journaled_unacked} of them "
        "journaled before it"
    )


def test_a_data_dir_of_another_scenario_s_exchange_is_refused_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "perpex-data"
    Server(data_dir, tmp_path / "serve.log").stop()  # the default scenario's exchange
    done = subprocess.run(
        [sys.executable, "-m", "perpex.cli", "serve", "--port", str(free_port()),
         "--data-dir", str(data_dir), "--scenario", "covid-2020-03-12"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("perpex serve: the journal in ") and "covid-2020-03-12" in lines[0]
