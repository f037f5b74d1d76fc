"""The public market-data routes (unsigned), as Binance USDⓈ-M serves them (BINANCE_API.md §3,
§4.1, §4.5): ping, time, exchangeInfo, depth, the four kline families, premiumIndex,
fundingRate, fundingInfo, the tickers, aggTrades, trades, openInterest and openInterestHist.

Each route charges Binance's request weight (`http.public`), checks its parameters with
Binance's codes (-1121 unknown symbol, -1120 bad interval, -1100 / -1130 bad numbers, -1023
startTime after endTime) before anything is queued, then reads the book, the facade or the
`MarketHistory` inside one read job of the sequencer (never from the event loop).
Decimals leave as strings with the market's precision (`perpex.server.wire`), times as ms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Final

from fastapi import APIRouter, Request, Response

from perpex.core.funding_config import NS_PER_HOUR
from perpex.core.markets import MarketSpec
from perpex.core.trigger_book import MAX_CONDITIONAL_PER_ACCOUNT
from perpex.core.units import ATOM, PPM
from perpex.exchange import Exchange
from perpex.server.candles import INTERVAL_MINUTES
from perpex.server.errors import ApiError, mandatory
from perpex.server.http import Call, public, reply
from perpex.server.params import Params, read_params
from perpex.server.sequencer import wall_clock_ns
from perpex.server.state import ServerState
from perpex.server.wire import fixed, ms, price, price_ticks, qty_lots, rate

router = APIRouter(tags=["market data"])

DELIVERY_DATE_MS: Final = 4133404800000  # Binance's "perpetual" delivery date (2100-12-25)
DEPTH_LIMITS: Final = (5, 10, 20, 50, 100, 500, 1000)
MAX_TIME_MS: Final = 2**53  # larger times and ids are refused (-1130) before any arithmetic
ONE_HOUR_MS: Final = 3_600_000
OI_PERIODS: Final = frozenset({"5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"})
ORDER_TYPES: Final = (
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
)
TIME_IN_FORCE: Final = ("GTC", "IOC", "FOK", "GTX")
QUOTE_ASSETS: Final = ("USDT", "USDC", "BUSD")
KLINE_LIMIT: Final = (500, 1500)  # (default, max)
TRADES_LIMIT: Final = (500, 1000)
FUNDING_LIMIT: Final = (100, 1000)
OI_HIST_LIMIT: Final = (30, 500)


# -- parameters -----------------------------------------------------------------------------
def _doc(*names: str, required: Iterable[str] = ()) -> dict[str, Any]:
    """The OpenAPI declaration of query parameters (read from `call.params`, not FastAPI)."""
    needed = set(required)
    return {
        "parameters": [
            {"name": n, "in": "query", "required": n in needed, "schema": {"type": "string"}}
            for n in names
        ]
    }


def _symbol(call: Call, name: str = "symbol") -> str:
    """A listed symbol (-1102 when missing, -1121 for anything not listed)."""
    value = _optional_symbol(call, name)
    if value is None:
        raise mandatory(name)
    return value


def _optional_symbol(call: Call, name: str = "symbol") -> str | None:
    value = call.params.get(name)
    if value is not None and value not in call.state.specs:
        raise ApiError(-1121, "Invalid symbol.")
    return value


def _limit(params: Params, bounds: tuple[int, int]) -> int:
    default, high = bounds
    value = params.integer("limit", low=1, high=high)
    return default if value is None else value


def _times(params: Params) -> tuple[int | None, int | None]:
    start_ms = params.integer("startTime", low=0, high=MAX_TIME_MS)
    end_ms = params.integer("endTime", low=0, high=MAX_TIME_MS)
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise ApiError(-1023, "Start time is greater than end time.")
    return start_ms, end_ms


def _interval(params: Params, name: str = "interval") -> str:
    value = params.require(name)
    if value not in INTERVAL_MINUTES:
        raise ApiError(-1120, "Invalid interval.")
    return value


async def _weighted(request: Request, weight_of: Callable[[Params], int]) -> Call:
    """`public` with a weight that depends on the parameters (klines, depth, one symbol or
    all): a request whose parameters are refused is still charged the minimum weight."""
    try:
        weight = weight_of(await read_params(request))
    except ApiError:
        await public(request, 1)
        raise
    return await public(request, weight)


async def _read(call: Call, fn: Callable[[Exchange], Any]) -> Any:
    return await call.state.seq.call(fn, write=False)


async def _per_symbol(
    request: Request, weights: tuple[int, int], one: Callable[[Call, Exchange, str], Any]
) -> Response:
    """A route of one symbol or all: `symbol` gives one object (charged weights[0]), none an
    array of every listed symbol (weights[1])."""
    call = await _weighted(request, lambda p: weights[0] if p.get("symbol") else weights[1])
    symbol = _optional_symbol(call)
    specs = call.state.specs

    def read(ex: Exchange) -> Any:
        if symbol is not None:
            return one(call, ex, symbol)
        return [one(call, ex, s) for s in specs]

    return reply(request, await _read(call, read))


def _kline_weight(params: Params) -> int:
    limit = _limit(params, KLINE_LIMIT)
    return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1000 else 10


def _depth_limit(params: Params) -> int:
    """Binance's depths are 5..1000; another count up to 1000 is served as asked."""
    value = params.integer("limit", low=1, high=DEPTH_LIMITS[-1])
    return 500 if value is None else value


def _depth_weight(params: Params) -> int:
    limit = _depth_limit(params)
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


# -- connectivity ---------------------------------------------------------------------------
@router.get("/fapi/v1/ping")
async def ping(request: Request) -> Response:
    await public(request, 1)
    return reply(request, {})


@router.get("/fapi/v1/time")
async def server_time(request: Request) -> Response:
    await public(request, 1)
    return reply(request, {"serverTime": ms(wall_clock_ns())})


# -- exchangeInfo ---------------------------------------------------------------------------
def _plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 0.1, 0.001, 1000."""
    text = format(value.normalize(), "f")
    return text if value != 0 else "0"


def _assets(symbol: str) -> tuple[str, str]:
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol, "USDT"


def symbol_info(spec: MarketSpec, onboard_ms: int, liquidation_fee_ppm: int) -> dict[str, Any]:
    """One symbol of exchangeInfo (BINANCE_API.md §4.1), from its MarketSpec."""
    base, quote = _assets(spec.symbol)
    band = Decimal(spec.price_band_ppm) / PPM
    first = spec.brackets[0]
    return {
        "symbol": spec.symbol,
        "pair": spec.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": DELIVERY_DATE_MS,
        "onboardDate": onboard_ms,
        "status": "TRADING",
        "maintMarginPercent": fixed(Decimal(first.mmr_ppm) * 100 / PPM, 4),
        "requiredMarginPercent": fixed(Decimal(100) / first.max_leverage, 4),
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": spec.price_precision,
        "quantityPrecision": spec.quantity_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": fixed(band, 4),
        "liquidationFee": fixed(Decimal(liquidation_fee_ppm) / PPM, 6),
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": _plain(spec.price_to_decimal(spec.min_price_ticks)),
                "maxPrice": _plain(spec.price_to_decimal(spec.max_price_ticks)),
                "tickSize": _plain(spec.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": _plain(spec.step_size),
                "maxQty": _plain(spec.qty_to_decimal(spec.max_limit_qty_lots)),
                "stepSize": _plain(spec.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": _plain(spec.step_size),
                "maxQty": _plain(spec.qty_to_decimal(spec.max_market_qty_lots)),
                "stepSize": _plain(spec.step_size),
            },
            {"filterType": "MAX_NUM_ORDERS", "limit": spec.max_open_orders},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": MAX_CONDITIONAL_PER_ACCOUNT},
            {"filterType": "MIN_NOTIONAL", "notional": _plain(spec.min_notional_atoms * ATOM)},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": fixed(1 + band, 4),
                "multiplierDown": fixed(1 - band, 4),
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": list(ORDER_TYPES),
        "timeInForce": list(TIME_IN_FORCE),
    }


def exchange_info(state: ServerState, ex: Exchange) -> dict[str, Any]:
    """GET /fapi/v1/exchangeInfo (a read job: the history gives the markets' opening time)."""
    limits = state.config.limits
    # Listed when its candles begin (a fresh server's history included), as Binance's is.
    onboard_ms = ms(state.market.listed_ns or state.started_ns)
    fee_ppm = ex.engine.liquidator.config.clearance_fee_ppm
    margin_assets = sorted({_assets(symbol)[1] for symbol in state.specs})
    return {
        "timezone": "UTC",
        "serverTime": ms(wall_clock_ns()),
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limits.weight_per_minute,
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limits.orders_per_minute,
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": limits.orders_per_10s,
            },
        ],
        "exchangeFilters": [],
        "assets": [
            {"asset": asset, "marginAvailable": True, "autoAssetExchange": "0"}
            for asset in margin_assets
        ],
        "symbols": [symbol_info(spec, onboard_ms, fee_ppm) for spec in state.specs.values()],
    }


@router.get("/fapi/v1/exchangeInfo")
async def get_exchange_info(request: Request) -> Response:
    call = await public(request, 1)
    state = call.state
    return reply(request, await _read(call, lambda ex: exchange_info(state, ex)))


# -- order book -----------------------------------------------------------------------------
@router.get("/fapi/v1/depth", openapi_extra=_doc("symbol", "limit", required=["symbol"]))
async def depth(request: Request) -> Response:
    call = await _weighted(request, _depth_weight)
    symbol = _symbol(call)
    limit = _depth_limit(call.params)
    spec = call.state.specs[symbol]
    hub = call.state.hub

    def read(ex: Exchange) -> dict[str, Any]:
        # One job: the book and the id of the last diff published agree (streams §6.2).
        bids, asks = ex.engine.market(symbol).book.depth(limit)
        return {
            "lastUpdateId": hub.depth_snapshot_id(ex, symbol),
            "E": ms(wall_clock_ns()),
            "T": ms(ex.time_ns),
            "bids": [[price_ticks(spec, p), qty_lots(spec, q)] for p, q in bids],
            "asks": [[price_ticks(spec, p), qty_lots(spec, q)] for p, q in asks],
        }

    return reply(request, await _read(call, read))


# -- klines ---------------------------------------------------------------------------------
_KLINE_DOC: Final = ("interval", "startTime", "endTime", "limit")


async def _klines(request: Request, kind: str, symbol_param: str) -> Response:
    call = await _weighted(request, _kline_weight)
    symbol = _symbol(call, symbol_param)
    interval = _interval(call.params)
    start_ms, end_ms = _times(call.params)
    limit = _limit(call.params, KLINE_LIMIT)
    market = call.state.market
    table = await _read(
        call, lambda ex: market.kline_table(symbol, interval, kind, start_ms, end_ms, limit)
    )
    # Up to 1,500 x 8 numbers to write out: done here, not in the writer thread.
    return reply(request, market.format_klines(symbol, kind, table))


@router.get(
    "/fapi/v1/klines", openapi_extra=_doc("symbol", *_KLINE_DOC, required=["symbol", "interval"])
)
async def klines(request: Request) -> Response:
    return await _klines(request, "last", "symbol")


@router.get(
    "/fapi/v1/markPriceKlines",
    openapi_extra=_doc("symbol", *_KLINE_DOC, required=["symbol", "interval"]),
)
async def mark_price_klines(request: Request) -> Response:
    return await _klines(request, "mark", "symbol")


@router.get(
    "/fapi/v1/indexPriceKlines",
    openapi_extra=_doc("pair", *_KLINE_DOC, required=["pair", "interval"]),
)
async def index_price_klines(request: Request) -> Response:
    return await _klines(request, "index", "pair")


@router.get(
    "/fapi/v1/premiumIndexKlines",
    openapi_extra=_doc("symbol", *_KLINE_DOC, required=["symbol", "interval"]),
)
async def premium_index_klines(request: Request) -> Response:
    return await _klines(request, "premium", "symbol")


# -- funding --------------------------------------------------------------------------------
def premium_index(ex: Exchange, spec: MarketSpec) -> dict[str, Any]:
    """One symbol of GET /fapi/v1/premiumIndex (a read job)."""
    funding = ex.funding_rate(spec.symbol)
    return {
        "symbol": spec.symbol,
        "markPrice": price(spec, funding.mark_price),
        "indexPrice": price(spec, funding.index_price),
        # A perpetual never settles: the index is the price it would settle at.
        "estimatedSettlePrice": price(spec, funding.index_price),
        # Binance's "lastFundingRate" is the running estimate for the coming settlement.
        "lastFundingRate": rate(funding.predicted_funding_rate),
        "interestRate": rate(funding.interest_rate),
        "nextFundingTime": ms(funding.next_funding_time_ns),
        "time": ms(ex.time_ns),
    }


def _premium_index(call: Call, ex: Exchange, symbol: str) -> dict[str, Any]:
    return premium_index(ex, call.state.specs[symbol])


@router.get("/fapi/v1/premiumIndex", openapi_extra=_doc("symbol"))
async def get_premium_index(request: Request) -> Response:
    return await _per_symbol(request, (1, 10), _premium_index)


@router.get("/fapi/v1/fundingRate", openapi_extra=_doc("symbol", "startTime", "endTime", "limit"))
async def funding_rate(request: Request) -> Response:
    call = await public(request, 1)
    symbol = _optional_symbol(call)
    start_ms, end_ms = _times(call.params)
    limit = _limit(call.params, FUNDING_LIMIT)
    market = call.state.market
    rows = await _read(call, lambda ex: market.funding_rates(symbol, start_ms, end_ms, limit))
    return reply(request, rows)


def funding_info(ex: Exchange, spec: MarketSpec) -> dict[str, Any]:
    config = ex.engine.market(spec.symbol).funding_config
    hours, rest = divmod(config.interval_ns, NS_PER_HOUR)
    return {
        "symbol": spec.symbol,
        "adjustedFundingRateCap": rate(Decimal(config.cap_e8).scaleb(-8)),
        "adjustedFundingRateFloor": rate(Decimal(config.floor_e8).scaleb(-8)),
        "fundingIntervalHours": hours if not rest else config.interval_ns / NS_PER_HOUR,
        "disclaimer": False,
    }


@router.get("/fapi/v1/fundingInfo")
async def get_funding_info(request: Request) -> Response:
    call = await public(request, 1)
    specs = call.state.specs
    rows = await _read(call, lambda ex: [funding_info(ex, spec) for spec in specs.values()])
    return reply(request, rows)


# -- tickers --------------------------------------------------------------------------------
def _ticker_24h(call: Call, ex: Exchange, symbol: str) -> dict[str, Any]:
    return call.state.market.ticker_24h(symbol)


def _ticker_price(call: Call, ex: Exchange, symbol: str) -> dict[str, Any]:
    price_ticks_, trade_ns = call.state.market.last_price(symbol)
    spec = call.state.specs[symbol]
    return {"symbol": symbol, "price": price_ticks(spec, price_ticks_), "time": ms(trade_ns)}


def _book_ticker(call: Call, ex: Exchange, symbol: str) -> dict[str, Any]:
    spec = call.state.specs[symbol]
    bids, asks = ex.engine.market(symbol).book.depth(1)
    bid_ticks, bid_lots = bids[0] if bids else (0, 0)
    ask_ticks, ask_lots = asks[0] if asks else (0, 0)
    return {
        "symbol": symbol,
        "bidPrice": price_ticks(spec, bid_ticks),
        "bidQty": qty_lots(spec, bid_lots),
        "askPrice": price_ticks(spec, ask_ticks),
        "askQty": qty_lots(spec, ask_lots),
        "time": ms(ex.time_ns),
        "lastUpdateId": call.state.hub.depth_update_id(symbol),
    }


@router.get("/fapi/v1/ticker/24hr", openapi_extra=_doc("symbol"))
async def ticker_24hr(request: Request) -> Response:
    return await _per_symbol(request, (1, 40), _ticker_24h)


@router.get("/fapi/v1/ticker/price", openapi_extra=_doc("symbol"))
async def ticker_price(request: Request) -> Response:
    return await _per_symbol(request, (1, 2), _ticker_price)


@router.get("/fapi/v2/ticker/price", openapi_extra=_doc("symbol"))
async def ticker_price_v2(request: Request) -> Response:
    return await _per_symbol(request, (1, 2), _ticker_price)


@router.get("/fapi/v1/ticker/bookTicker", openapi_extra=_doc("symbol"))
async def book_ticker(request: Request) -> Response:
    return await _per_symbol(request, (2, 5), _book_ticker)


# -- trades ---------------------------------------------------------------------------------
@router.get(
    "/fapi/v1/aggTrades",
    openapi_extra=_doc("symbol", "fromId", "startTime", "endTime", "limit", required=["symbol"]),
)
async def agg_trades(request: Request) -> Response:
    call = await public(request, 20)
    symbol = _symbol(call)
    from_id = call.params.integer("fromId", low=0, high=MAX_TIME_MS)
    start_ms, end_ms = _times(call.params)
    if start_ms is not None and end_ms is not None and end_ms - start_ms > ONE_HOUR_MS:
        raise ApiError(-1127, "More than 1 hours between startTime and endTime.")
    limit = _limit(call.params, TRADES_LIMIT)
    market = call.state.market
    rows = await _read(call, lambda ex: market.agg_trades(symbol, from_id, start_ms, end_ms, limit))
    return reply(request, rows)


@router.get("/fapi/v1/trades", openapi_extra=_doc("symbol", "limit", required=["symbol"]))
async def trades(request: Request) -> Response:
    call = await public(request, 5)
    symbol = _symbol(call)
    limit = _limit(call.params, TRADES_LIMIT)
    market = call.state.market
    return reply(request, await _read(call, lambda ex: market.trades(symbol, limit)))


# -- open interest --------------------------------------------------------------------------
@router.get("/fapi/v1/openInterest", openapi_extra=_doc("symbol", required=["symbol"]))
async def open_interest(request: Request) -> Response:
    call = await public(request, 1)
    symbol = _symbol(call)
    spec = call.state.specs[symbol]
    market = call.state.market

    def read(ex: Exchange) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "openInterest": qty_lots(spec, market.open_interest_lots(symbol)),
            "time": ms(ex.time_ns),
        }

    return reply(request, await _read(call, read))


@router.get(
    "/futures/data/openInterestHist",
    openapi_extra=_doc(
        "symbol", "period", "startTime", "endTime", "limit", required=["symbol", "period"]
    ),
)
async def open_interest_hist(request: Request) -> Response:
    call = await public(request, 1)
    symbol = _symbol(call)
    period = call.params.require("period")
    if period not in OI_PERIODS:
        raise ApiError(-1130, "Data sent for parameter 'period' is not valid.")
    start_ms, end_ms = _times(call.params)
    limit = _limit(call.params, OI_HIST_LIMIT)
    market = call.state.market
    rows = await _read(
        call, lambda ex: market.open_interest_hist(symbol, period, start_ms, end_ms, limit)
    )
    return reply(request, rows)


__all__ = [
    "DELIVERY_DATE_MS",
    "ORDER_TYPES",
    "TIME_IN_FORCE",
    "exchange_info",
    "funding_info",
    "premium_index",
    "router",
    "symbol_info",
]
