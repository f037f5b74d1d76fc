"""The enumerations that commands and events carry: why the engine refused a command, order
types and times in force, conditional kinds and working types, why an order or a conditional
order ended, why the insurance fund moved, why a leveraged token's pool traded.

Integer enums: their values are what the journal and the state hash store, so a value is
never renumbered. `perpex.core.messages` re-exports every one of them.
"""

from __future__ import annotations

import enum


class Reason(enum.IntEnum):
    """Why the engine refused a command. The edge maps each one to a Binance code and text."""

    UNKNOWN_SYMBOL = 1
    NO_MARK_PRICE = 2
    INSUFFICIENT_MARGIN = 3
    REDUCE_ONLY_REJECTED = 4
    POST_ONLY_WOULD_CROSS = 5
    FOK_NOT_FILLABLE = 6
    UNKNOWN_ORDER = 7
    TOO_MANY_OPEN_ORDERS = 8
    MIN_NOTIONAL = 9
    INSUFFICIENT_BALANCE = 10
    INVALID_LEVERAGE = 11
    POSITION_OVER_LEVERAGE_CAP = 12
    MARGIN_TYPE_UNCHANGED = 13
    MARGIN_TYPE_OPEN_ORDERS = 14
    MARGIN_TYPE_POSITION = 15
    PRICE_ABOVE_BAND = 16
    PRICE_BELOW_BAND = 17
    QTY_ABOVE_MAX = 18
    DUPLICATE_CLIENT_ORDER_ID = 19
    PRICE_OUT_OF_RANGE = 20
    NO_ISOLATED_POSITION = 21
    ISOLATED_BALANCE_INSUFFICIENT = 22
    CROSS_BALANCE_INSUFFICIENT = 23
    INVALID_AMOUNT = 24
    POSITION_BOUND = 25
    CLOCK_BACKWARDS = 26
    UNKNOWN_ACCOUNT = 27
    UNKNOWN_INDEX_SOURCE = 28
    TIME_STEP_TOO_LARGE = 29
    INVALID_FUNDING_RATE = 30
    # Conditional orders (perpex.core.conditional), numbered from 101 so that reasons added
    # elsewhere in the meantime never collide with them.
    WOULD_IMMEDIATELY_TRIGGER = 101
    INVALID_CALLBACK_RATE = 102
    INVALID_ACTIVATION_PRICE = 103
    STOP_PRICE_MISSING = 104
    LIMIT_PRICE_MISSING = 105
    CALLBACK_RATE_MISSING = 106
    STOP_PRICE_NOT_REQUIRED = 107
    LIMIT_PRICE_NOT_REQUIRED = 108
    CALLBACK_RATE_NOT_REQUIRED = 109
    ACTIVATION_PRICE_NOT_REQUIRED = 110
    CLOSE_POSITION_NOT_ALLOWED = 111
    REDUCE_ONLY_WITH_CLOSE_POSITION = 112
    QTY_WITH_CLOSE_POSITION = 113
    QTY_NOT_POSITIVE = 114
    TOO_MANY_STOP_ORDERS = 115
    INVALID_EXIT_LADDER = 116
    EXIT_LADDER_EXISTS = 117
    # The money on the exchange would pass what its state can store (`store.MAX_TOTAL_ATOMS`).
    TOTAL_DEPOSITS_LIMIT = 118
    # Mass quotes (perpex.core.mass_quote): the whole command refused, nothing changed.
    INVALID_QUOTE_COUNT = 119  # no quotes, or more than `MAX_MASS_QUOTES`
    INVALID_QUOTE_SIDE = 120  # a side other than +1 / -1
    QUOTES_CROSS = 121  # a bid at or above an ask of the same ladder
    # Leveraged tokens (perpex.core.tokens).
    UNKNOWN_TOKEN = 122
    TOKEN_HALTED = 123  # the pool lost its equity: NAV unknown until a daily rebalance
    TOKEN_BALANCE_INSUFFICIENT = 124  # redeeming more tokens than held
    # Order amendment (perpex.core.amend, Binance's Modify Order).
    ORDER_DOES_NOT_EXIST = 125  # no open order of that id or client id, in that symbol
    AMEND_SIDE_MISMATCH = 126  # the side sent is not the order's
    AMEND_QTY_NOT_ABOVE_FILLED = 127  # the new total quantity <= what has filled
    AMEND_NO_CHANGE = 128  # the same price and quantity as the order has
    AMEND_MIN_NOTIONAL = 129  # the amended order's notional below the market's minimum


class OrderType(enum.IntEnum):
    LIMIT = 1
    MARKET = 2


class TimeInForce(enum.IntEnum):
    GTC = 1
    IOC = 2
    FOK = 3
    GTX = 4  # post-only


class ConditionalKind(enum.IntEnum):
    """Conditional order types (Binance USDⓈ-M; the rules are in `perpex.core.orders`)."""

    STOP_MARKET = 1
    STOP = 2  # stop-limit
    TAKE_PROFIT_MARKET = 3
    TAKE_PROFIT = 4  # take-profit limit
    TRAILING_STOP_MARKET = 5


class WorkingType(enum.IntEnum):
    """Which price a conditional order watches."""

    MARK_PRICE = 1
    CONTRACT_PRICE = 2  # the last trade price


class ConditionalEndReason(enum.IntEnum):
    """Why a conditional order left its trigger book without firing."""

    CANCELED = 1  # by its owner
    OCO = 2  # the other member of its one-cancels-the-other pair fired
    POSITION_CLOSED = 3  # reduce-only / close-position, and the position went to zero
    ENTRY_ENDED = 4  # attached to an entry order that ended without opening a position
    REPLACED = 5  # an exit ladder moved its stop (break-even, trailing)


class SelfTradePrevention(enum.IntEnum):
    """What a taker does when it reaches a resting order of its own account (Binance's
    `selfTradePreventionMode`; the mode of the taker decides, a resting order's is not
    looked at). The values are `perpex.core.book`'s EXPIRE_* constants."""

    EXPIRE_TAKER = 0  # the taker's rest expires there; the fills before it stand (default)
    EXPIRE_MAKER = 1  # that resting order expires and matching goes on
    EXPIRE_BOTH = 2  # that resting order and the taker's rest both expire


class EndReason(enum.IntEnum):
    """Why an order left the book without filling completely."""

    CANCELED = 1  # by its owner
    IOC_REMAINDER = 2  # IOC/FOK/market rest that found no liquidity
    SELF_TRADE = 3  # self-trade prevention: the taker's rest, or its own resting order
    PRICE_BAND = 4  # a market order reached the edge of the price band
    REDUCE_ONLY = 5  # a reduce-only order that no longer reduces anything
    LIQUIDATION = 6  # canceled because its account is being liquidated
    AUTO_DELEVERAGE = 7  # canceled because its position is being auto-deleveraged
    BANKRUPTCY = 8  # the rest would close the position past its bankruptcy price


class TokenRebalanceReason(enum.IntEnum):
    """Why a leveraged token's pool traded (`TokenRebalanced`)."""

    DAILY = 1  # the daily rebalance (or one slice of its TWAP)
    THRESHOLD = 2  # the leverage reached target x (1 + threshold) at a mark publication
    CREATION = 3  # new tokens: the pool buys exposure for its new equity
    REDEMPTION = 4  # redeemed tokens: the pool sells their share of its position


class FundReason(enum.IntEnum):
    """Why the insurance fund's balance moved (`InsuranceFundChanged`)."""

    CLEARANCE_FEE = 1  # the clearance fee of a liquidation closed better than bankruptcy
    LIQUIDATION_SURPLUS = 2  # the rest of what the fills made over the bankruptcy price
    LIQUIDATION_DEFICIT = 3  # paid to a trader closed past bankruptcy (negative delta)
    DEPOSIT = 4  # money from outside (`DepositInsurance`)


__all__ = [
    "ConditionalEndReason",
    "ConditionalKind",
    "EndReason",
    "FundReason",
    "OrderType",
    "Reason",
    "SelfTradePrevention",
    "TimeInForce",
    "TokenRebalanceReason",
    "WorkingType",
]
