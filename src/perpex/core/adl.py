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

`AdlQueueVector` is the same queue over NumPy columns (the mirror of `risk.RiskMirror`), for a
symbol with many holders: float64 scores only narrow (each is within a relative 2^-50 of the
exact one, and rows whose float intervals, widened to 1e-9, overlap are ordered by the exact
`adl_score` and then by account name), and it is computed lazily from the top, so the ADL of a
few lots against 100,000 holders ranks only the head of the queue.

What a trader is shown (`adl_quantile`, `Exchange.position().adl_quantile`) is the Binance-like
reading of the same queue (MECHANICS.md §1.8: "ranked by profit and leverage", a 5-light
indicator): only a profitable position (score > 0) lights up, by its percentile in its side's
whole queue (losers included, as the queue `deleverage.deleverage` walks), and every position
that is flat, losing or past bankruptcy shows 1 light, the lowest priority. 0 means "no
position". (Binance's API field `adlQuantile` counts 0-4 for the same five steps.)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from perpex.core.units import Rounding, div

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BOOLS = npt.NDArray[np.bool_]

LIGHTS: Final = 5  # quantile buckets of 20 %
LONG: Final = 1
SHORT: Final = -1
# A float64 score is within a relative 2^-50 of the exact one: seven roundings of at most 2^-53
# each (four int64 -> float64 conversions, two products, one quotient; no overflow or underflow
# for |values| < 2^62). Rows closer than this much wider band are compared exactly.
FLOAT_BAND: Final = 1e-9
FIRST_CHUNK: Final = 32  # queue entries `AdlQueueVector.walk` ranks first; then 4x, 16x, ...
CHUNK_GROWTH: Final = 4


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


def adl_scores_float(
    size_lots: I64,
    cost_atoms: I64,
    equity_atoms: I64,
    mark_ticks: int,
    atoms_per_tick_lot: int,
) -> F64:
    """`adl_score` of every row as float64, each within a relative 2^-50 of the exact one (see
    `FLOAT_BAND`); meaningless for a row with equity <= 0 (not ranked). The caller keeps
    |size × mark × k| <= 2^60, 0 < |cost| <= 2^60 and |equity| < 2^62 (the mirror's bounds), so
    the int64 steps cannot wrap. An exact 0 (flat PnL) stays exactly 0."""
    value = size_lots * (mark_ticks * atoms_per_tick_lot)
    upnl = (value - cost_atoms).astype(np.float64)
    notional = np.abs(value).astype(np.float64)
    entry = np.abs(cost_atoms).astype(np.float64)
    equity = equity_atoms.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # equity 0: not ranked anyway
        profit = upnl * notional / (entry * equity)  # PnL% × notional / equity
        loss = upnl * equity / (entry * notional)  # PnL% / (notional / equity)
    scores: F64 = np.where(upnl > 0, profit, loss)
    return scores


class AdlQueueVector:
    """The queue of one side over NumPy columns, computed lazily from the top: `adl_queue`
    (highest score first, equal scores by account name), then the positions past their own
    bankruptcy (equity <= 0, not ranked) by name. This is the order in which
    `deleverage.deleverage` takes counterparties; its scalar twin builds `AdlPosition`s with
    account indices in name order and calls `adl_queue`.

    Rows are positions of one side (every size has the side's sign); `names[account_idx[row]]`
    is the row's account, names are unique. The columns are copied: the queue is the ranking at
    construction, whatever happens to the positions while it is walked.

    Exactness: the float64 scores (`adl_scores_float`) widened by `FLOAT_BAND` give each row an
    interval [low, high] that holds its exact score. The top m rows are among those whose high
    reaches the m-th largest low (`np.partition`, O(rows)); sorted by float, two neighbours
    whose intervals do not overlap are in exact order, and every run of overlapping neighbours
    (exact ties among them) is sorted by (exact `adl_score`, name), one `Fraction` per distinct
    (size, cost, equity).
    """

    __slots__ = (
        "_exact",
        "account_idx",
        "atoms_per_tick_lot",
        "cost_atoms",
        "equity_atoms",
        "high",
        "low",
        "mark_ticks",
        "names",
        "ranked",
        "score",
        "size_lots",
    )

    def __init__(
        self,
        names: Sequence[str],
        account_idx: I64,
        size_lots: I64,
        cost_atoms: I64,
        equity_atoms: I64,
        mark_ticks: int,
        atoms_per_tick_lot: int,
    ) -> None:
        if mark_ticks <= 0:
            raise ValueError(f"mark {mark_ticks} ticks is not positive")
        n = len(account_idx)
        if not len(size_lots) == len(cost_atoms) == len(equity_atoms) == n:
            raise ValueError("columns of different lengths")
        if n and not ((size_lots > 0).all() or (size_lots < 0).all()):
            raise ValueError("the rows of a queue hold one side")
        if not cost_atoms.all():
            raise ValueError("an open position has a cost basis")
        self.names = names
        self.account_idx: I64 = np.array(account_idx, np.int64)
        self.size_lots: I64 = np.array(size_lots, np.int64)
        self.cost_atoms: I64 = np.array(cost_atoms, np.int64)
        self.equity_atoms: I64 = np.array(equity_atoms, np.int64)
        self.mark_ticks = mark_ticks
        self.atoms_per_tick_lot = atoms_per_tick_lot
        self.ranked: BOOLS = self.equity_atoms > 0
        score = adl_scores_float(
            self.size_lots, self.cost_atoms, self.equity_atoms, mark_ticks, atoms_per_tick_lot
        )
        score[~self.ranked] = 0.0  # never read: the unranked rows go by name
        band = np.abs(score) * FLOAT_BAND
        self.score: F64 = score
        self.low: F64 = score - band
        self.high: F64 = score + band
        self._exact: dict[tuple[int, int, int], Fraction] = {}

    def __len__(self) -> int:
        return len(self.account_idx)

    def walk(
        self, min_equity_atoms: int | None = None, first_chunk: int | None = None
    ) -> Iterator[str]:
        """Account names in queue order; with `min_equity_atoms`, only the positions with at
        least that equity (the queue's order restricted to them).

        Lazily: the first `first_chunk` (default `FIRST_CHUNK`) ranked entries, then
        `CHUNK_GROWTH` times as many, and so on, each chunk O(rows) in NumPy plus the exact
        comparisons it needs, so a caller that stops after a few entries never sorts the whole
        side. The chunks change the work, never the order.
        """
        if min_equity_atoms is None:
            rows = np.arange(len(self), dtype=np.int64)
        else:
            rows = np.flatnonzero(self.equity_atoms >= min_equity_atoms)
        ranked = rows[self.ranked[rows]]
        wanted = first_chunk or FIRST_CHUNK
        if wanted < 1:
            raise ValueError("first_chunk must be positive")
        given = 0
        while given < len(ranked):
            top = self._top(ranked, wanted)
            for row in top[given:]:
                yield self._name(row)
            given = len(top)
            wanted *= CHUNK_GROWTH
        yield from sorted(self._name(row) for row in rows[~self.ranked[rows]].tolist())

    def _name(self, row: int) -> str:
        return self.names[int(self.account_idx[row])]

    def _key(self, row: int) -> tuple[Fraction, str]:
        """The exact sort key of a ranked row, as `adl_queue` orders: (-score, name)."""
        position = (
            int(self.size_lots[row]),
            int(self.cost_atoms[row]),
            int(self.equity_atoms[row]),
        )
        score = self._exact.get(position)
        if score is None:
            exact = adl_score(AdlPosition(0, *position), self.mark_ticks, self.atoms_per_tick_lot)
            assert exact is not None, "an unranked row among the ranked"
            score = self._exact[position] = exact
        return -score, self._name(row)

    def _top(self, rows: I64, wanted: int) -> list[int]:
        """The first `wanted` of the ranked `rows` in exact queue order (all, if fewer)."""
        if wanted < len(rows):
            kth = len(rows) - wanted
            # at least `wanted` rows have low >= cut, so the `wanted`-th exact score is >= cut,
            # and every row of the top has high >= its score >= cut
            cut = np.partition(self.low[rows], kth)[kth]
            rows = rows[self.high[rows] >= cut]
        order = rows[np.argsort(-self.score[rows], kind="stable")]
        low, high = self.low[order], self.high[order]
        # Float-sorted: a row up to j has a float score >= row j's, so an exact score > low[j];
        # a row after j + 1 one <= row j + 1's, so an exact score < high[j + 1] (the band is
        # far wider than the float error and the rounding of low and high). So if
        # low[j] > high[j + 1], every row up to j scores strictly more than every row after
        # it; otherwise j and j + 1 are linked, and their run is sorted exactly.
        linked = np.flatnonzero(low[:-1] <= high[1:])
        out: list[int] = order.tolist()
        if len(linked):
            gaps = np.flatnonzero(np.diff(linked) > 1)
            starts = linked[np.concatenate(([0], gaps + 1))].tolist()
            ends = linked[np.concatenate((gaps, [len(linked) - 1]))].tolist()
            for start, end in zip(starts, ends, strict=True):
                if start >= wanted:
                    break
                out[start : end + 2] = sorted(out[start : end + 2], key=self._key)
        return out[:wanted]


__all__ = [
    "LONG",
    "SHORT",
    "AdlPosition",
    "AdlQueueVector",
    "adl_allocate",
    "adl_quantile",
    "adl_quantiles",
    "adl_queue",
    "adl_score",
    "adl_scores_float",
]
