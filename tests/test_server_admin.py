"""The admin endpoints on a real server driven by a scenario: loopback and the admin token
only; pause, resume, speed, shocks, deposits, snapshots, the status and the demo key.

One server (a flat BTCUSDT at 60,000, so a shock's effect is exact) serves the whole module;
each test leaves the market as it found it (running, at 1x, no shock in progress).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, Final

import httpx
import pytest

from perpex.live.driver import ScenarioDriver
from perpex.server import create_app
from perpex.server.routes_admin import is_loopback
from perpex.sim.scenario import loads_scenario
from server_harness import Served, serve

SYMBOL: Final = "BTCUSDT"
FLAT: Final = """
name = "flat-admin"
question = "Flat?"
[path]
start_price = 60000.0
steps = 86400
step_seconds = 1.0
sigma = 0.0
[exchange]
mark_price = "index"
[agents.makers]
count = 2
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    driver = ScenarioDriver(loads_scenario(FLAT, "flat-admin.toml"), speed=1, tape_per_minute=0)
    with serve(tmp_path_factory.mktemp("admin"), driver=driver, tick_seconds=0.1) as s:
        yield s


def admin(
    s: Served, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    with s.client() as client:
        sent = {"X-Admin-Token": s.admin_token, **(headers or {})}
        return client.request(method, path, headers=sent, **kwargs)


def wait_for(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def index_price(s: Served) -> Decimal:
    body = admin(s, "GET", "/admin/status").json()
    return Decimal(body["markets"][SYMBOL]["indexPrice"])


def makers_orders(s: Served) -> int:
    return int(
        s.state.seq.call_sync(
            lambda ex: sum(len(ex.open_orders(f"mm-{i}", SYMBOL)) for i in range(2)), write=False
        )
    )


# -- who may call -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/status"),
        ("POST", "/admin/pause"),
        ("POST", "/admin/resume"),
        ("POST", "/admin/speed?speed=2"),
        ("POST", "/admin/shock?kind=drop&percent=50"),
        ("POST", "/admin/deposit?account=mallory&amount=1000000"),
        ("POST", "/admin/snapshot"),
        ("GET", "/admin/demo-key"),
    ],
)
def test_every_admin_route_refuses_a_missing_or_wrong_token(
    served: Served, method: str, path: str
) -> None:
    with served.client() as client:
        for headers in ({}, {"X-Admin-Token": "not-the-token"}, {"X-Admin-Token": ""}):
            r = client.request(method, path, headers=headers)
            assert r.status_code == 403, (headers, r.text)
            assert r.json() == {"code": -2015, "msg": "Invalid admin token."}
        r = client.get(f"/admin/status?token={served.admin_token}")  # never from the URL
        assert r.status_code == 403
    status = admin(served, "GET", "/admin/status").json()
    assert status["driver"]["paused"] is False and status["driver"]["speed"] == 1.0
    assert status["driver"]["shocks"] == []
    assert "mallory" not in str(status)


def test_a_non_loopback_client_is_refused_even_with_the_token(served: Served) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.10")
    assert is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1") and not is_loopback("::ffff:10.0.0.1")
    assert not is_loopback(None) and not is_loopback("testclient")
    app = create_app(served.config, state=served.state)
    app.state.perpex = served.state  # the running server's state, without a second lifespan

    async def remote_call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://perpex") as client:
            return await client.get(
                "/admin/demo-key", headers={"X-Admin-Token": served.admin_token}
            )

    r = asyncio.run(remote_call())
    assert r.status_code == 403
    assert r.json() == {"code": -2015, "msg": "Admin endpoints answer loopback clients only."}


# -- reads ----------------------------------------------------------------------------------------
def test_status_shows_the_driver_the_sequencer_the_fund_and_open_interest(served: Served) -> None:
    r = admin(served, "GET", "/admin/status")
    assert r.status_code == 200, r.text
    body = r.json()
    driver = body["driver"]
    assert driver["scenario"] == "flat-admin" and driver["symbol"] == SYMBOL
    assert driver["makers"] == 2 and driver["indexPrice"] == "60000.0"
    assert body["sequencer"]["batches"] > 0 and body["sequencer"]["journalSeq"] > 0
    assert body["insuranceFund"] == "1000000.00000000"  # the scenario's default seed
    assert body["openInterest"] == {SYMBOL: "0.000"}
    market = body["markets"][SYMBOL]
    assert market["indexPrice"] == market["markPrice"] == "60000.0"
    assert market["lastPrice"] is None
    assert body["serverTime"] >= body["engineTime"] >= body["startedAt"] > 0


def test_demo_key_is_the_printed_demo_account(served: Served) -> None:
    body = admin(served, "GET", "/admin/demo-key").json()
    assert body == {"account": "demo", "api_key": served.api_key, "secret": served.secret}


# -- the market's controls ---------------------------------------------------------------------
def test_pause_freezes_the_path_and_resume_moves_it_again(served: Served) -> None:
    r = admin(served, "POST", "/admin/pause")
    assert r.status_code == 200 and r.json()["paused"] is True
    frozen = r.json()["pathSeconds"]
    time.sleep(0.5)
    status = admin(served, "GET", "/admin/status").json()["driver"]
    assert status["paused"] is True and status["pathSeconds"] <= frozen + 0.2  # one tick at most
    r = admin(served, "POST", "/admin/resume")
    assert r.status_code == 200 and r.json()["paused"] is False
    moved = wait_for(
        lambda: admin(served, "GET", "/admin/status").json()["driver"]["pathSeconds"],
        lambda seconds: seconds > frozen + 0.3,
    )
    assert moved > frozen + 0.3


def test_speed_takes_a_form_a_query_or_json_and_refuses_bad_values(served: Served) -> None:
    r = admin(served, "POST", "/admin/speed", data={"speed": "60"})
    assert r.status_code == 200 and r.json()["speed"] == 60.0
    r = admin(served, "POST", "/admin/speed", json={"speed": 7.5})
    assert r.status_code == 200 and r.json()["speed"] == 7.5
    for params, code in (
        ({}, -1102),
        ({"speed": "fast"}, -1100),
        ({"speed": "0"}, -1130),
        ({"speed": "-3"}, -1130),
        ({"speed": "1e9"}, -1130),
        ({"speed": "nan"}, -1130),
    ):
        r = admin(served, "POST", "/admin/speed", params=params)
        assert r.status_code == 400 and r.json()["code"] == code, (params, r.text)
    r = admin(served, "POST", "/admin/speed?speed=1")
    assert r.status_code == 200 and r.json()["speed"] == 1.0


def test_a_drop_shock_moves_the_index_10_pct(served: Served) -> None:
    before = index_price(served)
    r = admin(served, "POST", "/admin/shock", json={"kind": "drop", "percent": 10, "seconds": 1})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "drop" and r.json()["percent"] == 10.0
    after = wait_for(lambda: index_price(served), lambda p: p <= before * Decimal("0.9"))
    assert after == before * Decimal("0.9")
    r = admin(served, "POST", "/admin/shock", data={"kind": "pump", "percent": "11.111111"})
    assert r.status_code == 200  # back near 60,000 at once (a pump over 0 s)
    back = wait_for(lambda: index_price(served), lambda p: p > after)
    assert abs(back - before) < 1
    # After a jump the makers quote again on the next tick (their new ladders are checked
    # against the mark the jump leaves behind, as in the simulator's steps).
    assert wait_for(lambda: makers_orders(served), lambda n: n > 20) > 20


def test_a_gap_shock_pulls_the_makers_quotes_for_its_seconds(served: Served) -> None:
    assert makers_orders(served) > 20
    r = admin(served, "POST", "/admin/shock?kind=liquidity_gap&seconds=1.5")
    assert r.status_code == 200 and r.json()["kind"] == "gap"
    assert wait_for(lambda: makers_orders(served), lambda n: n == 0) == 0
    assert wait_for(lambda: makers_orders(served), lambda n: n > 20) > 20


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({}, -1102),
        ({"kind": "meteor"}, -1130),
        ({"kind": "drop", "percent": "120"}, -1130),
        ({"kind": "drop", "percent": "ten"}, -1100),
        ({"kind": "gap", "seconds": "0"}, -1130),
        ({"kind": "divergence", "percent": "0", "seconds": "5"}, -1130),
        ({"kind": "drop", "percent": "5", "minutes": "inf"}, -1130),
    ],
)
def test_bad_shocks_are_400_with_binance_bodies(
    served: Served, payload: dict[str, str], code: int
) -> None:
    r = admin(served, "POST", "/admin/shock", data=payload)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == code and r.json()["msg"]


def test_a_bad_json_body_is_400(served: Served) -> None:
    for content in (b"{not json", b'{"kind": ["drop"]}', b'{"kind": true}'):
        r = admin(
            served,
            "POST",
            "/admin/shock",
            content=content,
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["code"] == -1100, (content, r.text)


# -- money and the journal -------------------------------------------------------------------------
def test_deposit_credits_an_account_through_the_facade(served: Served) -> None:
    r = admin(served, "POST", "/admin/deposit", data={"account": "alice", "amount": "250.5"})
    assert r.status_code == 200, r.text
    assert r.json() == {"account": "alice", "amount": "250.50000000", "balance": "250.50000000"}
    r = admin(served, "POST", "/admin/deposit", json={"account": "alice", "amount": 100})
    assert r.json()["balance"] == "350.50000000"
    wallet = served.state.seq.call_sync(lambda ex: ex.account("alice").wallet_balance, write=False)
    assert wallet == Decimal("350.5")
    for payload in (
        {"account": "alice"},
        {"amount": "5"},
        {"account": "alice", "amount": "-5"},
        {"account": "alice", "amount": "0.0000001"},
        {"account": "bad name!", "amount": "5"},
    ):
        r = admin(served, "POST", "/admin/deposit", data=payload)
        assert r.status_code == 400, (payload, r.text)
        assert r.json()["code"] < 0 and r.json()["msg"]


def test_snapshot_writes_one_at_the_journal_s_last_seq(served: Served) -> None:
    r = admin(served, "POST", "/admin/snapshot")
    assert r.status_code == 200, r.text
    seq = r.json()["seq"]
    journal = served.state.ex.journal
    assert journal is not None
    assert seq > 0
    assert served.state.seq.call_sync(lambda ex: journal.last_snapshot_seq, write=False) >= seq
    status = admin(served, "GET", "/admin/status").json()
    assert status["sequencer"]["lastSnapshotSeq"] >= seq
