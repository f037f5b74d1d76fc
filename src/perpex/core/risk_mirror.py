"""The engine's open positions and cross wallets mirrored in NumPy arrays, kept in sync with the
ledger row by row, so that one symbol's mark tick is screened in O(its positions).

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm. The engine's objects are the
truth; the liquidator (`perpex.core.liquidation`) refreshes the rows of the accounts whose money
or positions moved before each screen, or rebuilds the whole mirror. Per symbol a `CachedStore`
(`perpex.core.position_store`) holds the open positions with each row's uPnL and MM at the
symbol's last mark (`perpex.core.risk_kernel` computes them), and per account the sums of those
figures over its cross rows: see `RiskMirror`. `ratio_at_least` is the exact margin-call test
over the figures it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

import numpy as np

from perpex.core.markets import MarketSpec
from perpex.core.position_store import BOOLS, I64, MAX_ACCOUNT_IDX, CachedStore
from perpex.core.risk_kernel import MarginKernel, position_figures_scalar
from perpex.core.units import NOTIONAL_BOUND_ATOMS, PPM

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
        self._kernel = MarginKernel()
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
        upnl, mm = self._kernel.row_figures(store, self.specs[symbol], mark_ticks)
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
        upnl, mm = self._kernel.row_figures(store, spec, mark)
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
                old_equity, old_maint = combine(
                    *self._kernel.row_figures(store, spec, old_mark_ticks)
                )
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
                row = store.row_at(i)
                assert row.account_idx < self.n_accounts
                if mark:
                    upnl, mm = position_figures_scalar(spec, mark, row)
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
