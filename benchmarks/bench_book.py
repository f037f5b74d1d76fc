"""Order book throughput: perpex's `OrderBook` against a plain sortedcontainers book.

Workload, fixed so that figures compare across commits: 100,000 operations drawn with
`random.Random(42)` around a fixed mid price, random side, 1-10 lots each:

- 60 % passive limit orders resting 1-20 ticks from the mid (a bid below it, an ask above);
- 25 % cancels of a random earlier order that is still live at that point of the stream;
- 15 % aggressive orders 5 ticks through the mid (a buy limit at mid+5, a sell at mid-5).

Aggressive orders are immediate-or-cancel: they match and any remainder is dropped. Resting
it instead would park bids above the mid and asks below it, so later "passive" orders would
cross and the 60/15 split between resting and taking would no longer be what it says.

The operation list is generated once, outside the timing, by replaying it on the
sortedcontainers book (that is how a cancel knows which earlier orders are still live). Each
timed repetition applies the same list to a fresh book through the same loop; the figure is
the best of 5. The cyclic garbage collector is off while timing, as `timeit` does.
"""

from __future__ import annotations

import gc
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from sortedcontainers import SortedDict  # type: ignore[import-untyped]

from perpex.core.book import BUY, SELL, Fill, MatchResult, OrderBook, RestingOrder

OPS_COUNT = 100_000
SEED = 42
REPETITIONS = 5
MID_TICKS = 100_000
PASSIVE_MAX_OFFSET_TICKS = 20
AGGRESSIVE_THROUGH_TICKS = 5
MAX_QTY_LOTS = 10
ACCOUNT = "bench"  # takers pass no account, so self-trade prevention never engages

ADD, CANCEL, TAKE = 0, 1, 2
# (kind, order id, side, price ticks, qty lots); a cancel uses only the order id
Op = tuple[int, int, int, int, int]


class Book(Protocol):
    def add(self, order: RestingOrder) -> None: ...
    def cancel(self, order_id: int) -> RestingOrder | None: ...
    def match(
        self, side: int, limit_ticks: int, qty_lots: int, account: str | None = None
    ) -> MatchResult: ...


class SortedDictBook:
    """The textbook design: a sorted map per side, price -> FIFO deque, plus an id index."""

    def __init__(self) -> None:
        self._bids = SortedDict()  # price ticks -> deque[RestingOrder]; best bid is the last key
        self._asks = SortedDict()  # price ticks -> deque[RestingOrder]; best ask is the first key
        self._orders: dict[int, RestingOrder] = {}

    def add(self, order: RestingOrder) -> None:
        levels = self._bids if order.side == BUY else self._asks
        queue = levels.get(order.price_ticks)
        if queue is None:
            queue = levels[order.price_ticks] = deque()
        queue.append(order)
        self._orders[order.order_id] = order

    def cancel(self, order_id: int) -> RestingOrder | None:
        order = self._orders.pop(order_id, None)
        if order is None:
            return None
        levels = self._bids if order.side == BUY else self._asks
        queue = levels[order.price_ticks]
        queue.remove(order)
        if not queue:
            del levels[order.price_ticks]
        return order

    def match(
        self, side: int, limit_ticks: int, qty_lots: int, account: str | None = None
    ) -> MatchResult:
        # STP is not part of this workload; the parameter is here to match OrderBook.match.
        levels, best_index = (self._asks, 0) if side == BUY else (self._bids, -1)
        fills: list[Fill] = []
        left_lots = qty_lots
        while left_lots and levels:
            price_ticks, queue = levels.peekitem(best_index)
            if (price_ticks > limit_ticks) if side == BUY else (price_ticks < limit_ticks):
                break
            while left_lots and queue:
                maker = queue[0]
                take_lots = min(left_lots, maker.remaining_lots)
                maker.remaining_lots -= take_lots
                left_lots -= take_lots
                fills.append((maker, take_lots, price_ticks))
                if not maker.remaining_lots:
                    queue.popleft()
                    del self._orders[maker.order_id]
            if not queue:
                del levels[price_ticks]
        return MatchResult(fills, qty_lots - left_lots, False)


def generate_ops() -> list[Op]:
    """The workload, with cancels aimed at orders that are live when the cancel arrives."""
    rng = random.Random(SEED)
    book = SortedDictBook()
    # live order ids in a list with an index, so a uniform pick and a removal are both O(1)
    live_ids: list[int] = []
    live_index: dict[int, int] = {}

    def forget(order_id: int) -> None:
        i = live_index.pop(order_id)
        last_id = live_ids.pop()
        if last_id != order_id:
            live_ids[i] = last_id
            live_index[last_id] = i

    ops: list[Op] = []
    next_order_id = 1
    for _ in range(OPS_COUNT):
        roll = rng.random()
        side = BUY if rng.random() < 0.5 else SELL
        qty_lots = rng.randint(1, MAX_QTY_LOTS)
        if roll < 0.60:
            offset_ticks = rng.randint(1, PASSIVE_MAX_OFFSET_TICKS)
            price_ticks = MID_TICKS - side * offset_ticks  # bids below the mid, asks above
            op = (ADD, next_order_id, side, price_ticks, qty_lots)
            book.add(RestingOrder(next_order_id, ACCOUNT, side, price_ticks, qty_lots))
            live_index[next_order_id] = len(live_ids)
            live_ids.append(next_order_id)
            next_order_id += 1
        elif roll < 0.85:
            # Only the first few draws can find the book empty; they cancel an unknown id,
            # which both books answer with None.
            order_id = live_ids[rng.randrange(len(live_ids))] if live_ids else 0
            op = (CANCEL, order_id, 0, 0, 0)
            if order_id:
                book.cancel(order_id)
                forget(order_id)
        else:
            price_ticks = MID_TICKS + side * AGGRESSIVE_THROUGH_TICKS
            op = (TAKE, 0, side, price_ticks, qty_lots)
            for maker, _, _ in book.match(side, price_ticks, qty_lots).fills:
                if not maker.remaining_lots:
                    forget(maker.order_id)
        ops.append(op)
    return ops


def apply(book: Book, ops: list[Op]) -> tuple[int, int]:
    """Replay the workload; (lots filled, cancels that found their order) for the sanity check.

    The same loop drives both books, so the loop's own cost is common to both figures.
    """
    add, cancel, match = book.add, book.cancel, book.match
    filled_lots = 0
    cancels_hit = 0
    for kind, order_id, side, price_ticks, qty_lots in ops:
        if kind == ADD:
            add(RestingOrder(order_id, ACCOUNT, side, price_ticks, qty_lots))
        elif kind == CANCEL:
            if cancel(order_id) is not None:
                cancels_hit += 1
        else:
            filled_lots += match(side, price_ticks, qty_lots).filled_lots
    return filled_lots, cancels_hit


def best_ops_per_s(make_book: Callable[[], Book], ops: list[Op]) -> tuple[float, tuple[int, int]]:
    best_s = float("inf")
    outcome = (0, 0)
    gc_was_enabled = gc.isenabled()
    for _ in range(REPETITIONS):
        book = make_book()
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            outcome = apply(book, ops)
            elapsed_s = time.perf_counter() - start
        finally:
            if gc_was_enabled:
                gc.enable()
        best_s = min(best_s, elapsed_s)
    return len(ops) / best_s, outcome


def run() -> list[dict[str, object]]:
    ops = generate_ops()
    perpex_ops_per_s, perpex_outcome = best_ops_per_s(OrderBook, ops)
    baseline_ops_per_s, baseline_outcome = best_ops_per_s(SortedDictBook, ops)
    # Same rules, same stream: the books must fill and cancel exactly the same.
    assert perpex_outcome == baseline_outcome, f"{perpex_outcome} != {baseline_outcome}"
    return [
        {
            "benchmark": f"order book ({OPS_COUNT // 1000}k ops, seed {SEED})",
            "metric": "ops/s",
            "value": perpex_ops_per_s,
            "baseline": baseline_ops_per_s,
            "ratio": perpex_ops_per_s / baseline_ops_per_s,
            "goal": ">= 500k ops/s and >= 5x",
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(
            f"{row['benchmark']}: {row['value']:,.0f} {row['metric']}, "
            f"sortedcontainers {row['baseline']:,.0f}, ratio {row['ratio']:.2f}x "
            f"(goal {row['goal']})"
        )
