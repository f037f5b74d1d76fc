"""Commands (imperative, what comes in) and events (past tense, what came out). All frozen.

Units: prices in ticks, sizes in lots, money in atoms. Sides are +1 (BUY) and -1 (SELL).
Commands are what the journal stores; events are recomputed from them on replay. The enums
they carry live in `perpex.core.message_enums` and are re-exported here.
"""

from __future__ import annotations

import msgspec

from perpex.core.message_enums import (
    ConditionalEndReason as ConditionalEndReason,
    ConditionalKind as ConditionalKind,
    EndReason as EndReason,
    FundReason as FundReason,
    OrderType as OrderType,
    Reason as Reason,
    SelfTradePrevention as SelfTradePrevention,
    TimeInForce as TimeInForce,
    TokenRebalanceReason as TokenRebalanceReason,
    WorkingType as WorkingType,
)

# -- shared shapes ---------------------------------------------------------------------------
# The field groups that several messages begin with. A message class names its kind first
# (`Command` or `Event`: the tag, which is the class name, and the array form) and at most one
# shape second. msgspec lays fields out base first, in declaration order, so a message's wire
# form is the shape's fields followed by its own: byte for byte what it was when every class
# spelled its fields out, and journals written then decode unchanged.


class _AccountSymbol(msgspec.Struct, frozen=True):
    account: str
    symbol: str


class _OrderOf(msgspec.Struct, frozen=True):
    order_id: int  # book orders and conditional orders share one counter
    account: str
    symbol: str


class _Transfer(msgspec.Struct, frozen=True):
    account: str
    amount_atoms: int


class _TransferDone(_Transfer, frozen=True):
    wallet_atoms: int  # the cross wallet after the transfer


class _Leverage(_AccountSymbol, frozen=True):
    leverage: int


class _MarginMode(_AccountSymbol, frozen=True):
    isolated: bool


class _IsolatedMarginDelta(_AccountSymbol, frozen=True):
    delta_atoms: int  # > 0 adds from the cross wallet, < 0 returns to it


class _Index(msgspec.Struct, frozen=True):
    symbol: str
    index_ticks: int


class _Prices(_Index, frozen=True):
    mark_ticks: int


# -- commands --------------------------------------------------------------------------------


class Command(msgspec.Struct, frozen=True, tag=True, array_like=True):
    pass


class Deposit(Command, _Transfer, frozen=True):
    """Money from outside into an account's cross wallet."""


class Withdraw(Command, _Transfer, frozen=True):
    """Money from an account's cross wallet to the outside."""


class SetLeverage(Command, _Leverage, frozen=True):
    """The leverage of an account's position in a symbol (its initial margin rate)."""


class SetMarginMode(Command, _MarginMode, frozen=True):
    """Isolated or cross margin for an account's position in a symbol."""


class AdjustIsolatedMargin(Command, _IsolatedMarginDelta, frozen=True):
    """Money between the cross wallet and an isolated position's margin."""


class UpdateIndex(Command, _Index, frozen=True):
    """An index price, given directly (the oracle's sources bypassed)."""


class UpdateSources(Command, frozen=True):
    """Spot quotes of some index sources, stamped with the engine clock (MECHANICS.md §1.6)."""

    symbol: str
    quotes: tuple[tuple[str, int], ...]  # (source name, price in ticks), names unique


class PlaceOrder(Command, _AccountSymbol, frozen=True):
    side: int
    order_type: OrderType
    time_in_force: TimeInForce
    qty_lots: int
    price_ticks: int  # 0 for a market order
    reduce_only: bool = False
    client_order_id: str | None = None
    # Protection at entry: a reduce-only STOP_MARKET / TAKE_PROFIT_MARKET pair (one cancels
    # the other) for the entry's quantity, attached in the same command; 0 = none.
    stop_loss_ticks: int = 0
    take_profit_ticks: int = 0
    protection_working_type: WorkingType = WorkingType.MARK_PRICE
    # At a resting order of its own account (last, so older journals decode unchanged).
    self_trade_prevention: SelfTradePrevention = SelfTradePrevention.EXPIRE_TAKER


class CancelOrder(Command, _AccountSymbol, frozen=True):
    """Cancels an open order or an open conditional order (ids never collide)."""

    order_id: int | None = None
    client_order_id: str | None = None


class PlaceConditionalOrder(Command, _AccountSymbol, frozen=True):
    """A stop, take-profit or trailing stop, resting outside the book until it fires."""

    side: int
    kind: ConditionalKind
    working_type: WorkingType
    qty_lots: int  # 0 with close_position
    stop_price_ticks: int = 0  # every kind but the trailing stop
    limit_price_ticks: int = 0  # STOP and TAKE_PROFIT only
    time_in_force: TimeInForce = TimeInForce.GTC  # of the LIMIT order STOP/TAKE_PROFIT place
    reduce_only: bool = False
    close_position: bool = False
    client_order_id: str | None = None
    callback_rate_ppm: int = 0  # trailing stop only
    activation_price_ticks: int | None = None  # trailing stop only


class PlaceExitLadder(Command, _AccountSymbol, frozen=True):
    """Scale out of a position: reduce-only take-profits for parts of it and a close-position
    stop that moves to break-even (and optionally becomes a trailing stop) as targets fill."""

    targets: tuple[tuple[int, int], ...]  # (trigger price in ticks, fraction in ppm), in order
    stop_price_ticks: int
    move_stop_to_entry_after: int = 1  # targets filled before the stop moves; 0 = never
    trail_after: int = 0  # targets filled before a trailing stop replaces it; 0 = never
    callback_rate_ppm: int = 0  # of that trailing stop
    working_type: WorkingType = WorkingType.MARK_PRICE


class AdvanceClock(Command, frozen=True):
    ts_ns: int


class SetFundingRate(Command, frozen=True):
    """Replay: the rate the settlement at `funding_time_ns` charges instead of the one the
    book's premium gives (e.g. Binance's published history)."""

    symbol: str
    funding_time_ns: int
    rate_e8: int


class DepositInsurance(Command, frozen=True):
    """Money from outside into an insurance fund (its seed, or a top-up): the fund of `symbol`
    (its own, or the common one it draws on), or the common fund for ""."""

    amount_atoms: int
    symbol: str = ""  # last, with a default: journals written before it decode unchanged


class MassQuote(Command, _AccountSymbol, frozen=True):
    """A market maker's whole ladder in one command: cancel every open order of `account` in
    `symbol`, then place `quotes`, each a (side, price in ticks, quantity in lots), in order.

    The whole command is validated first: a known symbol with a mark price, a valid account
    name, at most `MAX_MASS_QUOTES` (perpex.core.mass_quote) quotes, sides +1/-1, prices within the
    market's price range, quantities positive and at most its max limit quantity, and every
    bid strictly below every ask (the ladder never crosses itself). A command failing any of
    these is ONE `RequestRejected` and changes nothing.

    Then every open book order of the account in the symbol is canceled, by id ascending
    (`OrderCanceled`, `EndReason.CANCELED`; conditional orders are untouched), and each quote
    goes through the normal order path as a post-only (GTX) LIMIT order, no client order id.
    Each quote meets every check a single order meets (price band, min notional, open-order
    limit, exposure and leverage caps, margin) on the state the quotes before it left: one
    refused (for margin, the band, a price that would cross the book: `POST_ONLY_WOULD_CROSS`,
    as GTX does here) gets its own `OrderRejected` and the others go on. The cancels stand
    even if every quote is refused. An empty ladder only cancels (no mark price needed): a
    maker pulls out of the book in one command.
    """

    quotes: tuple[tuple[int, int, int], ...]  # (side, price_ticks, qty_lots), in order


class CreateTokens(Command, frozen=True):
    """`account` pays `quote_atoms` for new tokens of `token` at NAV, less the creation fee
    (`perpex.core.tokens`); the pool then trades to its target exposure."""

    account: str
    token: str
    quote_atoms: int


class RedeemTokens(Command, frozen=True):
    """`account` returns `units` of `token` (1e-8 token each) for NAV less the redemption fee;
    the pool first trades away their share of its position."""

    account: str
    token: str
    units: int


class AmendOrder(Command, _AccountSymbol, frozen=True):
    """Binance's Modify Order (PUT /fapi/v1/order): a new price and total quantity for an open
    LIMIT order, found by `order_id` or, when that is None, by `client_order_id`.

    `side` must be the order's own; `qty_lots` is the new original (total) quantity, which
    must exceed what has filled. The order keeps its id, client order id, time in force and
    reduce-only flag. A price change or a larger quantity sends it to the back of its (new)
    level, and a new price that crosses the book trades like a new GTC order would (a GTX
    order is refused instead); a smaller quantity at the same price keeps its place. Every
    check of a new order applies (price range and band, min notional, exposure caps, margin
    for the new size and price); a refusal is one `RequestRejected` and changes nothing.
    `perpex.core.amend` has the rules and the codes.
    """

    order_id: int | None
    client_order_id: str | None
    side: int
    qty_lots: int
    price_ticks: int


AnyCommand = (
    Deposit
    | Withdraw
    | SetLeverage
    | SetMarginMode
    | AdjustIsolatedMargin
    | UpdateIndex
    | UpdateSources
    | PlaceOrder
    | CancelOrder
    | PlaceConditionalOrder
    | PlaceExitLadder
    | AdvanceClock
    | SetFundingRate
    | DepositInsurance
    | MassQuote
    | CreateTokens
    | RedeemTokens
    | AmendOrder
)

# -- events ----------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, tag=True, array_like=True):
    pass


class Deposited(Event, _TransferDone, frozen=True):
    """A `Deposit` booked: `wallet_atoms` is the cross wallet after it."""


class Withdrawn(Event, _TransferDone, frozen=True):
    """A `Withdraw` booked: `wallet_atoms` is the cross wallet after it."""


class RequestRejected(Event, _AccountSymbol, frozen=True):
    """A non-order command the engine refused; nothing changed."""

    reason: Reason


class LeverageChanged(Event, _Leverage, frozen=True):
    """A `SetLeverage` applied."""


class MarginModeChanged(Event, _MarginMode, frozen=True):
    """A `SetMarginMode` applied."""


class IsolatedMarginChanged(Event, _IsolatedMarginDelta, frozen=True):
    """An `AdjustIsolatedMargin` applied: the position's isolated margin after it."""

    isolated_margin_atoms: int


class IndexUpdated(Event, _Prices, frozen=True):
    """A new index (from `UpdateIndex` or `UpdateSources`) and the mark it gave."""


class MarkPriceUpdated(Event, _Prices, frozen=True):
    """The mark moved without an index update: the clock (basis samples, time to funding) or
    trades (the last price is one of the three candidates) moved it."""


class FundingSettled(Event, frozen=True):
    """A funding time of one symbol: every position paid |size| × mark × rate / (1e8 × divisor)
    (a positive rate: longs pay shorts); the rounding dust stayed in the FUNDING bucket."""

    symbol: str
    time_ns: int
    rate_e8: int
    rate_divisor: int
    mark_ticks: int
    premium_e8: int  # the period's average premium (0 for a replayed rate's own premium)
    dust_atoms: int


class FundingPaid(Event, _AccountSymbol, frozen=True):
    time_ns: int
    payment_atoms: int  # > 0 paid, < 0 received
    rate_e8: int
    size_lots: int
    isolated: bool


class ClockAdvanced(Event, frozen=True):
    ts_ns: int


class OrderAccepted(Event, _OrderOf, frozen=True):
    side: int
    order_type: OrderType
    time_in_force: TimeInForce
    qty_lots: int
    price_ticks: int
    reduce_only: bool
    client_order_id: str | None


class OrderRejected(Event, _AccountSymbol, frozen=True):
    client_order_id: str | None
    reason: Reason


class TradeExecuted(Event, frozen=True):
    symbol: str
    trade_id: int
    price_ticks: int
    qty_lots: int
    taker_side: int
    taker_order_id: int
    maker_order_id: int
    taker_account: str
    maker_account: str
    taker_fee_atoms: int
    maker_fee_atoms: int
    taker_realized_pnl_atoms: int
    maker_realized_pnl_atoms: int
    liquidation: bool = False  # the taker is a liquidation order (Binance's forceOrder stream)


class OrderCanceled(Event, _OrderOf, frozen=True):
    """An order left the book (or never rested) with `remaining_lots` unfilled."""

    remaining_lots: int
    reason: EndReason


class PositionChanged(Event, _AccountSymbol, frozen=True):
    size_lots: int
    cost_atoms: int
    isolated_margin_atoms: int


class LiquidationTriggered(Event, _AccountSymbol, frozen=True):
    """A position (isolated) or a cross account reached its maintenance margin at the mark."""

    isolated: bool
    margin_balance_atoms: int  # isolated margin + uPnL, or cross wallet + cross uPnL
    maint_margin_atoms: int  # of the position, or the sum over the cross positions


class InsuranceFundChanged(Event, frozen=True):
    delta_atoms: int  # > 0 into the fund, < 0 paid out
    # After the change, of the fund that changed: the symbol's own fund, or the common one
    # (`LiquidationConfig.fund_symbols`; with one fund for all, the whole INSURANCE bucket).
    balance_atoms: int
    reason: FundReason
    account: str  # the liquidated account it came from or went to
    symbol: str


class AutoDeleveraged(Event, frozen=True):
    """A counterparty's position closed against a liquidated one at its bankruptcy price."""

    symbol: str
    liquidated_account: str
    counterparty_account: str
    qty_lots: int
    price_ticks: int


class MarginCall(Event, _AccountSymbol, frozen=True):
    """The margin ratio (MM / margin balance) crossed the warning level on a mark change.
    `symbol` is the position's (isolated), or the one whose mark moved (cross)."""

    margin_ratio_ppm: int
    isolated: bool


class ConditionalOrderAccepted(Event, _OrderOf, frozen=True):
    side: int
    kind: ConditionalKind
    working_type: WorkingType
    qty_lots: int  # 0 with close_position
    stop_price_ticks: int
    limit_price_ticks: int
    time_in_force: TimeInForce
    reduce_only: bool
    close_position: bool
    client_order_id: str | None
    callback_rate_ppm: int
    activation_price_ticks: int | None
    oco_group: int | None  # members of one group: the first to fire cancels the others


class ConditionalOrderTriggered(Event, _OrderOf, frozen=True):
    """A conditional order fired at `price_ticks` (of its working type) and placed an order;
    `placed_order_id` is None when that order was refused (an `OrderRejected` follows)."""

    kind: ConditionalKind
    working_type: WorkingType
    price_ticks: int
    placed_order_id: int | None


class ConditionalOrderCanceled(Event, _OrderOf, frozen=True):
    reason: ConditionalEndReason


class ExitLadderPlaced(Event, _AccountSymbol, frozen=True):
    target_order_ids: tuple[int, ...]  # in target order
    stop_order_id: int


class ExitLadderStopMoved(Event, _AccountSymbol, frozen=True):
    """The ladder's stop was replaced: to break-even, or by a trailing stop."""

    old_order_id: int
    new_order_id: int
    targets_filled: int


class TokensCreated(Event, frozen=True):
    account: str
    token: str
    quote_atoms: int  # paid, the fee included
    fee_atoms: int
    units: int  # minted
    nav_atoms: int  # per token, at which they were minted


class TokensRedeemed(Event, frozen=True):
    account: str
    token: str
    units: int  # burned
    payout_atoms: int  # units x NAV, before the fee
    fee_atoms: int
    nav_atoms: int


class TokenRebalanced(Event, frozen=True):
    """A leveraged token's pool traded through the book."""

    token: str
    reason: TokenRebalanceReason
    side: int
    qty_lots: int  # asked for
    filled_lots: int
    quote_ticks: int  # sum of price x lots of the fills (average = quote_ticks / filled_lots)
    mark_ticks: int
    fee_atoms: int
    slippage_atoms: int  # paid over the mark (> 0) or gained (< 0)
    leverage_ppm_before: int
    leverage_ppm_after: int
    nav_atoms: int  # per token, after the trade


class TokenHalted(Event, frozen=True):
    """The pool has no equity left: creation and redemption stop until NAV is known again."""

    token: str
    equity_atoms: int


class TokenResumed(Event, frozen=True):
    token: str
    nav_atoms: int


class OrderAmended(Event, _OrderOf, frozen=True):
    """An `AmendOrder` applied: the order's price and total quantity now and before, and what
    had filled before it (`qty_lots - filled_lots` is what the amended order offers). Its
    trades, and its end if it filled or expired, follow as for a new order."""

    side: int
    client_order_id: str | None
    price_ticks: int
    qty_lots: int  # the new original (total) quantity
    filled_lots: int
    old_price_ticks: int
    old_qty_lots: int


AnyEvent = (
    Deposited
    | Withdrawn
    | RequestRejected
    | LeverageChanged
    | MarginModeChanged
    | IsolatedMarginChanged
    | IndexUpdated
    | MarkPriceUpdated
    | FundingSettled
    | FundingPaid
    | ClockAdvanced
    | OrderAccepted
    | OrderRejected
    | TradeExecuted
    | OrderCanceled
    | PositionChanged
    | LiquidationTriggered
    | InsuranceFundChanged
    | AutoDeleveraged
    | MarginCall
    | ConditionalOrderAccepted
    | ConditionalOrderTriggered
    | ConditionalOrderCanceled
    | ExitLadderPlaced
    | ExitLadderStopMoved
    | TokensCreated
    | TokensRedeemed
    | TokenRebalanced
    | TokenHalted
    | TokenResumed
    | OrderAmended
)
