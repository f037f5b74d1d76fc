"""The `Exchange` facade: the engine with a virtual clock, decimals in and out, Binance errors.

This is the edge. It parses every decimal exactly (values off the tick or step are refused,
never rounded), checks parameters the way Binance's API does, turns them into integer
commands, applies them to the engine and maps refusals to `ExchangeError(code, msg)`. A call
that raises has changed nothing: `state_hash()` is the same before and after.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Final

from perpex.core.engine import MARK_MODES, Engine
from perpex.core.engine import Order as EngineOrder
from perpex.core.funding import FundingConfig, FundingRateMissing, FundingSchedule
from perpex.core.liquidation import LiquidationConfig
from perpex.core.margin import bankruptcy_price_ticks, liquidation_price_ticks
from perpex.core.markets import Market, MarketSpec, compile_market
from perpex.core.messages import (
    AdjustIsolatedMargin,
    AdvanceClock,
    CancelOrder,
    Command,
    ConditionalKind,
    ConditionalOrderAccepted,
    Deposit,
    DepositInsurance,
    EndReason,
    Event,
    FundingPaid,
    InsuranceFundChanged,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    Reason,
    RequestRejected,
    SetFundingRate,
    SetLeverage,
    SetMarginMode,
    TimeInForce,
    TradeExecuted,
    UpdateIndex,
    UpdateSources,
    Withdraw,
    WorkingType,
)
from perpex.core.oracle import IndexConfig
from perpex.core.orders import ConditionalOrder, trigger_price_ticks
from perpex.core.units import (
    ATOM_DECIMALS,
    PPM,
    ParseError,
    ParseFailure,
    Rounding,
    atoms_to_decimal,
    div,
    to_decimal,
    to_units,
)
from perpex.defaults import default_markets
from perpex.errors import (
    ExchangeError,
    error_for,
    invalid_symbol,
    mandatory,
    not_required,
    too_precise,
)
from perpex.journal import JournaledEngine

CLIENT_ORDER_ID_RE: Final = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
ACCOUNT_RE: Final = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")
SHOWN_PRICE_DECIMALS: Final = 8  # positionRisk shows entry/liquidation prices with 8 decimals
NS_PER_SECOND: Final = 1_000_000_000
_SIDES: Final = {"BUY": 1, "SELL": -1}
_TIFS: Final = {t.name: t for t in TimeInForce}
_GTC: Final = TimeInForce.GTC
_MARGIN_MODES: Final = {"ISOLATED": True, "CROSSED": False}
_CONDITIONAL_TYPES: Final = {k.name: k for k in ConditionalKind}
_WORKING_TYPES: Final = {w.name: w for w in WorkingType}
# Trigger parameters a plain LIMIT or MARKET order may not carry: as on Binance, sending one
# is an error (-1106), never silently ignored. (take_profit / stop_loss attach protection.)
_CONDITIONAL_PARAMS: Final = (
    ("stop_price", "stopPrice"),
    ("callback_rate", "callbackRate"),
    ("activation_price", "activationPrice"),
)
CALLBACK_RATE_UNIT: Final = Decimal("0.0001")  # callbackRate is in per cent: 1 ppm = 0.0001 %
FRACTION_UNIT: Final = Decimal("0.000001")  # exit-ladder fractions, in ppm


@dataclass(frozen=True)
class Order:
    order_id: int
    client_order_id: str | None
    symbol: str
    side: str
    type: str
    time_in_force: str
    price: Decimal
    orig_qty: Decimal
    executed_qty: Decimal
    avg_price: Decimal
    status: str  # NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED
    reduce_only: bool
    # Conditional orders (type STOP_MARKET, STOP, TAKE_PROFIT_MARKET, TAKE_PROFIT,
    # TRAILING_STOP_MARKET): the trigger (a trailing stop's current one, or its activation
    # price while it waits; 0 if neither), the price it watches, and the trailing parameters.
    stop_price: Decimal = Decimal(0)
    working_type: str = "CONTRACT_PRICE"
    close_position: bool = False
    callback_rate: Decimal | None = None  # per cent
    activation_price: Decimal | None = None


@dataclass(frozen=True)
class Position:
    symbol: str
    size: Decimal  # signed: > 0 long, < 0 short
    entry_price: Decimal
    mark_price: Decimal
    notional: Decimal
    unrealized_pnl: Decimal
    liquidation_price: Decimal | None
    bankruptcy_price: Decimal | None
    margin_mode: str
    leverage: int
    isolated_margin: Decimal
    initial_margin: Decimal
    maintenance_margin: Decimal
    adl_quantile: int  # 1-5 lights of the ADL queue (Binance); 0 without a position


@dataclass(frozen=True)
class Account:
    wallet_balance: Decimal
    cross_wallet_balance: Decimal
    unrealized_pnl: Decimal
    margin_balance: Decimal
    maintenance_margin: Decimal
    initial_margin: Decimal
    open_order_margin: Decimal
    available_balance: Decimal
    max_withdraw_amount: Decimal


@dataclass(frozen=True)
class InsuranceFundChange:
    delta: Decimal  # > 0 into the fund, < 0 paid out
    balance: Decimal  # after the change, of the fund that changed (the symbol's, or the common)
    reason: str  # DEPOSIT, CLEARANCE_FEE, LIQUIDATION_SURPLUS, LIQUIDATION_DEFICIT
    account: str  # the liquidated account ("" for a deposit)
    symbol: str


@dataclass(frozen=True)
class FundingRate:
    """Binance's GET /fapi/v1/premiumIndex for one symbol."""

    symbol: str
    mark_price: Decimal
    index_price: Decimal
    last_funding_rate: Decimal  # charged at the last settlement
    predicted_funding_rate: Decimal  # what the next settlement charges if nothing changes
    next_funding_time_ns: int
    interest_rate: Decimal


@dataclass(frozen=True)
class FundingPayment:
    """One funding settlement of one position, as Binance's income history shows it."""

    time_ns: int
    symbol: str
    income: Decimal  # < 0 paid, > 0 received
    funding_rate: Decimal
    position_size: Decimal


def _fraction_to_decimal(value: Fraction, places: int) -> Decimal:
    """Round half-even to `places` decimals (display only; triggers compare exactly)."""
    scaled = round(value * 10**places)
    return Decimal(scaled).scaleb(-places)


def _side_name(side: int) -> str:
    return "BUY" if side > 0 else "SELL"


class Exchange:
    """An in-process exchange. See DESIGN.md §7 for the full surface."""

    def __init__(
        self,
        markets: Sequence[Market] | None = None,
        mark_price: str = "binance",
        start_time: datetime | str | int | None = None,
        journal: str | os.PathLike[str] | None = None,
        snapshot_every: int = 10_000,
        insurance_fund: object = None,
        liquidation: LiquidationConfig | None = None,
        index_sources: Mapping[str, int] | None = None,
        funding: FundingConfig | Mapping[str, FundingConfig] | None = None,
        funding_history: Mapping[str, FundingSchedule | str | os.PathLike[str]] | None = None,
    ) -> None:
        # The insurance funds' seeds: an amount for the common fund, or {symbol or "": amount}
        # (a symbol with a fund of its own, `LiquidationConfig.fund_symbols`; "" the common one).
        if isinstance(insurance_fund, Mapping):
            seeds: dict[object, object] = dict(insurance_fund)
        else:
            seeds = {} if insurance_fund is None else {"": insurance_fund}
        fund_atoms: dict[str, int] = {}
        for fund, amount in seeds.items():
            try:
                zero = to_decimal(amount) == 0
            except ParseError:
                zero = False
            if not zero:
                fund_atoms[str(fund)] = self._amount_atoms(amount)
        if mark_price not in MARK_MODES:
            raise ValueError(
                f"mark_price={mark_price!r}: use 'binance' (the median of MECHANICS.md §1.6), "
                "'index' (mark = index, for tests) or 'last' (mark = last trade, a debug option)"
            )
        # Weights are relative (Binance weights by volume); the names are what
        # `update_sources` accepts. None: six venues, equal weights.
        index = None if index_sources is None else IndexConfig(dict(index_sources))
        specs = [compile_market(m) for m in (markets if markets is not None else default_markets())]
        self._specs: dict[str, MarketSpec] = {s.symbol: s for s in specs}
        for fund in seeds:
            if fund != "":
                self._spec(fund)  # -1121 for a symbol that is not listed
        # One config for every market, or one per symbol (Binance's fundingInfo is per symbol).
        funding_configs = (
            dict.fromkeys(self._specs, funding) if isinstance(funding, FundingConfig) else funding
        )
        # Replay: rates from a history (e.g. Binance's published BTCUSDT funding) are fed to the
        # engine as commands before each settlement, so the journal holds them like any input.
        self._funding_history: dict[str, FundingSchedule] = {}
        for symbol, history in (funding_history or {}).items():
            if symbol not in self._specs:
                raise ValueError(f"funding_history for {symbol}, which is not listed")
            if not isinstance(history, FundingSchedule):
                from perpex.history import load_funding_schedule

                history = load_funding_schedule(os.fspath(history))
            self._funding_history[symbol] = history
        self.engine = Engine(
            specs,
            mark_mode=mark_price,
            liquidation=liquidation,
            index=index,
            funding=funding_configs,
        )
        self._events: list[Event] = []
        self.journal: JournaledEngine | None = None
        if journal is not None:
            # Startup is recovery: open or create the file, restore, replay (the replayed
            # events rebuild the log), check the invariants. Raises JournalError if it cannot.
            self.journal = JournaledEngine(
                journal,
                specs,
                mark_price,
                snapshot_every=snapshot_every,
                liquidation=liquidation,  # part of the journal's config fingerprint
                index=index,
                funding=funding_configs,
                on_events=self._events.extend,
            )
            self.engine = self.journal.engine
        fresh = self.journal is None or self.journal.last_seq == 0
        if start_time is not None and fresh:
            self._apply(AdvanceClock(_to_ns(start_time)))
        if fresh:  # the funds' seeds, journaled like deposits: the common one first
            for fund in sorted(fund_atoms):
                self._apply(DepositInsurance(fund_atoms[fund], fund))

    # -- plumbing -------------------------------------------------------------------------
    def _apply(self, command: Command) -> list[Event]:
        if self.journal is None:
            events = self.engine.apply(command)
        else:
            # Journaled (durable) before it is applied. A resent (account, client_order_id)
            # gets its first answer back and changes nothing, not even the event log.
            outcome = self.journal.submit(command)
            if outcome.duplicate:
                return outcome.events
            events = outcome.events
        self._events.extend(events)
        return events

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group commit: the commands of a `with ex.batch():` block share one transaction (one
        fsync) and are durable when it exits; answers come back at once. No-op without a journal.
        """
        return self.journal.batch() if self.journal is not None else contextlib.nullcontext()

    def close(self) -> None:
        """Snapshot and close the journal, if there is one. Safe to call twice."""
        if self.journal is not None:
            self.journal.close()

    def __enter__(self) -> Exchange:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _spec(self, symbol: object) -> MarketSpec:
        spec = self._specs.get(symbol) if isinstance(symbol, str) else None
        if spec is None:
            raise invalid_symbol()
        return spec

    @staticmethod
    def _account(name: object) -> str:
        if not isinstance(name, str) or not ACCOUNT_RE.match(name):
            raise ExchangeError(
                -1100,
                "Illegal characters found in parameter 'account'; legal range is "
                f"'{ACCOUNT_RE.pattern}'.",
            )
        return name

    def _raise_rejection(self, events: list[Event], **fields: object) -> None:
        # A refusal is the command's only event: an OrderRejected further on belongs to an
        # order a stop placed when this command's price move fired it.
        e = events[0] if events else None
        if isinstance(e, OrderRejected | RequestRejected):
            raise error_for(e.reason, **fields) if fields else error_for(e.reason)

    @staticmethod
    def _amount_atoms(value: object, *, allow_negative: bool = False) -> int:
        try:
            atoms = to_units(
                value,
                Decimal(1).scaleb(-ATOM_DECIMALS),
                max_decimals=ATOM_DECIMALS,
                allow_negative=allow_negative,
            )
        except ParseError as exc:
            if exc.failure is ParseFailure.TOO_PRECISE:
                raise too_precise() from None
            raise ExchangeError(-1013, f"Invalid amount: {value!r}.") from None
        if atoms == 0 or (atoms < 0 and not allow_negative):
            raise ExchangeError(-1013, f"Invalid amount: {value!r}.")
        return atoms

    # -- money ----------------------------------------------------------------------------
    def deposit(self, account: str, amount: object) -> Decimal:
        """Credit the account's wallet; returns the new wallet balance."""
        events = self._apply(Deposit(self._account(account), self._amount_atoms(amount)))
        self._raise_rejection(events)
        return self.account(account).wallet_balance

    def withdraw(self, account: str, amount: object) -> Decimal:
        events = self._apply(Withdraw(self._account(account), self._amount_atoms(amount)))
        self._raise_rejection(events)
        return self.account(account).wallet_balance

    # -- settings -------------------------------------------------------------------------
    def set_leverage(self, account: str, symbol: str, leverage: int) -> int:
        spec = self._spec(symbol)
        name = self._account(account)
        if not isinstance(leverage, int) or isinstance(leverage, bool):
            raise error_for(Reason.INVALID_LEVERAGE, leverage=leverage)
        events = self._apply(SetLeverage(name, spec.symbol, leverage))
        self._raise_rejection(events, leverage=leverage)
        return leverage

    def set_margin_mode(self, account: str, symbol: str, mode: str) -> str:
        spec = self._spec(symbol)
        name = self._account(account)
        if mode not in _MARGIN_MODES:
            raise ExchangeError(-4044, "The margin type must be ISOLATED or CROSSED.")
        events = self._apply(SetMarginMode(name, spec.symbol, _MARGIN_MODES[mode]))
        self._raise_rejection(events)
        return mode

    def add_isolated_margin(self, account: str, symbol: str, amount: object) -> Decimal:
        """Move margin into (amount > 0) or out of (amount < 0) an isolated position."""
        spec = self._spec(symbol)
        name = self._account(account)
        delta = self._amount_atoms(amount, allow_negative=True)
        events = self._apply(AdjustIsolatedMargin(name, spec.symbol, delta))
        self._raise_rejection(events)
        return self.position(name, spec.symbol).isolated_margin

    # -- oracle and clock -----------------------------------------------------------------
    def set_index_price(self, symbol: str, price: object) -> None:
        spec = self._spec(symbol)
        ticks = self._price_ticks(spec, price)
        events = self._apply(UpdateIndex(spec.symbol, ticks))
        self._raise_rejection(events)

    def update_sources(self, symbol: str, quotes: Mapping[str, object]) -> Decimal:
        """Spot prices from some index sources (name -> price), stamped now; returns the index.

        The index is their weighted average, a source more than 5 % from the median dropped
        (the median of all when several deviate); a source not quoted within `stale_after`
        (60 s of the virtual clock) no longer counts (MECHANICS.md §1.6).
        """
        spec = self._spec(symbol)
        if not isinstance(quotes, Mapping) or not quotes:
            raise mandatory("sources")
        parsed = []
        for name, price in sorted(quotes.items()):
            if not isinstance(name, str):
                raise error_for(Reason.UNKNOWN_INDEX_SOURCE)
            parsed.append((name, self._price_ticks(spec, price)))
        events = self._apply(UpdateSources(spec.symbol, tuple(parsed)))
        self._raise_rejection(events)
        return self.index_price(spec.symbol)

    def index_price(self, symbol: str) -> Decimal:
        spec = self._spec(symbol)
        return spec.price_to_decimal(self.engine.markets[spec.symbol].index_ticks)

    def advance_time(self, seconds: object = 0) -> int:
        """Move the virtual clock forward; returns the new time in ns since the epoch."""
        try:
            ns = to_units(seconds, Decimal(1).scaleb(-9))
        except ParseError:
            raise ExchangeError(-1013, f"Invalid time step: {seconds!r}.") from None
        target_ns = self.engine.clock_ns + ns
        replayed = self._replayed_rates(target_ns)
        with self.batch():
            for command in replayed:
                self._raise_rejection(self._apply(command))
            events = self._apply(AdvanceClock(target_ns))
        self._raise_rejection(events)
        return self.engine.clock_ns

    def _replayed_rates(self, target_ns: int) -> list[SetFundingRate]:
        """The history's rate for every settlement the step to `target_ns` reaches (checked
        whole before anything is sent: a missing one refuses the step)."""
        commands = []
        for symbol, schedule in self._funding_history.items():
            funding = self.engine.markets[symbol].funding
            if funding is None:
                continue  # no price yet: no period has started, nothing settles
            try:
                due = funding.due_settlements(target_ns)
            except ValueError:
                raise error_for(Reason.TIME_STEP_TOO_LARGE) from None
            for funding_ns in due:
                try:
                    rate_e8 = schedule.rate_at(funding_ns)
                except FundingRateMissing as exc:
                    raise ExchangeError(-1130, f"{symbol}: {exc}") from None
                commands.append(SetFundingRate(symbol, funding_ns, rate_e8))
        return commands

    # -- funding ------------------------------------------------------------------------------
    def funding_rate(self, symbol: str) -> FundingRate:
        """Mark, index, the last and the predicted funding rate and the next funding time."""
        spec = self._spec(symbol)
        market = self.engine.markets[spec.symbol]
        rate = Decimal(1).scaleb(-8)  # rates are integers in 1e-8
        funding = market.funding
        config = market.funding_config
        next_ns = (
            funding.next_funding_ns
            if funding is not None
            else (self.engine.clock_ns // config.period_ns + 1) * config.period_ns
        )
        return FundingRate(
            symbol=spec.symbol,
            mark_price=spec.price_to_decimal(market.mark_ticks),
            index_price=spec.price_to_decimal(market.index_ticks),
            last_funding_rate=market.last_funding_rate_e8 * rate,
            predicted_funding_rate=self.engine.predicted_funding_rate_e8(market) * rate,
            next_funding_time_ns=next_ns,
            interest_rate=config.interest_e8 * rate,
        )

    def funding_history(self, account: str, symbol: str | None = None) -> list[FundingPayment]:
        """Every funding payment of the account (optionally one symbol), oldest first."""
        name = self._account(account)
        if symbol is not None:
            symbol = self._spec(symbol).symbol
        rate = Decimal(1).scaleb(-8)
        return [
            FundingPayment(
                e.time_ns,
                e.symbol,
                -atoms_to_decimal(e.payment_atoms),
                e.rate_e8 * rate,
                self._specs[e.symbol].qty_to_decimal(e.size_lots),
            )
            for e in self._events
            if isinstance(e, FundingPaid)
            and e.account == name
            and (symbol is None or e.symbol == symbol)
        ]

    @property
    def time_ns(self) -> int:
        return self.engine.clock_ns

    # -- orders ---------------------------------------------------------------------------
    @staticmethod
    def _price_ticks(spec: MarketSpec, value: object) -> int:
        try:
            return to_units(value, spec.tick_size, max_decimals=spec.price_precision, positive=True)
        except ParseError as exc:
            failure = exc.failure
        if failure is ParseFailure.TOO_PRECISE:
            raise too_precise()
        if failure is ParseFailure.OFF_GRID:
            raise ExchangeError(-4014, "Price not increased by tick size.")
        if failure in (ParseFailure.NOT_POSITIVE, ParseFailure.NEGATIVE):
            raise ExchangeError(-4013, "Price less than min price.")
        if failure is ParseFailure.TOO_LARGE:
            raise ExchangeError(-4013, "Price greater than max price.")
        raise ExchangeError(-1013, "Invalid price.")

    @staticmethod
    def _qty_lots(spec: MarketSpec, value: object) -> int:
        try:
            return to_units(
                value, spec.step_size, max_decimals=spec.quantity_precision, positive=True
            )
        except ParseError as exc:
            failure = exc.failure
        if failure is ParseFailure.TOO_PRECISE:
            raise too_precise()
        if failure is ParseFailure.OFF_GRID:
            raise ExchangeError(-4023, "Quantity not increased by step size.")
        if failure in (ParseFailure.NOT_POSITIVE, ParseFailure.NEGATIVE):
            raise ExchangeError(-4003, "Quantity less than or equal to zero.")
        if failure is ParseFailure.TOO_LARGE:
            raise ExchangeError(-4005, "Quantity greater than max quantity.")
        raise ExchangeError(-1013, "Invalid quantity.")

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
    ) -> Order:
        """A LIMIT or MARKET order (optionally with a stop-loss and take-profit attached: a
        reduce-only STOP_MARKET / TAKE_PROFIT_MARKET pair, one cancels the other, watching
        `working_type`), or a conditional order: STOP_MARKET, STOP, TAKE_PROFIT_MARKET,
        TAKE_PROFIT (trigger in `stop_price`, limit in `price` for STOP/TAKE_PROFIT) or
        TRAILING_STOP_MARKET (`callback_rate` in per cent, 0.1 to 10, optional
        `activation_price`), which rests outside the book and comes back with status NEW."""
        spec = self._spec(symbol)
        name = self._account(account)
        if side not in _SIDES:
            raise ExchangeError(-1117, "Invalid side.")
        kind: ConditionalKind | None = None
        if type == "LIMIT":
            order_type = OrderType.LIMIT
        elif type == "MARKET":
            order_type = OrderType.MARKET
        elif isinstance(type, str) and type in _CONDITIONAL_TYPES:
            kind = _CONDITIONAL_TYPES[type]
        else:
            raise ExchangeError(-1116, "Invalid orderType.")
        tif = _TIFS.get(time_in_force) if isinstance(time_in_force, str) else None
        if tif is None:
            raise ExchangeError(-1115, "Invalid timeInForce.")
        if not isinstance(reduce_only, bool):
            raise mandatory("reduceOnly")
        if not isinstance(close_position, bool):
            raise mandatory("closePosition")
        if not isinstance(working_type, str) or working_type not in _WORKING_TYPES:
            raise ExchangeError(-1100, "Illegal characters found in parameter 'workingType'.")
        if client_order_id is not None and (
            not isinstance(client_order_id, str) or not CLIENT_ORDER_ID_RE.match(client_order_id)
        ):
            raise ExchangeError(
                -1100,
                "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                f"'{CLIENT_ORDER_ID_RE.pattern}'.",
            )
        if kind is not None:
            if take_profit is not None:
                raise not_required("takeProfit")
            if stop_loss is not None:
                raise not_required("stopLoss")
            # closePosition takes no quantity (one sent is the engine's -4137 to refuse)
            cond_qty = (
                0 if quantity is None and close_position else self._mandatory_qty(spec, quantity)
            )
            return self._place_conditional(
                spec,
                PlaceConditionalOrder(
                    name,
                    spec.symbol,
                    _SIDES[side],
                    kind,
                    _WORKING_TYPES[working_type],
                    cond_qty,
                    0 if stop_price is None else self._price_ticks(spec, stop_price),
                    0 if price is None else self._price_ticks(spec, price),
                    tif if kind in (ConditionalKind.STOP, ConditionalKind.TAKE_PROFIT) else _GTC,
                    reduce_only,
                    close_position,
                    client_order_id,
                    0 if callback_rate is None else self._callback_rate_ppm(callback_rate),
                    None if activation_price is None else self._price_ticks(spec, activation_price),
                ),
            )
        given = {
            "stop_price": stop_price,
            "callback_rate": callback_rate,
            "activation_price": activation_price,
        }
        for param, wire_name in _CONDITIONAL_PARAMS:
            if given[param] is not None:
                raise not_required(wire_name)
        if close_position:
            raise not_required("closePosition")
        stop_loss_ticks = 0 if stop_loss is None else self._price_ticks(spec, stop_loss)
        take_profit_ticks = 0 if take_profit is None else self._price_ticks(spec, take_profit)
        if quantity is None:
            raise mandatory("quantity")
        qty_lots = self._qty_lots(spec, quantity)
        if order_type == OrderType.LIMIT:
            if price is None:
                raise mandatory("price")
            price_ticks = self._price_ticks(spec, price)
        else:
            if price is not None:
                raise not_required("price")
            price_ticks = 0
            tif = TimeInForce.IOC  # a market order never rests
        command = PlaceOrder(
            name,
            spec.symbol,
            _SIDES[side],
            order_type,
            tif,
            qty_lots,
            price_ticks,
            reduce_only,
            client_order_id,
            stop_loss_ticks,
            take_profit_ticks,
            _WORKING_TYPES[working_type],
        )
        events = self._apply(command)
        # A refusal is the command's only event (later ones, of stops its trades fired, are
        # other orders' business).
        if events and isinstance(events[0], OrderRejected):
            raise self._order_error(spec, events[0].reason, _SIDES[side])
        return self._order_from_events(spec, events)

    @staticmethod
    def _mandatory_qty(spec: MarketSpec, quantity: object) -> int:
        if quantity is None:
            raise mandatory("quantity")
        return Exchange._qty_lots(spec, quantity)

    @staticmethod
    def _callback_rate_ppm(value: object) -> int:
        """callbackRate in per cent ("1.5" = 1.5 %) to ppm, exactly; the range is the engine's."""
        try:
            return to_units(value, CALLBACK_RATE_UNIT, max_decimals=4, positive=True)
        except ParseError:
            raise ExchangeError(-2007, "Invalid callBack rate.") from None

    def _place_conditional(self, spec: MarketSpec, command: PlaceConditionalOrder) -> Order:
        events = self._apply(command)
        if events and isinstance(events[0], OrderRejected):
            raise self._order_error(spec, events[0].reason, command.side)
        accepted = events[0]
        assert isinstance(accepted, ConditionalOrderAccepted)
        order = self.engine.conditionals.get(accepted.order_id)
        assert order is not None, "a conditional order cannot fire at placement"
        return self._conditional_view(order, "NEW")

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
        spec = self._spec(symbol)
        name = self._account(account)
        if not isinstance(working_type, str) or working_type not in _WORKING_TYPES:
            raise ExchangeError(-1100, "Illegal characters found in parameter 'workingType'.")
        bad_targets = ExchangeError(-1130, "Data sent for parameter 'targets' is not valid.")
        if isinstance(targets, str | bytes) or not isinstance(targets, Sequence) or not targets:
            raise bad_targets
        parsed: list[tuple[int, int]] = []
        for target in targets:
            if not isinstance(target, tuple | list) or len(target) != 2:
                raise bad_targets
            target_price, fraction = target
            try:
                fraction_ppm = to_units(fraction, FRACTION_UNIT, max_decimals=6, positive=True)
            except ParseError:
                raise bad_targets from None
            parsed.append((self._price_ticks(spec, target_price), fraction_ppm))
        if stop_loss is None:
            raise mandatory("stopLoss")
        counts = []
        for param, count in (
            ("moveStopToEntryAfter", move_stop_to_entry_after),
            ("trailAfter", trail_after),
        ):
            if count is None:
                count = 0
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ExchangeError(-1130, f"Data sent for parameter '{param}' is not valid.")
            counts.append(count)
        command = PlaceExitLadder(
            name,
            spec.symbol,
            tuple(parsed),
            self._price_ticks(spec, stop_loss),
            counts[0],
            counts[1],
            0 if callback_rate is None else self._callback_rate_ppm(callback_rate),
            _WORKING_TYPES[working_type],
        )
        events = self._apply(command)
        if events and isinstance(events[0], OrderRejected):
            raise self._order_error(spec, events[0].reason, 0)
        views = []
        for e in events:
            if isinstance(e, ConditionalOrderAccepted):
                order = self.engine.conditionals.get(e.order_id)
                assert order is not None, "a ladder's orders cannot fire at placement"
                views.append(self._conditional_view(order, "NEW"))
        return views

    def _conditional_view(self, o: ConditionalOrder, status: str) -> Order:
        spec = self._specs[o.symbol]
        trigger = trigger_price_ticks(o)
        if trigger is None:  # a trailing stop waiting for its activation price
            trigger = o.activation_price_ticks or 0
        return Order(
            order_id=o.order_id,
            client_order_id=o.client_order_id,
            symbol=o.symbol,
            side=_side_name(o.side),
            type=o.kind.name,
            time_in_force=o.time_in_force.name,
            price=spec.price_to_decimal(o.limit_price_ticks),
            orig_qty=spec.qty_to_decimal(o.qty_lots),
            executed_qty=Decimal(0),
            avg_price=Decimal(0),
            status=status,
            reduce_only=o.reduce_only,
            stop_price=spec.price_to_decimal(trigger),
            working_type=o.working_type.name,
            close_position=o.close_position,
            callback_rate=(
                None
                if not o.callback_rate_ppm
                else Decimal(o.callback_rate_ppm) * CALLBACK_RATE_UNIT
            ),
            activation_price=(
                None
                if o.activation_price_ticks is None
                else spec.price_to_decimal(o.activation_price_ticks)
            ),
        )

    def _order_error(self, spec: MarketSpec, reason: Reason, side: int) -> ExchangeError:
        if reason is Reason.MIN_NOTIONAL:
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

    def _order_from_events(self, spec: MarketSpec, events: list[Event]) -> Order:
        accepted = next(e for e in events if isinstance(e, OrderAccepted))
        oid = accepted.order_id
        filled = quote = 0
        ended: EndReason | None = None
        for e in events:
            if isinstance(e, TradeExecuted) and (
                e.taker_order_id == oid or e.maker_order_id == oid
            ):
                filled += e.qty_lots
                quote += e.qty_lots * e.price_ticks
            elif isinstance(e, OrderCanceled) and e.order_id == oid:
                ended = e.reason
        if ended is None:
            status = (
                "FILLED"
                if filled == accepted.qty_lots
                else ("PARTIALLY_FILLED" if filled else "NEW")
            )
        else:
            status = "CANCELED" if ended is EndReason.CANCELED else "EXPIRED"
        return Order(
            order_id=oid,
            client_order_id=accepted.client_order_id,
            symbol=accepted.symbol,
            side=_side_name(accepted.side),
            type=accepted.order_type.name,
            time_in_force=accepted.time_in_force.name,
            price=spec.price_to_decimal(accepted.price_ticks),
            orig_qty=spec.qty_to_decimal(accepted.qty_lots),
            executed_qty=spec.qty_to_decimal(filled),
            avg_price=self._avg_price(spec, quote, filled),
            status=status,
            reduce_only=accepted.reduce_only,
        )

    @staticmethod
    def _avg_price(spec: MarketSpec, quote_ticks: int, lots: int) -> Decimal:
        if not lots:
            return Decimal(0)
        return _fraction_to_decimal(Fraction(quote_ticks, lots) * Fraction(spec.tick_size), 8)

    def cancel_order(
        self,
        account: str,
        symbol: str,
        order_id: int | None = None,
        client_order_id: str | None = None,
    ) -> Order:
        spec = self._spec(symbol)
        name = self._account(account)
        if order_id is None and client_order_id is None:
            raise mandatory("orderId")
        acct = self.engine.accounts.get(name)
        live = None
        if acct is not None:
            if order_id is not None:
                live = acct.orders.get(order_id)
            elif client_order_id is not None:
                oid = acct.client_ids.get(client_order_id)
                live = None if oid is None else acct.orders.get(oid)
        view = self._order_view(live) if live is not None else None
        if view is None:  # a conditional order, perhaps
            conditionals = self.engine.conditionals
            oid = order_id
            if oid is None and client_order_id is not None:
                oid = conditionals.order_id_of(name, client_order_id)
            conditional = None if oid is None else conditionals.get(oid)
            if conditional is not None and conditional.account == name:
                view = self._conditional_view(conditional, "NEW")
        events = self._apply(CancelOrder(name, spec.symbol, order_id, client_order_id))
        self._raise_rejection(events)
        assert view is not None
        return Order(**{**view.__dict__, "status": "CANCELED"})

    def _order_view(self, o: EngineOrder) -> Order:
        spec = self._specs[o.symbol]
        status = "PARTIALLY_FILLED" if o.filled_lots else "NEW"
        return Order(
            order_id=o.order_id,
            client_order_id=o.client_order_id,
            symbol=o.symbol,
            side=_side_name(o.side),
            type=o.order_type.name,
            time_in_force=o.time_in_force.name,
            price=spec.price_to_decimal(o.price_ticks),
            orig_qty=spec.qty_to_decimal(o.qty_lots),
            executed_qty=spec.qty_to_decimal(o.filled_lots),
            avg_price=self._avg_price(spec, o.filled_quote_ticks, o.filled_lots),
            status=status,
            reduce_only=o.reduce_only,
        )

    def open_orders(self, account: str, symbol: str | None = None) -> list[Order]:
        """Open orders and open conditional orders (as Binance lists them, typed STOP_MARKET
        etc.), by ascending order id."""
        acct = self.engine.accounts.get(account)
        if acct is None:
            return []
        views = [
            self._order_view(o)
            for oid, o in sorted(acct.orders.items())
            if symbol is None or o.symbol == symbol
        ]
        views += [
            self._conditional_view(o, "NEW")
            for o in self.engine.conditionals.orders_of(account)
            if symbol is None or o.symbol == symbol
        ]
        return sorted(views, key=lambda v: v.order_id)

    def order_book(self, symbol: str, limit: int = 20) -> dict[str, list[tuple[Decimal, Decimal]]]:
        spec = self._spec(symbol)
        bids, asks = self.engine.market(spec.symbol).book.depth(limit)
        return {
            "bids": [(spec.price_to_decimal(p), spec.qty_to_decimal(q)) for p, q in bids],
            "asks": [(spec.price_to_decimal(p), spec.qty_to_decimal(q)) for p, q in asks],
        }

    # -- views ----------------------------------------------------------------------------
    def mark_price(self, symbol: str) -> Decimal:
        spec = self._spec(symbol)
        return spec.price_to_decimal(self.engine.market(spec.symbol).mark_ticks)

    def position(self, account: str, symbol: str) -> Position:
        spec = self._spec(symbol)
        engine = self.engine
        mark = engine.market(spec.symbol).mark_ticks
        leverage, isolated = engine.settings_of(account, spec.symbol)
        pos = engine.position_of(account, spec.symbol)
        size = pos.size_lots if pos is not None else 0
        cost = pos.cost_atoms if pos is not None else 0
        margin_atoms = pos.margin.balance if pos is not None else 0
        k = spec.atoms_per_tick_lot
        tick = Fraction(spec.tick_size)
        notional = abs(size) * mark * k
        liq = bank = None
        entry = Decimal(0)
        if size:
            entry = _fraction_to_decimal(Fraction(cost, size * k) * tick, SHOWN_PRICE_DECIMALS)
            if isolated:
                wallet, other_mm, other_upnl = margin_atoms, 0, 0
            else:
                wallet, other_mm, other_upnl = self._cross_others(account, spec.symbol)
            liq_ticks = liquidation_price_ticks(
                spec, size, cost, wallet, other_mm, other_upnl, mark or None
            )
            bank_ticks = bankruptcy_price_ticks(spec, size, cost, wallet, other_upnl)
            if liq_ticks is not None:
                liq = _fraction_to_decimal(liq_ticks * tick, SHOWN_PRICE_DECIMALS)
            if bank_ticks is not None:
                bank = _fraction_to_decimal(bank_ticks * tick, SHOWN_PRICE_DECIMALS)
        return Position(
            symbol=spec.symbol,
            size=spec.qty_to_decimal(size),
            entry_price=entry,
            mark_price=spec.price_to_decimal(mark),
            notional=atoms_to_decimal(notional),
            unrealized_pnl=atoms_to_decimal(size * mark * k - cost),
            liquidation_price=liq,
            bankruptcy_price=bank,
            margin_mode="ISOLATED" if isolated else "CROSSED",
            leverage=leverage,
            isolated_margin=atoms_to_decimal(margin_atoms),
            initial_margin=atoms_to_decimal(div(notional, leverage, Rounding.CEIL)),
            maintenance_margin=atoms_to_decimal(
                spec.maintenance_margin_atoms(notional) if size else 0
            ),
            # 1-5 ADL lights (Binance-like: only a profitable position lights up); 0 when flat
            adl_quantile=engine.liquidator.adl_quantile(account, spec.symbol) if size else 0,
        )

    def _cross_others(self, account: str, symbol: str) -> tuple[int, int, int]:
        """Binance's WB, TMM1, UPNL1: cross wallet, MM and uPnL of the other cross positions."""
        acct = self.engine.accounts[account]
        other_mm = other_upnl = 0
        for sym, p in acct.positions.items():
            if sym == symbol or p.isolated or not p.size_lots:
                continue
            spec = self._specs[sym]
            mark = self.engine.market(sym).mark_ticks
            notional = abs(p.size_lots) * mark * spec.atoms_per_tick_lot
            other_mm += spec.maintenance_margin_atoms(notional)
            other_upnl += p.size_lots * mark * spec.atoms_per_tick_lot - p.cost_atoms
        return acct.wallet.balance, other_mm, other_upnl

    def account(self, account: str) -> Account:
        f = self.engine.account_figures(account)
        d = atoms_to_decimal
        return Account(
            wallet_balance=d(f.wallet_atoms),
            cross_wallet_balance=d(f.cross_wallet_atoms),
            unrealized_pnl=d(f.unrealized_pnl_atoms),
            margin_balance=d(f.margin_balance_atoms),
            maintenance_margin=d(f.maintenance_margin_atoms),
            initial_margin=d(f.position_initial_margin_atoms),
            open_order_margin=d(f.open_order_margin_atoms),
            available_balance=d(f.available_atoms),
            max_withdraw_amount=d(f.max_withdraw_atoms),
        )

    def insurance_fund(self, symbol: str | None = None) -> Decimal:
        """All insurance funds together (None), or the fund that pays for `symbol`: its own
        (`LiquidationConfig.fund_symbols`) or the common one, which "" also names."""
        if symbol is not None and symbol != "":
            self._spec(symbol)  # -1121 for a symbol that is not listed
        return atoms_to_decimal(self.engine.liquidator.fund_atoms(symbol))

    def insurance_fund_history(self) -> list[InsuranceFundChange]:
        """Every change of the fund, oldest first, read from the event log (after a journal
        recovery the log holds what was replayed since the last snapshot)."""
        d = atoms_to_decimal
        return [
            InsuranceFundChange(
                d(e.delta_atoms), d(e.balance_atoms), e.reason.name, e.account, e.symbol
            )
            for e in self._events
            if isinstance(e, InsuranceFundChanged)
        ]

    def fees_collected(self) -> Decimal:
        return atoms_to_decimal(self.engine.ledger.fees.balance)

    def events(self) -> list[Event]:
        return list(self._events)

    def state_hash(self) -> str:
        return self.engine.state_hash()

    def check_invariants(self) -> None:
        self.engine.check_invariants()


def _to_ns(start_time: datetime | str | int) -> int:
    """Seconds since the epoch (int), an ISO-8601 string or an aware datetime, to ns."""
    if isinstance(start_time, int) and not isinstance(start_time, bool):
        return start_time * NS_PER_SECOND
    if isinstance(start_time, str):
        start_time = datetime.fromisoformat(start_time.replace("Z", "+00:00"))
    if isinstance(start_time, datetime):
        if start_time.tzinfo is None:
            start_time = start_time.replace(tzinfo=UTC)
        delta = start_time - datetime(1970, 1, 1, tzinfo=UTC)
        return (delta.days * 86_400 + delta.seconds) * NS_PER_SECOND + delta.microseconds * 1000
    raise ValueError(f"start_time {start_time!r}: give seconds, an ISO string or a datetime")


__all__ = [
    "Account",
    "Exchange",
    "ExchangeError",
    "FundingPayment",
    "FundingRate",
    "InsuranceFundChange",
    "Order",
    "Position",
    "to_decimal",
]
