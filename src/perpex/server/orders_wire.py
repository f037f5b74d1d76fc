"""Orders, algo orders and trades as Binance USDⓈ-M writes them (BINANCE_API.md §3, §4.3, §4.4,
§6.3): the REST order object, the algo (conditional) order object, the userTrades row, and the
user stream's ORDER_TRADE_UPDATE and ALGO_UPDATE payloads.

Input: the records of `perpex.server.order_records` (ticks, lots, atoms, ms) and the market's
spec. Output: JSON-ready dicts; decimals are strings with the market's precision (`wire`),
USDT amounts 8 decimals, ids integers, times integer ms, booleans JSON booleans.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from perpex.core.markets import MarketSpec
from perpex.core.units import atoms_to_decimal
from perpex.server import wire
from perpex.server.order_records import (
    POSITION_SIDE,
    STP_MODE,
    AlgoRecord,
    OrderRecord,
    TradeRecord,
)
from perpex.views import avg_price

MARGIN_ASSET: Final = "USDT"
ALGO_TYPE: Final = "CONDITIONAL"
TRAILING: Final = "TRAILING_STOP_MARKET"
CALLBACK_RATE_UNIT: Final = Decimal("0.0001")  # callbackRate is in per cent: 1 ppm = 0.0001 %
# An algo order seen through the old /fapi/v1/order endpoints: Binance's statuses for it.
_LEGACY_STATUS: Final = {"NEW": "NEW", "CANCELED": "CANCELED", "EXPIRED": "EXPIRED"}


def side_name(side: int) -> str:
    return "BUY" if side > 0 else "SELL"


def average(spec: MarketSpec, quote_ticks: int, lots: int) -> str:
    """The average fill price: at least the tick's decimals, at most 8 (half-even)."""
    if not lots:
        return wire.price_ticks(spec, 0)
    exact = avg_price(spec, quote_ticks, lots).normalize()
    exponent = exact.as_tuple().exponent
    places = wire.places_of(spec.tick_size)
    if isinstance(exponent, int) and -exponent > places:
        places = -exponent
    return wire.fixed(exact, places)


def quote_money(spec: MarketSpec, quote_ticks: int) -> str:
    """Σ price x qty in USDT (8 decimals)."""
    return wire.money(atoms_to_decimal(quote_ticks * spec.atoms_per_tick_lot))


def callback_rate(ppm: int) -> str:
    return format((Decimal(ppm) * CALLBACK_RATE_UNIT).normalize(), "f") if ppm else "0"


def _trigger(spec: MarketSpec, ticks: int) -> str:
    return wire.price_ticks(spec, ticks)


# -- REST ----------------------------------------------------------------------------------
def order_object(spec: MarketSpec, o: OrderRecord, *, ack: bool = False) -> dict[str, Any]:
    """The §4.3 order object. `ack`: as it was accepted (newOrderRespType=ACK)."""
    filled, quote = (0, 0) if ack else (o.filled_lots, o.quote_ticks)
    executed = wire.qty_lots(spec, filled)
    data: dict[str, Any] = {
        "orderId": o.order_id,
        "symbol": o.symbol,
        "status": "NEW" if ack else o.status,
        "clientOrderId": o.client_order_id,
        "price": wire.price_ticks(spec, o.price_ticks),
        "avgPrice": average(spec, quote, filled),
        "origQty": wire.qty_lots(spec, o.qty_lots),
        "executedQty": executed,
        "cumQty": executed,
        "cumQuote": quote_money(spec, quote),
        "timeInForce": o.time_in_force,
        "type": o.type,
        "reduceOnly": o.reduce_only,
        "closePosition": o.close_position,
        "side": side_name(o.side),
        "positionSide": POSITION_SIDE,
        "stopPrice": _trigger(spec, o.stop_price_ticks),
        "workingType": o.working_type,
        "priceProtect": False,
        "origType": o.orig_type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": o.stp_mode,
        "goodTillDate": 0,
        "time": o.created_ms,
        "updateTime": o.created_ms if ack else o.updated_ms,
    }
    if o.orig_type == TRAILING:
        data["activatePrice"] = _trigger(spec, o.activation_price_ticks)
        data["priceRate"] = callback_rate(o.callback_rate_ppm)
    return data


def algo_as_order_object(
    spec: MarketSpec, a: AlgoRecord, actual: OrderRecord | None
) -> dict[str, Any]:
    """An algo order placed through POST /fapi/v1/order (older clients), as that endpoint
    answers: the order object with the algo id; once fired, the status and fills of the order
    it placed (Binance's conditional orders kept one id through their life)."""
    if actual is not None:
        status, filled, quote = actual.status, actual.filled_lots, actual.quote_ticks
        updated = max(a.updated_ms, actual.updated_ms)
    else:
        status = _LEGACY_STATUS.get(a.status, "EXPIRED")
        filled = quote = 0
        updated = a.updated_ms
    executed = wire.qty_lots(spec, filled)
    data: dict[str, Any] = {
        "orderId": a.algo_id,
        "symbol": a.symbol,
        "status": status,
        "clientOrderId": a.client_algo_id,
        "price": wire.price_ticks(spec, a.price_ticks),
        "avgPrice": average(spec, quote, filled),
        "origQty": wire.qty_lots(spec, a.qty_lots),
        "executedQty": executed,
        "cumQty": executed,
        "cumQuote": quote_money(spec, quote),
        "timeInForce": a.time_in_force,
        "type": a.type,
        "reduceOnly": a.reduce_only,
        "closePosition": a.close_position,
        "side": side_name(a.side),
        "positionSide": POSITION_SIDE,
        "stopPrice": _trigger(spec, a.trigger_price_ticks),
        "workingType": a.working_type,
        "priceProtect": False,
        "origType": a.type,
        "priceMatch": "NONE",
        "selfTradePreventionMode": STP_MODE,
        "goodTillDate": 0,
        "time": a.created_ms,
        "updateTime": updated,
    }
    if a.type == TRAILING:
        data["activatePrice"] = _trigger(spec, a.activation_price_ticks)
        data["priceRate"] = callback_rate(a.callback_rate_ppm)
    return data


def algo_object(spec: MarketSpec, a: AlgoRecord, actual: OrderRecord | None) -> dict[str, Any]:
    """The §4.4 algo order object; `actual` is the order it placed when it fired."""
    filled = actual.filled_lots if actual is not None else 0
    quote = actual.quote_ticks if actual is not None else 0
    return {
        "algoId": a.algo_id,
        "clientAlgoId": a.client_algo_id,
        "algoType": ALGO_TYPE,
        "orderType": a.type,
        "symbol": a.symbol,
        "side": side_name(a.side),
        "positionSide": POSITION_SIDE,
        "timeInForce": a.time_in_force,
        "quantity": wire.qty_lots(spec, a.qty_lots),
        "algoStatus": a.status,
        "actualOrderId": str(a.actual_order_id) if a.actual_order_id else "",
        "actualPrice": average(spec, quote, filled),
        "executedQty": wire.qty_lots(spec, filled),
        "avgPrice": average(spec, quote, filled),
        "triggerPrice": _trigger(spec, a.trigger_price_ticks),
        "price": wire.price_ticks(spec, a.price_ticks),
        "icebergQuantity": None,
        "selfTradePreventionMode": STP_MODE,
        "workingType": a.working_type,
        "priceMatch": "NONE",
        "closePosition": a.close_position,
        "priceProtect": False,
        "reduceOnly": a.reduce_only,
        "activatePrice": _trigger(spec, a.activation_price_ticks),
        "callbackRate": callback_rate(a.callback_rate_ppm),
        "createTime": a.created_ms,
        "updateTime": a.updated_ms,
        "triggerTime": a.trigger_ms,
        "goodTillDate": 0,
    }


def trade_row(spec: MarketSpec, t: TradeRecord) -> dict[str, Any]:
    """One GET /fapi/v1/userTrades row."""
    return {
        "id": t.trade_id,
        "orderId": t.order_id,
        "symbol": t.symbol,
        "side": side_name(t.side),
        "price": wire.price_ticks(spec, t.price_ticks),
        "qty": wire.qty_lots(spec, t.qty_lots),
        "quoteQty": quote_money(spec, t.price_ticks * t.qty_lots),
        "commission": wire.money(atoms_to_decimal(t.fee_atoms)),
        "commissionAsset": MARGIN_ASSET,
        "realizedPnl": wire.money(atoms_to_decimal(t.realized_pnl_atoms)),
        "marginAsset": MARGIN_ASSET,
        "positionSide": POSITION_SIDE,
        "buyer": t.side > 0,
        "maker": t.maker,
        "time": t.time_ms,
    }


# -- the user stream -----------------------------------------------------------------------
def order_trade_update(
    spec: MarketSpec,
    o: OrderRecord,
    execution: str,
    fill: TradeRecord | None,
    now_ms: int,
    bids_quote_ticks: int,
    asks_quote_ticks: int,
) -> dict[str, Any]:
    """ORDER_TRADE_UPDATE (§6.3): `execution` is NEW, TRADE, CANCELED, EXPIRED or AMENDMENT;
    `fill` the trade of a TRADE; the quote ticks are the account's open orders' notional in
    the symbol per side (Binance's `b` and `a`)."""
    last_lots = fill.qty_lots if fill is not None else 0
    last_price = fill.price_ticks if fill is not None else 0
    return {
        "e": "ORDER_TRADE_UPDATE",
        "E": now_ms,
        "T": now_ms,
        "o": {
            "s": o.symbol,
            "c": o.client_order_id,
            "S": side_name(o.side),
            "o": o.type,
            "f": o.time_in_force,
            "q": wire.qty_lots(spec, o.qty_lots),
            "p": wire.price_ticks(spec, o.price_ticks),
            "ap": average(spec, o.quote_ticks, o.filled_lots),
            "sp": _trigger(spec, o.stop_price_ticks),
            "x": execution,
            "X": o.status,
            "i": o.order_id,
            "l": wire.qty_lots(spec, last_lots),
            "z": wire.qty_lots(spec, o.filled_lots),
            "L": wire.price_ticks(spec, last_price),
            "N": MARGIN_ASSET,
            "n": wire.money(atoms_to_decimal(fill.fee_atoms if fill is not None else 0)),
            "T": fill.time_ms if fill is not None else now_ms,
            "t": fill.trade_id if fill is not None else 0,
            "b": quote_money(spec, bids_quote_ticks),
            "a": quote_money(spec, asks_quote_ticks),
            "m": fill.maker if fill is not None else False,
            "R": o.reduce_only,
            "wt": o.working_type,
            "ot": o.orig_type,
            "ps": POSITION_SIDE,
            "cp": o.close_position,
            "AP": _trigger(spec, o.activation_price_ticks),
            "cr": callback_rate(o.callback_rate_ppm),
            "pP": False,
            "si": 0,
            "ss": 0,
            "rp": wire.money(atoms_to_decimal(fill.realized_pnl_atoms if fill is not None else 0)),
            "V": o.stp_mode,
            "pm": "NONE",
            "gtd": 0,
        },
    }


def algo_update(
    spec: MarketSpec, a: AlgoRecord, actual: OrderRecord | None, now_ms: int
) -> dict[str, Any]:
    """ALGO_UPDATE (§6.3): the algo order's status; once fired, the order it placed."""
    filled = actual.filled_lots if actual is not None else 0
    quote = actual.quote_ticks if actual is not None else 0
    return {
        "e": "ALGO_UPDATE",
        "T": now_ms,
        "E": now_ms,
        "o": {
            "caid": a.client_algo_id,
            "aid": a.algo_id,
            "at": ALGO_TYPE,
            "o": a.type,
            "s": a.symbol,
            "S": side_name(a.side),
            "ps": POSITION_SIDE,
            "f": a.time_in_force,
            "q": wire.qty_lots(spec, a.qty_lots),
            "X": a.status,
            "ai": str(a.actual_order_id) if a.actual_order_id else "",
            "ap": average(spec, quote, filled),
            "aq": wire.qty_lots(spec, filled),
            "act": actual.type if actual is not None else "0",
            "tp": _trigger(spec, a.trigger_price_ticks),
            "p": wire.price_ticks(spec, a.price_ticks),
            "V": STP_MODE,
            "wt": a.working_type,
            "pm": "NONE",
            "cp": a.close_position,
            "pP": False,
            "R": a.reduce_only,
            "tt": a.trigger_ms,
            "gtd": 0,
            "rm": a.reject_reason,
        },
    }


__all__ = [
    "ALGO_TYPE",
    "MARGIN_ASSET",
    "algo_as_order_object",
    "algo_object",
    "algo_update",
    "average",
    "callback_rate",
    "order_object",
    "order_trade_update",
    "quote_money",
    "side_name",
    "trade_row",
]
