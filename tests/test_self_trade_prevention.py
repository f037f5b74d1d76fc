"""Self-trade prevention (Binance's `selfTradePreventionMode`): what a taker does when it
reaches a resting order of its own account. EXPIRE_TAKER (the default) expires the taker's
rest there; EXPIRE_MAKER cancels that resting order and matching goes on; EXPIRE_BOTH cancels
it and expires the taker's rest. The fills before it stand in every mode.

The book (mark = index = 60,000, default markets): asks of bob 0.1 @ 60,005, alice 0.1 @
60,010, bob 0.1 @ 60,020. alice then buys 0.3 at 60,030 (or at market) in each mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.messages import (
    EndReason,
    OrderCanceled,
    OrderType,
    PlaceOrder,
    SelfTradePrevention,
    TimeInForce,
    TradeExecuted,
)

BTC: Final = "BTCUSDT"


@pytest.fixture
def ex() -> Exchange:
    exchange = Exchange(mark_price="index")
    exchange.set_index_price(BTC, "60000")
    exchange.deposit("alice", "100000")
    exchange.deposit("bob", "1000000")
    exchange.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "60005")
    exchange.place_order("alice", BTC, "SELL", "LIMIT", "0.1", "60010")
    exchange.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "60020")
    exchange.take_events()
    return exchange


def settled(ex: Exchange) -> None:
    ex.check_invariants()
    deposits, held = ex.engine.conservation_atoms()
    assert deposits == held


def asks(ex: Exchange) -> list[tuple[str, str]]:
    spec = ex.engine.market(BTC).spec
    return [
        (o.account, str(spec.price_to_decimal(o.price_ticks)))
        for o in ex.engine.market(BTC).book.orders()
        if o.side == -1
    ]


@dataclass(frozen=True)
class Case:
    mode: str
    type: str  # LIMIT at 60,030 or MARKET
    status: str  # of alice's buy
    executed: str
    fill_prices: list[str]
    own_ask_canceled: bool
    asks_after: list[tuple[str, str]]
    bid_rests: bool  # the buy's rest on the book


CASES: Final = [
    Case("EXPIRE_TAKER", "LIMIT", "EXPIRED", "0.1", ["60005.0"], False,
         [("alice", "60010.0"), ("bob", "60020.0")], False),
    Case("EXPIRE_MAKER", "LIMIT", "FILLED", "0.2", ["60005.0", "60020.0"], True, [], True),
    Case("EXPIRE_BOTH", "LIMIT", "EXPIRED", "0.1", ["60005.0"], True, [("bob", "60020.0")],
         False),
    Case("EXPIRE_TAKER", "MARKET", "EXPIRED", "0.1", ["60005.0"], False,
         [("alice", "60010.0"), ("bob", "60020.0")], False),
    Case("EXPIRE_MAKER", "MARKET", "EXPIRED", "0.2", ["60005.0", "60020.0"], True, [], False),
    Case("EXPIRE_BOTH", "MARKET", "EXPIRED", "0.1", ["60005.0"], True, [("bob", "60020.0")],
         False),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.mode}-{c.type}")
def test_modes(ex: Exchange, case: Case) -> None:
    (own_ask,) = ex.open_orders("alice", BTC)
    price = "60030" if case.type == "LIMIT" else None
    tif = "GTC" if case.type == "LIMIT" else "IOC"
    order = ex.place_order("alice", BTC, "BUY", case.type, "0.3", price, time_in_force=tif,
                           self_trade_prevention=case.mode)  # fmt: skip
    events = ex.take_events()
    trades = [e for e in events if isinstance(e, TradeExecuted)]
    spec = ex.engine.market(BTC).spec
    assert [str(spec.price_to_decimal(t.price_ticks)) for t in trades] == case.fill_prices
    assert all(t.maker_account == "bob" for t in trades)  # never a trade with itself
    assert order.executed_qty == Decimal(case.executed)
    # the buy's own end: expired at its own ask (EXPIRE_TAKER/BOTH), or resting/filled
    rest = [e for e in events if isinstance(e, OrderCanceled) and e.order_id == order.order_id]
    if case.mode != "EXPIRE_MAKER":
        assert [(e.reason, e.remaining_lots) for e in rest] == [(EndReason.SELF_TRADE, 200)]
        assert order.status == "EXPIRED"
    own = [e for e in events if isinstance(e, OrderCanceled) and e.order_id == own_ask.order_id]
    if case.own_ask_canceled:
        assert [(e.reason, e.remaining_lots) for e in own] == [(EndReason.SELF_TRADE, 100)]
        assert events.index(own[0]) < events.index(trades[-1])  # reached before the last fill
    else:
        assert own == []
    assert asks(ex) == case.asks_after
    open_ids = {o.order_id for o in ex.open_orders("alice", BTC)}
    assert (own_ask.order_id in open_ids) == (not case.own_ask_canceled)
    assert (order.order_id in open_ids) == case.bid_rests
    if case.bid_rests:
        assert ex.open_orders("alice", BTC)[0].executed_qty == Decimal("0.2")
    settled(ex)


def test_expire_maker_frees_the_margin_of_the_canceled_order(ex: Exchange) -> None:
    """alice's ask reserved margin; EXPIRE_BOTH releases it as a cancel would."""
    reserved_before = ex.engine.accounts["alice"].reserved_atoms
    assert reserved_before > 0
    ex.place_order(
        "alice", BTC, "BUY", "LIMIT", "0.2", "60010", self_trade_prevention="EXPIRE_BOTH"
    )
    assert ex.position("alice", BTC).size == Decimal("0.1")  # bob's 60,005, then its own ask
    assert ex.engine.accounts["alice"].reserved_atoms == 0
    assert ex.open_orders("alice", BTC) == []
    settled(ex)


def test_expire_maker_when_only_own_orders_are_in_reach(ex: Exchange) -> None:
    """Nothing but its own ask crosses: the ask is canceled and the bid rests at 60,010."""
    ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59990")  # (a bid, not in reach)
    ex.cancel_order("bob", BTC, ex.open_orders("bob", BTC)[0].order_id)  # bob's 60,005 ask
    order = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "60010",
                           self_trade_prevention="EXPIRE_MAKER")  # fmt: skip
    assert order.status == "NEW" and order.executed_qty == 0
    assert [o.order_id for o in ex.open_orders("alice", BTC)] == [order.order_id]
    assert asks(ex) == [("bob", "60020.0")]
    settled(ex)


def test_fok_counts_what_expire_maker_would_reach(ex: Exchange) -> None:
    """A FOK for 0.2 at 60,020: bob's two asks fill it once alice's own ask is passed over."""
    with pytest.raises(ExchangeError) as refused:  # EXPIRE_TAKER stops at 0.1: not fillable
        ex.place_order("alice", BTC, "BUY", "LIMIT", "0.2", "60020", time_in_force="FOK")
    assert refused.value.code == -5021
    assert len(ex.open_orders("alice", BTC)) == 1  # a refusal changes nothing
    order = ex.place_order("alice", BTC, "BUY", "LIMIT", "0.2", "60020", time_in_force="FOK",
                           self_trade_prevention="EXPIRE_MAKER")  # fmt: skip
    assert (order.status, order.executed_qty) == ("FILLED", Decimal("0.2"))
    settled(ex)


def test_protection_of_an_expired_entry_goes_with_it() -> None:
    """An entry resting with a stop-loss/take-profit pair attached, canceled by EXPIRE_MAKER:
    the pair, which waited for that entry, is canceled too."""
    ex = Exchange(mark_price="index")
    ex.set_index_price(BTC, "60000")
    ex.deposit("alice", "100000")
    ex.deposit("bob", "1000000")
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.1", "60010", stop_loss="61000",
                   take_profit="59000")  # fmt: skip
    assert [o.type for o in ex.open_orders("alice", BTC)] == [
        "LIMIT",
        "STOP_MARKET",
        "TAKE_PROFIT_MARKET",
    ]
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "60020")
    ex.place_order(
        "alice", BTC, "BUY", "LIMIT", "0.1", "60020", self_trade_prevention="EXPIRE_MAKER"
    )
    assert ex.position("alice", BTC).size == Decimal("0.1")
    # nothing of the canceled entry is left: no order, no stop, no take-profit
    assert [o.type for o in ex.open_orders("alice", BTC)] == []
    settled(ex)


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"self_trade_prevention": "NONE"}, -1100),
        ({"self_trade_prevention": "expire_maker"}, -1100),
        ({"self_trade_prevention": 1}, -1100),
        ({"type": "STOP_MARKET", "stop_price": "59000", "self_trade_prevention": "EXPIRE_MAKER"},
         -1106),
    ],
)  # fmt: skip
def test_bad_modes_are_refused_and_change_nothing(
    ex: Exchange, kwargs: dict[str, object], code: int
) -> None:
    before = ex.engine.state_hash()
    args: dict[str, object] = {"type": "LIMIT", "quantity": "0.1", "price": "60030"}
    args.update(kwargs)
    if args["type"] == "STOP_MARKET":
        args["price"] = None
    with pytest.raises(ExchangeError) as refused:
        ex.place_order("alice", BTC, "BUY", **args)  # type: ignore[arg-type]
    assert refused.value.code == code
    assert ex.engine.state_hash() == before


def test_typed_command_and_its_check() -> None:
    """`submit` takes the mode on a PlaceOrder; a value that is not a mode is refused whole."""
    ex = Exchange(mark_price="index")
    ex.set_index_price(BTC, "60000")
    ex.deposit("alice", "100000")
    ex.place_order("alice", BTC, "SELL", "LIMIT", "0.1", "60010")
    buy = PlaceOrder("alice", BTC, 1, OrderType.LIMIT, TimeInForce.GTC, 100, 600_100,
                     self_trade_prevention=SelfTradePrevention.EXPIRE_MAKER)  # fmt: skip
    (events,) = ex.submit([buy])  # one list of events per command
    assert [type(e).__name__ for e in events] == ["OrderAccepted", "OrderCanceled"]
    with pytest.raises(ExchangeError) as refused:
        ex.submit([PlaceOrder("alice", BTC, 1, OrderType.LIMIT, TimeInForce.GTC, 100, 600_100,
                              self_trade_prevention=7)])  # type: ignore[arg-type]  # fmt: skip
    assert refused.value.code == -1100
