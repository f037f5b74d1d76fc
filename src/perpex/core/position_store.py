"""Open positions of one symbol as NumPy columns (struct of arrays), with the int64 bounds
every stored row obeys.

`PositionStore` holds the rows; `CachedStore` adds each row's uPnL and MM at one mark, the cache
of the engine's mirror (`perpex.core.risk_mirror.RiskMirror`).

Units: sizes in lots, money in atoms. One row per account (one-way mode). The bounds checked on
write (|size| <= 2^60 lots, |cost| <= 2^60 atoms, 0 <= isolated margin <= 2^61 atoms) are the
per-row half of the int64 proofs of the risk screen (`perpex.core.risk`) and of the engine's
mirror (`perpex.core.risk_mirror`); the store's high-water marks give the per-tick half in O(1).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Final, NamedTuple, Self

import numpy as np
import numpy.typing as npt

from perpex.core.units import NOTIONAL_BOUND_ATOMS

I64 = npt.NDArray[np.int64]
BOOLS = npt.NDArray[np.bool_]

MAX_COST_ATOMS: Final = NOTIONAL_BOUND_ATOMS  # |cost basis| of one position
MAX_MARGIN_ATOMS: Final = 2 * NOTIONAL_BOUND_ATOMS  # isolated margin of one position
MAX_ACCOUNT_IDX: Final = 2**40
MAX_STORE_ROWS: Final = 1 << 24  # positions per symbol
MAX_LEVERAGE: Final = 10_000  # a stored position's leverage is in [1, MAX_LEVERAGE]


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

    def row_at(self, i: int) -> PositionRow:
        """Row i (0 <= i < len) as Python ints."""
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
        return None if i is None else self.row_at(i)

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
        if not 1 <= leverage <= MAX_LEVERAGE:
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
            if lev.min() < 1 or lev.max() > MAX_LEVERAGE:
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
