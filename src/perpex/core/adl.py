"""Auto-deleveraging order: which opposite positions are closed first, and the 1-5 lights.

Units: prices in ticks, sizes in lots, money in atoms (k = atoms_per_tick_lot). Ranking per
BitMEX (MECHANICS.md §2.4; Binance follows it, §1.8), with values at the mark:

    PnL%               = uPnL / |entry value|           = (size·mark·k − cost) / |cost|
    effective leverage = |mark value| / (mark value − bankrupt value) = notional / equity
    score              = PnL% × effective leverage   if PnL% > 0
                       = PnL% / effective leverage   if PnL% < 0   (0 when PnL% = 0)

"mark value − bankrupt value" is the margin that stands behind the position, its equity: the
isolated margin + uPnL, or for a cross position the account's cross margin balance (the caller
passes it). Scores are exact `Fraction`s, never floats. A position with equity <= 0 is past
its own bankruptcy (it is being liquidated, not a counterparty): it is left out of the queue
and shows one light.

Longs and shorts are ranked separately, highest score first; equal scores go by account.
Lights follow BitMEX's worked example (MEX autoDeleveragingExamples): a position's percentile
is the share of the side's quantity ranked at or above it, rounded up to 20 %; the top 20 %
shows 5 lights, the bottom 1.

What a trader is shown (`adl_quantile`, `Exchange.position().adl_quantile`) is the Binance-like
reading of the same queue (MECHANICS.md §1.8: "ranked by profit and leverage", a 5-light
indicator): only a profitable position (score > 0) lights up, by its percentile in its side's
whole queue (losers included, as the queue `liquidation._deleverage` walks), and every position
that is flat, losing or past bankruptcy shows 1 light, the lowest priority. 0 means "no
position". (Binance's API field `adlQuantile` counts 0-4 for the same five steps.)
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Final, NamedTuple

from perpex.core.units import Rounding, div

LIGHTS: Final = 5  # quantile buckets of 20 %
LONG: Final = 1
SHORT: Final = -1


class AdlPosition(NamedTuple):
    account_idx: int
    size_lots: int  # signed: > 0 long
    cost_atoms: int  # signed cost basis (uPnL = size × mark × k − cost)
    equity_atoms: int  # isolated margin + uPnL, or the account's cross margin balance


def adl_score(position: AdlPosition, mark_ticks: int, atoms_per_tick_lot: int) -> Fraction | None:
    """The BitMEX ranking score, exactly; None when the position is not rankable."""
    size, cost, equity = position.size_lots, position.cost_atoms, position.equity_atoms
    if size == 0 or equity <= 0:
        return None
    if cost == 0:
        raise ValueError(f"account {position.account_idx}: an open position has a cost basis")
    if mark_ticks <= 0:
        raise ValueError(f"mark {mark_ticks} ticks is not positive")
    value = size * mark_ticks * atoms_per_tick_lot
    upnl = value - cost
    notional = abs(value)
    entry = abs(cost)
    if upnl > 0:
        return Fraction(upnl * notional, entry * equity)  # PnL% × notional / equity
    return Fraction(upnl * equity, entry * notional)  # PnL% / (notional / equity); 0 if flat


def adl_queue(
    positions: Sequence[AdlPosition],
    mark_ticks: int,
    atoms_per_tick_lot: int,
    side: int,
    *,
    profitable_only: bool = False,
) -> list[int]:
    """Indices into `positions` of the `side` (LONG or SHORT) ones, first to be deleveraged first.

    Highest score first; equal scores by account index (then input order). Positions with
    equity <= 0 are left out; with `profitable_only`, so are those with PnL% <= 0.
    """
    if side not in (LONG, SHORT):
        raise ValueError(f"side must be LONG (1) or SHORT (-1), not {side}")
    ranked: list[tuple[Fraction, int, int]] = []
    for i, p in enumerate(positions):
        if p.size_lots * side <= 0:
            continue
        score = adl_score(p, mark_ticks, atoms_per_tick_lot)
        if score is None or (profitable_only and score <= 0):
            continue
        ranked.append((-score, p.account_idx, i))
    ranked.sort()
    return [i for _, _, i in ranked]


def adl_quantiles(
    positions: Sequence[AdlPosition],
    mark_ticks: int,
    atoms_per_tick_lot: int,
    *,
    losers_lowest: bool = False,
) -> list[int]:
    """Lights 1..5 per position, aligned with `positions` (each side ranked on its own).

    lights = 6 − ceil(5 × (quantity ranked at or above the position) / (side's quantity)),
    the side's quantity being that of its ranked positions. With `losers_lowest` (what the
    exchange shows) a position whose score is not positive shows 1 light whatever its place.
    """
    lights = [1] * len(positions)
    for side in (LONG, SHORT):
        queue = adl_queue(positions, mark_ticks, atoms_per_tick_lot, side)
        total_lots = sum(abs(positions[i].size_lots) for i in queue)
        cumulative_lots = 0
        for i in queue:
            cumulative_lots += abs(positions[i].size_lots)
            # the percentile rounds up to the next 20 % step (BitMEX's example)
            bucket = div(LIGHTS * cumulative_lots, total_lots, Rounding.CEIL)  # 1..5
            lights[i] = LIGHTS + 1 - bucket
        if losers_lowest:
            for i in queue:
                score = adl_score(positions[i], mark_ticks, atoms_per_tick_lot)
                if score is None or score <= 0:
                    lights[i] = 1
    return lights


def adl_quantile(
    positions: Sequence[AdlPosition], index: int, mark_ticks: int, atoms_per_tick_lot: int
) -> int:
    """The lights shown for `positions[index]` (0 if flat), Binance-like: see the module."""
    if not positions[index].size_lots:
        return 0
    return adl_quantiles(positions, mark_ticks, atoms_per_tick_lot, losers_lowest=True)[index]


def adl_allocate(
    positions: Sequence[AdlPosition], queue: Sequence[int], qty_lots: int
) -> list[tuple[int, int]]:
    """(index, lots) taken from the top of `queue` until `qty_lots` are covered.

    Each counterparty is closed up to its whole position, in queue order (MEX example: a short
    of 20 liquidated, the top long of 10 is closed in full and 10 come from the next). Less
    than `qty_lots` is allocated only when the queue runs out.
    """
    if qty_lots < 0:
        raise ValueError("qty_lots must be >= 0")
    plan: list[tuple[int, int]] = []
    left = qty_lots
    for i in queue:
        if left == 0:
            break
        take = min(left, abs(positions[i].size_lots))
        plan.append((i, take))
        left -= take
    return plan


__all__ = [
    "LONG",
    "SHORT",
    "AdlPosition",
    "adl_allocate",
    "adl_quantile",
    "adl_quantiles",
    "adl_queue",
    "adl_score",
]
