"""The order book's rulebook: price-time priority, cancel, reduce, depth, STP, walk.

Every test runs against the fast `OrderBook` and the naive `ReferenceBook`; the two must agree
on every rule. Each mutation is followed by `validate_internal_state()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from perpex.core.book import BUY, SELL, OrderBook, RestingOrder
from reference_book import ReferenceBook

Book = OrderBook | ReferenceBook

# One resting order as a test writes it: (order id, account, side, price ticks, lots).
Spec = tuple[int, str, int, int, int]


@pytest.fixture(params=[OrderBook, ReferenceBook], ids=["fast", "reference"])
def book(request: pytest.FixtureRequest) -> Book:
    made: Book = request.param()
    return made


def rest(book: Book, *specs: Spec) -> None:
    for order_id, account, side, price_ticks, qty_lots in specs:
        book.add(RestingOrder(order_id, account, side, price_ticks, qty_lots))
        book.validate_internal_state()


def snapshot(book: Book) -> list[tuple[int, str, int, int, int]]:
    """Everything a caller can see of the resting orders, in priority order."""
    return [
        (o.order_id, o.account, o.side, o.price_ticks, o.remaining_lots) for o in book.orders()
    ]


def fill_ids(fills: list[tuple[RestingOrder, int, int]]) -> list[tuple[int, int, int]]:
    return [(maker.order_id, lots, price_ticks) for maker, lots, price_ticks in fills]


def take(
    book: Book, side: int, limit_ticks: int, qty_lots: int, account: str | None = None
) -> tuple[list[tuple[int, int, int]], bool]:
    """Match, after checking that `walk` predicts it and leaves the book alone."""
    before = snapshot(book)
    walked = book.walk(side, limit_ticks, qty_lots, account)
    assert snapshot(book) == before, "walk mutated the book"
    result = book.match(side, limit_ticks, qty_lots, account)
    book.validate_internal_state()
    cost = sum(lots * price_ticks for _, lots, price_ticks in result.fills)
    assert walked == (result.filled_lots, cost)
    assert result.filled_lots == sum(lots for _, lots, _ in result.fills)
    return fill_ids(result.fills), result.self_trade


# -- matching: price-time priority, limits, self-trade prevention ------------------------------


@dataclass(frozen=True)
class MatchCase:
    name: str
    resting: list[Spec]
    side: int
    limit_ticks: int
    qty_lots: int
    fills: list[tuple[int, int, int]]  # (maker id, lots, price ticks)
    account: str | None = None
    self_trade: bool = False
    # remaining lots of each order still resting afterwards, in priority order
    left: list[tuple[int, int]] = field(default_factory=list)


MATCH_CASES = [
    MatchCase(
        "FIFO within a level: the earliest order fills first",
        resting=[(1, "bob", SELL, 101, 3), (2, "carol", SELL, 101, 3), (3, "dan", SELL, 101, 3)],
        side=BUY, limit_ticks=101, qty_lots=4,
        fills=[(1, 3, 101), (2, 1, 101)],
        left=[(2, 2), (3, 3)],
    ),
    MatchCase(
        "a better ask fills first even though it arrived later",
        resting=[(1, "bob", SELL, 102, 2), (2, "carol", SELL, 101, 2)],
        side=BUY, limit_ticks=102, qty_lots=3,
        fills=[(2, 2, 101), (1, 1, 102)],
        left=[(1, 1)],
    ),
    MatchCase(
        "a seller meets the highest bid first",
        resting=[(1, "bob", BUY, 99, 2), (2, "carol", BUY, 100, 2)],
        side=SELL, limit_ticks=99, qty_lots=3,
        fills=[(2, 2, 100), (1, 1, 99)],
        left=[(1, 1)],
    ),
    MatchCase(
        "fills are at the maker's price, not the taker's limit",
        resting=[(1, "bob", SELL, 100, 5)],
        side=BUY, limit_ticks=110, qty_lots=2,
        fills=[(1, 2, 100)],
        left=[(1, 3)],
    ),
    MatchCase(
        "a buy never pays above its limit",
        resting=[(1, "bob", SELL, 101, 2), (2, "carol", SELL, 102, 2)],
        side=BUY, limit_ticks=101, qty_lots=5,
        fills=[(1, 2, 101)],
        left=[(2, 2)],
    ),
    MatchCase(
        "a sell never receives below its limit",
        resting=[(1, "bob", BUY, 100, 2), (2, "carol", BUY, 99, 2)],
        side=SELL, limit_ticks=100, qty_lots=5,
        fills=[(1, 2, 100)],
        left=[(2, 2)],
    ),
    MatchCase(
        "a limit that does not reach the best price fills nothing",
        resting=[(1, "bob", SELL, 101, 2), (2, "carol", BUY, 99, 2)],
        side=BUY, limit_ticks=100, qty_lots=1,
        fills=[],
        left=[(2, 2), (1, 2)],
    ),
    MatchCase(
        "a sweep empties several levels and stops when the book runs out",
        resting=[(1, "bob", SELL, 101, 1), (2, "carol", SELL, 102, 2), (3, "bob", SELL, 103, 3)],
        side=BUY, limit_ticks=1_000, qty_lots=10,
        fills=[(1, 1, 101), (2, 2, 102), (3, 3, 103)],
        left=[],
    ),
    MatchCase(
        "an exact fill removes the maker and leaves the next one untouched",
        resting=[(1, "bob", SELL, 101, 2), (2, "carol", SELL, 101, 2)],
        side=BUY, limit_ticks=101, qty_lots=2,
        fills=[(1, 2, 101)],
        left=[(2, 2)],
    ),
    MatchCase(
        "STP: the taker expires at its own order; the fill ahead of it stands",
        resting=[(1, "bob", SELL, 101, 2), (2, "alice", SELL, 101, 2), (3, "carol", SELL, 101, 2)],
        side=BUY, limit_ticks=101, qty_lots=5, account="alice",
        fills=[(1, 2, 101)], self_trade=True,
        left=[(2, 2), (3, 2)],
    ),
    MatchCase(
        "STP: own order at the head of the book stops the taker before any fill",
        resting=[(1, "alice", BUY, 100, 2), (2, "bob", BUY, 100, 2)],
        side=SELL, limit_ticks=90, qty_lots=3, account="alice",
        fills=[], self_trade=True,
        left=[(1, 2), (2, 2)],
    ),
    MatchCase(
        "STP: own order on a worse level stops the sweep there",
        resting=[(1, "bob", SELL, 101, 2), (2, "alice", SELL, 102, 2), (3, "carol", SELL, 103, 2)],
        side=BUY, limit_ticks=103, qty_lots=6, account="alice",
        fills=[(1, 2, 101)], self_trade=True,
        left=[(2, 2), (3, 2)],
    ),
    MatchCase(
        "STP: own order beyond the limit is never reached",
        resting=[(1, "bob", SELL, 101, 2), (2, "alice", SELL, 103, 2)],
        side=BUY, limit_ticks=102, qty_lots=5, account="alice",
        fills=[(1, 2, 101)], self_trade=False,
        left=[(2, 2)],
    ),
    MatchCase(
        "STP: a taker filled before its own order is reached is not a self-trade",
        resting=[(1, "bob", SELL, 101, 2), (2, "alice", SELL, 101, 2)],
        side=BUY, limit_ticks=101, qty_lots=2, account="alice",
        fills=[(1, 2, 101)], self_trade=False,
        left=[(2, 2)],
    ),
    MatchCase(
        "without an account there is no STP: anyone's order fills",
        resting=[(1, "alice", SELL, 101, 2)],
        side=BUY, limit_ticks=101, qty_lots=2, account=None,
        fills=[(1, 2, 101)],
        left=[],
    ),
]


@pytest.mark.parametrize("case", MATCH_CASES, ids=lambda c: c.name)
def test_match(book: Book, case: MatchCase) -> None:
    rest(book, *case.resting)
    makers = {o.order_id: o for o in book.orders()}

    fills, self_trade = take(book, case.side, case.limit_ticks, case.qty_lots, case.account)

    assert fills == case.fills
    assert self_trade == case.self_trade
    assert [(o.order_id, o.remaining_lots) for o in book.orders()] == case.left
    # a maker that filled completely ends at zero and is off the book
    for order_id, order in makers.items():
        if order_id not in dict(case.left):
            assert order.remaining_lots == 0
            assert order_id not in book
            assert book.get(order_id) is None


def test_partial_fill_keeps_queue_position(book: Book) -> None:
    rest(book, (1, "bob", SELL, 101, 5), (2, "carol", SELL, 101, 5))

    assert take(book, BUY, 101, 2) == ([(1, 2, 101)], False)
    rest(book, (3, "dan", SELL, 101, 5))
    # order 1 is still at the head with 3 left, ahead of 2 and of the newcomer 3
    assert take(book, BUY, 101, 9) == ([(1, 3, 101), (2, 5, 101), (3, 1, 101)], False)
    assert [(o.order_id, o.remaining_lots) for o in book.orders()] == [(3, 4)]


# -- cancel -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelCase:
    name: str
    cancel_ids: list[int]
    cancelled: list[int | None]  # what each cancel returned, as an order id
    left: list[int]  # resting order ids afterwards, in priority order
    depth: tuple[list[tuple[int, int]], list[tuple[int, int]]]


# Three bids at 100 (ids 1, 2, 3), one at 99 (id 4), one ask at 101 (id 5).
CANCEL_BOOK: list[Spec] = [
    (1, "bob", BUY, 100, 1),
    (2, "carol", BUY, 100, 2),
    (3, "dan", BUY, 100, 4),
    (4, "bob", BUY, 99, 8),
    (5, "carol", SELL, 101, 16),
]

CANCEL_CASES = [
    CancelCase(
        "an unknown id returns None and changes nothing",
        cancel_ids=[42], cancelled=[None], left=[1, 2, 3, 4, 5],
        depth=([(100, 7), (99, 8)], [(101, 16)]),
    ),
    CancelCase(
        "cancelling the middle of a level keeps the others' order",
        cancel_ids=[2], cancelled=[2], left=[1, 3, 4, 5],
        depth=([(100, 5), (99, 8)], [(101, 16)]),
    ),
    CancelCase(
        "a second cancel of the same order returns None",
        cancel_ids=[2, 2], cancelled=[2, None], left=[1, 3, 4, 5],
        depth=([(100, 5), (99, 8)], [(101, 16)]),
    ),
    CancelCase(
        "cancelling a whole best level moves the best bid down",
        cancel_ids=[3, 1, 2], cancelled=[3, 1, 2], left=[4, 5],
        depth=([(99, 8)], [(101, 16)]),
    ),
    CancelCase(
        "cancelling a level behind the best leaves the best alone",
        cancel_ids=[4], cancelled=[4], left=[1, 2, 3, 5],
        depth=([(100, 7)], [(101, 16)]),
    ),
    CancelCase(
        "cancelling the only ask empties that side",
        cancel_ids=[5], cancelled=[5], left=[1, 2, 3, 4],
        depth=([(100, 7), (99, 8)], []),
    ),
]


@pytest.mark.parametrize("case", CANCEL_CASES, ids=lambda c: c.name)
def test_cancel(book: Book, case: CancelCase) -> None:
    rest(book, *CANCEL_BOOK)

    returned: list[int | None] = []
    for order_id in case.cancel_ids:
        order = book.cancel(order_id)
        book.validate_internal_state()
        returned.append(None if order is None else order.order_id)
        assert order_id not in book

    assert returned == case.cancelled
    assert [o.order_id for o in book.orders()] == case.left
    assert len(book) == len(case.left)
    assert book.depth() == case.depth


def test_cancel_returns_the_order_with_its_remaining_lots(book: Book) -> None:
    rest(book, (1, "bob", SELL, 101, 5))
    take(book, BUY, 101, 2)

    order = book.cancel(1)
    book.validate_internal_state()

    assert order is not None
    assert (order.order_id, order.remaining_lots) == (1, 3)
    assert book.cancel(1) is None
    assert book.depth() == ([], [])


def test_cancel_of_a_filled_order_returns_none(book: Book) -> None:
    rest(book, (1, "bob", SELL, 101, 2))
    take(book, BUY, 101, 2)

    assert book.cancel(1) is None
    book.validate_internal_state()


def test_a_cancelled_then_re_added_order_goes_to_the_back(book: Book) -> None:
    rest(book, (1, "bob", SELL, 101, 1), (2, "carol", SELL, 101, 1))
    order = book.cancel(1)
    assert order is not None
    rest(book, (1, "bob", SELL, 101, 1))

    assert take(book, BUY, 101, 2) == ([(2, 1, 101), (1, 1, 101)], False)


# -- reduce -----------------------------------------------------------------------------------


def test_reduce_keeps_queue_position(book: Book) -> None:
    rest(book, (1, "bob", SELL, 101, 5), (2, "carol", SELL, 101, 5))

    book.reduce(1, 3)
    book.validate_internal_state()

    assert book.depth() == ([], [(101, 7)])
    assert take(book, BUY, 101, 3) == ([(1, 2, 101), (2, 1, 101)], False)


def test_reduce_to_zero_removes_the_order(book: Book) -> None:
    rest(book, (1, "bob", BUY, 100, 4), (2, "carol", BUY, 99, 1))
    order = book.get(1)
    assert order is not None

    book.reduce(1, 4)
    book.validate_internal_state()

    assert order.remaining_lots == 0
    assert 1 not in book
    assert book.best_bid() == 99


@pytest.mark.parametrize("lots", [0, -1, 5], ids=["zero", "negative", "more than resting"])
def test_reduce_rejects_a_bad_size(book: Book, lots: int) -> None:
    rest(book, (1, "bob", BUY, 100, 4))

    with pytest.raises(AssertionError):
        book.reduce(1, lots)


def test_reduce_of_an_unknown_order_raises(book: Book) -> None:
    with pytest.raises(KeyError):
        book.reduce(7, 1)


# -- best prices, depth, crosses ----------------------------------------------------------------


def test_best_prices_follow_levels_as_they_empty(book: Book) -> None:
    assert (book.best_bid(), book.best_ask()) == (None, None)
    rest(
        book,
        (1, "bob", BUY, 100, 1),
        (2, "bob", BUY, 99, 1),
        (3, "carol", SELL, 102, 1),
        (4, "carol", SELL, 101, 1),
    )
    assert (book.best_bid(), book.best_ask()) == (100, 101)

    take(book, SELL, 100, 1)  # empties the 100 bid level by a fill
    assert (book.best_bid(), book.best_ask()) == (99, 101)

    book.cancel(4)  # empties the 101 ask level by a cancel
    book.validate_internal_state()
    assert (book.best_bid(), book.best_ask()) == (99, 102)

    book.reduce(2, 1)  # empties the 99 bid level by a reduce
    book.validate_internal_state()
    assert (book.best_bid(), book.best_ask()) == (None, 102)

    take(book, BUY, 102, 1)
    assert (book.best_bid(), book.best_ask()) == (None, None)

    rest(book, (5, "bob", BUY, 98, 1), (6, "carol", SELL, 103, 1))  # a level can come back
    assert (book.best_bid(), book.best_ask()) == (98, 103)


# Bids: 100 holds 1+2, 99 holds 4, 97 holds 8. Asks: 101 holds 16, 105 holds 32+64.
DEPTH_BOOK: list[Spec] = [
    (1, "bob", BUY, 100, 1),
    (2, "carol", SELL, 105, 32),
    (3, "dan", BUY, 97, 8),
    (4, "bob", SELL, 101, 16),
    (5, "carol", BUY, 99, 4),
    (6, "dan", BUY, 100, 2),
    (7, "bob", SELL, 105, 64),
]


@dataclass(frozen=True)
class DepthCase:
    name: str
    levels: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]


DEPTH_CASES = [
    DepthCase("all levels, summed per price, best first", 20,
              bids=[(100, 3), (99, 4), (97, 8)], asks=[(101, 16), (105, 96)]),
    DepthCase("top of book only", 1, bids=[(100, 3)], asks=[(101, 16)]),
    DepthCase("a limit longer than one side", 2,
              bids=[(100, 3), (99, 4)], asks=[(101, 16), (105, 96)]),
    DepthCase("exactly the number of bid levels", 3,
              bids=[(100, 3), (99, 4), (97, 8)], asks=[(101, 16), (105, 96)]),
    DepthCase("zero levels is an empty view", 0, bids=[], asks=[]),
]


@pytest.mark.parametrize("case", DEPTH_CASES, ids=lambda c: c.name)
def test_depth(book: Book, case: DepthCase) -> None:
    rest(book, *DEPTH_BOOK)

    assert book.depth(case.levels) == (case.bids, case.asks)


def test_depth_follows_fills_and_reduces(book: Book) -> None:
    rest(book, *DEPTH_BOOK)

    take(book, SELL, 99, 4)  # 3 from the 100 level, 1 from 99
    book.reduce(7, 60)
    book.validate_internal_state()

    assert book.depth(2) == ([(99, 3), (97, 8)], [(101, 16), (105, 36)])


@dataclass(frozen=True)
class CrossCase:
    name: str
    side: int
    price_ticks: int
    crosses: bool


# Against a book with best bid 100 and best ask 102.
CROSS_CASES = [
    CrossCase("buy at the best ask", BUY, 102, True),
    CrossCase("buy through the best ask", BUY, 110, True),
    CrossCase("buy inside the spread", BUY, 101, False),
    CrossCase("buy at the best bid", BUY, 100, False),
    CrossCase("sell at the best bid", SELL, 100, True),
    CrossCase("sell through the best bid", SELL, 90, True),
    CrossCase("sell inside the spread", SELL, 101, False),
    CrossCase("sell at the best ask", SELL, 102, False),
]


@pytest.mark.parametrize("case", CROSS_CASES, ids=lambda c: c.name)
def test_crosses(book: Book, case: CrossCase) -> None:
    rest(book, (1, "bob", BUY, 100, 1), (2, "bob", SELL, 102, 1), (3, "bob", SELL, 103, 1))

    assert book.crosses(case.side, case.price_ticks) == case.crosses
    # crosses is exactly "match would fill something" when STP does not intervene
    assert (book.walk(case.side, case.price_ticks, 1)[0] > 0) == case.crosses


@pytest.mark.parametrize("side", [BUY, SELL], ids=["buy", "sell"])
def test_crosses_needs_resting_orders_on_the_other_side(book: Book, side: int) -> None:
    rest(book, (1, "bob", side, 100, 1))
    far_through_ticks = 0 if side == BUY else 1_000  # a taker price deep through the order

    assert not book.crosses(side, far_through_ticks)  # same side: nothing to take
    assert book.crosses(-side, far_through_ticks)
    assert book.crosses(-side, 100)


# -- walk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WalkCase:
    name: str
    side: int
    limit_ticks: int
    qty_lots: int
    account: str | None
    lots: int
    cost_ticks_lots: int  # sum of price x lots over the fills


# Asks: 101 (bob 2, alice 1, carol 4), 103 (carol 5). Bids: 99 (alice 3), 98 (bob 6).
WALK_BOOK: list[Spec] = [
    (1, "bob", SELL, 101, 2),
    (2, "alice", SELL, 101, 1),
    (3, "carol", SELL, 101, 4),
    (4, "carol", SELL, 103, 5),
    (5, "alice", BUY, 99, 3),
    (6, "bob", BUY, 98, 6),
]

WALK_CASES = [
    WalkCase("one level, part of it", BUY, 101, 3, None, 3, 3 * 101),
    WalkCase("two levels", BUY, 103, 9, None, 9, 7 * 101 + 2 * 103),
    WalkCase("more than the book holds", BUY, 200, 50, None, 12, 7 * 101 + 5 * 103),
    WalkCase("stopped by the limit", BUY, 102, 50, None, 7, 7 * 101),
    WalkCase("nothing at a passive limit", BUY, 100, 5, None, 0, 0),
    WalkCase("STP mid-level", BUY, 103, 9, "alice", 2, 2 * 101),
    WalkCase("STP not reached", BUY, 101, 2, "alice", 2, 2 * 101),
    WalkCase("STP at the head", SELL, 90, 4, "alice", 0, 0),
    WalkCase("a sell through both bids", SELL, 98, 5, "carol", 5, 3 * 99 + 2 * 98),
    WalkCase("zero lots", BUY, 200, 0, None, 0, 0),
]


@pytest.mark.parametrize("case", WALK_CASES, ids=lambda c: c.name)
def test_walk_predicts_match_without_mutating(book: Book, case: WalkCase) -> None:
    rest(book, *WALK_BOOK)
    before = snapshot(book)
    depth_before = book.depth()

    walked = book.walk(case.side, case.limit_ticks, case.qty_lots, case.account)
    book.validate_internal_state()

    assert walked == (case.lots, case.cost_ticks_lots)
    assert snapshot(book) == before
    assert book.depth() == depth_before
    take(book, case.side, case.limit_ticks, case.qty_lots, case.account)  # asserts agreement


# -- bookkeeping --------------------------------------------------------------------------------


def test_orders_lists_bids_then_asks_best_first_fifo_within_a_level(book: Book) -> None:
    rest(book, *DEPTH_BOOK)

    assert [o.order_id for o in book.orders()] == [1, 6, 5, 3, 4, 2, 7]
    assert len(book) == 7
    assert 4 in book
    assert 8 not in book
    order = book.get(4)
    assert order is not None
    assert (order.account, order.side, order.price_ticks) == ("bob", SELL, 101)
    assert book.get(8) is None


def test_add_rejects_a_duplicate_id_and_an_empty_order(book: Book) -> None:
    rest(book, (1, "bob", BUY, 100, 1))

    with pytest.raises(AssertionError):
        book.add(RestingOrder(1, "carol", SELL, 105, 1))
    with pytest.raises(AssertionError):
        book.add(RestingOrder(2, "carol", SELL, 105, 0))
    book.validate_internal_state()
    assert snapshot(book) == [(1, "bob", BUY, 100, 1)]


def test_validate_catches_a_crossed_book(book: Book) -> None:
    # add() trusts the caller not to cross; the check is where the state is validated
    rest(book, (1, "bob", BUY, 100, 1))
    book.add(RestingOrder(2, "carol", SELL, 100, 1))

    with pytest.raises(AssertionError, match="crossed"):
        book.validate_internal_state()
