"""What the order routes do in the writer thread, shared by `routes_trade` and `routes_algo`:
place one order (with the resend rules of client ids), cancel one, and render what was found
or placed from `AccountHistory` (which has seen the job's events by the time `then` runs).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import Request

from perpex.core.markets import MarketSpec
from perpex.exchange import Exchange
from perpex.server import orders_wire
from perpex.server.account_history import AccountHistory
from perpex.server.errors import UNKNOWN_ORDER, ApiError
from perpex.server.http import Call
from perpex.server.limits import RateLimited
from perpex.server.order_records import STP_MODE, AlgoRecord, OrderRecord
from perpex.server.trade_params import OrderArgs, find_order

DUPLICATE_CLIENT_ID: Final = (-4116, "ClientOrderId is duplicated.")


def charge(request: Request, call: Call, weight: int, orders: int = 0) -> None:
    """Charge more than `signed` did (a batch's other slots, a call without a symbol)."""
    if weight <= 0 and orders <= 0:
        return
    api_key = request.headers.get("X-MBX-APIKEY", "")
    try:
        request.state.usage = call.state.limiter.charge("key:" + api_key, weight, orders)
    except RateLimited as exc:  # the refusal still reports the usage in its headers
        request.state.usage = exc.usage
        raise


def spec_of(call: Call, symbol: str) -> MarketSpec:
    spec = call.state.specs.get(symbol)
    if spec is None:
        raise ApiError(-1121, "Invalid symbol.")
    return spec


def render(history: AccountHistory, account: str, found: OrderRecord | AlgoRecord) -> Any:
    """An order, or an algo order placed through /order, as the order endpoints show it."""
    spec = history.specs[found.symbol]
    if isinstance(found, OrderRecord):
        return orders_wire.order_object(spec, found)
    actual = history.order(account, found.actual_order_id) if found.actual_order_id else None
    return orders_wire.algo_as_order_object(spec, found, actual)


def place(ex: Exchange, history: AccountHistory, account: str, args: OrderArgs) -> int:
    """Place one order (in the writer thread); its id. A resent client id gets the first
    order (the journal's idempotency: it applies once)."""
    cid = args.client_order_id
    if cid is not None:
        algo_id = history.algo_id_of(account, cid)
        if args.conditional:
            if algo_id is not None:  # a resend of an algo order: the first one, as it is now
                return algo_id
            if history.order_id_of(account, cid) is not None:
                raise ApiError(*DUPLICATE_CLIENT_ID)  # the id of a plain order
        elif algo_id is not None:
            raise ApiError(*DUPLICATE_CLIENT_ID)  # the id of an algo order
    order_id = ex.place_order(account, **args.place_kwargs()).order_id
    if args.stp_mode != STP_MODE and history.order(account, order_id) is None:
        history.stp_modes[(account, order_id)] = args.stp_mode  # (not a resend's old order)
    return order_id


def placed_object(history: AccountHistory, account: str, args: OrderArgs, order_id: int) -> Any:
    found = history.order(account, order_id) or history.algo(account, order_id)
    if found is None:  # the history sees every event of the job: a bug if not
        raise ApiError(-1000, "An unknown error occured while processing the request.", 500)
    if isinstance(found, OrderRecord) and args.response_type == "ACK":
        return orders_wire.order_object(history.specs[found.symbol], found, ack=True)
    return render(history, account, found)


def cancel(
    ex: Exchange,
    history: AccountHistory,
    account: str,
    symbol: str,
    order_id: int | None,
    cid: str | None,
) -> OrderRecord | AlgoRecord:
    """Cancel one of the account's open orders (or algo orders placed through /order)."""
    found = find_order(history, account, order_id, cid)
    if found is None or found.symbol != symbol or not found.is_open:
        raise ApiError.of(UNKNOWN_ORDER)
    the_id = found.order_id if isinstance(found, OrderRecord) else found.algo_id
    ex.cancel_order(account, symbol, order_id=the_id)
    return found


__all__ = [
    "DUPLICATE_CLIENT_ID",
    "cancel",
    "charge",
    "place",
    "placed_object",
    "render",
    "spec_of",
]
