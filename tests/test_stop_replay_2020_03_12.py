"""Black Thursday, replayed: a 20x long with a stop 2 % below entry through the 2020-03-12
10:00 UTC hourly candle of Binance BTCUSDT perpetual (open 7,358.51, high 7,368.50, low
5,199.17, close 5,981.07: the hour that took 29 % off the price).

Data: ../shared/data/binance_usdm_BTCUSDT_1h_ohlcv_2019-09_2026-05.feather (Binance USDⓈ-M
klines). Intrabar path for a red candle: open → low → high → close (the high is 10 USDT above
the open, so the order of the first two legs does not change what happens to the long), walked
in steps of at most 0.25 % of the price; the mark follows the index (mark_price="index").

The book is thin on purpose: before every step the market maker (bob) pulls his quotes and
shows 0.2 BTC at each of 5 levels, 0.1 % apart, on both sides of the next price. alice buys
1 BTC at the open (isolated, 20x; brackets of 2024-10-24: under 50,000 USDT of notional MMR
0.4 %, cum 0) with a close-position STOP_MARKET 2 % below. Her stop fires at the first step at
or below it and sells the 1 BTC down bob's five levels; without the stop the same path
liquidates her.

BTCUSDT in 2020 quoted in 0.01 steps, so the market here has tick 0.01 (step 0.001, the
default fees: taker 0.05 %, maker 0.02 %).
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Final

import pytest

from perpex import Exchange, Market
from perpex.core.messages import (
    ConditionalOrderTriggered,
    Event,
    IndexUpdated,
    LiquidationTriggered,
    TradeExecuted,
)
from perpex.defaults import default_brackets

DATA: Final = Path("/work/shared/data/binance_usdm_BTCUSDT_1h_ohlcv_2019-09_2026-05.feather")
BTC: Final = "BTCUSDT"
TICK: Final = Decimal("0.01")
TAKER_FEE: Final = Decimal("0.0005")
ATOM: Final = Decimal("0.000001")
STEP_PPM: Final = 2_500  # path steps of at most 0.25 %
LEVELS: Final = 5  # bob's book: 5 levels a side, 0.1 % apart, 0.2 BTC each
LEVEL_QTY: Final = Decimal("0.2")
LEVEL_GAP_PPM: Final = 1_000


def candle_2020_03_12_10h() -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(open, high, low, close) of the 10:00 UTC candle, read from the shared data set."""
    feather = pytest.importorskip("pyarrow.feather")
    if not DATA.exists():
        pytest.skip(f"{DATA} not present")
    table = feather.read_table(DATA).to_pydict()
    for i, stamp in enumerate(table["date"]):
        if (stamp.year, stamp.month, stamp.day, stamp.hour) == (2020, 3, 12, 10):
            # the file stores doubles; their shortest repr is the exchange's 2-decimal price
            return tuple(Decimal(repr(table[c][i])) for c in ("open", "high", "low", "close"))  # type: ignore[return-value]
    raise AssertionError("2020-03-12 10:00 missing from the data set")


def to_ticks(price: Decimal) -> int:
    assert price == price.quantize(TICK), price
    return int(price / TICK)


def path_ticks(candle: tuple[Decimal, Decimal, Decimal, Decimal]) -> list[int]:
    """open → low → high → close, every leg in equal steps of at most 0.25 %, on the tick."""
    open_, high, low, close = (to_ticks(p) for p in candle)
    points = [open_]
    for target in (low, high, close):
        start = points[-1]
        # steps: ceil(|distance| / (0.25 % of the start)), exact in integers
        n = max(1, -(-abs(target - start) * 1_000_000 // (start * STEP_PPM)))
        points += [start + (target - start) * i // n for i in range(1, n + 1)]
    return points


def market() -> Market:
    return Market(symbol=BTC, tick_size="0.01", step_size="0.001",
                  brackets=list(default_brackets()[BTC]), price_precision=2,
                  quantity_precision=3, min_price="100")  # fmt: skip


def quote(ex: Exchange, price_ticks: int) -> None:
    """bob pulls his quotes and shows 5 levels a side around `price_ticks`."""
    for order in ex.open_orders("bob"):
        ex.cancel_order("bob", BTC, order.order_id)
    for i in range(1, LEVELS + 1):
        bid = price_ticks * (1_000_000 - i * LEVEL_GAP_PPM) // 1_000_000  # floor: below
        ask = -(-price_ticks * (1_000_000 + i * LEVEL_GAP_PPM) // 1_000_000)  # ceil: above
        ex.place_order("bob", BTC, "BUY", "LIMIT", LEVEL_QTY, bid * TICK)
        ex.place_order("bob", BTC, "SELL", "LIMIT", LEVEL_QTY, ask * TICK)


def replay(with_stop: bool) -> tuple[Exchange, list[Event], list[int], Decimal, Decimal]:
    """(exchange, events of the path, path, stop price, liquidation price at entry)"""
    candle = candle_2020_03_12_10h()
    path = path_ticks(candle)
    entry = candle[0]
    ex = Exchange(markets=[market()], mark_price="index")
    ex.set_index_price(BTC, entry)
    ex.deposit("alice", "1000")
    ex.deposit("bob", "10000000")
    ex.set_margin_mode("alice", BTC, "ISOLATED")
    ex.set_leverage("alice", BTC, 20)
    ex.place_order("bob", BTC, "SELL", "LIMIT", "1", entry)
    assert ex.place_order("alice", BTC, "BUY", "LIMIT", "1", entry).status == "FILLED"
    stop = (entry * Decimal("0.98")).quantize(TICK, rounding=ROUND_FLOOR)
    liquidation = ex.position("alice", BTC).liquidation_price
    assert liquidation is not None
    if with_stop:
        ex.place_order("alice", BTC, "SELL", "STOP_MARKET", stop_price=stop, close_position=True)
    start = len(ex.events())
    for price_ticks in path[1:]:
        quote(ex, price_ticks)
        ex.set_index_price(BTC, price_ticks * TICK)
    ex.check_invariants()
    return ex, ex.events()[start:], path, stop, liquidation


def fee(notional: Decimal) -> Decimal:
    return (notional * TAKER_FEE).quantize(ATOM, rounding=ROUND_CEILING)


def test_the_stop_fills_with_slippage_and_the_long_survives_black_thursday() -> None:
    ex, events, path, stop, _ = replay(with_stop=True)
    entry = Decimal("7358.51")
    assert stop == Decimal("7211.33")  # 7,358.51 × 0.98 = 7,211.3398, down to the tick
    assert not [e for e in events if isinstance(e, LiquidationTriggered)]
    (fired,) = [e for e in events if isinstance(e, ConditionalOrderTriggered)]
    first_through = next(p for p in path if p <= to_ticks(stop))
    assert fired.price_ticks == first_through
    fired_at = first_through * TICK
    fills = [
        (Decimal(t.qty_lots) / 1000, t.price_ticks * TICK)
        for t in events
        if isinstance(t, TradeExecuted) and t.taker_order_id == fired.placed_order_id
    ]
    # bob's five bid levels below the step that fired it, 0.2 BTC each
    expected = [
        (LEVEL_QTY, (first_through * (1_000_000 - i * LEVEL_GAP_PPM) // 1_000_000) * TICK)
        for i in range(1, LEVELS + 1)
    ]
    assert fills == expected
    average = sum(q * p for q, p in fills)
    realized = average - entry
    fees = fee(entry) + sum(fee(q * p) for q, p in fills)
    assert ex.position("alice", BTC).size == 0
    assert ex.account("alice").wallet_balance == 1000 + realized - fees
    print(
        f"\n2020-03-12 10:00, 20x long 1 BTC at {entry}, stop {stop}: fired at {fired_at} "
        f"(step {path.index(first_through)} of {len(path) - 1}), average fill {average} "
        f"({stop - average} below the stop), loss {-(realized - fees)} USDT incl. fees"
    )


def test_without_the_stop_the_same_long_is_liquidated() -> None:
    ex, events, path, _, liquidation = replay(with_stop=False)
    # isolated margin 7,358.51 / 20 = 367.9255 less the entry fee 3.679255: 364.246245;
    # liquidation (MECHANICS.md §1.4, bracket 1): (7,358.51 − 364.246245) / (1 − 0.004)
    assert liquidation == ((Decimal("7358.51") - Decimal("364.246245")) / Decimal("0.996")
                           ).quantize(Decimal("0.00000001"))  # fmt: skip
    liquidations = [e for e in events if isinstance(e, LiquidationTriggered)]
    assert [e.account for e in liquidations] == ["alice"]
    first_through = next(p for p in path if p * TICK <= liquidation)
    tick_of_liquidation = 0
    for e in events:  # the index tick whose pass liquidated her
        if isinstance(e, IndexUpdated):
            tick_of_liquidation = e.index_ticks
        elif e is liquidations[0]:
            break
    assert tick_of_liquidation == first_through
    # the whole isolated margin is gone, the entry fee included
    assert ex.account("alice").wallet_balance == 1000 - Decimal("367.9255")
    assert ex.position("alice", BTC).size == 0
    print(
        f"\nwithout the stop: liquidation price {liquidation}, liquidated at "
        f"{first_through * TICK}, loss 367.9255 USDT (the whole margin)"
    )
