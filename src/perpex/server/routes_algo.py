"""Algo (conditional) order routes: Binance's /fapi/v1/algoOrder family (BINANCE_API.md §3,
§4.4), where ccxt 4.5 sends every STOP, STOP_MARKET, TAKE_PROFIT, TAKE_PROFIT_MARKET and
TRAILING_STOP_MARKET order.

An algo order is the engine's conditional order; its id is the engine's (book and conditional
orders share one counter). Once it fires it reads TRIGGERED with `actualOrderId`, the order
it placed (queryable on GET /fapi/v1/order), and FINISHED when that order is done. Another
account's algo id is answered like an unknown one (-2013 on a query, -2011 on a cancel).
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import APIRouter, Request, Response

from perpex.errors import ExchangeError
from perpex.exchange import Exchange
from perpex.server import orders_wire
from perpex.server.account_history import AccountHistory
from perpex.server.errors import NO_SUCH_ORDER, UNKNOWN_ORDER, ApiError
from perpex.server.http import reply, signed
from perpex.server.order_actions import charge, place, spec_of
from perpex.server.order_records import AlgoRecord
from perpex.server.trade_params import (
    algo_args,
    find_algo,
    history_page,
    limit_of,
    require_one,
    time_window,
)

router = APIRouter()

CANCEL_ALL_DONE: Final = {"code": 200, "msg": "The operation of cancel all open order is done."}


def algo_view(history: AccountHistory, account: str, a: AlgoRecord) -> dict[str, Any]:
    actual = history.order(account, a.actual_order_id) if a.actual_order_id else None
    return orders_wire.algo_object(history.specs[a.symbol], a, actual)


@router.post("/fapi/v1/algoOrder")
async def new_algo_order(request: Request) -> Response:
    call = await signed(request, 1, orders=1)
    args = algo_args(call.params)
    history, account = call.state.accounts, call.account

    def rendered(algo_id: int) -> Any:
        found = history.algo(account, algo_id)
        if found is None:  # the history sees every event of the job: a bug if not
            raise ApiError(-1000, "An unknown error occured while processing the request.", 500)
        return algo_view(history, account, found)

    data = await call.state.seq.call(lambda ex: place(ex, history, account, args), rendered)
    return reply(request, data)


@router.get("/fapi/v1/algoOrder")
async def query_algo_order(request: Request) -> Response:
    call = await signed(request, 1)
    p = call.params
    symbol = p.get("symbol")
    if symbol is not None:
        spec_of(call, symbol)
    algo_id, cid = require_one(p, "algoId", "clientAlgoId")
    history, account = call.state.accounts, call.account

    def read(ex: Exchange) -> Any:
        found = find_algo(history, account, algo_id, cid)
        if found is None or (symbol is not None and found.symbol != symbol):
            raise ApiError.of(NO_SUCH_ORDER)
        return algo_view(history, account, found)

    return reply(request, await call.state.seq.call(read, write=False))


def cancel_algo(ex: Exchange, account: str, a: AlgoRecord) -> None:
    ex.cancel_order(account, a.symbol, order_id=a.algo_id)


@router.delete("/fapi/v1/algoOrder")
async def cancel_algo_order(request: Request) -> Response:
    call = await signed(request, 1)
    p = call.params
    symbol = p.get("symbol")
    if symbol is not None:
        spec_of(call, symbol)
    algo_id, cid = require_one(p, "algoId", "clientAlgoId")
    history, account = call.state.accounts, call.account

    def cancel(ex: Exchange) -> dict[str, Any]:
        found = find_algo(history, account, algo_id, cid)
        if found is None or not found.is_open or (symbol is not None and found.symbol != symbol):
            raise ApiError.of(UNKNOWN_ORDER)
        cancel_algo(ex, account, found)
        return {
            "algoId": found.algo_id,
            "clientAlgoId": found.client_algo_id,
            "code": "200",
            "msg": "success",
        }

    return reply(request, await call.state.seq.call(cancel))


@router.get("/fapi/v1/openAlgoOrders")
async def open_algo_orders(request: Request) -> Response:
    call = await signed(request, 1)
    p = call.params
    symbol = p.get("symbol")
    if symbol is None:
        charge(request, call, 39)  # Binance: 40 without a symbol
    else:
        spec_of(call, symbol)
    algo_type = p.get("algoType")
    if algo_type is not None and algo_type != "CONDITIONAL":
        raise ApiError(-1130, "Data sent for parameter 'algoType' is not valid.")
    only_id = p.integer("algoId", low=1)
    history, account = call.state.accounts, call.account

    def read(ex: Exchange) -> list[Any]:
        return [
            algo_view(history, account, a)
            for a in history.open_algos(account, symbol)
            if only_id is None or a.algo_id == only_id
        ]

    return reply(request, await call.state.seq.call(read, write=False))


@router.get("/fapi/v1/allAlgoOrders")
async def all_algo_orders(request: Request) -> Response:
    """As allOrders: algo orders >= `algoId` if sent, else the newest; in the time window."""
    call = await signed(request, 5)
    p = call.params
    symbol = p.require("symbol")
    spec_of(call, symbol)
    from_id = p.integer("algoId", low=1)
    start, end = time_window(p)
    limit = limit_of(p)
    history, account = call.state.accounts, call.account

    def read(ex: Exchange) -> list[Any]:
        rows = history.algos(account, symbol)
        chosen = history_page(rows, lambda a: a.algo_id, from_id, start, end, limit)
        return [algo_view(history, account, a) for a in chosen]

    return reply(request, await call.state.seq.call(read, write=False))


@router.delete("/fapi/v1/algoOpenOrders")
async def cancel_all_algo(request: Request) -> Response:
    call = await signed(request, 1)
    symbol = call.params.require("symbol")
    spec_of(call, symbol)
    history, account = call.state.accounts, call.account

    def cancel_all(ex: Exchange) -> None:
        for a in history.open_algos(account, symbol):
            try:
                cancel_algo(ex, account, a)
            except ExchangeError:  # gone meanwhile (fired by an earlier cancel's effects)
                continue

    await call.state.seq.call(cancel_all)
    return reply(request, CANCEL_ALL_DONE)


__all__ = ["algo_view", "router"]
