"""The WebSocket wire: stream names (their grammar) and the messages each stream carries.

Shapes follow Binance USDⓈ-M (BINANCE_API.md §6.2, §6.3): decimals are strings in the
market's precision (prices to the tick, quantities to the step, money 8 dp), ids and times
are integers (times in ms). Builders here are pure: they take engine integers (ticks, lots)
or the facade's decimal views and return plain dicts, encoded once by the hub.

Stream names are Binance's: `<symbol>@<channel>` with a lower-case symbol, or `!<channel>`
for all symbols. `parse_stream` accepts exactly the channels the server feeds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from perpex.core.book import BUY, SELL
from perpex.core.markets import MarketSpec
from perpex.core.messages import TradeExecuted
from perpex.server import wire
from perpex.views import Account, FundingRate, Position

ASSET: Final = "USDT"
KLINE_INTERVALS: Final = (
    "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M",
)  # fmt: skip
MARK_SLOW_MS: Final = 3000  # `@markPrice` and `!markPrice@arr`; `@1s` variants every 1000
_ZERO: Final = Decimal(0)
_SPEED: Final = {"": 250, "@100ms": 100, "@500ms": 500}  # partial depth's push period, ms
_SYMBOL_STREAM: Final = re.compile(
    r"(?P<symbol>[A-Za-z0-9]{1,32})@(?P<channel>aggTrade|trade|bookTicker|forceOrder|"
    r"miniTicker|ticker|markPrice(?P<mark1s>@1s)?|depth(?P<levels>5|10|20)?"
    r"(?P<speed>@100ms|@500ms)?|kline_(?P<interval>[0-9]{1,2}[mhdwM]))"
)
_ALL_STREAMS: Final = {
    "!markPrice@arr": ("markPrice", MARK_SLOW_MS),
    "!markPrice@arr@1s": ("markPrice", 1000),
    "!forceOrder@arr": ("forceOrder", 0),
    "!bookTicker": ("bookTicker", 0),
    "!ticker@arr": ("ticker", 1000),
    "!miniTicker@arr": ("miniTicker", 1000),
}


@dataclass(frozen=True)
class Stream:
    """A parsed stream name. `symbol` is the exchange's (upper case), None for `!...` streams.

    kind: trade, aggTrade, bookTicker, forceOrder, miniTicker, ticker, markPrice, depth (the
    diff stream), partialDepth (`levels` 5/10/20), kline (`interval`). `period_ms` is how
    often a periodic stream is pushed (markPrice, partial depth, the `!...@arr` tickers)."""

    name: str  # canonical: the symbol in lower case, the channel as Binance spells it
    kind: str
    symbol: str | None
    levels: int = 0
    period_ms: int = 0
    interval: str = ""


def parse_stream(name: str, symbols: Mapping[str, str]) -> Stream | None:
    """The stream `name` names, or None. `symbols` maps lower-case symbols to the exchange's."""
    if name.startswith("!"):
        known = _ALL_STREAMS.get(name)
        if known is None:
            return None
        return Stream(name, known[0], None, period_ms=known[1])
    match = _SYMBOL_STREAM.fullmatch(name)
    if match is None:
        return None
    symbol = symbols.get(match["symbol"].lower())
    if symbol is None:
        return None
    channel = match["channel"]
    canonical = f"{match['symbol'].lower()}@{channel}"
    if channel.startswith("markPrice"):
        period = 1000 if match["mark1s"] else MARK_SLOW_MS
        return Stream(canonical, "markPrice", symbol, period_ms=period)
    if channel.startswith("depth"):
        speed_ms = _SPEED[match["speed"] or ""]
        if match["levels"]:
            levels = int(match["levels"])
            return Stream(canonical, "partialDepth", symbol, levels=levels, period_ms=speed_ms)
        return Stream(canonical, "depth", symbol, period_ms=speed_ms)
    if channel.startswith("kline_"):
        if match["interval"] not in KLINE_INTERVALS:
            return None
        return Stream(canonical, "kline", symbol, interval=match["interval"])
    return Stream(canonical, channel, symbol)


# -- replies to requests on the socket --------------------------------------------------------
def result(request_id: object, value: object = None) -> dict[str, Any]:
    return {"result": value, "id": request_id}


def error(request_id: object, code: int, msg: str) -> dict[str, Any]:
    """Binance's WebSocket error: `{"error": {"code": 2, "msg": "Invalid request: ..."}, "id"}`."""
    return {"error": {"code": code, "msg": msg}, "id": request_id}


# -- market streams ---------------------------------------------------------------------------
def levels(spec: MarketSpec, rows: Sequence[tuple[int, int]]) -> list[list[str]]:
    """[(price_ticks, qty_lots)] as Binance's [["price", "qty"]] (qty "0" deletes a level)."""
    return [[wire.price_ticks(spec, p), wire.qty_lots(spec, q)] for p, q in rows]


def depth_update(
    spec: MarketSpec,
    event_ms: int,
    tx_ms: int,
    ids: tuple[int, int, int],
    bids: Sequence[tuple[int, int]],
    asks: Sequence[tuple[int, int]],
) -> dict[str, Any]:
    """Diff or partial depth: `ids` = (U first, u final, pu previous final) update ids."""
    first_id, final_id, previous_id = ids
    return {
        "e": "depthUpdate",
        "E": event_ms,
        "T": tx_ms,
        "s": spec.symbol,
        "U": first_id,
        "u": final_id,
        "pu": previous_id,
        "b": levels(spec, bids),
        "a": levels(spec, asks),
    }


def trade(spec: MarketSpec, t: TradeExecuted, event_ms: int, trade_ms: int) -> dict[str, Any]:
    return {
        "e": "trade",
        "E": event_ms,
        "T": trade_ms,
        "s": spec.symbol,
        "t": t.trade_id,
        "p": wire.price_ticks(spec, t.price_ticks),
        "q": wire.qty_lots(spec, t.qty_lots),
        "X": "MARKET",
        "m": t.taker_side == SELL,  # the buyer is the maker when the taker sells
    }


def agg_trade(
    spec: MarketSpec,
    trades: Sequence[TradeExecuted],
    event_ms: int,
    trade_ms: int,
) -> dict[str, Any]:
    """Consecutive fills of one taker order at one price; `a` is the first trade's id."""
    first, last = trades[0], trades[-1]
    qty = wire.qty_lots(spec, sum(t.qty_lots for t in trades))
    return {
        "e": "aggTrade",
        "E": event_ms,
        "a": first.trade_id,
        "s": spec.symbol,
        "p": wire.price_ticks(spec, first.price_ticks),
        "q": qty,
        "nq": qty,
        "f": first.trade_id,
        "l": last.trade_id,
        "T": trade_ms,
        "m": first.taker_side == SELL,
    }


def book_ticker(
    spec: MarketSpec,
    update_id: int,
    event_ms: int,
    tx_ms: int,
    bid: tuple[int, int],
    ask: tuple[int, int],
) -> dict[str, Any]:
    """Best bid and ask; an empty side is ("0", "0") as (0, 0) ticks and lots."""
    return {
        "e": "bookTicker",
        "u": update_id,
        "s": spec.symbol,
        "b": wire.price_ticks(spec, bid[0]),
        "B": wire.qty_lots(spec, bid[1]),
        "a": wire.price_ticks(spec, ask[0]),
        "A": wire.qty_lots(spec, ask[1]),
        "T": tx_ms,
        "E": event_ms,
    }


def mark_price(spec: MarketSpec, rate: FundingRate, event_ms: int) -> dict[str, Any]:
    mark = wire.price(spec, rate.mark_price)
    return {
        "e": "markPriceUpdate",
        "E": event_ms,
        "s": spec.symbol,
        "p": mark,
        "i": wire.price(spec, rate.index_price),
        "P": mark,  # estimated settle price: the mark (Binance: only meaningful near delivery)
        "r": wire.rate(rate.predicted_funding_rate),
        "T": wire.ms(rate.next_funding_time_ns),
    }


def kline(
    symbol: str,
    interval: str,
    row: Sequence[Any],
    event_ms: int,
    closed: bool,
    trade_ids: tuple[int, int],
) -> dict[str, Any]:
    """From the REST kline row [t, o, h, l, c, v, T, q, n, V, Q, "0"]; `trade_ids` (first,
    last) of the candle, (-1, -1) when unknown (no trade, or before the stream watched)."""
    return {
        "e": "kline",
        "E": event_ms,
        "s": symbol,
        "k": {
            "t": row[0],
            "T": row[6],
            "s": symbol,
            "i": interval,
            "f": trade_ids[0],
            "L": trade_ids[1],
            "o": row[1],
            "c": row[4],
            "h": row[2],
            "l": row[3],
            "v": row[5],
            "n": row[8],
            "x": closed,
            "q": row[7],
            "V": row[9],
            "Q": row[10],
            "B": "0",
        },
    }


def ticker(t: Mapping[str, Any], event_ms: int) -> dict[str, Any]:
    """`24hrTicker` from the REST `ticker/24hr` object."""
    return {
        "e": "24hrTicker",
        "E": event_ms,
        "s": t["symbol"],
        "p": t["priceChange"],
        "P": t["priceChangePercent"],
        "w": t["weightedAvgPrice"],
        "c": t["lastPrice"],
        "Q": t["lastQty"],
        "o": t["openPrice"],
        "h": t["highPrice"],
        "l": t["lowPrice"],
        "v": t["volume"],
        "q": t["quoteVolume"],
        "O": t["openTime"],
        "C": t["closeTime"],
        "F": t["firstId"],
        "L": t["lastId"],
        "n": t["count"],
    }


def mini_ticker(t: Mapping[str, Any], event_ms: int) -> dict[str, Any]:
    return {
        "e": "24hrMiniTicker",
        "E": event_ms,
        "s": t["symbol"],
        "c": t["lastPrice"],
        "o": t["openPrice"],
        "h": t["highPrice"],
        "l": t["lowPrice"],
        "v": t["volume"],
        "q": t["quoteVolume"],
    }


@dataclass
class ForceOrder:
    """A liquidation order as the batch saw it: its accepted size and limit, and its fills."""

    symbol: str
    side: int
    qty_lots: int
    price_ticks: int
    filled_lots: int = 0
    quote_ticks_lots: int = 0  # sum of price x lots of the fills
    last_lots: int = 0
    time_ms: int = 0


def force_order(spec: MarketSpec, order: ForceOrder, event_ms: int) -> dict[str, Any]:
    average = (
        spec.price_to_decimal(order.quote_ticks_lots) / order.filled_lots
        if order.filled_lots
        else _ZERO
    )
    return {
        "e": "forceOrder",
        "E": event_ms,
        "o": {
            "s": spec.symbol,
            "S": "BUY" if order.side == BUY else "SELL",
            "o": "LIMIT",
            "f": "IOC",
            "q": wire.qty_lots(spec, order.qty_lots),
            "p": wire.price_ticks(spec, order.price_ticks),
            "ap": wire.price(spec, average),
            "X": "FILLED" if order.filled_lots >= order.qty_lots else "EXPIRED",
            "l": wire.qty_lots(spec, order.last_lots),
            "z": wire.qty_lots(spec, order.filled_lots),
            "T": order.time_ms,
        },
    }


# -- user data ----------------------------------------------------------------------------------
def balance_row(a: Account, change: Decimal) -> dict[str, str]:
    return {
        "a": ASSET,
        "wb": wire.money(a.wallet_balance),
        "cw": wire.money(a.cross_wallet_balance),
        "bc": wire.money(change),
    }


def break_even(spec: MarketSpec, pos: Position) -> Decimal:
    """Where closing pays back the entry and both taker fees (as the REST positionRisk)."""
    if not pos.size:
        return _ZERO
    fee = Decimal(spec.taker_fee_ppm) / Decimal(1_000_000)
    if pos.size > 0:
        return pos.entry_price * (1 + fee) / (1 - fee)
    return pos.entry_price * (1 - fee) / (1 + fee)


def position_row(spec: MarketSpec, pos: Position) -> dict[str, str]:
    isolated = pos.margin_mode == "ISOLATED"
    return {
        "s": spec.symbol,
        "pa": wire.qty(spec, pos.size),
        "ep": wire.fixed(pos.entry_price, 8),
        "bep": wire.fixed(break_even(spec, pos), 8),
        "cr": "0",  # accumulated realized PnL: not kept per position
        "up": wire.money(pos.unrealized_pnl),
        "mt": "isolated" if isolated else "cross",
        "iw": wire.money(pos.isolated_margin if isolated else _ZERO),
        "ps": "BOTH",
    }


def account_update(
    event_ms: int,
    tx_ms: int,
    reason: str,
    balances: list[dict[str, str]],
    positions: list[dict[str, str]],
) -> dict[str, Any]:
    return {
        "e": "ACCOUNT_UPDATE",
        "E": event_ms,
        "T": tx_ms,
        "a": {"m": reason, "B": balances, "P": positions},
    }


def account_config_update(event_ms: int, tx_ms: int, symbol: str, leverage: int) -> dict[str, Any]:
    return {
        "e": "ACCOUNT_CONFIG_UPDATE",
        "E": event_ms,
        "T": tx_ms,
        "ac": {"s": symbol, "l": leverage},
    }


def margin_call(
    event_ms: int, account: Account, rows: list[tuple[MarketSpec, Position]]
) -> dict[str, Any]:
    return {
        "e": "MARGIN_CALL",
        "E": event_ms,
        "cw": wire.money(account.cross_wallet_balance),
        "p": [
            {
                "s": spec.symbol,
                "ps": "BOTH",
                "pa": wire.qty(spec, pos.size),
                "mt": pos.margin_mode,
                "iw": wire.money(pos.isolated_margin if pos.margin_mode == "ISOLATED" else _ZERO),
                "mp": wire.price(spec, pos.mark_price),
                "up": wire.money(pos.unrealized_pnl),
                "mm": wire.money(pos.maintenance_margin),
            }
            for spec, pos in rows
        ],
    }


def listen_key_expired(key: str, event_ms: int) -> dict[str, Any]:
    return {"e": "listenKeyExpired", "E": event_ms, "listenKey": key}


__all__ = [
    "ASSET",
    "KLINE_INTERVALS",
    "MARK_SLOW_MS",
    "ForceOrder",
    "Stream",
    "account_config_update",
    "account_update",
    "agg_trade",
    "balance_row",
    "book_ticker",
    "break_even",
    "depth_update",
    "error",
    "force_order",
    "kline",
    "levels",
    "listen_key_expired",
    "margin_call",
    "mark_price",
    "mini_ticker",
    "parse_stream",
    "position_row",
    "result",
    "ticker",
    "trade",
]
