"""Exit ladders: scale out of a position with take-profit targets and a stop that moves to
break-even (and may become a trailing stop) as targets fill (perpex.core.conditional).

Markets are perpex's defaults (BTCUSDT tick 0.1, step 0.001, taker fee 0.05 %, maker 0.02 %);
the mark follows the index. alice goes long (or short) 1 BTC at 60,000 as a taker: her entry
fee is 60,000 × 0.05 % = 30. Break-even for what is left of a long of cost C (MECHANICS-free,
derived here): the lowest tick p with p·q·(1 − f) ≥ C·(1 + f), f the taker fee, so that
selling the rest at p pays back its cost, its share of the entry fee and the exit fee; for
0.5 BTC at 60,000: p ≥ 60,000 × 1.0005 / 0.9995 = 60,060.03 → 60,060.1. For a short, the
highest tick with p·q·(1 + f) ≤ |C|·(1 − f): 60,000 × 0.9995 / 1.0005 = 59,940.03 → 59,940.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import TypeVar

import pytest

from perpex import Exchange, ExchangeError, Order
from perpex.core.conditional import break_even_price_ticks
from perpex.core.engine import Engine
from perpex.core.messages import (
    ConditionalEndReason,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    Event,
    ExitLadderPlaced,
    ExitLadderStopMoved,
    TradeExecuted,
    UpdateIndex,
)

E = TypeVar("E", bound=Event)
BTC = "BTCUSDT"
TAKER_FEE = Decimal("0.0005")
TICK = Decimal("0.1")
ATOM = Decimal("0.000001")


def fee(notional: Decimal) -> Decimal:
    return (notional * TAKER_FEE).quantize(ATOM, rounding=ROUND_CEILING)


def settled(ex: Exchange) -> None:
    ex.check_invariants()
    deposits, held = ex.engine.conservation_atoms()
    assert deposits == held


def of_type(events: list[Event], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def move(ex: Exchange, price: str) -> list[Event]:
    before = len(ex.events())
    ex.set_index_price(BTC, price)
    return ex.events()[before:]


def refused(code: int, ex: Exchange, call: object, *args: object, **kwargs: object) -> None:
    before, next_id = ex.state_hash(), ex.engine.next_order_id
    assert callable(call)
    with pytest.raises(ExchangeError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value.msg
    assert (ex.state_hash(), ex.engine.next_order_id) == (before, next_id)


def exchange_with(side: str = "BUY", qty: str = "1") -> Exchange:
    """alice holds `side` `qty` BTC at 60,000 (taker); bob (maker) and carol have deep wallets."""
    ex = Exchange(mark_price="index")
    ex.set_index_price(BTC, "60000")
    ex.deposit("alice", "100000")
    ex.deposit("bob", "10000000")
    ex.deposit("carol", "1000000")
    other = "SELL" if side == "BUY" else "BUY"
    ex.place_order("bob", BTC, other, "LIMIT", qty, "60000")
    assert ex.place_order("alice", BTC, side, "LIMIT", qty, "60000").status == "FILLED"
    return ex


@pytest.fixture
def long_1btc() -> Exchange:
    return exchange_with("BUY", "1")


THREE_TARGETS = [("61000", "0.5"), ("62000", "0.3"), ("63000", "0.2")]


def test_a_ladder_splits_the_position_and_adds_a_close_position_stop(long_1btc: Exchange) -> None:
    ex = long_1btc
    before = len(ex.events())
    orders = ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="58000")
    shown = [(o.type, o.side, o.stop_price, o.orig_qty, o.reduce_only, o.close_position)
             for o in orders]  # fmt: skip
    assert shown == [
        ("TAKE_PROFIT_MARKET", "SELL", Decimal("61000"), Decimal("0.5"), True, False),
        ("TAKE_PROFIT_MARKET", "SELL", Decimal("62000"), Decimal("0.3"), True, False),
        ("TAKE_PROFIT_MARKET", "SELL", Decimal("63000"), Decimal("0.2"), True, False),
        ("STOP_MARKET", "SELL", Decimal("58000"), Decimal("0"), False, True),
    ]
    (placed,) = of_type(ex.events()[before:], ExitLadderPlaced)
    assert placed.target_order_ids == tuple(o.order_id for o in orders[:3])
    assert placed.stop_order_id == orders[3].order_id
    assert ex.open_orders("alice") == orders
    settled(ex)


def test_fractions_round_down_to_the_step_and_the_last_target_takes_the_rest() -> None:
    ex = exchange_with("BUY", "0.999")
    thirds = [("61000", "0.333333"), ("62000", "0.333333"), ("63000", "0.333334")]
    orders = ex.place_exit_ladder("alice", BTC, thirds, stop_loss="58000")
    # 999 lots × 0.333333 = 332.9997 -> 332, twice; the last: 999 − 664 = 335
    assert [o.orig_qty for o in orders[:3]] == [Decimal("0.332"), Decimal("0.332"),
                                                 Decimal("0.335")]  # fmt: skip
    assert sum(o.orig_qty for o in orders[:3]) == Decimal("0.999")
    settled(ex)


def break_even_long(entry: Decimal) -> Decimal:
    exact = entry * (1 + TAKER_FEE) / (1 - TAKER_FEE)
    return (exact / TICK).to_integral_value(rounding=ROUND_CEILING) * TICK


def break_even_short(entry: Decimal) -> Decimal:
    exact = entry * (1 - TAKER_FEE) / (1 + TAKER_FEE)
    return (exact / TICK).to_integral_value(rounding=ROUND_FLOOR) * TICK


def test_break_even_prices_round_against_the_trader() -> None:
    ex = exchange_with()
    btc = ex.engine.market(BTC).spec
    # 0.5 BTC at 60,000: cost 30,000 USDT = 30,000 × 10^6 atoms
    long_ticks = break_even_price_ticks(btc, 500, 30_000 * 10**6)
    short_ticks = break_even_price_ticks(btc, -500, -30_000 * 10**6)
    assert long_ticks * TICK == break_even_long(Decimal(60000)) == Decimal("60060.1")
    assert short_ticks * TICK == break_even_short(Decimal(60000)) == Decimal("59940.0")
    # and it is the first tick that loses nothing: one tick nearer the entry loses
    for price, ok in ((Decimal("60060.1"), True), (Decimal("60060.0"), False)):
        net = Decimal("0.5") * (price - 60000) - fee(Decimal("0.5") * price) - fee(Decimal(30000))
        assert (net >= 0) == ok, (price, net)


def test_the_stop_moves_to_break_even_after_the_first_target_and_loses_nothing_there(
    long_1btc: Exchange,
) -> None:
    ex = long_1btc
    targets = [("61000", "0.5"), ("62000", "0.5")]
    first, _, stop = ex.place_exit_ladder("alice", BTC, targets, stop_loss="58000")
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.5", "61000")
    events = move(ex, "61000")
    (fired,) = of_type(events, ConditionalOrderTriggered)
    assert fired.order_id == first.order_id
    (moved,) = of_type(events, ExitLadderStopMoved)
    assert (moved.old_order_id, moved.targets_filled) == (stop.order_id, 1)
    assert ConditionalOrderCanceled(
        stop.order_id, "alice", BTC, ConditionalEndReason.REPLACED
    ) in events  # fmt: skip
    (accepted,) = [e for e in of_type(events, ConditionalOrderAccepted)
                   if e.order_id == moved.new_order_id]  # fmt: skip
    assert accepted.close_position and accepted.kind.name == "STOP_MARKET"
    assert accepted.stop_price_ticks * TICK == break_even_long(Decimal(60000))
    assert ex.position("alice", BTC).size == Decimal("0.5")
    # stopping out exactly at break-even: a bid there takes the rest
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.5", "60060.1")
    events = move(ex, "60060.1")
    assert [e.order_id for e in of_type(events, ConditionalOrderTriggered)] == [accepted.order_id]
    (trade,) = of_type(events, TradeExecuted)
    assert trade.price_ticks * TICK == Decimal("60060.1") and trade.qty_lots == 500
    assert ex.position("alice", BTC).size == 0
    # target 1: +500 − fee(30,500) = 484.75; the rest: +30.05 − fee(30,030.05) = 15.034975;
    # the entry fee: −30
    first = Decimal("0.5") * 1000 - fee(Decimal("30500"))
    rest = Decimal("0.5") * Decimal("60.1") - fee(Decimal("30030.05"))
    assert rest - fee(Decimal(30000)) >= 0  # the remainder's share of the entry fee is covered
    assert ex.account("alice").wallet_balance == 100000 - 30 + first + rest
    assert ex.account("alice").wallet_balance == Decimal("100469.784975")
    # the rest of the ladder went with the position
    assert ex.open_orders("alice") == [] and ex.engine.conditionals.ladders == {}
    settled(ex)


def test_a_short_ladder_moves_its_stop_down_to_break_even() -> None:
    ex = exchange_with("SELL", "1")
    *targets, stop = ex.place_exit_ladder(
        "alice", BTC, [("59000", "0.6"), ("58000", "0.4")], stop_loss="61000"
    )
    assert [(t.side, t.orig_qty) for t in targets] == [("BUY", Decimal("0.6")),
                                                        ("BUY", Decimal("0.4"))]  # fmt: skip
    ex.place_order("carol", BTC, "SELL", "LIMIT", "0.6", "59000")
    events = move(ex, "59000")
    (moved,) = of_type(events, ExitLadderStopMoved)
    assert moved.old_order_id == stop.order_id
    new_stop = ex.engine.conditionals.get(moved.new_order_id)
    assert new_stop is not None and new_stop.side == 1 and new_stop.close_position
    # 0.4 BTC left at 60,000: the same per-unit break-even as for any size, 59,940.0
    assert new_stop.stop_price_ticks * TICK == break_even_short(Decimal(60000))
    settled(ex)


def test_a_trailing_stop_replaces_the_stop_after_the_second_target(long_1btc: Exchange) -> None:
    ex = long_1btc
    ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="58000",
                         move_stop_to_entry_after=1, trail_after=2, callback_rate="1")  # fmt: skip
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.5", "61000")
    move(ex, "61000")  # target 1: break-even
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.3", "62000")
    events = move(ex, "62000")  # target 2: the trailing stop takes over
    (moved,) = of_type(events, ExitLadderStopMoved)
    assert moved.targets_filled == 2
    trailing = next(o for o in ex.open_orders("alice") if o.order_id == moved.new_order_id)
    assert (trailing.type, trailing.orig_qty, trailing.reduce_only, trailing.callback_rate) == (
        "TRAILING_STOP_MARKET", Decimal("0.2"), True, Decimal("1"))  # fmt: skip
    assert trailing.stop_price == Decimal("61380")  # 62,000 × 0.99
    move(ex, "62500")  # a new high: 62,500 × 0.99 = 61,875
    (live,) = [o for o in ex.open_orders("alice") if o.type == "TRAILING_STOP_MARKET"]
    assert live.stop_price == Decimal("61875")
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.2", "61800")
    assert not of_type(move(ex, "61875.1"), ConditionalOrderTriggered)
    events = move(ex, "61875")
    assert [e.order_id for e in of_type(events, ConditionalOrderTriggered)] == [live.order_id]
    assert ex.position("alice", BTC).size == 0
    assert ex.open_orders("alice") == [] and ex.engine.conditionals.ladders == {}
    settled(ex)


def test_a_break_even_stop_already_crossed_fires_at_once(long_1btc: Exchange) -> None:
    """A first target at 60,010, inside the fees: once it fills the mark (60,010) is already
    below break-even (60,060.1), so the moved stop fires in the same step."""
    ex = long_1btc
    ex.place_exit_ladder("alice", BTC, [("60010", "0.5"), ("62000", "0.5")], stop_loss="58000")
    ex.place_order("carol", BTC, "BUY", "LIMIT", "1", "60010")
    events = move(ex, "60010")
    (moved,) = of_type(events, ExitLadderStopMoved)
    fired = [e.order_id for e in of_type(events, ConditionalOrderTriggered)]
    assert fired[1:] == [moved.new_order_id]
    assert ex.position("alice", BTC).size == 0
    assert ex.open_orders("alice") == []
    settled(ex)


def test_the_stop_firing_ends_the_ladder(long_1btc: Exchange) -> None:
    ex = long_1btc
    ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="58000")
    ex.place_order("carol", BTC, "BUY", "LIMIT", "1", "57950")
    events = move(ex, "58000")
    assert len(of_type(events, ConditionalOrderTriggered)) == 1
    canceled = of_type(events, ConditionalOrderCanceled)
    assert [e.reason for e in canceled] == [ConditionalEndReason.POSITION_CLOSED] * 3
    assert ex.engine.conditionals.ladders == {}
    # a new position may have a new ladder
    ex.place_order("bob", BTC, "SELL", "LIMIT", "1", "58000")
    ex.place_order("alice", BTC, "BUY", "LIMIT", "1", "58000")
    assert len(ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="57000")) == 4
    settled(ex)


def test_a_stop_canceled_by_its_owner_is_not_brought_back(long_1btc: Exchange) -> None:
    ex = long_1btc
    *_, stop = ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="58000")
    ex.cancel_order("alice", BTC, stop.order_id)
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.5", "61000")
    events = move(ex, "61000")
    assert of_type(events, ConditionalOrderTriggered) and not of_type(events, ExitLadderStopMoved)
    assert [o.type for o in ex.open_orders("alice")] == ["TAKE_PROFIT_MARKET"] * 2
    settled(ex)


def test_snapshot_and_restore_carry_a_ladder_mid_way(long_1btc: Exchange) -> None:
    ex = long_1btc
    ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="58000", trail_after=2,
                         callback_rate="0.5")  # fmt: skip
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.5", "61000")
    ex.place_order("carol", BTC, "BUY", "LIMIT", "0.5", "60100")
    move(ex, "61000")
    restored = Engine.restore(ex.engine.snapshot())
    assert restored.state_hash() == ex.engine.state_hash()
    assert restored.conditionals.ladders == ex.engine.conditionals.ladders
    path = ("60500", "62000", "61500", "60060", "59000")
    for price in path:
        cmd = UpdateIndex(BTC, int(Decimal(price) / TICK))
        assert restored.apply(cmd) == ex.engine.apply(cmd), price
    assert restored.state_hash() == ex.engine.state_hash()
    restored.check_invariants()


# -- bad ladders: a Binance code and no state change ------------------------------------------


@dataclass(frozen=True)
class BadLadder:
    name: str
    code: int
    targets: list[tuple[str, str]] = field(default_factory=lambda: list(THREE_TARGETS))
    stop_loss: str = "58000"
    kwargs: dict[str, object] = field(default_factory=dict)


BAD_LADDERS = [
    BadLadder("fractions that do not sum to one", -1130,
              [("61000", "0.5"), ("62000", "0.3")]),
    BadLadder("targets not going away from the entry", -1130,
              [("62000", "0.5"), ("61000", "0.5")]),
    BadLadder("a target the mark has already reached", -2021,
              [("59000", "0.5"), ("61000", "0.5")]),
    BadLadder("a stop above a long's mark", -2021, stop_loss="60000"),
    BadLadder("ten targets (with the stop, over the 10-order limit)", -1130,
              [(str(61000 + 100 * i), "0.1") for i in range(10)]),
    BadLadder("a fraction that rounds to zero lots", -1130,
              [("61000", "0.0001"), ("62000", "0.9999")]),
    BadLadder("a zero fraction", -1130, [("61000", "0"), ("62000", "1")]),
    BadLadder("trail_after without a callback rate", -1102, kwargs={"trail_after": 2}),
    BadLadder("a callback rate without trail_after", -1106, kwargs={"callback_rate": "1"}),
    BadLadder("a callback rate of 20 %", -2007,
              kwargs={"trail_after": 1, "callback_rate": "20"}),
    BadLadder("moving the stop after more targets than there are", -1130,
              kwargs={"move_stop_to_entry_after": 4}),
    BadLadder("no targets", -1130, []),
    BadLadder("a target off the tick", -4014, [("61000.05", "1")]),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_LADDERS, ids=lambda c: c.name)
def test_bad_ladders_are_refused_and_change_nothing(long_1btc: Exchange, case: BadLadder) -> None:
    refused(case.code, long_1btc, long_1btc.place_exit_ladder, "alice", BTC, case.targets,
            stop_loss=case.stop_loss, **case.kwargs)  # fmt: skip
    settled(long_1btc)


def test_a_ladder_needs_a_position_and_only_one_per_position(long_1btc: Exchange) -> None:
    ex = long_1btc
    refused(-2022, ex, ex.place_exit_ladder, "carol", BTC, THREE_TARGETS, stop_loss="58000")
    ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="58000")
    refused(-2010, ex, ex.place_exit_ladder, "alice", BTC, THREE_TARGETS, stop_loss="57000")
    settled(ex)


def test_a_ladder_counts_against_the_stop_order_limit(long_1btc: Exchange) -> None:
    ex = long_1btc
    stops: list[Order] = [
        ex.place_order("alice", BTC, "SELL", "STOP_MARKET", "0.1", stop_price=str(59000 - i),
                       reduce_only=True)
        for i in range(7)
    ]  # fmt: skip
    # 7 + 3 targets + 1 stop = 11 > 10
    refused(-4045, ex, ex.place_exit_ladder, "alice", BTC, THREE_TARGETS, stop_loss="58000")
    ex.cancel_order("alice", BTC, stops[0].order_id)
    assert len(ex.place_exit_ladder("alice", BTC, THREE_TARGETS, stop_loss="58000")) == 4
    settled(ex)
