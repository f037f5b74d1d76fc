"""`MarketWorld`: the runner's implementation of the agents' read-only `World`.

It reads the exchange it wraps and never writes to it: agents change the market only through
the commands they return. The runner moves it forward one step at a time (`advance`, then
`refresh` after the step's index update), so within a step every agent sees the same
figures, whatever order they act in.
"""

from __future__ import annotations

import math
from collections import deque

from perpex.core.markets import MarketSpec
from perpex.exchange import Exchange
from perpex.sim.agents.base import Position

VOL_WINDOW = 60  # steps of log returns behind `volatility`


class MarketWorld:
    """The view of one symbol of one `Exchange` that agents read at each step."""

    def __init__(self, ex: Exchange, symbol: str, step_ns: int) -> None:
        self.ex = ex
        self.symbol = symbol
        self.spec: MarketSpec = ex.engine.state.markets[symbol].spec
        self._market = ex.engine.state.markets[symbol]
        self._accounts = ex.engine.state.accounts
        self.step = -1
        self.time_ns = 0
        self.target_ticks = 0
        self.index_ticks = 0
        self.mark_ticks = 0
        self.last_ticks = 0
        self.makers_away = False
        self.volatility = 0.0
        self.step_ns = step_ns
        self._returns: deque[float] = deque(maxlen=VOL_WINDOW)
        self._sum_sq = 0.0

    # -- the runner moves it ------------------------------------------------------------------
    def advance(
        self, step: int, time_ns: int, target_ticks: int, index_ticks: int, makers_away: bool
    ) -> None:
        """A new step: the path's figures; volatility as the root mean square of the target's
        log returns over the last `VOL_WINDOW` steps (realised volatility: not demeaned, so a
        steady slide counts as movement, which is what a market maker fears)."""
        if self.target_ticks > 0:
            r = math.log(target_ticks / self.target_ticks)
            if len(self._returns) == self._returns.maxlen:
                old = self._returns[0]
                self._sum_sq -= old * old
            self._returns.append(r)
            self._sum_sq += r * r
            self.volatility = math.sqrt(max(self._sum_sq / len(self._returns), 0.0))
        self.step = step
        self.time_ns = time_ns
        self.target_ticks = target_ticks
        self.index_ticks = index_ticks
        self.makers_away = makers_away
        self.refresh()

    def refresh(self) -> None:
        """Re-read the mark and the last trade (after the index update, after trades)."""
        self.mark_ticks = self._market.mark_ticks
        self.last_ticks = self._market.last_trade_ticks or 0

    # -- what agents read ---------------------------------------------------------------------
    def best_bid(self) -> int | None:
        return self._market.book.best_bid()

    def best_ask(self) -> int | None:
        return self._market.book.best_ask()

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self._market.book.depth(levels)

    def position(self, account: str) -> Position:
        acct = self._accounts.get(account)
        if acct is None:
            return Position()
        wallet = acct.wallet.balance
        pos = acct.positions.get(self.symbol)
        if pos is None or not pos.size_lots:
            return Position(0, 0, wallet, wallet + (pos.margin.balance if pos else 0))
        k = self.spec.atoms_per_tick_lot
        upnl = pos.size_lots * self._market.mark_ticks * k - pos.cost_atoms
        entry = round(pos.cost_atoms / (pos.size_lots * k))
        return Position(pos.size_lots, entry, wallet, wallet + pos.margin.balance + upnl)

    def liquidation_price_ticks(self, account: str) -> int | None:
        if account not in self._accounts:
            return None
        price = self.ex.position(account, self.symbol).liquidation_price
        if price is None:
            return None
        return max(1, round(price / self.spec.tick_size))


__all__ = ["VOL_WINDOW", "MarketWorld"]
