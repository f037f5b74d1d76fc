"""The mass quote (issue 12): a market maker replaces its ladder with one `MassQuote` command.

Semantics (perpex.core.mass_quote, `MassQuote`'s docstring): the whole command is validated
first (one `RequestRejected`, nothing changed); then every open book order of the account in
the symbol is canceled and each quote is placed, in order, as a post-only (GTX) LIMIT order
through the normal order path, a quote refused there refused alone. Default markets (tick
0.1, step 0.001, band 5 %), mark = index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.engine import Engine
from perpex.core.mass_quote import MAX_MASS_QUOTES
from perpex.core.messages import (
    AdvanceClock,
    Command,
    Deposit,
    EndReason,
    MassQuote,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderType,
    PlaceOrder,
    Reason,
    RequestRejected,
    TimeInForce,
    UpdateIndex,
)
from streams import default_specs

BTC: Final = "BTCUSDT"
ETH: Final = "ETHUSDT"
BUY: Final = 1
SELL: Final = -1


@pytest.fixture
def ex() -> Exchange:
    """BTC index 60,000 (mark = index); maker "mm" with 100k USDT, "bob" with 1M."""
    exchange = Exchange(mark_price="index")
    exchange.set_index_price(BTC, "60000")
    exchange.set_index_price(ETH, "3000")
    exchange.deposit("mm", "100000")
    exchange.deposit("bob", "1000000")
    return exchange


def settled(ex: Exchange) -> None:
    ex.check_invariants()
    deposits, held = ex.engine.conservation_atoms()
    assert deposits == held


def book_ids(ex: Exchange, account: str, symbol: str = BTC) -> list[int]:
    return [o.order_id for o in ex.open_orders(account, symbol) if o.type == "LIMIT"]


# -- replacing a ladder ------------------------------------------------------------------------
def test_a_mass_quote_replaces_the_ladder(ex: Exchange) -> None:
    old = ex.mass_quote("mm", BTC, bids=[("59900", "0.1"), ("59800", "0.2")],
                        asks=[("60100", "0.1")])  # fmt: skip
    settled(ex)
    assert [o.status for o in old] == ["NEW"] * 3
    assert [o.side for o in old] == ["BUY", "BUY", "SELL"]
    assert [o.time_in_force for o in old] == ["GTX"] * 3
    assert book_ids(ex, "mm") == [o.order_id for o in old]
    eth = ex.place_order("mm", ETH, "BUY", "LIMIT", "1", "2990")  # another symbol: kept
    n = len(ex.events())
    new = ex.mass_quote("mm", BTC, bids=[("59950", "0.3")],
                        asks=[("60050", "0.1"), ("60150", "0.2")])  # fmt: skip
    settled(ex)
    events = ex.events()[n:]
    # the old orders canceled by id, then the new ones accepted in the order given
    assert [(type(e), getattr(e, "order_id", None)) for e in events] == [
        *[(OrderCanceled, o.order_id) for o in old],
        *[(OrderAccepted, o.order_id) for o in new],
    ]
    assert all(e.reason is EndReason.CANCELED for e in events if isinstance(e, OrderCanceled))
    assert [o.order_id for o in new] == list(range(eth.order_id + 1, eth.order_id + 4))
    assert [(str(o.price), str(o.orig_qty)) for o in new] == [
        ("59950.0", "0.300"), ("60050.0", "0.100"), ("60150.0", "0.200")]  # fmt: skip
    assert book_ids(ex, "mm") == [o.order_id for o in new]
    assert book_ids(ex, "mm", ETH) == [eth.order_id]
    book = ex.order_book(BTC)
    assert [str(p) for p, _ in book["bids"]] == ["59950.0"]
    assert [str(p) for p, _ in book["asks"]] == ["60050.0", "60150.0"]


def test_conditional_orders_and_other_accounts_survive(ex: Exchange) -> None:
    ex.mass_quote("mm", BTC, bids=[("59900", "0.1")], asks=[("60100", "0.1")])
    stop = ex.place_order("mm", BTC, "SELL", "STOP_MARKET", "0.1", stop_price="59000")
    theirs = ex.place_order("bob", BTC, "BUY", "LIMIT", "0.1", "59000")
    ex.mass_quote("mm", BTC, asks=[("60200", "0.1")])
    settled(ex)
    ids = [o.order_id for o in ex.open_orders("mm", BTC)]
    assert stop.order_id in ids and len(ids) == 2
    assert [o.order_id for o in ex.open_orders("bob", BTC)] == [theirs.order_id]


# -- refused whole -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refusal:
    name: str
    call: Callable[[Exchange], object]
    code: int


def quotes(n: int) -> list[tuple[str, str]]:
    return [(str(59000 + i), "0.001") for i in range(n)]


def typed(*quotes: tuple[int, int, int], account: str = "mm", symbol: str = BTC) -> MassQuote:
    return MassQuote(account, symbol, quotes)


REFUSALS: Final = [
    Refusal("crosses itself", lambda ex: ex.mass_quote("mm", BTC, [("60000", "0.1")],
                                                       [("60000", "0.1")]), -1130),
    Refusal("bid above an ask", lambda ex: ex.mass_quote("mm", BTC, [("59900", "0.1"),
            ("60300", "0.1")], [("60200", "0.1")]), -1130),
    Refusal("too many quotes", lambda ex: ex.mass_quote("mm", BTC, quotes(MAX_MASS_QUOTES + 1)),
            -1130),
    Refusal("too many, split", lambda ex: ex.mass_quote("mm", BTC, quotes(60),
            [(str(61000 + i), "0.001") for i in range(41)]), -1130),
    Refusal("zero quantity", lambda ex: ex.mass_quote("mm", BTC, [("59900", "0.1"),
            ("59800", "0")]), -4003),
    Refusal("unknown symbol", lambda ex: ex.mass_quote("mm", "XRPUSDT", quotes(1)), -1121),
    Refusal("bad name", lambda ex: ex.mass_quote("m m", BTC, quotes(1)), -1100),
    Refusal("not a pair", lambda ex: ex.mass_quote("mm", BTC, [("59900",)]), -1130),  # type: ignore[list-item]
    Refusal("bids a string", lambda ex: ex.mass_quote("mm", BTC, "59900"), -1130),  # type: ignore[arg-type]
    Refusal("price off the tick", lambda ex: ex.mass_quote("mm", BTC, [("59900.05", "0.1")]),
            -4014),
    Refusal("price below min", lambda ex: ex.mass_quote("mm", BTC, [("1", "0.1")]), -4013),
    # the driver path: the same mistakes as typed commands
    Refusal("driver: crosses itself", lambda ex: ex.submit(
        [typed((BUY, 600_000, 1), (SELL, 599_000, 1))]), 0),
    Refusal("driver: zero quantity", lambda ex: ex.submit([typed((BUY, 599_000, 0))]), -4003),
    Refusal("driver: side 2", lambda ex: ex.submit([typed((2, 599_000, 1))]), -1117),
    Refusal("driver: too many", lambda ex: ex.submit(
        [typed(*[(BUY, 590_000 + i, 1) for i in range(MAX_MASS_QUOTES + 1)])]), -1130),
    Refusal("driver: unknown symbol", lambda ex: ex.submit(
        [typed((BUY, 599_000, 1), symbol="XRPUSDT")]), -1121),
    Refusal("driver: bad name", lambda ex: ex.submit(
        [typed((BUY, 599_000, 1), account="m\n")]), -1100),
    Refusal("driver: a quote not a triple", lambda ex: ex.submit(
        [MassQuote("mm", BTC, ((BUY, 599_000),))]), -1130),  # type: ignore[arg-type]
    Refusal("driver: price 2^63", lambda ex: ex.submit([typed((BUY, 2**63, 1))]), -4013),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_a_bad_ladder_is_refused_whole(ex: Exchange, case: Refusal) -> None:
    ex.mass_quote("mm", BTC, bids=[("59900", "0.1")], asks=[("60100", "0.1")])
    before, orders, n = ex.state_hash(), ex.open_orders("mm"), len(ex.events())
    if case.code == 0:  # past the edge: the engine's one RequestRejected
        result = case.call(ex)
        assert isinstance(result, list) and len(result[0]) == 1
        assert result[0][0] == RequestRejected("mm", BTC, Reason.QUOTES_CROSS)
    else:
        with pytest.raises(ExchangeError) as info:
            case.call(ex)
        assert info.value.code == case.code, info.value
        assert info.value.msg
        assert len(ex.events()) - n <= 1  # at most the engine's one refusal
    assert ex.state_hash() == before
    assert ex.open_orders("mm") == orders
    settled(ex)


@pytest.mark.parametrize(
    ("quotes", "reason"),
    [
        (((BUY, 600_000, 1), (SELL, 600_000, 1)), Reason.QUOTES_CROSS),
        (tuple((BUY, 590_000, 1) for _ in range(MAX_MASS_QUOTES + 1)), Reason.INVALID_QUOTE_COUNT),
        (((BUY, 599_000, 1), (0, 599_000, 1)), Reason.INVALID_QUOTE_SIDE),
        (((BUY, 599_000, 0),), Reason.QTY_NOT_POSITIVE),
        (((BUY, 599_000, -1),), Reason.QTY_NOT_POSITIVE),
        (((BUY, 599_000, 10**12),), Reason.QTY_ABOVE_MAX),
        (((BUY, 1, 1),), Reason.PRICE_OUT_OF_RANGE),
        (((SELL, 10**12, 1),), Reason.PRICE_OUT_OF_RANGE),
    ],
)
def test_the_engine_refuses_a_bad_ladder_with_one_event(
    quotes: tuple[tuple[int, int, int], ...], reason: Reason
) -> None:
    engine = Engine(default_specs(), "index")
    engine.apply_all([UpdateIndex(BTC, 600_000), Deposit("mm", 10**11)])
    engine.apply(MassQuote("mm", BTC, ((BUY, 598_000, 10), (SELL, 602_000, 10))))
    before = engine.state_hash()
    assert engine.apply(MassQuote("mm", BTC, quotes)) == [RequestRejected("mm", BTC, reason)]
    assert engine.state_hash() == before
    engine.check_invariants()


def test_the_engine_refuses_unknown_symbol_bad_name_and_no_mark() -> None:
    engine = Engine(default_specs(), "index")
    q = ((BUY, 599_000, 1),)
    assert engine.apply(MassQuote("mm", BTC, q)) == [
        RequestRejected("mm", BTC, Reason.NO_MARK_PRICE)
    ]
    assert engine.apply(MassQuote("mm", "XRPUSDT", q)) == [
        RequestRejected("mm", "XRPUSDT", Reason.UNKNOWN_SYMBOL)
    ]
    assert engine.apply(MassQuote("", BTC, q)) == [RequestRejected("", BTC, Reason.UNKNOWN_ACCOUNT)]


# -- refused one by one ----------------------------------------------------------------------------
def test_a_quote_that_would_cross_the_book_is_refused_alone(ex: Exchange) -> None:
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.1", "60100")
    n = len(ex.events())
    placed = ex.mass_quote("mm", BTC, bids=[("60000", "0.1"), ("60100", "0.1")],
                           asks=[("60200", "0.1")])  # fmt: skip
    settled(ex)
    assert [str(o.price) for o in placed] == ["60000.0", "60200.0"]
    events = ex.events()[n:]
    assert [type(e) for e in events] == [OrderAccepted, OrderRejected, OrderAccepted]
    rejected = events[1]
    assert isinstance(rejected, OrderRejected)
    assert rejected.reason is Reason.POST_ONLY_WOULD_CROSS
    assert not any(type(e).__name__ == "TradeExecuted" for e in events)  # a quote never takes


def test_a_margin_shortfall_refuses_those_quotes_only(ex: Exchange) -> None:
    ex.deposit("dave", "100")
    ex.set_leverage("dave", BTC, 20)
    n = len(ex.events())
    # 0.02 @ 59,900 needs 59.9 USDT at 20x; then 40.1 are left: 0.02 @ 59,800 (59.8) is
    # refused, 0.001 @ 59,700 (2.985) and 0.001 @ 60,100 (3.005) still rest.
    placed = ex.mass_quote("dave", BTC, bids=[("59900", "0.02"), ("59800", "0.02"),
                           ("59700", "0.001")], asks=[("60100", "0.001")])  # fmt: skip
    settled(ex)
    assert [str(o.price) for o in placed] == ["59900.0", "59700.0", "60100.0"]
    events = ex.events()[n:]
    assert [type(e) for e in events] == [OrderAccepted, OrderRejected, OrderAccepted,
                                         OrderAccepted]  # fmt: skip
    assert isinstance(events[1], OrderRejected)
    assert events[1].reason is Reason.INSUFFICIENT_MARGIN
    with pytest.raises(ExchangeError) as info:  # one order alone meets the same check
        ex.place_order("dave", BTC, "BUY", "LIMIT", "0.02", "59800")
    assert info.value.code == -2019


def test_every_quote_refused_still_cancels_the_old_ladder(ex: Exchange) -> None:
    ex.mass_quote("mm", BTC, bids=[("59900", "0.1")])
    assert ex.mass_quote("mm", BTC, asks=[("50000", "0.1")]) == []  # a sell under the band
    assert book_ids(ex, "mm") == []
    settled(ex)


# -- journal, determinism, snapshot ----------------------------------------------------------------
def stream() -> list[Command]:
    """Quotes replaced while bob trades against them and the index moves."""
    commands: list[Command] = [
        UpdateIndex(BTC, 600_000),
        Deposit("mm", 10**11),
        Deposit("bob", 10**12),
        Deposit("poor", 100_000_000),
    ]
    for i in range(40):
        mid = 600_000 + (i * 37) % 200 - 100
        commands.append(UpdateIndex(BTC, mid))
        ladder = tuple((BUY, mid - 5 * (j + 1), 10 + j) for j in range(5)) + tuple(
            (SELL, mid + 5 * (j + 1), 10 + j) for j in range(5)
        )
        commands.append(MassQuote("mm", BTC, ladder))
        commands.append(MassQuote("poor", BTC, ladder[:3] + ladder[5:7]))
        side = BUY if i % 2 else SELL
        commands.append(
            PlaceOrder("bob", BTC, side, OrderType.MARKET, TimeInForce.IOC, 7 + i % 9, 0)
        )
        if i % 7 == 0:
            commands.append(MassQuote("mm", BTC, ((BUY, mid + 50, 1), (SELL, mid, 1))))
        commands.append(AdvanceClock((i + 1) * 10**9))
    return commands


def run(commands: list[Command]) -> Engine:
    engine = Engine(default_specs(), "index")
    for command in commands:
        engine.apply(command)
        engine.check_invariants()
    return engine


def test_two_engines_fed_the_same_stream_agree() -> None:
    a, b = run(stream()), run(stream())
    assert a.state_hash() == b.state_hash()
    assert a.next_trade_id > 1  # the quotes traded
    assert a.next_order_id == b.next_order_id


def test_snapshot_and_restore_mid_way_give_the_same_hash() -> None:
    commands = stream()
    half = len(commands) // 2
    first = run(commands[:half])
    restored = Engine.restore(first.snapshot())
    assert restored.state_hash() == first.state_hash()
    for command in commands[half:]:
        assert restored.apply(command) == first.apply(command)
        restored.check_invariants()
    assert restored.state_hash() == run(commands).state_hash()


def test_recovery_from_the_journal_gives_the_same_hash(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    ex = Exchange(journal=db, mark_price="index")
    ex.set_index_price(BTC, "60000")
    ex.deposit("mm", "100000")
    ex.deposit("bob", "1000000")
    ex.mass_quote("mm", BTC, bids=[("59900", "0.1"), ("59800", "0.2")], asks=[("60100", "0.1")])
    ex.place_order("bob", BTC, "BUY", "MARKET", "0.05")
    ex.mass_quote("mm", BTC, bids=[("59950", "0.1")], asks=[("60050", "0.1")])
    ex.submit([MassQuote("mm", BTC, ((BUY, 599_000, 5), (SELL, 601_000, 5)))])
    with pytest.raises(ExchangeError):
        ex.mass_quote("mm", BTC, bids=[("60100", "0.1")], asks=[("60000", "0.1")])
    settled(ex)
    expected, events = ex.state_hash(), ex.events()
    assert ex.journal is not None
    ex.journal.close(snapshot=False)
    again = Exchange(journal=db, mark_price="index")
    assert again.state_hash() == expected
    assert again.journal is not None and again.journal.report.replayed > 0
    assert again.engine.snapshot() is not None
    assert [type(e) for e in events].count(RequestRejected) == 1
    settled(again)
    again.close()


def test_a_first_quote_refused_does_not_refuse_the_call(ex: Exchange) -> None:
    """The first event is that quote's OrderRejected: the facade returns the others."""
    placed = ex.mass_quote("mm", ETH, bids=[("59900", "0.01")], asks=[("60100", "0.01")])
    assert [str(o.price) for o in placed] == ["60100.00"]
    settled(ex)


def test_an_empty_ladder_pulls_the_quotes(ex: Exchange) -> None:
    """A maker leaves the book in one command: every order canceled, nothing placed, and its
    conditional orders untouched; a second empty ladder is a no-op."""
    ex.mass_quote("mm", BTC, bids=[("59900", "0.1"), ("59800", "0.1")], asks=[("60100", "0.1")])
    assert len(ex.open_orders("mm", BTC)) == 3
    [events] = ex.submit([typed()])
    assert [type(e).__name__ for e in events] == ["OrderCanceled"] * 3
    assert ex.open_orders("mm", BTC) == []
    assert ex.order_book(BTC, 5) == {"bids": [], "asks": []}
    assert ex.submit([typed()]) == [[]]
    assert ex.mass_quote("mm", BTC) == []
    settled(ex)
