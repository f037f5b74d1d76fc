"""The ADL pass: what neither the book nor the fund closed goes to ranked opposite positions.

Closed at the liquidated position's bankruptcy price, without fee; also the ADL lights shown
for a position.

Units: prices in ticks, sizes in lots, money in atoms; k = atoms_per_tick_lot. The ranking is
`perpex.core.adl` (PnL% × effective leverage, MECHANICS.md §2.4): the scalar queue over every
holder (`adl_order_scalar`, the specification) or, for a symbol with many holders, the same
queue over the mirror computed lazily from the top (`adl_queue_vector`, `adl.AdlQueueVector`);
tests/test_adl_vector.py holds the two equal command by command. Each counterparty taken has
its orders in that symbol canceled first. When the bankruptcy price is past the mark (a gap),
a first round takes from each counterparty only what its margin can carry, then the rest in
the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction

import numpy as np

from perpex.core.adl import (
    FLOAT_BAND,
    LIGHTS,
    AdlPosition,
    AdlQueueVector,
    adl_quantile,
    adl_queue,
    adl_score,
    adl_scores_float,
)
from perpex.core.book import BUY, SELL
from perpex.core.liquidation_screen import LiquidationScreen
from perpex.core.messages import AutoDeleveraged, EndReason, Event, PositionChanged
from perpex.core.risk import MirrorFigures
from perpex.core.state import Account, MarketState, Position
from perpex.core.units import Rounding, div

# The exact ranking of the scalar path: positions, mark, k, closing side -> queue order.
Ranking = Callable[[list[AdlPosition], int, int, int], list[int]]


def adl_lights(screen: LiquidationScreen, account: str, symbol: str) -> int:
    """The ADL lights (1-5) shown for the account's position in `symbol`; 0 when flat.

    Ranked against the other positions on its side of that symbol exactly as
    `deleverage` would take them (equal scores by account name); only a profitable
    position lights up (`perpex.core.adl`). O(holders of the symbol): a view, not the pass.
    """
    state = screen.state
    acct = state.accounts.get(account)
    pos = None if acct is None else acct.positions.get(symbol)
    if acct is None or pos is None or not pos.size_lots:
        return 0
    market = state.markets[symbol]
    mark, k = market.mark_ticks, market.spec.atoms_per_tick_lot
    equity = screen.figures(acct, pos)[0]
    score = adl_score(AdlPosition(0, pos.size_lots, pos.cost_atoms, equity), mark, k)
    if score is None or score <= 0:
        return 1  # not profitable: the lowest light, wherever it stands in the queue
    figures = screen.vector_figures(symbol, None)
    if figures is not None:
        return adl_lights_vector(screen, account, pos, score, figures, mark, k)
    long = pos.size_lots > 0
    same_side: list[AdlPosition] = []
    mine = -1
    for idx, name in enumerate(sorted(state.holders[symbol])):
        other_acct = state.accounts[name]
        other = other_acct.positions[symbol]
        if (other.size_lots > 0) != long:
            continue
        if name == account:
            mine = len(same_side)
        equity = screen.figures(other_acct, other)[0]
        same_side.append(AdlPosition(idx, other.size_lots, other.cost_atoms, equity))
    assert mine >= 0, "holder index drifted"
    return adl_quantile(same_side, mine, mark, k)


def adl_lights_vector(
    screen: LiquidationScreen,
    account: str,
    pos: Position,
    score: Fraction,
    figures: MirrorFigures,
    mark_ticks: int,
    atoms_per_tick_lot: int,
) -> int:
    """`adl_quantile` of a profitable position over the mirror: the same answer, O(rows).

    lights = 6 − ceil(5 × (lots ranked at or above it) / (lots ranked on its side)); ranked
    means equity > 0. Scores as float64 (`adl.adl_scores_float`, each within a relative
    2^-50 of the exact one) decide every row further than `adl.FLOAT_BAND` (relative) from
    this position's score; the rows closer are
    compared exactly (`adl_score`), equal scores by account name, as `adl_queue` orders.
    """
    assert screen.mirror is not None
    store = screen.mirror.stores[pos.symbol]
    n = len(figures.account_idx)
    size = store.size_lots[:n]
    cost = store.cost_atoms[:n]
    equity = figures.equity_atoms
    side = (size > 0) if pos.size_lots > 0 else (size < 0)
    ranked = side & (equity > 0)
    lots = np.abs(size)
    total_lots = int(lots[ranked].sum())
    value = size * (mark_ticks * atoms_per_tick_lot)  # |.| <= 2^60 (the mirror's proof)
    upnl = value - cost
    candidates = np.flatnonzero(ranked & (upnl > 0))  # only the profitable can rank above
    f_score = adl_scores_float(
        size[candidates], cost[candidates], equity[candidates], mark_ticks, atoms_per_tick_lot
    )
    f_mine = float(score)
    above = f_score > f_mine * (1 + FLOAT_BAND)
    close = ~above & (f_score >= f_mine * (1 - FLOAT_BAND))
    at_or_above = int(lots[candidates[above]].sum())
    names = screen.account_names
    for row in candidates[close].tolist():
        other = AdlPosition(
            int(figures.account_idx[row]), int(size[row]), int(cost[row]), int(equity[row])
        )
        other_score = adl_score(other, mark_ticks, atoms_per_tick_lot)
        assert other_score is not None
        if other_score > score or (other_score == score and names[other.account_idx] <= account):
            at_or_above += abs(other.size_lots)
    # the percentile rounds up to the next 20 % step, as in `adl_quantiles`
    return LIGHTS + 1 - div(LIGHTS * at_or_above, total_lots, Rounding.CEIL)


def deleverage(
    screen: LiquidationScreen,
    acct: Account,
    pos: Position,
    market: MarketState,
    price_ticks: int,
    events: list[Event],
    rank: Ranking = adl_queue,
) -> None:
    """Close the rest of `pos` against ranked opposite positions at `price_ticks`, no fee.

    The queue comes from the mirror for a symbol with many holders (`adl_queue_vector`),
    else from the scalar loop (`adl_order_scalar` with `rank`, the specification): the same
    order. Everything taken is then decided here, on the records, either way.
    """
    state = screen.state
    spec = market.spec
    symbol = spec.symbol
    mark = market.mark_ticks
    k = spec.atoms_per_tick_lot
    close_side = SELL if pos.size_lots > 0 else BUY
    # The counterparties hold the side the closing order trades on (a long sells: shorts).
    queue = adl_queue_vector(screen, acct, market, close_side)
    ordered = adl_order_scalar(screen, acct, market, close_side, rank) if queue is None else None
    # Closing one lot at `price_ticks` instead of the mark costs the counterparty this much
    # (> 0 only after a gap past bankruptcy): first take from each only what its margin
    # can carry, then, if that was not enough, the rest in the same order.
    loss_per_lot = (mark - price_ticks) * k * (1 if close_side == BUY else -1)
    for capped in (True, False):
        if not pos.size_lots:
            break  # (the second round has nothing to do)
        names: Iterable[str]
        if queue is None:
            assert ordered is not None
            names = ordered
        elif capped and loss_per_lot > 0:
            # A position whose equity cannot carry one lot's loss takes nothing in this
            # round, and the loop below skips it without any effect (its equity is what it
            # was when ranked: only the liquidated account and those already taken have
            # been settled). The vector queue leaves those out, so a round that walks the
            # whole queue costs what it takes, not O(holders).
            names = queue.walk(loss_per_lot)
        else:
            names = queue.walk()
        for name in names:
            left = abs(pos.size_lots)
            if not left:
                break
            cp_acct = state.accounts[name]
            cp_pos = cp_acct.positions[symbol]
            lots = min(left, abs(cp_pos.size_lots))
            if capped and loss_per_lot > 0:
                equity = screen.figures(cp_acct, cp_pos)[0]
                lots = min(lots, max(equity, 0) // loss_per_lot)
            if not lots:
                continue
            for oid in sorted(cp_pos.open_orders):
                state.end_order(
                    cp_acct,
                    cp_pos,
                    market,
                    cp_pos.open_orders[oid],
                    EndReason.AUTO_DELEVERAGE,
                    events,
                )
            state.close_against(acct, pos, cp_acct, cp_pos, spec, close_side, lots, price_ticks)
            events.append(AutoDeleveraged(symbol, acct.name, name, lots, price_ticks))
            events.append(
                PositionChanged(
                    name, symbol, cp_pos.size_lots, cp_pos.cost_atoms, cp_pos.margin.balance
                )
            )
    events.append(
        PositionChanged(acct.name, symbol, pos.size_lots, pos.cost_atoms, pos.margin.balance)
    )
    assert pos.size_lots == 0, "ADL ran out of opposite positions (long lots != short lots?)"


def adl_order_scalar(
    screen: LiquidationScreen,
    acct: Account,
    market: MarketState,
    close_side: int,
    rank: Ranking = adl_queue,
) -> list[str]:
    """The holders ADL takes from when `acct` closes on `close_side`, in the order it takes
    them, one holder at a time (the specification): ranked by `rank`, `adl.adl_queue`
    (highest score first, equal scores by name: account indices follow names), then those
    past their own bankruptcy (equity <= 0, not ranked) by name. O(holders of the symbol)."""
    state = screen.state
    spec = market.spec
    symbol = spec.symbol
    names = sorted(n for n in state.holders[symbol] if n != acct.name)
    opposite: list[AdlPosition] = []
    for idx, name in enumerate(names):
        cp_acct = state.accounts[name]
        cp_pos = cp_acct.positions[symbol]
        if (cp_pos.size_lots > 0) != (close_side == BUY):
            continue  # same side as the liquidated position
        equity = screen.figures(cp_acct, cp_pos)[0]
        opposite.append(AdlPosition(idx, cp_pos.size_lots, cp_pos.cost_atoms, equity))
    ranked = rank(opposite, market.mark_ticks, spec.atoms_per_tick_lot, close_side)
    # Past their own bankruptcy (not ranked): only if the ranked ones cannot take it all.
    in_queue = set(ranked)
    ranked += [i for i in range(len(opposite)) if i not in in_queue]
    return [names[opposite[i].account_idx] for i in ranked]


def adl_queue_vector(
    screen: LiquidationScreen, acct: Account, market: MarketState, close_side: int
) -> AdlQueueVector | None:
    """The same queue as `adl_order_scalar`, over the mirror and lazily from the top
    (`adl.AdlQueueVector`); None for a symbol with few holders or when the mirror cannot
    answer exactly (then the scalar loop does)."""
    spec = market.spec
    figures = screen.vector_figures(spec.symbol, None)
    if figures is None:
        return None
    assert screen.mirror is not None
    store = screen.mirror.stores[spec.symbol]
    n = len(figures.account_idx)
    size = store.size_lots[:n]
    side = (size > 0) if close_side == BUY else (size < 0)
    side &= figures.account_idx != screen.account_index.get(acct.name, -1)
    rows = np.flatnonzero(side)
    return AdlQueueVector(
        screen.account_names,
        figures.account_idx[rows],
        size[rows],
        store.cost_atoms[:n][rows],
        figures.equity_atoms[rows],
        market.mark_ticks,
        spec.atoms_per_tick_lot,
    )


__all__ = [
    "Ranking",
    "adl_lights",
    "adl_lights_vector",
    "adl_order_scalar",
    "adl_queue_vector",
    "deleverage",
]
