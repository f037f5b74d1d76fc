"""Conditional orders in the engine: placing, firing and canceling them, protection attached to
an entry, and exit ladders.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. The trigger rules and the
per-symbol book of waiting orders are `perpex.core.orders` (pure); this module is the engine
component that owns those books (like `Liquidator`, it holds the engine and is part of its
state hash and snapshot) and turns a fired order into an ordinary order through
`Engine._place_order`, so a triggered stop meets every rule a user's order meets (price band,
reduce-only, margin, bankruptcy cap) and slips through a thin book like one.

When orders fire (DESIGN.md §5):

- MARK_PRICE orders on every mark change, after the liquidation pass of that tick: the
  positions it closed lose their reduce-only stops first, so a gap through both a stop and a
  liquidation price liquidates (the liquidation engine acts first) and then cancels the stop.
- CONTRACT_PRICE orders on the last trade price, after the command that traded and after the
  mark pass. A fired market order trades and moves the last price, which can fire more
  CONTRACT_PRICE orders: the cascade repeats in rounds until a round fires nothing. Every
  round that goes on has removed at least one order from the books and nothing adds orders
  but a ladder replacing the stop it just removed, so it ends; `MAX_CASCADE_ROUNDS` bounds it
  anyway (what is left then fires on the next price, as it would on Binance).
- In each pass the orders come in `TriggerBook.on_price` order (farthest from the price first,
  ties by id), symbols in name order: deterministic.

What a fired order places: STOP and TAKE_PROFIT a LIMIT order at their limit price (their
time in force), the others a MARKET order. A close-position order sells or buys the whole
position at that moment (capped at the market-order maximum); a reduce-only one is trimmed to
the position by the engine's reduce-only rule. The placed order carries the conditional
order's client order id (free again once it fired). If the engine refuses it,
`ConditionalOrderTriggered.placed_order_id` is None and the `OrderRejected` follows. A
reduce-only or close-position order that fires when its position is already gone is canceled
(`POSITION_CLOSED`) instead.

Placement checks (validate, plan, commit: a refusal changes nothing, not even the id counter):
the symbol, a mark, the client order id (unique across the account's open and conditional
orders), `TriggerBook.check` (shape, -2021 immediate trigger, -2007 callback rate, -4045
limits), prices within the market's range, the quantity limit of the order it will place, and
for reduce-only / close-position orders a position to reduce on the other side, a reduce-only
quantity no larger than it (-2022); other orders meet MIN_NOTIONAL at their trigger price. No
margin is held for a conditional order (Binance checks it when the order is placed).

Lifetime. All reduce-only and close-position conditional orders of an account and symbol are
canceled when the position goes to zero by any means, liquidation and ADL included, and those
whose side no longer closes it when it flips through zero in one fill: the engine calls
`on_position_flat` where a size becomes zero or changes sign, and the cancellations are
flushed before the next order fires and at the end of the command.

Protection at entry (`PlaceOrder.stop_loss_ticks` / `take_profit_ticks`): a reduce-only
STOP_MARKET and TAKE_PROFIT_MARKET on the other side, for the entry's quantity, one OCO group
(the first to fire cancels the other). Both are checked before the entry is placed, so an
invalid one refuses the whole command; a refused entry attaches nothing, nor does an entry
that is done and left no position its way (it found nothing, or only closed the other side);
a reduce-only entry may not carry protection (-2022). The pair needs no position at placement
(the entry makes it). While the entry rests, the pair belongs to it: if the entry ends without
leaving a position its way, the pair is canceled (`ENTRY_ENDED`), and a position going flat
meanwhile does not cancel it. An entry whose own fills push the last price through a
CONTRACT_PRICE protection fires it at once.

Exit ladders (`PlaceExitLadder`): for an open position, reduce-only TAKE_PROFIT_MARKET targets
(market orders, so a target has filled, or not, in the step it fires; a partial fill counts)
for fractions of the position (rounded down to the lot; the last target takes the rest, so
the parts sum to the position) and a close-position STOP_MARKET. Once `move_stop_to_entry_after`
targets have filled, the stop is replaced by one at break-even: the tick where closing the
rest with a taker order gives back its cost basis plus its share of the entry fee (taken at
the taker rate, the most the entry can have paid) plus the taker fee of that close, rounded
against the trader (up for a long, down for a short) so stopping out there loses nothing.
Once `trail_after` targets have filled, a reduce-only TRAILING_STOP_MARKET for the rest (the
ladder's callback rate, trailing from that moment) replaces the stop, and the stop is not
moved again. A replacement stop that would fire at once fires at once. If the owner cancels
the ladder's stop, the ladder stops managing one. The ladder ends with its last order.

State: the books, the ladders and the entries the protection pairs wait for are `record()`ed
into the engine's state hash and snapshot; the client-id and ladder-member indexes and the
flat queue are derived (rebuilt by `load`; the queue is empty between commands).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from perpex.core.book import BUY, SELL
from perpex.core.messages import (
    CancelOrder,
    ConditionalEndReason,
    ConditionalKind,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    Event,
    ExitLadderPlaced,
    ExitLadderStopMoved,
    OrderAccepted,
    OrderRejected,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    Reason,
    TimeInForce,
    TradeExecuted,
    WorkingType,
)
from perpex.core.orders import (
    CALLBACK_RATE_STEP_PPM,
    MAX_CALLBACK_RATE_PPM,
    MIN_CALLBACK_RATE_PPM,
    ConditionalOrder,
    ConditionalReject,
    TriggerBook,
    placed_order_type,
)
from perpex.core.units import PPM, Rounding, div

if TYPE_CHECKING:
    from perpex.core.engine import Engine, MarketState
    from perpex.core.markets import MarketSpec

# Rounds of the CONTRACT_PRICE cascade in one command (each round fires at least one order).
MAX_CASCADE_ROUNDS: Final = 1_000
# An exit ladder's targets; with its stop they fit the per-account conditional-order limit.
MAX_LADDER_TARGETS: Final = 9
# Ticks the break-even search may step past its closed form (the per-fill fee rounds up by
# less than an atom, which a tick always covers once a position is worth a few atoms a tick).
MAX_BREAK_EVEN_STEPS: Final = 8

_MARK: Final = WorkingType.MARK_PRICE
_CONTRACT: Final = WorkingType.CONTRACT_PRICE
_STAGE_STOP: Final = 0  # the ladder's stop is the one it was placed with
_STAGE_BREAK_EVEN: Final = 1
_STAGE_TRAILING: Final = 2

_REJECT_REASONS: Final = {
    ConditionalReject.WOULD_IMMEDIATELY_TRIGGER: Reason.WOULD_IMMEDIATELY_TRIGGER,
    ConditionalReject.INVALID_CALLBACK_RATE: Reason.INVALID_CALLBACK_RATE,
    ConditionalReject.INVALID_ACTIVATION_PRICE: Reason.INVALID_ACTIVATION_PRICE,
    ConditionalReject.STOP_PRICE_MISSING: Reason.STOP_PRICE_MISSING,
    ConditionalReject.LIMIT_PRICE_MISSING: Reason.LIMIT_PRICE_MISSING,
    ConditionalReject.CALLBACK_RATE_MISSING: Reason.CALLBACK_RATE_MISSING,
    ConditionalReject.STOP_PRICE_NOT_REQUIRED: Reason.STOP_PRICE_NOT_REQUIRED,
    ConditionalReject.LIMIT_PRICE_NOT_REQUIRED: Reason.LIMIT_PRICE_NOT_REQUIRED,
    ConditionalReject.CALLBACK_RATE_NOT_REQUIRED: Reason.CALLBACK_RATE_NOT_REQUIRED,
    ConditionalReject.ACTIVATION_PRICE_NOT_REQUIRED: Reason.ACTIVATION_PRICE_NOT_REQUIRED,
    ConditionalReject.CLOSE_POSITION_NOT_ALLOWED: Reason.CLOSE_POSITION_NOT_ALLOWED,
    ConditionalReject.REDUCE_ONLY_WITH_CLOSE_POSITION: Reason.REDUCE_ONLY_WITH_CLOSE_POSITION,
    ConditionalReject.QTY_WITH_CLOSE_POSITION: Reason.QTY_WITH_CLOSE_POSITION,
    ConditionalReject.QTY_NOT_POSITIVE: Reason.QTY_NOT_POSITIVE,
    ConditionalReject.NO_REFERENCE_PRICE: Reason.NO_MARK_PRICE,
    ConditionalReject.TOO_MANY_CONDITIONAL_ORDERS: Reason.TOO_MANY_STOP_ORDERS,
    ConditionalReject.TOO_MANY_TRAILING_STOPS: Reason.TOO_MANY_STOP_ORDERS,
}
assert set(_REJECT_REASONS) == set(ConditionalReject), "a ConditionalReject without a Reason"


class ExitLadder(msgspec.Struct, kw_only=True, array_like=True):
    """One position's exit ladder (mutable: it counts fills and follows its stop)."""

    account: str
    symbol: str
    side: int  # the closing side: SELL for a long, BUY for a short
    target_ids: list[int]  # in target order, fired or not
    stop_order_id: int  # the stop it manages now; 0 once it has none (fired or canceled)
    move_stop_to_entry_after: int  # 0 = never
    trail_after: int  # 0 = never
    callback_rate_ppm: int
    working_type: WorkingType
    targets_filled: int = 0
    stage: int = _STAGE_STOP


def break_even_price_ticks(spec: MarketSpec, size_lots: int, cost_atoms: int) -> int:
    """The stop price at which closing the whole position with a taker order loses nothing.

    Long (size > 0, cost C > 0): the lowest tick p with
        s·p·k − ceil(s·p·k·f) ≥ C + ceil(C·f)
    short: the highest tick p with
        s·p·k + ceil(s·p·k·f) ≤ |C| − ceil(|C|·f),
    where f is the taker fee (for the close, and for the entry, whose actual fee is not kept
    per position: the taker rate is the most it can have been). Closed form first (exact
    division, rounded against the trader), then at most a few ticks for the per-fill rounding.
    """
    assert size_lots != 0
    k = spec.atoms_per_tick_lot
    fee = spec.taker_fee_ppm
    lots = abs(size_lots)
    entry_fee_atoms = div(abs(cost_atoms) * fee, PPM, Rounding.CEIL)

    def close_fee(price_ticks: int) -> int:
        return div(lots * price_ticks * k * fee, PPM, Rounding.CEIL)

    if size_lots > 0:
        need = cost_atoms + entry_fee_atoms
        price = div(need * PPM, lots * k * (PPM - fee), Rounding.CEIL)
        for _ in range(MAX_BREAK_EVEN_STEPS):
            if lots * price * k - close_fee(price) >= need:
                return price
            price += 1
        raise AssertionError("break-even search did not converge")
    have = -cost_atoms - entry_fee_atoms
    price = div(have * PPM, lots * k * (PPM + fee), Rounding.FLOOR)
    for _ in range(MAX_BREAK_EVEN_STEPS):
        if lots * price * k + close_fee(price) <= have:
            return price
        price -= 1
    raise AssertionError("break-even search did not converge")


class Conditionals:
    """The engine's conditional orders: one `TriggerBook` per symbol, exit ladders, and the
    entry orders that protection pairs wait for. See the module docstring."""

    __slots__ = (
        "_flat",
        "_ladder_of",
        "_ladders_touched",
        "books",
        "client_ids",
        "count",
        "engine",
        "ladders",
        "parents",
    )

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.books: dict[str, TriggerBook] = {s: TriggerBook(s) for s in sorted(engine.markets)}
        self.ladders: dict[tuple[str, str], ExitLadder] = {}
        # entry order id -> (account, symbol, OCO group of the protection waiting for it)
        self.parents: dict[int, tuple[str, str, int]] = {}
        # Derived (rebuilt by `load`, checked by `check_invariants`):
        self.count = 0  # orders in all books
        self.client_ids: dict[str, dict[str, int]] = {}  # account -> client id -> order id
        self._ladder_of: dict[int, tuple[str, str]] = {}  # live ladder order -> its ladder
        self._flat: list[tuple[str, str]] = []  # positions that went to zero, not yet flushed
        self._ladders_touched: set[tuple[str, str]] = set()  # lost a member this command

    # -- reads --------------------------------------------------------------------------------
    def pending(self) -> bool:
        """Anything for `after_command` to do (the engine's cheap test on every command)."""
        return bool(self.count or self._flat or self.parents or self._ladders_touched)

    def owns_client_id(self, account: str, client_order_id: str) -> bool:
        mine = self.client_ids.get(account)
        return mine is not None and client_order_id in mine

    def get(self, order_id: int) -> ConditionalOrder | None:
        for book in self.books.values():
            order = book.get(order_id)
            if order is not None:
                return order
        return None

    def orders_of(self, account: str) -> list[ConditionalOrder]:
        """An account's conditional orders in every symbol, by ascending id."""
        found = [o for book in self.books.values() for o in book.orders_of(account)]
        return sorted(found, key=lambda o: o.order_id)

    def order_id_of(self, account: str, client_order_id: str) -> int | None:
        return self.client_ids.get(account, {}).get(client_order_id)

    @staticmethod
    def watched_price_ticks(market: MarketState, working_type: WorkingType) -> int:
        """The price an order of this working type compares against now. Before the first
        trade a CONTRACT_PRICE order is placed against the mark (it fires on trades only)."""
        if working_type == _MARK:
            return market.mark_ticks
        return market.last_trade_ticks or market.mark_ticks

    # -- engine hooks -------------------------------------------------------------------------
    def on_position_flat(self, account: str, symbol: str) -> None:
        """The engine saw (account, symbol) go to zero or flip through it in one fill; its
        stops that no longer close the position go at the next flush."""
        if self.count and self.books[symbol].count_of(account):
            self._flat.append((account, symbol))

    def on_mark(self, symbol: str, events: list[Event]) -> None:
        """After the liquidation pass of a mark change: MARK_PRICE orders, then the cascade."""
        if not self.pending():
            return
        self._flush(events)  # what the liquidation pass closed loses its stops first
        book = self.books[symbol]
        if len(book):
            mark = self.engine.markets[symbol].mark_ticks
            for order in book.on_price(_MARK, mark):
                self._flush(events)
                self._fire(order, mark, events)
        self._cascade(events)

    def after_command(self, events: list[Event]) -> None:
        """End of every command: stops of flat positions, the CONTRACT_PRICE cascade, protection
        whose entry ended, ladders with nothing left. Changes nothing after a refusal."""
        self._flush(events)
        self._cascade(events)
        self._check_parents(events)
        for key in sorted(self._ladders_touched):  # a ladder ends with its last order
            ladder = self.ladders.get(key)
            if ladder is not None and not any(
                oid in self._ladder_of for oid in self._members(ladder)
            ):
                del self.ladders[key]
        self._ladders_touched.clear()

    # -- commands -----------------------------------------------------------------------------
    def place(self, cmd: PlaceConditionalOrder) -> list[Event]:
        engine = self.engine
        market = engine.markets.get(cmd.symbol)
        if market is None:
            return self._reject(cmd, Reason.UNKNOWN_SYMBOL)
        if not engine._valid_name(cmd.account):
            return self._reject(cmd, Reason.UNKNOWN_ACCOUNT)
        if cmd.side != BUY and cmd.side != SELL:
            from perpex.core.engine import EngineError

            raise EngineError(f"side {cmd.side!r}")
        if not market.mark_ticks:
            return self._reject(cmd, Reason.NO_MARK_PRICE)
        order = ConditionalOrder(
            order_id=engine.next_order_id,
            account=cmd.account,
            symbol=cmd.symbol,
            side=cmd.side,
            kind=ConditionalKind(cmd.kind),
            working_type=WorkingType(cmd.working_type),
            qty_lots=cmd.qty_lots,
            stop_price_ticks=cmd.stop_price_ticks,
            limit_price_ticks=cmd.limit_price_ticks,
            time_in_force=TimeInForce(cmd.time_in_force),
            reduce_only=cmd.reduce_only,
            close_position=cmd.close_position,
            client_order_id=cmd.client_order_id,
            callback_rate_ppm=cmd.callback_rate_ppm,
            activation_price_ticks=cmd.activation_price_ticks,
        )
        reason = self._check(order, market)
        if reason is not None:
            return self._reject(cmd, reason)
        # ---- commit --------------------------------------------------------------------
        engine.next_order_id += 1
        engine._account_for_write(cmd.account)
        self._add(order, market)
        return [self._accepted(order)]

    def cancel(self, cmd: CancelOrder) -> list[Event] | None:
        """Cancel a conditional order by id or client id; None if the account has no such
        conditional order in that symbol (the engine then answers UNKNOWN_ORDER)."""
        book = self.books.get(cmd.symbol)
        if book is None:
            return None
        order_id = cmd.order_id
        if order_id is None and cmd.client_order_id is not None:
            order_id = self.order_id_of(cmd.account, cmd.client_order_id)
        order = None if order_id is None else book.get(order_id)
        if order is None or order.account != cmd.account:
            return None
        book.cancel(order.order_id)
        self._removed(order)
        return [self._canceled(order, ConditionalEndReason.CANCELED)]

    def place_protected(self, cmd: PlaceOrder) -> list[Event]:
        """An entry with a stop-loss and/or take-profit attached (see the module docstring)."""
        engine = self.engine
        plain = msgspec.structs.replace(cmd, stop_loss_ticks=0, take_profit_ticks=0)
        market = engine.markets.get(cmd.symbol)
        if market is None or not market.mark_ticks or cmd.side not in (BUY, SELL):
            return engine._place_order(plain)  # its refusal (or error) says why
        if cmd.reduce_only:  # it opens nothing, so there is nothing for the pair to protect
            refusal = Reason.REDUCE_ONLY_REJECTED
            return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, refusal)]
        planned = self._protection(cmd, engine.next_order_id + 1)
        for i, order in enumerate(planned):
            reason = self._check(order, market, attached=True, extra_count=i)
            if reason is not None:
                return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, reason)]
        events = engine._place_order(plain)
        entry_id = next((e.order_id for e in events if isinstance(e, OrderAccepted)), None)
        if entry_id is None:
            return events  # refused: nothing attached
        acct = engine.accounts[cmd.account]
        resting = entry_id in acct.orders
        pos = acct.positions[cmd.symbol]
        if not resting and pos.size_lots * cmd.side <= 0:
            return events  # it is done and left no position its way: nothing to protect
        self._flush(events)  # stops of a position this entry closed go before these attach
        protection = self._protection(cmd, engine.next_order_id)
        group = protection[0].oco_group
        assert group is not None
        engine.next_order_id += len(protection)
        for i, order in enumerate(protection):
            if self._add_or_fire(order, market, events):
                for rest in protection[i + 1 :]:  # the group has fired: the rest never rests
                    events.append(self._accepted(rest))
                    events.append(self._canceled(rest, ConditionalEndReason.OCO))
                break
        if resting and self.books[cmd.symbol].group(group):
            self.parents[entry_id] = (cmd.account, cmd.symbol, group)
        return events

    def place_ladder(self, cmd: PlaceExitLadder) -> list[Event]:
        engine = self.engine
        market = engine.markets.get(cmd.symbol)
        if market is None:
            return self._reject_ladder(cmd, Reason.UNKNOWN_SYMBOL)
        if not market.mark_ticks:
            return self._reject_ladder(cmd, Reason.NO_MARK_PRICE)
        pos = engine.position_of(cmd.account, cmd.symbol)
        size = pos.size_lots if pos is not None else 0
        if not size:
            return self._reject_ladder(cmd, Reason.REDUCE_ONLY_REJECTED)
        if (cmd.account, cmd.symbol) in self.ladders:
            return self._reject_ladder(cmd, Reason.EXIT_LADDER_EXISTS)
        reason = self._ladder_shape(cmd)
        if reason is not None:
            return self._reject_ladder(cmd, reason)
        book = self.books[cmd.symbol]
        n = len(cmd.targets)
        if book.count_of(cmd.account) + n + 1 > book.max_orders_per_account:
            return self._reject_ladder(cmd, Reason.TOO_MANY_STOP_ORDERS)
        side = SELL if size > 0 else BUY
        held = abs(size)
        qtys: list[int] = []
        for _, fraction_ppm in cmd.targets[:-1]:
            qtys.append(div(held * fraction_ppm, PPM, Rounding.FLOOR))
        qtys.append(held - sum(qtys))
        if min(qtys) < 1:
            return self._reject_ladder(cmd, Reason.INVALID_EXIT_LADDER)
        first_id = engine.next_order_id
        orders = [
            ConditionalOrder(
                order_id=first_id + i,
                account=cmd.account,
                symbol=cmd.symbol,
                side=side,
                kind=ConditionalKind.TAKE_PROFIT_MARKET,
                working_type=WorkingType(cmd.working_type),
                qty_lots=qty,
                stop_price_ticks=price_ticks,
                reduce_only=True,
            )
            for i, ((price_ticks, _), qty) in enumerate(zip(cmd.targets, qtys, strict=True))
        ]
        orders.append(
            ConditionalOrder(
                order_id=first_id + n,
                account=cmd.account,
                symbol=cmd.symbol,
                side=side,
                kind=ConditionalKind.STOP_MARKET,
                working_type=WorkingType(cmd.working_type),
                qty_lots=0,
                stop_price_ticks=cmd.stop_price_ticks,
                close_position=True,
            )
        )
        for order in orders:
            reason = self._check(order, market)
            if reason is not None:
                return self._reject_ladder(cmd, reason)
        # ---- commit --------------------------------------------------------------------
        engine.next_order_id += n + 1
        key = (cmd.account, cmd.symbol)
        ladder = ExitLadder(
            account=cmd.account,
            symbol=cmd.symbol,
            side=side,
            target_ids=[o.order_id for o in orders[:-1]],
            stop_order_id=orders[-1].order_id,
            move_stop_to_entry_after=cmd.move_stop_to_entry_after,
            trail_after=cmd.trail_after,
            callback_rate_ppm=cmd.callback_rate_ppm,
            working_type=WorkingType(cmd.working_type),
        )
        self.ladders[key] = ladder
        events: list[Event] = []
        for order in orders:
            self._add(order, market)
            self._ladder_of[order.order_id] = key
            events.append(self._accepted(order))
        events.append(
            ExitLadderPlaced(
                cmd.account, cmd.symbol, tuple(ladder.target_ids), ladder.stop_order_id
            )
        )
        return events

    # -- checks -------------------------------------------------------------------------------
    def _check(
        self,
        order: ConditionalOrder,
        market: MarketState,
        *,
        attached: bool = False,
        extra_count: int = 0,
    ) -> Reason | None:
        """Every placement check, no writes. `attached`: protection placed with its entry (no
        position needed yet); `extra_count`: orders of the same command not in the book yet."""
        engine = self.engine
        spec = market.spec
        book = self.books[order.symbol]
        cid = order.client_order_id
        if cid is not None:
            acct = engine.accounts.get(order.account)
            if (acct is not None and cid in acct.client_ids) or self.owns_client_id(
                order.account, cid
            ):
                return Reason.DUPLICATE_CLIENT_ORDER_ID
        reject = book.check(order, self.watched_price_ticks(market, order.working_type))
        if reject is not None:
            return _REJECT_REASONS[reject]
        if book.count_of(order.account) + extra_count >= book.max_orders_per_account:
            return Reason.TOO_MANY_STOP_ORDERS
        for price_ticks in (
            order.stop_price_ticks,
            order.limit_price_ticks,
            order.activation_price_ticks,
        ):
            if price_ticks and not spec.min_price_ticks <= price_ticks <= spec.max_price_ticks:
                return Reason.PRICE_OUT_OF_RANGE
        placed_type = placed_order_type(order.kind)
        max_lots = (
            spec.max_market_qty_lots if placed_type == OrderType.MARKET else spec.max_limit_qty_lots
        )
        if order.qty_lots > max_lots:
            return Reason.QTY_ABOVE_MAX
        if order.reduce_only or order.close_position:
            if attached:
                return None
            pos = engine.position_of(order.account, order.symbol)
            size = pos.size_lots if pos is not None else 0
            # Binance trims an oversized reduce-only stop when it fires; perpex refuses it at
            # placement, where the trader can still fix it, as it refuses one with no position.
            if size * order.side >= 0 or (order.reduce_only and order.qty_lots > abs(size)):
                return Reason.REDUCE_ONLY_REJECTED
            return None
        reference_ticks = (
            order.limit_price_ticks
            or order.stop_price_ticks
            or order.activation_price_ticks
            or self.watched_price_ticks(market, order.working_type)
        )
        if reference_ticks * order.qty_lots * spec.atoms_per_tick_lot < spec.min_notional_atoms:
            return Reason.MIN_NOTIONAL
        return None

    def _ladder_shape(self, cmd: PlaceExitLadder) -> Reason | None:
        """The ladder's own rules (the orders it makes are checked like any other)."""
        n = len(cmd.targets)
        if not 1 <= n <= MAX_LADDER_TARGETS:
            return Reason.INVALID_EXIT_LADDER
        pos = self.engine.position_of(cmd.account, cmd.symbol)
        assert pos is not None and pos.size_lots
        rising = pos.size_lots > 0  # a long takes profit as the price rises
        total_ppm = 0
        previous = None
        for price_ticks, fraction_ppm in cmd.targets:
            if not 0 < fraction_ppm <= PPM:
                return Reason.INVALID_EXIT_LADDER
            total_ppm += fraction_ppm
            if previous is not None and (
                price_ticks <= previous if rising else price_ticks >= previous
            ):
                return Reason.INVALID_EXIT_LADDER  # targets go away from the entry, in order
            previous = price_ticks
        if total_ppm != PPM:
            return Reason.INVALID_EXIT_LADDER
        if not (0 <= cmd.move_stop_to_entry_after <= n and 0 <= cmd.trail_after <= n):
            return Reason.INVALID_EXIT_LADDER
        if cmd.stop_price_ticks <= 0:
            return Reason.STOP_PRICE_MISSING
        rate = cmd.callback_rate_ppm
        if cmd.trail_after:
            if not rate:
                return Reason.CALLBACK_RATE_MISSING
            if (
                not MIN_CALLBACK_RATE_PPM <= rate <= MAX_CALLBACK_RATE_PPM
                or rate % CALLBACK_RATE_STEP_PPM
            ):
                return Reason.INVALID_CALLBACK_RATE
        elif rate:
            return Reason.CALLBACK_RATE_NOT_REQUIRED
        return None

    # -- book keeping -------------------------------------------------------------------------
    def _add(self, order: ConditionalOrder, market: MarketState) -> None:
        self.books[order.symbol].add(order, self.watched_price_ticks(market, order.working_type))
        self.count += 1
        if order.client_order_id is not None:
            self.client_ids.setdefault(order.account, {})[order.client_order_id] = order.order_id

    def _removed(self, order: ConditionalOrder) -> None:
        """Forget an order that has left its book (fired or canceled)."""
        self.count -= 1
        cid = order.client_order_id
        if cid is not None:
            mine = self.client_ids[order.account]
            del mine[cid]
            if not mine:
                del self.client_ids[order.account]
        key = self._ladder_of.pop(order.order_id, None)
        if key is not None:
            self._ladders_touched.add(key)
            ladder = self.ladders[key]
            if ladder.stop_order_id == order.order_id:
                ladder.stop_order_id = 0

    @staticmethod
    def _members(ladder: ExitLadder) -> list[int]:
        return (
            [*ladder.target_ids, ladder.stop_order_id]
            if ladder.stop_order_id
            else list(ladder.target_ids)
        )

    def _add_or_fire(
        self, order: ConditionalOrder, market: MarketState, events: list[Event]
    ) -> bool:
        """Accept an order planned and checked earlier in this command; if the price has since
        reached its trigger, it fires now. True when it fired."""
        events.append(self._accepted(order))
        watched = self.watched_price_ticks(market, order.working_type)
        reject = self.books[order.symbol].check(order, watched)
        if reject is None:
            self._add(order, market)
            return False
        assert reject == ConditionalReject.WOULD_IMMEDIATELY_TRIGGER, reject
        self._execute_fired(order, watched, events)
        return True

    def _protection(self, cmd: PlaceOrder, first_id: int) -> list[ConditionalOrder]:
        """The stop-loss and take-profit of an entry, ids from `first_id`, one OCO group."""
        side = -cmd.side
        planned: list[tuple[ConditionalKind, int]] = []
        if cmd.stop_loss_ticks:
            planned.append((ConditionalKind.STOP_MARKET, cmd.stop_loss_ticks))
        if cmd.take_profit_ticks:
            planned.append((ConditionalKind.TAKE_PROFIT_MARKET, cmd.take_profit_ticks))
        return [
            ConditionalOrder(
                order_id=first_id + i,
                account=cmd.account,
                symbol=cmd.symbol,
                side=side,
                kind=kind,
                working_type=WorkingType(cmd.protection_working_type),
                qty_lots=cmd.qty_lots,
                stop_price_ticks=stop_ticks,
                reduce_only=True,
                oco_group=first_id,
            )
            for i, (kind, stop_ticks) in enumerate(planned)
        ]

    # -- firing -------------------------------------------------------------------------------
    def _cascade(self, events: list[Event]) -> None:
        """CONTRACT_PRICE orders against the last trade price, round after round."""
        markets = self.engine.markets
        for _ in range(MAX_CASCADE_ROUNDS):
            fired_any = False
            for symbol, book in self.books.items():
                if not len(book):
                    continue
                last = markets[symbol].last_trade_ticks
                if not last:
                    continue
                for order in book.on_price(_CONTRACT, last):
                    fired_any = True
                    self._flush(events)
                    self._fire(order, last, events)
            self._flush(events)
            if not fired_any:
                return

    def _fire(self, order: ConditionalOrder, price_ticks: int, events: list[Event]) -> None:
        """An order `on_price` has just removed from its book fires at `price_ticks`."""
        self._removed(order)
        siblings = self.books[order.symbol].cancel_siblings(order)
        for sibling in siblings:
            self._removed(sibling)
        if order.reduce_only or order.close_position:
            pos = self.engine.position_of(order.account, order.symbol)
            if pos is None or not pos.size_lots:
                events.append(self._canceled(order, ConditionalEndReason.POSITION_CLOSED))
                for sibling in siblings:
                    events.append(self._canceled(sibling, ConditionalEndReason.POSITION_CLOSED))
                return
        placed_id, placed_events = self._execute_fired(order, price_ticks, events)
        for sibling in siblings:
            events.append(self._canceled(sibling, ConditionalEndReason.OCO))
        self._after_ladder_target(order, placed_id, placed_events, events)

    def _execute_fired(
        self, order: ConditionalOrder, price_ticks: int, events: list[Event]
    ) -> tuple[int | None, list[Event]]:
        """Place the order a fired conditional order becomes; returns its id (None if refused)
        and the events of placing it (also appended to `events`, after the trigger)."""
        engine = self.engine
        spec = engine.markets[order.symbol].spec
        placed_type = placed_order_type(order.kind)
        qty = order.qty_lots
        if order.close_position:
            pos = engine.position_of(order.account, order.symbol)
            size = pos.size_lots if pos is not None else 0
            qty = min(abs(size), spec.max_market_qty_lots) if size * order.side < 0 else 0
        if qty:
            is_limit = placed_type == OrderType.LIMIT
            placed = engine._place_order(
                PlaceOrder(
                    order.account,
                    order.symbol,
                    order.side,
                    placed_type,
                    order.time_in_force if is_limit else TimeInForce.IOC,
                    qty,
                    order.limit_price_ticks if is_limit else 0,
                    order.reduce_only or order.close_position,
                    order.client_order_id,
                )
            )
        else:  # close-position on the wrong side of what is left: nothing it may close
            placed = [
                OrderRejected(
                    order.account, order.symbol, order.client_order_id, Reason.REDUCE_ONLY_REJECTED
                )
            ]
        placed_id = next((e.order_id for e in placed if isinstance(e, OrderAccepted)), None)
        events.append(
            ConditionalOrderTriggered(
                order.order_id,
                order.account,
                order.symbol,
                order.kind,
                order.working_type,
                price_ticks,
                placed_id,
            )
        )
        events.extend(placed)
        return placed_id, placed

    def _flush(self, events: list[Event]) -> None:
        """Cancel the reduce-only and close-position orders of positions that went to zero or
        flipped, those whose side no longer closes the position as it is now (except a
        protection pair whose entry still rests: the entry has yet to open it)."""
        while self._flat:
            queue, self._flat = self._flat, []
            for account, symbol in queue:
                book = self.books[symbol]
                waiting = self._waiting_groups(account, symbol)
                acct = self.engine.accounts.get(account)
                pos = None if acct is None else acct.positions.get(symbol)
                size = 0 if pos is None else pos.size_lots
                closing_side = 0 if not size else (-1 if size > 0 else 1)
                for order in list(book.orders_of(account)):
                    if not (order.reduce_only or order.close_position):
                        continue
                    if order.side == closing_side:
                        continue  # it still closes what is there
                    if order.oco_group is not None and order.oco_group in waiting:
                        continue
                    book.cancel(order.order_id)
                    self._removed(order)
                    events.append(self._canceled(order, ConditionalEndReason.POSITION_CLOSED))

    def _waiting_groups(self, account: str, symbol: str) -> set[int]:
        """OCO groups of protection whose entry order still rests."""
        if not self.parents:
            return set()
        acct = self.engine.accounts.get(account)
        return {
            group
            for entry_id, (a, s, group) in self.parents.items()
            if a == account and s == symbol and acct is not None and entry_id in acct.orders
        }

    def _check_parents(self, events: list[Event]) -> None:
        """Protection whose entry ended: kept with a position, canceled without one."""
        engine = self.engine
        for entry_id in sorted(self.parents):
            account, symbol, group = self.parents[entry_id]
            book = self.books[symbol]
            members = book.group(group)
            acct = engine.accounts.get(account)
            if members and acct is not None and entry_id in acct.orders:
                continue  # the entry still rests
            del self.parents[entry_id]
            pos = engine.position_of(account, symbol)
            if members and pos is not None and pos.size_lots * members[0].side < 0:
                continue  # it opened a position: the pair protects it now
            for order in members:
                book.cancel(order.order_id)
                self._removed(order)
                events.append(self._canceled(order, ConditionalEndReason.ENTRY_ENDED))

    # -- exit ladders -------------------------------------------------------------------------
    def _after_ladder_target(
        self,
        order: ConditionalOrder,
        placed_id: int | None,
        placed_events: list[Event],
        events: list[Event],
    ) -> None:
        """A ladder target fired: count it if it filled, then move the stop if it is time."""
        ladder = self.ladders.get((order.account, order.symbol))
        if ladder is None or order.order_id not in ladder.target_ids or placed_id is None:
            return
        if not _taker_lots(placed_events, placed_id):
            return
        ladder.targets_filled += 1
        filled = ladder.targets_filled
        pos = self.engine.position_of(order.account, order.symbol)
        if pos is None or pos.size_lots * ladder.side >= 0 or not ladder.stop_order_id:
            return  # closed (the flush ends the ladder), or its owner took the stop away
        if ladder.trail_after and filled >= ladder.trail_after:
            stage = _STAGE_TRAILING
        elif ladder.move_stop_to_entry_after and filled >= ladder.move_stop_to_entry_after:
            stage = _STAGE_BREAK_EVEN
        else:
            return
        if ladder.stage < stage:  # a stop only ever moves forward: stop, break-even, trailing
            self._replace_stop(ladder, stage, events)

    def _replace_stop(self, ladder: ExitLadder, stage: int, events: list[Event]) -> None:
        engine = self.engine
        market = engine.markets[ladder.symbol]
        book = self.books[ladder.symbol]
        pos = engine.position_of(ladder.account, ladder.symbol)
        assert pos is not None and pos.size_lots
        key = (ladder.account, ladder.symbol)
        new_id = engine.next_order_id
        if stage == _STAGE_TRAILING:
            new = ConditionalOrder(
                order_id=new_id,
                account=ladder.account,
                symbol=ladder.symbol,
                side=ladder.side,
                kind=ConditionalKind.TRAILING_STOP_MARKET,
                working_type=ladder.working_type,
                qty_lots=abs(pos.size_lots),
                reduce_only=True,
                callback_rate_ppm=ladder.callback_rate_ppm,
            )
        else:
            new = ConditionalOrder(
                order_id=new_id,
                account=ladder.account,
                symbol=ladder.symbol,
                side=ladder.side,
                kind=ConditionalKind.STOP_MARKET,
                working_type=ladder.working_type,
                qty_lots=0,
                stop_price_ticks=_clamp(
                    market.spec, break_even_price_ticks(market.spec, pos.size_lots, pos.cost_atoms)
                ),
                close_position=True,
            )
        old = book.cancel(ladder.stop_order_id)
        assert old is not None, "a ladder's stop is in its book"
        self._removed(old)
        watched = self.watched_price_ticks(market, ladder.working_type)
        reject = book.check(new, watched)
        if reject is not None and reject != ConditionalReject.WOULD_IMMEDIATELY_TRIGGER:
            # No room for it (the trailing-stop limit): the old stop stays where it was, or
            # fires now if this command's own trades have already taken the price through it.
            if book.check(old, watched) is None:
                self._add(old, market)
                self._ladder_of[old.order_id] = key
                ladder.stop_order_id = old.order_id
            else:
                self._execute_fired(old, watched, events)
            return
        engine.next_order_id += 1
        ladder.stage = stage
        events.append(self._canceled(old, ConditionalEndReason.REPLACED))
        events.append(self._accepted(new))
        events.append(
            ExitLadderStopMoved(
                ladder.account, ladder.symbol, old.order_id, new_id, ladder.targets_filled
            )
        )
        if reject is None:
            self._add(new, market)
            self._ladder_of[new_id] = key
            ladder.stop_order_id = new_id
        else:  # the price is already through break-even: the stop fires now
            self._execute_fired(new, watched, events)

    # -- events -------------------------------------------------------------------------------
    @staticmethod
    def _accepted(o: ConditionalOrder) -> ConditionalOrderAccepted:
        return ConditionalOrderAccepted(
            o.order_id,
            o.account,
            o.symbol,
            o.side,
            o.kind,
            o.working_type,
            o.qty_lots,
            o.stop_price_ticks,
            o.limit_price_ticks,
            o.time_in_force,
            o.reduce_only,
            o.close_position,
            o.client_order_id,
            o.callback_rate_ppm,
            o.activation_price_ticks,
            o.oco_group,
        )

    @staticmethod
    def _canceled(o: ConditionalOrder, reason: ConditionalEndReason) -> ConditionalOrderCanceled:
        return ConditionalOrderCanceled(o.order_id, o.account, o.symbol, reason)

    @staticmethod
    def _reject(cmd: PlaceConditionalOrder, reason: Reason) -> list[Event]:
        return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, reason)]

    @staticmethod
    def _reject_ladder(cmd: PlaceExitLadder, reason: Reason) -> list[Event]:
        return [OrderRejected(cmd.account, cmd.symbol, None, reason)]

    # -- state --------------------------------------------------------------------------------
    def record(self) -> list[Any]:
        """Canonical plain data: the books, the ladders, the entries protection waits for."""
        return [
            [self.books[symbol].record() for symbol in sorted(self.books)],
            [msgspec.to_builtins(self.ladders[key]) for key in sorted(self.ladders)],
            [[eid, a, s, g] for eid, (a, s, g) in sorted(self.parents.items())],
        ]

    def load(self, record: list[Any]) -> None:
        """Replace the state with a `record()`; rebuild the derived indexes."""
        book_records, ladder_records, parent_records = record
        books = [TriggerBook.from_record(r) for r in book_records]
        assert sorted(b.symbol for b in books) == sorted(self.books), "books != markets"
        self.books = {b.symbol: b for b in sorted(books, key=lambda b: b.symbol)}
        self.ladders = {}
        for r in ladder_records:
            ladder = msgspec.convert(r, ExitLadder)
            self.ladders[(ladder.account, ladder.symbol)] = ladder
        self.parents = {eid: (a, s, g) for eid, a, s, g in parent_records}
        self.count = 0
        self.client_ids = {}
        self._flat = []
        self._ladders_touched = set()
        for book in self.books.values():
            for order in book.orders():
                self.count += 1
                if order.client_order_id is not None:
                    mine = self.client_ids.setdefault(order.account, {})
                    mine[order.client_order_id] = order.order_id
        self._ladder_of = self._ladder_index()

    def _ladder_index(self) -> dict[int, tuple[str, str]]:
        index: dict[int, tuple[str, str]] = {}
        for key, ladder in self.ladders.items():
            book = self.books[ladder.symbol]
            for oid in self._members(ladder):
                if oid in book:
                    index[oid] = key
        return index

    def check_invariants(self) -> None:
        """Recompute the derived indexes and cross-check with the engine; AssertionError."""
        engine = self.engine
        assert not self._flat, "flat positions not flushed at the end of a command"
        assert not self._ladders_touched, "ladders not cleaned up at the end of a command"
        assert sorted(self.books) == sorted(engine.markets), "a trigger book per market"
        count = 0
        client_ids: dict[str, dict[str, int]] = {}
        for symbol, book in self.books.items():
            assert book.symbol == symbol
            book.validate_internal_state()
            for o in book.orders():
                count += 1
                assert 0 < o.order_id < engine.next_order_id, f"conditional id {o.order_id}"
                acct = engine.accounts.get(o.account)
                assert acct is not None, f"conditional order {o.order_id} of no account"
                assert o.order_id not in acct.orders, f"id {o.order_id} both open and conditional"
                if o.client_order_id is not None:
                    assert o.client_order_id not in acct.client_ids, "client id used twice"
                    client_ids.setdefault(o.account, {})[o.client_order_id] = o.order_id
                if o.reduce_only or o.close_position:
                    pos = acct.positions.get(symbol)
                    waiting = o.oco_group is not None and o.oco_group in self._waiting_groups(
                        o.account, symbol
                    )
                    assert waiting or (pos is not None and pos.size_lots), (
                        f"reduce-only conditional {o.order_id} outlived its position"
                    )
        assert count == self.count, "conditional order count drifted"
        assert client_ids == self.client_ids, "conditional client-id index drifted"
        for key, ladder in self.ladders.items():
            assert key == (ladder.account, ladder.symbol)
            book = self.books[ladder.symbol]
            assert ladder.stop_order_id == 0 or ladder.stop_order_id in book, "ladder stop gone"
            assert any(oid in book for oid in self._members(ladder)), "empty ladder kept"
        assert self._ladder_of == self._ladder_index(), "ladder member index drifted"
        for entry_id, (_account, symbol, group) in self.parents.items():
            assert 0 < entry_id < engine.next_order_id
            assert self.books[symbol].group(group), f"protection of entry {entry_id} is gone"


def _taker_lots(events: list[Event], order_id: int) -> int:
    """Lots an order took as the taker in these events."""
    return sum(
        e.qty_lots for e in events if isinstance(e, TradeExecuted) and e.taker_order_id == order_id
    )


def _clamp(spec: MarketSpec, price_ticks: int) -> int:
    return min(max(price_ticks, spec.min_price_ticks), spec.max_price_ticks)


__all__ = ["Conditionals", "ExitLadder", "break_even_price_ticks"]
