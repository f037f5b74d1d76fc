"""The order calls of the `Exchange` facade: place (plain, protected, conditional, an exit
ladder), modify and cancel, decimal strings in, an `Order` view out.

`place_order` and `cancel_order` are the hot path of a user's program: arguments are checked
in Binance's order of complaints, the usual combinations of enums in one lookup and repeated
decimal strings from `UnitScale.cache`; the returned `Order` is built from the engine's own
record or events, its names and decimals computed only when read (`perpex.views`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from perpex import parse
from perpex.checks import amended_order_id, no_order_named, orig_client_order_id
from perpex.convert import MarketEdge, conditional_view, order_of_placement
from perpex.core.engine import EngineError, Order as EngineOrder
from perpex.core.markets import MarketSpec
from perpex.core.mass_quote import MAX_MASS_QUOTES
from perpex.core.messages import (
    AmendOrder,
    CancelOrder,
    ConditionalKind,
    ConditionalOrderAccepted,
    MassQuote,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderRejected,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    Reason,
    RequestRejected,
    SelfTradePrevention,
    TimeInForce,
    TradeExecuted,
    WorkingType,
)
from perpex.core.orders import ConditionalOrder
from perpex.core.units import PPM, Rounding, atoms_to_decimal, div
from perpex.errors import ExchangeError, error_for, mandatory, not_required
from perpex.exchange_base import ExchangeBase, internal_error
from perpex.parse import (
    INT64_LIMIT,
    PLAIN_ORDER_ENUMS,
    SIDES,
    WORKING_TYPES,
    choice,
    order_enums,
    price_ticks,
    qty_lots,
)
from perpex.views import Order, lazy_order

_GTC: Final = TimeInForce.GTC
_IOC: Final = TimeInForce.IOC
_LIMIT: Final = OrderType.LIMIT
_EXPIRE_TAKER: Final = SelfTradePrevention.EXPIRE_TAKER
_type_of = type  # `place_order` has a parameter named `type`, as Binance's API does


def _accepted_order(e: ConditionalOrderAccepted) -> ConditionalOrder:
    """The conditional order as its acceptance describes it (a trailing stop not active)."""
    return ConditionalOrder(
        order_id=e.order_id,
        account=e.account,
        symbol=e.symbol,
        side=e.side,
        kind=e.kind,
        working_type=e.working_type,
        qty_lots=e.qty_lots,
        stop_price_ticks=e.stop_price_ticks,
        limit_price_ticks=e.limit_price_ticks,
        time_in_force=e.time_in_force,
        reduce_only=e.reduce_only,
        close_position=e.close_position,
        client_order_id=e.client_order_id,
        callback_rate_ppm=e.callback_rate_ppm,
        activation_price_ticks=e.activation_price_ticks,
        oco_group=e.oco_group,
    )


class OrderCalls(ExchangeBase):
    """`Exchange`'s order methods."""

    def place_order(
        self,
        account: str,
        symbol: str,
        side: str,
        type: str = "LIMIT",
        quantity: object = None,
        price: object = None,
        time_in_force: str = "GTC",
        reduce_only: bool = False,
        client_order_id: str | None = None,
        stop_price: object = None,
        working_type: str = "MARK_PRICE",
        callback_rate: object = None,
        activation_price: object = None,
        take_profit: object = None,
        stop_loss: object = None,
        close_position: bool = False,
        self_trade_prevention: str = "EXPIRE_TAKER",
    ) -> Order:
        """A LIMIT or MARKET order (optionally with a stop-loss and take-profit attached: a
        reduce-only STOP_MARKET / TAKE_PROFIT_MARKET pair, one cancels the other, watching
        `working_type`), or a conditional order: STOP_MARKET, STOP, TAKE_PROFIT_MARKET,
        TAKE_PROFIT (trigger in `stop_price`, limit in `price` for STOP/TAKE_PROFIT) or
        TRAILING_STOP_MARKET (`callback_rate` in per cent, 0.1 to 10, optional
        `activation_price`), which rests outside the book and comes back with status NEW.

        `self_trade_prevention` (Binance's `selfTradePreventionMode`) says what a LIMIT or
        MARKET order does when it reaches a resting order of the same account: EXPIRE_TAKER
        (its rest expires), EXPIRE_MAKER (that resting order is canceled and matching goes
        on) or EXPIRE_BOTH. A conditional order's placed order expires the taker.

        With a journal, a client order id the idempotency window holds for the account gets
        its first answer back and changes nothing: the view of the order as first answered
        (a conditional order still resting from its live record), or the first refusal. An
        order of the other kind (plain / conditional) under that id is not a resend: -4116.
        Without one, the engine refuses only an id an open order of the account holds (-4116)."""
        market = self._markets.get(symbol) if _type_of(symbol) is str else None
        if market is None:
            market = self._market(symbol)
        if _type_of(account) is not str or account not in self._known_accounts:
            account = self._check.account(account)
        # The usual combinations of side, type, time in force and working type in one lookup;
        # anything else (a conditional type, a bad value) takes the checks one by one.
        try:
            combination = PLAIN_ORDER_ENUMS.get((side, type, time_in_force, working_type))
        except Exception:  # an unhashable (or hostile) argument: the checks below say which
            combination = None
        kind: ConditionalKind | None = None
        order_type: OrderType | None
        if combination is not None:
            side_value, order_type, tif, watched = combination
        else:
            side_value, order_type, kind, tif, watched = order_enums(
                side, type, time_in_force, working_type
            )
        if reduce_only is not False and reduce_only is not True:
            raise mandatory("reduceOnly")
        if close_position is not False and close_position is not True:
            raise mandatory("closePosition")
        if client_order_id is not None:
            client_order_id = parse.client_order_id(client_order_id)
        stp = (
            _EXPIRE_TAKER
            if self_trade_prevention == "EXPIRE_TAKER"
            else parse.self_trade_prevention(self_trade_prevention)
        )
        if kind is not None:
            if stp is not _EXPIRE_TAKER:
                raise not_required("selfTradePreventionMode")
            return self._place_conditional(
                market, account, side_value, kind, watched, tif, quantity, price, reduce_only,
                close_position, client_order_id, stop_price, callback_rate, activation_price,
                take_profit, stop_loss,
            )  # fmt: skip
        if stop_price is not None:
            raise not_required("stopPrice")
        if callback_rate is not None:
            raise not_required("callbackRate")
        if activation_price is not None:
            raise not_required("activationPrice")
        if close_position:
            raise not_required("closePosition")
        price_scale = market.price
        stop_loss_ticks = 0 if stop_loss is None else price_ticks(price_scale, stop_loss)
        take_profit_ticks = 0 if take_profit is None else price_ticks(price_scale, take_profit)
        if quantity is None:
            raise mandatory("quantity")
        # (A string seen before is one dict lookup: UnitScale.cache.)
        lots = market.qty_cache.get(quantity) if _type_of(quantity) is str else None
        if lots is None:
            lots = qty_lots(market.qty, quantity)
        if order_type is _LIMIT:
            if price is None:
                raise mandatory("price")
            ticks = market.price_cache.get(price) if _type_of(price) is str else None
            if ticks is None:
                ticks = price_ticks(price_scale, price)
        else:
            if price is not None:
                raise not_required("price")
            ticks = 0
            tif = _IOC  # a market order never rests
        assert order_type is not None
        command = PlaceOrder(
            account, market.symbol, side_value, order_type, tif, lots, ticks, reduce_only,
            client_order_id, stop_loss_ticks, take_profit_ticks, watched, stp,
        )  # fmt: skip
        if self.journal is None:  # `_apply_outcome`, inlined for the common case
            try:
                events = self.engine.apply(command)
            except EngineError as exc:
                raise internal_error(exc) from None
            self._events.extend(events)
            duplicate = False
        else:
            events, duplicate = self._apply_outcome(command)
        first = events[0]
        # A refusal is the command's only event (later ones, of stops its trades fired, are
        # other orders' business).
        if _type_of(first) is not OrderAccepted:
            if isinstance(first, OrderRejected):
                # (a resend's first answer may name another symbol, or one `submit` sent that
                # is not listed: the error is worded with its spec if it has one)
                spec = self._specs.get(first.symbol, market.spec) if duplicate else market.spec
                raise self._order_error(spec, first.reason, side_value)
            if duplicate:
                # The journal's first answer under this (account, client order id) placed a
                # conditional order: this plain order is not a resend of it.
                raise error_for(Reason.DUPLICATE_CLIENT_ORDER_ID)
            first = next(e for e in events if isinstance(e, OrderAccepted))
        assert isinstance(first, OrderAccepted)
        if duplicate:
            # A resend gets its first answer, as the first caller was told it (the order's
            # own events; its symbol, which the resend may not have named).
            return order_of_placement(self._specs[first.symbol], first, events, None)
        # Still open: its record has the fills; else the command's events say how it ended.
        record = self.engine.accounts[account].orders.get(first.order_id)
        if record is None:
            return order_of_placement(market.spec, first, events, None)
        filled = record.filled_lots
        return lazy_order(
            market.spec, first.order_id, first.client_order_id,
            "PARTIALLY_FILLED" if filled else "NEW", first.reduce_only, first.side,
            first.order_type, first.time_in_force, first.price_ticks, first.qty_lots, filled,
            record.filled_quote_ticks,
        )  # fmt: skip

    def _place_conditional(
        self,
        market: MarketEdge,
        account: str,
        side: int,
        kind: ConditionalKind,
        watched: WorkingType,
        tif: TimeInForce,
        quantity: object,
        price: object,
        reduce_only: bool,
        close_position: bool,
        client_order_id: str | None,
        stop_price: object,
        callback_rate: object,
        activation_price: object,
        take_profit: object,
        stop_loss: object,
    ) -> Order:
        if take_profit is not None:
            raise not_required("takeProfit")
        if stop_loss is not None:
            raise not_required("stopLoss")
        # closePosition takes no quantity (one sent is the engine's -4137 to refuse)
        if quantity is None and not close_position:
            raise mandatory("quantity")
        lots = 0 if quantity is None else qty_lots(market.qty, quantity)
        scale = market.price
        command = PlaceConditionalOrder(
            account,
            market.symbol,
            side,
            kind,
            watched,
            lots,
            0 if stop_price is None else price_ticks(scale, stop_price),
            0 if price is None else price_ticks(scale, price),
            tif if kind in (ConditionalKind.STOP, ConditionalKind.TAKE_PROFIT) else _GTC,
            reduce_only,
            close_position,
            client_order_id,
            0 if callback_rate is None else parse.callback_rate_ppm(callback_rate),
            None if activation_price is None else price_ticks(scale, activation_price),
        )
        events, duplicate = self._apply_outcome(command)
        first = events[0] if events else None
        if isinstance(first, OrderRejected):
            spec = self._specs.get(first.symbol, market.spec) if duplicate else market.spec
            raise self._order_error(spec, first.reason, side)
        if not isinstance(first, ConditionalOrderAccepted):
            if duplicate:
                # The journal's first answer under this (account, client order id) placed a
                # plain order: this conditional order is not a resend of it.
                raise error_for(Reason.DUPLICATE_CLIENT_ORDER_ID)
            raise internal_error(EngineError(f"conditional order answered {first!r}"))
        # Its live record while it rests (a trailing stop's trigger as it is now). A resend
        # may come after the order was canceled or fired: then the view is the order as it
        # was accepted, with the status the first answer gave (NEW). Which way it ended is in
        # the event log only (`events()`, perhaps taken or not replayed), not worth a scan.
        order = self.engine.conditionals.get(first.order_id)
        if order is None:
            order = _accepted_order(first)
        return conditional_view(self._specs[first.symbol], order, "NEW")

    def place_exit_ladder(
        self,
        account: str,
        symbol: str,
        targets: Sequence[tuple[object, object]],
        stop_loss: object,
        move_stop_to_entry_after: int | None = 1,
        trail_after: int | None = None,
        callback_rate: object = None,
        working_type: str = "MARK_PRICE",
    ) -> list[Order]:
        """Scale out of the open position: `targets` are (price, fraction of the position)
        pairs going away from the entry, fractions summing to 1; each becomes a reduce-only
        TAKE_PROFIT_MARKET for that fraction (rounded down to the step; the last takes the
        rest). `stop_loss` is a close-position STOP_MARKET. Once `move_stop_to_entry_after`
        targets have filled, the stop moves to break-even (entry plus fees, rounded against
        the trader); once `trail_after` have, a TRAILING_STOP_MARKET at `callback_rate` per
        cent replaces it. Returns the orders placed: the targets, then the stop."""
        market = self._market(symbol)
        name = self._account(account)
        watched = choice(working_type, WORKING_TYPES)
        if watched is None:
            raise parse.invalid_working_type()
        if (
            isinstance(targets, str | bytes)
            or not isinstance(targets, Sequence)
            or not 0 < len(targets) <= parse.MAX_LADDER_TARGETS
        ):
            raise parse.invalid_targets()
        parsed: list[tuple[int, int]] = []
        for target in targets:
            if not isinstance(target, tuple | list) or len(target) != 2:
                raise parse.invalid_targets()
            target_price, fraction = target
            fraction_ppm = parse.fraction_ppm(fraction)
            parsed.append((price_ticks(market.price, target_price), fraction_ppm))
        if stop_loss is None:
            raise mandatory("stopLoss")
        command = PlaceExitLadder(
            name,
            market.symbol,
            tuple(parsed),
            price_ticks(market.price, stop_loss),
            parse.count(move_stop_to_entry_after, "moveStopToEntryAfter"),
            parse.count(trail_after, "trailAfter"),
            0 if callback_rate is None else parse.callback_rate_ppm(callback_rate),
            watched,
        )
        events = self._apply(command)
        if events and isinstance(events[0], OrderRejected):
            raise self._order_error(market.spec, events[0].reason, 0)
        views = []
        for e in events:
            if isinstance(e, ConditionalOrderAccepted):
                order = self.engine.conditionals.get(e.order_id)
                assert order is not None, "a ladder's orders cannot fire at placement"
                views.append(conditional_view(market.spec, order, "NEW"))
        return views

    def mass_quote(
        self,
        account: str,
        symbol: str,
        bids: Sequence[tuple[object, object]] = (),
        asks: Sequence[tuple[object, object]] = (),
    ) -> list[Order]:
        """Replace the account's quotes in `symbol` in one engine command (`MassQuote`): every
        open order of the account in the symbol is canceled (conditional orders stay), then
        `bids` and then `asks`, each a (price, quantity) pair, are placed in the order given as
        post-only (GTX) LIMIT orders. At most 100 quotes in all, every bid below every ask; none
        pulls the account's quotes.

        A malformed ladder raises ExchangeError and changes nothing. A quote the order path
        refuses (margin, the price band, min notional, one that would cross the book: -5022)
        is left out and the others still rest; its `OrderRejected` is in `events()`. Returns
        the views of the orders placed, in the order they were placed."""
        market = self._market(symbol)
        name = self._account(account)
        quotes: list[tuple[int, int, int]] = []
        for side, param, ladder in ((1, "bids", bids), (-1, "asks", asks)):
            if (
                isinstance(ladder, str | bytes)
                or not isinstance(ladder, Sequence)
                or len(ladder) > MAX_MASS_QUOTES
            ):
                raise parse.not_valid(param)
            for quote in ladder:
                if not isinstance(quote, tuple | list) or len(quote) != 2:
                    raise parse.not_valid(param)
                price, quantity = quote
                quotes.append(
                    (side, price_ticks(market.price, price), qty_lots(market.qty, quantity))
                )
        if len(quotes) > MAX_MASS_QUOTES:
            raise parse.not_valid("quotes")
        events = self._apply(MassQuote(name, market.symbol, tuple(quotes)))
        # Refused whole: one RequestRejected (an OrderRejected is one quote's, the rest stand).
        if events and _type_of(events[0]) is RequestRejected:
            self._raise_rejection(events)
        views = []
        orders = self.engine.accounts[name].orders if name in self.engine.accounts else {}
        for e in events:
            if _type_of(e) is OrderAccepted and e.account == name and e.symbol == market.symbol:
                assert isinstance(e, OrderAccepted)
                record = orders.get(e.order_id)
                if record is None:  # (a post-only order rests whole; kept for safety)
                    views.append(order_of_placement(market.spec, e, events, None))
                    continue
                view = lazy_order(
                    market.spec, e.order_id, None, "NEW", False, e.side, e.order_type,
                    e.time_in_force, e.price_ticks, e.qty_lots, record.filled_lots,
                    record.filled_quote_ticks,
                )  # fmt: skip
                views.append(view)
        return views

    def _order_error(self, spec: MarketSpec, reason: Reason, side: int) -> ExchangeError:
        if reason is Reason.MIN_NOTIONAL or reason is Reason.AMEND_MIN_NOTIONAL:
            return error_for(reason, min_notional=atoms_to_decimal(spec.min_notional_atoms))
        if reason in (Reason.PRICE_ABOVE_BAND, Reason.PRICE_BELOW_BAND):
            mark = self.engine.market(spec.symbol).mark_ticks
            band = spec.price_band_ppm
            if side > 0:
                edge = div(mark * (PPM + band), PPM, Rounding.FLOOR)
            else:
                edge = div(mark * (PPM - band), PPM, Rounding.CEIL)
            return error_for(reason, band_price=spec.price_to_decimal(edge))
        return error_for(reason)

    def modify_order(
        self,
        account: str,
        symbol: str,
        order_id: int | None = None,
        client_order_id: str | None = None,
        *,
        side: str,
        quantity: object,
        price: object,
    ) -> Order:
        """Binance's Modify Order (PUT /fapi/v1/order): a new price and total quantity for an
        open LIMIT order, named by `order_id` or `client_order_id` (its origClientOrderId; the
        id wins when both are given). `side` must be the order's; `quantity` is the new
        original quantity, above what has filled. The order keeps its id, client order id,
        time in force and reduce-only flag; a new price or a larger quantity sends it to the
        back of its level, a smaller quantity at the same price keeps its place, and a new
        price that crosses the book trades as a new GTC order would (a post-only order is
        refused instead, -5022). Returns the order as it is after the amendment: NEW,
        PARTIALLY_FILLED, FILLED, or EXPIRED when its rest was expired (self-trade prevention,
        a closing order past its bankruptcy price).

        A refused amendment raises ExchangeError and leaves the order as it was: -2013 no
        such open order, -1130 another side, -4003 a quantity not above the executed one,
        -5027 the same price and quantity, -5029 below the min notional, -2019 margin, and the
        new order's checks (-4014 off the tick, -4016/-4024 the band, ...);
        `perpex.core.amend` has them all."""
        market = self._markets.get(symbol) if _type_of(symbol) is str else None
        if market is None:
            market = self._market(symbol)
        name = self._account(account)
        if order_id is not None:
            order_id = amended_order_id(order_id)
        elif client_order_id is None:
            raise no_order_named()
        if client_order_id is not None:
            client_order_id = orig_client_order_id(client_order_id)
        side_value = parse.choice(side, SIDES)
        if side_value is None:
            raise parse.invalid_side()
        if quantity is None:
            raise mandatory("quantity")
        lots = qty_lots(market.qty, quantity)
        if price is None:
            raise mandatory("price")
        ticks = price_ticks(market.price, price)
        # The engine's record of the order (the amendment changes it in place, and it keeps
        # its fills if the amendment filled or expired it): the view comes from it.
        live: EngineOrder | None = None
        acct = self.engine.accounts.get(name)
        if acct is not None:
            oid = order_id
            if oid is None and client_order_id is not None:
                oid = acct.client_ids.get(client_order_id)
            live = None if oid is None else acct.orders.get(oid)
        events = self._apply(
            AmendOrder(name, market.symbol, order_id, client_order_id, side_value, lots, ticks)
        )
        first = events[0]
        if _type_of(first) is not OrderAmended:
            assert isinstance(first, RequestRejected), first
            raise self._order_error(market.spec, first.reason, side_value)
        assert live is not None and live.order_id == first.order_id
        if acct is not None and live.order_id in acct.orders:
            status = "PARTIALLY_FILLED" if live.filled_lots else "NEW"
        elif any(_type_of(e) is OrderCanceled and e.order_id == live.order_id for e in events):
            status = "EXPIRED"  # its rest expired: self-trade prevention or bankruptcy
        else:
            status = "FILLED"
        assert status != "FILLED" or any(
            _type_of(e) is TradeExecuted and e.taker_order_id == live.order_id for e in events
        )
        return lazy_order(
            market.spec, live.order_id, live.client_order_id, status, live.reduce_only,
            live.side, live.order_type, live.time_in_force, live.price_ticks, live.qty_lots,
            live.filled_lots, live.filled_quote_ticks,
        )  # fmt: skip

    def cancel_order(
        self,
        account: str,
        symbol: str,
        order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        market = self._markets.get(symbol) if _type_of(symbol) is str else None
        if market is None:
            market = self._market(symbol)
        name = account
        if _type_of(name) is not str or name not in self._known_accounts:
            name = self._check.account(name)
        if order_id is not None:
            if _type_of(order_id) is not int or not 0 < order_id < INT64_LIMIT:
                order_id = parse.order_id(order_id)
        elif client_order_id is None:
            raise mandatory("orderId")
        if client_order_id is not None:
            client_order_id = parse.client_order_id(client_order_id)
        acct = self.engine.accounts.get(name)
        live = None
        if acct is not None:
            if order_id is not None:
                live = acct.orders.get(order_id)
            elif client_order_id is not None:
                oid = acct.client_ids.get(client_order_id)
                live = None if oid is None else acct.orders.get(oid)
        view = None
        if live is None:  # a conditional order, perhaps
            conditionals = self.engine.conditionals
            oid = order_id
            if oid is None and client_order_id is not None:
                oid = conditionals.order_id_of(name, client_order_id)
            conditional = None if oid is None else conditionals.get(oid)
            if conditional is not None and conditional.account == name:
                view = conditional_view(market.spec, conditional, "CANCELED")
        command = CancelOrder(name, market.symbol, order_id, client_order_id)
        if self.journal is None:  # `_apply`, inlined for the common case
            try:
                events = self.engine.apply(command)
            except EngineError as exc:
                raise internal_error(exc) from None
            self._events.extend(events)
        else:
            events = self._apply(command)
        first = events[0]
        if _type_of(first) is RequestRejected:
            raise error_for(first.reason)
        if live is not None:  # its record keeps the fills it had when it left the book
            return lazy_order(
                market.spec, live.order_id, live.client_order_id, "CANCELED", live.reduce_only,
                live.side, live.order_type, live.time_in_force, live.price_ticks, live.qty_lots,
                live.filled_lots, live.filled_quote_ticks,
            )  # fmt: skip
        self._raise_rejection(events)
        assert view is not None
        return view
