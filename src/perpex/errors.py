"""The one table that turns engine refusals into Binance error codes and wording.

Codes and messages follow Binance USDⓈ-M (../shared/BINANCE_API.md §5.4); the engine knows
only `Reason` values, the edge (facade, server) speaks Binance.
"""

from __future__ import annotations

from perpex.core.messages import Reason


class ExchangeError(Exception):
    """A refused call: `.code` is Binance's (negative) error code, `.msg` its message.

    `.index`: for a batch (`Exchange.submit`), the position of the command refused."""

    index: int | None = None

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code = code
        self.msg = msg

    def __reduce__(self) -> tuple[type[ExchangeError], tuple[int, str]]:
        return (ExchangeError, (self.code, self.msg))


REASON_CODES: dict[Reason, tuple[int, str]] = {
    Reason.UNKNOWN_SYMBOL: (-1121, "Invalid symbol."),
    Reason.NO_MARK_PRICE: (-1000, "No mark price for this symbol yet; set the index price first."),
    Reason.INSUFFICIENT_MARGIN: (-2019, "Margin is insufficient."),
    Reason.REDUCE_ONLY_REJECTED: (-2022, "ReduceOnly Order is rejected."),
    Reason.POST_ONLY_WOULD_CROSS: (
        -5022,
        "Due to the order could not be executed as maker, the Post Only order will be rejected.",
    ),
    Reason.FOK_NOT_FILLABLE: (
        -5021,
        "Due to the order could not be filled immediately, the FOK order has been rejected.",
    ),
    Reason.UNKNOWN_ORDER: (-2011, "Unknown order sent."),
    Reason.TOO_MANY_OPEN_ORDERS: (-2025, "Reach max open order limit."),
    Reason.MIN_NOTIONAL: (
        -4164,
        "Order's notional must be no smaller than {min_notional} (unless you choose reduce only).",
    ),
    Reason.INSUFFICIENT_BALANCE: (-2018, "Balance is insufficient."),
    Reason.INVALID_LEVERAGE: (-4028, "Leverage {leverage} is not valid"),
    Reason.POSITION_OVER_LEVERAGE_CAP: (
        -2027,
        "Exceeded the maximum allowable position at current leverage.",
    ),
    Reason.POSITION_BOUND: (-2027, "Exceeded the maximum allowable position at current leverage."),
    Reason.MARGIN_TYPE_UNCHANGED: (-4046, "No need to change margin type."),
    Reason.MARGIN_TYPE_OPEN_ORDERS: (
        -4047,
        "Margin type cannot be changed if there exists open orders.",
    ),
    Reason.MARGIN_TYPE_POSITION: (-4048, "Margin type cannot be changed if there exists position."),
    Reason.PRICE_ABOVE_BAND: (-4016, "Limit price can't be higher than {band_price}."),
    Reason.PRICE_BELOW_BAND: (-4024, "Limit price can't be lower than {band_price}."),
    Reason.QTY_ABOVE_MAX: (-4005, "Quantity greater than max quantity."),
    Reason.DUPLICATE_CLIENT_ORDER_ID: (-4116, "ClientOrderId is duplicated."),
    Reason.PRICE_OUT_OF_RANGE: (-4013, "Price less than min price or greater than max price."),
    Reason.NO_ISOLATED_POSITION: (-4054, "Cannot add position margin: position is 0."),
    Reason.ISOLATED_BALANCE_INSUFFICIENT: (-4051, "Isolated balance insufficient."),
    Reason.CROSS_BALANCE_INSUFFICIENT: (-4050, "Cross balance insufficient."),
    Reason.INVALID_AMOUNT: (-1013, "Invalid amount."),
    Reason.CLOCK_BACKWARDS: (-1021, "Timestamp is before the exchange clock."),
    Reason.UNKNOWN_ACCOUNT: (-1100, "Illegal characters found in parameter 'account'."),
    Reason.UNKNOWN_INDEX_SOURCE: (-1130, "Data sent for parameter 'sources' is not valid."),
    Reason.TIME_STEP_TOO_LARGE: (-1130, "Data sent for parameter 'seconds' is not valid."),
    Reason.INVALID_FUNDING_RATE: (-1130, "Data sent for parameter 'fundingRate' is not valid."),
    # Conditional orders (perpex.core.orders.ConditionalReject, BINANCE_API.md §4.4, §5.4).
    Reason.WOULD_IMMEDIATELY_TRIGGER: (-2021, "Order would immediately trigger."),
    Reason.INVALID_CALLBACK_RATE: (-2007, "Invalid callBack rate."),
    Reason.INVALID_ACTIVATION_PRICE: (-4135, "Invalid activation price"),
    Reason.STOP_PRICE_MISSING: (
        -1102,
        "Mandatory parameter 'triggerPrice' was not sent, was empty/null, or malformed.",
    ),
    Reason.LIMIT_PRICE_MISSING: (
        -1102,
        "Mandatory parameter 'price' was not sent, was empty/null, or malformed.",
    ),
    Reason.CALLBACK_RATE_MISSING: (
        -1102,
        "Mandatory parameter 'callbackRate' was not sent, was empty/null, or malformed.",
    ),
    Reason.STOP_PRICE_NOT_REQUIRED: (-1106, "Parameter 'triggerPrice' sent when not required."),
    Reason.LIMIT_PRICE_NOT_REQUIRED: (-1106, "Parameter 'price' sent when not required."),
    Reason.CALLBACK_RATE_NOT_REQUIRED: (-1106, "Parameter 'callbackRate' sent when not required."),
    Reason.ACTIVATION_PRICE_NOT_REQUIRED: (
        -1106,
        "Parameter 'activatePrice' sent when not required.",
    ),
    Reason.CLOSE_POSITION_NOT_ALLOWED: (-1106, "Parameter 'closePosition' sent when not required."),
    Reason.REDUCE_ONLY_WITH_CLOSE_POSITION: (
        -1106,
        "Parameter 'reduceOnly' sent when not required.",
    ),
    Reason.QTY_WITH_CLOSE_POSITION: (
        -4137,
        "Quantity must be zero with closePosition equals true",
    ),
    Reason.QTY_NOT_POSITIVE: (-4003, "Quantity less than or equal to zero."),
    Reason.TOO_MANY_STOP_ORDERS: (-4045, "Reach max stop order limit."),
    Reason.INVALID_EXIT_LADDER: (-1130, "Data sent for parameter 'targets' is not valid."),
    Reason.EXIT_LADDER_EXISTS: (
        -2010,
        "NEW_ORDER_REJECTED: an exit ladder is already open for this position.",
    ),
    # An engine limit, coded like the others (-1130): deposits less withdrawals, the insurance
    # funds' included, may not pass 2^62 atoms (4,611,686,018,427.387904 USDT), so that every
    # stored integer fits the state hash's and the snapshot's 64-bit encoding.
    Reason.TOTAL_DEPOSITS_LIMIT: (
        -1130,
        "Data sent for parameter 'amount' is not valid: the exchange's total deposits would "
        "exceed its limit.",
    ),
    # Mass quotes (perpex.core.mass_quote): the ladder as a whole is malformed.
    Reason.INVALID_QUOTE_COUNT: (-1130, "Data sent for parameter 'quotes' is not valid."),
    Reason.INVALID_QUOTE_SIDE: (-1117, "Invalid side."),
    Reason.QUOTES_CROSS: (
        -1130,
        "Data sent for parameter 'quotes' is not valid: a bid is not below every ask.",
    ),
    # Leveraged tokens (Binance's BLVT endpoints answer -1121-like and -2010-like errors).
    Reason.UNKNOWN_TOKEN: (-1121, "Invalid token."),
    Reason.TOKEN_HALTED: (
        -2010,
        "NEW_ORDER_REJECTED: the token is halted: its NAV is not known until the next rebalance.",
    ),
    Reason.TOKEN_BALANCE_INSUFFICIENT: (-2019, "Token balance is insufficient."),
    # Order amendment (perpex.core.amend has why each code). Binance answers a modify of an
    # order that is not open with -2013 (-2011 is the cancel's), and has codes of its own for
    # an amendment that changes nothing (-5027) and for its min notional (-5029).
    Reason.ORDER_DOES_NOT_EXIST: (-2013, "Order does not exist."),
    Reason.AMEND_SIDE_MISMATCH: (
        -1130,
        "Data sent for parameter 'side' is not valid: it must be the order's side.",
    ),
    Reason.AMEND_QTY_NOT_ABOVE_FILLED: (
        -4003,
        "Quantity less than or equal to the executed quantity.",
    ),
    Reason.AMEND_NO_CHANGE: (-5027, "No need to modify the order."),
    Reason.AMEND_MIN_NOTIONAL: (-5029, "Order's notional must be no smaller than {min_notional}"),
}


def error_for(reason: Reason, **fields: object) -> ExchangeError:
    code, template = REASON_CODES[reason]
    return ExchangeError(code, template.format(**fields) if fields else template)


# Parameter-level errors raised at the edge before the engine sees anything.
def invalid_symbol() -> ExchangeError:
    return ExchangeError(-1121, "Invalid symbol.")


def mandatory(param: str) -> ExchangeError:
    return ExchangeError(
        -1102, f"Mandatory parameter '{param}' was not sent, was empty/null, or malformed."
    )


def not_required(param: str) -> ExchangeError:
    return ExchangeError(-1106, f"Parameter '{param}' sent when not required.")


def too_precise() -> ExchangeError:
    return ExchangeError(-1111, "Precision is over the maximum defined for this asset.")
