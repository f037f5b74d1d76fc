"""Client order ids used again: resent orders, ids shared by plain and conditional orders, and
cancel / modify by client id, each with and without a journal (and after reopening it).

Two rules meet here. The engine refuses a client id held by an OPEN order of the account, plain
or conditional alike (-4116 "ClientOrderId is duplicated."); an id is free again once its order
has ended. A journal adds an idempotency window (perpex.journal.idempotency): a place call with
an (account, client order id) it has seen gets the first answer back and changes nothing:

- a resent order, plain or conditional, gets the view of its first answer (a conditional order
  still resting is shown from its live record; one canceled or fired since is shown as it was
  accepted, status NEW as first answered);
- an order of the other kind under that key is not a resend: -4116, nothing changed;
- a key whose first answer was a refusal gets that refusal again.

The facade's contract is checked on every case: a call succeeds or raises ExchangeError, and a
call that raises changes nothing (state hash, open orders; with a journal, no command journaled
and no event logged for a resent key). Default markets (BTCUSDT tick 0.1, step 0.001, band 5 %,
min notional 5 USDT); mark = index: BTC 60,000, ETH 3,000.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Final

import pytest

from perpex import Exchange, ExchangeError
from perpex.core.messages import OrderType, PlaceOrder, TimeInForce
from perpex.views import Order

BTC: Final = "BTCUSDT"
ETH: Final = "ETHUSDT"
CID: Final = "x"
DUPLICATED: Final = -4116  # ClientOrderId is duplicated.
WOULD_TRIGGER: Final = -2021  # Order would immediately trigger.
UNKNOWN_ORDER: Final = -2011  # a cancel's: Unknown order sent.
NO_SUCH_ORDER: Final = -2013  # a modify's: Order does not exist.
MODES: Final = ("memory", "journal", "reopened")


# -- the calls under the client id ------------------------------------------------------------
def stop_market(ex: Exchange) -> Order:
    """BUY STOP_MARKET 0.01 at 61,000: rests below it (mark 60,000), fires at a mark >= it."""
    return ex.place_order(
        "alice", BTC, "BUY", "STOP_MARKET", quantity="0.01", stop_price="61000",
        client_order_id=CID,
    )  # fmt: skip


def stop_limit(ex: Exchange) -> Order:
    """BUY STOP 0.01, trigger 61,000, limit 61,050: fired, it places a resting LIMIT (no ask)."""
    return ex.place_order(
        "alice", BTC, "BUY", "STOP", quantity="0.01", price="61050", stop_price="61000",
        client_order_id=CID,
    )  # fmt: skip


def trailing_stop(ex: Exchange) -> Order:
    """SELL TRAILING_STOP_MARKET 0.01, 1 %, activation 61,000 (not active at 60,000)."""
    return ex.place_order(
        "alice", BTC, "SELL", "TRAILING_STOP_MARKET", quantity="0.01", callback_rate="1",
        activation_price="61000", client_order_id=CID,
    )  # fmt: skip


def refused_stop(ex: Exchange) -> Order:
    """BUY STOP_MARKET at 59,000 with the mark at 60,000 or above: it would fire at once."""
    return ex.place_order(
        "alice", BTC, "BUY", "STOP_MARKET", quantity="0.01", stop_price="59000",
        client_order_id=CID,
    )  # fmt: skip


def limit(ex: Exchange) -> Order:
    """BUY LIMIT 0.01 at 59,000."""
    return ex.place_order(
        "alice", BTC, "BUY", "LIMIT", quantity="0.01", price="59000", client_order_id=CID
    )


def limit_in_eth(ex: Exchange) -> Order:
    """BUY LIMIT 0.1 ETH at 2,900, under the same client id."""
    return ex.place_order(
        "alice", ETH, "BUY", "LIMIT", quantity="0.1", price="2900", client_order_id=CID
    )


def cancel(ex: Exchange) -> Order:
    return ex.cancel_order("alice", BTC, client_order_id=CID)


def modify(ex: Exchange) -> Order:
    return ex.modify_order(
        "alice", BTC, client_order_id=CID, side="BUY", quantity="0.02", price="61040"
    )


# -- what happened before the call ------------------------------------------------------------
def placed(call: Callable[[Exchange], Order]) -> Callable[[Exchange], Order | None]:
    return call


def canceled(call: Callable[[Exchange], Order]) -> Callable[[Exchange], Order | None]:
    def setup(ex: Exchange) -> Order | None:
        first = call(ex)
        assert cancel(ex).status == "CANCELED"
        return first

    return setup


def fired(call: Callable[[Exchange], Order]) -> Callable[[Exchange], Order | None]:
    """Bob offers 0.01 at 61,000 (a stop market's fill), then the mark goes to 61,000."""

    def setup(ex: Exchange) -> Order | None:
        ex.place_order("bob", BTC, "SELL", "LIMIT", quantity="0.01", price="61000")
        first = call(ex)
        ex.set_index_price(BTC, "61000")
        assert all(o.order_id != first.order_id for o in ex.open_orders("alice"))
        return first

    return setup


def fired_limit_resting(ex: Exchange) -> Order | None:
    """The STOP fires at 61,000 and its LIMIT BUY at 61,050 rests under the client id."""
    first = stop_limit(ex)
    ex.set_index_price(BTC, "61000")
    [rests] = ex.open_orders("alice")
    assert (rests.type, rests.client_order_id) == ("LIMIT", CID)
    return first


def refused(ex: Exchange) -> Order | None:
    with pytest.raises(ExchangeError) as refusal:
        refused_stop(ex)
    assert refusal.value.code == WOULD_TRIGGER
    return None


def limit_filled(ex: Exchange) -> Order | None:
    """Bob offers 0.01 at 59,000 first: alice's LIMIT takes it whole."""
    ex.place_order("bob", BTC, "SELL", "LIMIT", quantity="0.01", price="59000")
    first = limit(ex)
    assert first.status == "FILLED"
    return first


# -- what the call must do --------------------------------------------------------------------
@dataclass(frozen=True)
class Raises:
    code: int


class First:
    """The first answer's view, and nothing changed."""


class New:
    """A new order under the id: placed, open, the state moved on."""


@dataclass(frozen=True)
class Ends:
    """A cancel or modify that worked: the view it returns."""

    type: str
    status: str
    same_order: bool  # the order placed first (else the one a fired conditional placed)


FIRST: Final = First()
NEW: Final = New()
Expect = Raises | First | New | Ends


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Exchange], Order | None]
    call: Callable[[Exchange], Order]
    memory: Expect
    journal: Expect  # with a journal, and after reopening it

    def expect(self, mode: str) -> Expect:
        return self.memory if mode == "memory" else self.journal


CASES: Final = [
    # A conditional order resent (the brief's case 1: it used to trip an assert).
    Case("conditional resent while it rests", placed(stop_market), stop_market,
         memory=Raises(DUPLICATED), journal=FIRST),
    Case("conditional resent after it was canceled", canceled(stop_market), stop_market,
         memory=NEW, journal=FIRST),
    Case("conditional resent after it fired", fired(stop_market), stop_market,
         memory=Raises(WOULD_TRIGGER), journal=FIRST),
    Case("trailing stop resent after it was canceled", canceled(trailing_stop), trailing_stop,
         memory=NEW, journal=FIRST),
    Case("stop-limit resent after it fired (its LIMIT rests under the id)",
         fired_limit_resting, stop_limit, memory=Raises(DUPLICATED), journal=FIRST),
    Case("conditional resent after its first copy was refused", refused, refused_stop,
         memory=Raises(WOULD_TRIGGER), journal=Raises(WOULD_TRIGGER)),
    # A plain order under a conditional order's id (case 2: StopIteration).
    Case("plain order with a resting conditional's id", placed(stop_market), limit,
         memory=Raises(DUPLICATED), journal=Raises(DUPLICATED)),
    Case("plain order with a canceled conditional's id", canceled(stop_market), limit,
         memory=NEW, journal=Raises(DUPLICATED)),
    Case("plain order with a fired conditional's id", fired(stop_market), limit,
         memory=NEW, journal=Raises(DUPLICATED)),
    # A conditional order under a plain order's id (case 3: an isinstance assert).
    Case("conditional with a resting plain order's id", placed(limit), stop_market,
         memory=Raises(DUPLICATED), journal=Raises(DUPLICATED)),
    Case("conditional with a filled plain order's id", limit_filled, stop_market,
         memory=NEW, journal=Raises(DUPLICATED)),
    Case("trailing stop with a canceled plain order's id", canceled(limit), trailing_stop,
         memory=NEW, journal=Raises(DUPLICATED)),
    # Plain orders resent (the journal's first answer, in the first order's own decimals).
    Case("plain order resent after it was canceled", canceled(limit), limit,
         memory=NEW, journal=FIRST),
    Case("plain order resent in another symbol", placed(limit), limit_in_eth,
         memory=Raises(DUPLICATED), journal=FIRST),
    # Cancel and modify by client id (never keyed: the engine answers, journal or not).
    Case("cancel by a resting conditional's id", placed(stop_market), cancel,
         memory=Ends("STOP_MARKET", "CANCELED", same_order=True),
         journal=Ends("STOP_MARKET", "CANCELED", same_order=True)),
    Case("cancel by a canceled conditional's id", canceled(stop_market), cancel,
         memory=Raises(UNKNOWN_ORDER), journal=Raises(UNKNOWN_ORDER)),
    Case("cancel by a fired conditional's id (its order filled)", fired(stop_market), cancel,
         memory=Raises(UNKNOWN_ORDER), journal=Raises(UNKNOWN_ORDER)),
    Case("cancel by a fired stop-limit's id cancels its LIMIT", fired_limit_resting, cancel,
         memory=Ends("LIMIT", "CANCELED", same_order=False),
         journal=Ends("LIMIT", "CANCELED", same_order=False)),
    Case("modify by a resting conditional's id", placed(stop_market), modify,
         memory=Raises(NO_SUCH_ORDER), journal=Raises(NO_SUCH_ORDER)),
    Case("modify by a fired stop-limit's id amends its LIMIT", fired_limit_resting, modify,
         memory=Ends("LIMIT", "NEW", same_order=False),
         journal=Ends("LIMIT", "NEW", same_order=False)),
]  # fmt: skip


# -- the harness ------------------------------------------------------------------------------
def opened(db: Path | None) -> Exchange:
    return Exchange(mark_price="index", journal=db)


def funded(db: Path | None) -> Exchange:
    ex = opened(db)
    ex.set_index_price(BTC, "60000")
    ex.set_index_price(ETH, "3000")
    ex.deposit("alice", "10000")
    ex.deposit("bob", "1000000")
    return ex


@dataclass(frozen=True)
class Seen:
    """What a refused call (or a resend answered from the window) must leave as it was."""

    state_hash: str
    open_orders: list[Order]
    events: int
    last_seq: int


def seen(ex: Exchange) -> Seen:
    last_seq = ex.journal.last_seq if ex.journal is not None else 0
    return Seen(ex.state_hash(), ex.open_orders("alice"), len(ex.events()), last_seq)


def is_keyed(call: Callable[[Exchange], Order]) -> bool:
    return call not in (cancel, modify)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_client_id_used_again(case: Case, mode: str, tmp_path: Path) -> None:
    db = None if mode == "memory" else tmp_path / "j.db"
    ex = funded(db)
    try:
        first = case.setup(ex)
        if mode == "reopened":
            ex.close()
            ex = opened(db)
        before = seen(ex)
        expect = case.expect(mode)
        if isinstance(expect, Raises):
            with pytest.raises(ExchangeError) as refusal:
                case.call(ex)
            assert refusal.value.code == expect.code
            after = seen(ex)
            assert (after.state_hash, after.open_orders) == (before.state_hash, before.open_orders)
            if db is not None and is_keyed(case.call):  # answered from the window
                assert after == before
            if expect.code == DUPLICATED:
                assert refusal.value.msg == "ClientOrderId is duplicated."
        elif isinstance(expect, First):
            answer = case.call(ex)
            assert first is not None
            assert answer == first
            assert seen(ex) == before
        elif isinstance(expect, New):
            answer = case.call(ex)
            assert first is not None
            assert answer.order_id > first.order_id
            assert (answer.client_order_id, answer.status) == (CID, "NEW")
            assert answer in ex.open_orders("alice")
            assert ex.state_hash() != before.state_hash
        else:
            answer = case.call(ex)
            assert first is not None
            assert (answer.type, answer.status, answer.client_order_id) == (
                expect.type, expect.status, CID,
            )  # fmt: skip
            assert (answer.order_id == first.order_id) == expect.same_order
            still_open = {o.order_id for o in ex.open_orders("alice")}
            assert (answer.order_id in still_open) == (expect.status == "NEW")
        ex.check_invariants()
    finally:
        ex.close()


# -- the views a resend gets ------------------------------------------------------------------
@pytest.mark.parametrize("reopen", [False, True], ids=["journal", "reopened"])
def test_resent_conditional_after_cancel_is_shown_as_accepted(tmp_path: Path, reopen: bool) -> None:
    """The first answer, rebuilt from its `ConditionalOrderAccepted`: every field, status NEW;
    the order is not placed again."""
    db = tmp_path / "j.db"
    ex = funded(db)
    try:
        first = trailing_stop(ex)
        cancel(ex)
        if reopen:
            ex.close()
            ex = opened(db)
        again = trailing_stop(ex)
        assert again == first
        assert (again.type, again.status, again.stop_price) == (
            "TRAILING_STOP_MARKET", "NEW", Decimal("61000"),
        )  # fmt: skip
        assert (again.callback_rate, again.activation_price) == (Decimal(1), Decimal("61000"))
        assert ex.open_orders("alice") == []
    finally:
        ex.close()


def test_resent_conditional_still_resting_shows_its_live_trigger(tmp_path: Path) -> None:
    """While it rests, the view is the live record's: a trailing stop activated since the
    first answer shows its trigger now (61,500 × 0.99 = 60,885), not the activation price."""
    ex = funded(tmp_path / "j.db")
    try:
        first = trailing_stop(ex)
        assert first.stop_price == Decimal("61000")  # not active: its activation price
        ex.set_index_price(BTC, "61500")
        again = trailing_stop(ex)
        assert (again.order_id, again.status) == (first.order_id, "NEW")
        assert again.stop_price == Decimal("60885")
        assert again in ex.open_orders("alice")
    finally:
        ex.close()


def test_resent_plain_order_in_another_symbol_keeps_its_own_decimals(tmp_path: Path) -> None:
    """The first answer was a BTCUSDT order (tick 0.1): the resend naming ETHUSDT (tick 0.01)
    gets that order, priced in BTCUSDT's ticks."""
    ex = funded(tmp_path / "j.db")
    try:
        first = limit(ex)
        again = limit_in_eth(ex)
        assert (again.symbol, again.price, again.orig_qty) == (
            BTC,
            Decimal("59000"),
            Decimal("0.01"),
        )
        assert again == first
        assert ex.open_orders("alice", ETH) == []
    finally:
        ex.close()


def test_resend_after_a_refusal_in_an_unlisted_symbol(tmp_path: Path) -> None:
    """A command journaled under the id in a symbol that is not listed (sent to the journal
    itself: the facade's checks refuse such a symbol first) was refused; a place call in
    BTCUSDT under that id gets the refusal, -1121, not a KeyError, and changes nothing."""
    ex = funded(tmp_path / "j.db")
    try:
        order = PlaceOrder(
            "alice", "NOPEUSDT", 1, OrderType.LIMIT, TimeInForce.GTC, 10, 590_000,
            client_order_id=CID,
        )  # fmt: skip
        assert ex.journal is not None
        ex.journal.submit(order)
        before = seen(ex)
        for call in (limit, stop_market):
            with pytest.raises(ExchangeError) as refusal:
                call(ex)
            assert refusal.value.code == -1121
            assert seen(ex) == before
    finally:
        ex.close()
