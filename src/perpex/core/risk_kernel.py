"""uPnL and maintenance margin of many positions at one mark, exactly in NumPy int64: the
bracket tables and the chunked kernel that the risk screen and the engine's mirror share, and
its plain-int twin for one position.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. With k = atoms_per_tick_lot:
uPnL = size × mark × k − cost, notional = |size| × mark × k, MM = ceil(notional × mmr / 1e6) − cum
of the notional's bracket (MECHANICS.md §1.2; a notional on a boundary takes the higher one).

Exactness (the per-row half of the int64 proof; the callers check the per-tick half): a store
holds |size × mark × k| <= N_s <= 2^60 (N_s = its largest |size| × mark × k, checked by the
caller) and |cost| <= 2^60 (`perpex.core.position_store`), so |uPnL| <= 2^61. MM is computed in
one of two exact forms (`BracketTables`): directly, (notional × m' + off) // D with
h = gcd(1e6, every mmr), m' = mmr / h, D = 1e6 / h, when N_s × max m' stays below 2^63;
otherwise split, q, r = divmod(notional, 1e6) and MM = q × mmr + ceil(r × mmr / 1e6) − cum,
where q < 2^40 and mmr < 1e6 < 2^20 give q × mmr < 2^60 and r × mmr < 1e12. Either way
0 < MM <= notional.
"""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np

from perpex.core.markets import MarketSpec
from perpex.core.position_store import BOOLS, I64, PositionRow, PositionStore
from perpex.core.units import PPM, Rounding, div

INT64_LIMIT: Final = 2**63  # every int64 value v satisfies -2^63 <= v < 2^63
CHUNK_ROWS: Final = 65_536  # rows per vector pass: the work arrays stay in cache (measured best)
MAX_LUT_CELLS: Final = 1 << 18  # bracket lookup table size; larger tables use searchsorted
MAX_CACHED_MARKETS: Final = 256  # bracket tables a kernel keeps


def position_figures_scalar(spec: MarketSpec, mark_ticks: int, row: PositionRow) -> tuple[int, int]:
    """(uPnL, MM) of one position in plain ints (MECHANICS.md §0, §1.2): the specification."""
    if mark_ticks <= 0:
        raise ValueError(f"{spec.symbol}: mark {mark_ticks} ticks is not positive")
    k = spec.atoms_per_tick_lot
    upnl = row.size_lots * mark_ticks * k - row.cost_atoms
    notional = abs(row.size_lots) * mark_ticks * k
    bracket = spec.bracket_for(notional)
    mm = div(notional * bracket.mmr_ppm, PPM, Rounding.CEIL) - bracket.cum_atoms
    return upnl, mm


class BracketTables:
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

    def direct_fits(self, max_abs_size_lots: int, mark_k: int) -> bool:
        """Whether the direct form of MM is exact for sizes up to `max_abs_size_lots` at a mark
        (mark_k = mark × atoms_per_tick_lot)."""
        return max_abs_size_lots * mark_k <= self.direct_max_notional


class MarginKernel:
    """uPnL and MM of a store's rows at one mark, a chunk at a time, into work arrays of
    `chunk_rows` kept between calls, with the bracket tables of the markets it has seen.

    After `fill`, `upnl_atoms[:rows]` and `mm_atoms[:rows]` hold the chunk's figures, and
    `scratch` / `flags` are free for the caller until the next fill.
    """

    def __init__(self, chunk_rows: int = CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self.chunk_rows = chunk_rows
        self._tables: dict[int, tuple[MarketSpec, BracketTables]] = {}
        c = chunk_rows
        self.upnl_atoms: I64 = np.empty(c, np.int64)
        self.mm_atoms: I64 = np.empty(c, np.int64)
        self.scratch: I64 = np.empty(c, np.int64)
        self.flags: BOOLS = np.empty(c, np.bool_)
        self._notional: I64 = np.empty(c, np.int64)
        self._mul: I64 = np.empty(c, np.int64)
        self._cell: I64 = np.empty(c, np.int64)

    def tables(self, spec: MarketSpec) -> BracketTables:
        """The market's lookup tables (built once per spec, a bounded cache)."""
        cached = self._tables.get(id(spec))
        if cached is None or cached[0] is not spec:
            if len(self._tables) >= MAX_CACHED_MARKETS:
                self._tables.clear()
            cached = (spec, BracketTables(spec))
            self._tables[id(spec)] = cached
        return cached[1]

    def fill(self, tables: BracketTables, mark_k: int, direct: bool, size: I64, cost: I64) -> int:
        """uPnL and MM of one chunk (at most `chunk_rows` rows) into `upnl_atoms` and
        `mm_atoms`; returns its length. `direct` from `BracketTables.direct_fits`."""
        n = len(size)
        upnl, notional = self.upnl_atoms[:n], self._notional[:n]
        mul, mm, tmp, cell = self._mul[:n], self.mm_atoms[:n], self.scratch[:n], self._cell[:n]
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

    def setup(
        self, store: PositionStore, spec: MarketSpec, mark_ticks: int
    ) -> tuple[BracketTables, int, bool]:
        """`fill`'s first three arguments for this store at a mark: the tables, mark × k and
        whether the direct form is exact."""
        tables = self.tables(spec)
        mark_k = mark_ticks * spec.atoms_per_tick_lot
        return tables, mark_k, tables.direct_fits(store.max_abs_size_lots, mark_k)

    def row_figures(
        self, store: PositionStore, spec: MarketSpec, mark_ticks: int
    ) -> tuple[I64, I64]:
        """(uPnL, MM) of every row at a mark (new arrays, store order)."""
        tables, mark_k, direct = self.setup(store, spec, mark_ticks)
        n = len(store)
        upnl: I64 = np.empty(n, np.int64)
        mm: I64 = np.empty(n, np.int64)
        c = self.chunk_rows
        for a in range(0, n, c):
            b = min(a + c, n)
            rows = self.fill(tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b])
            upnl[a:b] = self.upnl_atoms[:rows]
            mm[a:b] = self.mm_atoms[:rows]
        return upnl, mm
