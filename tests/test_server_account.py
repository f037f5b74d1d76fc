"""The account routes over real HTTP: balances, positions, settings, brackets, income.

Figures are compared with the facade's own views read in the writer thread, so the wire shows
exactly what the engine holds (positionRisk's liquidation price included)."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpex.server.wire import fixed
from server_harness import Served, serve, signed_request


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(Path(tmp_path_factory.mktemp("account"))) as s:
        yield s


def call(s: Served, method: str, path: str, **params: Any) -> Any:
    with s.client() as client:
        r = signed_request(client, method, path, s.api_key, s.secret, **params)
    return r.status_code, r.json()


def read(s: Served, fn: Any) -> Any:
    return s.state.seq.call_sync(fn, write=False)


def test_balance_and_account_show_the_deposit(served: Served) -> None:
    status, body = call(served, "GET", "/fapi/v3/account")
    assert status == 200
    (asset,) = body["assets"]
    assert asset["asset"] == "USDT"
    assert asset["walletBalance"] == "10000.00000000"
    assert asset["updateTime"] > 0  # ccxt skips an asset whose updateTime is 0
    status, rows = call(served, "GET", "/fapi/v2/balance")
    assert status == 200 and rows[0]["balance"] == "10000.00000000"
    status, body = call(served, "GET", "/fapi/v2/account")
    assert status == 200 and {p["symbol"] for p in body["positions"]} == {"BTCUSDT", "ETHUSDT"}


def test_settings_table(served: Served) -> None:
    iso = {"symbol": "ETHUSDT", "marginType": "ISOLATED"}
    cases = [
        ("POST", "/fapi/v1/leverage", {"symbol": "ETHUSDT", "leverage": 10}, 200, None),
        ("POST", "/fapi/v1/leverage", {"symbol": "ETHUSDT", "leverage": 0}, 400, -4028),
        ("POST", "/fapi/v1/leverage", {"symbol": "ETHUSDT", "leverage": 500}, 400, -4028),
        ("POST", "/fapi/v1/leverage", {"symbol": "NOPEUSDT", "leverage": 5}, 400, -1121),
        ("POST", "/fapi/v1/leverage", {"symbol": "ETHUSDT"}, 400, -1102),
        ("POST", "/fapi/v1/marginType", iso, 200, 200),
        ("POST", "/fapi/v1/marginType", iso, 400, -4046),
        ("POST", "/fapi/v1/marginType", {"symbol": "ETHUSDT", "marginType": "HEDGED"}, 400, -4099),
        ("GET", "/fapi/v1/positionSide/dual", {}, 200, None),
        ("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "false"}, 400, -4059),
        ("POST", "/fapi/v1/positionSide/dual", {"dualSidePosition": "true"}, 400, -4068),
        ("GET", "/fapi/v1/multiAssetsMargin", {}, 200, None),
        ("GET", "/fapi/v1/commissionRate", {"symbol": "BTCUSDT"}, 200, None),
        ("GET", "/fapi/v1/commissionRate", {"symbol": "NOPE"}, 400, -1121),
        ("GET", "/fapi/v1/income", {"incomeType": "BOGUS"}, 400, -1130),
        ("GET", "/fapi/v1/income", {"limit": 5000}, 400, -1130),
    ]
    for method, path, params, want_status, want_code in cases:
        status, body = call(served, method, path, **params)
        assert status == want_status, (path, params, body)
        if want_code is not None:
            assert body["code"] == want_code, (path, params, body)
    status, body = call(served, "GET", "/fapi/v1/positionSide/dual")
    assert body == {"dualSidePosition": False}
    status, body = call(served, "GET", "/fapi/v1/symbolConfig", symbol="ETHUSDT")
    assert body == [
        {
            "symbol": "ETHUSDT",
            "marginType": "ISOLATED",
            "isAutoAddMargin": False,
            "leverage": 10,
            "maxNotionalValue": body[0]["maxNotionalValue"],
        }
    ]


def test_position_risk_equals_the_facade(served: Served) -> None:
    s = served
    assert call(s, "POST", "/fapi/v1/leverage", symbol="BTCUSDT", leverage=20)[0] == 200
    s.state.seq.call_sync(
        lambda ex: ex.place_order("demo", "BTCUSDT", side="BUY", type="MARKET", quantity="1.500")
    )
    status, rows = call(s, "GET", "/fapi/v3/positionRisk")
    assert status == 200
    (row,) = [r for r in rows if r["symbol"] == "BTCUSDT"]
    pos = read(s, lambda ex: ex.position("demo", "BTCUSDT"))
    assert row["positionAmt"] == "1.500"
    assert pos.liquidation_price is not None
    assert Decimal(row["liquidationPrice"]) == pos.liquidation_price
    assert row["liquidationPrice"] == fixed(pos.liquidation_price, 8)
    assert Decimal(row["entryPrice"]) == pos.entry_price
    assert Decimal(row["notional"]) > 0 and row["positionSide"] == "BOTH"
    assert row["isolatedMargin"] == "0.00000000"  # cross: ccxt reads margin mode from this
    status, v2 = call(s, "GET", "/fapi/v2/positionRisk", symbol="BTCUSDT")
    assert v2[0]["leverage"] == "20" and v2[0]["marginType"] == "cross"
    # The trade's commission is in the income history, and the rows sum to the wallet.
    status, income = call(s, "GET", "/fapi/v1/income")
    kinds = {r["incomeType"] for r in income}
    assert {"TRANSFER", "COMMISSION"} <= kinds
    wallet = read(s, lambda ex: ex.account("demo").wallet_balance)
    assert sum(Decimal(r["income"]) for r in income) == wallet


def test_leverage_brackets_carry_cum(served: Served) -> None:
    status, body = call(served, "GET", "/fapi/v1/leverageBracket")
    assert status == 200
    btc = next(b for b in body if b["symbol"] == "BTCUSDT")
    floors = [b["notionalFloor"] for b in btc["brackets"]]
    assert floors[0] == 0 and floors == sorted(floors)
    assert all("cum" in b and "maintMarginRatio" in b for b in btc["brackets"])


def test_sapi_calls_of_ccxt_answer_empty(served: Served) -> None:
    with served.client() as client:
        assert client.get("/sapi/v1/capital/config/getall").json() == []
        assert client.get("/sapi/v1/margin/allPairs").json() == []
