"""The liquidation screen: who is at or below maintenance margin, and the figures that say so.

Also who crossed the margin-call level, and the bankruptcy price.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm; k = atoms_per_tick_lot.
An isolated position is liquidatable when margin + uPnL <= its MM, a cross account when cross
wallet + Σ cross uPnL <= Σ cross MM. A symbol with many holders (>= `VECTOR_MIN_HOLDERS`) is
screened over the NumPy mirror of `risk.RiskMirror` (exact int64, kept in sync through
`Ledger.touched`), one with fewer holder by holder (`screen_scalar`, the readable twin); tests
run whole command streams both ways and require the same events and state hash
(tests/test_risk_mirror.py).

The mirror is derived state, outside the state hash and the snapshot: built from the records
on first use (so after a restore too), then refreshed only for the accounts `Ledger.touched`
names (every bucket transfer records its owner; settlement and leverage changes add the
account they change).

Bankruptcy price. Isolated: where margin + uPnL = 0 (`margin.bankruptcy_price_ticks`). Cross:
the account's whole margin balance E stands behind all its cross positions; each position is
given the share E × MM_i / Σ MM (dYdX's GetBankruptcyPriceInQuoteQuantums, MECHANICS.md §5.2),
so its bankruptcy price is mark − share / (size × k). With one cross position that is exactly
Binance's formula (wallet + other uPnL, §1.5); with several, no single position's price has to
carry the whole account (which could put it past the market's price range and hand an ADL
counterparty an absurd price).
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final, NamedTuple

import numpy as np

from perpex.core.markets import MarketSpec
from perpex.core.messages import Event, MarginCall
from perpex.core.risk import MirrorFigures, PositionColumns, RiskMirror, ratio_at_least
from perpex.core.state import Account, ExchangeState, Position
from perpex.core.units import PPM, Rounding, div

# A symbol with at least this many holders is screened by the NumPy mirror (`risk.RiskMirror`),
# one with fewer by the scalar loop: below it the loop is faster than refreshing the mirror.
# Both give the same answer; `LiquidationScreen.vector_min_holders` overrides it (0: always
# vector).
VECTOR_MIN_HOLDERS: Final = 512
MIRROR_REBUILD_MIN_ACCOUNTS: Final = 4_096  # below it the mirror is never rebuilt wholesale


class Candidate(NamedTuple):
    equity_atoms: int  # margin balance behind the position (isolated) or the account (cross)
    maint_margin_atoms: int
    account: str
    symbol: str
    isolated: bool


class Bankruptcy(NamedTuple):
    """Where a position goes bust (see the module docstring, "Bankruptcy price")."""

    equity_atoms: int  # margin behind it (isolated) or the account's margin balance (cross)
    share_atoms: Fraction  # the part of that equity standing behind this position
    price: Fraction  # ticks: where the position's share is used up
    limit_ticks: int  # `price` rounded in the trader's favour, within the market's range
    past_range: bool  # the range clamp made `limit_ticks` worse than `price` for the trader


def upnl_mm(spec: MarketSpec, mark_ticks: int, pos: Position) -> tuple[int, int]:
    """(uPnL, MM) of one position at a mark."""
    value = pos.size_lots * mark_ticks * spec.atoms_per_tick_lot
    return value - pos.cost_atoms, spec.maintenance_margin_atoms(abs(value))


def ratio_at_least_scalar(equity_atoms: int, maint_margin_atoms: int, level_ppm: int) -> bool:
    """MM / equity >= level (always, when equity <= 0)."""
    return equity_atoms <= 0 or maint_margin_atoms * PPM >= level_ppm * equity_atoms


class LiquidationScreen:
    """The screen and its figures over one engine's state, and the mirror it reads."""

    __slots__ = (
        "account_index",
        "account_names",
        "mirror",
        "mirror_rebuild_min_accounts",
        "state",
        "vector_min_holders",
    )

    def __init__(
        self, state: ExchangeState, mirror_rebuild_min_accounts: int = MIRROR_REBUILD_MIN_ACCOUNTS
    ) -> None:
        self.state = state
        # Derived state (not hashed, not snapshotted): see the module docstring.
        self.vector_min_holders = VECTOR_MIN_HOLDERS
        self.mirror_rebuild_min_accounts = mirror_rebuild_min_accounts
        self.mirror: RiskMirror | None = None  # None: (re)build before the next vector screen
        self.account_index: dict[str, int] = {}  # account -> row index in the mirror
        self.account_names: list[str] = []  # and back

    # -- figures ------------------------------------------------------------------------------
    def cross_figures(
        self, acct: Account, symbol: str | None = None, mark_ticks: int = 0
    ) -> tuple[int, int]:
        """(cross wallet + Σ cross uPnL, Σ cross MM), optionally with `symbol` at `mark_ticks`."""
        markets = self.state.markets
        upnl = mm = 0
        for pos in acct.positions.values():
            if not pos.size_lots or pos.isolated:
                continue
            market = markets[pos.symbol]
            mark = mark_ticks if pos.symbol == symbol else market.mark_ticks
            u, m = upnl_mm(market.spec, mark, pos)
            upnl += u
            mm += m
        return acct.wallet.balance + upnl, mm

    def figures(self, acct: Account, pos: Position) -> tuple[int, int]:
        """(equity, MM) that decide whether the position (isolated) or account (cross) goes."""
        if pos.isolated:
            market = self.state.markets[pos.symbol]
            upnl, mm = upnl_mm(market.spec, market.mark_ticks, pos)
            return pos.margin.balance + upnl, mm
        return self.cross_figures(acct)

    def bankruptcy(self, acct: Account, pos: Position) -> Bankruptcy:
        """The position's bankruptcy price at the mark and the order limit that goes with it."""
        market = self.state.markets[pos.symbol]
        spec = market.spec
        k = spec.atoms_per_tick_lot
        mark = market.mark_ticks
        size = pos.size_lots
        if pos.isolated:
            upnl = size * mark * k - pos.cost_atoms
            equity = pos.margin.balance + upnl
            share = Fraction(equity)
        else:
            equity, total_mm = self.cross_figures(acct)
            share = Fraction(equity * upnl_mm(spec, mark, pos)[1], total_mm)
        price = mark - share / (size * k)
        # Never worse than bankruptcy for the trader; within the market's price range.
        rounded = math.ceil(price) if size > 0 else math.floor(price)
        limit = min(max(rounded, spec.min_price_ticks), spec.max_price_ticks)
        past_range = (limit < price) if size > 0 else (limit > price)
        return Bankruptcy(equity, share, price, limit, past_range)

    def screen(self, symbol: str) -> list[Candidate]:
        """Liquidatable holders of `symbol` (unordered; the caller sorts): the vector screen
        over the mirror for a symbol with many holders, else the scalar loop (same answer)."""
        figures = self.vector_figures(symbol, None)
        if figures is None:
            return self.screen_scalar(symbol)
        hit = np.flatnonzero(figures.equity_atoms <= figures.maint_margin_atoms)
        names = self.account_names
        return [
            Candidate(equity, mm, names[idx], symbol, isolated)
            for idx, equity, mm, isolated in zip(
                figures.account_idx[hit].tolist(),
                figures.equity_atoms[hit].tolist(),
                figures.maint_margin_atoms[hit].tolist(),
                figures.isolated[hit].tolist(),
                strict=True,
            )
        ]

    def screen_scalar(self, symbol: str) -> list[Candidate]:
        """The screen one holder at a time, on the records (the specification)."""
        state = self.state
        found: list[Candidate] = []
        for name in state.holders[symbol]:
            acct = state.accounts[name]
            pos = acct.positions[symbol]
            equity, mm = self.figures(acct, pos)
            if equity <= mm:
                found.append(Candidate(equity, mm, name, symbol, pos.isolated))
        return found

    def margin_calls(
        self, symbol: str, old_mark_ticks: int, level_ppm: int, events: list[Event]
    ) -> None:
        """MarginCall for holders whose ratio crossed the warning level with this mark move."""
        figures = self.vector_figures(symbol, old_mark_ticks)
        if figures is None:
            self.margin_calls_scalar(symbol, old_mark_ticks, level_ppm, events)
            return
        assert figures.old_equity_atoms is not None and figures.old_maint_margin_atoms is not None
        level = level_ppm
        equity, mm = figures.equity_atoms, figures.maint_margin_atoms
        crossed = (
            (equity > mm)  # at or below MM it is liquidated instead
            & ratio_at_least(equity, mm, level)
            & ~ratio_at_least(figures.old_equity_atoms, figures.old_maint_margin_atoms, level)
        )
        hit = np.flatnonzero(crossed)
        names = self.account_names
        calls = sorted(
            (names[idx], e, m, isolated)
            for idx, e, m, isolated in zip(
                figures.account_idx[hit].tolist(),
                equity[hit].tolist(),
                mm[hit].tolist(),
                figures.isolated[hit].tolist(),
                strict=True,
            )
        )
        for name, e, m, isolated in calls:
            ratio_ppm = div(m * PPM, e, Rounding.CEIL)  # the ratio shown rounds up
            events.append(MarginCall(name, symbol, ratio_ppm, isolated))

    def margin_calls_scalar(
        self, symbol: str, old_mark_ticks: int, level_ppm: int, events: list[Event]
    ) -> None:
        state = self.state
        market = state.markets[symbol]
        spec = market.spec
        level = level_ppm
        for name in sorted(state.holders[symbol]):
            acct = state.accounts[name]
            pos = acct.positions[symbol]
            if pos.isolated:
                upnl, mm = upnl_mm(spec, market.mark_ticks, pos)
                equity = pos.margin.balance + upnl
                old_upnl, old_mm = upnl_mm(spec, old_mark_ticks, pos)
                old_equity = pos.margin.balance + old_upnl
            else:
                equity, mm = self.cross_figures(acct)
                old_equity, old_mm = self.cross_figures(acct, symbol, old_mark_ticks)
            if equity <= mm:
                continue  # liquidated instead
            if ratio_at_least_scalar(equity, mm, level) and not ratio_at_least_scalar(
                old_equity, old_mm, level
            ):
                ratio_ppm = div(mm * PPM, equity, Rounding.CEIL)
                events.append(MarginCall(name, symbol, ratio_ppm, pos.isolated))

    # -- the mirror ---------------------------------------------------------------------------

    def vector_figures(self, symbol: str, old_mark_ticks: int | None) -> MirrorFigures | None:
        """The mirror's figures for `symbol`, or None: few holders, or beyond its int64 proof."""
        if len(self.state.holders[symbol]) < self.vector_min_holders:
            return None
        mirror = self.sync_mirror()
        marks = {s: m.mark_ticks for s, m in self.state.markets.items()}
        return mirror.figures(symbol, marks, old_mark_ticks)

    def sync_mirror(self) -> RiskMirror:
        """Bring the mirror up to date: rebuild it, or refresh the touched accounts."""
        state = self.state
        touched = state.ledger.touched
        mirror = self.mirror
        # Refreshing an account costs about twice its share of the bulk rebuild (measured): in
        # a large engine with a quarter of the accounts touched (a funding settlement, say) the
        # rebuild is the cheaper way. Small engines always refresh (cheap either way).
        n_accounts = len(state.accounts)
        rebuild = len(touched) * 4 > n_accounts >= self.mirror_rebuild_min_accounts
        if mirror is None or mirror.poisoned or rebuild:
            touched.clear()
            return self.rebuild_mirror()
        if touched:
            names = sorted(touched)  # new accounts get their index in a reproducible order
            touched.clear()
            accounts = state.accounts
            index = self.account_index
            for name in names:
                acct = accounts.get(name)
                if acct is None:
                    continue
                idx = index.get(name)
                if idx is None:
                    idx = index[name] = mirror.add_account()
                    self.account_names.append(name)
                mirror.set_wallet(idx, acct.wallet.balance)
                for symbol, pos in acct.positions.items():
                    mirror.set_position(
                        symbol,
                        idx,
                        pos.size_lots,
                        pos.cost_atoms,
                        pos.isolated,
                        pos.margin.balance,
                        pos.leverage,
                    )
        return mirror

    def rebuild_mirror(self) -> RiskMirror:
        """The mirror from the records (accounts indexed in name order), in bulk."""
        state = self.state
        names = sorted(state.accounts)
        columns: dict[str, PositionColumns] = {s: ([], [], [], [], [], []) for s in state.markets}
        wallets: list[int] = []
        for idx, name in enumerate(names):
            acct = state.accounts[name]
            wallets.append(acct.wallet.balance)
            for symbol, pos in acct.positions.items():
                if pos.size_lots:
                    c = columns[symbol]
                    c[0].append(idx)
                    c[1].append(pos.size_lots)
                    c[2].append(pos.cost_atoms)
                    c[3].append(pos.isolated)
                    c[4].append(pos.margin.balance)
                    c[5].append(pos.leverage)
        specs = [m.spec for m in state.markets.values()]
        self.mirror = RiskMirror.from_state(specs, wallets, columns)
        self.account_index = {name: idx for idx, name in enumerate(names)}
        self.account_names = names
        return self.mirror

    def check_mirror(self) -> None:
        """The mirror (after a refresh) equals the records; AssertionError if not."""
        mirror = self.sync_mirror()
        mirror.check_invariants()
        state = self.state
        assert len(self.account_names) == mirror.n_accounts
        for name, idx in self.account_index.items():
            assert self.account_names[idx] == name
        for name, acct in state.accounts.items():
            known = self.account_index.get(name)
            if known is None:  # never touched: no money, no position
                assert not acct.wallet.balance
                assert not any(p.size_lots for p in acct.positions.values())
            elif ("", known) not in mirror.unmirrored:
                assert int(mirror.wallets[known]) == acct.wallet.balance, f"{name}: wallet drifted"
        for symbol, store in mirror.stores.items():
            rows = {self.account_names[row.account_idx]: row for row in store.rows()}
            expected = {}
            for name in state.holders[symbol]:
                if (symbol, self.account_index[name]) in mirror.unmirrored:
                    continue
                pos = state.accounts[name].positions[symbol]
                expected[name] = (
                    self.account_index[name],
                    pos.size_lots,
                    pos.cost_atoms,
                    pos.isolated,
                    pos.margin.balance,
                    pos.leverage,
                )
            assert {n: tuple(r) for n, r in rows.items()} == expected, f"{symbol}: rows drifted"

    # -- one account --------------------------------------------------------------------------


__all__ = [
    "MIRROR_REBUILD_MIN_ACCOUNTS",
    "VECTOR_MIN_HOLDERS",
    "Bankruptcy",
    "Candidate",
    "LiquidationScreen",
    "ratio_at_least_scalar",
    "upnl_mm",
]
