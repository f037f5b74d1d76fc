"""Trading routes: place, query, modify and cancel orders, batches, open and all orders, the
account's trades (BINANCE_API.md §3, §4.3); the algo-order routes are in `routes_algo` and
mounted on this router.

Every order is looked up by (account, id): another account's id is answered exactly like an
unknown one (-2013 on a query, -2011 on a cancel or a modify). Placements and cancels go
through the facade in a sequencer job; the answer is rendered after the commit from
`AccountHistory`, which has seen the job's events by then, so a reply shows the same status,
fills and times as every later query.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request, Response

from perpex.errors import ExchangeError
from perpex.exchange import Exchange
from perpex.server import orders_wire, routes_algo
from perpex.server.errors import NO_SUCH_ORDER, UNKNOWN_ORDER, ApiError, mandatory
from perpex.server.http import reply, signed
from perpex.server.order_actions import (
    cancel,
    charge,
    place,
    placed_object,
    render,
    spec_of,
)
from perpex.server.order_records import AlgoRecord, OrderRecord
from perpex.server.params import Params
from perpex.server.trade_params import (
    CLIENT_ID_RE,
    MAX_BATCH_CANCELS,
    MAX_BATCH_ORDERS,
    SEVEN_DAYS_MS,
    OrderArgs,
    batch_slots,
    find_order,
    history_page,
    limit_of,
    order_args,
    require_one,
    slot_params,
    time_window,
)

router = APIRouter()
router.include_router(routes_algo.router)

CANCEL_ALL_DONE: Final = {"code": 200, "msg": "The operation of cancel all open order is done."}


# -- one order ------------------------------------------------------------------------------
@router.post("/fapi/v1/order")
async def new_order(request: Request) -> Response:
    call = await signed(request, 1, orders=1)
    args = order_args(call.params)
    history, account = call.state.accounts, call.account
    data = await call.state.seq.call(
        lambda ex: place(ex, history, account, args),
        lambda order_id: placed_object(history, account, args, order_id),
    )
    return reply(request, data)


@router.get("/fapi/v1/order")
async def query_order(request: Request) -> Response:
    return await _query(request, open_only=False)


@router.get("/fapi/v1/openOrder")
async def query_open_order(request: Request) -> Response:
    return await _query(request, open_only=True)


async def _query(request: Request, *, open_only: bool) -> Response:
    """One order of the caller's, by id or client id (any state, or open only)."""
    call = await signed(request, 1)
    p = call.params
    symbol = p.require("symbol")
    spec_of(call, symbol)
    order_id, cid = require_one(p, "orderId", "origClientOrderId")
    history, account = call.state.accounts, call.account

    def read(ex: Exchange) -> Any:
        found = find_order(history, account, order_id, cid)
        if found is None or found.symbol != symbol:
            raise ApiError.of(NO_SUCH_ORDER)
        if open_only and not (isinstance(found, OrderRecord) and found.is_open):
            raise ApiError.of(NO_SUCH_ORDER)
        return render(history, account, found)

    return reply(request, await call.state.seq.call(read, write=False))


@router.delete("/fapi/v1/order")
async def cancel_order(request: Request) -> Response:
    call = await signed(request, 1)
    p = call.params
    symbol = p.require("symbol")
    spec_of(call, symbol)
    order_id, cid = require_one(p, "orderId", "origClientOrderId")
    history, account = call.state.accounts, call.account
    data = await call.state.seq.call(
        lambda ex: cancel(ex, history, account, symbol, order_id, cid),
        lambda found: render(history, account, found),
    )
    return reply(request, data)


@router.put("/fapi/v1/order")
async def modify_order(request: Request) -> Response:
    """Binance's Modify Order: a resting LIMIT order's price and quantity, same id."""
    call = await signed(request, 1, orders=1)
    p = call.params
    symbol = p.require("symbol")
    side = p.require("side")
    quantity = p.require("quantity")
    price = p.get("price")
    match = p.get("priceMatch")
    if price is None and (match is None or match == "NONE"):
        raise mandatory("price")
    if match is not None and match != "NONE":
        raise ApiError(-1106, "Parameter 'priceMatch' sent when not required.")
    spec_of(call, symbol)
    order_id, cid = require_one(p, "orderId", "origClientOrderId")
    history, account = call.state.accounts, call.account

    def modify(ex: Exchange) -> int:
        found = find_order(history, account, order_id, cid)
        if not isinstance(found, OrderRecord) or found.symbol != symbol or not found.is_open:
            raise ApiError.of(NO_SUCH_ORDER)  # Binance's Modify Order answer, as core/amend.py
        modified = ex.modify_order(
            account,
            symbol,
            order_id=found.order_id,
            client_order_id=None,
            side=side,
            quantity=quantity,
            price=price,
        )
        return int(modified.order_id)

    def rendered(the_id: int) -> Any:
        found = history.order(account, the_id)
        if found is None:
            raise ApiError.of(UNKNOWN_ORDER)
        return render(history, account, found)

    return reply(request, await call.state.seq.call(modify, rendered))


# -- batches --------------------------------------------------------------------------------
def _slot_error(exc: ApiError | ExchangeError) -> dict[str, Any]:
    return {"code": exc.code, "msg": exc.msg}


@router.post("/fapi/v1/batchOrders")
async def new_batch(request: Request) -> Response:
    call = await signed(request, 5, orders=1)
    items = batch_slots(call.params, "batchOrders", MAX_BATCH_ORDERS)
    charge(request, call, 0, len(items) - 1)
    slots: list[OrderArgs | ApiError | ExchangeError] = []
    for item in items:
        try:
            args = order_args(slot_params(item))
            if args.conditional:  # Binance takes conditional orders on algoOrder only
                raise ApiError(-1116, "Invalid orderType.")
            slots.append(args)
        except (ApiError, ExchangeError) as exc:
            slots.append(exc)
    history, account = call.state.accounts, call.account

    def place_all(ex: Exchange) -> list[int | ApiError | ExchangeError]:
        done: list[int | ApiError | ExchangeError] = []
        for slot in slots:
            if not isinstance(slot, OrderArgs):
                done.append(slot)
                continue
            try:
                done.append(place(ex, history, account, slot))
            except (ApiError, ExchangeError) as exc:
                done.append(exc)
        return done

    def rendered(done: list[int | ApiError | ExchangeError]) -> list[Any]:
        out: list[Any] = []
        for slot, result in zip(slots, done, strict=True):
            if isinstance(result, int) and isinstance(slot, OrderArgs):
                out.append(placed_object(history, account, slot, result))
            elif isinstance(result, ApiError | ExchangeError):
                out.append(_slot_error(result))
        return out

    return reply(request, await call.state.seq.call(place_all, rendered))


def _id_list(p: Params) -> tuple[list[int | None], list[str | None]]:
    """orderIdList (JSON integers) or origClientOrderIdList (JSON strings), at most 10.

    Also under the lower-case names `orderidlist` and `origclientorderidlist`, which ccxt's
    cancel_orders sends (Binance takes both spellings)."""
    ids_name = "orderIdList" if p.get("orderIdList") is not None else "orderidlist"
    cids_name = (
        "origClientOrderIdList"
        if p.get("origClientOrderIdList") is not None
        else "origclientorderidlist"
    )
    if p.get(ids_name) is not None:
        raw_ids = batch_slots(p, ids_name, MAX_BATCH_CANCELS)
        ids: list[int | None] = []
        for raw in raw_ids:
            if isinstance(raw, bool) or not isinstance(raw, int | str):
                raise ApiError(-1130, "Data sent for parameter 'orderIdList' is not valid.")
            text = str(raw)
            if not text.isdigit() or len(text) > 19:
                raise ApiError(-1130, "Data sent for parameter 'orderIdList' is not valid.")
            ids.append(int(text))
        return ids, [None] * len(ids)
    if p.get(cids_name) is None:
        raise ApiError(
            -1102,
            "Param 'origClientOrderIdList' or 'orderIdList' must be sent, but both were "
            "empty/null!",
        )
    raw_cids = batch_slots(p, cids_name, MAX_BATCH_CANCELS)
    cids: list[str | None] = []
    for raw in raw_cids:
        if not isinstance(raw, str):
            raise ApiError(-1130, "Data sent for parameter 'origClientOrderIdList' is not valid.")
        if not CLIENT_ID_RE.fullmatch(raw):
            raise ApiError(-1130, "Data sent for parameter 'origClientOrderIdList' is not valid.")
        cids.append(raw)
    return [None] * len(cids), cids


@router.delete("/fapi/v1/batchOrders")
async def cancel_batch(request: Request) -> Response:
    call = await signed(request, 1)
    p = call.params
    symbol = p.require("symbol")
    spec_of(call, symbol)
    ids, cids = _id_list(p)
    history, account = call.state.accounts, call.account

    def cancel_all(ex: Exchange) -> list[OrderRecord | AlgoRecord | ApiError | ExchangeError]:
        done: list[OrderRecord | AlgoRecord | ApiError | ExchangeError] = []
        for order_id, cid in zip(ids, cids, strict=True):
            try:
                done.append(cancel(ex, history, account, symbol, order_id, cid))
            except (ApiError, ExchangeError) as exc:
                done.append(exc)
        return done

    def rendered(done: list[OrderRecord | AlgoRecord | ApiError | ExchangeError]) -> list[Any]:
        return [
            _slot_error(r)
            if isinstance(r, ApiError | ExchangeError)
            else render(history, account, r)
            for r in done
        ]

    return reply(request, await call.state.seq.call(cancel_all, rendered))


# -- lists ----------------------------------------------------------------------------------
@router.get("/fapi/v1/openOrders")
async def open_orders(request: Request) -> Response:
    call = await signed(request, 1)
    symbol = call.params.get("symbol")
    if symbol is None:
        charge(request, call, 39)  # Binance: 40 without a symbol
    else:
        spec_of(call, symbol)
    history, account = call.state.accounts, call.account

    def read(ex: Exchange) -> list[Any]:
        return [render(history, account, o) for o in history.open_orders(account, symbol)]

    return reply(request, await call.state.seq.call(read, write=False))


@router.get("/fapi/v1/allOrders")
async def all_orders(request: Request) -> Response:
    """Binance: orders >= `orderId` if sent, else the newest; within the time window."""
    call = await signed(request, 5)
    p = call.params
    symbol = p.require("symbol")
    spec_of(call, symbol)
    from_id = p.integer("orderId", low=1)
    start, end = time_window(p)
    limit = limit_of(p)
    history, account = call.state.accounts, call.account

    def read(ex: Exchange) -> list[Any]:
        rows = history.orders(account, symbol)
        chosen = history_page(rows, lambda o: o.order_id, from_id, start, end, limit)
        return [orders_wire.order_object(history.specs[symbol], o) for o in chosen]

    return reply(request, await call.state.seq.call(read, write=False))


@router.delete("/fapi/v1/allOpenOrders")
async def cancel_all_open(request: Request) -> Response:
    call = await signed(request, 1)
    symbol = call.params.require("symbol")
    spec_of(call, symbol)
    history, account = call.state.accounts, call.account

    def cancel_all(ex: Exchange) -> None:
        if history.open_orders(account, symbol):
            # One engine command pulls every book order of the account in the symbol (a
            # mass quote with no quotes); its algo orders stay, as on Binance.
            ex.mass_quote(account, symbol)

    await call.state.seq.call(cancel_all)
    return reply(request, CANCEL_ALL_DONE)


# -- trades ---------------------------------------------------------------------------------
@router.get("/fapi/v1/userTrades")
async def user_trades(request: Request) -> Response:
    """Binance: `fromId` (not with a time), else the time window (startTime alone: 7 days
    from it; endTime alone: 7 days to it; neither: the last 7 days, newest `limit`)."""
    call = await signed(request, 5)
    p = call.params
    symbol = p.require("symbol")
    spec = spec_of(call, symbol)
    order_id = p.integer("orderId", low=1)
    from_id = p.integer("fromId", low=0)
    start, end = time_window(p)
    if from_id is not None and (start is not None or end is not None):
        raise ApiError(-1128, "Combination of optional parameters invalid.")
    limit = limit_of(p)
    history, account = call.state.accounts, call.account

    def read(ex: Exchange) -> list[Any]:
        rows = history.trades(account, symbol)
        if order_id is not None:
            rows = [t for t in rows if t.order_id == order_id]
        if from_id is not None:
            chosen = [t for t in rows if t.trade_id >= from_id][:limit]
        elif start is not None or end is not None:
            low = start if start is not None else (end or 0) - SEVEN_DAYS_MS
            high = end if end is not None else low + SEVEN_DAYS_MS
            chosen = [t for t in rows if low <= t.time_ms <= high][:limit]
        else:
            low = history.now_ms - SEVEN_DAYS_MS
            chosen = [t for t in rows if t.time_ms >= low][-limit:]
        return [orders_wire.trade_row(spec, t) for t in chosen]

    return reply(request, await call.state.seq.call(read, write=False))


__all__ = ["router"]
