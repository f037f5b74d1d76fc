"""Differential test: the fast book and the naive one, fed the same random stream, agree.

The stream is what an exchange does to a book: limit orders that take what they cross (with
self-trade prevention for the taker's account in each of its three modes) and rest the
remainder, cancels of
any earlier id (live, filled, cancelled or never used), reduces, market sweeps and read-only
walks. After every step both books validate and show the same depth, best prices and orders.
"""

from __future__ import annotations

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from perpex.core.book import (
    BUY,
    EXPIRE_BOTH,
    EXPIRE_MAKER,
    EXPIRE_TAKER,
    SELL,
    MatchResult,
    OrderBook,
    RestingOrder,
)
from reference_book import ReferenceBook

Book = OrderBook | ReferenceBook

# Few accounts so that a taker often meets its own resting order.
ACCOUNTS = ("alice", "bob", "carol")
MID_TICKS = 1_000
# A narrow band of prices so that levels hold several orders and takers cross often.
BAND_TICKS = 4
FAR_TICKS = 1_000_000  # a market order's limit: further than any price in the band

accounts = st.sampled_from(ACCOUNTS)
sides = st.sampled_from((BUY, SELL))
prices_ticks = st.integers(MID_TICKS - BAND_TICKS, MID_TICKS + BAND_TICKS)
lots = st.integers(1, 6)
picks = st.integers(0, 2**16)  # an index into whatever list the rule picks from
stps = st.sampled_from((EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH))

Outcome = tuple[list[tuple[int, int, int, int]], int, bool, list[tuple[int, int]]]


def observed(result: MatchResult) -> Outcome:
    """What both books must agree on: each fill with the maker's lots left after it, and the
    own orders self-trade prevention took off (id, lots left)."""
    fills = [
        (maker.order_id, fill_lots, price_ticks, maker.remaining_lots)
        for maker, fill_lots, price_ticks in result.fills
    ]
    expired = [(o.order_id, o.remaining_lots) for o in result.expired or ()]
    return fills, result.filled_lots, result.self_trade, expired


def take(
    book: Book, side: int, limit_ticks: int, qty_lots: int, account: str | None, stp: int
) -> Outcome:
    walked = book.walk(side, limit_ticks, qty_lots, account, stp)
    result = book.match(side, limit_ticks, qty_lots, account, stp)
    cost = sum(fill_lots * price_ticks for _, fill_lots, price_ticks in result.fills)
    assert walked == (result.filled_lots, cost), "walk did not predict match"
    return observed(result)


class TwoBooks(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.fast = OrderBook()
        self.reference = ReferenceBook()
        self.next_order_id = 1

    def books(self) -> tuple[Book, Book]:
        return self.fast, self.reference

    @rule(account=accounts, side=sides, price_ticks=prices_ticks, qty_lots=lots, stp=stps)
    def place_limit(
        self, account: str, side: int, price_ticks: int, qty_lots: int, stp: int
    ) -> None:
        order_id = self.next_order_id
        self.next_order_id += 1
        outcomes = []
        for book in self.books():
            crosses = book.crosses(side, price_ticks)
            fills: list[tuple[int, int, int, int]] = []
            expired: list[tuple[int, int]] = []
            filled_lots, self_trade = 0, False
            if crosses:
                fills, filled_lots, self_trade, expired = take(
                    book, side, price_ticks, qty_lots, account, stp
                )
            left_lots = qty_lots - filled_lots
            # A self-trade expires the taker (EXPIRE_TAKER/BOTH), so it rests nothing;
            # otherwise the remainder rests, and it cannot cross: matching stopped at the
            # limit or ran out of book (EXPIRE_MAKER took the account's own orders off).
            if left_lots and not self_trade:
                assert not book.crosses(side, price_ticks)
                book.add(RestingOrder(order_id, account, side, price_ticks, left_lots))
            for expired_id, _ in expired:
                assert expired_id not in book
            outcomes.append((crosses, fills, filled_lots, self_trade, expired, order_id in book))
        assert outcomes[0] == outcomes[1]

    @rule(pick=picks)
    def cancel(self, pick: int) -> None:
        # 0 and next_order_id were never issued; the rest may be live, filled or cancelled
        order_id = pick % (self.next_order_id + 1)
        cancelled = []
        for book in self.books():
            order = book.cancel(order_id)
            cancelled.append(None if order is None else (order.order_id, order.remaining_lots))
        assert cancelled[0] == cancelled[1]

    @rule(pick=picks, lots_seed=picks)
    def reduce(self, pick: int, lots_seed: int) -> None:
        # Mostly a live order; otherwise any id, which both books must refuse the same way.
        live = list(self.reference.orders())
        if live and pick % 4:
            order = live[pick % len(live)]
            reduce_lots = 1 + lots_seed % order.remaining_lots  # sometimes all of it
            for book in self.books():
                book.reduce(order.order_id, reduce_lots)
            return
        order_id = pick % (self.next_order_id + 1)
        if order_id in self.reference:
            return  # a live order: the branch above covers it
        for book in self.books():
            with pytest.raises(KeyError):
                book.reduce(order_id, 1)

    @rule(account=st.none() | accounts, side=sides, qty_lots=st.integers(1, 30), stp=stps)
    def sweep(self, account: str | None, side: int, qty_lots: int, stp: int) -> None:
        limit_ticks = FAR_TICKS if side == BUY else -FAR_TICKS
        outcomes = [take(book, side, limit_ticks, qty_lots, account, stp) for book in self.books()]
        assert outcomes[0] == outcomes[1]

    @rule(
        account=st.none() | accounts,
        side=sides,
        limit_ticks=prices_ticks,
        qty_lots=st.integers(0, 30),
        stp=stps,
    )
    def probe_walk(
        self, account: str | None, side: int, limit_ticks: int, qty_lots: int, stp: int
    ) -> None:
        walks = [book.walk(side, limit_ticks, qty_lots, account, stp) for book in self.books()]
        assert walks[0] == walks[1]

    @invariant()
    def books_agree(self) -> None:
        for book in self.books():
            book.validate_internal_state()
        fast, reference = self.books()
        assert fast.depth(100) == reference.depth(100)
        assert fast.depth(2) == reference.depth(2)
        assert (fast.best_bid(), fast.best_ask()) == (reference.best_bid(), reference.best_ask())
        assert len(fast) == len(reference)
        for price_ticks in range(MID_TICKS - BAND_TICKS - 1, MID_TICKS + BAND_TICKS + 2):
            for side in (BUY, SELL):
                assert fast.crosses(side, price_ticks) == reference.crosses(side, price_ticks)
        assert [(o.order_id, o.remaining_lots) for o in fast.orders()] == [
            (o.order_id, o.remaining_lots) for o in reference.orders()
        ]


TwoBooks.TestCase.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
TestTwoBooks = TwoBooks.TestCase
