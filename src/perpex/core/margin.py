"""Initial and maintenance margin, and the liquidation and bankruptcy prices they imply.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. Rounding: margin up
(in favour of the exchange). Liquidation and bankruptcy prices are exact rationals (ticks);
they are shown with 8 decimals and never rounded to the tick; the trigger compares the mark
exactly (MECHANICS.md §1.4-1.5).
"""

from __future__ import annotations

from fractions import Fraction

from perpex.core.markets import BracketSpec, MarketSpec
from perpex.core.units import PPM, Rounding, div


def initial_margin_atoms(notional_atoms: int, leverage: int) -> int:
    """IM = notional / leverage, rounded up."""
    return div(notional_atoms, leverage, Rounding.CEIL)


def unrealized_pnl_atoms(spec: MarketSpec, size_lots: int, cost_atoms: int, mark_ticks: int) -> int:
    """uPnL = size x mark - cost basis (signed size, signed cost: longs paid, shorts received)."""
    return size_lots * mark_ticks * spec.atoms_per_tick_lot - cost_atoms


def _solve(
    spec: MarketSpec,
    size_lots: int,
    cost_atoms: int,
    other_equity_atoms: int,
    bracket: BracketSpec | None,
) -> Fraction | None:
    """Mark (ticks) where equity = MM with the given bracket (MM = 0 when bracket is None).

    equity(P) = other + size*P*k - cost;  MM(P) = |size|*P*k*mmr - cum.  Solved for P.
    """
    k = spec.atoms_per_tick_lot
    mmr = Fraction(bracket.mmr_ppm, PPM) if bracket else Fraction(0)
    cum = bracket.cum_atoms if bracket else 0
    denominator = abs(size_lots) * k * mmr - size_lots * k
    if denominator == 0:
        return None
    return (other_equity_atoms - cost_atoms + cum) / denominator


def liquidation_price_ticks(
    spec: MarketSpec,
    size_lots: int,
    cost_atoms: int,
    wallet_atoms: int,
    other_maint_margin_atoms: int = 0,
    other_upnl_atoms: int = 0,
    mark_ticks: int | None = None,
) -> Fraction | None:
    """Binance's one-way liquidation price with the bracket re-check (MECHANICS.md §1.4).

    wallet_atoms is WB: the isolated margin of the position, or the cross wallet balance;
    the other-contract terms (TMM1, UPNL1) are zero in isolated mode. The bracket is the one
    of the notional *at the liquidation price*: every bracket is tried and the self-consistent
    solution is kept (the one nearest the mark when more than one is). None when no positive
    price liquidates.
    """
    if size_lots == 0:
        return None
    other = wallet_atoms - other_maint_margin_atoms + other_upnl_atoms
    k = spec.atoms_per_tick_lot
    solutions: list[Fraction] = []
    for bracket in spec.brackets:
        price = _solve(spec, size_lots, cost_atoms, other, bracket)
        if price is None or price <= 0:
            continue
        notional = abs(size_lots) * price * k
        lo, hi = bracket.floor_atoms, bracket.cap_atoms
        in_bracket = lo <= notional and (notional < hi or bracket is spec.brackets[-1])
        if in_bracket:
            solutions.append(price)
    if not solutions:
        return None
    if mark_ticks is None:
        # Long: the highest price that liquidates comes first as the mark falls.
        return max(solutions) if size_lots > 0 else min(solutions)
    return min(solutions, key=lambda p: (abs(p - mark_ticks), p))


def bankruptcy_price_ticks(
    spec: MarketSpec,
    size_lots: int,
    cost_atoms: int,
    wallet_atoms: int,
    other_upnl_atoms: int = 0,
) -> Fraction | None:
    """Mark (ticks) where the margin behind the position is exactly zero (MECHANICS.md §1.5)."""
    if size_lots == 0:
        return None
    price = _solve(spec, size_lots, cost_atoms, wallet_atoms + other_upnl_atoms, None)
    if price is None or price <= 0:
        return None
    return price
