"""The web dashboard at `/`: its files, and the two small JSON endpoints only it needs.

The page (static/index.html, dashboard.js, dashboard.css) is a client like any bot: it signs
its REST calls with the demo key and reads the same WebSocket streams. plotly.js is served from
the plotly package's own file, so the page works offline with no build step.

Dashboard-only endpoints:
- `GET /dashboard/preview` (signed, like any account call): the position an order would leave
  and its liquidation price, computed in the writer thread with the engine's own margin math
  (`core.margin.liquidation_price_ticks`, as `convert.position_view` calls it), so the figure
  shown before sending is the one positionRisk shows after the fill.
- `GET /dashboard/status` (loopback and `X-Admin-Token`): the insurance fund, the market
  driver's status and the sequencer's counters.

Units inside the preview: prices in ticks, sizes in lots, money in atoms (1e-6 USDT), fees and
rates in ppm; decimals appear only in the reply, formatted as positionRisk formats them.
"""

from __future__ import annotations

import functools
import hmac
import importlib.util
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from perpex.convert import cross_terms, shown_price
from perpex.core.book import BUY, SELL
from perpex.core.margin import bankruptcy_price_ticks, liquidation_price_ticks
from perpex.core.markets import MarketSpec
from perpex.core.units import PPM, Rounding, atoms_to_decimal, div
from perpex.exchange import Exchange
from perpex.server import wire
from perpex.server.errors import ApiError
from perpex.server.http import reply, signed, state_of
from perpex.server.params import Params

STATIC_DIR: Final = Path(__file__).parent / "static"
_STATIC_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,64}\.(?:js|css|html|png|svg|ico)")
SHOWN_PLACES: Final = 8  # positionRisk shows entry and liquidation prices with 8 decimals
ADMIN_HEADER: Final = "x-admin-token"
LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_PREVIEW_FILLS: Final = 10_000  # maker orders one preview walks before it gives up
_NO_CACHE: Final = {"Cache-Control": "no-cache"}

router = APIRouter()


# -- files ---------------------------------------------------------------------------------------
@functools.cache
def plotly_js_path() -> Path:
    """plotly.js as the plotly Python package ships it (`plotly/package_data/plotly.min.js`),
    found without importing plotly (a second of start-up the server does not need)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the plotly package is not installed")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "package_data" / "plotly.min.js"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("plotly.min.js is not in the plotly package")


@router.get("/", include_in_schema=False)
async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=_NO_CACHE)


@router.get("/static/plotly.min.js", include_in_schema=False)
async def plotly_js(request: Request) -> Response:
    try:
        path = plotly_js_path()
    except FileNotFoundError:
        raise StarletteHTTPException(404) from None
    # plotly's file changes only with the installed package: let the browser keep it a day
    return FileResponse(
        path, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )


@router.get("/static/{name}", include_in_schema=False)
async def static_file(name: str, request: Request) -> Response:
    # A plain name matched against a pattern: no path separators, so nothing outside static/.
    path = STATIC_DIR / name
    if not _STATIC_NAME.fullmatch(name) or not path.is_file():
        raise StarletteHTTPException(404)
    return FileResponse(path, headers=_NO_CACHE)


# -- the liquidation-price preview -----------------------------------------------------------
@dataclass
class _Hypothesis:
    """One (account, symbol) as settlement would leave it: signed size and cost, the isolated
    margin bucket, the change to the account's wallet, and what the fills opened."""

    size_lots: int
    cost_atoms: int
    margin_atoms: int
    isolated: bool
    leverage: int
    wallet_delta_atoms: int = 0
    fee_atoms: int = 0
    filled_lots: int = 0
    filled_quote_ticks: int = 0
    opened_lots: int = 0
    opened_quote_ticks: int = 0

    def fill(self, k: int, side: int, lots: int, price_ticks: int, fee_ppm: int) -> None:
        """One fill, as `settlement.settle_match` and `net_fill` book it: the fee first (from
        the isolated margin or the wallet), then the closing part (cost basis rounded up, the
        released isolated margin rounded down), then the opening part (its initial margin,
        rounded up, moves from the wallet into an isolated position)."""
        notional_atoms = price_ticks * lots * k
        fee_atoms = -(-(notional_atoms * fee_ppm) // PPM)
        self.fee_atoms += fee_atoms
        self.filled_lots += lots
        self.filled_quote_ticks += lots * price_ticks
        if self.isolated:
            self.margin_atoms -= fee_atoms
        else:
            self.wallet_delta_atoms -= fee_atoms
        size = self.size_lots
        open_lots = lots
        if size * side < 0:
            held_lots = abs(size)
            close_lots = min(lots, held_lots)
            cost = self.cost_atoms
            part_cost = cost if close_lots == held_lots else -(-(cost * close_lots) // held_lots)
            realized_atoms = -side * close_lots * price_ticks * k - part_cost
            self.size_lots = size + side * close_lots
            self.cost_atoms = cost - part_cost
            open_lots = lots - close_lots
            if self.isolated:
                self.margin_atoms += realized_atoms
                if close_lots == held_lots:
                    release = self.margin_atoms
                elif self.margin_atoms > 0:
                    release = div(self.margin_atoms * close_lots, held_lots, Rounding.FLOOR)
                else:
                    release = 0
                self.margin_atoms -= release
                self.wallet_delta_atoms += release
            else:
                self.wallet_delta_atoms += realized_atoms
        if open_lots:
            open_atoms = open_lots * price_ticks * k
            self.opened_lots += open_lots
            self.opened_quote_ticks += open_lots * price_ticks
            self.size_lots += side * open_lots
            self.cost_atoms += side * open_atoms
            if self.isolated:
                im_atoms = div(open_atoms, self.leverage, Rounding.CEIL)
                self.margin_atoms += im_atoms
                self.wallet_delta_atoms -= im_atoms


def _taker_fills(
    ex: Exchange, symbol: str, account: str, side: int, limit_ticks: int, qty_lots: int
) -> tuple[list[tuple[int, int]], bool]:
    """(lots, price) per maker order a taker would meet, as `OrderBook.match` fills (best
    price first, FIFO within a price, no further than the limit), and whether it stops at the
    account's own order (expire-taker self-trade prevention ends the order there). Read-only.
    """
    book = ex.engine.market(symbol).book
    fills: list[tuple[int, int]] = []
    left_lots = qty_lots
    for maker in book.orders():  # bids best first, then asks best first
        if maker.side == side:
            continue  # the taker's own side of the book
        price_ticks = maker.price_ticks
        if (price_ticks > limit_ticks) if side == BUY else (price_ticks < limit_ticks):
            break
        if maker.account == account:
            return fills, True
        if len(fills) >= MAX_PREVIEW_FILLS:
            break
        take_lots = min(left_lots, maker.remaining_lots)
        fills.append((take_lots, price_ticks))
        left_lots -= take_lots
        if not left_lots:
            break
    return fills, False


def _band_limit_ticks(mark_ticks: int, side: int, band_ppm: int) -> int:
    """The worst price a market order may fill at (`order_path.place_order`'s price band)."""
    if side == BUY:
        return div(mark_ticks * (PPM + band_ppm), PPM, Rounding.FLOOR)
    return div(mark_ticks * (PPM - band_ppm), PPM, Rounding.CEIL)


@dataclass(frozen=True)
class PreviewRequest:
    account: str
    symbol: str
    side: int
    market: bool
    qty_lots: int
    price_ticks: int  # 0 for a market order
    leverage: int | None  # None: the leverage in force
    isolated: bool | None  # None: the margin mode in force


def preview(ex: Exchange, specs: dict[str, MarketSpec], req: PreviewRequest) -> dict[str, Any]:
    """The position `req` would leave if it filled now (a limit order's resting part at its
    price, as a maker), and that position's liquidation price as positionRisk will show it.
    Runs in the writer thread; changes nothing."""
    spec = specs[req.symbol]
    engine = ex.engine
    market = engine.market(req.symbol)
    mark_ticks = market.mark_ticks
    k = spec.atoms_per_tick_lot
    current_leverage, current_isolated = engine.settings_of(req.account, req.symbol)
    pos = engine.position_of(req.account, req.symbol)
    busy = pos is not None and (pos.size_lots != 0 or bool(pos.open_orders))
    # Binance refuses a margin-mode change with a position or open orders: the mode in force
    isolated = current_isolated if busy or req.isolated is None else req.isolated
    hypo = _Hypothesis(
        size_lots=pos.size_lots if pos is not None else 0,
        cost_atoms=pos.cost_atoms if pos is not None else 0,
        margin_atoms=pos.margin.balance if pos is not None and isolated else 0,
        isolated=isolated,
        leverage=req.leverage if req.leverage is not None else current_leverage,
    )
    if req.market:
        limit_ticks = _band_limit_ticks(mark_ticks, req.side, market.price_band_ppm)
    else:
        limit_ticks = req.price_ticks
    fills, self_trade = _taker_fills(
        ex, req.symbol, req.account, req.side, limit_ticks, req.qty_lots
    )
    for lots, price_ticks in fills:
        hypo.fill(k, req.side, lots, price_ticks, market.taker_fee_ppm)
    taken_lots = hypo.filled_lots
    resting_lots = 0
    if not req.market and not self_trade and taken_lots < req.qty_lots:
        resting_lots = req.qty_lots - taken_lots
        hypo.fill(k, req.side, resting_lots, req.price_ticks, market.maker_fee_ppm)
    # The order's cost as the pre-trade check charges it: the initial margin of what opens
    # (a limit order's at its own price) plus the open loss of a buy above (sell below) the mark.
    opened_quote_ticks = hypo.opened_quote_ticks
    if not req.market:
        opened_quote_ticks = hypo.opened_lots * req.price_ticks
    open_loss_ticks = max(0, req.side * (opened_quote_ticks - hypo.opened_lots * mark_ticks))
    cost_atoms = div(opened_quote_ticks * k, hypo.leverage, Rounding.CEIL) + open_loss_ticks * k
    liq, bankrupt = _prices(ex, specs, req, spec, hypo, mark_ticks)
    size = hypo.size_lots
    notional_atoms = abs(size) * mark_ticks * k
    return {
        "symbol": req.symbol,
        "side": "BUY" if req.side == BUY else "SELL",
        "type": "MARKET" if req.market else "LIMIT",
        "marginType": "ISOLATED" if hypo.isolated else "CROSSED",
        "leverage": hypo.leverage,
        "quantity": wire.qty_lots(spec, req.qty_lots),
        "takerQty": wire.qty_lots(spec, taken_lots),
        "restingQty": wire.qty_lots(spec, resting_lots),
        "avgPrice": _average(spec, hypo),
        "positionAmt": wire.qty_lots(spec, size),
        "entryPrice": _shown(spec, Fraction(hypo.cost_atoms, size * k) if size else None),
        "markPrice": _shown(spec, mark_ticks),
        "liquidationPrice": _shown(spec, liq),
        "bankruptcyPrice": _shown(spec, bankrupt),
        "notional": wire.money(atoms_to_decimal(notional_atoms if size >= 0 else -notional_atoms)),
        "isolatedWallet": wire.money(atoms_to_decimal(hypo.margin_atoms if hypo.isolated else 0)),
        "orderCost": wire.money(atoms_to_decimal(cost_atoms)),
        "fee": wire.money(atoms_to_decimal(hypo.fee_atoms)),
        "maxLeverage": spec.max_leverage,
    }


def _prices(
    ex: Exchange,
    specs: dict[str, MarketSpec],
    req: PreviewRequest,
    spec: MarketSpec,
    hypo: _Hypothesis,
    mark_ticks: int,
) -> tuple[Fraction | None, Fraction | None]:
    """(liquidation, bankruptcy) prices in ticks with the terms `convert.position_view` uses:
    the isolated margin, or Binance's WB, TMM1, UPNL1 of the cross account after the fills."""
    size = hypo.size_lots
    if not size:
        return None, None
    if hypo.isolated:
        wallet_atoms, other_mm_atoms, other_upnl_atoms = hypo.margin_atoms, 0, 0
    elif req.account in ex.engine.accounts:
        wallet_atoms, other_mm_atoms, other_upnl_atoms = cross_terms(
            ex.engine, specs, req.account, req.symbol
        )
        wallet_atoms += hypo.wallet_delta_atoms
    else:
        wallet_atoms, other_mm_atoms, other_upnl_atoms = hypo.wallet_delta_atoms, 0, 0
    cost = hypo.cost_atoms
    liq = liquidation_price_ticks(
        spec, size, cost, wallet_atoms, other_mm_atoms, other_upnl_atoms, mark_ticks or None
    )
    bankrupt = bankruptcy_price_ticks(spec, size, cost, wallet_atoms, other_upnl_atoms)
    return liq, bankrupt


def _average(spec: MarketSpec, hypo: _Hypothesis) -> str:
    if not hypo.filled_lots:
        return wire.fixed(Decimal(0), SHOWN_PLACES)
    return _shown(spec, Fraction(hypo.filled_quote_ticks, hypo.filled_lots))


def _shown(spec: MarketSpec, price_ticks: Fraction | int | None) -> str:
    """As positionRisk: 8 decimals, "0.00000000" when there is none."""
    value = shown_price(spec, price_ticks) if price_ticks is not None else Decimal(0)
    return wire.fixed(value, SHOWN_PLACES)


def _preview_request(
    ex: Exchange, account: str, params: Params, specs: dict[str, MarketSpec]
) -> PreviewRequest:
    symbol = params.symbol()
    assert symbol is not None
    if symbol not in specs:
        raise ApiError(-1121, "Invalid symbol.")
    side_name = params.choice("side", frozenset({"BUY", "SELL"}), required=True)
    order_type = params.choice("type", frozenset({"MARKET", "LIMIT"}), required=True)
    is_market = order_type == "MARKET"
    qty_lots = ex.to_lots(symbol, params.require("quantity"))
    price_ticks = 0 if is_market else ex.to_ticks(symbol, params.require("price"))
    spec = specs[symbol]
    leverage = params.integer("leverage", low=1, high=spec.max_leverage)
    mode = params.choice("marginType", frozenset({"ISOLATED", "CROSSED"}))
    return PreviewRequest(
        account=account,
        symbol=symbol,
        side=BUY if side_name == "BUY" else SELL,
        market=is_market,
        qty_lots=qty_lots,
        price_ticks=price_ticks,
        leverage=leverage,
        isolated=None if mode is None else mode == "ISOLATED",
    )


@router.get("/dashboard/preview", tags=["dashboard"])
async def preview_route(request: Request) -> Response:
    """Signed. symbol, side, type (MARKET|LIMIT), quantity, price (LIMIT), leverage?,
    marginType? -> the position after the order and its liquidationPrice (8 decimals)."""
    call = await signed(request, weight=1)
    state = call.state
    specs = state.specs

    def run(ex: Exchange) -> dict[str, Any]:
        req = _preview_request(ex, call.account, call.params, specs)
        return preview(ex, specs, req)

    return reply(request, await state.seq.call(run, write=False))


# -- status for the dashboard (admin) -----------------------------------------------------------
def require_admin(request: Request) -> None:
    """Loopback and the admin token, as every /admin route (403 -2015 otherwise)."""
    state = state_of(request)
    host = request.client.host if request.client else ""
    given = request.headers.get(ADMIN_HEADER, "")
    if host not in LOOPBACK or not hmac.compare_digest(given, state.admin_token):
        raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 403)


@router.get("/dashboard/status", tags=["dashboard"])
async def status_route(request: Request) -> Response:
    """Admin. The insurance fund (all and per symbol), the driver's status, the writer's
    counters and the server's clock."""
    require_admin(request)
    state = state_of(request)
    driver = state.driver

    def run(ex: Exchange) -> dict[str, Any]:
        funds = {symbol: wire.money(ex.insurance_fund(symbol)) for symbol in state.specs}
        return {
            "insuranceFund": wire.money(ex.insurance_fund()),
            "insuranceFunds": funds,
            "feesCollected": wire.money(ex.fees_collected()),
            "driver": dict(driver.status()) if driver is not None else None,
            "batches": state.seq.batches,
            "jobs": state.seq.jobs,
            "serverTime": wire.ms(ex.time_ns),
        }

    return reply(request, await state.seq.call(run, write=False))


__all__ = [
    "STATIC_DIR",
    "PreviewRequest",
    "plotly_js_path",
    "preview",
    "require_admin",
    "router",
]
