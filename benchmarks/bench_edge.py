"""The edge: a caller's orders through the facade and the engine, against a plain book.

The question (issue 11): how much does everything between a caller and a price-time book cost?
The yardstick is `PlainBook` below, the order book anyone writes in an afternoon: a sorted
list of prices per side and one deque of orders per price level, no margin, no accounts, no
events. It lives here, not in the package: it is the baseline, not a product.

Workload (fixed seed, one market, BTCUSDT around 60,000.0): 100 accounts at 10x, 80 of them
makers and 20 takers, 100,000 operations:

- 60 % limit orders (GTC) resting within 20 ticks of their side's touch (the best price on
  that side, or the index when the side is empty), never crossing;
- 25 % cancels of a random resting order, by its owner;
- 15 % market orders from a taker for 1-20 lots, which cross the spread and walk the book
  (larger than the limits, so the book stays about as deep as it starts: no maker reaches
  Binance's limit of 200 open orders per symbol).

The stream is drawn against the plain book itself (the touch is the plain book's), then checked
on the engine: every order is accepted and the resting orders of both agree at the end, so the
three runs do exactly the same work. Each run starts from a fresh, funded exchange (setup not
timed); one warm-up, then the best of 3 with the cyclic GC off (`bench_engine.best_of`).

Rows (ratio = rate / plain book rate, measured in the same run, because machines differ):

- plain book: operations/s (the baseline);
- engine: `Engine.apply` with typed commands in integer units (goal >= 0.3);
- facade: `Exchange.place_order` / `cancel_order` with decimal strings, as a new user writes
  (goal >= 0.10, aim 0.2);
- driver: `Exchange.submit` with the same typed commands in batches of 256 (the path for the
  simulator's agents and the server's sequencer).
"""

from __future__ import annotations

import bisect
import random
from collections import deque
from typing import Any

from benchmarks.bench_engine import best_of  # one warm-up, best of 3, GC off
from perpex.core.engine import Engine
from perpex.core.markets import compile_market
from perpex.core.messages import (
    CancelOrder,
    Deposit,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    SetLeverage,
    TimeInForce,
    UpdateIndex,
)
from perpex.core.units import ATOMS_PER_UNIT
from perpex.defaults import default_markets
from perpex.exchange import Exchange

OPS_COUNT = 100_000
SEED = 11
MAKERS = 80
TAKERS = 20
LEVERAGE = 10
DEPOSIT_USDT = 10_000_000  # per account: nobody is refused for margin in 100k operations
SYMBOL = "BTCUSDT"
INDEX_TICKS = 600_000  # 60,000.0 at a tick of 0.1
TOUCH_REACH_TICKS = 20
MAX_QTY_LOTS = 10  # a limit order: 0.001-0.010 BTC
# A market order: 0.001-0.020 BTC, so takers eat about as many orders as makers leave resting
# and no maker reaches Binance's 200 open orders per symbol.
MAX_TAKER_LOTS = 20
DRIVER_BATCH = 256

BUY, SELL = 1, -1
ADD, CANCEL, TAKE = 0, 1, 2
# (kind, order id, account, side, price ticks, qty lots)
Op = tuple[int, int, str, int, int, int]


# -- the yardstick -------------------------------------------------------------------------------
class PlainBook:
    """Price-time priority with a sorted price list per side and a deque per level."""

    def __init__(self) -> None:
        self.bid_prices: list[int] = []  # ascending; best bid last
        self.ask_prices: list[int] = []  # ascending; best ask first
        # price -> its orders in time order; an order is [order id, side, qty left, price]
        self.levels: dict[int, deque[list[int]]] = {}
        self.orders: dict[int, list[int]] = {}

    def best(self, side: int) -> int | None:
        if side == BUY:
            return self.bid_prices[-1] if self.bid_prices else None
        return self.ask_prices[0] if self.ask_prices else None

    def add(self, order_id: int, side: int, price: int, qty: int) -> None:
        order = [order_id, side, qty, price]
        level = self.levels.get(price)
        if level is None:
            level = self.levels[price] = deque()
            bisect.insort(self.bid_prices if side == BUY else self.ask_prices, price)
        level.append(order)
        self.orders[order_id] = order

    def cancel(self, order_id: int) -> bool:
        record = self.orders.pop(order_id, None)
        if record is None:
            return False
        order_id, side, _, price = record
        level = self.levels[price]
        for i, order in enumerate(level):
            if order[0] == order_id:
                del level[i]
                break
        if not level:
            self._drop_level(side, price)
        return True

    def _drop_level(self, side: int, price: int) -> None:
        del self.levels[price]
        prices = self.bid_prices if side == BUY else self.ask_prices
        del prices[bisect.bisect_left(prices, price)]

    def market(self, side: int, qty: int) -> list[tuple[int, int, int]]:
        """Takes `qty` from the other side, best price first: (maker id, price, lots) fills."""
        fills = []
        prices = self.ask_prices if side == BUY else self.bid_prices
        while qty and prices:
            price = prices[0] if side == BUY else prices[-1]
            level = self.levels[price]
            while qty and level:
                maker = level[0]
                lots = min(qty, maker[2])
                maker[2] -= lots
                qty -= lots
                fills.append((maker[0], price, lots))
                if not maker[2]:
                    level.popleft()
                    del self.orders[maker[0]]
            if not level:
                self._drop_level(-side, price)
        return fills


# -- the workload --------------------------------------------------------------------------------
def maker_name(i: int) -> str:
    return f"maker{i:02d}"


def taker_name(i: int) -> str:
    return f"taker{i:02d}"


ACCOUNTS = [maker_name(i) for i in range(MAKERS)] + [taker_name(i) for i in range(TAKERS)]


def generate() -> list[Op]:
    """The stream, drawn against the plain book; order ids count every order from 1, as the
    engine numbers accepted orders (and every order here is accepted)."""
    rng = random.Random(SEED)
    book = PlainBook()
    live: list[int] = []  # resting ids, O(1) uniform pick and removal
    where: dict[int, int] = {}
    owner: dict[int, str] = {}
    next_id = 1

    def forget(order_id: int) -> None:
        i = where.pop(order_id)
        last = live.pop()
        if last != order_id:
            live[i] = last
            where[last] = i
        del owner[order_id]

    ops: list[Op] = []
    while len(ops) < OPS_COUNT:
        roll = rng.random()
        side = BUY if rng.random() < 0.5 else SELL
        qty = rng.randint(1, MAX_QTY_LOTS)
        if roll < 0.60 or not live:
            account = maker_name(rng.randrange(MAKERS))
            touch = book.best(side) or INDEX_TICKS - side
            price = touch - side * rng.randrange(TOUCH_REACH_TICKS)
            opposite = book.best(-side)
            if opposite is not None and (price - opposite) * side >= 0:
                price = opposite - side  # rest, never cross
            book.add(next_id, side, price, qty)
            where[next_id] = len(live)
            live.append(next_id)
            owner[next_id] = account
            ops.append((ADD, next_id, account, side, price, qty))
            next_id += 1
        elif roll < 0.85:
            order_id = live[rng.randrange(len(live))]
            account = owner[order_id]
            forget(order_id)
            book.cancel(order_id)
            ops.append((CANCEL, order_id, account, 0, 0, 0))
        else:
            account = taker_name(rng.randrange(TAKERS))
            qty = rng.randint(1, MAX_TAKER_LOTS)
            for maker_id, _, _ in book.market(side, qty):
                if maker_id not in book.orders:
                    forget(maker_id)
            ops.append((TAKE, next_id, account, side, 0, qty))
            next_id += 1
    return ops


def commands_of(ops: list[Op]) -> list[PlaceOrder | CancelOrder]:
    out: list[PlaceOrder | CancelOrder] = []
    for kind, order_id, account, side, price, qty in ops:
        if kind == ADD:
            out.append(
                PlaceOrder(account, SYMBOL, side, OrderType.LIMIT, TimeInForce.GTC, qty, price)
            )
        elif kind == CANCEL:
            out.append(CancelOrder(account, SYMBOL, order_id))
        else:
            out.append(PlaceOrder(account, SYMBOL, side, OrderType.MARKET, TimeInForce.IOC, qty, 0))
    return out


FacadeCall = tuple[Any, ...]


def facade_calls(ops: list[Op]) -> list[FacadeCall]:
    """The stream as a user writes it: decimal strings and Binance names."""
    calls: list[FacadeCall] = []
    for kind, order_id, account, side, price, qty in ops:
        side_name = "BUY" if side == BUY else "SELL"
        quantity = f"{qty // 1000}.{qty % 1000:03d}"  # step 0.001
        if kind == ADD:
            calls.append((ADD, account, side_name, quantity, f"{price // 10}.{price % 10}"))
        elif kind == CANCEL:
            calls.append((CANCEL, account, order_id))
        else:
            calls.append((TAKE, account, side_name, quantity))
    return calls


# -- the runs ------------------------------------------------------------------------------------
def fresh_engine() -> Engine:
    engine = Engine([compile_market(m) for m in default_markets()])
    for account in ACCOUNTS:
        engine.apply(Deposit(account, DEPOSIT_USDT * ATOMS_PER_UNIT))
        engine.apply(SetLeverage(account, SYMBOL, LEVERAGE))
    engine.apply(UpdateIndex(SYMBOL, INDEX_TICKS))
    return engine


def fresh_exchange() -> Exchange:
    ex = Exchange()  # the defaults a new user gets: Binance mark, real brackets and fees
    for account in ACCOUNTS:
        ex.deposit(account, str(DEPOSIT_USDT))
        ex.set_leverage(account, SYMBOL, LEVERAGE)
    ex.set_index_price(SYMBOL, f"{INDEX_TICKS // 10}.{INDEX_TICKS % 10}")
    return ex


def run_plain(ops: list[Op]) -> PlainBook:
    book = PlainBook()
    add, cancel, market = book.add, book.cancel, book.market
    for kind, order_id, _, side, price, qty in ops:
        if kind == ADD:
            add(order_id, side, price, qty)
        elif kind == CANCEL:
            cancel(order_id)
        else:
            market(side, qty)
    return book


def run_engine(engine: Engine, commands: list[PlaceOrder | CancelOrder]) -> Engine:
    apply = engine.apply
    for command in commands:
        apply(command)
    return engine


def run_facade(ex: Exchange, calls: list[FacadeCall]) -> Exchange:
    place, cancel = ex.place_order, ex.cancel_order
    for call in calls:
        kind = call[0]
        if kind == ADD:
            _, account, side, quantity, price = call
            place(
                account,
                SYMBOL,
                side=side,
                type="LIMIT",
                quantity=quantity,
                price=price,
                time_in_force="GTC",
            )
        elif kind == CANCEL:
            cancel(call[1], SYMBOL, call[2])
        else:
            _, account, side, quantity = call
            place(account, SYMBOL, side=side, type="MARKET", quantity=quantity)
    return ex


def run_driver(ex: Exchange, commands: list[PlaceOrder | CancelOrder]) -> Exchange:
    submit = ex.submit
    for start in range(0, len(commands), DRIVER_BATCH):
        submit(commands[start : start + DRIVER_BATCH])
    return ex


def check_accepted(commands: list[PlaceOrder | CancelOrder]) -> None:
    """Every order of the stream is accepted by the engine, so all runs do the same work."""
    engine = fresh_engine()
    for command in commands:
        events = engine.apply(command)
        if isinstance(command, PlaceOrder):
            assert isinstance(events[0], OrderAccepted), f"{command} refused: {events[0]}"


def row(name: str, rate: float, plain_rate: float, goal: str) -> dict[str, object]:
    return {
        "benchmark": name,
        "metric": "ops/s",
        "value": rate,
        "baseline": plain_rate,
        "ratio": rate / plain_rate,
        "goal": goal,
    }


def run() -> list[dict[str, object]]:
    ops = generate()
    commands = commands_of(ops)
    check_accepted(commands)
    n = len(ops)
    plain_s, plain = best_of(lambda: None, lambda _: run_plain(ops))
    engine_s, engine = best_of(fresh_engine, lambda e: run_engine(e, commands))
    calls = facade_calls(ops)  # the caller's strings exist before the clock starts
    facade_s, ex = best_of(fresh_exchange, lambda x: run_facade(x, calls))
    resting = sorted(o.order_id for o in engine.markets[SYMBOL].book.orders())
    assert resting == sorted(plain.orders), "engine and plain book disagree"
    assert ex.state_hash() == engine.state_hash(), "facade and engine disagree"
    plain_rate = n / plain_s
    label = f"{n // 1000}k ops: 60 % limits near the touch, 25 % cancels, 15 % market takers"
    rows = [
        row(
            f"edge: plain book, sorted prices + deque per level ({label})",
            plain_rate,
            plain_rate,
            "the baseline",
        ),
        row(
            "edge: Engine.apply, typed commands (same ops)",
            n / engine_s,
            plain_rate,
            ">= 0.3x of the plain book",
        ),
        row(
            "edge: Exchange.place_order/cancel_order, decimal strings (same ops)",
            n / facade_s,
            plain_rate,
            ">= 0.10x, aim 0.2x",
        ),
    ]
    driver_s, dx = best_of(fresh_exchange, lambda x: run_driver(x, commands))
    assert dx.state_hash() == engine.state_hash(), "driver and engine disagree"
    rows.append(
        row(
            f"edge: Exchange.submit, typed commands in batches of {DRIVER_BATCH}",
            n / driver_s,
            plain_rate,
            "close to the engine row",
        )
    )
    return rows


if __name__ == "__main__":  # python -m benchmarks.bench_edge
    for r in run():
        print(f"{r['benchmark']}: {r['value']:,.0f} {r['metric']}, ratio {r['ratio']:.3f}x")
