"""The OpenAPI table: every operation the app serves, with the parameters Binance documents.

`OPERATIONS` names, for every (method, path), its tag, a summary and its parameters (`Param`):
Binance USDⓈ-M's (BINANCE_API.md §3; types as Binance's: LONG/INT -> integer, DECIMAL ->
number, ENUM -> string with an enum) and those of the perpex-only routes (/admin,
/dashboard). POST, PUT and DELETE parameters are declared `in: query`: Binance takes them in
the query string as well as in a form body (BINANCE_API.md §2), and the query is the form every
OpenAPI client and fuzzer can send. Enums list the values perpex accepts, all of them
Binance's; a value Binance has and perpex refuses is named in the description.
`perpex.server.openapi_params.declare_parameters` hangs the table on the app's routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from perpex.server.candles import INTERVAL_MINUTES
from perpex.server.income_history import INCOME_TYPES
from perpex.server.routes_admin import SHOCK_KINDS
from perpex.server.trade_params import CLIENT_ID_PATTERN, STP_MODES

# -- one parameter ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """One parameter as OpenAPI declares it (`location` is OpenAPI's `in`)."""

    name: str
    type: str = "string"  # string | integer | number | boolean
    required: bool = False
    description: str = ""
    enum: tuple[str | int, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    default: str | int | bool | None = None
    pattern: str | None = None
    example: str | int | float | bool | None = None
    location: str = "query"

    def openapi(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.type == "integer":
            schema["format"] = "int64"
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.default is not None:
            schema["default"] = self.default
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        out: dict[str, Any] = {
            "name": self.name,
            "in": self.location,
            "required": self.required,
            "schema": schema,
        }
        if self.description:
            out["description"] = self.description
        if self.example is not None:
            out["example"] = self.example
        return out


@dataclass(frozen=True)
class Operation:
    """One operation: its tag (the /docs section), a short summary, its parameters."""

    tag: str
    summary: str
    params: tuple[Param, ...] = field(default=())


# -- the parameters, by Binance's names -----------------------------------------------------------
MARKET: Final = "market"
TRADE: Final = "trade"
ACCOUNT: Final = "account"
USER_STREAM: Final = "user-stream"
ADMIN: Final = "admin"
DASHBOARD: Final = "dashboard"

SIDES: Final = ("BUY", "SELL")
ORDER_TYPES: Final = (
    "LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
)  # fmt: skip
ALGO_TYPES: Final = ORDER_TYPES[2:]  # algoOrder takes the conditional types only
TIME_IN_FORCE: Final = ("GTC", "IOC", "FOK", "GTX")
WORKING_TYPES: Final = ("MARK_PRICE", "CONTRACT_PRICE")
RESPONSE_TYPES: Final = ("ACK", "RESULT")
MARGIN_TYPES: Final = ("ISOLATED", "CROSSED")
OI_PERIODS: Final = ("5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
MAX_LEVERAGE: Final = 125
MAX_RECV_WINDOW_MS: Final = 60_000

TIMESTAMP: Final = Param(
    "timestamp", "integer", True, "The request's time, ms since the epoch (signed calls).",
    minimum=0,
)  # fmt: skip
RECV_WINDOW: Final = Param(
    "recvWindow", "integer", description="ms the request stays valid after `timestamp`.",
    minimum=0, maximum=MAX_RECV_WINDOW_MS, default=5000,
)  # fmt: skip
SIGNATURE: Final = Param(
    "signature", "string", True,
    "hex HMAC-SHA256 (key secret) of the query string followed by the body, without this "
    "pair; base64 Ed25519 for an Ed25519 key.",
)  # fmt: skip
API_KEY: Final = Param("X-MBX-APIKEY", required=True, description="The API key.", location="header")
ADMIN_TOKEN: Final = Param(
    "X-Admin-Token", required=True, location="header",
    description="The admin token printed at start (loopback clients only).",
)  # fmt: skip
SIGNED: Final = (TIMESTAMP, RECV_WINDOW, SIGNATURE, API_KEY)

SYMBOL: Final = Param("symbol", required=True, description="e.g. BTCUSDT.", example="BTCUSDT")
SYMBOL_OPT: Final = Param(
    "symbol", description="One symbol; all symbols when omitted.", example="BTCUSDT"
)
SIDE: Final = Param("side", required=True, enum=SIDES, example="BUY")
POSITION_SIDE: Final = Param(
    "positionSide", enum=("BOTH",), default="BOTH",
    description="perpex accounts are one-way: BOTH only (LONG/SHORT: -4061).",
)  # fmt: skip
QUANTITY: Final = Param("quantity", "number", description="Base asset, on the step.", example=0.001)
PRICE: Final = Param("price", "number", description="On the tick.", example=59000)
TIME_IN_FORCE_P: Final = Param(
    "timeInForce", enum=TIME_IN_FORCE, default="GTC", description="GTX = post only (no GTD)."
)
REDUCE_ONLY: Final = Param("reduceOnly", "boolean", default=False)
CLOSE_POSITION: Final = Param(
    "closePosition", "boolean", default=False, description="Close the whole position on trigger."
)
WORKING_TYPE: Final = Param(
    "workingType", enum=WORKING_TYPES, default="CONTRACT_PRICE",
    description="The price a trigger watches.",
)  # fmt: skip
PRICE_PROTECT: Final = Param(
    "priceProtect", "boolean", default=False, description="Accepted; triggers are not protected."
)
RESPONSE_TYPE: Final = Param("newOrderRespType", enum=RESPONSE_TYPES, default="ACK")
PRICE_MATCH: Final = Param(
    "priceMatch", enum=("NONE",), description="NONE only: perpex has no book-priced orders."
)
STP_MODE: Final = Param(
    "selfTradePreventionMode", enum=tuple(sorted(STP_MODES)),
    description="Accepted; a self-trade expires the taker.",
)  # fmt: skip
CALLBACK_RATE: Final = Param(
    "callbackRate", "number", description="Trailing stop, percent (0.1 to 10)."
)
ORDER_ID: Final = Param("orderId", "integer", minimum=1)
ORIG_CLIENT_ID: Final = Param(
    "origClientOrderId", pattern=CLIENT_ID_PATTERN, description="Instead of orderId."
)
ALGO_ID: Final = Param("algoId", "integer", minimum=1)
CLIENT_ALGO_ID: Final = Param(
    "clientAlgoId", pattern=CLIENT_ID_PATTERN, description="Instead of algoId."
)
START_TIME: Final = Param("startTime", "integer", description="ms.", minimum=0)
END_TIME: Final = Param("endTime", "integer", description="ms.", minimum=0)
TIMES: Final = (START_TIME, END_TIME)
INTERVAL: Final = Param("interval", required=True, enum=tuple(INTERVAL_MINUTES), example="1m")


def _limit(default: int, high: int, description: str = "") -> Param:
    return Param(
        "limit", "integer", minimum=1, maximum=high, default=default, description=description
    )


def _signed(*params: Param) -> tuple[Param, ...]:
    return (*params, *SIGNED)


def _klines(symbol_name: str = "symbol") -> tuple[Param, ...]:
    symbol = Param(symbol_name, required=True, description="e.g. BTCUSDT.", example="BTCUSDT")
    return (symbol, INTERVAL, *TIMES, _limit(500, 1500))


# Binance's New Order (POST /fapi/v1/order) and New Algo Order (POST /fapi/v1/algoOrder).
ORDER_PARAMS: Final = (
    SYMBOL, SIDE, POSITION_SIDE,
    Param("type", required=True, enum=ORDER_TYPES, example="LIMIT",
          description="The conditional types are taken here too (trigger in stopPrice)."),
    TIME_IN_FORCE_P, QUANTITY, REDUCE_ONLY, PRICE,
    Param("newClientOrderId", pattern=CLIENT_ID_PATTERN, description="Unique per open order."),
    Param("stopPrice", "number", description="Trigger price of a conditional type."),
    CLOSE_POSITION,
    Param("activationPrice", "number", description="Trailing stop activation price."),
    CALLBACK_RATE, WORKING_TYPE, PRICE_PROTECT, RESPONSE_TYPE, PRICE_MATCH, STP_MODE,
)  # fmt: skip
ALGO_ORDER_PARAMS: Final = (
    Param("algoType", required=True, enum=("CONDITIONAL",), example="CONDITIONAL"),
    SYMBOL, SIDE, POSITION_SIDE,
    Param("type", required=True, enum=ALGO_TYPES, example="STOP_MARKET"),
    TIME_IN_FORCE_P, QUANTITY, PRICE,
    Param("triggerPrice", "number", description="The trigger.", example=50000),
    WORKING_TYPE, PRICE_MATCH, CLOSE_POSITION, PRICE_PROTECT, REDUCE_ONLY,
    Param("activatePrice", "number", description="Trailing stop activation price."),
    CALLBACK_RATE,
    Param("clientAlgoId", pattern=CLIENT_ID_PATTERN, description="Unique per open algo order."),
    STP_MODE, RESPONSE_TYPE,
)  # fmt: skip
ONE_ORDER: Final = _signed(SYMBOL, ORDER_ID, ORIG_CLIENT_ID)
ONE_ALGO: Final = _signed(
    Param("symbol", description="Checked against the order's when sent."), ALGO_ID, CLIENT_ALGO_ID
)
HISTORY_LIMIT: Final = _limit(500, 1000)


# -- the table ----------------------------------------------------------------------------------
OPERATIONS: Final[Mapping[tuple[str, str], Operation]] = {
    # market data (public)
    ("GET", "/fapi/v1/ping"): Operation(MARKET, "Test connectivity"),
    ("GET", "/fapi/v1/time"): Operation(MARKET, "Server time"),
    ("GET", "/fapi/v1/exchangeInfo"): Operation(MARKET, "Symbols, filters and rate limits"),
    ("GET", "/fapi/v1/depth"): Operation(
        MARKET,
        "Order book",
        (
            SYMBOL,
            _limit(500, 1000, "Binance's: 5, 10, 20, 50, 100, 500, 1000; perpex serves 1 to 1000."),
        ),
    ),
    ("GET", "/fapi/v1/klines"): Operation(MARKET, "Candles (last price)", _klines()),
    ("GET", "/fapi/v1/markPriceKlines"): Operation(MARKET, "Mark price candles", _klines()),
    ("GET", "/fapi/v1/indexPriceKlines"): Operation(MARKET, "Index price candles", _klines("pair")),
    ("GET", "/fapi/v1/premiumIndexKlines"): Operation(MARKET, "Premium index candles", _klines()),
    ("GET", "/fapi/v1/premiumIndex"): Operation(
        MARKET, "Mark price, index price and funding rate", (SYMBOL_OPT,)
    ),
    ("GET", "/fapi/v1/fundingRate"): Operation(
        MARKET, "Funding rate history", (SYMBOL_OPT, *TIMES, _limit(100, 1000))
    ),
    ("GET", "/fapi/v1/fundingInfo"): Operation(MARKET, "Funding intervals, caps and floors"),
    ("GET", "/fapi/v1/ticker/24hr"): Operation(MARKET, "24 hour statistics", (SYMBOL_OPT,)),
    ("GET", "/fapi/v1/ticker/price"): Operation(MARKET, "Last price", (SYMBOL_OPT,)),
    ("GET", "/fapi/v2/ticker/price"): Operation(MARKET, "Last price (v2)", (SYMBOL_OPT,)),
    ("GET", "/fapi/v1/ticker/bookTicker"): Operation(MARKET, "Best bid and ask", (SYMBOL_OPT,)),
    ("GET", "/fapi/v1/aggTrades"): Operation(
        MARKET,
        "Aggregate trades",
        (
            SYMBOL,
            Param("fromId", "integer", description="First aggregate trade id.", minimum=0),
            *TIMES,
            _limit(500, 1000),
        ),
    ),
    ("GET", "/fapi/v1/trades"): Operation(MARKET, "Recent trades", (SYMBOL, _limit(500, 1000))),
    ("GET", "/fapi/v1/openInterest"): Operation(MARKET, "Open interest", (SYMBOL,)),
    ("GET", "/futures/data/openInterestHist"): Operation(
        MARKET,
        "Open interest history",
        (
            SYMBOL,
            Param("period", required=True, enum=OI_PERIODS, example="5m"),
            *TIMES,
            _limit(30, 500),
        ),
    ),
    # trade (signed)
    ("POST", "/fapi/v1/order"): Operation(TRADE, "New order", _signed(*ORDER_PARAMS)),
    ("GET", "/fapi/v1/order"): Operation(TRADE, "Query an order", ONE_ORDER),
    ("GET", "/fapi/v1/openOrder"): Operation(TRADE, "Query an open order", ONE_ORDER),
    ("DELETE", "/fapi/v1/order"): Operation(TRADE, "Cancel an order", ONE_ORDER),
    ("PUT", "/fapi/v1/order"): Operation(
        TRADE,
        "Modify a resting LIMIT order",
        _signed(
            ORDER_ID,
            ORIG_CLIENT_ID,
            SYMBOL,
            SIDE,
            Param("quantity", "number", True, "The new quantity.", example=0.001),
            Param("price", "number", True, "The new price.", example=59000),
            PRICE_MATCH,
        ),
    ),
    ("POST", "/fapi/v1/batchOrders"): Operation(
        TRADE,
        "New orders (up to 5)",
        _signed(
            Param(
                "batchOrders",
                required=True,
                description="JSON array of up to 5 order objects (LIMIT or MARKET), as the "
                "parameters of POST /fapi/v1/order.",
                example='[{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","quantity":"0.001",'
                '"price":"59000","timeInForce":"GTC"}]',
            ),
        ),
    ),
    ("DELETE", "/fapi/v1/batchOrders"): Operation(
        TRADE,
        "Cancel orders (up to 10)",
        _signed(
            SYMBOL,
            Param("orderIdList", description="JSON array of up to 10 order ids.", example="[1]"),
            Param(
                "origClientOrderIdList",
                description="JSON array of up to 10 client order ids (instead of orderIdList).",
            ),
        ),
    ),
    ("GET", "/fapi/v1/openOrders"): Operation(TRADE, "Open orders", _signed(SYMBOL_OPT)),
    ("GET", "/fapi/v1/allOrders"): Operation(
        TRADE,
        "All orders",
        _signed(
            SYMBOL,
            Param("orderId", "integer", description="From this id on.", minimum=1),
            *TIMES,
            HISTORY_LIMIT,
        ),
    ),
    ("DELETE", "/fapi/v1/allOpenOrders"): Operation(
        TRADE, "Cancel all open orders of a symbol", _signed(SYMBOL)
    ),
    ("GET", "/fapi/v1/userTrades"): Operation(
        TRADE,
        "Account trades",
        _signed(
            SYMBOL,
            ORDER_ID,
            Param(
                "fromId",
                "integer",
                description="From this trade id on (not with times).",
                minimum=0,
            ),
            *TIMES,
            HISTORY_LIMIT,
        ),
    ),
    ("POST", "/fapi/v1/algoOrder"): Operation(
        TRADE, "New conditional (algo) order", _signed(*ALGO_ORDER_PARAMS)
    ),
    ("GET", "/fapi/v1/algoOrder"): Operation(TRADE, "Query an algo order", ONE_ALGO),
    ("DELETE", "/fapi/v1/algoOrder"): Operation(TRADE, "Cancel an algo order", ONE_ALGO),
    ("GET", "/fapi/v1/openAlgoOrders"): Operation(
        TRADE,
        "Open algo orders",
        _signed(
            Param("algoType", enum=("CONDITIONAL",)),
            SYMBOL_OPT,
            ALGO_ID,
        ),
    ),
    ("GET", "/fapi/v1/allAlgoOrders"): Operation(
        TRADE,
        "All algo orders",
        _signed(
            SYMBOL,
            Param("algoId", "integer", description="From this id on.", minimum=1),
            *TIMES,
            HISTORY_LIMIT,
        ),
    ),
    ("DELETE", "/fapi/v1/algoOpenOrders"): Operation(
        TRADE, "Cancel all open algo orders of a symbol", _signed(SYMBOL)
    ),
    # account (signed)
    ("GET", "/fapi/v3/account"): Operation(ACCOUNT, "Account (v3)", SIGNED),
    ("GET", "/fapi/v2/account"): Operation(ACCOUNT, "Account (v2)", SIGNED),
    ("GET", "/fapi/v3/balance"): Operation(ACCOUNT, "Balance (v3)", SIGNED),
    ("GET", "/fapi/v2/balance"): Operation(ACCOUNT, "Balance (v2)", SIGNED),
    ("GET", "/fapi/v3/positionRisk"): Operation(ACCOUNT, "Positions (v3)", _signed(SYMBOL_OPT)),
    ("GET", "/fapi/v2/positionRisk"): Operation(ACCOUNT, "Positions (v2)", _signed(SYMBOL_OPT)),
    ("POST", "/fapi/v1/leverage"): Operation(
        ACCOUNT,
        "Change initial leverage",
        _signed(
            SYMBOL,
            Param("leverage", "integer", True, minimum=1, maximum=MAX_LEVERAGE, example=10),
        ),
    ),
    ("POST", "/fapi/v1/marginType"): Operation(
        ACCOUNT,
        "Change margin type",
        _signed(
            SYMBOL,
            Param("marginType", required=True, enum=MARGIN_TYPES, example="ISOLATED"),
        ),
    ),
    ("POST", "/fapi/v1/positionMargin"): Operation(
        ACCOUNT,
        "Add or reduce isolated position margin",
        _signed(
            SYMBOL,
            POSITION_SIDE,
            Param("amount", "number", True, "USDT.", example=10),
            Param("type", "integer", True, "1: add, 2: reduce.", enum=(1, 2), example=1),
        ),
    ),
    ("GET", "/fapi/v1/commissionRate"): Operation(ACCOUNT, "Commission rates", _signed(SYMBOL)),
    ("GET", "/fapi/v1/positionSide/dual"): Operation(ACCOUNT, "Position mode", SIGNED),
    ("POST", "/fapi/v1/positionSide/dual"): Operation(
        ACCOUNT,
        "Change position mode",
        _signed(
            Param(
                "dualSidePosition",
                "boolean",
                True,
                "true: hedge mode (refused: perpex is one-way only); false: one-way.",
            ),
        ),
    ),
    ("GET", "/fapi/v1/multiAssetsMargin"): Operation(ACCOUNT, "Multi-assets mode", SIGNED),
    ("POST", "/fapi/v1/multiAssetsMargin"): Operation(
        ACCOUNT,
        "Change multi-assets mode",
        _signed(
            Param(
                "multiAssetsMargin",
                "boolean",
                True,
                "true: multi-assets mode (refused: perpex settles in USDT only).",
            ),
        ),
    ),
    ("GET", "/fapi/v1/symbolConfig"): Operation(
        ACCOUNT, "Leverage and margin type per symbol", _signed(SYMBOL_OPT)
    ),
    ("GET", "/fapi/v1/accountConfig"): Operation(ACCOUNT, "Account configuration", SIGNED),
    ("GET", "/fapi/v1/leverageBracket"): Operation(
        ACCOUNT, "Notional and leverage brackets", _signed(SYMBOL_OPT)
    ),
    ("GET", "/fapi/v1/income"): Operation(
        ACCOUNT,
        "Income history",
        _signed(
            SYMBOL_OPT,
            Param(
                "incomeType",
                enum=tuple(sorted(INCOME_TYPES)),
                description="The types perpex records (of Binance's).",
            ),
            *TIMES,
            Param("page", "integer", minimum=1, default=1),
            _limit(100, 1000),
        ),
    ),
    ("GET", "/sapi/v1/capital/config/getall"): Operation(
        ACCOUNT, "Spot stub for ccxt's load_markets (answers [])", SIGNED
    ),
    ("GET", "/sapi/v1/margin/allPairs"): Operation(
        ACCOUNT, "Spot stub for ccxt's load_markets (answers [])", SIGNED
    ),
    # user data stream (the key header only)
    ("POST", "/fapi/v1/listenKey"): Operation(USER_STREAM, "Start a user data stream", (API_KEY,)),
    ("PUT", "/fapi/v1/listenKey"): Operation(
        USER_STREAM,
        "Keep a user data stream alive (60 minutes)",
        (Param("listenKey", description="The stream's key; the account's when omitted."), API_KEY),
    ),
    ("DELETE", "/fapi/v1/listenKey"): Operation(
        USER_STREAM,
        "Close a user data stream",
        (Param("listenKey", description="The stream's key; the account's when omitted."), API_KEY),
    ),
    # admin (perpex only; loopback and the admin token)
    ("GET", "/admin/status"): Operation(
        ADMIN, "Driver, sequencer, fund and markets", (ADMIN_TOKEN,)
    ),
    ("POST", "/admin/pause"): Operation(ADMIN, "Pause the scenario's path", (ADMIN_TOKEN,)),
    ("POST", "/admin/resume"): Operation(ADMIN, "Resume the scenario's path", (ADMIN_TOKEN,)),
    ("POST", "/admin/speed"): Operation(
        ADMIN,
        "Set the scenario's speed",
        (
            Param("speed", "number", True, "Scenario seconds per wall-clock second.", example=1),
            ADMIN_TOKEN,
        ),
    ),
    ("POST", "/admin/shock"): Operation(
        ADMIN,
        "Inject a shock",
        (
            Param("kind", required=True, enum=tuple(sorted(SHOCK_KINDS)), example="drop"),
            Param("percent", "number", description="drop, pump, divergence: the move."),
            Param("minutes", "number", description="drop, pump: over how long."),
            Param("seconds", "number", description="How long (instead of minutes)."),
            ADMIN_TOKEN,
        ),
    ),
    ("POST", "/admin/deposit"): Operation(
        ADMIN,
        "Credit USDT to an account",
        (
            Param("account", required=True, description="The account's name (made if new)."),
            Param("amount", "number", True, "USDT.", example=1000),
            ADMIN_TOKEN,
        ),
    ),
    ("POST", "/admin/snapshot"): Operation(ADMIN, "Snapshot the journal now", (ADMIN_TOKEN,)),
    ("GET", "/admin/demo-key"): Operation(ADMIN, "The demo account's key", (ADMIN_TOKEN,)),
    # dashboard (perpex only)
    ("GET", "/dashboard/preview"): Operation(
        DASHBOARD,
        "Preview an order's position and liquidation price",
        _signed(
            SYMBOL,
            SIDE,
            Param("type", required=True, enum=("MARKET", "LIMIT"), example="LIMIT"),
            Param("quantity", "number", True, "Base asset, on the step.", example=0.001),
            Param("price", "number", description="LIMIT only; on the tick.", example=59000),
            Param("leverage", "integer", minimum=1, maximum=MAX_LEVERAGE),
            Param("marginType", enum=MARGIN_TYPES),
        ),
    ),
    ("GET", "/dashboard/status"): Operation(
        DASHBOARD, "Insurance fund, driver and writer counters", (ADMIN_TOKEN,)
    ),
}


__all__ = ["OPERATIONS", "Operation", "Param"]
