"""Liquidation: the risk pass after every mark change, the insurance fund and auto-deleveraging.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm; k = atoms_per_tick_lot.
Exact `int`s and `Fraction`s, except the screen and the ADL ranking of a symbol with many
holders (>= `VECTOR_MIN_HOLDERS`), which read the NumPy mirror of `risk.RiskMirror` (exact
int64, kept in sync through `Ledger.touched`; the ranking's float64 scores only narrow exact
comparisons, `adl.AdlQueueVector`); `screen_scalar` and `_adl_order_scalar` are their readable
twins, and tests run whole command streams both ways and require the same events and state
hash (tests/test_risk_mirror.py, tests/test_adl_vector.py).

The flow (DESIGN.md §5; MECHANICS.md §1.8, §2.3-2.4), run by the engine after every mark tick:

1. Queued accounts first (left over by the previous pass), then the holders of the symbol are
   screened: an isolated position is liquidatable when margin + uPnL <= its MM, a cross account
   when cross wallet + Σ cross uPnL <= Σ cross MM. Most underwater first (equity <= 0 first,
   deepest first; then margin ratio MM / equity, compared by cross-multiplication), ties by
   account and symbol; at most `max_liquidations_per_tick` per pass, the rest queued. Fills of
   one liquidation can make another account liquidatable (a stale bid above the new mark
   buys the position), so the screen repeats in the same pass until nothing new turns up.
   Margin calls are found the same way (vector or scalar) before the first screen.
2. Per account: exact recheck, `LiquidationTriggered`, cancel its orders (every symbol for a
   cross account, that symbol for an isolated position), recheck. With partial liquidation
   configured (`partial_from_bracket`, off by default; BitMEX/Bybit/OKX, MECHANICS.md §2.3,
   §3), a position in a high bracket first gets one Fill-or-Kill order at the bankruptcy price
   or better that takes it down to a lower bracket (or by a fraction), keeps the whole margin
   behind the rest, pays the clearance fee on what it closed, and rechecks; if that order
   cannot fill or the account is still at or below MM, the full process follows. Then close
   the whole position: an IOC reduce-only liquidation order through the book (`book.match`
   and the engine's normal settlement: makers get maker fills and pay maker fees, the
   liquidated side pays no taker fee) limited at the bankruptcy price, rounded toward the
   trader's favour by less than a tick (ceil when selling a long, floor when buying back a
   short).
3. The trader keeps nothing of the margin behind the position: whatever the fills made over
   the bankruptcy price goes to the symbol's insurance fund (the clearance fee first, then the
   rest). What the book did not take at bankruptcy the fund takes over and closes through the
   book at worse prices, no further than `max_fund_distance_ppm` from the mark and no further
   than its balance can pay (so the fund never goes below zero), and it pays the deficit,
   leaving the trader at exactly zero (non-recourse).
4. What is still open is auto-deleveraged: the opposite positions ranked by PnL% × effective
   leverage (`perpex.core.adl`, MECHANICS.md §2.4), each closed (partly if enough) at the
   liquidated position's bankruptcy price, without fee, their orders in that symbol canceled.
   With many holders only the head of the queue is ranked, as far as the lots need.

Bankruptcy price. Isolated: where margin + uPnL = 0 (`margin.bankruptcy_price_ticks`). Cross:
the account's whole margin balance E stands behind all its cross positions; each position is
given the share E × MM_i / Σ MM (dYdX's GetBankruptcyPriceInQuoteQuantums, MECHANICS.md §5.2),
so its bankruptcy price is mark − share / (size × k). With one cross position that is exactly
Binance's formula (wallet + other uPnL, §1.5); with several, no single position's price has to
carry the whole account (which could put it past the market's price range and hand an ADL
counterparty an absurd price). A liquidated cross account is closed completely: once the
first position has given up its share, the rest of the account is at its MM or below.

Accounting. Closing a position at its bankruptcy price leaves the margin behind it at the
target (0 for an isolated position; E - share for a cross account). After all fills the
difference between what is left and the target is moved, rounded up in the fund's favour:
to the fund when positive, from the fund when negative. The fund's part of the book is planned
so that this payment never exceeds its balance; ADL closes the rest at a price no worse for the
trader than bankruptcy, so the trader never ends below the target.

Insurance funds. One fund for every symbol by default. With `fund_symbols` set (Binance,
MECHANICS.md §1.8: "BTCUSDT and ETHUSDT have their own funds; other perpetuals share one")
those symbols each have a fund of their own and the rest share the common one. The money of all
funds is one ledger bucket, INSURANCE (so conservation and the ledger's sum do not change);
`Liquidator.pots` splits it into shares ("" the common one, else a symbol), which are state (in
the record, so in the hash and the snapshot). Every movement names its symbol and moves that
symbol's share with the bucket (`_fund`): fees and surpluses in, deficits out, the fund's
takeover budget limited by the share, deposits into the share named. The shares sum to the
bucket and none is below zero (`check`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import msgspec
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
from perpex.core.engine import MAX_AMOUNT_ATOMS, EngineError, Order
from perpex.core.messages import (
    AutoDeleveraged,
    DepositInsurance,
    EndReason,
    Event,
    FundReason,
    InsuranceFundChanged,
    LiquidationTriggered,
    MarginCall,
    OrderAccepted,
    OrderCanceled,
    OrderType,
    PositionChanged,
    Reason,
    RequestRejected,
    TimeInForce,
)
from perpex.core.risk import MirrorFigures, PositionColumns, RiskMirror, ratio_at_least
from perpex.core.units import PPM, Rounding, div

if TYPE_CHECKING:
    from perpex.core.engine import Account, Engine, MarketState, Position
    from perpex.core.ledger import Bucket
    from perpex.core.markets import MarketSpec

MAX_FUND_LEVELS: Final = 10_000  # book levels the fund walks for one position, at most
# A symbol with at least this many holders is screened by the NumPy mirror (`risk.RiskMirror`),
# one with fewer by the scalar loop: below it the loop is faster than refreshing the mirror.
# Both give the same answer; `Liquidator.vector_min_holders` overrides it (0: always vector).
VECTOR_MIN_HOLDERS: Final = 512
MIRROR_REBUILD_MIN_ACCOUNTS: Final = 4_096  # below it the mirror is never rebuilt wholesale
MAX_FUND_SYMBOLS: Final = 1_000  # symbols with an insurance fund of their own, at most
COMMON_FUND: Final = ""  # the key of the fund every symbol without its own shares


class LiquidationConfig(msgspec.Struct, frozen=True, array_like=True):
    """The liquidation engine's parameters (part of the state hash)."""

    max_liquidations_per_tick: int = 50  # accounts handled per pass; the rest wait in a queue
    clearance_fee_ppm: int = 5_000  # of the liquidated notional (Binance: "up to 0.5 %")
    max_fund_distance_ppm: int = 100_000  # the fund closes no further than 10 % from the mark
    margin_call_ppm: int = 800_000  # MarginCall when MM / margin balance crosses 80 %
    # Partial liquidation (BitMEX, Bybit, OKX; MECHANICS.md §2.3, §3): off (0) by default, as
    # Binance's published process closes the whole position. From this bracket number up (>= 2)
    # a liquidation first sends one Fill-or-Kill order that brings the position's notional at
    # the mark below the cap of the bracket `partial_brackets_down` lower (or, when
    # `partial_fraction_ppm` is set, closes that fraction of it), keeps the whole margin behind
    # the rest, charges the clearance fee on the part closed and rechecks; only if that order
    # cannot fill, or the account is still at or below its MM, does the full process follow.
    partial_from_bracket: int = 0
    partial_brackets_down: int = 1  # BitMEX/Bybit: "a lower risk limit"; OKX drops two tiers
    partial_fraction_ppm: int = 0  # > 0: close this share of the position instead
    # Insurance funds (MECHANICS.md §1.8; Binance: "BTCUSDT and ETHUSDT have their own funds;
    # other perpetuals share one"): the listed symbols with a fund of their own. Every other
    # symbol draws on the common fund. Empty (the default): one fund for all.
    fund_symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 1 <= self.max_liquidations_per_tick <= 1_000_000:
            raise ValueError("max_liquidations_per_tick must be in [1, 1000000]")
        if not 0 <= self.clearance_fee_ppm < PPM:
            raise ValueError("clearance_fee_ppm must be in [0, 1000000)")
        if not 0 < self.max_fund_distance_ppm < PPM:
            raise ValueError("max_fund_distance_ppm must be in (0, 1000000)")
        if not 0 < self.margin_call_ppm <= PPM:
            raise ValueError("margin_call_ppm must be in (0, 1000000]")
        if self.partial_from_bracket != 0 and not 2 <= self.partial_from_bracket <= 1_000:
            raise ValueError("partial_from_bracket must be 0 (off) or in [2, 1000]")
        if not 1 <= self.partial_brackets_down <= 1_000:
            raise ValueError("partial_brackets_down must be in [1, 1000]")
        if not 0 <= self.partial_fraction_ppm < PPM:
            raise ValueError("partial_fraction_ppm must be in [0, 1000000)")
        if not isinstance(self.fund_symbols, tuple) or len(self.fund_symbols) > MAX_FUND_SYMBOLS:
            raise ValueError(f"fund_symbols must be a tuple of at most {MAX_FUND_SYMBOLS} symbols")
        if not all(isinstance(s, str) and s for s in self.fund_symbols):
            raise ValueError("fund_symbols must be non-empty symbol names")
        if len(set(self.fund_symbols)) != len(self.fund_symbols):
            raise ValueError("fund_symbols lists a symbol twice")


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


def _more_underwater(a: Candidate, b: Candidate) -> int:
    """Sort order: equity <= 0 first (deepest first), then the larger MM / equity, then names."""
    a_bust, b_bust = a.equity_atoms <= 0, b.equity_atoms <= 0
    if a_bust != b_bust:
        return -1 if a_bust else 1
    if a_bust:
        if a.equity_atoms != b.equity_atoms:
            return -1 if a.equity_atoms < b.equity_atoms else 1
    else:
        # MM_a / E_a > MM_b / E_b, both equities positive: cross-multiply, exactly.
        lhs = a.maint_margin_atoms * b.equity_atoms
        rhs = b.maint_margin_atoms * a.equity_atoms
        if lhs != rhs:
            return -1 if lhs > rhs else 1
    ka, kb = (a.account, a.symbol), (b.account, b.symbol)
    return -1 if ka < kb else (1 if ka > kb else 0)


def _upnl_mm(spec: MarketSpec, mark_ticks: int, pos: Position) -> tuple[int, int]:
    """(uPnL, MM) of one position at a mark."""
    value = pos.size_lots * mark_ticks * spec.atoms_per_tick_lot
    return value - pos.cost_atoms, spec.maintenance_margin_atoms(abs(value))


def _ratio_at_least(equity_atoms: int, maint_margin_atoms: int, level_ppm: int) -> bool:
    """MM / equity >= level (always, when equity <= 0)."""
    return equity_atoms <= 0 or maint_margin_atoms * PPM >= level_ppm * equity_atoms


class Liquidator:
    """The engine's liquidation state (config and queue) and the risk pass that uses it.

    Its state includes the shares of the insurance funds in the INSURANCE bucket (`pots`: ""
    for the common fund, a symbol for a fund of its own; see the module docstring).

    Besides that state it keeps a derived one, outside the state hash and the snapshot: the
    NumPy mirror of the positions and cross wallets that the vector screen reads. It is built
    from the engine's objects on first use (so after `Engine.restore` too) and then refreshed
    only for the accounts `Ledger.touched` names: every bucket transfer records its owner, and
    `_settle_fill` and `_set_leverage` add the account they change.
    """

    __slots__ = (
        "account_index",
        "account_names",
        "clean",
        "config",
        "engine",
        "mirror",
        "pots",
        "queue",
        "vector_min_holders",
    )

    def __init__(self, engine: Engine, config: LiquidationConfig) -> None:
        self.engine = engine
        self._check_fund_symbols(config)
        self.config = config
        self.queue: list[tuple[str, str]] = []  # (account, symbol) waiting for the next pass
        # fund ("" or a symbol of `config.fund_symbols`) -> its share of the INSURANCE bucket
        self.pots: dict[str, int] = self._empty_pots(config)
        # Derived state (not hashed, not snapshotted): see the class docstring.
        self.vector_min_holders = VECTOR_MIN_HOLDERS
        self.mirror: RiskMirror | None = None  # None: (re)build before the next vector screen
        self.account_index: dict[str, int] = {}  # account -> row index in the mirror
        self.account_names: list[str] = []  # and back
        # symbol -> the state key at which its last pass found nothing to do (`_state_key`)
        self.clean: dict[str, tuple[int, int, tuple[int, ...]]] = {}

    # -- state --------------------------------------------------------------------------------
    def record(self) -> list[Any]:
        """[config, queue] with one fund; [config + fund symbols, queue, shares] with several
        (so an engine with one fund hashes and snapshots as it did before there were several)."""
        c = self.config
        config: list[Any] = [
            c.max_liquidations_per_tick,
            c.clearance_fee_ppm,
            c.max_fund_distance_ppm,
            c.margin_call_ppm,
            c.partial_from_bracket,
            c.partial_brackets_down,
            c.partial_fraction_ppm,
        ]
        record: list[Any] = [config, [[account, symbol] for account, symbol in self.queue]]
        if c.fund_symbols:
            config.append(list(c.fund_symbols))
            record.append(sorted([fund, atoms] for fund, atoms in self.pots.items()))
        return record

    def load(self, record: list[Any]) -> None:
        """Restore `record`. The engine's ledger must already hold its balances: with a single
        fund the record has no shares, and the common one is the whole INSURANCE bucket."""
        config, queue, *shares = record
        loaded = msgspec.convert(config, LiquidationConfig)  # array-like: lists become tuples
        self._check_fund_symbols(loaded)
        self.config = loaded
        self.queue = [(account, symbol) for account, symbol in queue]
        if shares:
            self.pots = {str(fund): int(atoms) for fund, atoms in shares[0]}
            assert set(self.pots) == set(self._empty_pots(loaded)), "fund shares do not match"
        else:
            self.pots = {COMMON_FUND: self.engine.ledger.insurance.balance}
        self.mirror = None  # the engine's objects were written directly: rebuild

    def _check_fund_symbols(self, config: LiquidationConfig) -> None:
        for symbol in config.fund_symbols:
            if symbol not in self.engine.markets:
                raise EngineError(f"insurance fund configured for {symbol}, which is not listed")

    @staticmethod
    def _empty_pots(config: LiquidationConfig) -> dict[str, int]:
        return dict.fromkeys((COMMON_FUND, *config.fund_symbols), 0)

    def check(self) -> None:
        """The fund shares split the INSURANCE bucket exactly, none below zero (DESIGN.md §6
        promise 4 for every fund); AssertionError if not."""
        assert set(self.pots) == set(self._empty_pots(self.config)), "fund shares drifted"
        for fund, atoms in self.pots.items():
            assert atoms >= 0, f"insurance fund {fund or 'common'} below zero"
        insurance = self.engine.ledger.insurance.balance
        assert sum(self.pots.values()) == insurance, "fund shares != INSURANCE bucket"

    # -- the funds ----------------------------------------------------------------------------
    def fund_of(self, symbol: str) -> str:
        """The fund that pays for `symbol`: its own, or the common one ("")."""
        return symbol if symbol in self.pots else COMMON_FUND

    def fund_atoms(self, symbol: str | None = None) -> int:
        """All funds together (None), or the balance of the fund that pays for `symbol`."""
        if symbol is None:
            return self.engine.ledger.insurance.balance
        return self.pots[self.fund_of(symbol)]

    def seed(self, source: Bucket, atoms: int) -> None:
        """The common fund's seed from outside (the engine's constructor; no event)."""
        ledger = self.engine.ledger
        ledger.transfer(source, ledger.insurance, atoms)
        self.pots[COMMON_FUND] += atoms
        assert self.pots[COMMON_FUND] >= 0, "insurance fund below zero"

    def pay_deficit(
        self,
        destination: Bucket,
        deficit_atoms: int,
        account: str,
        symbol: str,
        events: list[Event],
    ) -> int:
        """The fund of `symbol` pays `deficit_atoms` into `destination`, as far as its balance
        goes (it never goes below zero); returns what it paid."""
        paid = min(deficit_atoms, self.fund_atoms(symbol))
        if paid <= 0:
            return 0
        self._fund(destination, -paid, FundReason.LIQUIDATION_DEFICIT, account, symbol, events)
        return paid

    # -- commands -----------------------------------------------------------------------------
    def deposit_insurance(self, cmd: DepositInsurance) -> list[Event]:
        """Into the fund of `cmd.symbol` (its own, or the common one), or the common fund."""
        symbol = cmd.symbol
        if symbol != COMMON_FUND and symbol not in self.engine.markets:
            return [RequestRejected("", str(symbol), Reason.UNKNOWN_SYMBOL)]
        if not 0 < cmd.amount_atoms <= MAX_AMOUNT_ATOMS:
            return [RequestRejected("", symbol, Reason.INVALID_AMOUNT)]
        ledger = self.engine.ledger
        events: list[Event] = []
        self._fund(ledger.external, cmd.amount_atoms, FundReason.DEPOSIT, "", symbol, events)
        return events

    # -- figures ------------------------------------------------------------------------------
    def cross_figures(
        self, acct: Account, symbol: str | None = None, mark_ticks: int = 0
    ) -> tuple[int, int]:
        """(cross wallet + Σ cross uPnL, Σ cross MM), optionally with `symbol` at `mark_ticks`."""
        markets = self.engine.markets
        upnl = mm = 0
        for pos in acct.positions.values():
            if not pos.size_lots or pos.isolated:
                continue
            market = markets[pos.symbol]
            mark = mark_ticks if pos.symbol == symbol else market.mark_ticks
            u, m = _upnl_mm(market.spec, mark, pos)
            upnl += u
            mm += m
        return acct.wallet.balance + upnl, mm

    def figures(self, acct: Account, pos: Position) -> tuple[int, int]:
        """(equity, MM) that decide whether the position (isolated) or account (cross) goes."""
        if pos.isolated:
            market = self.engine.markets[pos.symbol]
            upnl, mm = _upnl_mm(market.spec, market.mark_ticks, pos)
            return pos.margin.balance + upnl, mm
        return self.cross_figures(acct)

    def adl_quantile(self, account: str, symbol: str) -> int:
        """The ADL lights (1-5) shown for the account's position in `symbol`; 0 when flat.

        Ranked against the other positions on its side of that symbol exactly as
        `_deleverage` would take them (equal scores by account name); only a profitable
        position lights up (`perpex.core.adl`). O(holders of the symbol): a view, not the pass.
        """
        engine = self.engine
        acct = engine.accounts.get(account)
        pos = None if acct is None else acct.positions.get(symbol)
        if acct is None or pos is None or not pos.size_lots:
            return 0
        market = engine.markets[symbol]
        mark, k = market.mark_ticks, market.spec.atoms_per_tick_lot
        equity = self.figures(acct, pos)[0]
        score = adl_score(AdlPosition(0, pos.size_lots, pos.cost_atoms, equity), mark, k)
        if score is None or score <= 0:
            return 1  # not profitable: the lowest light, wherever it stands in the queue
        figures = self._vector_figures(symbol, None)
        if figures is not None:
            return self._adl_quantile_vector(account, pos, score, figures, mark, k)
        long = pos.size_lots > 0
        same_side: list[AdlPosition] = []
        mine = -1
        for idx, name in enumerate(sorted(engine.holders[symbol])):
            other_acct = engine.accounts[name]
            other = other_acct.positions[symbol]
            if (other.size_lots > 0) != long:
                continue
            if name == account:
                mine = len(same_side)
            equity = self.figures(other_acct, other)[0]
            same_side.append(AdlPosition(idx, other.size_lots, other.cost_atoms, equity))
        assert mine >= 0, "holder index drifted"
        return adl_quantile(same_side, mine, mark, k)

    def _adl_quantile_vector(
        self,
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
        assert self.mirror is not None
        store = self.mirror.stores[pos.symbol]
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
        names = self.account_names
        for row in candidates[close].tolist():
            other = AdlPosition(
                int(figures.account_idx[row]), int(size[row]), int(cost[row]), int(equity[row])
            )
            other_score = adl_score(other, mark_ticks, atoms_per_tick_lot)
            assert other_score is not None
            if other_score > score or (
                other_score == score and names[other.account_idx] <= account
            ):
                at_or_above += abs(other.size_lots)
        # the percentile rounds up to the next 20 % step, as in `adl_quantiles`
        return LIGHTS + 1 - div(LIGHTS * at_or_above, total_lots, Rounding.CEIL)

    # -- the pass -----------------------------------------------------------------------------
    def run_pass(self, symbol: str, old_mark_ticks: int, events: list[Event]) -> None:
        """Everything a mark change of `symbol` sets off: margin calls and liquidations."""
        if not self.queue and self.clean.get(symbol) == self._state_key():
            # Nothing moved since a pass of this symbol found nothing: no transfer, no trade,
            # no mark. The same screen would find nothing again (a cache, not state).
            return
        budget = self.config.max_liquidations_per_tick
        dirty = {symbol}  # symbols whose books or positions this pass changed
        queued, self.queue = self.queue, []
        for account, sym in queued:
            if budget:
                budget -= 1
                self._liquidate(account, sym, events, dirty)
            else:
                self.queue.append((account, sym))
        if old_mark_ticks and old_mark_ticks != self.engine.markets[symbol].mark_ticks:
            # (at an unchanged mark no ratio can cross the warning level by the mark)
            self._margin_calls(symbol, old_mark_ticks, events)
        # Screen again after every round: the fills of one liquidation can sink another account
        # (a cascade). Bounded: every round with candidates spends at least one unit of the
        # budget; once it is spent, what the last screen found waits in the queue.
        while True:
            waiting = set(self.queue)
            candidates = [
                c
                for s in sorted(dirty)
                for c in self.screen(s)
                if (c.account, c.symbol) not in waiting
            ]
            if not candidates:
                if not self.queue:
                    key = self._state_key()
                    for s in dirty:
                        self.clean[s] = key
                return
            candidates.sort(key=functools.cmp_to_key(_more_underwater))
            seen_cross: set[str] = set()
            for c in candidates:
                if not c.isolated:
                    if c.account in seen_cross:
                        continue  # one cross account, found through two of its symbols
                    seen_cross.add(c.account)
                if budget:
                    budget -= 1
                    self._liquidate(c.account, c.symbol, events, dirty)
                else:
                    self.queue.append((c.account, c.symbol))
            if waiting != set(self.queue):
                return  # the budget ran out in this round

    def _state_key(self) -> tuple[int, int, tuple[int, ...]]:
        """What a screen's answer depends on: balances (every change is a ledger transfer),
        positions (every change is a trade; a flat position's leverage and mode do not count)
        and the marks of all symbols (a cross account spans them)."""
        engine = self.engine
        marks = tuple(m.mark_ticks for m in engine.markets.values())
        return engine.ledger.transfers, engine.next_trade_id, marks

    def screen(self, symbol: str) -> list[Candidate]:
        """Liquidatable holders of `symbol` (unordered; the caller sorts): the vector screen
        over the mirror for a symbol with many holders, else the scalar loop (same answer)."""
        figures = self._vector_figures(symbol, None)
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
        """The screen one holder at a time, on the engine's objects (the specification)."""
        engine = self.engine
        found: list[Candidate] = []
        for name in engine.holders[symbol]:
            acct = engine.accounts[name]
            pos = acct.positions[symbol]
            equity, mm = self.figures(acct, pos)
            if equity <= mm:
                found.append(Candidate(equity, mm, name, symbol, pos.isolated))
        return found

    def _margin_calls(self, symbol: str, old_mark_ticks: int, events: list[Event]) -> None:
        """MarginCall for holders whose ratio crossed the warning level with this mark move."""
        figures = self._vector_figures(symbol, old_mark_ticks)
        if figures is None:
            self._margin_calls_scalar(symbol, old_mark_ticks, events)
            return
        assert figures.old_equity_atoms is not None and figures.old_maint_margin_atoms is not None
        level = self.config.margin_call_ppm
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

    def _margin_calls_scalar(self, symbol: str, old_mark_ticks: int, events: list[Event]) -> None:
        engine = self.engine
        market = engine.markets[symbol]
        spec = market.spec
        level = self.config.margin_call_ppm
        for name in sorted(engine.holders[symbol]):
            acct = engine.accounts[name]
            pos = acct.positions[symbol]
            if pos.isolated:
                upnl, mm = _upnl_mm(spec, market.mark_ticks, pos)
                equity = pos.margin.balance + upnl
                old_upnl, old_mm = _upnl_mm(spec, old_mark_ticks, pos)
                old_equity = pos.margin.balance + old_upnl
            else:
                equity, mm = self.cross_figures(acct)
                old_equity, old_mm = self.cross_figures(acct, symbol, old_mark_ticks)
            if equity <= mm:
                continue  # liquidated instead
            if _ratio_at_least(equity, mm, level) and not _ratio_at_least(
                old_equity, old_mm, level
            ):
                ratio_ppm = div(mm * PPM, equity, Rounding.CEIL)
                events.append(MarginCall(name, symbol, ratio_ppm, pos.isolated))

    # -- the mirror ---------------------------------------------------------------------------
    def _vector_figures(self, symbol: str, old_mark_ticks: int | None) -> MirrorFigures | None:
        """The mirror's figures for `symbol`, or None: few holders, or beyond its int64 proof."""
        if len(self.engine.holders[symbol]) < self.vector_min_holders:
            return None
        mirror = self.sync_mirror()
        marks = {s: m.mark_ticks for s, m in self.engine.markets.items()}
        return mirror.figures(symbol, marks, old_mark_ticks)

    def sync_mirror(self) -> RiskMirror:
        """Bring the mirror up to date: rebuild it, or refresh the touched accounts."""
        engine = self.engine
        touched = engine.ledger.touched
        mirror = self.mirror
        # Refreshing an account costs about twice its share of the bulk rebuild (measured): in
        # a large engine with a quarter of the accounts touched (a funding settlement, say) the
        # rebuild is the cheaper way. Small engines always refresh (cheap either way).
        n_accounts = len(engine.accounts)
        rebuild = len(touched) * 4 > n_accounts >= MIRROR_REBUILD_MIN_ACCOUNTS
        if mirror is None or mirror.poisoned or rebuild:
            touched.clear()
            return self._rebuild_mirror()
        if touched:
            names = sorted(touched)  # new accounts get their index in a reproducible order
            touched.clear()
            accounts = engine.accounts
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

    def _rebuild_mirror(self) -> RiskMirror:
        """The mirror from the engine's objects (accounts indexed in name order), in bulk."""
        engine = self.engine
        names = sorted(engine.accounts)
        columns: dict[str, PositionColumns] = {s: ([], [], [], [], [], []) for s in engine.markets}
        wallets: list[int] = []
        for idx, name in enumerate(names):
            acct = engine.accounts[name]
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
        specs = [m.spec for m in engine.markets.values()]
        self.mirror = RiskMirror.from_state(specs, wallets, columns)
        self.account_index = {name: idx for idx, name in enumerate(names)}
        self.account_names = names
        return self.mirror

    def check_mirror(self) -> None:
        """The mirror (after a refresh) equals the engine's objects; AssertionError if not."""
        mirror = self.sync_mirror()
        mirror.check_invariants()
        engine = self.engine
        assert len(self.account_names) == mirror.n_accounts
        for name, idx in self.account_index.items():
            assert self.account_names[idx] == name
        for name, acct in engine.accounts.items():
            known = self.account_index.get(name)
            if known is None:  # never touched: no money, no position
                assert not acct.wallet.balance
                assert not any(p.size_lots for p in acct.positions.values())
            elif ("", known) not in mirror.unmirrored:
                assert int(mirror.wallets[known]) == acct.wallet.balance, f"{name}: wallet drifted"
        for symbol, store in mirror.stores.items():
            rows = {self.account_names[row.account_idx]: row for row in store.rows()}
            expected = {}
            for name in engine.holders[symbol]:
                if (symbol, self.account_index[name]) in mirror.unmirrored:
                    continue
                pos = engine.accounts[name].positions[symbol]
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
    def _liquidate(self, account: str, symbol: str, events: list[Event], dirty: set[str]) -> bool:
        """Recheck and, if still at or below MM, liquidate. True when it was liquidated."""
        acct = self.engine.accounts.get(account)
        pos = None if acct is None else acct.positions.get(symbol)
        if acct is None or pos is None or not pos.size_lots:
            return False
        equity, mm = self.figures(acct, pos)
        if equity > mm:
            return False
        events.append(LiquidationTriggered(account, symbol, pos.isolated, equity, mm))
        self._cancel_orders(acct, pos, events)
        # Open orders do not count in the trigger (equity vs MM), but Binance rechecks after
        # canceling and so do we: a rule that changes would otherwise silently over-liquidate.
        equity, mm = self.figures(acct, pos)
        if equity > mm:
            return True
        if self.config.partial_from_bracket and self._reduce(acct, pos, events, dirty):
            return True  # a partial liquidation brought it back above MM
        self._close(acct, pos, events, dirty)
        if not pos.isolated:
            # The first position gave up its share of the margin balance; what is left stands
            # behind the rest at their MM or below, so the whole cross account goes.
            for other_symbol in sorted(acct.positions):
                other = acct.positions[other_symbol]
                if other.isolated or not other.size_lots:
                    continue
                equity, mm = self.cross_figures(acct)
                if equity > mm:
                    break
                events.append(LiquidationTriggered(account, other_symbol, False, equity, mm))
                self._close(acct, other, events, dirty)
        return True

    def _cancel_orders(self, acct: Account, pos: Position, events: list[Event]) -> None:
        engine = self.engine
        if pos.isolated:
            orders = [pos.open_orders[oid] for oid in sorted(pos.open_orders)]
        else:
            orders = [acct.orders[oid] for oid in sorted(acct.orders)]
        for order in orders:
            market = engine.markets[order.symbol]
            owner = acct.positions[order.symbol]
            engine._end_order(acct, owner, market, order, EndReason.LIQUIDATION, events)

    # -- one position -------------------------------------------------------------------------
    def bankruptcy(self, acct: Account, pos: Position) -> Bankruptcy:
        """The position's bankruptcy price at the mark and the order limit that goes with it."""
        market = self.engine.markets[pos.symbol]
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
            share = Fraction(equity * _upnl_mm(spec, mark, pos)[1], total_mm)
        price = mark - share / (size * k)
        # Never worse than bankruptcy for the trader; within the market's price range.
        rounded = math.ceil(price) if size > 0 else math.floor(price)
        limit = min(max(rounded, spec.min_price_ticks), spec.max_price_ticks)
        past_range = (limit < price) if size > 0 else (limit > price)
        return Bankruptcy(equity, share, price, limit, past_range)

    def partial_lots(self, pos: Position) -> int:
        """Lots a partial liquidation closes first (0: none, the whole position goes).

        Only for a position whose notional at the mark is in bracket `partial_from_bracket`
        or above. Either `partial_fraction_ppm` of it, rounded up to a lot, or what brings the
        notional below the cap of the bracket `partial_brackets_down` lower (a notional on a cap
        belongs to the bracket above, MECHANICS.md §1.2). Never all of it.
        """
        config = self.config
        market = self.engine.markets[pos.symbol]
        spec = market.spec
        lot_atoms = market.mark_ticks * spec.atoms_per_tick_lot
        held = abs(pos.size_lots)
        bracket = spec.bracket_for(held * lot_atoms)
        if not config.partial_from_bracket or bracket.index < config.partial_from_bracket:
            return 0
        if config.partial_fraction_ppm:
            # at least the configured share: whole lots, rounded up
            lots = div(held * config.partial_fraction_ppm, PPM, Rounding.CEIL)
        else:
            position_in_table = spec.brackets.index(bracket)
            target = spec.brackets[max(position_in_table - config.partial_brackets_down, 0)]
            # the most lots whose notional stays strictly below the target's cap: floor
            keep = div(target.cap_atoms - 1, lot_atoms, Rounding.FLOOR)
            lots = held - keep
        return lots if 0 < lots < held else 0

    def _reduce(self, acct: Account, pos: Position, events: list[Event], dirty: set[str]) -> bool:
        """The partial step (BitMEX/Bybit, MECHANICS.md §2.3, §3.1): one Fill-or-Kill order per
        eligible position (the isolated one, or the account's cross positions by symbol) at
        the bankruptcy price or better. True once the position (isolated) or the account
        (cross) is above its MM again."""
        if pos.isolated:
            candidates = [pos]
        else:
            candidates = [
                acct.positions[s]
                for s in sorted(acct.positions)
                if not acct.positions[s].isolated and acct.positions[s].size_lots
            ]
        for candidate in candidates:
            lots = self.partial_lots(candidate)
            if lots and self._reduce_one(acct, candidate, lots, events, dirty):
                equity, mm = self.figures(acct, pos)
                if equity > mm:
                    return True
        return False

    def _reduce_one(
        self, acct: Account, pos: Position, lots: int, events: list[Event], dirty: set[str]
    ) -> bool:
        """Close `lots` of the position in one Fill-or-Kill order; False when it cannot fill."""
        engine = self.engine
        ledger = engine.ledger
        market = engine.markets[pos.symbol]
        spec = market.spec
        symbol = spec.symbol
        bust = self.bankruptcy(acct, pos)
        if bust.equity_atoms <= 0 or bust.past_range:
            return False  # nothing left to keep behind a smaller position
        close_side = SELL if pos.size_lots > 0 else BUY
        fillable, _ = market.book.walk(close_side, bust.limit_ticks, lots, acct.name)
        if fillable < lots:
            return False  # Fill-or-Kill: all of it at bankruptcy or better, or nothing
        dirty.add(symbol)
        wallet_before = acct.wallet.balance
        quote_ticks = self._match(
            acct, pos, market, close_side, bust.limit_ticks, lots, events, TimeInForce.FOK
        )
        if pos.isolated:
            # A fill that reduces an isolated position releases its share of the margin to the
            # wallet; a liquidation keeps all of it behind the rest (BitMEX: the position moves
            # to a lower risk limit with its margin), so it goes back.
            released = acct.wallet.balance - wallet_before
            if released:
                ledger.transfer(acct.wallet, pos.margin, released)
            equity = pos.margin.balance + _upnl_mm(spec, market.mark_ticks, pos)[0]
            source = pos.margin
        else:
            equity = self.cross_figures(acct)[0]
            source = acct.wallet
        # The clearance fee on the part closed only (MECHANICS.md §1.8), rounded up for the
        # fund, never more than the trader has left.
        fee = div(
            quote_ticks * spec.atoms_per_tick_lot * self.config.clearance_fee_ppm,
            PPM,
            Rounding.CEIL,
        )
        fee = min(fee, max(equity, 0), max(source.balance, 0))
        if fee:
            self._fund(source, fee, FundReason.CLEARANCE_FEE, acct.name, symbol, events)
        events.append(
            PositionChanged(acct.name, symbol, pos.size_lots, pos.cost_atoms, pos.margin.balance)
        )
        return True

    def _close(self, acct: Account, pos: Position, events: list[Event], dirty: set[str]) -> None:
        """Close the whole position: book at bankruptcy, then the fund, then ADL; settle."""
        engine = self.engine
        market = engine.markets[pos.symbol]
        spec = market.spec
        k = spec.atoms_per_tick_lot
        mark = market.mark_ticks
        size = pos.size_lots
        close_side = SELL if size > 0 else BUY
        dirty.add(spec.symbol)
        wallet_before = acct.wallet.balance
        isolated = pos.isolated

        def equity_now() -> int:
            """Margin behind the position now (isolated: incl. what fills released)."""
            if isolated:
                upnl = pos.size_lots * mark * k - pos.cost_atoms
                return pos.margin.balance + acct.wallet.balance - wallet_before + upnl
            return self.cross_figures(acct)[0]

        equity, share, _, price, worse_than_bankruptcy = self.bankruptcy(acct, pos)
        target = equity - share  # what is left behind the account once the position is gone

        closed_quote_ticks = 0  # Σ price x lots of the closing fills, for the clearance fee
        # 1. the liquidation order through the book, at the bankruptcy price or better
        closed_quote_ticks += self._match(acct, pos, market, close_side, price, abs(size), events)
        # 2. the fund takes over what is left and closes it past bankruptcy, within bounds
        left = abs(pos.size_lots)
        if left:
            room = equity_now() + pos.size_lots * (price - mark) * k - target
            lots, worst = self._fund_plan(market, close_side, price, left, room)
            if lots:
                closed_quote_ticks += self._match(
                    acct, pos, market, close_side, worst, lots, events
                )
        # 3. auto-deleveraging for the rest, at the bankruptcy price
        left = abs(pos.size_lots)
        if left:
            self._deleverage(acct, pos, market, price, events)
            closed_quote_ticks += left * price
        assert pos.size_lots == 0 and pos.margin.balance == 0, "liquidated position not closed"
        # 4. the trader keeps nothing over the target; the fund pays what is missing
        transfer = math.ceil(equity_now() - target)
        name, symbol = acct.name, spec.symbol
        if transfer > 0:
            fee = min(
                div(closed_quote_ticks * k * self.config.clearance_fee_ppm, PPM, Rounding.CEIL),
                transfer,
            )
            if fee:
                self._fund(acct.wallet, fee, FundReason.CLEARANCE_FEE, name, symbol, events)
            if transfer > fee:
                self._fund(
                    acct.wallet,
                    transfer - fee,
                    FundReason.LIQUIDATION_SURPLUS,
                    name,
                    symbol,
                    events,
                )
        elif transfer < 0:
            # The fund plan keeps this within the balance. Only a bankruptcy price outside the
            # market's price range (clamped above) can ask for more; the fund still never goes
            # below zero, and what it cannot pay stays visible on the trader's wallet.
            self.pay_deficit(acct.wallet, -transfer, name, symbol, events)
        # Non-recourse, where it is written: the trader ends at the target (less than an atom
        # below it for a cross share), never below; an isolated trader's wallet is untouched.
        assert worse_than_bankruptcy or equity_now() > target - 1, "trader left below target"
        assert worse_than_bankruptcy or not isolated or acct.wallet.balance == wallet_before

    def _fund(
        self,
        source: Bucket,
        atoms: int,
        reason: FundReason,
        account: str,
        symbol: str,
        events: list[Event],
    ) -> None:
        """Move `atoms` from `source` into the fund of `symbol` (negative: out of it), and say
        so with that fund's new balance. The only way money enters or leaves a fund after the
        seed."""
        ledger = self.engine.ledger
        fund = self.fund_of(symbol)
        ledger.transfer(source, ledger.insurance, atoms)
        balance = self.pots[fund] = self.pots[fund] + atoms
        assert balance >= 0, "insurance fund below zero"
        events.append(InsuranceFundChanged(atoms, balance, reason, account, symbol))

    def _match(
        self,
        acct: Account,
        pos: Position,
        market: MarketState,
        side: int,
        limit_ticks: int,
        qty_lots: int,
        events: list[Event],
        time_in_force: TimeInForce = TimeInForce.IOC,
    ) -> int:
        """A reduce-only liquidation order through the book; returns Σ price x lots. IOC, or
        FOK for the partial step (the caller has walked the book: it fills in full)."""
        engine = self.engine
        symbol = market.spec.symbol
        order_id = engine.next_order_id
        engine.next_order_id += 1
        order = Order(
            order_id,
            acct.name,
            symbol,
            side,
            OrderType.LIMIT,
            time_in_force,
            limit_ticks,
            qty_lots,
            True,
            None,
            0,
        )
        events.append(
            OrderAccepted(
                order_id,
                acct.name,
                symbol,
                side,
                OrderType.LIMIT,
                time_in_force,
                qty_lots,
                limit_ticks,
                True,
                None,
            )
        )
        engine._register(acct, pos, order)
        result = market.book.match(side, limit_ticks, qty_lots, acct.name)
        touched: dict[str, Account] = {acct.name: acct}
        if result.fills:
            engine._settle_match(
                market,
                acct,
                pos,
                order,
                result.fills,
                events,
                touched,
                taker_fee_ppm=0,
                liquidation=True,
            )
        left = order.remaining_lots
        if left:
            engine._unregister(acct, pos, order)
            events.append(OrderCanceled(order_id, acct.name, symbol, left, EndReason.IOC_REMAINDER))
        for other in touched.values():
            engine._trim_reduce_only(other, symbol, market, events)
            engine._reserve_orders(other, symbol, market)
        return sum(price * lots for _, lots, price in result.fills)

    def _fund_plan(
        self, market: MarketState, side: int, price_ticks: int, left_lots: int, room: Fraction
    ) -> tuple[int, int]:
        """(lots, worst price) the fund can close through the book past `price_ticks`.

        `room` is the margin left over the target if the rest closed at `price_ticks`; the fund
        of the symbol may add its balance to it (not the other funds'). Levels are taken best
        first while each lot's extra cost (the distance from `price_ticks`) still fits, and
        never past the distance bound.
        """
        spec = market.spec
        mark = market.mark_ticks
        distance = self.config.max_fund_distance_ppm
        if side == SELL:
            bound = div(mark * (PPM - distance), PPM, Rounding.CEIL)
            levels = market.book.depth(MAX_FUND_LEVELS)[0]
        else:
            bound = div(mark * (PPM + distance), PPM, Rounding.FLOOR)
            levels = market.book.depth(MAX_FUND_LEVELS)[1]
        budget = room + self.fund_atoms(spec.symbol)
        taken = 0
        worst = 0
        k = spec.atoms_per_tick_lot
        for level_price, level_lots in levels:
            if (level_price < bound) if side == SELL else (level_price > bound):
                break
            cost_per_lot = (price_ticks - level_price) * k * (1 if side == SELL else -1)
            if cost_per_lot <= 0:
                continue  # at or better than bankruptcy: the book phase took these (self-trade)
            affordable = math.floor(budget / cost_per_lot) if budget > 0 else 0
            lots = min(level_lots, left_lots - taken, affordable)
            if lots:
                taken += lots
                budget -= lots * cost_per_lot
                worst = level_price
            if lots < level_lots or taken == left_lots:
                break
        return taken, worst

    def _deleverage(
        self,
        acct: Account,
        pos: Position,
        market: MarketState,
        price_ticks: int,
        events: list[Event],
    ) -> None:
        """Close the rest of `pos` against ranked opposite positions at `price_ticks`, no fee.

        The queue comes from the mirror for a symbol with many holders (`_adl_queue_vector`),
        else from the scalar loop (`_adl_order_scalar`, the specification): the same order.
        Everything taken is then decided here, on the engine's objects, either way.
        """
        engine = self.engine
        spec = market.spec
        symbol = spec.symbol
        mark = market.mark_ticks
        k = spec.atoms_per_tick_lot
        close_side = SELL if pos.size_lots > 0 else BUY
        # The counterparties hold the side the closing order trades on (a long sells: shorts).
        queue = self._adl_queue_vector(acct, market, close_side)
        ordered = self._adl_order_scalar(acct, market, close_side) if queue is None else None
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
                cp_acct = engine.accounts[name]
                cp_pos = cp_acct.positions[symbol]
                lots = min(left, abs(cp_pos.size_lots))
                if capped and loss_per_lot > 0:
                    equity = self.figures(cp_acct, cp_pos)[0]
                    lots = min(lots, max(equity, 0) // loss_per_lot)
                if not lots:
                    continue
                for oid in sorted(cp_pos.open_orders):
                    engine._end_order(
                        cp_acct,
                        cp_pos,
                        market,
                        cp_pos.open_orders[oid],
                        EndReason.AUTO_DELEVERAGE,
                        events,
                    )
                engine._settle_fill(acct, pos, spec, close_side, lots, price_ticks)
                engine._settle_fill(cp_acct, cp_pos, spec, -close_side, lots, price_ticks)
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

    def _adl_order_scalar(self, acct: Account, market: MarketState, close_side: int) -> list[str]:
        """The holders ADL takes from when `acct` closes on `close_side`, in the order it takes
        them, one holder at a time (the specification): ranked by `adl_queue` (highest score
        first, equal scores by name: account indices follow names), then those past their own
        bankruptcy (equity <= 0, not ranked) by name. O(holders of the symbol)."""
        engine = self.engine
        spec = market.spec
        symbol = spec.symbol
        names = sorted(n for n in engine.holders[symbol] if n != acct.name)
        opposite: list[AdlPosition] = []
        for idx, name in enumerate(names):
            cp_acct = engine.accounts[name]
            cp_pos = cp_acct.positions[symbol]
            if (cp_pos.size_lots > 0) != (close_side == BUY):
                continue  # same side as the liquidated position
            equity = self.figures(cp_acct, cp_pos)[0]
            opposite.append(AdlPosition(idx, cp_pos.size_lots, cp_pos.cost_atoms, equity))
        ranked = adl_queue(opposite, market.mark_ticks, spec.atoms_per_tick_lot, close_side)
        # Past their own bankruptcy (not ranked): only if the ranked ones cannot take it all.
        in_queue = set(ranked)
        ranked += [i for i in range(len(opposite)) if i not in in_queue]
        return [names[opposite[i].account_idx] for i in ranked]

    def _adl_queue_vector(
        self, acct: Account, market: MarketState, close_side: int
    ) -> AdlQueueVector | None:
        """The same queue as `_adl_order_scalar`, over the mirror and lazily from the top
        (`adl.AdlQueueVector`); None for a symbol with few holders or when the mirror cannot
        answer exactly (then the scalar loop does)."""
        spec = market.spec
        figures = self._vector_figures(spec.symbol, None)
        if figures is None:
            return None
        assert self.mirror is not None
        store = self.mirror.stores[spec.symbol]
        n = len(figures.account_idx)
        size = store.size_lots[:n]
        side = (size > 0) if close_side == BUY else (size < 0)
        side &= figures.account_idx != self.account_index.get(acct.name, -1)
        rows = np.flatnonzero(side)
        return AdlQueueVector(
            self.account_names,
            figures.account_idx[rows],
            size[rows],
            store.cost_atoms[:n][rows],
            figures.equity_atoms[rows],
            market.mark_ticks,
            spec.atoms_per_tick_lot,
        )


__all__ = ["Candidate", "LiquidationConfig", "Liquidator"]
