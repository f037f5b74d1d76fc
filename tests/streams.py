"""A realistic, seeded command stream for the engine: the shared input of the determinism,
journal and benchmark tests.

`command_stream(seed, n)` depends only on `random.Random(seed)`: it never runs the engine, so
the same seed gives the same commands in every process and for every engine version. It
tracks the mark it sets itself (every `UpdateIndex` it emits is inside the market's price
range), quotes market makers around that mark and sends takers across it, so most commands
are accepted and a large share of them trade. Some are refused on purpose (cancels of filled
orders, reduce-only orders without a position, margin-mode changes with a position open).

Units: prices in ticks, sizes in lots, money in atoms (1 USDT = 10^6 atoms).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Final

from perpex.core.markets import MarketSpec, compile_market
from perpex.core.messages import (
    AdjustIsolatedMargin,
    AdvanceClock,
    CancelOrder,
    Command,
    Deposit,
    OrderType,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    TimeInForce,
    UpdateIndex,
    UpdateSources,
    Withdraw,
)
from perpex.core.oracle import DEFAULT_INDEX_SOURCES
from perpex.defaults import default_markets

ATOMS_PER_USDT: Final = 1_000_000
NS_PER_SECOND: Final = 1_000_000_000
BPS_PER_UNIT: Final = 10_000

MAKERS: Final = ("maker1", "maker2")
TAKERS: Final = ("taker1", "taker2", "taker3", "taker4")
# taker3 trades BTCUSDT isolated at 10x; the others stay cross.
ISOLATED_TAKER: Final = "taker3"

# (start price in ticks, largest maker/taker order in lots). BTCUSDT: 60,000.0 USDT, orders up
# to 0.4 BTC; ETHUSDT: 3,000.00 USDT, orders up to 5 ETH. One BTC lot is worth 60 USDT and one
# ETH lot 3 USDT, so the smallest ETH order is 2 lots (MIN_NOTIONAL is 5 USDT).
START_TICKS: Final = {"BTCUSDT": 600_000, "ETHUSDT": 300_000}
MIN_LOTS: Final = {"BTCUSDT": 1, "ETHUSDT": 2}
MAX_LOTS: Final = {"BTCUSDT": 400, "ETHUSDT": 5_000}

MAKER_DEPOSIT_ATOMS: Final = 5_000_000 * ATOMS_PER_USDT
TAKER_DEPOSIT_ATOMS: Final = 300_000 * ATOMS_PER_USDT
QUOTE_DEPTH_BPS: Final = 20  # makers quote within 20 bps of the mark
TAKER_REACH_BPS: Final = 30  # takers' limit prices reach 30 bps through the mark
REMEMBERED_QUOTES: Final = 64  # per maker and symbol, for cancels


def default_specs() -> list[MarketSpec]:
    """The compiled default markets (BTCUSDT, ETHUSDT) the stream is written for."""
    return [compile_market(m) for m in default_markets()]


def command_stream(seed: int, n: int) -> list[Command]:
    """`n` commands (n >= 16): setup first, then a mix of quoting, taking and housekeeping."""
    rng = random.Random(seed)
    symbols = sorted(START_TICKS)
    mark = dict(START_TICKS)
    bounds = {s.symbol: (s.min_price_ticks, s.max_price_ticks) for s in default_specs()}
    clock_ns = 1_700_000_000 * NS_PER_SECOND
    quotes: dict[tuple[str, str], deque[str]] = {
        (m, s): deque(maxlen=REMEMBERED_QUOTES) for m in MAKERS for s in symbols
    }
    next_cid = 0
    accepted_ids_guess = 0  # order ids are dense from 1; a guess hits live, dead or no orders

    out: list[Command] = [AdvanceClock(clock_ns)]
    out += [Deposit(m, MAKER_DEPOSIT_ATOMS) for m in MAKERS]
    out += [Deposit(t, TAKER_DEPOSIT_ATOMS) for t in TAKERS]
    out += [UpdateIndex(s, mark[s]) for s in symbols]
    out += [
        SetMarginMode(ISOLATED_TAKER, "BTCUSDT", True),
        SetLeverage(ISOLATED_TAKER, "BTCUSDT", 10),
        SetLeverage("taker1", "ETHUSDT", 50),
    ]

    def bps_away(symbol: str, bps: int) -> int:
        lo, hi = bounds[symbol]
        price = mark[symbol] * (BPS_PER_UNIT + bps) // BPS_PER_UNIT
        return min(max(price, lo), hi)

    def lots(symbol: str) -> int:
        # Mostly small orders, now and then a large one.
        top = MAX_LOTS[symbol] if rng.random() < 0.15 else MAX_LOTS[symbol] // 8
        return rng.randint(MIN_LOTS[symbol], top)

    while len(out) < n:
        r = rng.random()
        symbol = rng.choice(symbols)
        if r < 0.40:  # a maker refreshes its quotes: maybe pull the oldest, then bid and ask
            maker = rng.choice(MAKERS)
            remembered = quotes[maker, symbol]
            if remembered and rng.random() < 0.6:
                out.append(CancelOrder(maker, symbol, client_order_id=remembered.popleft()))
            tif = TimeInForce.GTX if rng.random() < 0.2 else TimeInForce.GTC
            for side in (1, -1):
                cid = f"{maker}-{next_cid}"
                next_cid += 1
                remembered.append(cid)
                price = bps_away(symbol, -side * rng.randint(0, QUOTE_DEPTH_BPS))
                out.append(
                    PlaceOrder(
                        maker,
                        symbol,
                        side,
                        OrderType.LIMIT,
                        tif,
                        lots(symbol),
                        price,
                        client_order_id=cid,
                    )
                )
                accepted_ids_guess += 1
        elif r < 0.70:  # a taker crosses the spread
            taker = rng.choice(TAKERS)
            side = rng.choice((1, -1))
            kind = rng.random()
            reduce_only = rng.random() < 0.1
            if kind < 0.35:
                order_type, tif, price = OrderType.MARKET, TimeInForce.IOC, 0
            else:
                order_type = OrderType.LIMIT
                tif = (
                    TimeInForce.IOC
                    if kind < 0.7
                    else TimeInForce.FOK
                    if kind < 0.8
                    else TimeInForce.GTC
                )
                price = bps_away(symbol, side * rng.randint(0, TAKER_REACH_BPS))
            out.append(
                PlaceOrder(taker, symbol, side, order_type, tif, lots(symbol), price, reduce_only)
            )
            accepted_ids_guess += 1
        elif r < 0.80:  # cancels: a maker's quote by client id, or a guessed order id
            if rng.random() < 0.7:
                maker = rng.choice(MAKERS)
                remembered = quotes[maker, symbol]
                if remembered:
                    cid = remembered[rng.randrange(len(remembered))]
                    remembered.remove(cid)
                    out.append(CancelOrder(maker, symbol, client_order_id=cid))
            else:
                owner = rng.choice(MAKERS + TAKERS)
                oid = rng.randint(1, max(1, accepted_ids_guess))
                out.append(CancelOrder(owner, symbol, order_id=oid))
        elif r < 0.88:  # the oracle moves (a few bps), time passes with it
            move_bps = round(rng.gauss(0, 12))
            mark[symbol] = bps_away(symbol, move_bps)
            clock_ns += rng.randint(1, 5) * NS_PER_SECOND
            out.append(AdvanceClock(clock_ns))
            if rng.random() < 0.5:
                out.append(UpdateIndex(symbol, mark[symbol]))
            else:  # a few venues quote around it (the index is their weighted mean)
                venues = rng.sample(DEFAULT_INDEX_SOURCES, rng.randint(1, 6))
                venue_quotes = [(v, bps_away(symbol, rng.randint(-2, 2))) for v in venues]
                out.append(UpdateSources(symbol, tuple(sorted(venue_quotes))))
        elif r < 0.92:
            clock_ns += rng.randint(1, 120) * NS_PER_SECOND
            out.append(AdvanceClock(clock_ns))
        elif r < 0.95:
            out.append(SetLeverage(rng.choice(TAKERS), symbol, rng.choice((5, 10, 20, 25, 50))))
        elif r < 0.97:
            out.append(SetMarginMode(rng.choice(TAKERS), symbol, rng.random() < 0.5))
        elif r < 0.98:
            delta = rng.randint(1, 2_000) * ATOMS_PER_USDT * rng.choice((1, -1))
            out.append(AdjustIsolatedMargin(ISOLATED_TAKER, "BTCUSDT", delta))
        elif r < 0.99:
            out.append(Deposit(rng.choice(TAKERS), rng.randint(1, 20_000) * ATOMS_PER_USDT))
        else:
            out.append(Withdraw(rng.choice(TAKERS), rng.randint(1, 10_000) * ATOMS_PER_USDT))
    return out[:n]
