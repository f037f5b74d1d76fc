"""What the facade returns: frozen views of orders, positions, accounts, funding, the fund and
leveraged tokens.

Decimals out, as DESIGN.md §7 promises. An `Order` from the hot path (`place_order`,
`cancel_order`) is built cheaply: its id, status, client order id and reduce-only flag are
set, and the rest (side, type and time in force names; price, orig_qty, executed_qty and
avg_price) is computed from the engine's integers the first time one of them is read, so a
caller who only wants `order_id` and `status` never pays for them. The type, the fields, their
values, equality, hashing, `repr`, pickling and `dataclasses.replace` are those of an ordinary
frozen dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from perpex.core.markets import MarketSpec
from perpex.core.messages import OrderType, TimeInForce

AVG_PRICE_DECIMALS: Final = 8  # Binance shows avgPrice with up to 8 decimals
_LAZY: Final = "_lazy"
_LAZY_FIELDS: Final = frozenset(
    {"side", "type", "time_in_force", "price", "orig_qty", "executed_qty", "avg_price"}
)


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

    def __getattr__(self, name: str) -> Any:
        # Reached only when an attribute is missing: the fields of a lazily built view.
        if name in _LAZY_FIELDS:
            fields = self.__dict__
            lazy = fields.pop(_LAZY, None)
            if lazy is not None:
                fields.update(_lazy_fields(*lazy))
            if name in fields:
                return fields[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __getstate__(self) -> dict[str, Any]:
        for name in _LAZY_FIELDS:  # materialize: a pickle or copy carries plain fields
            getattr(self, name)
        return dict(self.__dict__)


def _lazy_fields(
    spec: MarketSpec,
    side: int,
    order_type: OrderType,
    time_in_force: TimeInForce,
    price_ticks: int,
    qty_lots: int,
    filled_lots: int,
    quote_ticks: int,
) -> dict[str, object]:
    return {
        "side": "BUY" if side > 0 else "SELL",
        "type": order_type.name,
        "time_in_force": time_in_force.name,
        "price": spec.price_to_decimal(price_ticks),
        "orig_qty": spec.qty_to_decimal(qty_lots),
        "executed_qty": spec.qty_to_decimal(filled_lots),
        "avg_price": avg_price(spec, quote_ticks, filled_lots),
    }


def avg_price(spec: MarketSpec, quote_ticks: int, lots: int) -> Decimal:
    """quote_ticks × tick / lots, rounded half-even to 8 decimals (display only), in integers."""
    if not lots:
        return Decimal(0)
    _, digits, exponent = spec.tick_size.as_tuple()
    assert isinstance(exponent, int)
    tick_num = int("".join(map(str, digits)))
    numerator = quote_ticks * tick_num
    denominator = lots
    shift = exponent + AVG_PRICE_DECIMALS  # tick = tick_num × 10^exponent
    if shift >= 0:
        numerator *= 10**shift
    else:
        denominator *= 10**-shift
    return Decimal(round_half_even(numerator, denominator)).scaleb(-AVG_PRICE_DECIMALS)


def round_half_even(numerator: int, denominator: int) -> int:
    """numerator / denominator (denominator > 0) rounded half to even, as `round(Fraction)`."""
    q, r = divmod(numerator, denominator)
    twice = 2 * r
    if twice > denominator or (twice == denominator and q & 1):
        q += 1
    return q


_new = object.__new__
_set = object.__setattr__


def lazy_order(
    spec: MarketSpec,
    order_id: int,
    client_order_id: str | None,
    status: str,
    reduce_only: bool,
    side: int,
    order_type: OrderType,
    time_in_force: TimeInForce,
    price_ticks: int,
    qty_lots: int,
    filled_lots: int,
    quote_ticks: int,
) -> Order:
    """An `Order` of a plain (book) order: id, status and the fields the engine hands over as
    they are; names and decimals made when first read."""
    order = _new(Order)
    _set(
        order,
        "__dict__",
        {
            "order_id": order_id,
            "client_order_id": client_order_id,
            "symbol": spec.symbol,
            "status": status,
            "reduce_only": reduce_only,
            _LAZY: (
                spec, side, order_type, time_in_force, price_ticks, qty_lots, filled_lots,
                quote_ticks,
            ),
        },
    )  # fmt: skip
    return order


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


@dataclass(frozen=True)
class TokenInfo:
    """A leveraged token now (`Exchange.token`): its NAV and its pool, at the mark."""

    name: str
    symbol: str
    target_leverage: Decimal  # signed: 3 for BTCUP3, -3 for BTCDOWN3
    nav: Decimal  # USDT per token (pool equity / tokens outstanding, rounded down to the atom)
    leverage: Decimal  # the pool's actual signed leverage (exposure / equity), 0 without equity
    exposure: Decimal  # USDT, signed: the pool's position x the mark
    tokens_outstanding: Decimal
    pool_equity: Decimal  # USDT: the pool's wallet + unrealized PnL at the mark
    halted: bool  # creation and redemption refused until NAV is known again
    last_rebalance: datetime | None  # the last daily or threshold rebalance (UTC), or None
    next_rebalance: datetime  # the next daily rebalance (UTC)


__all__ = [
    "Account",
    "FundingPayment",
    "FundingRate",
    "InsuranceFundChange",
    "Order",
    "Position",
    "TokenInfo",
    "avg_price",
    "lazy_order",
]
