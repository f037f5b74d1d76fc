"""The driver path, `Exchange.submit(commands)`: typed commands in, events out, as the facade.

- The same scenario through the facade (decimal strings) and through `submit` (typed commands
  in integer units) gives the same state hash, the same events and, journaled, the same
  journal rows byte for byte.
- `submit` gives the engine's own answers: the same state hash as `Engine.apply`.
- A typed command the facade could not have built is refused the way the facade refuses the
  same mistake (code and message), before anything in its batch is applied or journaled.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.engine import Engine
from perpex.core.funding import FundingSchedule
from perpex.core.messages import (
    AdjustIsolatedMargin,
    AdvanceClock,
    CancelOrder,
    Command,
    ConditionalKind,
    Deposit,
    DepositInsurance,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    SetLeverage,
    SetMarginMode,
    TimeInForce,
    UpdateIndex,
    UpdateSources,
    Withdraw,
    WorkingType,
)

sys.path.insert(0, str(Path(__file__).parent))
from streams import command_stream, default_specs

BTC: Final = "BTCUSDT"
NS_PER_SECOND: Final = 10**9
STREAM_LENGTH: Final = 3_000


def call_facade(ex: Exchange, command: Command) -> None:
    """`command` as a user of the facade writes it: decimal strings and Binance names."""
    atoms = Decimal("0.000001")
    try:
        if isinstance(command, PlaceOrder):
            limit = command.order_type is OrderType.LIMIT
            ex.place_order(
                command.account,
                command.symbol,
                "BUY" if command.side > 0 else "SELL",
                command.order_type.name,
                str(ex.from_lots(command.symbol, command.qty_lots)),
                str(ex.from_ticks(command.symbol, command.price_ticks)) if limit else None,
                command.time_in_force.name if limit else "GTC",
                command.reduce_only,
                command.client_order_id,
            )
        elif isinstance(command, CancelOrder):
            ex.cancel_order(
                command.account, command.symbol, command.order_id, command.client_order_id
            )
        elif isinstance(command, Deposit):
            ex.deposit(command.account, str(command.amount_atoms * atoms))
        elif isinstance(command, Withdraw):
            ex.withdraw(command.account, str(command.amount_atoms * atoms))
        elif isinstance(command, AdjustIsolatedMargin):
            amount = str(command.delta_atoms * atoms)
            ex.add_isolated_margin(command.account, command.symbol, amount)
        elif isinstance(command, SetLeverage):
            ex.set_leverage(command.account, command.symbol, command.leverage)
        elif isinstance(command, SetMarginMode):
            ex.set_margin_mode(
                command.account, command.symbol, "ISOLATED" if command.isolated else "CROSSED"
            )
        elif isinstance(command, UpdateIndex):
            price = ex.from_ticks(command.symbol, command.index_ticks)
            ex.set_index_price(command.symbol, str(price))
        elif isinstance(command, UpdateSources):
            ex.update_sources(
                command.symbol,
                {name: str(ex.from_ticks(command.symbol, p)) for name, p in command.quotes},
            )
        elif isinstance(command, AdvanceClock):
            ex.advance_time(str(Decimal(command.ts_ns - ex.time_ns).scaleb(-9)))
        else:  # pragma: no cover - the stream holds nothing else
            raise AssertionError(f"no facade call for {command!r}")
    except ExchangeError:
        pass  # the engine refused it: both paths journal the command and change nothing


def journal_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT seq, ts_ns, key, payload, checksum FROM commands"))


def test_facade_and_driver_give_the_same_journal_hash_and_events(tmp_path: Path) -> None:
    commands = command_stream(11, STREAM_LENGTH)
    with Exchange(journal=tmp_path / "facade.db") as facade:
        for command in commands:
            call_facade(facade, command)
        facade_hash, facade_events = facade.state_hash(), facade.events()
    with Exchange(journal=tmp_path / "driver.db") as driver:
        answers = []
        for start in range(0, len(commands), 256):
            answers += driver.submit(commands[start : start + 256])
        driver_hash, driver_events = driver.state_hash(), driver.events()
    assert driver_hash == facade_hash
    assert driver_events == facade_events
    assert [e for events in answers for e in events] == driver_events
    rows = journal_rows(tmp_path / "driver.db")
    assert len(rows) == STREAM_LENGTH  # every command journaled, refused ones included
    assert rows == journal_rows(tmp_path / "facade.db")


def test_submit_gives_the_engines_answers() -> None:
    commands = command_stream(7, STREAM_LENGTH)
    engine = Engine(default_specs())
    expected = [engine.apply(command) for command in commands]
    ex = Exchange()
    assert ex.submit(commands) == expected
    assert ex.state_hash() == engine.state_hash()
    assert ex.submit(iter([])) == []
    ex.check_invariants()


def test_a_journaled_batch_recovers(tmp_path: Path) -> None:
    commands = command_stream(3, 500)
    path = tmp_path / "batch.db"
    with Exchange(journal=path) as ex:
        ex.submit(commands)
        digest = ex.state_hash()
        assert ex.journal is not None and ex.journal.last_seq == len(commands)
    with Exchange(journal=path) as again:
        assert again.state_hash() == digest


def test_a_resent_client_order_id_gets_its_first_answer(tmp_path: Path) -> None:
    with Exchange(journal=tmp_path / "resend.db") as ex:
        ex.set_index_price(BTC, "60000")
        ex.deposit("alice", "10000")
        order = PlaceOrder("alice", BTC, 1, OrderType.LIMIT, TimeInForce.GTC, 10, 599_000,
                           client_order_id="once")  # fmt: skip
        first, again = ex.submit([order, order])
        assert again == first
        assert len(ex.open_orders("alice")) == 1


def test_advance_clock_brings_the_histories_rates_like_advance_time(tmp_path: Path) -> None:
    eight_hours = 8 * 3600 * NS_PER_SECOND
    history = FundingSchedule([(eight_hours, 50_000), (2 * eight_hours, -37_500)])
    paths = tmp_path / "facade.db", tmp_path / "driver.db"
    hashes = []
    for path in paths:
        with Exchange(mark_price="index", journal=path, funding_history={BTC: history}) as ex:
            ex.set_index_price(BTC, "60000")
            ex.deposit("long", "100000")
            ex.deposit("short", "100000")
            ex.place_order("short", BTC, "SELL", "LIMIT", "1", "60000")
            ex.place_order("long", BTC, "BUY", "MARKET", "1")
            if path == paths[0]:
                ex.advance_time(16 * 3600)
            else:
                ex.submit([AdvanceClock(2 * eight_hours)])
            hashes.append(ex.state_hash())
            assert [p.income for p in ex.funding_history("long")] == [
                Decimal("-30"), Decimal("22.5")
            ]  # fmt: skip
    assert hashes[0] == hashes[1]
    assert journal_rows(paths[0]) == journal_rows(paths[1])


# -- refusals: the facade's, for the same mistake -----------------------------------------------
@dataclass(frozen=True)
class Refusal:
    name: str
    command: Command
    facade: Callable[[Exchange], object] | None  # the same mistake through the facade
    code: int


def limit(**fields: object) -> PlaceOrder:
    values: dict[str, object] = {
        "account": "carol", "symbol": BTC, "side": 1, "order_type": OrderType.LIMIT,
        "time_in_force": TimeInForce.GTC, "qty_lots": 10, "price_ticks": 599_000,
    }  # fmt: skip
    values.update(fields)
    return PlaceOrder(**values)  # type: ignore[arg-type]


def order(**params: object) -> Callable[[Exchange], object]:
    values: dict[str, object] = {
        "account": "carol", "symbol": BTC, "side": "BUY", "type": "LIMIT",
        "quantity": "0.01", "price": "59900",
    }  # fmt: skip
    values.update(params)
    return lambda ex: ex.place_order(**values)  # type: ignore[arg-type]


REFUSALS: Final = [
    Refusal("unknown symbol", limit(symbol="XRPUSDT"), order(symbol="XRPUSDT"), -1121),
    Refusal("account with a newline", limit(account="carol\n"), order(account="carol\n"), -1100),
    Refusal("account not a string", limit(account=7), order(account=7), -1100),
    Refusal("side 0", limit(side=0), order(side="HOLD"), -1117),
    Refusal("side True", limit(side=True), order(side=True), -1117),
    Refusal("order type an int", limit(order_type=1), order(type=1), -1116),
    Refusal("time in force a string", limit(time_in_force="GTC"), order(time_in_force=None),
            -1115),
    Refusal("quantity 0", limit(qty_lots=0), order(quantity="0"), -4003),
    Refusal("quantity negative", limit(qty_lots=-5), order(quantity="-0.005"), -4003),
    Refusal("quantity 2^63 lots", limit(qty_lots=2**63), order(quantity="9223372036854775.808"),
            -4005),
    Refusal("quantity a float", limit(qty_lots=10.0), order(quantity=0.01), -1013),
    Refusal("price 0", limit(price_ticks=0), order(price="0"), -4013),
    Refusal("price 2^63 ticks", limit(price_ticks=2**63), order(price="922337203685477580.8"),
            -4013),
    Refusal("market order with a price",
            limit(order_type=OrderType.MARKET, time_in_force=TimeInForce.IOC),
            order(type="MARKET"), -1106),
    Refusal("reduce-only not a bool", limit(reduce_only=1), order(reduce_only=1), -1102),
    Refusal("client order id too long", limit(client_order_id="x" * 37),
            order(client_order_id="x" * 37), -1100),
    Refusal("stop loss negative", limit(stop_loss_ticks=-1), order(stop_loss="-0.1"), -4013),
    Refusal("cancel by order id True", CancelOrder("bob", BTC, True),  # type: ignore[arg-type]
            lambda ex: ex.cancel_order("bob", BTC, True), -1102),
    Refusal("cancel without an id", CancelOrder("bob", BTC),
            lambda ex: ex.cancel_order("bob", BTC), -1102),
    Refusal("cancel order id 0", CancelOrder("bob", BTC, 0),
            lambda ex: ex.cancel_order("bob", BTC, 0), -2011),
    Refusal("deposit 0", Deposit("carol", 0), lambda ex: ex.deposit("carol", "0"), -1013),
    Refusal("deposit 2^63 atoms", Deposit("carol", 2**63),
            lambda ex: ex.deposit("carol", "9223372036854.775808"), -1013),
    Refusal("withdraw negative", Withdraw("carol", -1), lambda ex: ex.withdraw("carol", "-1"),
            -1013),
    Refusal("leverage of 5,000 digits", SetLeverage("carol", BTC, 10**5000),
            lambda ex: ex.set_leverage("carol", BTC, 10**5000), -4028),
    Refusal("margin mode not a bool", SetMarginMode("carol", BTC, 1),  # type: ignore[arg-type]
            lambda ex: ex.set_margin_mode("carol", BTC, 1), -4044),  # type: ignore[arg-type]
    Refusal("isolated margin 0", AdjustIsolatedMargin("carol", BTC, 0),
            lambda ex: ex.add_isolated_margin("carol", BTC, "0"), -1013),
    Refusal("index 0", UpdateIndex(BTC, 0), lambda ex: ex.set_index_price(BTC, "0"), -4013),
    Refusal("sources empty", UpdateSources(BTC, ()), lambda ex: ex.update_sources(BTC, {}),
            -1102),
    Refusal("source name not a string", UpdateSources(BTC, ((1, 600_000),)),  # type: ignore[arg-type]
            lambda ex: ex.update_sources(BTC, {1: "60000"}), -1130),  # type: ignore[dict-item]
    Refusal("clock past 2^63 ns", AdvanceClock(2**63),
            lambda ex: ex.advance_time(10**10), -1130),
    Refusal("stop with a negative callback rate",
            PlaceConditionalOrder("carol", BTC, -1, ConditionalKind.TRAILING_STOP_MARKET,
                                  WorkingType.MARK_PRICE, 10, callback_rate_ppm=-1),
            order(side="SELL", type="TRAILING_STOP_MARKET", price=None, callback_rate="-1"),
            -2007),
    Refusal("stop market with a time in force",
            PlaceConditionalOrder("carol", BTC, -1, ConditionalKind.STOP_MARKET,
                                  WorkingType.MARK_PRICE, 10, 590_000,
                                  time_in_force=TimeInForce.IOC),
            None, -1106),
    Refusal("ladder without targets", PlaceExitLadder("alice", BTC, (), 590_000),
            lambda ex: ex.place_exit_ladder("alice", BTC, [], "59000"), -1130),
    Refusal("ladder with 0 stop", PlaceExitLadder("alice", BTC, ((610_000, 1_000_000),), 0),
            lambda ex: ex.place_exit_ladder("alice", BTC, [("61000", "1")], None), -1102),
    Refusal("ladder count of 2^31", PlaceExitLadder("alice", BTC, ((610_000, 1_000_000),),
                                                    590_000, 2**31),
            lambda ex: ex.place_exit_ladder("alice", BTC, [("61000", "1")], "59000", 2**31),
            -1130),
    Refusal("insurance deposit to an unknown fund", DepositInsurance(1, "XRPUSDT"), None, -1121),
    Refusal("not a command", "PlaceOrder", None, -1102),  # type: ignore[arg-type]
]  # fmt: skip


def funded(tmp_path: Path) -> Exchange:
    ex = Exchange(journal=tmp_path / "refusals.db")
    ex.set_index_price(BTC, "60000")
    ex.deposit("alice", "10000")
    ex.deposit("bob", "100000")
    ex.deposit("carol", "5000")
    ex.place_order("bob", BTC, "SELL", "LIMIT", "0.5", "60100")
    ex.place_order("alice", BTC, "BUY", "LIMIT", "0.1", "60100")
    return ex


@pytest.mark.parametrize("case", REFUSALS, ids=lambda c: c.name)
def test_bad_typed_commands_are_refused_as_the_facade_refuses_them(
    tmp_path: Path, case: Refusal
) -> None:
    ex = funded(tmp_path)
    assert ex.journal is not None
    before, seq = ex.state_hash(), ex.journal.last_seq
    good = Deposit("carol", 1_000_000)
    with pytest.raises(ExchangeError) as refused:
        ex.submit([good, case.command])
    assert refused.value.code == case.code, refused.value
    assert refused.value.index == 1
    # refused whole, before anything was applied or journaled
    assert ex.state_hash() == before and ex.journal.last_seq == seq
    if case.facade is not None:
        with pytest.raises(ExchangeError) as facade:
            case.facade(ex)
        assert (facade.value.code, facade.value.msg) == (refused.value.code, refused.value.msg)
        assert ex.state_hash() == before and ex.journal.last_seq == seq
    ex.close()


def test_what_the_engine_refuses_comes_back_as_events() -> None:
    ex = Exchange()
    ex.set_index_price(BTC, "60000")
    (events,) = ex.submit([limit(account="nobody")])  # no money: the engine's refusal
    assert type(events[0]).__name__ == "OrderRejected"
    with pytest.raises(ExchangeError) as facade:
        ex.place_order("nobody", BTC, "BUY", "LIMIT", "0.01", "59900")
    assert facade.value.code == -2019


def test_take_events_hands_over_the_log_and_keeps_it_small() -> None:
    """A driver that records events itself takes them: each event is handed over once, in
    order, the facade's log starts again empty, and the state is not touched."""
    ex = Exchange(mark_price="index")
    ex.deposit("a", "1000")
    ex.set_index_price("BTCUSDT", "60000")
    first = ex.events()
    assert ex.take_events() == first and len(first) >= 2
    assert ex.events() == [] and ex.take_events() == []
    before = ex.state_hash()
    ex.deposit("a", "1")
    taken = ex.take_events()
    assert [type(e).__name__ for e in taken] == ["Deposited"]
    assert ex.state_hash() != before and ex.events() == []
