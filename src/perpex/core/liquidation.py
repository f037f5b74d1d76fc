"""The liquidation pass: accounts at or below MM, closed by the book, the fund, then ADL.

Units: prices in ticks, sizes in lots, money in atoms, rates in ppm; k = atoms_per_tick_lot.
Exact `int`s and `Fraction`s. Who is liquidatable, the figures and the bankruptcy price come
from `perpex.core.liquidation_screen` (the vector screen over the mirror for a symbol with
many holders, the scalar one otherwise); ADL is `perpex.core.deleverage`; the funds are
`perpex.core.insurance`. The pass sees the exchange through `state.ExchangeState` only.

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
   the whole position: an IOC reduce-only liquidation order through the book
   (`ExchangeState.close_through_book`, the normal settlement: makers get maker fills and pay
   maker fees, the liquidated side pays no taker fee) limited at the bankruptcy price, rounded
   toward the trader's favour by less than a tick (ceil when selling a long, floor when buying
   back a short).
3. The trader keeps nothing of the margin behind the position: whatever the fills made over
   the bankruptcy price goes to the symbol's insurance fund (the clearance fee first, then the
   rest). What the book did not take at bankruptcy the fund takes over and closes through the
   book at worse prices, no further than `max_fund_distance_ppm` from the mark and no further
   than its balance can pay (so the fund never goes below zero), and it pays the deficit,
   leaving the trader at exactly zero (non-recourse).
4. What is still open is auto-deleveraged: the opposite positions ranked by PnL% × effective
   leverage (`perpex.core.deleverage`, MECHANICS.md §2.4), each closed (partly if enough) at the
   liquidated position's bankruptcy price, without fee, their orders in that symbol canceled.
   With many holders only the head of the queue is ranked, as far as the lots need.


A liquidated cross account is closed completely: once the first position has given up its
share of the margin balance (`LiquidationScreen.bankruptcy`), the rest of the account is at its
MM or below.

Accounting. Closing a position at its bankruptcy price leaves the margin behind it at the
target (0 for an isolated position; E - share for a cross account). After all fills the
difference between what is left and the target is moved, rounded up in the fund's favour:
to the fund when positive, from the fund when negative. The fund's part of the book is planned
so that this payment never exceeds the balance of the symbol's fund; ADL closes the rest at a
price no worse for the trader than bankruptcy, so the trader never ends below the target.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction
from typing import Any, Final

import msgspec

from perpex.core.adl import AdlQueueVector, adl_queue
from perpex.core.book import BUY, SELL
from perpex.core.deleverage import adl_lights, adl_order_scalar, adl_queue_vector, deleverage
from perpex.core.insurance import MAX_FUND_SYMBOLS, InsuranceFunds
from perpex.core.liquidation_config import LiquidationConfig
from perpex.core.liquidation_screen import (
    MIRROR_REBUILD_MIN_ACCOUNTS,
    VECTOR_MIN_HOLDERS,
    Bankruptcy,
    Candidate,
    LiquidationScreen,
)
from perpex.core.messages import (
    EndReason,
    Event,
    FundReason,
    LiquidationTriggered,
)
from perpex.core.partial_liquidation import reduce
from perpex.core.risk import RiskMirror
from perpex.core.state import Account, EngineError, ExchangeState, MarketState, Position
from perpex.core.units import PPM, Rounding, div

MAX_FUND_LEVELS: Final = 10_000  # book levels the fund walks for one position, at most


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


class Liquidator:
    """The liquidation state (config and queue) and the pass that uses it, over the screen
    (`screener`: the figures, who is liquidatable, the mirror it reads).

    The shares of the insurance funds are state too, kept in `ExchangeState.funds` (the order
    path pays deficits from them); `record` and `load` carry them with the config.
    """

    __slots__ = ("clean", "config", "queue", "screener", "state")

    def __init__(self, state: ExchangeState, config: LiquidationConfig) -> None:
        self.state = state
        # (this module's name for the threshold, so that a test can lower it for an engine)
        self.screener = LiquidationScreen(state, MIRROR_REBUILD_MIN_ACCOUNTS)
        self._check_fund_symbols(config)
        self.config = config
        self.queue: list[tuple[str, str]] = []  # (account, symbol) waiting for the next pass
        state.funds.configure(config.fund_symbols, InsuranceFunds.empty_pots(config.fund_symbols))
        # symbol -> the state key at which its last pass found nothing to do (`_state_key`)
        self.clean: dict[str, tuple[int, int, tuple[int, ...]]] = {}

    # -- state --------------------------------------------------------------------------------
    def record(self) -> list[Any]:
        """[config, queue] with one fund; [config + fund symbols, queue, shares] with several
        (so an engine with one fund hashes and snapshots as it did before there were several).
        ADL off adds the fund symbols (maybe none) and False to the config, for the same
        reason: an engine with ADL on hashes as before the switch existed."""
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
        if c.fund_symbols or not c.adl:
            config.append(list(c.fund_symbols))
        if c.fund_symbols:
            record.append(self.state.funds.record())
        if not c.adl:
            config.append(False)
        return record

    def load(self, record: list[Any]) -> None:
        """Restore `record`. The ledger must already hold its balances: with a single fund the
        record has no shares, and the common one is the whole INSURANCE bucket."""
        config, queue, *shares = record
        loaded = msgspec.convert(config, LiquidationConfig)  # array-like: lists become tuples
        self._check_fund_symbols(loaded)
        self.config = loaded
        self.queue = [(account, symbol) for account, symbol in queue]
        pots = {str(fund): int(atoms) for fund, atoms in shares[0]} if shares else None
        self.state.funds.configure(loaded.fund_symbols, pots)
        self.screener.mirror = None  # the records were written directly: rebuild

    def _check_fund_symbols(self, config: LiquidationConfig) -> None:
        for symbol in config.fund_symbols:
            if symbol not in self.state.markets:
                raise EngineError(f"insurance fund configured for {symbol}, which is not listed")

    def check(self) -> None:
        """The fund shares split the INSURANCE bucket exactly, none below zero (DESIGN.md §6
        promise 4 for every fund); AssertionError if not."""
        assert self.state.funds.fund_symbols == self.config.fund_symbols, "funds != config"
        self.state.funds.check()

    # -- the funds (views) --------------------------------------------------------------------
    @property
    def pots(self) -> dict[str, int]:
        """Fund ("" the common one, or a symbol) -> its share of the INSURANCE bucket."""
        return self.state.funds.pots

    def fund_of(self, symbol: str) -> str:
        """The fund that pays for `symbol`: its own, or the common one ("")."""
        return self.state.funds.fund_of(symbol)

    def fund_atoms(self, symbol: str | None = None) -> int:
        """All funds together (None), or the balance of the fund that pays for `symbol`."""
        return self.state.funds.fund_atoms(symbol)

    # -- the screen (views) -------------------------------------------------------------------
    @property
    def mirror(self) -> RiskMirror | None:
        """The NumPy mirror the vector screen reads (None until first used)."""
        return self.screener.mirror

    @property
    def vector_min_holders(self) -> int:
        """Holders from which a symbol is screened over the mirror (0: always)."""
        return self.screener.vector_min_holders

    @vector_min_holders.setter
    def vector_min_holders(self, holders: int) -> None:
        self.screener.vector_min_holders = holders

    def sync_mirror(self) -> RiskMirror:
        return self.screener.sync_mirror()

    def check_mirror(self) -> None:
        self.screener.check_mirror()

    def figures(self, acct: Account, pos: Position) -> tuple[int, int]:
        """(equity, MM) that decide whether the position (isolated) or account (cross) goes."""
        return self.screener.figures(acct, pos)

    def cross_figures(
        self, acct: Account, symbol: str | None = None, mark_ticks: int = 0
    ) -> tuple[int, int]:
        """(cross wallet + Σ cross uPnL, Σ cross MM), optionally with `symbol` at `mark_ticks`."""
        return self.screener.cross_figures(acct, symbol, mark_ticks)

    def bankruptcy(self, acct: Account, pos: Position) -> Bankruptcy:
        """The position's bankruptcy price at the mark and the order limit that goes with it."""
        return self.screener.bankruptcy(acct, pos)

    def screen(self, symbol: str) -> list[Candidate]:
        """Liquidatable holders of `symbol` (unordered)."""
        return self.screener.screen(symbol)

    # -- ADL (views; the pass is `deleverage`) ------------------------------------------------
    def adl_quantile(self, account: str, symbol: str) -> int:
        """The ADL lights (1-5) shown for the account's position in `symbol`; 0 when flat."""
        return adl_lights(self.screener, account, symbol)

    def _adl_queue_vector(
        self, acct: Account, market: MarketState, close_side: int
    ) -> AdlQueueVector | None:
        """`deleverage.adl_queue_vector` (benchmarks/bench_risk.py compares the two queues)."""
        return adl_queue_vector(self.screener, acct, market, close_side)

    def _adl_order_scalar(self, acct: Account, market: MarketState, close_side: int) -> list[str]:
        """`deleverage.adl_order_scalar` (benchmarks/bench_risk.py compares the two queues)."""
        return adl_order_scalar(self.screener, acct, market, close_side, adl_queue)

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
        if old_mark_ticks and old_mark_ticks != self.state.markets[symbol].mark_ticks:
            # (at an unchanged mark no ratio can cross the warning level by the mark)
            self.screener.margin_calls(symbol, old_mark_ticks, self.config.margin_call_ppm, events)
        # Screen again after every round: the fills of one liquidation can sink another account
        # (a cascade). Bounded: every round with candidates spends at least one unit of the
        # budget; once it is spent, what the last screen found waits in the queue.
        while True:
            waiting = set(self.queue)
            candidates = [
                c
                for s in sorted(dirty)
                for c in self.screener.screen(s)
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
        state = self.state
        marks = tuple(m.mark_ticks for m in state.markets.values())
        return state.ledger.transfers, state.next_trade_id, marks

    def _liquidate(self, account: str, symbol: str, events: list[Event], dirty: set[str]) -> bool:
        """Recheck and, if still at or below MM, liquidate. True when it was liquidated."""
        acct = self.state.accounts.get(account)
        pos = None if acct is None else acct.positions.get(symbol)
        if acct is None or pos is None or not pos.size_lots:
            return False
        equity, mm = self.screener.figures(acct, pos)
        if equity > mm:
            return False
        events.append(LiquidationTriggered(account, symbol, pos.isolated, equity, mm))
        self._cancel_orders(acct, pos, events)
        # Open orders do not count in the trigger (equity vs MM), but Binance rechecks after
        # canceling and so do we: a rule that changes would otherwise silently over-liquidate.
        equity, mm = self.screener.figures(acct, pos)
        if equity > mm:
            return True
        if self.config.partial_from_bracket and reduce(
            self.screener, self.config, acct, pos, events, dirty
        ):
            return True  # a partial liquidation brought it back above MM
        self._close(acct, pos, events, dirty)
        if not pos.isolated:
            # The first position gave up its share of the margin balance; what is left stands
            # behind the rest at their MM or below, so the whole cross account goes.
            for other_symbol in sorted(acct.positions):
                other = acct.positions[other_symbol]
                if other.isolated or not other.size_lots:
                    continue
                equity, mm = self.screener.cross_figures(acct)
                if equity > mm:
                    break
                events.append(LiquidationTriggered(account, other_symbol, False, equity, mm))
                self._close(acct, other, events, dirty)
        return True

    def _cancel_orders(self, acct: Account, pos: Position, events: list[Event]) -> None:
        state = self.state
        if pos.isolated:
            orders = [pos.open_orders[oid] for oid in sorted(pos.open_orders)]
        else:
            orders = [acct.orders[oid] for oid in sorted(acct.orders)]
        for order in orders:
            market = state.markets[order.symbol]
            owner = acct.positions[order.symbol]
            state.end_order(acct, owner, market, order, EndReason.LIQUIDATION, events)

    # -- one position -------------------------------------------------------------------------

    def _close(self, acct: Account, pos: Position, events: list[Event], dirty: set[str]) -> None:
        """Close the whole position: book at bankruptcy, then the fund, then ADL; settle."""
        state = self.state
        market = state.markets[pos.symbol]
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
            return self.screener.cross_figures(acct)[0]

        equity, share, _, price, worse_than_bankruptcy = self.screener.bankruptcy(acct, pos)
        target = equity - share  # what is left behind the account once the position is gone

        closed_quote_ticks = 0  # Σ price x lots of the closing fills, for the clearance fee
        # 1. the liquidation order through the book, at the bankruptcy price or better
        closed_quote_ticks += state.close_through_book(
            acct, pos, market, close_side, price, abs(size), events
        )
        # 2. the fund takes over what is left and closes it past bankruptcy, within bounds
        left = abs(pos.size_lots)
        if left:
            room = equity_now() + pos.size_lots * (price - mark) * k - target
            lots, worst = self._fund_plan(market, close_side, price, left, room)
            if lots:
                closed_quote_ticks += state.close_through_book(
                    acct, pos, market, close_side, worst, lots, events
                )
        # 3. ADL off: the fund closes the rest through whatever the book holds, at any price
        left = abs(pos.size_lots)
        if left and not self.config.adl:
            extreme = market.min_price_ticks if close_side == SELL else market.max_price_ticks
            closed_quote_ticks += state.close_through_book(
                acct, pos, market, close_side, extreme, left, events
            )
        # 4. auto-deleveraging for the rest, at the bankruptcy price
        left = abs(pos.size_lots)
        if left:
            # (`adl_queue` named here, where tests/test_adl_vector.py spies on the scalar ranking)
            deleverage(self.screener, acct, pos, market, price, events, adl_queue)
            closed_quote_ticks += left * price
        assert pos.size_lots == 0 and pos.margin.balance == 0, "liquidated position not closed"
        # 5. the trader keeps nothing over the target; the fund pays what is missing
        transfer = math.ceil(equity_now() - target)
        name, symbol = acct.name, spec.symbol
        if transfer > 0:
            fee = min(
                div(closed_quote_ticks * k * self.config.clearance_fee_ppm, PPM, Rounding.CEIL),
                transfer,
            )
            if fee:
                state.move_to_fund(acct.wallet, fee, FundReason.CLEARANCE_FEE, name, symbol, events)
            if transfer > fee:
                state.move_to_fund(
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
            state.pay_deficit(acct.wallet, -transfer, name, symbol, events)
        # Non-recourse, where it is written: the trader ends at the target (less than an atom
        # below it for a cross share), never below; an isolated trader's wallet is untouched.
        # (ADL off: what the fund could not pay stays below the target: the bad debt.)
        adl = self.config.adl
        assert worse_than_bankruptcy or not adl or equity_now() > target - 1, "trader left below"
        untouched = not isolated or acct.wallet.balance == wallet_before
        assert worse_than_bankruptcy or not adl or untouched, "isolated trader's wallet touched"

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
        budget = room + self.state.funds.fund_atoms(spec.symbol)
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


__all__ = [
    "MAX_FUND_LEVELS",
    "MAX_FUND_SYMBOLS",
    "MIRROR_REBUILD_MIN_ACCOUNTS",
    "VECTOR_MIN_HOLDERS",
    "Candidate",
    "LiquidationConfig",
    "Liquidator",
]
