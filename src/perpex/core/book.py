"""The limit order book of one market: price levels with FIFO queues, price-time priority.

Units: prices in ticks, sizes in lots. Sides are +1 (bid, buy) and -1 (ask, sell).

Levels are insertion-ordered dicts (order id -> order), so the head of the queue is the first
key and cancel is an O(1) delete. The occupied prices of each side are kept in a sorted list
whose *last* element is the best price (bids ascending, asks stored negated), so consuming the
best level is an O(1) pop and adding a level is a bisect into a short list.

`ReferenceBook` in tests/ is the naive twin; one test suite and a differential property test
hold the two equal.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from typing import Any, Final

BUY: Final = 1
SELL: Final = -1
QUEUE_SLACK: Final = 32  # canceled entries a level's queue may hold beyond twice its live ones
# Self-trade prevention, what a taker does at its own account's resting order (the values of
# `perpex.core.messages.SelfTradePrevention`): expire the taker's rest (the default), expire
# that resting order and go on matching, or expire both.
EXPIRE_TAKER: Final = 0
EXPIRE_MAKER: Final = 1
EXPIRE_BOTH: Final = 2

# A note on `key: Any = order.order_id` below (and in `records` and `order_path`): the compiled
# build keeps an `int` unboxed and makes a new int object for every dict operation that uses
# it; an `Any` local is boxed once and used for all of them. Same keys, same dicts.


class RestingOrder:
    """What the book needs to know about an order. The engine's `Order` extends it."""

    __slots__ = ("account", "order_id", "price_ticks", "queue_stamp", "remaining_lots", "side")

    def __init__(
        self, order_id: int, account: str, side: int, price_ticks: int, remaining_lots: int
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price_ticks = price_ticks
        self.remaining_lots = remaining_lots
        self.queue_stamp = 0  # which arrival in its level's queue is the live one

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(id={self.order_id}, {self.account}, side={self.side}, "
            f"{self.remaining_lots}@{self.price_ticks})"
        )


class Level:
    """One price: live orders by id (insertion-ordered) and the FIFO queue of arrivals.

    Cancel deletes from `orders` only (O(1)); the queue drops canceled ids lazily when they
    reach its head. A dict alone would not do: `next(iter(d))` skips every slot deleted from
    its front, so eating a long level one order at a time would turn quadratic.
    """

    __slots__ = ("orders", "queue", "total_lots")

    def __init__(self) -> None:
        self.orders: dict[int, RestingOrder] = {}
        self.queue: deque[tuple[int, RestingOrder]] = deque()  # (arrival stamp, order)
        self.total_lots = 0


# A fill as the book reports it: (maker order, lots, price in ticks). The maker's
# remaining_lots is already reduced; a maker with nothing left is already off the book.
Fill = tuple[RestingOrder, int, int]


class MatchResult:
    __slots__ = ("expired", "filled_lots", "fills", "self_trade")

    def __init__(
        self,
        fills: list[Fill],
        filled_lots: int,
        self_trade: bool,
        expired: list[RestingOrder] | None = None,
    ) -> None:
        self.fills = fills
        self.filled_lots = filled_lots
        self.self_trade = self_trade  # stopped at the taker's own resting order
        # the taker's own resting orders taken off the book (EXPIRE_MAKER, EXPIRE_BOTH), in the
        # order matching reached them; each keeps its remaining_lots
        self.expired = expired


class OrderBook:
    """Price-time priority book. Matching never fails: the engine checks everything first."""

    __slots__ = ("_ask_keys", "_asks", "_bid_keys", "_bids", "_orders", "_stamp")

    def __init__(self) -> None:
        self._bids: dict[int, Level] = {}
        self._asks: dict[int, Level] = {}
        self._bid_keys: list[int] = []  # ascending prices; best bid last
        self._ask_keys: list[int] = []  # ascending negated prices; best ask last
        self._orders: dict[int, RestingOrder] = {}
        self._stamp = 0

    # -- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: int) -> bool:
        return order_id in self._orders

    def get(self, order_id: int) -> RestingOrder | None:
        return self._orders.get(order_id)

    def orders(self) -> Iterator[RestingOrder]:
        """Every resting order, bids best first then asks best first, FIFO within a level."""
        for price in reversed(self._bid_keys):
            yield from self._bids[price].orders.values()
        for key in reversed(self._ask_keys):
            yield from self._asks[-key].orders.values()

    def best_bid(self) -> int | None:
        return self._bid_keys[-1] if self._bid_keys else None

    def best_ask(self) -> int | None:
        return -self._ask_keys[-1] if self._ask_keys else None

    def depth(self, levels: int = 20) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """L2 view: ([(bid price, lots)], [(ask price, lots)]), best first."""
        if levels <= 0:  # keys[-0:] would be the whole side, not none of it
            return [], []
        bids = [(p, self._bids[p].total_lots) for p in reversed(self._bid_keys[-levels:])]
        asks = [(-k, self._asks[-k].total_lots) for k in reversed(self._ask_keys[-levels:])]
        return bids, asks

    def crosses(self, side: int, price_ticks: int) -> bool:
        """Would a limit order at this price take liquidity?"""
        if side == BUY:
            return bool(self._ask_keys) and -self._ask_keys[-1] <= price_ticks
        return bool(self._bid_keys) and self._bid_keys[-1] >= price_ticks

    def walk(
        self,
        side: int,
        limit_ticks: int,
        qty_lots: int,
        account: str | None = None,
        stp: int = EXPIRE_TAKER,
    ) -> tuple[int, int]:
        """Read-only: (lots fillable, sum of price x lots) for a taker, as `match` would fill.

        Stops at the limit price and, when `account` is given, at that account's own order
        (self-trade prevention expires the taker there), or with `stp` EXPIRE_MAKER passes
        over it (match would take it off the book).
        """
        if side == BUY:
            keys, levels, sign = self._ask_keys, self._asks, -1
        else:
            keys, levels, sign = self._bid_keys, self._bids, 1
        left = qty_lots
        cost = 0
        for i in range(len(keys) - 1, -1, -1):
            price = sign * keys[i]
            if (price > limit_ticks) if side == BUY else (price < limit_ticks):
                break
            level = levels[price]
            if account is None:
                take = min(left, level.total_lots)
                left -= take
                cost += take * price
            else:
                for o in level.orders.values():
                    if o.account == account:
                        if stp == EXPIRE_MAKER:
                            continue
                        return qty_lots - left, cost
                    take = min(left, o.remaining_lots)
                    left -= take
                    cost += take * price
                    if not left:
                        break
            if not left:
                break
        return qty_lots - left, cost

    # -- mutations --------------------------------------------------------------------------
    def add(self, order: RestingOrder) -> None:
        """Rest an order at the back of its price level. The caller ensures it does not cross."""
        key: Any = order.order_id  # boxed once (see the note at the top)
        assert key not in self._orders, "duplicate order id"
        assert order.remaining_lots > 0
        price = order.price_ticks
        if order.side == BUY:
            level = self._bids.get(price)
            if level is None:
                level = self._bids[price] = Level()
                bisect.insort(self._bid_keys, price)
        else:
            level = self._asks.get(price)
            if level is None:
                level = self._asks[price] = Level()
                bisect.insort(self._ask_keys, -price)
        level.orders[key] = order
        self._stamp += 1
        order.queue_stamp = self._stamp
        level.queue.append((self._stamp, order))
        level.total_lots += order.remaining_lots
        self._orders[key] = order

    def cancel(self, order_id: int) -> RestingOrder | None:
        """Remove an order; None if it is not resting. O(1) unless its level empties."""
        key: Any = order_id  # boxed once (see the note at the top)
        order = self._orders.pop(key, None)
        if order is None:
            return None
        price = order.price_ticks
        if order.side == BUY:
            level = self._bids[price]
            del level.orders[key]
            level.total_lots -= order.remaining_lots
            if len(level.queue) > 2 * len(level.orders) + QUEUE_SLACK:
                level.queue = deque((o.queue_stamp, o) for o in level.orders.values())
            if not level.orders:
                del self._bids[price]
                self._remove_key(self._bid_keys, price)
        else:
            level = self._asks[price]
            del level.orders[key]
            level.total_lots -= order.remaining_lots
            if len(level.queue) > 2 * len(level.orders) + QUEUE_SLACK:
                level.queue = deque((o.queue_stamp, o) for o in level.orders.values())
            if not level.orders:
                del self._asks[price]
                self._remove_key(self._ask_keys, -price)
        return order

    def reduce(self, order_id: int, lots: int) -> None:
        """Shrink a resting order in place (keeps its queue position); removes it at zero."""
        order = self._orders[order_id]
        assert 0 < lots <= order.remaining_lots
        if lots == order.remaining_lots:
            self.cancel(order_id)
            order.remaining_lots = 0
            return
        levels = self._bids if order.side == BUY else self._asks
        levels[order.price_ticks].total_lots -= lots
        order.remaining_lots -= lots

    @staticmethod
    def _remove_key(keys: list[int], key: int) -> None:
        if keys[-1] == key:  # the common case: the best level emptied
            keys.pop()
        else:
            del keys[bisect.bisect_left(keys, key)]

    def match(
        self,
        side: int,
        limit_ticks: int,
        qty_lots: int,
        account: str | None = None,
        stp: int = EXPIRE_TAKER,
    ) -> MatchResult:
        """Take liquidity for a taker up to `qty_lots` at prices no worse than `limit_ticks`.

        Fills at the makers' prices, best price first, FIFO within a price. With `account`
        set, self-trade prevention acts at that account's resting orders: by `stp`, matching
        stops at the first (EXPIRE_TAKER), takes each off the book and goes on (EXPIRE_MAKER),
        or takes the first off and stops (EXPIRE_BOTH). The ones taken off are `expired`.
        """
        if side == BUY:
            keys, levels, sign = self._ask_keys, self._asks, -1
        else:
            keys, levels, sign = self._bid_keys, self._bids, 1
        orders = self._orders
        fills: list[Fill] = []
        left = qty_lots
        self_trade = False
        expired: list[RestingOrder] | None = None
        while left and keys:
            price = sign * keys[-1]
            if (price > limit_ticks) if side == BUY else (price < limit_ticks):
                break
            level = levels[price]
            live = level.orders
            queue = level.queue
            while left:
                stamp, maker = queue[0]
                if stamp != maker.queue_stamp or live.get(maker.order_id) is not maker:
                    queue.popleft()  # canceled (or re-added later): drop it lazily
                    continue
                if maker.account == account:
                    if stp == EXPIRE_TAKER:
                        self_trade = True
                        break
                    # EXPIRE_MAKER / EXPIRE_BOTH: the resting order leaves the book whole
                    queue.popleft()
                    own: Any = maker.order_id
                    del live[own]
                    del orders[own]
                    level.total_lots -= maker.remaining_lots
                    if expired is None:
                        expired = []
                    expired.append(maker)
                    if stp == EXPIRE_BOTH:
                        self_trade = True
                    if not live:
                        del levels[price]
                        keys.pop()
                        break
                    if self_trade:
                        break
                    continue
                take = maker.remaining_lots
                if take > left:
                    take = left
                    maker.remaining_lots -= take
                    level.total_lots -= take
                    fills.append((maker, take, price))
                    left = 0
                    break
                # the maker is filled completely
                queue.popleft()
                key: Any = maker.order_id  # boxed once (see the note at the top)
                del live[key]
                del orders[key]
                maker.remaining_lots = 0
                level.total_lots -= take
                left -= take
                fills.append((maker, take, price))
                if not live:
                    del levels[price]
                    keys.pop()
                    break
            if self_trade:
                break
        return MatchResult(fills, qty_lots - left, self_trade, expired)

    # -- checking ---------------------------------------------------------------------------
    def validate_internal_state(self) -> None:
        """Recompute every cached figure; raise AssertionError on the first disagreement."""
        seen: set[int] = set()
        for levels, keys, side, sign in (
            (self._bids, self._bid_keys, BUY, 1),
            (self._asks, self._ask_keys, SELL, -1),
        ):
            assert keys == sorted(keys), "price keys out of order"
            assert len(set(keys)) == len(keys), "duplicate price key"
            assert sorted(sign * k for k in keys) == sorted(levels), "keys differ from levels"
            for price, level in levels.items():
                assert level.orders, f"empty level at {price}"
                total = 0
                for oid, o in level.orders.items():
                    assert o.order_id == oid and o.side == side and o.price_ticks == price
                    assert o.remaining_lots > 0, f"order {oid} rests with nothing left"
                    assert self._orders.get(oid) is o, f"order {oid} missing from the index"
                    total += o.remaining_lots
                    seen.add(oid)
                assert total == level.total_lots, (
                    f"level {price} total {level.total_lots} != {total}"
                )
                queued = [
                    o.order_id
                    for stamp, o in level.queue
                    if level.orders.get(o.order_id) is o and o.queue_stamp == stamp
                ]
                assert queued == list(level.orders), f"level {price}: FIFO queue out of step"
        assert seen == set(self._orders), "index holds orders that are not on a level"
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask, f"crossed book {bid} >= {ask}"
