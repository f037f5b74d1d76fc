"""The liquidation screen run on every mark tick: which accounts and positions are at or below
their maintenance margin, vectorized over NumPy int64 and twinned by a plain-int specification.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. With k = atoms_per_tick_lot:
uPnL = size × mark × k − cost, notional = |size| × mark × k, MM = ceil(notional × mmr / 1e6) − cum
of the notional's bracket (MECHANICS.md §1.2; a notional on a boundary takes the higher one).
An isolated position is liquidatable when margin + uPnL <= MM; a cross account when
cross wallet + Σ cross uPnL <= Σ cross MM over all its symbols (DESIGN.md §5).

In the engine (`perpex.core.liquidation`), `RiskMirror` keeps every open position in one
`PositionStore` per symbol plus the cross wallets, refreshed row by row for the accounts whose
money or positions moved, and caches each row's uPnL and MM at its symbol's last mark with
per-account totals, so one symbol's tick costs O(its positions): see `RiskMirror`.

Ordering: most underwater first, i.e. ascending margin level equity / MM (the inverse of
Binance's margin ratio MM / equity, and defined when equity <= 0 too), compared exactly by
integer cross-multiplication; ties by account, then the cross account before its isolated
positions, then by symbol. At most `limit` are returned.

Exactness of the int64 path (the proof, checked per tick in O(symbols), see `_bounds_hold`):
per row |size × mark × k| <= N_s <= 2^60 (N_s = the store's largest |size| × mark × k),
|cost| <= 2^60 and 0 <= isolated margin <= 2^61 (enforced on write), so |uPnL| <= 2^61 and an
isolated margin + uPnL <= 2^62. MM is computed in one of two exact forms (`_Brackets`): directly,
(notional × m' + off) // D with h = gcd(1e6, every mmr), m' = mmr / h, D = 1e6 / h, when
N_s × max m' stays below 2^63; otherwise split, q, r = divmod(notional, 1e6) and
MM = q × mmr + ceil(r × mmr / 1e6) − cum, where q < 2^40 and mmr < 1e6 < 2^20 give
q × mmr < 2^60 and r × mmr < 1e12. Either way 0 < MM <= notional. Per-account cross sums:
|W| + Σ_s (N_s + C_s) < 2^63 is checked before summing (C_s the store's largest |cost|); a
state too large for that (never at realistic sizes) is answered by the scalar twin. Money is
summed in int64 by fancy-index addition (`sums[accounts] += values`, exact because a store holds
one row per account, so no index repeats within a store), never np.bincount (float64 weights).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import ClassVar, Final, Literal, NamedTuple, Self

import numpy as np
import numpy.typing as npt

from perpex.core.markets import MarketSpec
from perpex.core.units import NOTIONAL_BOUND_ATOMS, PPM, Rounding, div

I64 = npt.NDArray[np.int64]
BOOLS = npt.NDArray[np.bool_]

INT64_LIMIT: Final = 2**63  # every int64 value v satisfies -2^63 <= v < 2^63
MAX_COST_ATOMS: Final = NOTIONAL_BOUND_ATOMS  # |cost basis| of one position
MAX_MARGIN_ATOMS: Final = 2 * NOTIONAL_BOUND_ATOMS  # isolated margin of one position
MAX_WALLET_ATOMS: Final = 2 * NOTIONAL_BOUND_ATOMS  # |cross wallet| of one account
MAX_ACCOUNT_IDX: Final = 2**40
MAX_STORE_ROWS: Final = 1 << 24  # positions per symbol
DEFAULT_LIMIT: Final = 1_000  # liquidations handed to the engine per tick
CHUNK_ROWS: Final = 65_536  # rows per vector pass: the work arrays stay in cache (measured best)
MAX_LUT_CELLS: Final = 1 << 18  # bracket lookup table size; larger tables use searchsorted
MAX_CACHED_MARKETS: Final = 256  # bracket tables a Screener keeps


class PositionRow(NamedTuple):
    account_idx: int
    size_lots: int
    cost_atoms: int
    isolated: bool
    margin_atoms: int
    leverage: int


class PositionStore:
    """Open positions of ONE symbol as struct-of-arrays (one row per account, one-way mode).

    Rows [0, n_cross) are cross positions and [n_cross, len) isolated ones, so the screen reads
    each kind as one contiguous slice. Insert, update and remove are O(1) (swap-remove plus an
    account -> row dict); capacity doubles up to `max_rows`. The arrays are public for reading;
    write only through `upsert` / `remove`. The row order is an implementation detail.

    The store keeps high-water marks of |size|, |cost| and margin (they never decrease until
    `recompute_bounds`), which let the screen prove its int64 sums cannot wrap in O(1).
    """

    __slots__ = (
        "_rows",
        "account_idx",
        "cost_atoms",
        "isolated",
        "leverage",
        "margin_atoms",
        "max_abs_cost_atoms",
        "max_abs_size_lots",
        "max_account_idx",
        "max_margin_atoms",
        "max_rows",
        "n_cross",
        "size_lots",
    )

    # The per-row arrays: grown, moved and cleared together (a subclass may add its own).
    _COLUMNS: ClassVar[tuple[str, ...]] = (
        "account_idx",
        "size_lots",
        "cost_atoms",
        "isolated",
        "margin_atoms",
        "leverage",
    )

    def __init__(self, capacity: int = 1024, max_rows: int = MAX_STORE_ROWS) -> None:
        if not 1 <= capacity <= max_rows:
            raise ValueError("capacity must be in [1, max_rows]")
        self.max_rows = max_rows
        self.account_idx: I64 = np.zeros(capacity, np.int64)
        self.size_lots: I64 = np.zeros(capacity, np.int64)  # signed: > 0 long
        self.cost_atoms: I64 = np.zeros(capacity, np.int64)  # signed cost basis
        self.isolated: BOOLS = np.zeros(capacity, np.bool_)
        self.margin_atoms: I64 = np.zeros(capacity, np.int64)  # isolated margin; 0 for cross
        self.leverage: I64 = np.zeros(capacity, np.int64)
        self._rows: dict[int, int] = {}
        self.n_cross = 0
        self.max_abs_size_lots = 0
        self.max_abs_cost_atoms = 0
        self.max_margin_atoms = 0
        self.max_account_idx = -1

    # -- reading ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, account_idx: object) -> bool:
        return account_idx in self._rows

    @property
    def capacity(self) -> int:
        return len(self.size_lots)

    def row_of(self, account_idx: int) -> int | None:
        return self._rows.get(account_idx)

    def _row(self, i: int) -> PositionRow:
        return PositionRow(
            int(self.account_idx[i]),
            int(self.size_lots[i]),
            int(self.cost_atoms[i]),
            bool(self.isolated[i]),
            int(self.margin_atoms[i]),
            int(self.leverage[i]),
        )

    def get(self, account_idx: int) -> PositionRow | None:
        i = self._rows.get(account_idx)
        return None if i is None else self._row(i)

    def rows(self) -> Iterator[PositionRow]:
        """Every position as Python ints, in row order."""
        n = len(self._rows)
        columns = (
            self.account_idx[:n].tolist(),
            self.size_lots[:n].tolist(),
            self.cost_atoms[:n].tolist(),
            self.isolated[:n].tolist(),
            self.margin_atoms[:n].tolist(),
            self.leverage[:n].tolist(),
        )
        for values in zip(*columns, strict=True):
            yield PositionRow(*values)

    # -- writing ------------------------------------------------------------------------------
    @staticmethod
    def _check(
        account_idx: int,
        size_lots: int,
        cost_atoms: int,
        isolated: bool,
        margin_atoms: int,
        leverage: int,
    ) -> None:
        if not 0 <= account_idx < MAX_ACCOUNT_IDX:
            raise ValueError(f"account index {account_idx} out of range")
        if size_lots == 0:
            raise ValueError("a stored position has a non-zero size (remove it instead)")
        if abs(size_lots) > NOTIONAL_BOUND_ATOMS:
            raise ValueError(f"size {size_lots} lots is beyond the int64 bound")
        if abs(cost_atoms) > MAX_COST_ATOMS:
            raise ValueError(f"cost {cost_atoms} atoms is beyond the int64 bound")
        if not 0 <= margin_atoms <= MAX_MARGIN_ATOMS:
            raise ValueError(f"isolated margin {margin_atoms} atoms out of range")
        if not isolated and margin_atoms:
            raise ValueError("a cross position carries no isolated margin")
        if not 1 <= leverage <= 10_000:
            raise ValueError(f"leverage {leverage} out of range")

    def _grow(self) -> None:
        capacity = self.capacity
        if capacity >= self.max_rows:
            raise OverflowError(f"position store full ({self.max_rows} rows)")
        new_capacity = min(2 * capacity, self.max_rows)
        for name in self._COLUMNS:
            old = getattr(self, name)
            new = np.zeros(new_capacity, old.dtype)
            new[:capacity] = old
            setattr(self, name, new)

    def _write(
        self, i: int, account_idx: int, size: int, cost: int, iso: bool, margin: int, leverage: int
    ) -> None:
        self.account_idx[i] = account_idx
        self.size_lots[i] = size
        self.cost_atoms[i] = cost
        self.isolated[i] = iso
        self.margin_atoms[i] = margin
        self.leverage[i] = leverage
        self._rows[account_idx] = i

    def _move(self, src: int, dst: int) -> None:
        if src == dst:
            return
        for name in self._COLUMNS:
            arr = getattr(self, name)
            arr[dst] = arr[src]
        self._rows[int(self.account_idx[dst])] = dst

    def upsert(
        self,
        account_idx: int,
        size_lots: int,
        cost_atoms: int,
        *,
        isolated: bool = False,
        margin_atoms: int = 0,
        leverage: int = 20,
    ) -> None:
        """Insert or overwrite the account's position (O(1); a mode change moves the row)."""
        self._check(account_idx, size_lots, cost_atoms, isolated, margin_atoms, leverage)
        i = self._rows.get(account_idx)
        if i is not None and bool(self.isolated[i]) != isolated:
            self.remove(account_idx)
            i = None
        if i is None:
            n = len(self._rows)
            if n == self.capacity:
                self._grow()
            if isolated:
                i = n
            else:
                self._move(self.n_cross, n)  # the first isolated row goes to the end
                i = self.n_cross
                self.n_cross += 1
        self._write(i, account_idx, size_lots, cost_atoms, isolated, margin_atoms, leverage)
        self.max_abs_size_lots = max(self.max_abs_size_lots, abs(size_lots))
        self.max_abs_cost_atoms = max(self.max_abs_cost_atoms, abs(cost_atoms))
        self.max_margin_atoms = max(self.max_margin_atoms, margin_atoms)
        self.max_account_idx = max(self.max_account_idx, account_idx)

    def remove(self, account_idx: int) -> bool:
        """Drop the account's position (O(1)); False when it had none."""
        i = self._rows.pop(account_idx, None)
        if i is None:
            return False
        last = len(self._rows)  # index of the last row before removal
        if i < self.n_cross:
            last_cross = self.n_cross - 1
            self._move(last_cross, i)  # keep the cross block contiguous
            self._move(last, last_cross)  # and the isolated block after it
            self.n_cross -= 1
        else:
            self._move(last, i)
        for name in self._COLUMNS:
            getattr(self, name)[last] = 0
        return True

    def recompute_bounds(self) -> None:
        """Tighten the high-water marks to the rows present (O(n); e.g. after many removals)."""
        n = len(self._rows)
        if n == 0:
            self.max_abs_size_lots = self.max_abs_cost_atoms = self.max_margin_atoms = 0
            self.max_account_idx = -1
            return
        self.max_abs_size_lots = int(np.abs(self.size_lots[:n]).max())
        self.max_abs_cost_atoms = int(np.abs(self.cost_atoms[:n]).max())
        self.max_margin_atoms = int(self.margin_atoms[:n].max())
        self.max_account_idx = int(self.account_idx[:n].max())

    @classmethod
    def from_arrays(
        cls,
        account_idx: npt.ArrayLike,
        size_lots: npt.ArrayLike,
        cost_atoms: npt.ArrayLike,
        isolated: npt.ArrayLike,
        margin_atoms: npt.ArrayLike,
        leverage: npt.ArrayLike,
        max_rows: int = MAX_STORE_ROWS,
    ) -> Self:
        """Bulk load (snapshot restore, benchmarks), with the same checks as `upsert`."""
        acct = np.asarray(account_idx, np.int64)
        size = np.asarray(size_lots, np.int64)
        cost = np.asarray(cost_atoms, np.int64)
        iso = np.asarray(isolated, np.bool_)
        margin = np.asarray(margin_atoms, np.int64)
        lev = np.asarray(leverage, np.int64)
        n = len(acct)
        if not all(len(a) == n for a in (size, cost, iso, margin, lev)):
            raise ValueError("columns of different lengths")
        if n > max_rows:
            raise OverflowError(f"position store full ({max_rows} rows)")
        if n:
            if acct.min() < 0 or acct.max() >= MAX_ACCOUNT_IDX:
                raise ValueError("account index out of range")
            if len(np.unique(acct)) != n:
                raise ValueError("one position per account")
            if (size == 0).any() or np.abs(size).max() > NOTIONAL_BOUND_ATOMS:
                raise ValueError("size out of range")
            if np.abs(cost).max() > MAX_COST_ATOMS:
                raise ValueError("cost out of range")
            if margin.min() < 0 or margin.max() > MAX_MARGIN_ATOMS or (margin[~iso] != 0).any():
                raise ValueError("isolated margin out of range")
            if lev.min() < 1 or lev.max() > 10_000:
                raise ValueError("leverage out of range")
        order = np.argsort(iso, kind="stable")  # cross rows first
        store = cls(max(n, 1), max_rows)
        store.account_idx[:n] = acct[order]
        store.size_lots[:n] = size[order]
        store.cost_atoms[:n] = cost[order]
        store.isolated[:n] = iso[order]
        store.margin_atoms[:n] = margin[order]
        store.leverage[:n] = lev[order]
        store._rows = dict(zip(store.account_idx[:n].tolist(), range(n), strict=True))
        store.n_cross = int(n - iso.sum())
        store.recompute_bounds()
        return store

    def check_invariants(self) -> None:
        n = len(self._rows)
        assert 0 <= self.n_cross <= n <= self.capacity
        assert not self.isolated[: self.n_cross].any()
        assert self.isolated[self.n_cross : n].all()
        for acct, i in self._rows.items():
            assert int(self.account_idx[i]) == acct
        assert (self.size_lots[:n] != 0).all()
        assert (self.size_lots[n:] == 0).all()
        if n:
            assert np.abs(self.size_lots[:n]).max() <= self.max_abs_size_lots
            assert np.abs(self.cost_atoms[:n]).max() <= self.max_abs_cost_atoms
            assert self.margin_atoms[:n].max() <= self.max_margin_atoms
            assert self.account_idx[:n].max() <= self.max_account_idx


class MarkedStore(NamedTuple):
    """One symbol's positions, its market and the mark to value them at."""

    store: PositionStore
    spec: MarketSpec
    mark_ticks: int


class Liquidatable(NamedTuple):
    account_idx: int
    symbol: str | None  # None: the account's cross margin; else its isolated position there
    equity_atoms: int  # margin balance: cross wallet + Σ cross uPnL, or isolated margin + uPnL
    maint_margin_atoms: int


class CrossSums(NamedTuple):
    """Per-account sums over the cross positions of some symbols (index = account).

    Lets the engine screen one ticking symbol while the other symbols' cross uPnL and MM, whose
    marks did not move, come from a cache (`Screener.cross_sums` / `cross_sums_scalar`).
    """

    upnl_atoms: npt.NDArray[np.int64]
    maint_margin_atoms: npt.NDArray[np.int64]
    positions: npt.NDArray[np.int64]  # how many cross positions each account has there


class ScreenResult(NamedTuple):
    liquidatable: list[Liquidatable]  # most underwater first, at most `limit`
    total: int  # how many were liquidatable before the limit
    vectorized: bool  # False when the state was beyond the int64 proof (scalar answered)


# -- ordering ----------------------------------------------------------------------------------


def _compare(a: Liquidatable, b: Liquidatable) -> int:
    """Ascending equity / MM by cross-multiplication (MM > 0), then account, kind, symbol."""
    lhs = a.equity_atoms * b.maint_margin_atoms
    rhs = b.equity_atoms * a.maint_margin_atoms
    if lhs != rhs:
        return -1 if lhs < rhs else 1
    ka = (a.account_idx, a.symbol is not None, a.symbol or "")
    kb = (b.account_idx, b.symbol is not None, b.symbol or "")
    return (ka > kb) - (ka < kb)


_RANK_KEY = functools.cmp_to_key(_compare)


# -- the scalar twin (the readable specification) -------------------------------------------


def cross_sums_scalar(
    markets: Sequence[MarkedStore | tuple[PositionStore, MarketSpec, int]], n_accounts: int
) -> CrossSums:
    """Σ uPnL, Σ MM and the count of the cross positions per account, in plain ints."""
    upnl = [0] * n_accounts
    mm = [0] * n_accounts
    count = [0] * n_accounts
    for store, spec, mark_ticks in markets:
        for row in store.rows():
            if not row.isolated:
                row_upnl, row_mm = _position_scalar(spec, mark_ticks, row)
                upnl[row.account_idx] += row_upnl
                mm[row.account_idx] += row_mm
                count[row.account_idx] += 1
    return CrossSums(np.array(upnl, np.int64), np.array(mm, np.int64), np.array(count, np.int64))


def _position_scalar(spec: MarketSpec, mark_ticks: int, row: PositionRow) -> tuple[int, int]:
    """(uPnL, MM) of one position (MECHANICS.md §0, §1.2)."""
    if mark_ticks <= 0:
        raise ValueError(f"{spec.symbol}: mark {mark_ticks} ticks is not positive")
    k = spec.atoms_per_tick_lot
    upnl = row.size_lots * mark_ticks * k - row.cost_atoms
    notional = abs(row.size_lots) * mark_ticks * k
    bracket = spec.bracket_for(notional)
    mm = div(notional * bracket.mmr_ppm, PPM, Rounding.CEIL) - bracket.cum_atoms
    return upnl, mm


def screen_scalar(
    markets: Sequence[MarkedStore | tuple[PositionStore, MarketSpec, int]],
    cross_wallet_atoms: npt.ArrayLike,
    limit: int = DEFAULT_LIMIT,
    others: CrossSums | None = None,
) -> ScreenResult:
    """The screen in plain Python ints, one position at a time (the readable specification).

    `others` adds the cross sums of symbols not listed in `markets` (their isolated
    positions are not screened).
    """
    wallets = [int(w) for w in np.asarray(cross_wallet_atoms).tolist()]
    found: list[Liquidatable] = []
    cross_upnl: dict[int, int] = {}
    cross_mm: dict[int, int] = {}
    if others is not None:
        for account, count in enumerate(others.positions.tolist()):
            if count:
                cross_upnl[account] = int(others.upnl_atoms[account])
                cross_mm[account] = int(others.maint_margin_atoms[account])
    for store, spec, mark_ticks in markets:
        if mark_ticks <= 0:
            raise ValueError(f"{spec.symbol}: mark {mark_ticks} ticks is not positive")
        for row in store.rows():
            upnl, mm = _position_scalar(spec, mark_ticks, row)
            if row.isolated:
                equity = row.margin_atoms + upnl
                if equity <= mm:
                    found.append(Liquidatable(row.account_idx, spec.symbol, equity, mm))
            else:
                cross_upnl[row.account_idx] = cross_upnl.get(row.account_idx, 0) + upnl
                cross_mm[row.account_idx] = cross_mm.get(row.account_idx, 0) + mm
    for account, mm in cross_mm.items():
        equity = wallets[account] + cross_upnl[account]
        if equity <= mm:
            found.append(Liquidatable(account, None, equity, mm))
    found.sort(
        key=lambda c: (
            Fraction(c.equity_atoms, c.maint_margin_atoms),
            c.account_idx,
            c.symbol is not None,
            c.symbol or "",
        )
    )
    return ScreenResult(found[:limit], len(found), False)


# -- the vector screen ----------------------------------------------------------------------


class _Brackets:
    """A market's bracket table as lookup arrays for the vector pass.

    Lookup: every bracket floor is a multiple of g = gcd(floors), so the bracket is constant
    on each cell [c·g, (c+1)·g) and cell c = notional // g indexes per-cell tables directly;
    cells past the last floor clip to the last bracket. Tables too fine for that (more than
    MAX_LUT_CELLS cells) fall back to np.searchsorted(floors, notional, 'right') − 1. Both
    give the last bracket whose floor <= notional, as `MarketSpec.bracket_for` does.

    Two exact forms of MM = ceil(notional × mmr / 1e6) − cum:
    - direct, with h = gcd(1e6, every mmr), m' = mmr / h, D = 1e6 / h, off = D − 1 − cum × D:
      MM = (notional × m' + off) // D  (floor division; = ceil(notional × m' / D) − cum).
      Used when notional × m' + D and cum × D + D stay below 2^63 (checked per tick).
    - split, always safe: q, r = divmod(notional, 1e6); MM = q·mmr + ceil(r·mmr / 1e6) − cum.
    """

    __slots__ = (
        "cell_atoms",
        "direct_divisor",
        "direct_max_notional",
        "floors",
        "lut_mmr",
        "lut_mul",
        "lut_neg_cum",
        "lut_off",
    )

    def __init__(self, spec: MarketSpec) -> None:
        brackets = spec.brackets
        floors = [b.floor_atoms for b in brackets]
        h = PPM
        for b in brackets:
            h = math.gcd(h, b.mmr_ppm)
        divisor = PPM // h
        mul = [b.mmr_ppm // h for b in brackets]
        off = [divisor - 1 - b.cum_atoms * divisor for b in brackets]
        self.direct_divisor = divisor
        # Largest notional for which notional × m' + off stays inside int64 (0: never).
        max_cum = max(b.cum_atoms for b in brackets)
        if (max_cum + 1) * divisor < INT64_LIMIT:
            self.direct_max_notional = (INT64_LIMIT - 1 - divisor) // max(mul)
        else:
            self.direct_max_notional = -1
        self.floors: I64 = np.array(floors, np.int64)
        g = 0
        for f in floors[1:]:
            g = math.gcd(g, f)
        cells = floors[-1] // g + 1 if g else 1
        if cells <= MAX_LUT_CELLS:
            self.cell_atoms = max(g, 1)
            starts = np.arange(cells, dtype=np.int64) * self.cell_atoms
            which = np.searchsorted(self.floors, starts, side="right") - 1
        else:
            self.cell_atoms = 0  # searchsorted over the floors instead
            which = np.arange(len(brackets))
        self.lut_mul: I64 = np.array(mul, np.int64)[which]
        self.lut_off: I64 = np.array(off, np.int64)[which]
        self.lut_mmr: I64 = np.array([b.mmr_ppm for b in brackets], np.int64)[which]
        self.lut_neg_cum: I64 = np.array([-b.cum_atoms for b in brackets], np.int64)[which]


class Screener:
    """The vector screen with its work arrays and bracket tables kept between ticks."""

    def __init__(self, chunk_rows: int = CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self.chunk_rows = chunk_rows
        self._brackets: dict[int, tuple[MarketSpec, _Brackets]] = {}
        c = chunk_rows
        self._upnl: I64 = np.empty(c, np.int64)
        self._notional: I64 = np.empty(c, np.int64)
        self._mul: I64 = np.empty(c, np.int64)
        self._mm: I64 = np.empty(c, np.int64)
        self._tmp: I64 = np.empty(c, np.int64)
        self._cell: I64 = np.empty(c, np.int64)
        self._flag: BOOLS = np.empty(c, np.bool_)
        self._cross_equity: I64 = np.empty(0, np.int64)
        self._cross_mm: I64 = np.empty(0, np.int64)

    def _tables(self, spec: MarketSpec) -> _Brackets:
        cached = self._brackets.get(id(spec))
        if cached is None or cached[0] is not spec:
            if len(self._brackets) >= MAX_CACHED_MARKETS:
                self._brackets.clear()
            cached = (spec, _Brackets(spec))
            self._brackets[id(spec)] = cached
        return cached[1]

    def _maintenance(
        self, tables: _Brackets, mark_k: int, direct: bool, size: I64, cost: I64
    ) -> int:
        """Fill the work arrays for one chunk: _upnl and _mm. Returns the chunk length."""
        n = len(size)
        upnl, notional = self._upnl[:n], self._notional[:n]
        mul, mm, tmp, cell = self._mul[:n], self._mm[:n], self._tmp[:n], self._cell[:n]
        np.multiply(size, mark_k, out=upnl)  # signed value, |.| <= 2^60
        np.abs(upnl, out=notional)
        np.subtract(upnl, cost, out=upnl)  # uPnL, |.| <= 2^61
        mode: Literal["clip", "raise"]
        if tables.cell_atoms:
            np.floor_divide(notional, tables.cell_atoms, out=cell)
            index, mode = cell, "clip"
        else:
            index = np.searchsorted(tables.floors, notional, side="right")
            index -= 1
            mode = "raise"
        if direct:
            np.take(tables.lut_mul, index, out=mul, mode=mode)
            np.take(tables.lut_off, index, out=mm, mode=mode)
            np.multiply(notional, mul, out=tmp)  # <= max notional × m' (checked)
            np.add(mm, tmp, out=mm)
            np.floor_divide(mm, tables.direct_divisor, out=mm)
            return n
        # split: q·mmr < 2^40 · 2^20, r·mmr < 1e12; no term wraps.
        np.take(tables.lut_mmr, index, out=mul, mode=mode)
        np.take(tables.lut_neg_cum, index, out=mm, mode=mode)
        np.floor_divide(notional, PPM, out=cell)  # q (the cell index is used up)
        np.multiply(cell, PPM, out=tmp)
        np.subtract(notional, tmp, out=tmp)  # r in [0, 1e6)
        np.multiply(tmp, mul, out=tmp)
        np.add(tmp, PPM - 1, out=tmp)
        np.floor_divide(tmp, PPM, out=tmp)  # ceil(r·mmr / 1e6)
        np.multiply(cell, mul, out=cell)
        np.add(mm, cell, out=mm)
        np.add(mm, tmp, out=mm)
        return n

    @staticmethod
    def _checked(
        markets: Sequence[MarkedStore | tuple[PositionStore, MarketSpec, int]], n_accounts: int
    ) -> list[MarkedStore]:
        symbols = [MarkedStore(*m) for m in markets]
        if len({m.spec.symbol for m in symbols}) != len(symbols):
            raise ValueError("a symbol is listed twice")
        for m in symbols:
            if m.mark_ticks <= 0:
                raise ValueError(f"{m.spec.symbol}: mark {m.mark_ticks} ticks is not positive")
            if m.store.max_account_idx >= n_accounts:
                raise ValueError(f"{m.spec.symbol}: an account has no cross wallet entry")
        return symbols

    def cross_sums(
        self,
        markets: Sequence[MarkedStore | tuple[PositionStore, MarketSpec, int]],
        n_accounts: int,
    ) -> CrossSums:
        """Per-account Σ uPnL, Σ MM and count of the cross positions of `markets` (new arrays).

        Raises OverflowError when the sums could leave int64 (see the module proof); then pass
        those symbols to `screen` directly, which falls back to exact Python ints.
        """
        symbols = self._checked(markets, n_accounts)
        if not _bounds_hold(symbols, np.zeros(0, np.int64), None):
            raise OverflowError("cross sums beyond the int64 proof")
        upnl = np.zeros(n_accounts, np.int64)
        mm = np.zeros(n_accounts, np.int64)
        count = np.zeros(n_accounts, np.int64)
        c = self.chunk_rows
        for store, spec, mark_ticks in symbols:
            tables = self._tables(spec)
            mark_k = mark_ticks * spec.atoms_per_tick_lot
            direct = store.max_abs_size_lots * mark_k <= tables.direct_max_notional
            for a in range(0, store.n_cross, c):
                b = min(a + c, store.n_cross)
                rows = self._maintenance(
                    tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b]
                )
                accounts = store.account_idx[a:b]
                # one row per account in a store: no index repeats, `+=` adds every value
                upnl[accounts] += self._upnl[:rows]
                mm[accounts] += self._mm[:rows]
                count[accounts] += 1
        return CrossSums(upnl, mm, count)

    def screen(
        self,
        markets: Sequence[MarkedStore | tuple[PositionStore, MarketSpec, int]],
        cross_wallet_atoms: npt.NDArray[np.int64],
        limit: int = DEFAULT_LIMIT,
        others: CrossSums | None = None,
    ) -> ScreenResult:
        """Every liquidatable isolated position and cross account over the given symbols.

        `cross_wallet_atoms[a]` is account a's cross wallet balance (int64, long enough for
        every account index in the stores). A cross account is judged on the symbols given
        plus `others`, the cached cross sums of the symbols whose marks did not move (from
        `cross_sums`); pass every symbol with open cross positions one way or the other.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        wallets = np.asarray(cross_wallet_atoms)
        if wallets.dtype != np.int64 or wallets.ndim != 1:
            raise TypeError("cross_wallet_atoms must be a 1-d int64 array")
        symbols = self._checked(markets, len(wallets))
        if others is not None and not all(
            a.dtype == np.int64 and a.shape == wallets.shape for a in others
        ):
            raise TypeError("others must hold int64 arrays shaped like cross_wallet_atoms")
        if not _bounds_hold(symbols, wallets, others):
            return screen_scalar(symbols, wallets, limit, others)

        n_accounts = len(wallets)
        if len(self._cross_equity) != n_accounts:
            self._cross_equity = np.empty(n_accounts, np.int64)
            self._cross_mm = np.empty(n_accounts, np.int64)
        cross_equity, cross_mm = self._cross_equity, self._cross_mm
        if others is None:
            np.copyto(cross_equity, wallets)
            cross_mm.fill(0)
        else:
            np.add(wallets, others.upnl_atoms, out=cross_equity)
            np.copyto(cross_mm, others.maint_margin_atoms)

        # Hits as arrays; Python objects are made only for the few that survive `_top`.
        hit_acct: list[I64] = []
        hit_equity: list[I64] = []
        hit_mm: list[I64] = []
        hit_symbol: list[I64] = []  # position in `symbols`; -1 for a cross account
        c = self.chunk_rows
        for s, (store, spec, mark_ticks) in enumerate(symbols):
            tables = self._tables(spec)
            mark_k = mark_ticks * spec.atoms_per_tick_lot
            direct = store.max_abs_size_lots * mark_k <= tables.direct_max_notional
            n, n_cross = len(store), store.n_cross
            for a in range(0, n_cross, c):
                b = min(a + c, n_cross)
                rows = self._maintenance(
                    tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b]
                )
                accounts = store.account_idx[a:b]
                cross_equity[accounts] += self._upnl[:rows]  # unique within a store
                cross_mm[accounts] += self._mm[:rows]
            for a in range(n_cross, n, c):
                b = min(a + c, n)
                rows = self._maintenance(
                    tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b]
                )
                equity, mm, flag = self._tmp[:rows], self._mm[:rows], self._flag[:rows]
                np.add(store.margin_atoms[a:b], self._upnl[:rows], out=equity)
                np.less_equal(equity, mm, out=flag)
                if flag.any():
                    hit = np.flatnonzero(flag)
                    hit_acct.append(store.account_idx[a:b][hit])
                    hit_equity.append(equity[hit])
                    hit_mm.append(mm[hit])
                    hit_symbol.append(np.full(len(hit), s, np.int64))
        # Every cross position has MM >= 1 (mmr > 0 and notional >= 1 atom; MM is continuous
        # and increasing in the notional), so MM > 0 marks exactly the accounts with one.
        hit = np.flatnonzero((cross_mm > 0) & (cross_equity <= cross_mm))
        hit_acct.append(hit.astype(np.int64))
        hit_equity.append(cross_equity[hit])
        hit_mm.append(cross_mm[hit])
        hit_symbol.append(np.full(len(hit), -1, np.int64))
        names = [m.spec.symbol for m in symbols]
        found = _top(
            np.concatenate(hit_acct),
            np.concatenate(hit_equity),
            np.concatenate(hit_mm),
            np.concatenate(hit_symbol),
            names,
            limit,
        )
        return ScreenResult(found, int(sum(len(h) for h in hit_acct)), True)


def _bounds_hold(
    symbols: Sequence[MarkedStore], wallets: npt.NDArray[np.int64], others: CrossSums | None
) -> bool:
    """The per-tick half of the int64 proof (the per-row half is enforced on write)."""
    cross_bound = 0
    mm_bound = 0
    for store, spec, mark_ticks in symbols:
        value_bound = store.max_abs_size_lots * mark_ticks * spec.atoms_per_tick_lot
        if value_bound > NOTIONAL_BOUND_ATOMS:
            return False
        cross_bound += value_bound + store.max_abs_cost_atoms
        mm_bound += value_bound
    if others is not None and len(others.upnl_atoms):
        cross_bound += max(-int(others.upnl_atoms.min()), int(others.upnl_atoms.max()))
        mm_bound += max(-int(others.maint_margin_atoms.min()), int(others.maint_margin_atoms.max()))
    wallet_bound = max(-int(wallets.min()), int(wallets.max())) if len(wallets) else 0
    if wallet_bound > MAX_WALLET_ATOMS:
        return False
    return wallet_bound + cross_bound < INT64_LIMIT and mm_bound < INT64_LIMIT


def _top(
    acct: I64, equity: I64, mm: I64, symbol: I64, names: list[str], limit: int
) -> list[Liquidatable]:
    """The `limit` most underwater hits, exactly ordered (floats only narrow the work).

    Each float key equity / MM is within a relative 2^-50 of the exact ratio. Hence:
    1. with many hits, keeping every key up to the limit-th smallest plus a 1e-9 relative
       margin keeps the whole exact top `limit` (a hit left out is beaten exactly by at least
       `limit` kept ones);
    2. sorting by (float key, account, kind, symbol) is exact except inside runs of keys that
       lie within that margin of each other; each such run is re-sorted exactly by integer
       cross-multiplication (`_compare`), which decides every order that floats could get
       wrong.
    """
    if limit == 0 or len(acct) == 0:
        return []
    ratios = equity.astype(np.float64) / mm.astype(np.float64)
    if len(acct) > 4 * limit:
        kth = float(np.partition(ratios, limit - 1)[limit - 1])
        keep = np.flatnonzero(ratios <= kth + abs(kth) * 1e-9 + 1e-300)
        acct, equity, mm, symbol, ratios = (
            acct[keep],
            equity[keep],
            mm[keep],
            symbol[keep],
            ratios[keep],
        )
    rank_of = {name: r for r, name in enumerate(sorted(names))}
    # symbol -1 (a cross account) picks the appended -1: it sorts before any isolated symbol
    symbol_rank = np.array([rank_of[name] for name in names] + [-1], np.int64)[symbol]
    order = np.lexsort((symbol_rank, acct, ratios))  # the last key is the primary one
    ratios = ratios[order]
    # Runs of keys too close for floats to order: gap <= 1e-9 x max(|neighbours|) + 1e-300.
    gaps = np.diff(ratios)
    scale = np.maximum(np.abs(ratios[1:]), np.abs(ratios[:-1]))
    joined = gaps <= scale * 1e-9 + 1e-300
    found = _liquidatables(order[:limit], acct, equity, mm, symbol, names)
    if joined.any():
        # Re-sort exactly every run that starts before the cut (taking the run in whole).
        starts = np.flatnonzero(np.concatenate(([True], ~joined)))
        ends = np.append(starts[1:], len(order))
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            if start >= limit:
                break
            if end - start < 2:
                continue
            run = _liquidatables(order[start:end], acct, equity, mm, symbol, names)
            run.sort(key=_RANK_KEY)
            cut = min(end, limit)
            found[start:cut] = run[: cut - start]
    return found


def _liquidatables(
    rows: npt.NDArray[np.intp], acct: I64, equity: I64, mm: I64, symbol: I64, names: list[str]
) -> list[Liquidatable]:
    named: list[str | None] = [*names, None]  # symbol -1 (cross) picks None
    return [
        Liquidatable(a, named[s], e, m)
        for a, s, e, m in zip(
            acct[rows].tolist(),
            symbol[rows].tolist(),
            equity[rows].tolist(),
            mm[rows].tolist(),
            strict=True,
        )
    ]


def screen(
    markets: Sequence[MarkedStore | tuple[PositionStore, MarketSpec, int]],
    cross_wallet_atoms: npt.NDArray[np.int64],
    limit: int = DEFAULT_LIMIT,
    others: CrossSums | None = None,
) -> ScreenResult:
    """The vector screen with fresh work arrays (keep a `Screener` to reuse them per tick)."""
    return Screener().screen(markets, cross_wallet_atoms, limit, others)


# -- the engine's mirror -----------------------------------------------------------------------

MIRROR_LIMIT: Final = 2**62  # every mirrored sum stays below this (half of int64: headroom)


def ratio_at_least(equity_atoms: I64, maint_margin_atoms: I64, level_ppm: int) -> BOOLS:
    """Per row: MM / equity >= level_ppm / 1e6, always when equity <= 0; exactly, in int64.

    Needs 0 <= MM < 2^62, |equity| < 2^62 and 0 <= level <= 1e6 (the mirror's bounds). With
    equity = q·1e6 + r (0 <= r < 1e6): MM·1e6 >= level·equity  <=>  d·1e6 >= level·r with
    d = MM − level·q (|level·q| < 2^62.01, no wrap). level·r < 1e12, so d >= 1e6 decides yes,
    d < 0 decides no, and in between d·1e6 < 1e12 is computed exactly.
    """
    if not 0 <= level_ppm <= PPM:
        raise ValueError("level_ppm must be in [0, 1000000]")
    q, r = np.divmod(equity_atoms, PPM)
    d = maint_margin_atoms - level_ppm * q
    small = np.clip(d, 0, PPM)
    exact: BOOLS = (d >= PPM) | ((d >= 0) & (small * PPM >= level_ppm * r))
    return (equity_atoms <= 0) | exact


class CachedStore(PositionStore):
    """A PositionStore that also keeps each row's uPnL and MM at one mark (`RiskMirror`'s cache).

    The cache columns move with their rows; a write (`upsert`) clears them, the mirror refills.
    """

    __slots__ = ("cached_mm_atoms", "cached_upnl_atoms")

    _COLUMNS: ClassVar[tuple[str, ...]] = (
        *PositionStore._COLUMNS,
        "cached_upnl_atoms",
        "cached_mm_atoms",
    )

    def __init__(self, capacity: int = 1024, max_rows: int = MAX_STORE_ROWS) -> None:
        super().__init__(capacity, max_rows)
        self.cached_upnl_atoms: I64 = np.zeros(self.capacity, np.int64)
        self.cached_mm_atoms: I64 = np.zeros(self.capacity, np.int64)

    def _write(
        self, i: int, account_idx: int, size: int, cost: int, iso: bool, margin: int, leverage: int
    ) -> None:
        super()._write(i, account_idx, size, cost, iso, margin, leverage)
        self.cached_upnl_atoms[i] = 0
        self.cached_mm_atoms[i] = 0


class MirrorFigures(NamedTuple):
    """What decides liquidation, per row of one symbol's store (rows in store order)."""

    account_idx: I64
    isolated: BOOLS
    equity_atoms: I64  # isolated margin + uPnL, or the account's cross margin balance (all symbols)
    maint_margin_atoms: I64  # the position's MM, or the account's Σ cross MM (all symbols)
    old_equity_atoms: I64 | None  # the same with this symbol at the old mark (if asked for)
    old_maint_margin_atoms: I64 | None


PositionColumns = tuple[list[int], list[int], list[int], list[bool], list[int], list[int]]


class RiskMirror:
    """The engine's open positions and cross wallets as NumPy arrays, for the vector screen.

    Derived state, never hashed or snapshotted: the engine's objects are the truth, and the
    liquidator (`perpex.core.liquidation`) refreshes the rows of the accounts the ledger and
    `_settle_fill` marked touched before each vector screen, or rebuilds the whole mirror.
    Accounts have a dense index (its order is an implementation detail; results never depend
    on it). Per symbol a `CachedStore` holds the open positions and, per row, uPnL and MM at
    `cache_mark_ticks[symbol]` (0: not computed yet; the cache then holds zeros). Per account,
    `total_upnl` / `total_mm` hold the sums of the cached figures of its cross rows over all
    symbols, so the margin balance of a cross account when one symbol ticks is

        wallet + (total − this symbol's cached row) + this symbol's row at the new mark

    in O(rows of that symbol), with no pass over the other symbols or all accounts. The same
    cache gives the figures at the old mark (margin calls) for free when the previous tick
    left it there.

    Exactness: positions are checked on write (`PositionStore`); before any vector arithmetic
    `figures` checks |wallet| + Σ_symbols (N_s + C_s + margin_s) < 2^62 and Σ N_s < 2^62 from the
    high-water marks (N_s the largest |size| × mark × k at any mark involved, C_s the largest
    |cost|), which bounds every partial sum it forms; otherwise it answers None and the caller
    uses its scalar path. A value that does not fit at all (a store refuses the row, a wallet
    beyond int64) leaves the row out and the mirror answers None until it fits again.
    """

    def __init__(self, specs: Sequence[MarketSpec], capacity: int = 1024) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self.specs: dict[str, MarketSpec] = {spec.symbol: spec for spec in specs}
        self.stores: dict[str, CachedStore] = {symbol: CachedStore() for symbol in self.specs}
        self.cache_mark_ticks: dict[str, int] = dict.fromkeys(self.specs, 0)
        self.n_accounts = 0
        self.wallets: I64 = np.zeros(capacity, np.int64)
        self.total_upnl: I64 = np.zeros(capacity, np.int64)
        self.total_mm: I64 = np.zeros(capacity, np.int64)
        self.max_abs_wallet_atoms = 0  # high-water mark, for the bound check
        self.unmirrored: set[tuple[str, int]] = set()  # ("", idx): a wallet; else a position
        self.poisoned = False  # a total left its bound: only a rebuild helps
        self.version = 0  # bumped by every change, keys the memo
        self._screener = Screener()
        self._memo: dict[str, tuple[int, int, int | None, MirrorFigures]] = {}

    # -- writing ------------------------------------------------------------------------------
    def add_account(self) -> int:
        """A new account index (dense, from 0)."""
        idx = self.n_accounts
        if idx >= MAX_ACCOUNT_IDX:
            raise OverflowError("too many accounts for the mirror")
        if idx == len(self.wallets):
            for name in ("wallets", "total_upnl", "total_mm"):
                old = getattr(self, name)
                new = np.zeros(2 * len(old), np.int64)
                new[: len(old)] = old
                setattr(self, name, new)
        self.n_accounts += 1
        return idx

    def set_wallet(self, account_idx: int, atoms: int) -> None:
        self.version += 1
        key = ("", account_idx)
        if abs(atoms) < MIRROR_LIMIT:
            self.wallets[account_idx] = atoms
            self.max_abs_wallet_atoms = max(self.max_abs_wallet_atoms, abs(atoms))
            self.unmirrored.discard(key)
        else:
            self.unmirrored.add(key)

    def set_position(
        self,
        symbol: str,
        account_idx: int,
        size_lots: int,
        cost_atoms: int,
        isolated: bool,
        margin_atoms: int,
        leverage: int,
    ) -> None:
        """Mirror one (account, symbol) position; size 0 removes it. O(1)."""
        store = self.stores[symbol]
        key = (symbol, account_idx)
        row = store.row_of(account_idx)
        if row is None:
            if not size_lots:
                self.unmirrored.discard(key)
                return
        elif (
            store.size_lots[row] == size_lots
            and store.cost_atoms[row] == cost_atoms
            and store.margin_atoms[row] == margin_atoms
            and store.isolated[row] == isolated
            and store.leverage[row] == leverage
        ):
            return  # unchanged (its owner's wallet moved, say): the cache stays valid
        self.version += 1
        old_upnl = old_mm = 0
        if row is not None and not store.isolated[row]:
            old_upnl = int(store.cached_upnl_atoms[row])
            old_mm = int(store.cached_mm_atoms[row])
        new_upnl = new_mm = 0
        self.unmirrored.discard(key)
        if not size_lots:
            store.remove(account_idx)
        else:
            try:
                store.upsert(
                    account_idx,
                    size_lots,
                    cost_atoms,
                    isolated=isolated,
                    margin_atoms=margin_atoms,
                    leverage=leverage,
                )
            except (ValueError, OverflowError):
                store.remove(account_idx)  # beyond the store's bounds: answer None until fixed
                self.unmirrored.add(key)
            else:
                mark = self.cache_mark_ticks[symbol]
                if mark:
                    spec = self.specs[symbol]
                    value = size_lots * mark * spec.atoms_per_tick_lot
                    upnl = value - cost_atoms
                    mm = spec.maintenance_margin_atoms(abs(value))
                    if abs(upnl) < MIRROR_LIMIT and mm < MIRROR_LIMIT:
                        row = store.row_of(account_idx)
                        assert row is not None
                        store.cached_upnl_atoms[row] = upnl
                        store.cached_mm_atoms[row] = mm
                        if not isolated:
                            new_upnl, new_mm = upnl, mm
                    else:
                        self.poisoned = True
        if new_upnl != old_upnl or new_mm != old_mm:
            total_upnl = int(self.total_upnl[account_idx]) - old_upnl + new_upnl
            total_mm = int(self.total_mm[account_idx]) - old_mm + new_mm
            if abs(total_upnl) < MIRROR_LIMIT and abs(total_mm) < MIRROR_LIMIT:
                self.total_upnl[account_idx] = total_upnl
                self.total_mm[account_idx] = total_mm
            else:
                self.poisoned = True

    @classmethod
    def from_state(
        cls,
        specs: Sequence[MarketSpec],
        wallets: Sequence[int],
        positions: Mapping[str, PositionColumns],
    ) -> RiskMirror:
        """A mirror of accounts 0..len(wallets)-1 and, per symbol, columns (account index,
        size, cost, isolated, margin, leverage) of the open positions. Bulk where it can."""
        mirror = cls(specs, max(len(wallets), 1))
        mirror.n_accounts = len(wallets)
        for idx, atoms in enumerate(wallets):
            if abs(atoms) < MIRROR_LIMIT:
                mirror.wallets[idx] = atoms
                mirror.max_abs_wallet_atoms = max(mirror.max_abs_wallet_atoms, abs(atoms))
            else:
                mirror.unmirrored.add(("", idx))
        for symbol, columns in positions.items():
            try:
                mirror.stores[symbol] = CachedStore.from_arrays(*columns)
            except (ValueError, OverflowError):
                for row in zip(*columns, strict=True):  # row by row: out-of-bound ones left out
                    mirror.set_position(symbol, *row)
        return mirror

    # -- reading ------------------------------------------------------------------------------
    def _row_figures(
        self, store: CachedStore, spec: MarketSpec, mark_ticks: int
    ) -> tuple[I64, I64]:
        """(uPnL, MM) of every row at a mark (new arrays, store order)."""
        screener = self._screener
        tables = screener._tables(spec)
        mark_k = mark_ticks * spec.atoms_per_tick_lot
        direct = store.max_abs_size_lots * mark_k <= tables.direct_max_notional
        n = len(store)
        upnl: I64 = np.empty(n, np.int64)
        mm: I64 = np.empty(n, np.int64)
        c = screener.chunk_rows
        for a in range(0, n, c):
            b = min(a + c, n)
            rows = screener._maintenance(
                tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b]
            )
            upnl[a:b] = screener._upnl[:rows]
            mm[a:b] = screener._mm[:rows]
        return upnl, mm

    def _fits(self, marks: Mapping[str, int], symbol: str, old_mark_ticks: int | None) -> bool:
        """The per-tick half of the int64 proof (see the class docstring)."""
        total = self.max_abs_wallet_atoms
        total_mm = 0
        for s, store in self.stores.items():
            if not len(store):
                continue
            mark = marks.get(s, 0)
            if mark <= 0:
                return False
            mark = max(mark, self.cache_mark_ticks[s])
            if s == symbol and old_mark_ticks:
                mark = max(mark, old_mark_ticks)
            value = store.max_abs_size_lots * mark * self.specs[s].atoms_per_tick_lot
            if value > NOTIONAL_BOUND_ATOMS:
                return False
            total += value + store.max_abs_cost_atoms + store.max_margin_atoms
            total_mm += value
        return total < MIRROR_LIMIT and total_mm < MIRROR_LIMIT

    def _recache(self, symbol: str, mark_ticks: int) -> None:
        """Move the symbol's cache (and the account totals) to `mark_ticks`."""
        store = self.stores[symbol]
        n, n_cross = len(store), store.n_cross
        upnl, mm = self._row_figures(store, self.specs[symbol], mark_ticks)
        cross = store.account_idx[:n_cross]
        # one row per account in a store: no index repeats, `+=` adds every value
        self.total_upnl[cross] += upnl[:n_cross] - store.cached_upnl_atoms[:n_cross]
        self.total_mm[cross] += mm[:n_cross] - store.cached_mm_atoms[:n_cross]
        store.cached_upnl_atoms[:n] = upnl
        store.cached_mm_atoms[:n] = mm
        self.cache_mark_ticks[symbol] = mark_ticks
        self.version += 1

    def figures(
        self, symbol: str, marks: Mapping[str, int], old_mark_ticks: int | None = None
    ) -> MirrorFigures | None:
        """Equity and MM of every position of `symbol` at the current marks (and, if asked,
        with `symbol` at `old_mark_ticks`); None when the mirror cannot answer exactly."""
        if self.poisoned or self.unmirrored:
            return None
        if not self._fits(marks, symbol, old_mark_ticks):
            return None
        for s, store in self.stores.items():
            if s != symbol and store.n_cross and self.cache_mark_ticks[s] != marks[s]:
                self._recache(s, marks[s])
        mark = marks[symbol]
        memo = self._memo.get(symbol)
        if (
            memo is not None
            and memo[0] == self.version
            and memo[1] == mark
            and (old_mark_ticks is None or memo[2] == old_mark_ticks)
        ):
            return memo[3]
        store = self.stores[symbol]
        spec = self.specs[symbol]
        n, n_cross = len(store), store.n_cross
        accounts = store.account_idx[:n].copy()
        cross = accounts[:n_cross]
        upnl, mm = self._row_figures(store, spec, mark)
        wallet = self.wallets[cross]
        others_upnl = self.total_upnl[cross] - store.cached_upnl_atoms[:n_cross]
        others_mm = self.total_mm[cross] - store.cached_mm_atoms[:n_cross]
        margin = store.margin_atoms[n_cross:n]

        def combine(row_upnl: I64, row_mm: I64) -> tuple[I64, I64]:
            equity: I64 = np.empty(n, np.int64)
            maint: I64 = np.empty(n, np.int64)
            np.add(wallet, others_upnl, out=equity[:n_cross])
            equity[:n_cross] += row_upnl[:n_cross]
            np.add(margin, row_upnl[n_cross:], out=equity[n_cross:])
            np.add(others_mm, row_mm[:n_cross], out=maint[:n_cross])
            maint[n_cross:] = row_mm[n_cross:]
            return equity, maint

        equity, maint = combine(upnl, mm)
        old_equity = old_maint = None
        if old_mark_ticks is not None:
            if self.cache_mark_ticks[symbol] == old_mark_ticks:
                old_equity, old_maint = combine(
                    store.cached_upnl_atoms[:n], store.cached_mm_atoms[:n]
                )
            else:
                old_equity, old_maint = combine(*self._row_figures(store, spec, old_mark_ticks))
        # This symbol's cache moves to the new mark; the totals follow.
        self.total_upnl[cross] = others_upnl + upnl[:n_cross]
        self.total_mm[cross] = others_mm + mm[:n_cross]
        store.cached_upnl_atoms[:n] = upnl
        store.cached_mm_atoms[:n] = mm
        self.cache_mark_ticks[symbol] = mark
        self.version += 1
        found = MirrorFigures(
            accounts, store.isolated[:n].copy(), equity, maint, old_equity, old_maint
        )
        self._memo[symbol] = (self.version, mark, old_mark_ticks, found)
        return found

    def check_invariants(self) -> None:
        """The caches equal a recomputation and the totals equal the sums of the caches."""
        total_upnl = [0] * self.n_accounts
        total_mm = [0] * self.n_accounts
        for symbol, store in self.stores.items():
            store.check_invariants()
            spec = self.specs[symbol]
            mark = self.cache_mark_ticks[symbol]
            n = len(store)
            for i in range(n):
                row = store._row(i)
                assert row.account_idx < self.n_accounts
                if mark:
                    upnl, mm = _position_scalar(spec, mark, row)
                else:
                    upnl = mm = 0
                assert int(store.cached_upnl_atoms[i]) == upnl, f"{symbol}: cached uPnL drifted"
                assert int(store.cached_mm_atoms[i]) == mm, f"{symbol}: cached MM drifted"
                if not row.isolated:
                    total_upnl[row.account_idx] += upnl
                    total_mm[row.account_idx] += mm
        assert self.total_upnl[: self.n_accounts].tolist() == total_upnl, "total uPnL drifted"
        assert self.total_mm[: self.n_accounts].tolist() == total_mm, "total MM drifted"
        assert not self.wallets[self.n_accounts :].any()


__all__ = [
    "DEFAULT_LIMIT",
    "CachedStore",
    "CrossSums",
    "Liquidatable",
    "MarkedStore",
    "MirrorFigures",
    "PositionRow",
    "PositionStore",
    "RiskMirror",
    "ScreenResult",
    "Screener",
    "cross_sums_scalar",
    "ratio_at_least",
    "screen",
    "screen_scalar",
]
