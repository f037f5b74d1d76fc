"""The run's figures, counted from the engine's events as they happen.

Everything here is read off events (and, at the end, the exchange's state): the liquidations
and their notional by side, the insurance fund's path, ADL, funding, the stops that fired and
how far from their stop price they filled, open interest. Integers throughout (ticks, lots,
atoms); `summary()` turns them into the plain numbers of `SimResult.summary`: USDT amounts,
BTC sizes, percentages, counts. `TokenMetrics` does the same for leveraged tokens' pools: their
rebalancing trades, what those cost, and the funding the pools paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from perpex.core.book import SELL
from perpex.core.messages import (
    AutoDeleveraged,
    ConditionalKind,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    Event,
    FundingPaid,
    InsuranceFundChanged,
    LiquidationTriggered,
    PositionChanged,
    TokenRebalanced,
    TokenRebalanceReason,
    TokensCreated,
    TradeExecuted,
)

STRATEGY_ACCOUNT: Final = "strategy"  # perpex.sim.agents.strategy.STRATEGY_ACCOUNT
STOP_KINDS: Final = frozenset(
    {ConditionalKind.STOP_MARKET, ConditionalKind.STOP, ConditionalKind.TRAILING_STOP_MARKET}
)

# The event types `RunMetrics.observe` counts (keep in step with its chain of type tests)
_WATCHED: Final = frozenset(
    {
        TradeExecuted,
        PositionChanged,
        LiquidationTriggered,
        InsuranceFundChanged,
        AutoDeleveraged,
        FundingPaid,
        ConditionalOrderAccepted,
        ConditionalOrderTriggered,
        ConditionalOrderCanceled,
    }
)


@dataclass
class _PendingStop:
    account: str
    side: int
    stop_ticks: int
    step: int
    time_ns: int
    qty_lots: int = 0
    quote_ticks: int = 0  # sum of price x lots of its fills


@dataclass
class RunMetrics:
    """Counters fed with every step's events (`observe`)."""

    symbol: str
    atoms_per_tick_lot: int
    insurance_fund_atoms: int  # the fund's balance before the run
    liquidations: int = 0
    liquidations_long: int = 0
    liquidations_short: int = 0
    long_liquidated_notional_atoms: int = 0
    short_liquidated_notional_atoms: int = 0
    fund_min_atoms: int = 0
    adl_events: int = 0
    adl_notional_atoms: int = 0
    funding_paid_atoms: int = 0
    funding_received_atoms: int = 0
    stops_triggered: int = 0
    strategy_liquidations: int = 0  # of the user's strategy's account ("strategy")
    strategy_stops: int = 0
    trades: int = 0
    traded_notional_atoms: int = 0
    open_interest_lots: int = 0
    positions: dict[str, int] = field(default_factory=dict)  # account -> signed lots
    stop_prices: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    pending_stops: dict[int, _PendingStop] = field(default_factory=dict)  # placed order id ->
    stop_rows: list[tuple[str, int, int, int, int, int, float]] = field(default_factory=list)
    liquidated_now: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.fund_start_atoms = self.insurance_fund_atoms
        self.fund_min_atoms = self.insurance_fund_atoms

    # -- feeding ------------------------------------------------------------------------------
    def observe(self, step: int, time_ns: int, events: Sequence[Event]) -> None:
        k = self.atoms_per_tick_lot
        symbol = self.symbol
        # Most of a step's events are makers' order churn, which counts for nothing here: one
        # set lookup drops them before the chain of type tests below.
        watched = _WATCHED
        for e in [e for e in events if type(e) in watched]:
            cls = type(e)
            if cls is TradeExecuted:
                assert isinstance(e, TradeExecuted)
                if e.symbol != symbol:
                    continue
                notional = e.price_ticks * e.qty_lots * k
                self.trades += 1
                self.traded_notional_atoms += notional
                if e.liquidation:
                    if e.taker_side == SELL:
                        self.long_liquidated_notional_atoms += notional
                    else:
                        self.short_liquidated_notional_atoms += notional
                pending = self.pending_stops.get(e.taker_order_id)
                if pending is not None:
                    pending.qty_lots += e.qty_lots
                    pending.quote_ticks += e.price_ticks * e.qty_lots
            elif cls is PositionChanged:
                assert isinstance(e, PositionChanged)
                if e.symbol != symbol:
                    continue
                old = self.positions.get(e.account, 0)
                self.open_interest_lots += max(e.size_lots, 0) - max(old, 0)
                if e.size_lots:
                    self.positions[e.account] = e.size_lots
                else:
                    self.positions.pop(e.account, None)
            elif cls is LiquidationTriggered:
                assert isinstance(e, LiquidationTriggered)
                if e.symbol != symbol:
                    continue
                self.liquidations += 1
                if e.account == STRATEGY_ACCOUNT:
                    self.strategy_liquidations += 1
                if self.positions.get(e.account, 0) > 0:
                    self.liquidations_long += 1
                else:
                    self.liquidations_short += 1
            elif cls is InsuranceFundChanged:
                assert isinstance(e, InsuranceFundChanged)
                self.insurance_fund_atoms = e.balance_atoms
                self.fund_min_atoms = min(self.fund_min_atoms, e.balance_atoms)
            elif cls is AutoDeleveraged:
                assert isinstance(e, AutoDeleveraged)
                notional = e.price_ticks * e.qty_lots * k
                self.adl_events += 1
                self.adl_notional_atoms += notional
                # the liquidated side's closure that ADL did: liquidated notional too
                if self.positions.get(e.liquidated_account, 0) > 0:
                    self.long_liquidated_notional_atoms += notional
                else:
                    self.short_liquidated_notional_atoms += notional
            elif cls is FundingPaid:
                assert isinstance(e, FundingPaid)
                if e.payment_atoms > 0:
                    self.funding_paid_atoms += e.payment_atoms
                else:
                    self.funding_received_atoms -= e.payment_atoms
            elif cls is ConditionalOrderAccepted:
                assert isinstance(e, ConditionalOrderAccepted)
                if e.kind in STOP_KINDS:
                    self.stop_prices[e.order_id] = (e.account, e.side, e.stop_price_ticks)
            elif cls is ConditionalOrderTriggered:
                assert isinstance(e, ConditionalOrderTriggered)
                stop = self.stop_prices.pop(e.order_id, None)
                if e.kind in STOP_KINDS:
                    self.stops_triggered += 1
                    if e.account == STRATEGY_ACCOUNT:
                        self.strategy_stops += 1
                    if stop is not None and e.placed_order_id is not None:
                        account, side, stop_ticks = stop
                        if e.kind is ConditionalKind.TRAILING_STOP_MARKET:
                            stop_ticks = e.price_ticks  # the trailing stop's own trigger
                        self.pending_stops[e.placed_order_id] = _PendingStop(
                            account, side, stop_ticks, step, time_ns
                        )
            elif cls is ConditionalOrderCanceled:
                assert isinstance(e, ConditionalOrderCanceled)
                self.stop_prices.pop(e.order_id, None)
        if self.pending_stops:  # a stop's market order fills within the step that fired it
            for pending in self.pending_stops.values():
                if pending.qty_lots:
                    fill = pending.quote_ticks / pending.qty_lots
                    sign = 1 if pending.side == SELL else -1  # adverse: a sell below its stop
                    slip = sign * (pending.stop_ticks - fill) / pending.stop_ticks * 10_000
                    self.stop_rows.append(
                        (
                            pending.account,
                            pending.step,
                            pending.time_ns,
                            pending.side,
                            pending.stop_ticks,
                            round(fill),
                            slip,
                        )
                    )
            self.pending_stops.clear()

    # -- the summary --------------------------------------------------------------------------
    def stop_slippage_mean_pct(self) -> float:
        if not self.stop_rows:
            return 0.0
        return sum(r[6] for r in self.stop_rows) / len(self.stop_rows) / 100.0


REBALANCE_REASONS: Final = frozenset({TokenRebalanceReason.DAILY, TokenRebalanceReason.THRESHOLD})


@dataclass
class TokenMetrics:
    """Each leveraged token's figures, from the events (`perpex.core.tokens`), in atoms.

    - `nav_start_atoms`: the NAV its first tokens were minted at (`TokensCreated`);
    - `rebalances`: its pool's rebalancing orders, daily (each TWAP slice counts) and
      threshold, that filled something (creation and redemption trades are not rebalances);
    - `fees_atoms`, `slippage_atoms`: of all the pool's trades, creation and redemption ones
      included (slippage against the mark, > 0 paid);
    - `funding_atoms`: the pool's funding, > 0 paid, < 0 received (`FundingPaid`).
    """

    pools: dict[str, str]  # pool account -> token name
    nav_start_atoms: dict[str, int] = field(default_factory=dict)
    rebalances: dict[str, int] = field(default_factory=dict)
    fees_atoms: dict[str, int] = field(default_factory=dict)
    slippage_atoms: dict[str, int] = field(default_factory=dict)
    funding_atoms: dict[str, int] = field(default_factory=dict)

    def observe(self, events: Sequence[Event]) -> None:
        for e in events:
            cls = type(e)
            if cls is TokenRebalanced:
                assert isinstance(e, TokenRebalanced)
                name = e.token
                if e.reason in REBALANCE_REASONS and e.filled_lots:
                    self.rebalances[name] = self.rebalances.get(name, 0) + 1
                self.fees_atoms[name] = self.fees_atoms.get(name, 0) + e.fee_atoms
                self.slippage_atoms[name] = self.slippage_atoms.get(name, 0) + e.slippage_atoms
            elif cls is FundingPaid:
                assert isinstance(e, FundingPaid)
                name = self.pools.get(e.account, "")
                if name:
                    self.funding_atoms[name] = self.funding_atoms.get(name, 0) + e.payment_atoms
            elif cls is TokensCreated:
                assert isinstance(e, TokensCreated)
                self.nav_start_atoms.setdefault(e.token, e.nav_atoms)


def usdt(atoms: int) -> float:
    """Atoms (1e-6 USDT) as a float of USDT, rounded to the cent (display only)."""
    return float(round(Decimal(atoms).scaleb(-6), 2))


def btc(lots: int, step_size: Decimal) -> float:
    return float(Decimal(lots) * step_size)


def pct(x: float) -> float:
    return round(x, 4)


def ratio_pct(num: int, den: int) -> float:
    return round(100.0 * num / den, 4) if den else 0.0


__all__ = [
    "REBALANCE_REASONS",
    "STOP_KINDS",
    "RunMetrics",
    "TokenMetrics",
    "btc",
    "pct",
    "ratio_pct",
    "usdt",
]
