"""The trading endpoints' parameters, read as Binance reads them, turned into the facade's
arguments; and the lookups by (account, id or client id) every order route shares.

Binance's order of complaints: the mandatory parameters first (-1102), then the enums and the
ids (-1100 / -1116 / -1117 / -1130), then what the facade checks (symbol -1121, tick -4014,
step -4023, precision -1111, margin, ...). Decimals stay strings: the facade refuses values
off the tick or the step instead of rounding them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, TypeVar
from urllib.parse import urlencode

from perpex.server.account_history import AccountHistory
from perpex.server.errors import ApiError, not_required
from perpex.server.order_records import AlgoRecord, OrderRecord
from perpex.server.params import Params

PLAIN_TYPES: Final = frozenset({"LIMIT", "MARKET"})
CONDITIONAL_TYPES: Final = frozenset(
    {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}
)
RESPONSE_TYPES: Final = frozenset({"ACK", "RESULT"})
STP_MODES: Final = frozenset({"NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"})
# The modes the engine acts on besides its default (EXPIRE_TAKER, which NONE also gets: no
# account trades with itself here).
OTHER_STP_MODES: Final = frozenset({"EXPIRE_MAKER", "EXPIRE_BOTH"})
CLIENT_ID_PATTERN: Final = r"^[\.A-Z\:/a-z0-9_-]{1,36}$"
CLIENT_ID_RE: Final = re.compile(r"[.A-Z:/a-z0-9_-]{1,36}")
MAX_BATCH_ORDERS: Final = 5  # POST batchOrders (Binance's limit)
MAX_BATCH_CANCELS: Final = 10  # DELETE batchOrders
SEVEN_DAYS_MS: Final = 7 * 24 * 3600 * 1000  # the widest time window of a history query
DEFAULT_LIMIT: Final = 500
MAX_LIMIT: Final = 1000  # allOrders, userTrades, allAlgoOrders
DEFAULT_WORKING_TYPE: Final = "CONTRACT_PRICE"  # Binance's default for conditional orders
WRONG_POSITION_SIDE: Final = (-4061, "Order's position side does not match user's setting.")
NO_ID: Final = (
    -1102,
    "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!",
)
NO_ALGO_ID: Final = (
    -1102,
    "Param 'clientAlgoId' or 'algoId' must be sent, but both were empty/null!",
)


@dataclass(frozen=True)
class OrderArgs:
    """One order, as `Exchange.place_order` takes it (decimals as the strings received)."""

    symbol: str
    side: str
    type: str
    quantity: str | None
    price: str | None
    time_in_force: str
    reduce_only: bool
    close_position: bool
    client_order_id: str | None
    stop_price: str | None
    working_type: str
    callback_rate: str | None
    activation_price: str | None
    response_type: str  # ACK or RESULT
    stp_mode: str = "EXPIRE_TAKER"  # selfTradePreventionMode as the engine applies it

    @property
    def conditional(self) -> bool:
        return self.type in CONDITIONAL_TYPES

    def place_kwargs(self) -> dict[str, Any]:
        return {
            "symbol": self.symbol,
            "side": self.side,
            "type": self.type,
            "quantity": self.quantity,
            "price": self.price,
            "time_in_force": self.time_in_force,
            "reduce_only": self.reduce_only,
            "client_order_id": self.client_order_id,
            "stop_price": self.stop_price,
            "working_type": self.working_type,
            "callback_rate": self.callback_rate,
            "activation_price": self.activation_price,
            "close_position": self.close_position,
            "self_trade_prevention": self.stp_mode,
        }


def client_id(p: Params, name: str) -> str | None:
    value = p.get(name)
    if value is not None and not CLIENT_ID_RE.fullmatch(value):
        raise ApiError(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is "
            f"'{CLIENT_ID_PATTERN}'.",
        )
    return value


def _common(p: Params) -> str:
    """What both order endpoints accept and this exchange does not act on; the self-trade
    prevention mode the engine applies (NONE and none sent: EXPIRE_TAKER)."""
    side = p.get("positionSide")
    if side is not None and side != "BOTH":
        raise ApiError(*WRONG_POSITION_SIDE)
    match = p.get("priceMatch")
    if match is not None and match != "NONE":
        # The price is always the client's: an order priced by the book is not offered.
        raise not_required("priceMatch")
    stp = p.choice("selfTradePreventionMode", STP_MODES)
    p.boolean("priceProtect")  # accepted; triggers are not price-protected here
    return stp if stp in OTHER_STP_MODES else "EXPIRE_TAKER"


def order_args(p: Params) -> OrderArgs:
    """POST /fapi/v1/order (and one batchOrders slot): LIMIT and MARKET, and the conditional
    types older clients still send here (trigger in `stopPrice`, trailing activation in
    `activationPrice`)."""
    symbol = p.require("symbol")
    side = p.require("side")
    order_type = p.require("type")
    stp = _common(p)
    tif = p.get("timeInForce") or "GTC"
    return OrderArgs(
        symbol=symbol,
        side=side,
        type=order_type,
        quantity=p.get("quantity"),
        price=p.get("price"),
        time_in_force=tif,
        reduce_only=p.boolean("reduceOnly"),
        close_position=p.boolean("closePosition"),
        client_order_id=client_id(p, "newClientOrderId"),
        stop_price=p.get("stopPrice"),
        working_type=p.get("workingType") or DEFAULT_WORKING_TYPE,
        callback_rate=p.get("callbackRate"),
        activation_price=p.get("activationPrice"),
        response_type=p.choice("newOrderRespType", RESPONSE_TYPES) or "ACK",
        stp_mode=stp,
    )


def algo_args(p: Params) -> OrderArgs:
    """POST /fapi/v1/algoOrder: conditional types only (trigger in `triggerPrice`, trailing
    activation in `activatePrice`, client id in `clientAlgoId`)."""
    algo_type = p.require("algoType")
    if algo_type != "CONDITIONAL":
        raise ApiError(-1130, "Data sent for parameter 'algoType' is not valid.")
    symbol = p.require("symbol")
    side = p.require("side")
    order_type = p.require("type")
    if order_type in PLAIN_TYPES:
        raise ApiError(-1116, "Invalid orderType.")
    stp = _common(p)
    return OrderArgs(
        symbol=symbol,
        side=side,
        type=order_type,
        quantity=p.get("quantity"),
        price=p.get("price"),
        time_in_force=p.get("timeInForce") or "GTC",
        reduce_only=p.boolean("reduceOnly"),
        close_position=p.boolean("closePosition"),
        client_order_id=client_id(p, "clientAlgoId"),
        stop_price=p.get("triggerPrice"),
        working_type=p.get("workingType") or DEFAULT_WORKING_TYPE,
        callback_rate=p.get("callbackRate"),
        activation_price=p.get("activatePrice"),
        response_type=p.choice("newOrderRespType", RESPONSE_TYPES) or "ACK",
        stp_mode=stp,
    )


def batch_slots(p: Params, name: str, limit: int) -> list[Any]:
    """A JSON array parameter (`batchOrders`, `orderIdList`, ...) of 1 to `limit` items."""
    raw = p.require(name)
    try:
        items = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.") from None
    if not isinstance(items, list) or not items:
        raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")
    if len(items) > limit:
        raise ApiError(-1130, f"Data sent for parameter '{name}' is not valid: at most {limit}.")
    return items


def slot_params(item: object) -> Params:
    """One batchOrders slot (a JSON object of strings, numbers, booleans) as `Params`."""
    if not isinstance(item, Mapping):
        raise ApiError(-1130, "Data sent for parameter 'batchOrders' is not valid.")
    pairs: list[tuple[str, str]] = []
    for key, value in item.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        elif value is None:
            continue
        else:
            raise ApiError(-1130, f"Data sent for parameter '{key}' is not valid.")
        pairs.append((str(key), text))
    return Params(b"", urlencode(pairs).encode())


def time_window(p: Params) -> tuple[int | None, int | None]:
    """startTime / endTime (ms); at most 7 days apart (-1127), start not after end."""
    start = p.integer("startTime", low=0)
    end = p.integer("endTime", low=0)
    if start is not None and end is not None:
        if start > end:
            raise ApiError(-1023, "Start time is greater than end time.")
        if end - start > SEVEN_DAYS_MS:
            raise ApiError(-1127, "More than 168 hours between startTime and endTime.")
    return start, end


def limit_of(p: Params) -> int:
    return p.integer("limit", low=1, high=MAX_LIMIT) or DEFAULT_LIMIT


R = TypeVar("R", OrderRecord, AlgoRecord)


def history_page(
    rows: Iterable[R],
    id_of: Callable[[R], int],
    from_id: int | None,
    start: int | None,
    end: int | None,
    limit: int,
) -> list[R]:
    """Binance's allOrders / allAlgoOrders page: ids >= `from_id` if sent, in the time window;
    the first `limit` from `from_id` or `start` on, else the newest `limit`."""
    chosen = [
        r
        for r in rows
        if (from_id is None or id_of(r) >= from_id)
        and (start is None or r.created_ms >= start)
        and (end is None or r.created_ms <= end)
    ]
    return chosen[:limit] if from_id is not None or start is not None else chosen[-limit:]


# -- lookups (in the writer thread) ----------------------------------------------------------
def order_id_param(p: Params, name: str = "orderId") -> int | None:
    return p.integer(name, low=1)


def find_order(
    history: AccountHistory, account: str, order_id: int | None, client_order_id: str | None
) -> OrderRecord | AlgoRecord | None:
    """The account's order by id (or client id); an algo order placed through /order is found
    by its id too. None for an unknown or foreign id."""
    if order_id is None and client_order_id is not None:
        order_id = history.order_id_of(account, client_order_id)
        if order_id is None:
            algo_id = history.algo_id_of(account, client_order_id)
            return None if algo_id is None else history.algo(account, algo_id)
    if order_id is None:
        return None
    found = history.order(account, order_id)
    return found if found is not None else history.algo(account, order_id)


def find_algo(
    history: AccountHistory, account: str, algo_id: int | None, client_algo_id: str | None
) -> AlgoRecord | None:
    if algo_id is None and client_algo_id is not None:
        algo_id = history.algo_id_of(account, client_algo_id)
    return None if algo_id is None else history.algo(account, algo_id)


def require_one(p: Params, id_name: str, client_name: str) -> tuple[int | None, str | None]:
    """(id, client id): one of them must be sent; the id wins when both are."""
    order_id = order_id_param(p, id_name)
    client = p.get(client_name)
    if order_id is None and client is None:
        raise ApiError(*(NO_ALGO_ID if id_name == "algoId" else NO_ID))
    return order_id, (None if order_id is not None else client)


__all__ = [
    "CLIENT_ID_RE",
    "CONDITIONAL_TYPES",
    "DEFAULT_LIMIT",
    "MAX_BATCH_CANCELS",
    "MAX_BATCH_ORDERS",
    "MAX_LIMIT",
    "SEVEN_DAYS_MS",
    "OrderArgs",
    "algo_args",
    "batch_slots",
    "client_id",
    "find_algo",
    "find_order",
    "history_page",
    "limit_of",
    "order_args",
    "order_id_param",
    "require_one",
    "slot_params",
    "time_window",
]
