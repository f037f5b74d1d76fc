"""The edge's checks of typed commands, in integers: what `Exchange.submit` refuses.

A typed command (perpex.core.messages) skips the decimal parsing of `perpex.parse`, but not its
rules: every field must be what parsing would have produced. Names match the same patterns,
symbols are listed, enums are enum members, flags are bools, prices and quantities are
positive and every integer fits the journal's 63 bits; a market order carries no price and is
IOC, as `Exchange.place_order` builds it; a token is listed and a token quantity within the
engine's supply bound. (Ticks, lots and token units are on the grid by construction.)
So a command refused here is one the facade could not have built, and is refused with the
code the facade gives for the same mistake; everything past these checks (price range and
band, margin, limits) is the engine's, and comes back as `OrderRejected` / `RequestRejected`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Final

from perpex import parse
from perpex.core.mass_quote import MAX_MASS_QUOTES
from perpex.core.messages import (
    AdjustIsolatedMargin,
    AdvanceClock,
    AmendOrder,
    CancelOrder,
    Command,
    ConditionalKind,
    CreateTokens,
    Deposit,
    DepositInsurance,
    MassQuote,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    Reason,
    RedeemTokens,
    SelfTradePrevention,
    SetFundingRate,
    SetLeverage,
    SetMarginMode,
    TimeInForce,
    UpdateIndex,
    UpdateSources,
    Withdraw,
    WorkingType,
)
from perpex.core.tokens import MAX_TOKEN_UNITS
from perpex.errors import ExchangeError, error_for, invalid_symbol, mandatory, not_required

INT64_LIMIT: Final = parse.INT64_LIMIT
MAX_KNOWN_NAMES: Final = 1_000_000  # accounts remembered as checked (then the cache restarts)
_IOC: Final = TimeInForce.IOC
_LIMIT_TYPE: Final = OrderType.LIMIT
_MARKET_TYPE: Final = OrderType.MARKET
_SIDE_VALUES: Final = frozenset({1, -1})
_GTC: Final = TimeInForce.GTC
_LIMIT_KINDS: Final = (ConditionalKind.STOP, ConditionalKind.TAKE_PROFIT)


def _int(value: object) -> bool:
    return type(value) is int


def _int64(value: object) -> bool:
    return type(value) is int and -INT64_LIMIT < value < INT64_LIMIT


def _positive(value: object) -> bool:
    return type(value) is int and 0 < value < INT64_LIMIT


def _price(value: object) -> None:
    """A price in ticks as `parse.price_ticks` gives it: 0 < ticks < 2^63."""
    if type(value) is not int:
        raise parse.price_error(parse.Failure.NOT_A_NUMBER)
    if value <= 0:
        raise parse.price_error(parse.Failure.NOT_POSITIVE)
    if value >= INT64_LIMIT:
        raise parse.price_error(parse.Failure.TOO_LARGE)


def _optional_price(value: object) -> None:
    """0 (none) or a price."""
    if type(value) is not int or value != 0:
        _price(value)


def _qty(value: object) -> None:
    if type(value) is not int:
        raise parse.qty_error(parse.Failure.NOT_A_NUMBER)
    if value <= 0:
        raise parse.qty_error(parse.Failure.NOT_POSITIVE)
    if value >= INT64_LIMIT:
        raise parse.qty_error(parse.Failure.TOO_LARGE)


def amended_order_id(value: object) -> int:
    """The `orderId` of an order to modify: an int (-1102), within 63 bits, else no order has
    it: -2013, Binance's answer to a modify of an order that does not exist."""
    if not parse.is_int(value):
        raise mandatory("orderId")
    assert isinstance(value, int)
    if not 0 < value < INT64_LIMIT:
        raise error_for(Reason.ORDER_DOES_NOT_EXIST)
    return int(value)


def orig_client_order_id(value: object) -> str:
    """The `origClientOrderId` of an order to modify: a client order id as Binance allows
    them (-1100, naming the parameter)."""
    if not isinstance(value, str) or parse.CLIENT_ORDER_ID_RE.fullmatch(value) is None:
        raise ExchangeError(
            -1100,
            "Illegal characters found in parameter 'origClientOrderId'; legal range is "
            f"'^{parse.CLIENT_ORDER_ID_RE.pattern}$'.",
        )
    return value if type(value) is str else str.__str__(value)


def no_order_named() -> ExchangeError:
    """Neither `orderId` nor `origClientOrderId` sent (Binance's -1102 for a pair)."""
    return ExchangeError(
        -1102, "Param 'orderId' or 'origClientOrderId' must be sent, but both were empty/null!"
    )


def _amount(value: object, *, allow_negative: bool = False) -> None:
    if type(value) is not int or not value or not -INT64_LIMIT < value < INT64_LIMIT:
        raise parse.invalid_amount()
    if value < 0 and not allow_negative:
        raise parse.invalid_amount()


class Checker:
    """Names and typed commands, checked as the facade checks what it builds."""

    def __init__(self, symbols: Mapping[str, object], tokens: Collection[str] = ()) -> None:
        self.symbols = symbols
        self.tokens = frozenset(tokens)  # the listed leveraged tokens' names
        self.known_accounts: set[str] = set()
        self._by_type: dict[type, Callable[[Command], None]] = {
            PlaceOrder: self._place_order,  # type: ignore[dict-item]
            CancelOrder: self._cancel_order,  # type: ignore[dict-item]
            Deposit: self._transfer,  # type: ignore[dict-item]
            Withdraw: self._transfer,  # type: ignore[dict-item]
            SetLeverage: self._set_leverage,  # type: ignore[dict-item]
            SetMarginMode: self._set_margin_mode,  # type: ignore[dict-item]
            AdjustIsolatedMargin: self._adjust_isolated_margin,  # type: ignore[dict-item]
            UpdateIndex: self._update_index,  # type: ignore[dict-item]
            UpdateSources: self._update_sources,  # type: ignore[dict-item]
            AdvanceClock: self._advance_clock,  # type: ignore[dict-item]
            SetFundingRate: self._set_funding_rate,  # type: ignore[dict-item]
            DepositInsurance: self._deposit_insurance,  # type: ignore[dict-item]
            PlaceConditionalOrder: self._place_conditional,  # type: ignore[dict-item]
            PlaceExitLadder: self._place_exit_ladder,  # type: ignore[dict-item]
            MassQuote: self._mass_quote,  # type: ignore[dict-item]
            CreateTokens: self._create_tokens,  # type: ignore[dict-item]
            RedeemTokens: self._redeem_tokens,  # type: ignore[dict-item]
            AmendOrder: self._amend_order,  # type: ignore[dict-item]
        }

    # -- names -----------------------------------------------------------------------------
    def account(self, name: object) -> str:
        """`parse.account`, remembering the names that passed (most calls repeat one)."""
        if type(name) is str and name in self.known_accounts:
            return name
        checked = parse.account(name)
        known = self.known_accounts
        if len(known) >= MAX_KNOWN_NAMES:
            known.clear()
        known.add(checked)
        return checked

    def symbol(self, symbol: object) -> str:
        if type(symbol) is not str or symbol not in self.symbols:
            raise invalid_symbol()
        return symbol

    def token(self, token: object) -> str:
        """A listed leveraged token's name (-1121 "Invalid token." otherwise)."""
        if type(token) is not str or token not in self.tokens:
            raise error_for(Reason.UNKNOWN_TOKEN)
        return token

    def _names(self, account: object, symbol: object) -> None:
        self.symbol(symbol)
        if type(account) is not str or account not in self.known_accounts:
            self.account(account)

    # -- commands --------------------------------------------------------------------------
    def command(self, command: object) -> None:
        """Raise the facade's ExchangeError if `command` is not one it could have built."""
        check = self._by_type.get(type(command))
        if check is None:
            raise ExchangeError(
                -1102,
                "Mandatory parameter 'command' was not sent, was empty/null, or malformed.",
            )
        check(command)  # type: ignore[arg-type]

    def _place_order(self, c: PlaceOrder) -> None:
        # The common shape, in one expression (no calls); anything else is checked field by
        # field below, which says what is wrong.
        account, symbol, qty, price = c.account, c.symbol, c.qty_lots, c.price_ticks
        order_type = c.order_type
        if (
            type(account) is str
            and account in self.known_accounts
            and type(symbol) is str
            and symbol in self.symbols
            and type(qty) is int
            and 0 < qty < INT64_LIMIT
            and type(price) is int
            and (
                0 < price < INT64_LIMIT
                if order_type is _LIMIT_TYPE
                else (price == 0 and order_type is _MARKET_TYPE and c.time_in_force is _IOC)
            )
            and type(c.side) is int
            and c.side in _SIDE_VALUES
            and type(c.time_in_force) is TimeInForce
            and type(c.reduce_only) is bool
            and c.client_order_id is None
            and type(c.stop_loss_ticks) is int
            and c.stop_loss_ticks == 0
            and type(c.take_profit_ticks) is int
            and c.take_profit_ticks == 0
            and type(c.protection_working_type) is WorkingType
            and type(c.self_trade_prevention) is SelfTradePrevention
        ):
            return
        self._place_order_fields(c)

    def _place_order_fields(self, c: PlaceOrder) -> None:
        self._names(c.account, c.symbol)
        side = c.side
        if type(side) is not int or (side != 1 and side != -1):
            raise parse.invalid_side()
        order_type = c.order_type
        if type(order_type) is not OrderType:
            raise parse.invalid_order_type()
        tif = c.time_in_force
        if type(tif) is not TimeInForce:
            raise parse.invalid_time_in_force()
        if type(c.reduce_only) is not bool:
            raise mandatory("reduceOnly")
        if type(c.protection_working_type) is not WorkingType:
            raise parse.invalid_working_type()
        if type(c.self_trade_prevention) is not SelfTradePrevention:
            raise parse.invalid_self_trade_prevention()
        if c.client_order_id is not None:
            parse.client_order_id(c.client_order_id)
        _optional_price(c.stop_loss_ticks)
        _optional_price(c.take_profit_ticks)
        _qty(c.qty_lots)
        if order_type is OrderType.LIMIT:
            _price(c.price_ticks)
        else:  # as place_order builds a market order: no price, IOC
            if type(c.price_ticks) is not int or c.price_ticks != 0:
                raise not_required("price")
            if tif is not _IOC:
                raise not_required("timeInForce")

    def _cancel_order(self, c: CancelOrder) -> None:
        account, symbol, order_id = c.account, c.symbol, c.order_id
        if (
            type(account) is str
            and account in self.known_accounts
            and type(symbol) is str
            and symbol in self.symbols
            and type(order_id) is int
            and 0 < order_id < INT64_LIMIT
            and c.client_order_id is None
        ):
            return
        self._names(account, symbol)
        if c.order_id is None and c.client_order_id is None:
            raise mandatory("orderId")
        if c.order_id is not None:
            parse.order_id(c.order_id)
        if c.client_order_id is not None:
            parse.client_order_id(c.client_order_id)

    def _amend_order(self, c: AmendOrder) -> None:
        """As `Exchange.modify_order` builds it: an order named by id or client id (the id
        wins), a side, a positive quantity and price. Whether the order is open, its side and
        everything about the new figures are the engine's checks (one RequestRejected)."""
        self._names(c.account, c.symbol)
        if c.order_id is None and c.client_order_id is None:
            raise no_order_named()
        if c.order_id is not None:
            amended_order_id(c.order_id)
        if c.client_order_id is not None:
            orig_client_order_id(c.client_order_id)
        if type(c.side) is not int or (c.side != 1 and c.side != -1):
            raise parse.invalid_side()
        _qty(c.qty_lots)
        _price(c.price_ticks)

    def _transfer(self, c: Deposit | Withdraw) -> None:
        self.account(c.account)
        _amount(c.amount_atoms)

    def _set_leverage(self, c: SetLeverage) -> None:
        self._names(c.account, c.symbol)
        parse.leverage(c.leverage)

    def _set_margin_mode(self, c: SetMarginMode) -> None:
        self._names(c.account, c.symbol)
        if type(c.isolated) is not bool:
            raise parse.invalid_margin_type()

    def _adjust_isolated_margin(self, c: AdjustIsolatedMargin) -> None:
        self._names(c.account, c.symbol)
        _amount(c.delta_atoms, allow_negative=True)

    def _update_index(self, c: UpdateIndex) -> None:
        self.symbol(c.symbol)
        _price(c.index_ticks)

    def _update_sources(self, c: UpdateSources) -> None:
        self.symbol(c.symbol)
        quotes = c.quotes
        if type(quotes) is not tuple or not quotes:
            raise mandatory("sources")
        if len(quotes) > parse.MAX_SOURCES:
            raise parse.not_valid("sources")
        for quote in quotes:
            if type(quote) is not tuple or len(quote) != 2:
                raise parse.not_valid("sources")
            parse.source_name(quote[0])
            _price(quote[1])

    def _advance_clock(self, c: AdvanceClock) -> None:
        if not _int64(c.ts_ns):
            raise parse.step_too_large()

    def _set_funding_rate(self, c: SetFundingRate) -> None:
        self.symbol(c.symbol)
        if not _int64(c.funding_time_ns) or not _int64(c.rate_e8):
            raise parse.not_valid("fundingRate")

    def _deposit_insurance(self, c: DepositInsurance) -> None:
        if type(c.symbol) is not str or c.symbol != "":
            self.symbol(c.symbol)
        _amount(c.amount_atoms)

    def _place_conditional(self, c: PlaceConditionalOrder) -> None:
        self._names(c.account, c.symbol)
        if type(c.side) is not int or (c.side != 1 and c.side != -1):
            raise parse.invalid_side()
        kind = c.kind
        if type(kind) is not ConditionalKind:
            raise parse.invalid_order_type()
        if type(c.working_type) is not WorkingType:
            raise parse.invalid_working_type()
        if type(c.time_in_force) is not TimeInForce:
            raise parse.invalid_time_in_force()
        if kind not in _LIMIT_KINDS and c.time_in_force is not _GTC:
            raise not_required("timeInForce")
        if type(c.reduce_only) is not bool:
            raise mandatory("reduceOnly")
        if type(c.close_position) is not bool:
            raise mandatory("closePosition")
        if c.client_order_id is not None:
            parse.client_order_id(c.client_order_id)
        if not (c.close_position is True and type(c.qty_lots) is int and c.qty_lots == 0):
            _qty(c.qty_lots)
        _optional_price(c.stop_price_ticks)
        _optional_price(c.limit_price_ticks)
        rate = c.callback_rate_ppm
        if type(rate) is not int or not 0 <= rate < INT64_LIMIT:
            raise parse.invalid_callback_rate()
        if c.activation_price_ticks is not None:
            _price(c.activation_price_ticks)

    def _place_exit_ladder(self, c: PlaceExitLadder) -> None:
        self._names(c.account, c.symbol)
        if type(c.working_type) is not WorkingType:
            raise parse.invalid_working_type()
        targets = c.targets
        if type(targets) is not tuple or not 0 < len(targets) <= parse.MAX_LADDER_TARGETS:
            raise parse.invalid_targets()
        for target in targets:
            if type(target) is not tuple or len(target) != 2:
                raise parse.invalid_targets()
            if not _positive(target[1]):
                raise parse.invalid_targets()
            _price(target[0])
        if type(c.stop_price_ticks) is int and c.stop_price_ticks == 0:
            raise mandatory("stopLoss")
        _price(c.stop_price_ticks)
        for param, value in (
            ("moveStopToEntryAfter", c.move_stop_to_entry_after),
            ("trailAfter", c.trail_after),
        ):
            if value is None:
                raise parse.not_valid(param)
            parse.count(value, param)
        rate = c.callback_rate_ppm
        if type(rate) is not int or not 0 <= rate < INT64_LIMIT:
            raise parse.invalid_callback_rate()

    def _mass_quote(self, c: MassQuote) -> None:
        """As `Exchange.mass_quote` builds it: 1 to MAX_MASS_QUOTES (side, price, qty) triples.
        Whether the bids stay below the asks is the engine's check (one RequestRejected)."""
        self._names(c.account, c.symbol)
        quotes = c.quotes
        if type(quotes) is not tuple or len(quotes) > MAX_MASS_QUOTES:
            raise parse.not_valid("quotes")
        for quote in quotes:
            if type(quote) is not tuple or len(quote) != 3:
                raise parse.not_valid("quotes")
            side, price, qty = quote
            if type(side) is not int or (side != 1 and side != -1):
                raise parse.invalid_side()
            _price(price)
            _qty(qty)

    def _create_tokens(self, c: CreateTokens) -> None:
        self.token(c.token)
        self.account(c.account)
        _amount(c.quote_atoms)

    def _redeem_tokens(self, c: RedeemTokens) -> None:
        """As `Exchange.redeem_tokens` builds it: 0 < units <= MAX_TOKEN_UNITS."""
        self.token(c.token)
        self.account(c.account)
        units = c.units
        if type(units) is not int:
            raise parse.qty_error(parse.Failure.NOT_A_NUMBER)
        if units <= 0:
            raise parse.qty_error(parse.Failure.NOT_POSITIVE)
        if units > MAX_TOKEN_UNITS:
            raise parse.qty_error(parse.Failure.TOO_LARGE)


__all__ = ["Checker", "amended_order_id", "no_order_named", "orig_client_order_id"]
