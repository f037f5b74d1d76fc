"""The conditional-order pass: stops and take-profits fired by the mark and the last price.

Also protection attached to an entry, and exit ladders kept as their targets fill.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. The books and the checks
at placement are `perpex.core.conditional_state` (this class extends it), the ladders' rules
`perpex.core.exit_ladders`. A fired order becomes an ordinary order through
`ExchangeState.submit_order`, so a triggered stop meets every rule a user's order meets (price
band, reduce-only, margin, bankruptcy cap) and slips through a thin book like one.

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

"""

from __future__ import annotations

from typing import Final

import msgspec

from perpex.core.book import BUY, SELL
from perpex.core.conditional_state import (
    ConditionalState,
    accepted,
    canceled,
    ladder_rejected,
    rejected,
)
from perpex.core.exit_ladders import (
    STAGE_BREAK_EVEN,
    STAGE_TRAILING,
    ExitLadder,
    break_even_price_ticks,
    ladder_orders,
    ladder_shape,
    members,
    replacement_stop,
    taker_lots,
)
from perpex.core.messages import (
    CancelOrder,
    ConditionalEndReason,
    ConditionalKind,
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
    WorkingType,
)
from perpex.core.state import EngineError, MarketState
from perpex.core.trigger_rules import ConditionalOrder, ConditionalReject, placed_order_type

# Rounds of the CONTRACT_PRICE cascade in one command (each round fires at least one order).
MAX_CASCADE_ROUNDS: Final = 1_000

_MARK: Final = WorkingType.MARK_PRICE
_CONTRACT: Final = WorkingType.CONTRACT_PRICE


class Conditionals(ConditionalState):
    """The engine's conditional orders: the pass that fires them and the commands that place
    and cancel them. See the module docstring."""

    __slots__ = ()

    # -- the pass -----------------------------------------------------------------------------
    def on_mark(self, symbol: str, events: list[Event]) -> None:
        """After the liquidation pass of a mark change: MARK_PRICE orders, then the cascade."""
        if not self.pending():
            return
        self.flush(events)  # what the liquidation pass closed loses its stops first
        book = self.books[symbol]
        if len(book):
            mark = self.state.markets[symbol].mark_ticks
            for order in book.on_price(_MARK, mark):
                self.flush(events)
                self.fire(order, mark, events)
        self.cascade(events)

    def after_command(self, events: list[Event]) -> None:
        """End of every command: stops of flat positions, the CONTRACT_PRICE cascade, protection
        whose entry ended, ladders with nothing left. Changes nothing after a refusal."""
        self.flush(events)
        self.cascade(events)
        self.check_parents(events)
        for key in sorted(self.ladders_touched):  # a ladder ends with its last order
            ladder = self.ladders.get(key)
            if ladder is not None and not any(oid in self.ladder_of for oid in members(ladder)):
                del self.ladders[key]
        self.ladders_touched.clear()

    # -- commands -----------------------------------------------------------------------------
    def place(self, cmd: PlaceConditionalOrder) -> list[Event]:
        state = self.state
        market = state.markets.get(cmd.symbol)
        if market is None:
            return rejected(cmd, Reason.UNKNOWN_SYMBOL)
        if not state.valid_name(cmd.account):
            return rejected(cmd, Reason.UNKNOWN_ACCOUNT)
        if cmd.side != BUY and cmd.side != SELL:
            raise EngineError(f"side {cmd.side!r}")
        if not market.mark_ticks:
            return rejected(cmd, Reason.NO_MARK_PRICE)
        order = ConditionalOrder(
            order_id=state.next_order_id,
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
        reason = self.placement_refusal(order, market)
        if reason is not None:
            return rejected(cmd, reason)
        # ---- commit --------------------------------------------------------------------
        state.take_order_ids(1)
        state.account_for_write(cmd.account)
        self.add(order, market)
        return [accepted(order)]

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
        self.removed(order)
        return [canceled(order, ConditionalEndReason.CANCELED)]

    def place_protected(self, cmd: PlaceOrder) -> list[Event]:
        """An entry with a stop-loss and/or take-profit attached (see the module docstring)."""
        state = self.state
        plain = msgspec.structs.replace(cmd, stop_loss_ticks=0, take_profit_ticks=0)
        market = state.markets.get(cmd.symbol)
        if market is None or not market.mark_ticks or cmd.side not in (BUY, SELL):
            return state.submit_order(plain)  # its refusal (or error) says why
        if cmd.reduce_only:  # it opens nothing, so there is nothing for the pair to protect
            refusal = Reason.REDUCE_ONLY_REJECTED
            return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, refusal)]
        planned = self.protection(cmd, state.next_order_id + 1)
        for i, order in enumerate(planned):
            reason = self.placement_refusal(order, market, attached=True, extra_count=i)
            if reason is not None:
                return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, reason)]
        events = state.submit_order(plain)
        entry_id = next((e.order_id for e in events if isinstance(e, OrderAccepted)), None)
        if entry_id is None:
            return events  # refused: nothing attached
        acct = state.accounts[cmd.account]
        resting = entry_id in acct.orders
        pos = acct.positions[cmd.symbol]
        if not resting and pos.size_lots * cmd.side <= 0:
            return events  # it is done and left no position its way: nothing to protect
        self.flush(events)  # stops of a position this entry closed go before these attach
        protection = self.protection(cmd, state.next_order_id)
        group = protection[0].oco_group
        assert group is not None
        state.take_order_ids(len(protection))
        for i, order in enumerate(protection):
            if self.add_or_fire(order, market, events):
                for rest in protection[i + 1 :]:  # the group has fired: the rest never rests
                    events.append(accepted(rest))
                    events.append(canceled(rest, ConditionalEndReason.OCO))
                break
        if resting and self.books[cmd.symbol].group(group):
            self.parents[entry_id] = (cmd.account, cmd.symbol, group)
        return events

    def place_ladder(self, cmd: PlaceExitLadder) -> list[Event]:
        state = self.state
        market = state.markets.get(cmd.symbol)
        if market is None:
            return ladder_rejected(cmd, Reason.UNKNOWN_SYMBOL)
        if not market.mark_ticks:
            return ladder_rejected(cmd, Reason.NO_MARK_PRICE)
        pos = state.position_of(cmd.account, cmd.symbol)
        size = pos.size_lots if pos is not None else 0
        if not size:
            return ladder_rejected(cmd, Reason.REDUCE_ONLY_REJECTED)
        if (cmd.account, cmd.symbol) in self.ladders:
            return ladder_rejected(cmd, Reason.EXIT_LADDER_EXISTS)
        reason = ladder_shape(cmd, size)
        if reason is not None:
            return ladder_rejected(cmd, reason)
        book = self.books[cmd.symbol]
        n = len(cmd.targets)
        if book.count_of(cmd.account) + n + 1 > book.max_orders_per_account:
            return ladder_rejected(cmd, Reason.TOO_MANY_STOP_ORDERS)
        orders = ladder_orders(cmd, size, state.next_order_id)
        if not orders:  # a target of less than a lot
            return ladder_rejected(cmd, Reason.INVALID_EXIT_LADDER)
        for order in orders:
            reason = self.placement_refusal(order, market)
            if reason is not None:
                return ladder_rejected(cmd, reason)
        # ---- commit --------------------------------------------------------------------
        state.take_order_ids(n + 1)
        key = (cmd.account, cmd.symbol)
        ladder = ExitLadder(
            account=cmd.account,
            symbol=cmd.symbol,
            side=orders[-1].side,
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
            self.add(order, market)
            self.ladder_of[order.order_id] = key
            events.append(accepted(order))
        events.append(
            ExitLadderPlaced(
                cmd.account, cmd.symbol, tuple(ladder.target_ids), ladder.stop_order_id
            )
        )
        return events

    def add_or_fire(
        self, order: ConditionalOrder, market: MarketState, events: list[Event]
    ) -> bool:
        """Accept an order planned and checked earlier in this command; if the price has since
        reached its trigger, it fires now. True when it fired."""
        events.append(accepted(order))
        watched = self.watched_price_ticks(market, order.working_type)
        reject = self.books[order.symbol].check(order, watched)
        if reject is None:
            self.add(order, market)
            return False
        assert reject == ConditionalReject.WOULD_IMMEDIATELY_TRIGGER, reject
        self.execute_fired(order, watched, events)
        return True

    def protection(self, cmd: PlaceOrder, first_id: int) -> list[ConditionalOrder]:
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
    def cascade(self, events: list[Event]) -> None:
        """CONTRACT_PRICE orders against the last trade price, round after round."""
        markets = self.state.markets
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
                    self.flush(events)
                    self.fire(order, last, events)
            self.flush(events)
            if not fired_any:
                return

    def fire(self, order: ConditionalOrder, price_ticks: int, events: list[Event]) -> None:
        """An order `on_price` has just removed from its book fires at `price_ticks`."""
        self.removed(order)
        siblings = self.books[order.symbol].cancel_siblings(order)
        for sibling in siblings:
            self.removed(sibling)
        if order.reduce_only or order.close_position:
            pos = self.state.position_of(order.account, order.symbol)
            if pos is None or not pos.size_lots:
                events.append(canceled(order, ConditionalEndReason.POSITION_CLOSED))
                for sibling in siblings:
                    events.append(canceled(sibling, ConditionalEndReason.POSITION_CLOSED))
                return
        placed_id, placed_events = self.execute_fired(order, price_ticks, events)
        for sibling in siblings:
            events.append(canceled(sibling, ConditionalEndReason.OCO))
        self.after_ladder_target(order, placed_id, placed_events, events)

    def execute_fired(
        self, order: ConditionalOrder, price_ticks: int, events: list[Event]
    ) -> tuple[int | None, list[Event]]:
        """Place the order a fired conditional order becomes; returns its id (None if refused)
        and the events of placing it (also appended to `events`, after the trigger)."""
        state = self.state
        spec = state.markets[order.symbol].spec
        placed_type = placed_order_type(order.kind)
        qty = order.qty_lots
        if order.close_position:
            pos = state.position_of(order.account, order.symbol)
            size = pos.size_lots if pos is not None else 0
            qty = min(abs(size), spec.max_market_qty_lots) if size * order.side < 0 else 0
        if qty:
            is_limit = placed_type == OrderType.LIMIT
            placed = state.submit_order(
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

    def flush(self, events: list[Event]) -> None:
        """Cancel the reduce-only and close-position orders of positions that went to zero or
        flipped, those whose side no longer closes the position as it is now (except a
        protection pair whose entry still rests: the entry has yet to open it)."""
        while self.flat:
            queue, self.flat = self.flat, []
            for account, symbol in queue:
                book = self.books[symbol]
                waiting = self.waiting_groups(account, symbol)
                acct = self.state.accounts.get(account)
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
                    self.removed(order)
                    events.append(canceled(order, ConditionalEndReason.POSITION_CLOSED))

    def check_parents(self, events: list[Event]) -> None:
        """Protection whose entry ended: kept with a position, canceled without one."""
        state = self.state
        for entry_id in sorted(self.parents):
            account, symbol, group = self.parents[entry_id]
            book = self.books[symbol]
            members = book.group(group)
            acct = state.accounts.get(account)
            if members and acct is not None and entry_id in acct.orders:
                continue  # the entry still rests
            del self.parents[entry_id]
            pos = state.position_of(account, symbol)
            if members and pos is not None and pos.size_lots * members[0].side < 0:
                continue  # it opened a position: the pair protects it now
            for order in members:
                book.cancel(order.order_id)
                self.removed(order)
                events.append(canceled(order, ConditionalEndReason.ENTRY_ENDED))

    # -- exit ladders -------------------------------------------------------------------------
    def after_ladder_target(
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
        if not taker_lots(placed_events, placed_id):
            return
        ladder.targets_filled += 1
        filled = ladder.targets_filled
        pos = self.state.position_of(order.account, order.symbol)
        if pos is None or pos.size_lots * ladder.side >= 0 or not ladder.stop_order_id:
            return  # closed (the flush ends the ladder), or its owner took the stop away
        if ladder.trail_after and filled >= ladder.trail_after:
            stage = STAGE_TRAILING
        elif ladder.move_stop_to_entry_after and filled >= ladder.move_stop_to_entry_after:
            stage = STAGE_BREAK_EVEN
        else:
            return
        if ladder.stage < stage:  # a stop only ever moves forward: stop, break-even, trailing
            self.replace_stop(ladder, stage, events)

    def replace_stop(self, ladder: ExitLadder, stage: int, events: list[Event]) -> None:
        state = self.state
        market = state.markets[ladder.symbol]
        book = self.books[ladder.symbol]
        pos = state.position_of(ladder.account, ladder.symbol)
        assert pos is not None and pos.size_lots
        key = (ladder.account, ladder.symbol)
        new_id = state.next_order_id
        new = replacement_stop(ladder, stage, market.spec, pos.size_lots, pos.cost_atoms, new_id)
        old = book.cancel(ladder.stop_order_id)
        assert old is not None, "a ladder's stop is in its book"
        self.removed(old)
        watched = self.watched_price_ticks(market, ladder.working_type)
        reject = book.check(new, watched)
        if reject is not None and reject != ConditionalReject.WOULD_IMMEDIATELY_TRIGGER:
            # No room for it (the trailing-stop limit): the old stop stays where it was, or
            # fires now if this command's own trades have already taken the price through it.
            if book.check(old, watched) is None:
                self.add(old, market)
                self.ladder_of[old.order_id] = key
                ladder.stop_order_id = old.order_id
            else:
                self.execute_fired(old, watched, events)
            return
        state.take_order_ids(1)
        ladder.stage = stage
        events.append(canceled(old, ConditionalEndReason.REPLACED))
        events.append(accepted(new))
        events.append(
            ExitLadderStopMoved(
                ladder.account, ladder.symbol, old.order_id, new_id, ladder.targets_filled
            )
        )
        if reject is None:
            self.add(new, market)
            self.ladder_of[new_id] = key
            ladder.stop_order_id = new_id
        else:  # the price is already through break-even: the stop fires now
            self.execute_fired(new, watched, events)


__all__ = ["MAX_CASCADE_ROUNDS", "Conditionals", "ExitLadder", "break_even_price_ticks"]
