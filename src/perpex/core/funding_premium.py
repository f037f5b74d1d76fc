"""The premium of a book over the index and the funding rate it gives: impact prices walked
from the book's depth, one premium sample, and the rate formula (MECHANICS.md §1.7).

Units: prices in ticks, money in atoms, premiums and rates in 1e-8 (`FUNDING_RATE_SCALE`).
Impact prices are exact rationals in ticks, `(numerator, denominator > 0)`, as in oracle.py.
A premium sample is truncated toward zero and clamped to ±100 % (see `perpex.core.funding`).
"""

from __future__ import annotations

from math import gcd
from typing import TYPE_CHECKING, Final, Protocol

from perpex.core.funding_config import MAX_SAMPLE_PREMIUM_E8, FundingConfig, ImpactShortfall
from perpex.core.oracle import FUNDING_RATE_SCALE
from perpex.core.units import Rounding, div

if TYPE_CHECKING:
    from collections.abc import Sequence

    from perpex.core.markets import MarketSpec

MAX_IMPACT_LEVELS: Final = 10_000  # book levels walked per side for one impact price

# A rational price in ticks: (numerator, denominator > 0).
Ratio = tuple[int, int]


class DepthSource(Protocol):
    """What the premium needs of a book: OrderBook.depth (and the tests' ReferenceBook)."""

    def depth(self, levels: int = 20) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]: ...


def _reduced(numerator: int, denominator: int) -> Ratio:
    g = gcd(numerator, denominator)
    # Exact: g divides both.
    return div(numerator, g, Rounding.TRUNC), div(denominator, g, Rounding.TRUNC)


def _impact_price(
    levels: Sequence[tuple[int, int]], target_atoms: int, k: int, allow_partial: bool
) -> tuple[Ratio | None, bool]:
    """(average fill price of `target_atoms` of notional over `levels`, whether more levels
    could help). The last level is taken in part, by notional, so a fill may end between lots:
    the average is target / base quantity = N·p / (k·p·Q + R) ticks, exactly."""
    filled_atoms = 0
    full_lots = 0
    for price_ticks, lots in levels:
        level_atoms = price_ticks * lots * k
        if filled_atoms + level_atoms >= target_atoms:
            rest_atoms = target_atoms - filled_atoms
            return _reduced(
                target_atoms * price_ticks, k * price_ticks * full_lots + rest_atoms
            ), False
        filled_atoms += level_atoms
        full_lots += lots
    if allow_partial and full_lots:
        return _reduced(filled_atoms, k * full_lots), True
    return None, True


def impact_prices(
    book: DepthSource,
    impact_notional_atoms: int,
    atoms_per_tick_lot: int,
    *,
    allow_partial: bool = False,
) -> tuple[Ratio | None, Ratio | None]:
    """(impact bid, impact ask): the average price of a market sell / buy of the impact notional.

    Walks the book level by level, best first, through its public `depth`. A side that cannot
    fill the notional within `MAX_IMPACT_LEVELS` levels is None, unless `allow_partial`, when
    it is the average of all its depth (None only if the side is empty).
    """
    if impact_notional_atoms <= 0 or atoms_per_tick_lot <= 0:
        raise ValueError("impact notional and atoms_per_tick_lot must be positive")
    levels = 16
    bid: Ratio | None = None
    ask: Ratio | None = None
    bid_done = ask_done = False
    while True:
        bids, asks = book.depth(levels)
        if not bid_done:
            bid, more = _impact_price(bids, impact_notional_atoms, atoms_per_tick_lot, False)
            bid_done = not more or len(bids) < levels
        if not ask_done:
            ask, more = _impact_price(asks, impact_notional_atoms, atoms_per_tick_lot, False)
            ask_done = not more or len(asks) < levels
        if (bid_done and ask_done) or levels >= MAX_IMPACT_LEVELS:
            break
        levels = min(4 * levels, MAX_IMPACT_LEVELS)
    if allow_partial:
        if bid is None:
            bid, _ = _impact_price(bids, impact_notional_atoms, atoms_per_tick_lot, True)
        if ask is None:
            ask, _ = _impact_price(asks, impact_notional_atoms, atoms_per_tick_lot, True)
    return bid, ask


def premium_e8(impact_bid: Ratio, impact_ask: Ratio, index_ticks: int) -> int:
    """P = [max(0, bid − index) − max(0, index − ask)] / index in 1e-8, truncated toward zero.

    At most one term is non-zero for a bid below the ask; for a crossed pair (bid ≥ ask) both
    may be, and the formula is applied as written.
    """
    if index_ticks <= 0:
        raise ValueError(f"index {index_ticks} ticks is not positive")
    (bid_num, bid_den), (ask_num, ask_den) = impact_bid, impact_ask
    if bid_den <= 0 or ask_den <= 0:
        raise ValueError("impact price denominators must be positive")
    over_num = max(0, bid_num - index_ticks * bid_den)  # (bid − index) × bid_den, if > 0
    under_num = max(0, index_ticks * ask_den - ask_num)  # (index − ask) × ask_den, if > 0
    numerator = (over_num * ask_den - under_num * bid_den) * FUNDING_RATE_SCALE
    # Truncated toward zero: a premium and a discount of the same size round alike, and the
    # sample never claims more premium than the book shows.
    return div(numerator, bid_den * ask_den * index_ticks, Rounding.TRUNC)


def sample_premium_e8(
    book: DepthSource | None,
    index_ticks: int | None,
    impact_notional_atoms: int,
    atoms_per_tick_lot: int,
    shortfall: ImpactShortfall = ImpactShortfall.SKIP,
) -> int | None:
    """The premium sample a grid point records, clamped to ±100 %; None = the point is skipped
    (no index, no book, or a side that cannot give an impact price)."""
    if book is None or index_ticks is None or index_ticks <= 0:
        return None
    bid, ask = impact_prices(
        book,
        impact_notional_atoms,
        atoms_per_tick_lot,
        allow_partial=shortfall is ImpactShortfall.PARTIAL,
    )
    if bid is None or ask is None:
        return None
    sample = premium_e8(bid, ask, index_ticks)
    return min(max(sample, -MAX_SAMPLE_PREMIUM_E8), MAX_SAMPLE_PREMIUM_E8)


def funding_rate_e8(average_premium_e8: int, config: FundingConfig) -> int:
    """F = P̄ + clamp(I − P̄, −clamp, +clamp), then bounded to [floor, cap] (MECHANICS.md §1.7)."""
    interest_gap_e8 = config.interest_e8 - average_premium_e8
    bounded_gap_e8 = min(max(interest_gap_e8, -config.clamp_e8), config.clamp_e8)
    rate = average_premium_e8 + bounded_gap_e8
    return min(max(rate, config.floor_e8), config.cap_e8)


def impact_notional_atoms(config: FundingConfig, spec: MarketSpec) -> int:
    """Impact margin / initial margin rate at max leverage = impact margin × max leverage
    (MECHANICS.md §1.7: 200 USDT at 125x = 25,000 USDT for BTCUSDT)."""
    return config.impact_margin_atoms * spec.max_leverage
