"""The naive twin of `perpex.core.book.OrderBook`: the same matching rules, written to be read.

Units: prices in ticks, sizes in lots. Sides are +1 (bid, buy) and -1 (ask, sell).

Every resting order sits in one plain list in arrival order, and every question (best price,
next maker, depth) is answered by scanning or sorting that list afresh. Nothing is cached, so
there is nothing to get out of step; that is the point. tests/test_book.py runs one suite
against both books and tests/test_book_differential.py feeds both the same random stream.
"""

from __future__ import annotations

from collections.abc import Iterator

from perpex.core.book import (
    BUY,
    EXPIRE_MAKER,
    EXPIRE_TAKER,
    SELL,
    Fill,
    MatchResult,
    RestingOrder,
)


class ReferenceBook:
    """Price-time priority by brute force: O(n) or O(n log n) per call, and obviously right."""

    def __init__(self) -> None:
        # Arrival order is time priority: an order's index here is its place in the queue of
        # its price level. Reducing or partly filling an order mutates it in place, so it keeps
        # its index; cancelling removes it and a re-add would go to the back.
        self._arrivals: list[RestingOrder] = []

    # -- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._arrivals)

    def __contains__(self, order_id: int) -> bool:
        return self.get(order_id) is not None

    def get(self, order_id: int) -> RestingOrder | None:
        for order in self._arrivals:
            if order.order_id == order_id:
                return order
        return None

    def _queue(self, side: int) -> list[RestingOrder]:
        """One side's orders in the order a taker meets them: best price first, then arrival."""
        # sorted() is stable, so orders at one price keep their arrival order (FIFO). The key
        # puts the highest bid and the lowest ask first.
        return sorted(
            (o for o in self._arrivals if o.side == side), key=lambda o: -side * o.price_ticks
        )

    def orders(self) -> Iterator[RestingOrder]:
        """Every resting order, bids best first then asks best first, FIFO within a level."""
        yield from self._queue(BUY)
        yield from self._queue(SELL)

    def best_bid(self) -> int | None:
        return max((o.price_ticks for o in self._arrivals if o.side == BUY), default=None)

    def best_ask(self) -> int | None:
        return min((o.price_ticks for o in self._arrivals if o.side == SELL), default=None)

    def depth(self, levels: int = 20) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """L2 view: ([(bid price, lots)], [(ask price, lots)]), best first, `levels` per side."""
        return self._levels(BUY)[: max(levels, 0)], self._levels(SELL)[: max(levels, 0)]

    def _levels(self, side: int) -> list[tuple[int, int]]:
        lots_by_price_ticks: dict[int, int] = {}
        for order in self._queue(side):  # best first, so the dict's key order is best first
            lots_by_price_ticks[order.price_ticks] = (
                lots_by_price_ticks.get(order.price_ticks, 0) + order.remaining_lots
            )
        return list(lots_by_price_ticks.items())

    def crosses(self, side: int, price_ticks: int) -> bool:
        """Would a limit order at this price take liquidity?"""
        if side == BUY:
            best_ask_ticks = self.best_ask()
            return best_ask_ticks is not None and best_ask_ticks <= price_ticks
        best_bid_ticks = self.best_bid()
        return best_bid_ticks is not None and best_bid_ticks >= price_ticks

    def walk(
        self,
        side: int,
        limit_ticks: int,
        qty_lots: int,
        account: str | None = None,
        stp: int = EXPIRE_TAKER,
    ) -> tuple[int, int]:
        """Read-only: (lots fillable, sum of price x lots), defined as what `match` would do.

        The definition is literal: match against a copy of the book and throw the copy away.
        """
        scratch = ReferenceBook()
        scratch._arrivals = [
            RestingOrder(o.order_id, o.account, o.side, o.price_ticks, o.remaining_lots)
            for o in self._arrivals
        ]
        result = scratch.match(side, limit_ticks, qty_lots, account, stp)
        return result.filled_lots, sum(lots * price_ticks for _, lots, price_ticks in result.fills)

    # -- mutations --------------------------------------------------------------------------
    def add(self, order: RestingOrder) -> None:
        """Rest an order at the back of its price level. The caller ensures it does not cross."""
        assert order.order_id not in self, "duplicate order id"
        assert order.remaining_lots > 0
        self._arrivals.append(order)

    def cancel(self, order_id: int) -> RestingOrder | None:
        """Remove an order; None if it is not resting."""
        order = self.get(order_id)
        if order is not None:
            self._remove(order_id)
        return order

    def reduce(self, order_id: int, lots: int) -> None:
        """Shrink a resting order in place (keeps its queue position); removes it at zero."""
        order = self.get(order_id)
        if order is None:
            raise KeyError(order_id)  # as the fast book's dict lookup does
        assert 0 < lots <= order.remaining_lots
        order.remaining_lots -= lots
        if order.remaining_lots == 0:
            self._remove(order_id)

    def _remove(self, order_id: int) -> None:
        # By id, not list.remove(): an engine order type may define __eq__ on its fields.
        self._arrivals = [o for o in self._arrivals if o.order_id != order_id]

    def match(
        self,
        side: int,
        limit_ticks: int,
        qty_lots: int,
        account: str | None = None,
        stp: int = EXPIRE_TAKER,
    ) -> MatchResult:
        """Take liquidity for a taker up to `qty_lots` at prices no worse than `limit_ticks`.

        One maker at a time: the head of the opposite queue, filled at its own price. With
        `account` set, at the first resting order of that account the taker expires
        (EXPIRE_TAKER), or that order is removed and matching goes on (EXPIRE_MAKER), or both
        (EXPIRE_BOTH); the fills before it stand.
        """
        fills: list[Fill] = []
        expired: list[RestingOrder] = []
        left_lots = qty_lots
        self_trade = False
        while left_lots:
            queue = self._queue(-side)
            if not queue:
                break
            maker = queue[0]
            if side == BUY and maker.price_ticks > limit_ticks:
                break
            if side == SELL and maker.price_ticks < limit_ticks:
                break
            if account is not None and maker.account == account:
                if stp != EXPIRE_TAKER:
                    self._remove(maker.order_id)
                    expired.append(maker)
                    if stp == EXPIRE_MAKER:
                        continue
                self_trade = True
                break
            take_lots = min(left_lots, maker.remaining_lots)
            maker.remaining_lots -= take_lots
            left_lots -= take_lots
            fills.append((maker, take_lots, maker.price_ticks))
            if maker.remaining_lots == 0:
                self._remove(maker.order_id)
        return MatchResult(fills, qty_lots - left_lots, self_trade, expired or None)

    # -- checking ---------------------------------------------------------------------------
    def validate_internal_state(self) -> None:
        """There is no cache to recompute; check what every book must hold."""
        order_ids = [o.order_id for o in self._arrivals]
        assert len(set(order_ids)) == len(order_ids), "duplicate order id"
        for order in self._arrivals:
            assert order.side in (BUY, SELL), f"order {order.order_id} has side {order.side}"
            assert order.remaining_lots > 0, f"order {order.order_id} rests with nothing left"
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask, f"crossed book {bid} >= {ask}"
