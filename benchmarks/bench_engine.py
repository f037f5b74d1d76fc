"""Engine throughput: orders and cancels per second through `Engine.apply` and `Exchange`.

Workload, fixed so that figures compare across commits: 100,000 commands on BTCUSDT drawn with
`random.Random(42)` around a fixed mid (60,000.0), by 1,000 funded accounts, random side,
1-10 lots (0.001-0.010 BTC) each, the same mix as the order book benchmark:

- 60 % passive GTC limit orders resting 1-20 ticks from the mid (a bid below it, an ask above);
- 25 % cancels of a random earlier order that is still resting at that point of the stream;
- 15 % aggressive IOC limit orders 5 ticks through the mid; they fill against the book (makers'
  prices, fees, realized PnL, margin release) and any remainder expires.

Every order goes the whole way: validation, price band, min notional, leverage cap, the
pre-trade margin check, reservation, matching with self-trade prevention, settlement of each
fill on both sides and the events. Accounts are funded so that no order is refused for margin.

The command list is built once, outside the timing, by replaying it on an engine (that is how
a cancel knows the id of an order that is still resting; the engine is deterministic, so the
ids are the same in every repetition). Each repetition starts from a fresh, funded engine with
the index set; setup is not timed. One warm-up run, then the best of 3. The cyclic garbage
collector is off while timing, as `timeit` and the order book benchmark do.

Rows:

- engine: commands/s through `Engine.apply`; baseline = the same stream as bare `OrderBook`
  operations (add / cancel / match), so ratio = engine / book shows the engine's overhead.
- facade: the same stream through `Exchange.place_order` / `cancel_order` (decimal strings
  in, `Decimal`s out); baseline = the engine figure, ratio = facade / engine.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from typing import Any, TypeVar

from perpex.core.book import BUY, SELL, OrderBook, RestingOrder
from perpex.core.engine import Engine
from perpex.core.markets import compile_market
from perpex.core.messages import (
    CancelOrder,
    Deposit,
    OrderAccepted,
    OrderType,
    PlaceOrder,
    TimeInForce,
    TradeExecuted,
    UpdateIndex,
)
from perpex.core.units import ATOMS_PER_UNIT
from perpex.defaults import default_markets
from perpex.errors import ExchangeError
from perpex.exchange import Exchange

OPS_COUNT = 100_000
SEED = 42
REPETITIONS = 3
ACCOUNTS = 1_000
DEPOSIT_USDT = 1_000_000  # per account: no order is ever refused for margin
SYMBOL = "BTCUSDT"
MID_TICKS = 600_000  # 60,000.0 at a tick of 0.1
INDEX_TICKS = {"BTCUSDT": MID_TICKS, "ETHUSDT": 300_000}  # every market gets an index
PASSIVE_MAX_OFFSET_TICKS = 20
AGGRESSIVE_THROUGH_TICKS = 5
MAX_QTY_LOTS = 10
GOAL_ORDERS_PER_S = 150_000

ADD, CANCEL, TAKE = 0, 1, 2
# (kind, order id, account, side, price ticks, qty lots); a take has no order id of its own
# in the book, a cancel uses only the order id
Op = tuple[int, int, str, int, int, int]
Command = PlaceOrder | CancelOrder


def account_name(i: int) -> str:
    return f"acct{i:04d}"


def fresh_engine() -> Engine:
    engine = Engine([compile_market(m) for m in default_markets()], mark_mode="index")
    for i in range(ACCOUNTS):
        engine.apply(Deposit(account_name(i), DEPOSIT_USDT * ATOMS_PER_UNIT))
    for symbol, ticks in INDEX_TICKS.items():
        engine.apply(UpdateIndex(symbol, ticks))
    return engine


def fresh_exchange() -> Exchange:
    ex = Exchange(mark_price="index")  # mark = index, as in the engine run
    for i in range(ACCOUNTS):
        ex.deposit(account_name(i), str(DEPOSIT_USDT))
    ex.set_index_price("BTCUSDT", "60000")
    ex.set_index_price("ETHUSDT", "3000")
    return ex


def generate() -> tuple[list[Command], list[Op]]:
    """The workload as engine commands, and the same stream as bare order book operations."""
    rng = random.Random(SEED)
    engine = fresh_engine()
    book = engine.markets[SYMBOL].book
    live_ids: list[int] = []  # resting order ids, with an index: O(1) uniform pick and removal
    live_index: dict[int, int] = {}
    owner: dict[int, str] = {}

    def forget(order_id: int) -> None:
        i = live_index.pop(order_id)
        last_id = live_ids.pop()
        if last_id != order_id:
            live_ids[i] = last_id
            live_index[last_id] = i

    commands: list[Command] = []
    ops: list[Op] = []
    for _ in range(OPS_COUNT):
        roll = rng.random()
        side = BUY if rng.random() < 0.5 else SELL
        qty = rng.randint(1, MAX_QTY_LOTS)
        account = account_name(rng.randrange(ACCOUNTS))
        cmd: Command
        if roll < 0.60:
            price = MID_TICKS - side * rng.randint(1, PASSIVE_MAX_OFFSET_TICKS)
            cmd = PlaceOrder(account, SYMBOL, side, OrderType.LIMIT, TimeInForce.GTC, qty, price)
            events = engine.apply(cmd)
            accepted = events[0]
            assert isinstance(accepted, OrderAccepted), f"passive order refused: {events}"
            order_id = accepted.order_id
            assert order_id in book, "a passive order should rest"
            live_index[order_id] = len(live_ids)
            live_ids.append(order_id)
            owner[order_id] = account
            ops.append((ADD, order_id, account, side, price, qty))
        elif roll < 0.85:
            # Only the first few draws can find the book empty; they cancel an unknown id,
            # which the engine refuses and the book answers with None.
            order_id = live_ids[rng.randrange(len(live_ids))] if live_ids else 0
            if order_id:
                account = owner.pop(order_id)
                forget(order_id)
            cmd = CancelOrder(account, SYMBOL, order_id)
            engine.apply(cmd)
            ops.append((CANCEL, order_id, account, 0, 0, 0))
        else:
            price = MID_TICKS + side * AGGRESSIVE_THROUGH_TICKS
            cmd = PlaceOrder(account, SYMBOL, side, OrderType.LIMIT, TimeInForce.IOC, qty, price)
            events = engine.apply(cmd)
            assert isinstance(events[0], OrderAccepted), f"aggressive order refused: {events}"
            for e in events:
                if isinstance(e, TradeExecuted) and e.maker_order_id not in book:
                    forget(e.maker_order_id)
                    del owner[e.maker_order_id]
            ops.append((TAKE, 0, account, side, price, qty))
        commands.append(cmd)
    assert {o.order_id for o in book.orders()} == set(live_ids)
    return commands, ops


# -- the three ways to run the stream ----------------------------------------------------------
def run_book(ops: list[Op]) -> OrderBook:
    book = OrderBook()
    add, cancel, match = book.add, book.cancel, book.match
    for kind, order_id, account, side, price, qty in ops:
        if kind == ADD:
            add(RestingOrder(order_id, account, side, price, qty))
        elif kind == CANCEL:
            cancel(order_id)
        else:
            match(side, price, qty, account)  # the engine's self-trade prevention, too
    return book


def run_engine(engine: Engine, commands: list[Command]) -> Engine:
    apply = engine.apply
    for cmd in commands:
        apply(cmd)
    return engine


FacadeCall = tuple[Any, ...]


def facade_calls(commands: list[Command]) -> list[FacadeCall]:
    """The commands as the facade's arguments: decimal strings, Binance names."""
    calls: list[FacadeCall] = []
    for cmd in commands:
        if isinstance(cmd, CancelOrder):
            calls.append((CANCEL, cmd.account, cmd.order_id))
            continue
        ticks, lots = cmd.price_ticks, cmd.qty_lots
        calls.append(
            (
                ADD,
                cmd.account,
                "BUY" if cmd.side == BUY else "SELL",
                f"{lots // 1000}.{lots % 1000:03d}",  # step 0.001
                f"{ticks // 10}.{ticks % 10}",  # tick 0.1
                cmd.time_in_force.name,
            )
        )
    return calls


def run_facade(ex: Exchange, calls: list[FacadeCall]) -> Exchange:
    place, cancel = ex.place_order, ex.cancel_order
    for call in calls:
        if call[0] == CANCEL:
            try:
                cancel(call[1], SYMBOL, call[2])
            except ExchangeError:  # the few cancels of an unknown order at the very start
                if call[2]:
                    raise
        else:
            _, account, side, quantity, price, tif = call
            place(account, SYMBOL, side=side, quantity=quantity, price=price, time_in_force=tif)
    return ex


T = TypeVar("T")
R = TypeVar("R")


def best_of(setup: Callable[[], T], body: Callable[[T], R]) -> tuple[float, R]:
    """(best seconds, result of the last run) over one warm-up and REPETITIONS timed runs."""
    result = body(setup())  # warm-up
    best_s = float("inf")
    gc_was_enabled = gc.isenabled()
    for _ in range(REPETITIONS):
        subject = setup()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            result = body(subject)
            elapsed_s = time.perf_counter() - start
        finally:
            if gc_was_enabled:
                gc.enable()
        best_s = min(best_s, elapsed_s)
    return best_s, result


def run() -> list[dict[str, object]]:
    commands, ops = generate()
    n = len(commands)
    book_s, book = best_of(lambda: None, lambda _: run_book(ops))
    engine_s, engine = best_of(fresh_engine, lambda e: run_engine(e, commands))
    calls = facade_calls(commands)
    facade_s, ex = best_of(fresh_exchange, lambda x: run_facade(x, calls))
    # Same stream, same rules: the bare book, the engine and the facade end in the same place.
    engine.check_invariants()
    resting = [o.order_id for o in engine.markets[SYMBOL].book.orders()]
    assert [o.order_id for o in book.orders()] == resting, "engine and bare book disagree"
    assert ex.state_hash() == engine.state_hash(), "facade and engine disagree"
    book_rate, engine_rate, facade_rate = n / book_s, n / engine_s, n / facade_s
    label = f"{n // 1000}k orders+cancels, seed {SEED}"
    return [
        {
            "benchmark": f"engine: Engine.apply ({label}; baseline: bare book)",
            "metric": "orders/s",
            "value": engine_rate,
            "baseline": book_rate,
            "ratio": engine_rate / book_rate,
            "goal": f">= {GOAL_ORDERS_PER_S // 1000}k orders/s",
        },
        {
            "benchmark": f"facade: Exchange ({label}; baseline: engine)",
            "metric": "orders/s",
            "value": facade_rate,
            "baseline": engine_rate,
            "ratio": facade_rate / engine_rate,
            "goal": "none (shows the edge's cost)",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(
            f"{row['benchmark']}: {row['value']:,.0f} {row['metric']}, "
            f"baseline {row['baseline']:,.0f}, ratio {row['ratio']:.2f}x (goal {row['goal']})"
        )
