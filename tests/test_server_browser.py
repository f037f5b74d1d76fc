"""The web dashboard: its liquidation-price preview, its files, and a real browser trading on it.

The preview must show, before an order is sent, the liquidation price positionRisk shows after
it fills: `dashboard.preview` is checked against the facade's own position view after the
very order is placed (isolated and cross, opening, adding, reducing, flipping, resting limit
orders). The browser test drives Debian's chromium with Playwright against a real server
(tests/server_harness.py's StaticDriver: BTCUSDT index 60,000, mark = index, a maker ladder):
a 20x isolated long with a stop-loss from the ticket, its liquidation price in the positions
table equal to the engine's and to the preview, then a 10 % crash from the admin panel and
the liquidation in the feed. Screenshots go to test-artifacts/ (ignored by git).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from perpex.core.messages import MassQuote, UpdateIndex
from perpex.exchange import Exchange
from perpex.server.dashboard import PreviewRequest, plotly_js_path, preview
from perpex.server.wire import fixed
from server_harness import Served, serve, signed_request

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
BROWSER_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


# -- the preview equals the position after the fill ---------------------------------------------
def _exchange() -> Exchange:
    """BTCUSDT at 60,000 and ETHUSDT at 3,000 (mark = index), a maker ladder of 20 levels a side
    from 0.5 (BTC) / 0.05 (ETH) out, 0.007 BTC / 0.7 ETH a level; demo and other with 10,000."""
    ex = Exchange(mark_price="index", insurance_fund="1000000")
    ex.deposit("mm", "100000000")
    ex.deposit("demo", "10000")
    ex.deposit("other", "10000")
    for symbol, index_ticks, lots in (("BTCUSDT", 600_000, 7), ("ETHUSDT", 300_000, 700)):
        ex.submit([UpdateIndex(symbol, index_ticks)])
        quotes = [(1, index_ticks - 5 - i, lots) for i in range(20)]
        quotes += [(-1, index_ticks + 5 + i, lots) for i in range(20)]
        ex.submit([MassQuote("mm", symbol, tuple(quotes))])
    return ex


@dataclass(frozen=True)
class Step:
    side: str
    type: str
    qty: str
    price: str | None = None
    leverage: int | None = None
    mode: str | None = None
    symbol: str = "BTCUSDT"


CASES = {
    "isolated 20x long 0.1 BTC, then add, reduce, flip short, buy back part": [
        Step("BUY", "MARKET", "0.1", leverage=20, mode="ISOLATED"),
        Step("BUY", "MARKET", "0.023"),
        Step("SELL", "MARKET", "0.05"),
        Step("SELL", "MARKET", "0.1"),
        Step("BUY", "MARKET", "0.017"),
    ],
    "cross 10x short through 20 levels, then ETH at 50x next to it": [
        Step("SELL", "MARKET", "0.125", leverage=10, mode="CROSSED"),
        Step("BUY", "MARKET", "1.5", leverage=50, symbol="ETHUSDT"),
        Step("BUY", "MARKET", "0.05"),
    ],
    "limit orders: crossing in part, resting below the book, 25x isolated": [
        Step("BUY", "LIMIT", "0.05", price="60000.6", leverage=25, mode="ISOLATED"),
        Step("BUY", "LIMIT", "0.05", price="59999"),
        Step("SELL", "LIMIT", "0.03", price="60003"),
    ],
}


def _place(ex: Exchange, step: Step, resting_qty: str) -> None:
    if step.mode is not None and ex.position("demo", step.symbol).margin_mode != step.mode:
        ex.set_margin_mode("demo", step.symbol, step.mode)
    if step.leverage is not None:
        ex.set_leverage("demo", step.symbol, step.leverage)
    ex.place_order("demo", step.symbol, step.side, step.type, step.qty, price=step.price)
    if Decimal(resting_qty) > 0:
        # Fill the resting part as a maker at its own price: only the demo order is left to hit.
        ex.submit([MassQuote("mm", step.symbol, ())])
        ex.place_order(
            "other", step.symbol, "SELL" if step.side == "BUY" else "BUY", "MARKET", resting_qty
        )


@pytest.mark.parametrize("steps", list(CASES.values()), ids=list(CASES))
def test_preview_is_the_liquidation_price_after_the_fill(steps: list[Step]) -> None:
    ex = _exchange()
    specs = dict(ex._specs)
    for step in steps:
        request = PreviewRequest(
            account="demo",
            symbol=step.symbol,
            side=1 if step.side == "BUY" else -1,
            market=step.type == "MARKET",
            qty_lots=ex.to_lots(step.symbol, step.qty),
            price_ticks=ex.to_ticks(step.symbol, step.price) if step.price else 0,
            leverage=step.leverage,
            isolated=None if step.mode is None else step.mode == "ISOLATED",
        )
        shown = preview(ex, specs, request)
        _place(ex, step, shown["restingQty"])
        pos = ex.position("demo", step.symbol)
        assert shown["positionAmt"] == fixed(pos.size, 3)
        assert shown["entryPrice"] == fixed(pos.entry_price, 8)
        assert shown["liquidationPrice"] == fixed(pos.liquidation_price or Decimal(0), 8)
        assert shown["bankruptcyPrice"] == fixed(pos.bankruptcy_price or Decimal(0), 8)
        assert shown["marginType"] == pos.margin_mode
        if pos.margin_mode == "ISOLATED":
            assert shown["isolatedWallet"] == fixed(pos.isolated_margin, 8)


def test_a_market_order_expires_at_the_account_own_resting_order() -> None:
    ex = _exchange()
    ex.set_margin_mode("demo", "BTCUSDT", "ISOLATED")
    ex.set_leverage("demo", "BTCUSDT", 20)
    # queued behind the maker's 0.007 at 60001.0, the sixth ask level
    ex.place_order("demo", "BTCUSDT", "SELL", "LIMIT", "0.01", price="60001")
    request = PreviewRequest(
        "demo", "BTCUSDT", 1, True, ex.to_lots("BTCUSDT", "0.1"), 0, None, None
    )
    shown = preview(ex, dict(ex._specs), request)
    assert shown["takerQty"] == "0.042"  # six levels of 0.007, then self-trade prevention
    ex.place_order("demo", "BTCUSDT", "BUY", "MARKET", "0.1")
    pos = ex.position("demo", "BTCUSDT")
    assert shown["positionAmt"] == fixed(pos.size, 3) == "0.042"
    assert shown["liquidationPrice"] == fixed(pos.liquidation_price or Decimal(0), 8)


# -- the server: files and endpoints ------------------------------------------------------------
@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serve(Path(tmp_path_factory.mktemp("dashboard"))) as s:
        yield s


def test_the_page_and_plotly_are_served_offline(served: Served) -> None:
    with served.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert '<script src="/static/plotly.min.js"' in page.text
        for name in ("dashboard.js", "dashboard.css"):
            assert client.get(f"/static/{name}").status_code == 200
        plotly_js = client.get("/static/plotly.min.js")
        assert plotly_js.status_code == 200
        assert plotly_js.content == plotly_js_path().read_bytes()
        for bad in ("../dashboard.py", "..%2Fdashboard.py", "nope.js", "dashboard.py"):
            missing = client.get(f"/static/{bad}")
            assert missing.status_code == 404, bad
            assert missing.json()["code"] == -5000


def test_preview_over_http_is_signed_and_matches_the_engine(served: Served) -> None:
    params: dict[str, Any] = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "MARKET",
        "quantity": "0.2",
        "leverage": 7,
        "marginType": "CROSSED",
    }
    with served.client() as client:
        unsigned = client.get("/dashboard/preview", params=params)
        assert unsigned.status_code in (400, 401) and unsigned.json()["code"] in (-2014, -1102)
        r = signed_request(
            client, "GET", "/dashboard/preview", served.api_key, served.secret, **params
        )
        assert r.status_code == 200, r.text
        body = r.json()
        bad = signed_request(
            client,
            "GET",
            "/dashboard/preview",
            served.api_key,
            served.secret,
            **{**params, "quantity": "0.0001"},
        )
        assert bad.status_code == 400 and bad.json()["code"] < 0
        status = client.get("/dashboard/status", headers={"X-Admin-Token": served.admin_token})
        assert status.status_code == 200
        assert status.json()["insuranceFund"] == "1000000.00000000"
        forbidden = client.get("/dashboard/status", headers={"X-Admin-Token": "wrong"})
        assert forbidden.status_code == 403 and forbidden.json()["code"] == -2015

    def expected(ex: Exchange) -> dict[str, Any]:
        request = PreviewRequest("demo", "BTCUSDT", -1, True, 200, 0, 7, False)
        return preview(ex, served.state.specs, request)

    assert body == served.state.seq.call_sync(expected, write=False)
    assert body["positionAmt"] == "-0.200" and body["liquidationPrice"] != "0.00000000"


# -- a real browser -------------------------------------------------------------------------------
def _artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # ignores itself too: nothing here reaches git
    return ARTIFACTS


def test_dashboard_trades_and_sees_the_liquidation(tmp_path: Path) -> None:
    chromium_path = shutil.which("chromium")
    if chromium_path is None:
        pytest.skip("Debian's chromium is not installed (`apt-get install chromium`; CI has it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    out = _artifacts()
    with serve(tmp_path) as s, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            _read_only_without_the_token(browser, s)
            _trade_and_crash(page, s, out)
        except Exception:
            page.screenshot(path=str(out / "dashboard-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
        assert errors == []


def _read_only_without_the_token(browser: Any, s: Served) -> None:
    """Without #admin=... the page shows the market and says how to trade; nothing breaks."""
    page = browser.new_page()  # a context of its own: no token kept from another tab
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{s.base_url}/")
    page.wait_for_selector("#book .lvl.ask")
    assert "#admin=" in page.inner_text("#banner")
    assert page.inner_text("#preview-liq") == "—"
    page.close()
    assert errors == []


def _trade_and_crash(page: Any, s: Served, out: Path) -> None:
    page.set_default_timeout(15_000)
    page.goto(f"{s.base_url}/#admin={s.admin_token}")
    page.wait_for_selector("body[data-ready='1']")
    page.wait_for_selector("#book .lvl.ask")
    page.wait_for_selector("#book .lvl.bid")
    page.wait_for_selector("#chart .main-svg")
    page.wait_for_function("Number(document.querySelector('#chart').dataset.points) >= 2")
    assert page.inner_text("#book .lvl.bid span") == "59999.5"  # the best bid, as the API has it

    # The ticket: a 20x isolated market long of 0.1 BTC with a stop-loss; leverage by slider.
    assert page.get_attribute("#leverage", "max") == "125"  # BTCUSDT's first bracket
    page.select_option("#margin-mode", "ISOLATED")
    page.select_option("#type", "MARKET")
    page.locator("#leverage").evaluate(
        "(el) => { el.value = '20'; el.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    assert page.inner_text("#leverage-value") == "20x"
    page.fill("#qty", "0.1")
    page.fill("#sl", "56000")
    page.wait_for_function(
        "document.querySelector('#preview-size').textContent.startsWith('0.100 (isolated 20x')"
    )
    previewed = page.inner_text("#preview-liq")
    page.screenshot(path=str(out / "dashboard-ticket.png"))
    page.click("#submit")

    row = page.wait_for_selector("#positions tbody tr[data-symbol='BTCUSDT']")
    assert row is not None
    shown = page.inner_text("#positions tbody tr[data-symbol='BTCUSDT'] td.liq")
    pos = s.state.seq.call_sync(lambda ex: ex.position("demo", "BTCUSDT"), write=False)
    assert pos.size == Decimal("0.1") and pos.leverage == 20 and pos.margin_mode == "ISOLATED"
    engine_liq = fixed(pos.liquidation_price, 8)
    assert shown == engine_liq == previewed, (shown, engine_liq, previewed)
    page.wait_for_selector("#orders tbody tr >> text=STOP_MARKET")  # the stop-loss rests
    page.wait_for_timeout(1500)  # a little more chart history for the screenshot
    page.screenshot(path=str(out / "dashboard-position.png"))

    # The crash, from the admin panel: the index drops 10 %, the mark with it (mark = index).
    page.select_option("#shock-kind", "drop")
    page.fill("#shock-percent", "10")
    page.fill("#shock-minutes", "1")
    page.click("#btn-shock")
    page.wait_for_selector("#liquidations .liq[data-symbol='BTCUSDT']")
    page.wait_for_selector("#positions tbody tr[data-symbol='BTCUSDT']", state="detached")
    after = s.state.seq.call_sync(lambda ex: ex.position("demo", "BTCUSDT"), write=False)
    assert after.size == 0
    assert "YOU" in page.inner_text("#liquidations")  # the user stream said it was ours
    page.wait_for_timeout(1200)  # the chart redraws with the marker
    page.screenshot(path=str(out / "dashboard.png"))
