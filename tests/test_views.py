"""The `Order` views of the hot path are built lazily, and are ordinary frozen dataclasses.

`place_order` and `cancel_order` return an `Order` whose names and decimals are computed when
first read (perpex.views). Everything a caller can do with a dataclass must see the same
fields and values as an `Order` built field by field: equality, hash, repr, pickle, copy,
`dataclasses.replace` / `asdict`, and immutability.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from decimal import Decimal

import pytest

from perpex import Exchange, Order

BTC = "BTCUSDT"


@pytest.fixture()
def ex() -> Exchange:
    ex = Exchange()
    ex.set_index_price(BTC, "60000")
    ex.deposit("maker", "1000000")
    ex.deposit("taker", "1000000")
    return ex


def eager(order: Order) -> Order:
    """The same order, built field by field."""
    return Order(**{f.name: getattr(order, f.name) for f in dataclasses.fields(Order)})


def test_a_resting_order(ex: Exchange) -> None:
    order = ex.place_order("maker", BTC, "SELL", "LIMIT", "0.5", "60010.5")
    assert order == Order(
        order_id=order.order_id, client_order_id=None, symbol=BTC, side="SELL", type="LIMIT",
        time_in_force="GTC", price=Decimal("60010.5"), orig_qty=Decimal("0.500"),
        executed_qty=Decimal("0.000"), avg_price=Decimal(0), status="NEW", reduce_only=False,
    )  # fmt: skip


def test_a_taker_filled_over_two_levels(ex: Exchange) -> None:
    ex.place_order("maker", BTC, "SELL", "LIMIT", "0.1", "60000")
    ex.place_order("maker", BTC, "SELL", "LIMIT", "0.2", "60001")
    order = ex.place_order("taker", BTC, "BUY", "MARKET", "0.3", client_order_id="t1")
    assert (order.status, order.type, order.time_in_force) == ("FILLED", "MARKET", "IOC")
    assert order.executed_qty == Decimal("0.3")
    # (0.1 × 60000 + 0.2 × 60001) / 0.3, rounded half-even to 8 decimals
    assert order.avg_price == Decimal("60000.66666667")
    assert str(order.avg_price) == "60000.66666667"
    assert order.client_order_id == "t1"


def test_a_partly_filled_limit_that_rests_and_a_canceled_one(ex: Exchange) -> None:
    ex.place_order("maker", BTC, "SELL", "LIMIT", "0.1", "60000")
    order = ex.place_order("taker", BTC, "BUY", "LIMIT", "0.3", "60000")
    assert (order.status, order.executed_qty, order.avg_price) == (
        "PARTIALLY_FILLED", Decimal("0.1"), Decimal("60000")
    )  # fmt: skip
    canceled = ex.cancel_order("taker", BTC, order.order_id)
    assert canceled == dataclasses.replace(order, status="CANCELED")


def test_a_lazy_order_behaves_as_a_dataclass(ex: Exchange) -> None:
    orders = [
        ex.place_order("maker", BTC, "SELL", "LIMIT", "0.5", "60010.5"),
        ex.place_order("maker", BTC, "BUY", "LIMIT", "0.5", "59990"),
    ]
    orders.append(ex.cancel_order("maker", BTC, orders[1].order_id))
    for lazy in orders:
        # the fresh view compares, hashes and prints as the eager one (each read fills it)
        fresh = ex.open_orders("maker")[0] if lazy.status == "NEW" else lazy
        for other in (lazy, fresh):
            assert other == eager(other) and eager(other) == other
            assert hash(other) == hash(eager(other))
            assert repr(other) == repr(eager(other))
        assert pickle.loads(pickle.dumps(lazy)) == lazy
        assert copy.copy(lazy) == lazy and copy.deepcopy(lazy) == lazy
        assert dataclasses.asdict(lazy) == dataclasses.asdict(eager(lazy))
        assert "_lazy" not in pickle.loads(pickle.dumps(lazy)).__dict__
        with pytest.raises(dataclasses.FrozenInstanceError):
            lazy.status = "FILLED"  # type: ignore[misc]
        with pytest.raises(AttributeError):
            _ = lazy.no_such_field  # type: ignore[attr-defined]


def test_an_unread_view_pickles_whole(ex: Exchange) -> None:
    order = ex.place_order("maker", BTC, "SELL", "LIMIT", "0.5", "60010.5")
    copied = pickle.loads(pickle.dumps(order))  # before any lazy field was read
    assert copied.price == Decimal("60010.5") and copied == order
