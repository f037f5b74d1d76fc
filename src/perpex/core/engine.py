"""The engine: owns the exchange state, applies one command at a time, emits events.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. `Engine.apply(command)`
is the only way state changes. Every handler validates and plans first and mutates only once
nothing can fail any more (a refusal is an `OrderRejected`/`RequestRejected` event and changes
nothing, not even an id counter). The engine reads no clock, no environment and no random
source: the same commands give the same events and the same `state_hash()` in every process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import msgspec
import numpy as np

from perpex.core.book import BUY, SELL, OrderBook, RestingOrder
from perpex.core.funding import (
    MAX_SETTLEMENTS_PER_ADVANCE,
    FundingConfig,
    FundingSettlement,
    FundingState,
    funding_payments,
)
from perpex.core.ledger import Bucket, Ledger
from perpex.core.markets import BracketSpec, MarketSpec
from perpex.core.messages import (
    AdjustIsolatedMargin,
    AdvanceClock,
    CancelOrder,
    ClockAdvanced,
    Command,
    Deposit,
    Deposited,
    DepositInsurance,
    EndReason,
    Event,
    FundingPaid,
    FundingSettled,
    IndexUpdated,
    IsolatedMarginChanged,
    LeverageChanged,
    MarginModeChanged,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    PositionChanged,
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
    Withdrawn,
)
from perpex.core.oracle import (
    DEFAULT_INDEX_CONFIG,
    IndexConfig,
    MarkConfig,
    MarkMode,
    MarkState,
    compute_index_detail,
)
from perpex.core.units import PPM, Rounding, div

if TYPE_CHECKING:
    from perpex.core.conditional import Conditionals
    from perpex.core.liquidation import LiquidationConfig, Liquidator

# Limits (every loop and collection has one).
MAX_ACCOUNTS: Final = 10_000_000
MAX_ACCOUNT_NAME: Final = 64
MAX_CLIENT_ORDER_ID: Final = 36
MAX_AMOUNT_ATOMS: Final = 2**62  # no single deposit, withdrawal or transfer is larger
MARK_MODES: Final = tuple(m.value for m in MarkMode)  # "binance", "index", "last"
MAX_TICK_ROUNDS: Final = 100  # pass / stops rounds of one mark publication (each fires stops)
MAX_FUNDING_OVERRIDES: Final = 10_000  # replayed rates waiting for their settlement, per market
MAX_RATE_E8: Final = 100_000_000  # |funding rate| <= 100 %

_CEIL = Rounding.CEIL
_FLOOR = Rounding.FLOOR
# Enum members as module constants: the hot path compares against them on every order.
_MARKET: Final = OrderType.MARKET
_GTC: Final = TimeInForce.GTC
_FOK: Final = TimeInForce.FOK
_GTX: Final = TimeInForce.GTX
_CANCELED: Final = EndReason.CANCELED
_IOC_REMAINDER: Final = EndReason.IOC_REMAINDER
_EVERY_LOT: Final = 2**62  # more lots than a side of open orders can hold


class EngineError(Exception):
    """A command the engine cannot even represent (a bug at the edge, not a user mistake)."""


class Order(RestingOrder):
    """An open order: what the book sees plus what the account needs."""

    __slots__ = (
        "client_order_id",
        "filled_lots",
        "filled_quote_ticks",
        "order_type",
        "qty_lots",
        "reduce_only",
        "reserved_atoms",
        "symbol",
        "time_in_force",
    )

    def __init__(
        self,
        order_id: int,
        account: str,
        symbol: str,
        side: int,
        order_type: OrderType,
        time_in_force: TimeInForce,
        price_ticks: int,
        qty_lots: int,
        reduce_only: bool,
        client_order_id: str | None,
        reserved_atoms: int,
    ) -> None:
        # RestingOrder.__init__ inlined (it runs for every order: saves a call)
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price_ticks = price_ticks
        self.remaining_lots = qty_lots
        self.queue_stamp = 0
        self.symbol = symbol
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.qty_lots = qty_lots
        self.reduce_only = reduce_only
        self.client_order_id = client_order_id
        self.reserved_atoms = reserved_atoms
        self.filled_lots = 0
        self.filled_quote_ticks = 0  # sum of price x lots of the fills, for the average price


class MarginOrders:
    """One side of a position's open orders that may hold margin (all but reduce-only ones),
    oldest first (ascending ids), and what lets `_reprice_side` skip the orders whose margin
    cannot change.

    Invariant (checked by `Engine.check_invariants`): once priced (`mark_ticks` set), every
    order past the first `closing_lots` lots of the side (oldest first, lots as they are now)
    that is not in `unpriced` holds exactly the margin of all of it opening at `mark_ticks`
    and `leverage`, as `_reprice_side` sets it. `unpriced`: orders partly filled since, or
    placed at another mark or with a closing share.
    """

    __slots__ = ("closing_lots", "leverage", "mark_ticks", "orders", "unpriced")

    def __init__(self) -> None:
        self.orders: dict[int, Order] = {}
        self.unpriced: dict[int, Order] = {}
        self.mark_ticks = 0  # 0: never priced, the next re-price visits every order
        self.leverage = 0
        self.closing_lots = 0  # the free lots of the last pricing: the head it let close


class Position:
    """One (account, symbol): settings, the netted position and its open orders."""

    __slots__ = (
        "cost_atoms",
        "isolated",
        "leverage",
        "margin",
        "margin_buys",
        "margin_sells",
        "open_buy_lots",
        "open_orders",
        "open_sell_lots",
        "reduce_only_count",
        "size_lots",
        "symbol",
    )

    def __init__(self, account: str, symbol: str, leverage: int) -> None:
        self.symbol = symbol
        self.leverage = leverage
        self.isolated = False
        self.size_lots = 0  # signed: > 0 long, < 0 short
        self.cost_atoms = 0  # signed cost basis: uPnL = size x mark - cost
        # isolated margin (0 in cross mode); the owner lets the ledger mark the account touched
        self.margin = Bucket(f"{account}/{symbol}", owner=account)
        self.open_orders: dict[int, Order] = {}
        # The open orders that may hold margin, by side: what `Engine._reserve_orders` re-prices
        self.margin_buys = MarginOrders()
        self.margin_sells = MarginOrders()
        self.open_buy_lots = 0
        self.open_sell_lots = 0
        self.reduce_only_count = 0

    def is_default(self, default_leverage: int) -> bool:
        return (
            not self.size_lots
            and not self.open_orders
            and not self.isolated
            and self.leverage == default_leverage
            and not self.margin.balance
            and not self.cost_atoms
        )


class Account:
    __slots__ = ("client_ids", "name", "orders", "positions", "reserved_atoms", "wallet")

    def __init__(self, name: str) -> None:
        self.name = name
        self.wallet = Bucket(name, owner=name)  # the cross wallet balance
        self.positions: dict[str, Position] = {}
        self.orders: dict[int, Order] = {}
        self.client_ids: dict[str, int] = {}
        self.reserved_atoms = 0  # initial margin held for open orders (sum over orders)


class MarketState:
    __slots__ = (
        "book",
        "funding",
        "funding_config",
        "funding_overrides",
        "index_ticks",
        "last_funding_rate_e8",
        "last_trade_ticks",
        "leverage_caps",
        "mark_state",
        "mark_ticks",
        "quotes",
        "spec",
    )

    def __init__(
        self, spec: MarketSpec, mark_config: MarkConfig, funding_config: FundingConfig
    ) -> None:
        self.spec = spec
        self.funding_config = funding_config
        self.funding: FundingState | None = None  # starts with the market's first index
        self.funding_overrides: dict[int, int] = {}  # funding time -> replayed rate (1e-8)
        self.last_funding_rate_e8 = 0
        self.book = OrderBook()
        self.index_ticks = 0  # 0 until the first oracle tick
        self.mark_ticks = 0
        self.last_trade_ticks = 0
        self.mark_state = MarkState(mark_config)  # the moving-average basis of the mark
        self.quotes: dict[str, tuple[int, int]] = {}  # index source -> (price, stamped at ns)
        self.leverage_caps: dict[int, int] = {}  # cache of spec.max_notional_atoms_at

    def max_notional_atoms_at(self, leverage: int) -> int:
        cap = self.leverage_caps.get(leverage)
        if cap is None:
            cap = self.leverage_caps[leverage] = self.spec.max_notional_atoms_at(leverage)
        return cap


class AccountFigures(msgspec.Struct, frozen=True):
    """Binance's account figures, in atoms (see `Engine.account_figures`)."""

    wallet_atoms: int  # cross wallet + isolated margins
    cross_wallet_atoms: int
    unrealized_pnl_atoms: int  # all positions
    cross_unrealized_pnl_atoms: int
    margin_balance_atoms: int  # wallet + uPnL
    maintenance_margin_atoms: int  # all positions
    position_initial_margin_atoms: int  # all positions, at mark
    open_order_margin_atoms: int
    available_atoms: int  # cross wallet + cross uPnL - cross IM - order margin
    max_withdraw_atoms: int


class Engine:
    """Single-writer state machine over a fixed set of markets."""

    def __init__(
        self,
        markets: Sequence[MarketSpec],
        mark_mode: str = "binance",
        *,
        insurance_fund_atoms: int = 0,
        liquidation: LiquidationConfig | None = None,
        index: IndexConfig | None = None,
        funding: Mapping[str, FundingConfig] | None = None,
    ) -> None:
        # liquidation.py builds on this module's Order/Account types, hence the late import.
        from perpex.core.conditional import Conditionals
        from perpex.core.liquidation import LiquidationConfig, Liquidator

        if not 0 <= insurance_fund_atoms <= MAX_AMOUNT_ATOMS:
            raise EngineError(f"insurance_fund_atoms {insurance_fund_atoms} out of range")
        if mark_mode not in MARK_MODES:
            raise EngineError(f"mark_mode {mark_mode!r} is not one of {', '.join(MARK_MODES)}")
        self.mark_mode = mark_mode
        mark_config = MarkConfig(MarkMode(mark_mode))
        self.index_config = index or DEFAULT_INDEX_CONFIG
        self.markets: dict[str, MarketState] = {}
        funding = funding or {}
        for spec in markets:
            if spec.symbol in self.markets:
                raise EngineError(f"market {spec.symbol} listed twice")
            config = funding.get(spec.symbol) or FundingConfig()
            self.markets[spec.symbol] = MarketState(spec, mark_config, config)
        for symbol in funding:
            if symbol not in self.markets:
                raise EngineError(f"funding configured for {symbol}, which is not listed")
        self.accounts: dict[str, Account] = {}
        self.ledger = Ledger()
        self.clock_ns = 0
        self.next_order_id = 1
        self.next_trade_id = 1
        # Accounts with a non-zero position, per symbol: who the risk pass screens. Kept where
        # sizes change (`_settle_fill`), rebuilt by `restore`, recomputed by the invariants.
        self.holders: dict[str, set[str]] = {symbol: set() for symbol in self.markets}
        self.liquidator: Liquidator = Liquidator(self, liquidation or LiquidationConfig())
        self.conditionals: Conditionals = Conditionals(self)  # stops, take-profits, ladders
        if insurance_fund_atoms:  # the common fund's seed comes from outside, like a deposit
            self.liquidator.seed(self.ledger.external, insurance_fund_atoms)
        self._handlers: dict[type[Command], Callable[[Any], list[Event]]] = {
            PlaceOrder: self._place_order,
            CancelOrder: self._cancel_order,
            Deposit: self._deposit,
            Withdraw: self._withdraw,
            SetLeverage: self._set_leverage,
            SetMarginMode: self._set_margin_mode,
            AdjustIsolatedMargin: self._adjust_isolated_margin,
            UpdateIndex: self._update_index,
            UpdateSources: self._update_sources,
            AdvanceClock: self._advance_clock,
            SetFundingRate: self._set_funding_rate,
            DepositInsurance: self.liquidator.deposit_insurance,
            PlaceConditionalOrder: self.conditionals.place,
            PlaceExitLadder: self.conditionals.place_ladder,
        }

    # == dispatch =============================================================================
    def apply(self, command: Command) -> list[Event]:
        handler = self._handlers.get(type(command))
        if handler is None:
            raise EngineError(f"unknown command {command!r}")
        events = handler(command)
        if self.conditionals.pending():  # stops of flat positions, last-price triggers
            self.conditionals.after_command(events)
        return events

    def apply_all(self, commands: Iterable[Command]) -> list[Event]:
        events: list[Event] = []
        for command in commands:
            events.extend(self.apply(command))
        return events

    # == reads ================================================================================
    def market(self, symbol: str) -> MarketState:
        return self.markets[symbol]

    def position_of(self, account: str, symbol: str) -> Position | None:
        acct = self.accounts.get(account)
        return None if acct is None else acct.positions.get(symbol)

    def settings_of(self, account: str, symbol: str) -> tuple[int, bool]:
        """(leverage, isolated) in force for the pair, defaults when never set."""
        pos = self.position_of(account, symbol)
        if pos is None:
            return self.markets[symbol].spec.default_leverage, False
        return pos.leverage, pos.isolated

    def _cross_sums(self, acct: Account) -> tuple[int, int, int]:
        """(uPnL, IM at mark, MM) of the account's cross positions."""
        upnl = im = mm = 0
        for pos in acct.positions.values():
            if not pos.size_lots or pos.isolated:
                continue
            spec, mark = self._spec_mark(pos.symbol)
            notional = abs(pos.size_lots) * mark * spec.atoms_per_tick_lot
            upnl += pos.size_lots * mark * spec.atoms_per_tick_lot - pos.cost_atoms
            im += div(notional, pos.leverage, _CEIL)
            mm += spec.maintenance_margin_atoms(notional)
        return upnl, im, mm

    def _spec_mark(self, symbol: str) -> tuple[MarketSpec, int]:
        m = self.markets[symbol]
        return m.spec, m.mark_ticks

    def available_atoms(self, acct: Account) -> int:
        """Cross wallet + cross uPnL - cross IM at mark - order margin (the pre-trade check).

        `_cross_sums` without the maintenance margin, inlined: it runs for every order."""
        available = acct.wallet.balance - acct.reserved_atoms
        for pos in acct.positions.values():
            size = pos.size_lots
            if not size or pos.isolated:
                continue
            market = self.markets[pos.symbol]
            value = size * market.mark_ticks * market.spec.atoms_per_tick_lot
            # + uPnL - ceil(|value| / leverage), i.e. div(..., CEIL) inlined as the floor of
            # -|value| / leverage (leverage > 0)
            available += (
                value
                - pos.cost_atoms
                + (-value // pos.leverage if value > 0 else value // pos.leverage)
            )
        return available

    def account_figures(self, name: str) -> AccountFigures:
        acct = self.accounts.get(name) or Account(name)
        cross_upnl, cross_im, cross_mm = self._cross_sums(acct)
        upnl, im, mm, iso_wallet = cross_upnl, cross_im, cross_mm, 0
        for pos in acct.positions.values():
            iso_wallet += pos.margin.balance
            if not pos.size_lots or not pos.isolated:
                continue
            spec, mark = self._spec_mark(pos.symbol)
            notional = abs(pos.size_lots) * mark * spec.atoms_per_tick_lot
            upnl += pos.size_lots * mark * spec.atoms_per_tick_lot - pos.cost_atoms
            im += div(notional, pos.leverage, _CEIL)
            mm += spec.maintenance_margin_atoms(notional)
        available = acct.wallet.balance + cross_upnl - cross_im - acct.reserved_atoms
        wallet = acct.wallet.balance + iso_wallet
        return AccountFigures(
            wallet_atoms=wallet,
            cross_wallet_atoms=acct.wallet.balance,
            unrealized_pnl_atoms=upnl,
            cross_unrealized_pnl_atoms=cross_upnl,
            margin_balance_atoms=wallet + upnl,
            maintenance_margin_atoms=mm,
            position_initial_margin_atoms=im,
            open_order_margin_atoms=acct.reserved_atoms,
            available_atoms=available,
            max_withdraw_atoms=max(0, min(available, available - cross_upnl)),
        )

    # == simple commands ======================================================================
    def _account_for_write(self, name: str) -> Account:
        acct = self.accounts.get(name)
        if acct is None:
            if len(self.accounts) >= MAX_ACCOUNTS:
                raise EngineError("account limit reached")
            acct = self.accounts[name] = Account(name)
        return acct

    def _position_for_write(self, acct: Account, symbol: str) -> Position:
        pos = acct.positions.get(symbol)
        if pos is None:
            spec = self.markets[symbol].spec
            pos = acct.positions[symbol] = Position(acct.name, symbol, spec.default_leverage)
        return pos

    @staticmethod
    def _valid_name(name: str) -> bool:
        return isinstance(name, str) and 0 < len(name) <= MAX_ACCOUNT_NAME

    def _deposit(self, cmd: Deposit) -> list[Event]:
        if not self._valid_name(cmd.account):
            return [RequestRejected(str(cmd.account), "", Reason.UNKNOWN_ACCOUNT)]
        if not 0 < cmd.amount_atoms <= MAX_AMOUNT_ATOMS:
            return [RequestRejected(cmd.account, "", Reason.INVALID_AMOUNT)]
        acct = self._account_for_write(cmd.account)
        self.ledger.transfer(self.ledger.external, acct.wallet, cmd.amount_atoms)
        return [Deposited(cmd.account, cmd.amount_atoms, acct.wallet.balance)]

    def _withdraw(self, cmd: Withdraw) -> list[Event]:
        acct = self.accounts.get(cmd.account)
        if acct is None:
            return [RequestRejected(cmd.account, "", Reason.INSUFFICIENT_BALANCE)]
        if not 0 < cmd.amount_atoms <= MAX_AMOUNT_ATOMS:
            return [RequestRejected(cmd.account, "", Reason.INVALID_AMOUNT)]
        upnl, im, _ = self._cross_sums(acct)
        available = acct.wallet.balance + upnl - im - acct.reserved_atoms
        # Unrealized profit counts as margin but cannot leave the exchange before it is realized.
        if cmd.amount_atoms > min(available, available - upnl):
            return [RequestRejected(cmd.account, "", Reason.INSUFFICIENT_BALANCE)]
        self.ledger.transfer(acct.wallet, self.ledger.external, cmd.amount_atoms)
        return [Withdrawn(cmd.account, cmd.amount_atoms, acct.wallet.balance)]

    def _set_leverage(self, cmd: SetLeverage) -> list[Event]:
        market = self.markets.get(cmd.symbol)
        if market is None:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.UNKNOWN_SYMBOL)]
        if not self._valid_name(cmd.account):
            return [RequestRejected(str(cmd.account), cmd.symbol, Reason.UNKNOWN_ACCOUNT)]
        spec = market.spec
        if not 1 <= cmd.leverage <= spec.max_leverage:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.INVALID_LEVERAGE)]
        pos = self.position_of(cmd.account, cmd.symbol)
        if pos is not None:
            exposure_lots = max(
                pos.size_lots + pos.open_buy_lots, -pos.size_lots + pos.open_sell_lots, 0
            )
            price = max(market.mark_ticks, 1)
            notional = exposure_lots * price * spec.atoms_per_tick_lot
            if notional > spec.max_notional_atoms_at(cmd.leverage):
                return [RequestRejected(cmd.account, cmd.symbol, Reason.POSITION_OVER_LEVERAGE_CAP)]
        acct = self._account_for_write(cmd.account)
        self._position_for_write(acct, cmd.symbol).leverage = cmd.leverage
        self.ledger.touched.add(acct.name)  # the risk mirror keeps leverage too
        self._reserve_orders(acct, cmd.symbol, market)
        return [LeverageChanged(cmd.account, cmd.symbol, cmd.leverage)]

    def _set_margin_mode(self, cmd: SetMarginMode) -> list[Event]:
        if cmd.symbol not in self.markets:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.UNKNOWN_SYMBOL)]
        if not self._valid_name(cmd.account):
            return [RequestRejected(str(cmd.account), cmd.symbol, Reason.UNKNOWN_ACCOUNT)]
        pos = self.position_of(cmd.account, cmd.symbol)
        current = pos.isolated if pos is not None else False
        if current == cmd.isolated:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.MARGIN_TYPE_UNCHANGED)]
        if pos is not None and pos.open_orders:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.MARGIN_TYPE_OPEN_ORDERS)]
        if pos is not None and pos.size_lots:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.MARGIN_TYPE_POSITION)]
        acct = self._account_for_write(cmd.account)
        pos = self._position_for_write(acct, cmd.symbol)
        if pos.margin.balance:  # leftover isolated margin (e.g. rounding) goes home
            self.ledger.transfer(pos.margin, acct.wallet, pos.margin.balance)
        pos.isolated = cmd.isolated
        return [MarginModeChanged(cmd.account, cmd.symbol, cmd.isolated)]

    def _adjust_isolated_margin(self, cmd: AdjustIsolatedMargin) -> list[Event]:
        market = self.markets.get(cmd.symbol)
        if market is None:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.UNKNOWN_SYMBOL)]
        acct = self.accounts.get(cmd.account)
        pos = None if acct is None else acct.positions.get(cmd.symbol)
        if acct is None or pos is None or not pos.isolated or not pos.size_lots:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.NO_ISOLATED_POSITION)]
        delta = cmd.delta_atoms
        if delta == 0 or abs(delta) > MAX_AMOUNT_ATOMS:
            return [RequestRejected(cmd.account, cmd.symbol, Reason.INVALID_AMOUNT)]
        spec = market.spec
        if delta > 0:
            if delta > self.available_atoms(acct):
                return [RequestRejected(cmd.account, cmd.symbol, Reason.CROSS_BALANCE_INSUFFICIENT)]
        else:
            notional = abs(pos.size_lots) * market.mark_ticks * spec.atoms_per_tick_lot
            upnl = pos.size_lots * market.mark_ticks * spec.atoms_per_tick_lot - pos.cost_atoms
            im = div(notional, pos.leverage, _CEIL)
            # Removal only down to the initial margin, counting an open loss against it.
            if pos.margin.balance + delta + min(0, upnl) < im:
                return [
                    RequestRejected(cmd.account, cmd.symbol, Reason.ISOLATED_BALANCE_INSUFFICIENT)
                ]
        self.ledger.transfer(acct.wallet, pos.margin, delta)
        return [IsolatedMarginChanged(cmd.account, cmd.symbol, delta, pos.margin.balance)]

    def _update_index(self, cmd: UpdateIndex) -> list[Event]:
        market = self.markets.get(cmd.symbol)
        if market is None:
            return [RequestRejected("", cmd.symbol, Reason.UNKNOWN_SYMBOL)]
        spec = market.spec
        if not spec.min_price_ticks <= cmd.index_ticks <= spec.max_price_ticks:
            return [RequestRejected("", cmd.symbol, Reason.PRICE_OUT_OF_RANGE)]
        # One price for the whole index: it replaces the sources' quotes until the next ones.
        market.quotes.clear()
        return self._set_index(cmd.symbol, market, cmd.index_ticks)

    def _update_sources(self, cmd: UpdateSources) -> list[Event]:
        market = self.markets.get(cmd.symbol)
        if market is None:
            return [RequestRejected("", cmd.symbol, Reason.UNKNOWN_SYMBOL)]
        spec = market.spec
        names = [name for name, _ in cmd.quotes]
        if not names or len(set(names)) != len(names):
            return [RequestRejected("", cmd.symbol, Reason.UNKNOWN_INDEX_SOURCE)]
        for name, price_ticks in cmd.quotes:
            if name not in self.index_config.sources:
                return [RequestRejected("", cmd.symbol, Reason.UNKNOWN_INDEX_SOURCE)]
            if not spec.min_price_ticks <= price_ticks <= spec.max_price_ticks:
                return [RequestRejected("", cmd.symbol, Reason.PRICE_OUT_OF_RANGE)]
        for name, price_ticks in cmd.quotes:
            market.quotes[name] = (price_ticks, self.clock_ns)
        result = compute_index_detail(market.quotes, self.clock_ns, self.index_config)
        assert result is not None  # the sources just quoted are fresh
        # The weighted average of in-range prices stays in range; the median too.
        return self._set_index(cmd.symbol, market, result.index_ticks)

    def _set_index(self, symbol: str, market: MarketState, index_ticks: int) -> list[Event]:
        # Anchors the basis sampling grid at the first index (a no-op later: the clock has not
        # moved since the last sample), so the first clock step samples all of its grid points.
        book = market.book
        market.mark_state.on_sample(
            self.clock_ns, book.best_bid(), book.best_ask(), market.index_ticks or None
        )
        market.index_ticks = index_ticks
        if market.funding is None:  # funding periods start with the first price
            market.funding = FundingState.for_market(
                market.spec, self.clock_ns, market.funding_config
            )
        events: list[Event] = []
        old_mark_ticks = market.mark_ticks
        market.mark_ticks = self._mark_now(market)
        events.append(IndexUpdated(symbol, market.index_ticks, market.mark_ticks))
        # Every oracle tick runs the pass, moved or not: accounts queued by the last one wait.
        self._risk_then_stops(symbol, old_mark_ticks, events)
        return events

    def _risk_then_stops(self, symbol: str, old_mark_ticks: int, events: list[Event]) -> None:
        """A mark publication (DESIGN.md §5): the liquidation pass, then the conditional orders
        this mark fires. Their fills can sink an account (a stale bid filled above the mark);
        that is liquidated in the same tick: the passes run again, at the same marks, and
        whatever their fills fire, until a round of stops trades nothing (bounded)."""
        self.liquidator.run_pass(symbol, old_mark_ticks, events)
        for _ in range(MAX_TICK_ROUNDS):
            trades_before = self.next_trade_id
            self.conditionals.on_mark(symbol, events)
            if self.next_trade_id == trades_before:
                return
            for other, market in self.markets.items():
                if market.mark_ticks:
                    self.liquidator.run_pass(other, market.mark_ticks, events)

    def _mark_now(self, market: MarketState) -> int:
        """The mark per the mark mode (MECHANICS.md §1.6), within the market's price range."""
        funding = market.funding
        if funding is None:
            mark = market.mark_state.mark(
                self.clock_ns, market.index_ticks or None, market.last_trade_ticks or None
            )
        else:  # Price 1 carries the predicted rate over the time left to the funding time
            mark = market.mark_state.mark(
                self.clock_ns,
                market.index_ticks or None,
                market.last_trade_ticks or None,
                self.predicted_funding_rate_e8(market),
                funding.next_funding_ns,
                market.funding_config.interval_ns,
            )
        assert mark is not None  # called only once there is an index
        spec = market.spec
        return min(max(mark, spec.min_price_ticks), spec.max_price_ticks)

    def predicted_funding_rate_e8(self, market: MarketState) -> int:
        """The rate the coming settlement will charge if nothing changes (a replayed one if set)."""
        funding = market.funding
        if funding is None:
            return 0
        override = market.funding_overrides.get(funding.next_funding_ns)
        return funding.predicted_rate_e8() if override is None else override

    def _advance_clock(self, cmd: AdvanceClock) -> list[Event]:
        if cmd.ts_ns < self.clock_ns:
            return [RequestRejected("", "", Reason.CLOCK_BACKWARDS)]
        # The funding times the step reaches, over all markets, in time order: the clock stops
        # at each, so each settles at the mark of its own time.
        stops: set[int] = set()
        for market in self.markets.values():
            if market.funding is not None:
                try:
                    stops.update(market.funding.due_settlements(cmd.ts_ns))
                except ValueError:  # more than MAX_SETTLEMENTS_PER_ADVANCE in one step
                    return [RequestRejected("", "", Reason.TIME_STEP_TOO_LARGE)]
        if len(stops) > MAX_SETTLEMENTS_PER_ADVANCE:
            return [RequestRejected("", "", Reason.TIME_STEP_TOO_LARGE)]
        events: list[Event] = [ClockAdvanced(cmd.ts_ns)]
        for stop_ns in sorted(stops):
            self._step_clock(stop_ns, events)
        if cmd.ts_ns not in stops:
            self._step_clock(cmd.ts_ns, events)
        return events

    def _step_clock(self, ts_ns: int, events: list[Event]) -> None:
        """Move the clock to `ts_ns` (no funding time strictly between): sample, re-mark, settle.

        The book and the index held over the whole step: they are the basis and premium samples
        of every 5-s grid point in it. Then the mark is recomputed at the new time (as Binance
        republishes it every second) and the risk pass runs; then the funding due at this time
        is paid at that mark, and the pass runs again for what the payments sank.
        """
        settlements: list[tuple[str, MarketState, FundingSettlement]] = []
        for symbol, market in self.markets.items():
            if market.index_ticks:
                book = market.book
                market.mark_state.on_sample(
                    ts_ns, book.best_bid(), book.best_ask(), market.index_ticks
                )
            if market.funding is not None:
                for settlement in market.funding.advance(ts_ns, market.book, market.index_ticks):
                    settlements.append((symbol, market, settlement))
        self.clock_ns = ts_ns
        for symbol, market in self.markets.items():
            if market.index_ticks:
                self._refresh_mark(symbol, market, events)
        for symbol, market, settlement in settlements:
            self._settle_funding(symbol, market, settlement, events)
            self.liquidator.run_pass(symbol, market.mark_ticks, events)

    def _settle_funding(
        self, symbol: str, market: MarketState, settlement: FundingSettlement, events: list[Event]
    ) -> None:
        """Every open position of `symbol` pays (or receives) its funding, in one vector pass.

        Isolated positions pay from their isolated margin, cross ones from the wallet; payers
        round up and receivers down (perpex.core.funding), the dust stays in FUNDING.
        """
        rate_e8, divisor = settlement.rate_e8, settlement.rate_divisor
        override = market.funding_overrides.pop(settlement.time_ns, None)
        if override is not None:  # a replayed history rate is charged whole, per interval
            rate_e8, divisor = override, 1
        market.last_funding_rate_e8 = rate_e8
        mark = market.mark_ticks
        spec = market.spec
        names = sorted(self.holders[symbol])
        positions = [self.accounts[name].positions[symbol] for name in names]
        dust = 0
        if positions:
            sizes = np.fromiter((p.size_lots for p in positions), np.int64, len(positions))
            payments, dust = funding_payments(
                sizes, mark, spec.atoms_per_tick_lot, rate_e8, divisor
            )
            ledger = self.ledger
            for name, pos, paid in zip(names, positions, payments.tolist(), strict=True):
                if not paid:
                    continue
                source = pos.margin if pos.isolated else self.accounts[name].wallet
                ledger.transfer(source, ledger.funding, paid)
                events.append(
                    FundingPaid(
                        name, symbol, settlement.time_ns, paid, rate_e8, pos.size_lots, pos.isolated
                    )
                )
        events.append(
            FundingSettled(
                symbol,
                settlement.time_ns,
                rate_e8,
                divisor,
                mark,
                settlement.premium_e8,
                dust,
            )
        )

    def _set_funding_rate(self, cmd: SetFundingRate) -> list[Event]:
        market = self.markets.get(cmd.symbol)
        if market is None:
            return [RequestRejected("", cmd.symbol, Reason.UNKNOWN_SYMBOL)]
        period_ns = market.funding_config.period_ns
        if (
            abs(cmd.rate_e8) > MAX_RATE_E8
            or cmd.funding_time_ns <= self.clock_ns  # only a settlement still to come
            or cmd.funding_time_ns % period_ns
            or market.funding_config.hourly_split  # a history rate is per whole interval
            or (
                cmd.funding_time_ns not in market.funding_overrides
                and len(market.funding_overrides) >= MAX_FUNDING_OVERRIDES
            )
        ):
            return [RequestRejected("", cmd.symbol, Reason.INVALID_FUNDING_RATE)]
        market.funding_overrides[cmd.funding_time_ns] = cmd.rate_e8
        return []

    def _refresh_mark(self, symbol: str, market: MarketState, events: list[Event]) -> None:
        old_mark_ticks = market.mark_ticks
        mark_ticks = self._mark_now(market)
        if mark_ticks != old_mark_ticks:
            market.mark_ticks = mark_ticks
            events.append(MarkPriceUpdated(symbol, market.index_ticks, mark_ticks))
        # The risk pass runs on every mark publication, moved or not: fills since the last one
        # (a resting bid filled above the mark, say) can have sunk an account at the same mark.
        self._risk_then_stops(symbol, old_mark_ticks, events)

    # == orders ===============================================================================
    def _reject(self, cmd: PlaceOrder, reason: Reason) -> list[Event]:
        return [OrderRejected(cmd.account, cmd.symbol, cmd.client_order_id, reason)]

    def _place_order(self, cmd: PlaceOrder) -> list[Event]:
        if cmd.stop_loss_ticks or cmd.take_profit_ticks:  # checks both, then calls back here
            return self.conditionals.place_protected(cmd)
        # ---- validate -----------------------------------------------------------------
        symbol = cmd.symbol
        market = self.markets.get(symbol)
        if market is None:
            return self._reject(cmd, Reason.UNKNOWN_SYMBOL)
        spec = market.spec
        mark = market.mark_ticks
        if not mark:
            return self._reject(cmd, Reason.NO_MARK_PRICE)
        account = cmd.account
        acct = self.accounts.get(account)
        new_account = acct is None
        if acct is None:
            if not self._valid_name(account):
                return self._reject(cmd, Reason.UNKNOWN_ACCOUNT)
            acct = Account(account)  # not stored unless the order is accepted
        side = cmd.side
        if side != BUY and side != SELL:
            raise EngineError(f"side {side!r}")
        qty = cmd.qty_lots
        order_type = cmd.order_type
        is_market = order_type == _MARKET
        if qty <= 0:
            raise EngineError("quantity must be positive (the edge checks it)")
        if qty > (spec.max_market_qty_lots if is_market else spec.max_limit_qty_lots):
            return self._reject(cmd, Reason.QTY_ABOVE_MAX)
        cid = cmd.client_order_id
        if cid is not None and (
            cid in acct.client_ids or self.conditionals.owns_client_id(account, cid)
        ):
            return self._reject(cmd, Reason.DUPLICATE_CLIENT_ORDER_ID)
        pos = acct.positions.get(symbol)
        if pos is not None:
            size = pos.size_lots
            leverage = pos.leverage
        else:
            size = 0
            leverage = spec.default_leverage
        band = spec.price_band_ppm
        if is_market:
            price = 0
            if side == BUY:
                limit = div(mark * (PPM + band), PPM, _FLOOR)
            else:
                limit = div(mark * (PPM - band), PPM, _CEIL)
        else:
            price = limit = cmd.price_ticks
            if not spec.min_price_ticks <= price <= spec.max_price_ticks:
                return self._reject(cmd, Reason.PRICE_OUT_OF_RANGE)
            if side == BUY:
                if price * PPM > mark * (PPM + band):
                    return self._reject(cmd, Reason.PRICE_ABOVE_BAND)
            elif price * PPM < mark * (PPM - band):
                return self._reject(cmd, Reason.PRICE_BELOW_BAND)
        if pos is not None and len(pos.open_orders) >= spec.max_open_orders:
            return self._reject(cmd, Reason.TOO_MANY_OPEN_ORDERS)
        k = spec.atoms_per_tick_lot
        reduce_only = cmd.reduce_only
        held_same = size * side  # > 0: the position is on this order's side, < 0: it closes
        if reduce_only:
            # Reduce-only: only against a position on the other side, never larger than it.
            if held_same >= 0:
                return self._reject(cmd, Reason.REDUCE_ONLY_REJECTED)
            qty = min(qty, abs(size))
        elif (price or mark) * qty * k < spec.min_notional_atoms:
            return self._reject(cmd, Reason.MIN_NOTIONAL)
        # Non-recourse for the trader's own orders too: a closing order never takes liquidity
        # past the price where the position's margin (fee included) is gone.
        # The cap binds iff (cost - E)·PPM > limit·slope, slope = size·(PPM + side·fee)·k (see
        # `_bankruptcy_cap`); with one cross position E is the wallet, so the test is exact
        # here and most closing orders skip the call.
        capped = False
        if (
            held_same < 0
            and pos is not None
            and (
                pos.isolated
                or len(acct.positions) > 1
                or (pos.cost_atoms - acct.wallet.balance) * PPM
                > limit * size * (PPM + side * spec.taker_fee_ppm) * k
            )
        ):
            cap = self._bankruptcy_cap(acct, pos, spec)
            if (cap > limit) if side == SELL else (cap < limit):
                limit, capped = cap, True
        book = market.book
        tif = cmd.time_in_force
        if tif == _GTX:
            if not is_market and book.crosses(side, price):
                return self._reject(cmd, Reason.POST_ONLY_WOULD_CROSS)
        elif tif == _FOK and not is_market:
            fillable, _ = book.walk(side, limit, qty, account)
            if fillable < qty:
                return self._reject(cmd, Reason.FOK_NOT_FILLABLE)
        reserved = 0
        opening_whole = False  # a limit order that only opens: margin as `_reprice_side` sets it
        if not reduce_only:
            # (`max`/`min` written as conditionals on this hot path: a call costs ~80 ns.)
            if pos is not None:
                open_same = pos.open_buy_lots if side == BUY else pos.open_sell_lots
            else:
                open_same = 0
            # The part of the order that opens exposure: what is left after closing the
            # opposite position, net of the orders already queued to close it (open_same).
            # Potential exposure on this side if every open order on it fills.
            if held_same < 0:
                closable = -held_same - open_same
                if closable <= 0:
                    opening = qty
                elif qty > closable:
                    opening = qty - closable
                else:
                    opening = 0
                exposure = open_same + opening
            else:
                opening = qty
                exposure = held_same + open_same + opening
            if exposure > spec.max_position_lots:
                return self._reject(cmd, Reason.POSITION_BOUND)
            leverage_cap_atoms = market.leverage_caps.get(leverage)
            if leverage_cap_atoms is None:
                leverage_cap_atoms = market.max_notional_atoms_at(leverage)
            if exposure * (price or mark) * k > leverage_cap_atoms:
                return self._reject(cmd, Reason.POSITION_OVER_LEVERAGE_CAP)
            if opening:
                if is_market:
                    # Cost of what the market order will actually take: the tail of the walk
                    # after the closing part (the closing fills come first).
                    lots_all, quote_all = book.walk(side, limit, qty, account)
                    lots_head, quote_head = book.walk(side, limit, qty - opening, account)
                    open_lots = lots_all - lots_head
                    open_quote = quote_all - quote_head
                else:
                    open_lots = opening
                    open_quote = opening * price
                    opening_whole = opening == qty
                # Binance charges the open loss of a buy above (sell below) the mark up front,
                # so an order that would be underwater on fill needs the margin to carry it.
                open_loss_ticks = side * (open_quote - open_lots * mark)
                # ceil(notional / leverage), inlined (both are positive)
                cost = -(-(open_quote * k) // leverage)
                if open_loss_ticks > 0:
                    cost += open_loss_ticks * k
                if cost and cost > self.available_atoms(acct):
                    return self._reject(cmd, Reason.INSUFFICIENT_MARGIN)
                reserved = cost
        # ---- commit (nothing below can fail) ------------------------------------------------
        if new_account:
            self.accounts[account] = acct
        if pos is None:
            pos = self._position_for_write(acct, symbol)
        order_id = self.next_order_id
        self.next_order_id = order_id + 1
        order = Order(
            order_id,
            account,
            symbol,
            side,
            order_type,
            tif,
            price,
            qty,
            reduce_only,
            cid,
            reserved,
        )
        events: list[Event] = [
            OrderAccepted(
                order_id, account, symbol, side, order_type, tif, qty, price, reduce_only, cid
            )
        ]
        # `_register`, inlined (it runs for every order); an order that only opens holds the
        # margin `_reprice_side` would give it, if its side is priced at this mark and leverage
        acct.orders[order_id] = order
        if cid is not None:
            acct.client_ids[cid] = order_id
        acct.reserved_atoms += reserved
        pos.open_orders[order_id] = order
        if side == BUY:
            pos.open_buy_lots += qty
            margin_orders = pos.margin_buys
        else:
            pos.open_sell_lots += qty
            margin_orders = pos.margin_sells
        if reduce_only:
            pos.reduce_only_count += 1
        else:
            margin_orders.orders[order_id] = order
            if opening_whole:
                if len(margin_orders.orders) == 1:  # a side that was empty takes now's pricing
                    margin_orders.mark_ticks, margin_orders.leverage = mark, leverage
                if margin_orders.mark_ticks != mark or margin_orders.leverage != leverage:
                    margin_orders.unpriced[order_id] = order
            else:
                margin_orders.unpriced[order_id] = order
        fills = None
        self_trade = False
        if book.crosses(side, limit):  # else nothing to take: most limit orders
            result = book.match(side, limit, qty, account)  # expire-taker self-trade prevention
            fills, self_trade = result.fills, result.self_trade
            if fills:
                touched = {account: acct}
                sizes_before = {account: size}  # each account's position before the fills
                self._settle_match(
                    market, acct, pos, order, fills, events, touched, sizes_before=sizes_before
                )
        left = order.remaining_lots
        if left:
            # GTX (post-only) that passed the crossing check rests like GTC; it took nothing.
            beyond = capped and book.walk(side, 0 if side == SELL else 2**62, 1)[0]
            if tif in (_GTC, _GTX) and not is_market and not self_trade and not beyond:
                book.add(order)
            else:
                if self_trade:
                    reason = EndReason.SELF_TRADE
                elif beyond:
                    reason = EndReason.BANKRUPTCY
                elif is_market and book.walk(side, 0 if side == SELL else 2**62, 1)[0]:
                    reason = EndReason.PRICE_BAND
                else:
                    reason = _IOC_REMAINDER
                self._unregister(acct, pos, order)
                events.append(OrderCanceled(order_id, account, symbol, left, reason))
        if fills:  # positions moved: re-price the margin of the makers' and our orders
            for name, other in touched.items():
                other_pos = other.positions[symbol]
                if other_pos.reduce_only_count:
                    self._trim_reduce_only(other, symbol, market, events)
                if other_pos.open_orders:
                    self._reprice_position(other, other_pos, market, sizes_before[name])
                if other.wallet.balance < 0:
                    self._cover_flat_deficit(other, symbol, events)
        return events

    def _bankruptcy_cap(self, acct: Account, pos: Position, spec: MarketSpec) -> int:
        """The worst price (ticks) at which `pos` can be closed by a taker without its margin
        balance, after the taker fee, going below zero: a sell (long) may not fill below it,
        a buy (short) not above it.

        Margin balance E: the isolated margin, or the cross wallet plus the other cross
        positions' uPnL at their marks. Closing all of size s at p leaves
        E + s·k·p − cost − f·|s|·k·p, linear in p; its root, rounded toward the trader's
        favour by less than a tick (up for a long, down for a short), is the cap.
        """
        if pos.isolated:
            equity = pos.margin.balance
        else:
            equity = acct.wallet.balance
            if len(acct.positions) > 1:  # (the common case, one symbol, skips the loop)
                for other in acct.positions.values():
                    if other is not pos and other.size_lots and not other.isolated:
                        market = self.markets[other.symbol]
                        k_other = market.spec.atoms_per_tick_lot
                        equity += other.size_lots * market.mark_ticks * k_other - other.cost_atoms
        size = pos.size_lots
        # (s·PPM − f·|s|)·k·p = (cost − E)·PPM, solved exactly for p
        slope = (size * PPM - spec.taker_fee_ppm * (size if size > 0 else -size)) * (
            spec.atoms_per_tick_lot
        )
        rhs = (pos.cost_atoms - equity) * PPM
        # Python's // floors whatever the signs, as div(rhs, slope, FLOOR) does; hot path
        cap = -(-rhs // slope) if size > 0 else rhs // slope
        return cap if cap > 0 else 0

    def _cover_flat_deficit(self, acct: Account, symbol: str, events: list[Event]) -> None:
        """A flat account whose wallet ended below zero (a resting close filled past bankruptcy,
        or a few atoms of per-fill rounding): the insurance fund of `symbol` pays the deficit,
        as much as it holds (non-recourse, DESIGN.md §6 promise 4)."""
        if any(p.size_lots for p in acct.positions.values()):
            return  # margin balance, not the wallet, is what must stay >= 0 with positions open
        self.liquidator.pay_deficit(acct.wallet, -acct.wallet.balance, acct.name, symbol, events)

    def _register(self, acct: Account, pos: Position, order: Order) -> None:
        """Index an open order (`_place_order` has this inlined: keep the two in step)."""
        order_id = order.order_id
        acct.orders[order_id] = order
        if order.client_order_id is not None:
            acct.client_ids[order.client_order_id] = order_id
        acct.reserved_atoms += order.reserved_atoms
        pos.open_orders[order_id] = order
        if order.side == BUY:
            pos.open_buy_lots += order.remaining_lots
            margin_orders = pos.margin_buys
        else:
            pos.open_sell_lots += order.remaining_lots
            margin_orders = pos.margin_sells
        if order.reduce_only:
            pos.reduce_only_count += 1
        else:
            margin_orders.orders[order_id] = order
            margin_orders.unpriced[order_id] = order  # its margin: whatever the caller set

    def _unregister(self, acct: Account, pos: Position, order: Order) -> None:
        """Forget an order that is done (filled, canceled or expired); releases its margin."""
        order_id = order.order_id
        del acct.orders[order_id]
        if order.client_order_id is not None:
            del acct.client_ids[order.client_order_id]
        acct.reserved_atoms -= order.reserved_atoms
        order.reserved_atoms = 0
        del pos.open_orders[order_id]
        if order.side == BUY:
            pos.open_buy_lots -= order.remaining_lots
            margin_orders = pos.margin_buys
        else:
            pos.open_sell_lots -= order.remaining_lots
            margin_orders = pos.margin_sells
        if order.reduce_only:
            pos.reduce_only_count -= 1
        else:
            del margin_orders.orders[order_id]
            if margin_orders.unpriced:
                margin_orders.unpriced.pop(order_id, None)

    def _settle_match(
        self,
        market: MarketState,
        taker_acct: Account,
        taker_pos: Position,
        taker: Order,
        fills: list[tuple[RestingOrder, int, int]],
        events: list[Event],
        touched: dict[str, Account],
        *,
        taker_fee_ppm: int | None = None,  # a liquidation order pays none
        liquidation: bool = False,
        sizes_before: dict[str, int] | None = None,  # filled in: each maker's size before
    ) -> None:
        spec = market.spec
        symbol = spec.symbol
        k = spec.atoms_per_tick_lot
        ledger = self.ledger
        accounts = self.accounts
        taker_ppm = spec.taker_fee_ppm if taker_fee_ppm is None else taker_fee_ppm
        maker_ppm = spec.maker_fee_ppm
        side = taker.side
        taker_name = taker_acct.name
        for maker, lots, price in fills:
            assert isinstance(maker, Order)
            notional = price * lots * k
            maker_name = maker.account
            maker_acct = accounts[maker_name]
            maker_pos = maker_acct.positions[symbol]
            if sizes_before is not None and maker_name not in sizes_before:
                sizes_before[maker_name] = maker_pos.size_lots
            touched[maker_name] = maker_acct
            # the maker's order: the book already took `lots` off its remaining
            self._consume(maker_acct, maker_pos, maker, lots, price, maker.remaining_lots + lots)
            # the taker's order
            self._consume(taker_acct, taker_pos, taker, lots, price, taker.remaining_lots)
            taker.remaining_lots -= lots
            # Fees first: an isolated position pays from its own margin, and a fill that closes
            # it then releases what is left, so no fee residue stays behind in the bucket.
            # Rounded up, i.e. div(..., CEIL) inlined: -(-a // b) is the ceiling for b > 0.
            taker_fee = -(-(notional * taker_ppm) // PPM)
            maker_fee = -(-(notional * maker_ppm) // PPM)
            if taker_fee:
                ledger.transfer(
                    taker_pos.margin if taker_pos.isolated else taker_acct.wallet,
                    ledger.fees,
                    taker_fee,
                )
            if maker_fee:
                ledger.transfer(
                    maker_pos.margin if maker_pos.isolated else maker_acct.wallet,
                    ledger.fees,
                    maker_fee,
                )
            taker_pnl = self._settle_fill(taker_acct, taker_pos, spec, side, lots, price)
            maker_pnl = self._settle_fill(maker_acct, maker_pos, spec, -side, lots, price)
            trade_id = self.next_trade_id
            self.next_trade_id = trade_id + 1
            market.last_trade_ticks = price
            events.append(
                TradeExecuted(
                    symbol,
                    trade_id,
                    price,
                    lots,
                    side,
                    taker.order_id,
                    maker.order_id,
                    taker_name,
                    maker_name,
                    taker_fee,
                    maker_fee,
                    taker_pnl,
                    maker_pnl,
                    liquidation,
                )
            )
            events.append(
                PositionChanged(
                    maker_name,
                    symbol,
                    maker_pos.size_lots,
                    maker_pos.cost_atoms,
                    maker_pos.margin.balance,
                )
            )
            if maker.remaining_lots == 0:
                self._unregister(maker_acct, maker_pos, maker)
        events.append(
            PositionChanged(
                taker_name,
                symbol,
                taker_pos.size_lots,
                taker_pos.cost_atoms,
                taker_pos.margin.balance,
            )
        )
        if taker.remaining_lots == 0:
            self._unregister(taker_acct, taker_pos, taker)

    def _consume(
        self, acct: Account, pos: Position, order: Order, lots: int, price: int, before: int
    ) -> None:
        """Book a fill of `lots` against an order that had `before` lots left."""
        order.filled_lots += lots
        order.filled_quote_ticks += lots * price
        if order.side == BUY:
            pos.open_buy_lots -= lots
        else:
            pos.open_sell_lots -= lots
        if order.reserved_atoms:
            if lots == before:  # filled: `_unregister` follows
                release = order.reserved_atoms
            else:
                release = order.reserved_atoms * lots // before  # floor, as div(..., FLOOR)
                # what is left is a share of the old margin, not the re-priced one
                margin_orders = pos.margin_buys if order.side == BUY else pos.margin_sells
                margin_orders.unpriced[order.order_id] = order
            order.reserved_atoms -= release
            acct.reserved_atoms -= release

    def _settle_fill(
        self, acct: Account, pos: Position, spec: MarketSpec, side: int, lots: int, price: int
    ) -> int:
        """Net one fill into the position; returns the realized PnL in atoms."""
        k = spec.atoms_per_tick_lot
        ledger = self.ledger
        size = pos.size_lots
        realized = 0
        open_lots = lots
        if size * side < 0:  # closes (some of) the position
            held = -size if size < 0 else size
            close = lots if lots < held else held
            # The closed part's cost basis, rounded up: realized PnL rounds against the trader.
            # (div(..., CEIL) inlined: held > 0.)
            part_cost = pos.cost_atoms if close == held else -(-(pos.cost_atoms * close) // held)
            realized = -side * close * price * k - part_cost  # -side: the sign of the position
            pos.size_lots = size + side * close
            pos.cost_atoms -= part_cost
            open_lots = lots - close
            if pos.isolated:
                margin = pos.margin
                ledger.transfer(ledger.settlement, margin, realized)
                if close == held:
                    release = margin.balance
                else:
                    release = div(margin.balance * close, held, _FLOOR) if margin.balance > 0 else 0
                if release:
                    ledger.transfer(margin, acct.wallet, release)
            elif realized:
                ledger.transfer(ledger.settlement, acct.wallet, realized)
        if open_lots:
            notional = open_lots * price * k
            pos.size_lots += side * open_lots
            pos.cost_atoms += side * notional
            if pos.isolated:
                ledger.transfer(acct.wallet, pos.margin, div(notional, pos.leverage, _CEIL))
        size_after = pos.size_lots
        if not size or not size_after:  # opened from flat or closed to flat
            self._update_holder(acct.name, pos)
        elif size * size_after < 0:  # flipped through zero in this one fill
            self.conditionals.on_position_flat(acct.name, pos.symbol)  # old-side stops go
        ledger.touched.add(acct.name)  # the risk mirror refreshes this account (risk.py)
        return realized

    def _update_holder(self, account: str, pos: Position) -> None:
        if pos.size_lots:
            self.holders[pos.symbol].add(account)
        else:
            self.holders[pos.symbol].discard(account)
            self.conditionals.on_position_flat(account, pos.symbol)  # its stops go too

    def _trim_reduce_only(
        self, acct: Account, symbol: str, market: MarketState, events: list[Event]
    ) -> None:
        """Reduce-only orders may never add exposure: cut the newest first to fit |position|."""
        pos = acct.positions.get(symbol)
        if pos is None or not pos.reduce_only_count:
            return
        size = pos.size_lots
        closing_side = SELL if size > 0 else BUY
        budget = abs(size)
        ro = [o for o in pos.open_orders.values() if o.reduce_only]
        for order in ro:  # oldest first keep their quantity
            if order.side != closing_side or size == 0:
                self._end_order(acct, pos, market, order, EndReason.REDUCE_ONLY, events)
                continue
            if order.remaining_lots <= budget:
                budget -= order.remaining_lots
            elif budget == 0:
                self._end_order(acct, pos, market, order, EndReason.REDUCE_ONLY, events)
            else:
                cut = order.remaining_lots - budget
                market.book.reduce(order.order_id, cut)
                if order.side == BUY:
                    pos.open_buy_lots -= cut
                else:
                    pos.open_sell_lots -= cut
                budget = 0

    def _end_order(
        self,
        acct: Account,
        pos: Position,
        market: MarketState,
        order: Order,
        reason: EndReason,
        events: list[Event],
    ) -> None:
        market.book.cancel(order.order_id)
        left = order.remaining_lots
        self._unregister(acct, pos, order)
        events.append(OrderCanceled(order.order_id, acct.name, order.symbol, left, reason))

    def _cancel_order(self, cmd: CancelOrder) -> list[Event]:
        symbol = cmd.symbol
        acct = self.accounts.get(cmd.account)
        order: Order | None = None
        if acct is not None:
            if cmd.order_id is not None:
                order = acct.orders.get(cmd.order_id)
            elif cmd.client_order_id is not None:
                oid = acct.client_ids.get(cmd.client_order_id)
                order = None if oid is None else acct.orders.get(oid)
        market = self.markets.get(symbol)
        if market is None:
            return [RequestRejected(cmd.account, symbol, Reason.UNKNOWN_SYMBOL)]
        if order is None:  # a conditional order, perhaps (ids never collide)
            canceled = self.conditionals.cancel(cmd)
            if canceled is not None:
                return canceled
        if acct is None or order is None or order.symbol != symbol:
            return [RequestRejected(cmd.account, symbol, Reason.UNKNOWN_ORDER)]
        pos = acct.positions[symbol]
        # `_end_order`, inlined (a quarter of all commands are cancels)
        market.book.cancel(order.order_id)
        left = order.remaining_lots
        self._unregister(acct, pos, order)
        events: list[Event] = [OrderCanceled(order.order_id, acct.name, symbol, left, _CANCELED)]
        if pos.size_lots * order.side < 0 and not order.reduce_only:
            # It held part of the closing allowance; later closing orders may now get it.
            self._reserve_orders(acct, symbol, market)
        return events

    def _reserve_orders(
        self, acct: Account, symbol: str, market: MarketState, size_before: int | None = None
    ) -> None:
        """Re-price the margin held for the pair's open orders after its position changed.

        Oldest first, the first |position| lots on the closing side are free (they close);
        everything else opens exposure and holds IM at the order price plus the open loss
        against the current mark, as at placement. Without this an order placed to close a
        position that is gone since would open one with no margin behind it.

        With `size_before` (the position before the fills that moved it), only the orders
        whose share of the free lots can have changed are re-priced: those on the closing side
        before or after. The others open exposure either way and keep their margin as placed.
        Within a side, `_reprice_side` visits only the head of it that closes now or closed at
        its last pricing and the orders marked unpriced since; it leaves every order with what
        a visit of all of them would give (see `MarginOrders`).
        """
        pos = acct.positions.get(symbol)
        if pos is not None and pos.open_orders:
            self._reprice_position(acct, pos, market, size_before)

    @staticmethod
    def _reprice_position(
        acct: Account, pos: Position, market: MarketState, size_before: int | None
    ) -> None:
        """`_reserve_orders` for a position with open orders."""
        size = pos.size_lots
        mark = market.mark_ticks
        k = market.spec.atoms_per_tick_lot
        delta = 0
        # the closing sides before and after: buys close a short, sells a long
        if size_before is None or size < 0 or size_before < 0:
            free = -size if size < 0 else 0
            delta += _reprice_side(pos.margin_buys, free, BUY, mark, k, pos.leverage)
        if size_before is None or size > 0 or size_before > 0:
            free = size if size > 0 else 0
            delta += _reprice_side(pos.margin_sells, free, SELL, mark, k, pos.leverage)
        acct.reserved_atoms += delta

    # == canonical state ======================================================================
    @staticmethod
    def _spec_record(spec: MarketSpec) -> list[Any]:
        return [
            spec.symbol,
            str(spec.tick_size),
            str(spec.step_size),
            spec.price_precision,
            spec.quantity_precision,
            spec.atoms_per_tick_lot,
            [
                [b.index, b.floor_atoms, b.cap_atoms, b.max_leverage, b.mmr_ppm, b.cum_atoms]
                for b in spec.brackets
            ],
            spec.maker_fee_ppm,
            spec.taker_fee_ppm,
            spec.min_notional_atoms,
            spec.min_price_ticks,
            spec.max_price_ticks,
            spec.max_limit_qty_lots,
            spec.max_market_qty_lots,
            spec.price_band_ppm,
            spec.max_open_orders,
            spec.default_leverage,
            spec.max_position_lots,
        ]

    @staticmethod
    def _order_record(o: Order) -> list[Any]:
        return [
            o.order_id,
            o.account,
            o.symbol,
            o.side,
            int(o.order_type),
            int(o.time_in_force),
            o.price_ticks,
            o.qty_lots,
            o.remaining_lots,
            o.filled_lots,
            o.filled_quote_ticks,
            o.reduce_only,
            o.client_order_id,
            o.reserved_atoms,
        ]

    def _economic_state(self) -> list[Any]:
        """Everything with economic meaning, in a canonical order (no logs, no id counters)."""
        markets = []
        for symbol in sorted(self.markets):
            m = self.markets[symbol]
            markets.append(
                [
                    self._spec_record(m.spec),
                    m.index_ticks,
                    m.mark_ticks,
                    m.last_trade_ticks,
                    [o.order_id for o in m.book.orders()],  # queue order matters
                    m.mark_state.record(),  # the basis samples shape future marks
                    sorted([name, price, ts] for name, (price, ts) in m.quotes.items()),
                    m.funding_config,
                    None if m.funding is None else m.funding.record(),
                    sorted(m.funding_overrides.items()),
                    m.last_funding_rate_e8,
                ]
            )
        accounts = []
        for name in sorted(self.accounts):
            acct = self.accounts[name]
            positions = []
            for symbol in sorted(acct.positions):
                p = acct.positions[symbol]
                if p.is_default(self.markets[symbol].spec.default_leverage):
                    continue
                positions.append(
                    [
                        symbol,
                        p.leverage,
                        p.isolated,
                        p.size_lots,
                        p.cost_atoms,
                        p.margin.balance,
                        [self._order_record(p.open_orders[i]) for i in sorted(p.open_orders)],
                    ]
                )
            accounts.append([name, acct.wallet.balance, acct.reserved_atoms, positions])
        ledger = [b.balance for b in self.ledger.system_buckets()]
        liquidation = self.liquidator.record()  # its config and the queue of the next pass
        index = self.index_config
        oracle = [
            self.mark_mode,
            sorted([name, weight] for name, weight in index.sources.items()),
            index.stale_after_ns,
            index.max_deviation_ppm,
        ]
        conditional = self.conditionals.record()  # trigger books, exit ladders
        return [oracle, self.clock_ns, markets, accounts, ledger, liquidation, conditional]

    def state_hash(self) -> str:
        encoded = msgspec.msgpack.encode(self._economic_state())
        return hashlib.blake2b(encoded, digest_size=32).hexdigest()

    def snapshot(self) -> bytes:
        """The full state (economic state plus counters), enough to rebuild an equal engine."""
        return msgspec.msgpack.encode(
            {
                "version": SNAPSHOT_VERSION,
                "state": self._economic_state(),
                "next_order_id": self.next_order_id,
                "next_trade_id": self.next_trade_id,
                "ledger_transfers": self.ledger.transfers,
            }
        )

    @classmethod
    def restore(cls, blob: bytes) -> Engine:
        data = msgspec.msgpack.decode(blob)
        if data.get("version") != SNAPSHOT_VERSION:
            raise EngineError(f"snapshot version {data.get('version')} != {SNAPSHOT_VERSION}")
        oracle, clock_ns, markets, accounts, ledger, liquidation, conditional = data["state"]
        mark_mode, sources, stale_after_ns, max_deviation_ppm = oracle
        index = IndexConfig(dict(sources), stale_after_ns, max_deviation_ppm)
        specs = [_spec_from_record(m[0]) for m in markets]
        funding = {m[0][0]: msgspec.convert(m[7], FundingConfig) for m in markets}
        engine = cls(specs, mark_mode, index=index, funding=funding)
        engine.conditionals.load(conditional)
        engine.clock_ns = clock_ns
        engine.next_order_id = data["next_order_id"]
        engine.next_trade_id = data["next_trade_id"]
        engine.ledger.transfers = data["ledger_transfers"]
        for bucket, balance in zip(engine.ledger.system_buckets(), ledger, strict=True):
            bucket.balance = balance
        engine.liquidator.load(liquidation)  # after the buckets: one fund is all of INSURANCE
        orders: dict[int, Order] = {}
        for name, wallet, reserved, positions in accounts:
            acct = engine.accounts[name] = Account(name)
            acct.wallet.balance = wallet
            acct.reserved_atoms = reserved
            for symbol, lev, isolated, size, cost, margin, order_records in positions:
                pos = engine._position_for_write(acct, symbol)
                pos.leverage, pos.isolated, pos.size_lots, pos.cost_atoms = (
                    lev,
                    isolated,
                    size,
                    cost,
                )
                pos.margin.balance = margin
                if size:
                    engine.holders[symbol].add(name)
                for r in order_records:
                    o = Order(
                        r[0],
                        r[1],
                        r[2],
                        r[3],
                        OrderType(r[4]),
                        TimeInForce(r[5]),
                        r[6],
                        r[7],
                        r[11],
                        r[12],
                        r[13],
                    )
                    o.remaining_lots, o.filled_lots, o.filled_quote_ticks = r[8], r[9], r[10]
                    reserved_before = acct.reserved_atoms
                    engine._register(acct, pos, o)
                    acct.reserved_atoms = reserved_before  # already counted in the record
                    orders[o.order_id] = o
        for record in markets:
            m = engine.markets[record[0][0]]
            m.index_ticks, m.mark_ticks, m.last_trade_ticks = record[1], record[2], record[3]
            for oid in record[4]:
                m.book.add(orders[oid])
            m.mark_state = MarkState.from_record(record[5], m.mark_state.config)
            m.quotes = {name: (price, ts) for name, price, ts in record[6]}
            if record[8] is not None:
                m.funding = FundingState.from_record(
                    record[8],
                    m.funding_config,
                    impact_notional_atoms=FundingState.for_market(
                        m.spec, 0, m.funding_config
                    ).impact_notional_atoms,
                    atoms_per_tick_lot=m.spec.atoms_per_tick_lot,
                )
            m.funding_overrides = {int(t): int(r) for t, r in record[9]}
            m.last_funding_rate_e8 = record[10]
        return engine

    # == invariants ===========================================================================
    def check_invariants(self) -> None:
        """Recompute every cached sum and every conservation law; AssertionError on a breach."""
        ledger_sum = sum(b.balance for b in self.ledger.system_buckets())
        cost_sum = 0
        lots_by_symbol = dict.fromkeys(self.markets, 0)
        resting: dict[str, set[int]] = {s: set() for s in self.markets}
        for acct in self.accounts.values():
            ledger_sum += acct.wallet.balance
            reserved = 0
            for oid, o in acct.orders.items():
                assert o.order_id == oid and o.account == acct.name
                assert acct.positions[o.symbol].open_orders.get(oid) is o
                reserved += o.reserved_atoms
            assert reserved == acct.reserved_atoms, f"{acct.name}: reservations drifted"
            assert len(acct.client_ids) == sum(
                1 for o in acct.orders.values() if o.client_order_id is not None
            )
            for cid, oid in acct.client_ids.items():
                assert acct.orders[oid].client_order_id == cid
            for symbol, pos in acct.positions.items():
                ledger_sum += pos.margin.balance
                cost_sum += pos.cost_atoms
                lots_by_symbol[symbol] += pos.size_lots
                if not pos.size_lots:
                    assert pos.cost_atoms == 0, f"{acct.name}/{symbol}: cost without position"
                    assert pos.margin.balance == 0, f"{acct.name}/{symbol}: margin left behind"
                if not pos.isolated:
                    assert pos.margin.balance == 0, f"{acct.name}/{symbol}: cross with margin"
                buy = sum(o.remaining_lots for o in pos.open_orders.values() if o.side == BUY)
                sell = sum(o.remaining_lots for o in pos.open_orders.values() if o.side == SELL)
                assert (buy, sell) == (pos.open_buy_lots, pos.open_sell_lots), "open lots drifted"
                assert pos.reduce_only_count == sum(
                    1 for o in pos.open_orders.values() if o.reduce_only
                )
                for side, margin_orders in ((BUY, pos.margin_buys), (SELL, pos.margin_sells)):
                    by_side = margin_orders.orders
                    want = [o for o in pos.open_orders.values() if o.side == side]
                    assert list(by_side.values()) == [o for o in want if not o.reduce_only], (
                        f"{acct.name}/{symbol}: margin orders drifted"
                    )
                    assert list(by_side) == sorted(by_side), "margin orders not oldest first"
                    assert all(by_side.get(i) is o for i, o in margin_orders.unpriced.items())
                    k = self.markets[symbol].spec.atoms_per_tick_lot
                    head_lots = margin_orders.closing_lots
                    for o in by_side.values():  # past the head, the rest holds its margin as priced
                        if head_lots <= 0 and o.order_id not in margin_orders.unpriced:
                            assert margin_orders.mark_ticks, f"{o}: priced at no mark"
                            want_atoms = _opening_margin_atoms(
                                o, margin_orders.mark_ticks, margin_orders.leverage, k
                            )
                            assert o.reserved_atoms == want_atoms, f"{o}: margin not as priced"
                        head_lots -= o.remaining_lots
                for o in pos.open_orders.values():
                    assert acct.orders.get(o.order_id) is o
                    resting[symbol].add(o.order_id)
                    assert o.remaining_lots > 0
                    assert o.filled_lots + o.remaining_lots <= o.qty_lots
        assert ledger_sum == 0, f"ledger does not sum to zero: {ledger_sum}"
        assert self.ledger.settlement.balance + cost_sum == 0, "settlement != -open cost basis"
        for symbol, lots in lots_by_symbol.items():
            assert lots == 0, f"{symbol}: long lots != short lots ({lots})"
        assert self.ledger.insurance.balance >= 0, "insurance fund below zero"
        self.liquidator.check()  # the funds' shares split INSURANCE, none below zero
        for symbol in self.markets:
            holders = {
                n
                for n, a in self.accounts.items()
                if (p := a.positions.get(symbol)) and p.size_lots
            }
            assert self.holders[symbol] == holders, f"{symbol}: holder index drifted"
        for symbol, m in self.markets.items():
            m.book.validate_internal_state()
            assert {o.order_id for o in m.book.orders()} == resting[symbol], "book != open orders"
        self.conditionals.check_invariants()

    def conservation_atoms(self) -> tuple[int, int]:
        """(deposits - withdrawals, margin balances incl. uPnL + fees + insurance + funding)."""
        total = 0
        for acct in self.accounts.values():
            total += acct.wallet.balance
            for pos in acct.positions.values():
                total += pos.margin.balance
                if pos.size_lots:
                    spec, mark = self._spec_mark(pos.symbol)
                    total += pos.size_lots * mark * spec.atoms_per_tick_lot - pos.cost_atoms
        lg = self.ledger
        total += lg.fees.balance + lg.insurance.balance + lg.funding.balance
        return -lg.external.balance, total


def _opening_margin_atoms(
    order: Order, mark_ticks: int, leverage: int, atoms_per_tick_lot: int
) -> int:
    """The margin of all of an order's remaining quantity opening: IM at its price plus the
    open loss against the mark (the plain form of what `_reprice_side` inlines)."""
    lots, price_ticks = order.remaining_lots, order.price_ticks
    notional_atoms = lots * price_ticks * atoms_per_tick_lot
    loss_ticks = max(0, order.side * (price_ticks - mark_ticks))
    return div(notional_atoms, leverage, _CEIL) + loss_ticks * lots * atoms_per_tick_lot


def _reprice_side(
    side_orders: MarginOrders,
    free_lots: int,
    side: int,
    mark_ticks: int,
    atoms_per_tick_lot: int,
    leverage: int,
) -> int:
    """Re-price one side's margin orders; returns the change of the sum of their margin.

    Oldest first, the first `free_lots` lots close the position and hold nothing; the rest
    hold IM at the order price plus the open loss against the mark, as `Engine._place_order`
    charges them. At the mark and leverage of the side's last pricing, only the unpriced
    orders and the head that closes now or closed then are visited: every other order already
    holds what it would get (the `MarginOrders` invariant), so the result is the same as
    visiting them all, at the cost of a few orders instead of the whole side.
    """
    unpriced = side_orders.unpriced
    full = side_orders.mark_ticks != mark_ticks or side_orders.leverage != leverage
    if not side_orders.orders or not (free_lots or side_orders.closing_lots or unpriced or full):
        return 0  # nothing closes, now or then, and the rest holds its margin as priced
    k = atoms_per_tick_lot
    delta = 0
    if unpriced:  # all of each opens unless it is in the head, which the walk below re-prices
        for order in unpriced.values():
            opening_lots = order.remaining_lots
            price_ticks = order.price_ticks
            reserved_atoms = -(-(opening_lots * price_ticks * k) // leverage)
            loss_ticks = (price_ticks - mark_ticks) * side
            if loss_ticks > 0:
                reserved_atoms += loss_ticks * opening_lots * k
            delta += reserved_atoms - order.reserved_atoms
            order.reserved_atoms = reserved_atoms
        unpriced.clear()
    if full:
        reach_lots = _EVERY_LOT  # priced at another mark or leverage: visit every order
        side_orders.mark_ticks = mark_ticks
        side_orders.leverage = leverage
    else:  # the lots of the head: closing now or at the last pricing (their share can move)
        reach_lots = side_orders.closing_lots
        if free_lots > reach_lots:
            reach_lots = free_lots
    side_orders.closing_lots = free_lots
    for order in side_orders.orders.values():
        if reach_lots <= 0:
            break  # the rest opens wholly, now as then
        opening_lots = order.remaining_lots
        reach_lots -= opening_lots
        if free_lots:
            if opening_lots <= free_lots:  # closes only
                free_lots -= opening_lots
                if order.reserved_atoms:
                    delta -= order.reserved_atoms
                    order.reserved_atoms = 0
                continue
            opening_lots -= free_lots
            free_lots = 0
        price_ticks = order.price_ticks
        # ceil(notional / leverage), inlined on this hot path (both are positive)
        reserved_atoms = -(-(opening_lots * price_ticks * k) // leverage)
        loss_ticks = (price_ticks - mark_ticks) * side  # a buy above, a sell below the mark
        if loss_ticks > 0:
            reserved_atoms += loss_ticks * opening_lots * k
        delta += reserved_atoms - order.reserved_atoms
        order.reserved_atoms = reserved_atoms
    return delta


SNAPSHOT_VERSION: Final = 5  # 2: liquidation record; 3: oracle state; 4: funding;
# 5: conditional orders (trigger books, exit ladders)


def _spec_from_record(r: list[Any]) -> MarketSpec:
    brackets = tuple(BracketSpec(*b) for b in r[6])
    return MarketSpec(
        symbol=r[0],
        tick_size=Decimal(r[1]),
        step_size=Decimal(r[2]),
        price_precision=r[3],
        quantity_precision=r[4],
        atoms_per_tick_lot=r[5],
        brackets=brackets,
        maker_fee_ppm=r[7],
        taker_fee_ppm=r[8],
        min_notional_atoms=r[9],
        min_price_ticks=r[10],
        max_price_ticks=r[11],
        max_limit_qty_lots=r[12],
        max_market_qty_lots=r[13],
        price_band_ppm=r[14],
        max_open_orders=r[15],
        default_leverage=r[16],
        max_position_lots=r[17],
        _floors=tuple(b.floor_atoms for b in brackets),
    )
