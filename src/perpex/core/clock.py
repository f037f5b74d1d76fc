"""The clock: the stops of a step of time (each funding time, then its end) and their samples.

Units: time in ns. Time arrives inside commands (`AdvanceClock`); the engine never reads one.
The clock stops at every funding time a step reaches, over all markets, in time order, so each
settles at the mark of its own time; the book and the index held over the whole step are the
basis and premium samples of every 5-s grid point in it. A step is refused when it goes back,
past `MAX_CLOCK_NS` (every stored time must fit the snapshot's int64) or over more funding
times than `funding.MAX_SETTLEMENTS_PER_ADVANCE`.
"""

from __future__ import annotations

from perpex.core.funding import MAX_SETTLEMENTS_PER_ADVANCE
from perpex.core.funding_settlement import FundingSettlement
from perpex.core.messages import Reason
from perpex.core.records import MarketState
from perpex.core.store import MAX_CLOCK_NS, Store


def plan_steps(state: Store, ts_ns: int) -> list[int] | Reason:
    """The times the clock stops at on its way to `ts_ns`, in order, or why it cannot go."""
    if ts_ns < state.clock_ns:
        return Reason.CLOCK_BACKWARDS
    if ts_ns > MAX_CLOCK_NS:
        return Reason.TIME_STEP_TOO_LARGE
    stops: set[int] = set()
    for market in state.markets.values():
        if market.funding is not None:
            try:
                stops.update(market.funding.due_settlements(ts_ns))
            except ValueError:  # more than MAX_SETTLEMENTS_PER_ADVANCE in one step
                return Reason.TIME_STEP_TOO_LARGE
    if len(stops) > MAX_SETTLEMENTS_PER_ADVANCE:
        return Reason.TIME_STEP_TOO_LARGE
    steps = sorted(stops)
    if ts_ns not in stops:
        steps.append(ts_ns)
    return steps


def step(state: Store, ts_ns: int) -> list[tuple[str, MarketState, FundingSettlement]]:
    """Move the clock to `ts_ns` (no funding time strictly between): sample the basis of every
    market with an index and advance its funding. Returns the settlements due at `ts_ns`; the
    engine re-marks, runs the passes and settles them."""
    settlements: list[tuple[str, MarketState, FundingSettlement]] = []
    for symbol, market in state.markets.items():
        if market.index_ticks:
            book = market.book
            market.mark_state.on_sample(ts_ns, book.best_bid(), book.best_ask(), market.index_ticks)
        if market.funding is not None:
            for settlement in market.funding.advance(ts_ns, market.book, market.index_ticks):
                settlements.append((symbol, market, settlement))
    state.clock_ns = ts_ns
    return settlements


__all__ = ["plan_steps", "step"]
