"""Reduce-only orders never add up to more than the position (the engine's invariant, and what
`records.trim_reduce_only` keeps after fills): a new one gets what the open reduce-only orders
leave of |position| (the oldest keep their quantity), and is refused (-2022) when they leave
nothing; an amended one likewise. Found by the engine's state machine: a second reduce-only
order was trimmed to the position alone, so the two together exceeded it.

alice is long 1 BTC (bought from bob at 60,000; mark = index = 60,000).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import pytest

from perpex import Exchange, ExchangeError

BTC: Final = "BTCUSDT"


@pytest.fixture
def ex() -> Exchange:
    exchange = Exchange(mark_price="index")
    exchange.set_index_price(BTC, "60000")
    exchange.deposit("alice", "100000")
    exchange.deposit("bob", "1000000")
    exchange.place_order("bob", BTC, "SELL", "LIMIT", "1", "60000")
    exchange.place_order("alice", BTC, "BUY", "MARKET", "1")
    assert exchange.position("alice", BTC).size == Decimal(1)
    return exchange


def reduce_only_total(ex: Exchange) -> Decimal:
    return sum((o.orig_qty - o.executed_qty for o in ex.open_orders("alice", BTC)
                if o.reduce_only), Decimal(0))  # fmt: skip


@pytest.mark.parametrize(
    ("first", "second", "second_qty"),
    [
        ("0.3", "1", "0.7"),  # trimmed to what the first leaves
        ("0.3", "0.5", "0.5"),  # fits: as asked
        ("1", "0.1", None),  # nothing left: refused
        ("2", "0.1", None),  # the first was trimmed to the position: nothing left
    ],
)
def test_a_new_reduce_only_order_gets_what_the_others_leave(
    ex: Exchange, first: str, second: str, second_qty: str | None
) -> None:
    ex.place_order("alice", BTC, "SELL", "LIMIT", first, "61000", reduce_only=True)
    if second_qty is None:
        before = ex.engine.state_hash()
        with pytest.raises(ExchangeError) as refused:
            ex.place_order("alice", BTC, "SELL", "LIMIT", second, "62000", reduce_only=True)
        assert refused.value.code == -2022
        assert ex.engine.state_hash() == before
    else:
        order = ex.place_order("alice", BTC, "SELL", "LIMIT", second, "62000", reduce_only=True)
        assert order.orig_qty == Decimal(second_qty)
    assert reduce_only_total(ex) <= 1
    ex.check_invariants()


def test_an_amended_reduce_only_order_gets_what_the_others_leave(ex: Exchange) -> None:
    first = ex.place_order("alice", BTC, "SELL", "LIMIT", "0.4", "61000", reduce_only=True)
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.5", "62000", reduce_only=True)
    amended = ex.modify_order("alice", BTC, first.order_id, side="SELL", quantity="0.9",
                              price="61000")  # fmt: skip
    assert amended.orig_qty == Decimal("0.5")  # 1 less the other's 0.5
    assert reduce_only_total(ex) == 1
    ex.check_invariants()


def test_a_plain_closing_order_is_not_limited_by_them(ex: Exchange) -> None:
    """Only reduce-only orders share the budget: a plain sell may still flip the position."""
    ex.place_order("alice", BTC, "SELL", "LIMIT", "1", "61000", reduce_only=True)
    plain = ex.place_order("alice", BTC, "SELL", "LIMIT", "1.5", "62000")
    assert plain.orig_qty == Decimal("1.5")
    ex.check_invariants()
