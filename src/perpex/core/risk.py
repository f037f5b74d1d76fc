"""The liquidation screen run on every mark tick: which accounts and positions are at or below
their maintenance margin, vectorized over NumPy int64 and twinned by a plain-int specification.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. uPnL and MM per position are
`perpex.core.risk_kernel`'s (MECHANICS.md §1.2). An isolated position is liquidatable when
margin + uPnL <= MM; a cross account when cross wallet + Σ cross uPnL <= Σ cross MM over all its
symbols (DESIGN.md §5). Positions are read from one `PositionStore` per symbol
(`perpex.core.position_store`); in the engine, `RiskMirror` (`perpex.core.risk_mirror`) keeps
them in sync with the ledger and answers one symbol's tick in O(its positions).

Ordering: most underwater first, i.e. ascending margin level equity / MM (the inverse of
Binance's margin ratio MM / equity, and defined when equity <= 0 too), compared exactly by
integer cross-multiplication; ties by account, then the cross account before its isolated
positions, then by symbol. At most `limit` are returned.

Exactness of the int64 path (the per-tick half of the proof, checked in O(symbols), see
`_bounds_hold`; the per-row half is the store's and the kernel's): per row |uPnL| <= 2^61 and an
isolated margin + uPnL <= 2^62. Per-account cross sums: |W| + Σ_s (N_s + C_s) < 2^63 is checked
before summing (N_s the store's largest |size| × mark × k, C_s its largest |cost|); a state too
large for that (never at realistic sizes) is answered by the scalar twin. Money is summed in
int64 by fancy-index addition (`sums[accounts] += values`, exact because a store holds one row
per account, so no index repeats within a store), never np.bincount (float64 weights).

The store and the mirror are re-exported here, where their users have always found them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from fractions import Fraction
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from perpex.core.markets import MarketSpec
from perpex.core.position_store import (
    I64,
    CachedStore,
    PositionRow,
    PositionStore,
)
from perpex.core.risk_kernel import (
    CHUNK_ROWS,
    INT64_LIMIT,
    MarginKernel,
    position_figures_scalar,
)
from perpex.core.risk_mirror import (
    MirrorFigures,
    PositionColumns,
    RiskMirror,
    ratio_at_least,
)
from perpex.core.units import NOTIONAL_BOUND_ATOMS

MAX_WALLET_ATOMS: Final = 2 * NOTIONAL_BOUND_ATOMS  # |cross wallet| of one account
DEFAULT_LIMIT: Final = 1_000  # liquidations handed to the engine per tick


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
                row_upnl, row_mm = position_figures_scalar(spec, mark_ticks, row)
                upnl[row.account_idx] += row_upnl
                mm[row.account_idx] += row_mm
                count[row.account_idx] += 1
    return CrossSums(np.array(upnl, np.int64), np.array(mm, np.int64), np.array(count, np.int64))


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
            upnl, mm = position_figures_scalar(spec, mark_ticks, row)
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


class Screener(MarginKernel):
    """The vector screen with its work arrays and bracket tables kept between ticks."""

    def __init__(self, chunk_rows: int = CHUNK_ROWS) -> None:
        super().__init__(chunk_rows)
        self._cross_equity: I64 = np.empty(0, np.int64)
        self._cross_mm: I64 = np.empty(0, np.int64)

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
            tables, mark_k, direct = self.setup(store, spec, mark_ticks)
            for a in range(0, store.n_cross, c):
                b = min(a + c, store.n_cross)
                rows = self.fill(
                    tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b]
                )
                accounts = store.account_idx[a:b]
                # one row per account in a store: no index repeats, `+=` adds every value
                upnl[accounts] += self.upnl_atoms[:rows]
                mm[accounts] += self.mm_atoms[:rows]
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
            tables, mark_k, direct = self.setup(store, spec, mark_ticks)
            n, n_cross = len(store), store.n_cross
            for a in range(0, n_cross, c):
                b = min(a + c, n_cross)
                rows = self.fill(
                    tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b]
                )
                accounts = store.account_idx[a:b]
                cross_equity[accounts] += self.upnl_atoms[:rows]  # unique within a store
                cross_mm[accounts] += self.mm_atoms[:rows]
            for a in range(n_cross, n, c):
                b = min(a + c, n)
                rows = self.fill(
                    tables, mark_k, direct, store.size_lots[a:b], store.cost_atoms[a:b]
                )
                equity, mm, flag = self.scratch[:rows], self.mm_atoms[:rows], self.flags[:rows]
                np.add(store.margin_atoms[a:b], self.upnl_atoms[:rows], out=equity)
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


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_WALLET_ATOMS",
    "CachedStore",
    "CrossSums",
    "Liquidatable",
    "MarkedStore",
    "MirrorFigures",
    "PositionColumns",
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
