"""The facade's conversions: a market's scales, and engine records and events to decimal views.

Parsing (decimals to integers) is `perpex.parse`; this module goes the other way, from the
engine's integers (ticks, lots, atoms, ppm, token units, ns) to the `perpex.views` the facade
returns. Prices on a position carry 8 decimals, as Binance's positionRisk shows them (DESIGN.md
§7); times are UTC datetimes (to the microsecond: the ns below it are dropped).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Final

from perpex.core.engine import Engine, Order as EngineOrder
from perpex.core.margin import bankruptcy_price_ticks, liquidation_price_ticks
from perpex.core.markets import MarketSpec
from perpex.core.messages import (
    EndReason,
    Event,
    OrderAccepted,
    OrderCanceled,
    TradeExecuted,
)
from perpex.core.orders import ConditionalOrder, trigger_price_ticks
from perpex.core.tokens import TOKEN_UNITS, TokenState
from perpex.core.units import Rounding, atoms_to_decimal, div
from perpex.parse import UnitScale
from perpex.views import Account, Order, Position, TokenInfo, lazy_order, round_half_even

SHOWN_PRICE_DECIMALS: Final = 8  # positionRisk shows entry/liquidation prices with 8 decimals
CALLBACK_RATE_UNIT: Final = Decimal("0.0001")  # callbackRate is in per cent: 1 ppm = 0.0001 %
SIDE_NAMES: Final = {1: "BUY", -1: "SELL"}
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
TOKEN_DECIMALS: Final = 8  # a token quantity is an integer of 1e-8 token
PPM_DECIMALS: Final = 6  # leverages and rates in ppm
assert 10**TOKEN_DECIMALS == TOKEN_UNITS


class MarketEdge:
    """One market as the edge sees it: its spec and the scales its decimals parse with."""

    __slots__ = ("price", "price_cache", "qty", "qty_cache", "spec", "symbol")

    def __init__(self, spec: MarketSpec) -> None:
        self.spec = spec
        self.symbol = spec.symbol
        self.price = UnitScale(spec.tick_size, spec.price_precision)
        self.qty = UnitScale(spec.step_size, spec.quantity_precision)
        self.price_cache = self.price.cache  # the same dicts, one attribute closer
        self.qty_cache = self.qty.cache


# -- orders ------------------------------------------------------------------------------------
def order_of_record(spec: MarketSpec, o: EngineOrder, status: str | None = None) -> Order:
    """The view of an open book order (NEW or PARTIALLY_FILLED unless `status` says else)."""
    if status is None:
        status = "PARTIALLY_FILLED" if o.filled_lots else "NEW"
    return lazy_order(
        spec,
        o.order_id,
        o.client_order_id,
        status,
        o.reduce_only,
        o.side,
        o.order_type,
        o.time_in_force,
        o.price_ticks,
        o.qty_lots,
        o.filled_lots,
        o.filled_quote_ticks,
    )


def order_of_placement(
    spec: MarketSpec, accepted: OrderAccepted, events: list[Event], record: EngineOrder | None
) -> Order:
    """The view of an order just placed: from its open record if it rests, else from the
    command's events (its trades and how it ended)."""
    oid = accepted.order_id
    if record is not None:
        filled = record.filled_lots
        quote = record.filled_quote_ticks
        status = "PARTIALLY_FILLED" if filled else "NEW"
    else:
        filled = quote = 0
        ended: EndReason | None = None
        for e in events:
            kind = type(e)
            if kind is TradeExecuted:
                assert isinstance(e, TradeExecuted)
                if e.taker_order_id == oid or e.maker_order_id == oid:
                    filled += e.qty_lots
                    quote += e.qty_lots * e.price_ticks
            elif kind is OrderCanceled:
                assert isinstance(e, OrderCanceled)
                if e.order_id == oid:
                    ended = e.reason
        if ended is None:
            if filled == accepted.qty_lots:
                status = "FILLED"
            else:
                status = "PARTIALLY_FILLED" if filled else "NEW"
        else:
            status = "CANCELED" if ended is EndReason.CANCELED else "EXPIRED"
    return lazy_order(
        spec,
        oid,
        accepted.client_order_id,
        status,
        accepted.reduce_only,
        accepted.side,
        accepted.order_type,
        accepted.time_in_force,
        accepted.price_ticks,
        accepted.qty_lots,
        filled,
        quote,
    )


def conditional_view(spec: MarketSpec, o: ConditionalOrder, status: str) -> Order:
    trigger = trigger_price_ticks(o)
    if trigger is None:  # a trailing stop waiting for its activation price
        trigger = o.activation_price_ticks or 0
    return Order(
        order_id=o.order_id,
        client_order_id=o.client_order_id,
        symbol=o.symbol,
        side=SIDE_NAMES[o.side],
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
            None if not o.callback_rate_ppm else Decimal(o.callback_rate_ppm) * CALLBACK_RATE_UNIT
        ),
        activation_price=(
            None
            if o.activation_price_ticks is None
            else spec.price_to_decimal(o.activation_price_ticks)
        ),
    )


# -- positions and accounts --------------------------------------------------------------------
def shown_price(spec: MarketSpec, price_ticks: Fraction | int) -> Decimal:
    """A price in (fractional) ticks with 8 decimals, rounded half-even (display only)."""
    value = Fraction(price_ticks) * Fraction(spec.tick_size) * 10**SHOWN_PRICE_DECIMALS
    scaled = round_half_even(value.numerator, value.denominator)
    return Decimal(scaled).scaleb(-SHOWN_PRICE_DECIMALS)


def position_view(
    engine: Engine, specs: dict[str, MarketSpec], account: str, spec: MarketSpec
) -> Position:
    mark = engine.market(spec.symbol).mark_ticks
    leverage, isolated = engine.settings_of(account, spec.symbol)
    pos = engine.position_of(account, spec.symbol)
    size = pos.size_lots if pos is not None else 0
    cost = pos.cost_atoms if pos is not None else 0
    margin_atoms = pos.margin.balance if pos is not None else 0
    k = spec.atoms_per_tick_lot
    notional = abs(size) * mark * k
    liq = bank = None
    entry = Decimal(0)
    if size:
        entry = shown_price(spec, Fraction(cost, size * k))
        if isolated:
            wallet, other_mm, other_upnl = margin_atoms, 0, 0
        else:
            wallet, other_mm, other_upnl = cross_terms(engine, specs, account, spec.symbol)
        liq_ticks = liquidation_price_ticks(
            spec, size, cost, wallet, other_mm, other_upnl, mark or None
        )
        bank_ticks = bankruptcy_price_ticks(spec, size, cost, wallet, other_upnl)
        if liq_ticks is not None:
            liq = shown_price(spec, liq_ticks)
        if bank_ticks is not None:
            bank = shown_price(spec, bank_ticks)
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
        maintenance_margin=atoms_to_decimal(spec.maintenance_margin_atoms(notional) if size else 0),
        # 1-5 ADL lights (Binance-like: only a profitable position lights up); 0 when flat
        adl_quantile=engine.liquidator.adl_quantile(account, spec.symbol) if size else 0,
    )


def cross_terms(
    engine: Engine, specs: dict[str, MarketSpec], account: str, symbol: str
) -> tuple[int, int, int]:
    """Binance's WB, TMM1, UPNL1: cross wallet, MM and uPnL of the other cross positions."""
    acct = engine.accounts[account]
    other_mm = other_upnl = 0
    for sym, p in acct.positions.items():
        if sym == symbol or p.isolated or not p.size_lots:
            continue
        spec = specs[sym]
        mark = engine.market(sym).mark_ticks
        notional = abs(p.size_lots) * mark * spec.atoms_per_tick_lot
        other_mm += spec.maintenance_margin_atoms(notional)
        other_upnl += p.size_lots * mark * spec.atoms_per_tick_lot - p.cost_atoms
    return acct.wallet.balance, other_mm, other_upnl


def account_view(engine: Engine, account: str) -> Account:
    f = engine.account_figures(account)
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


# -- times and leveraged tokens ----------------------------------------------------------------
def ns_to_datetime(ns: int) -> datetime:
    """The engine's clock (ns since the epoch) as a UTC datetime, to the microsecond."""
    return EPOCH + timedelta(microseconds=ns // 1_000)


def token_units_to_decimal(units: int) -> Decimal:
    return Decimal(units).scaleb(-TOKEN_DECIMALS)


def ppm_to_decimal(ppm: int) -> Decimal:
    return Decimal(ppm).scaleb(-PPM_DECIMALS)


def token_view(engine: Engine, t: TokenState) -> TokenInfo:
    tokens = engine.tokens
    spec = t.spec
    market = engine.market(spec.symbol)
    exposure_atoms = tokens.position_lots(t) * market.mark_ticks * market.spec.atoms_per_tick_lot
    return TokenInfo(
        name=spec.name,
        symbol=spec.symbol,
        target_leverage=ppm_to_decimal(spec.leverage_ppm),
        nav=atoms_to_decimal(tokens.nav_atoms(t)),
        leverage=ppm_to_decimal(tokens.leverage_ppm(t)),
        exposure=atoms_to_decimal(exposure_atoms),
        tokens_outstanding=token_units_to_decimal(t.supply_units),
        pool_equity=atoms_to_decimal(tokens.equity_atoms(t)),
        halted=t.halted,
        # 0 is the engine's "never" (a threshold rebalance at the epoch itself reads the same)
        last_rebalance=ns_to_datetime(t.last_rebalance_ns) if t.last_rebalance_ns else None,
        next_rebalance=ns_to_datetime(t.next_rebalance_ns),
    )
