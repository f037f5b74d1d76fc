"""The index and the mark: oracle input to a market's index, and the mark it publishes.

Units: prices in ticks, time in ns, rates in 1e-8. The index comes whole (`UpdateIndex`) or
from the venues' quotes (`UpdateSources`, `oracle.compute_index_detail`: stale and outlying
quotes dropped); the mark follows the market's mark mode (MECHANICS.md §1.6), clamped to the
market's price range. A market's funding periods start with its first index. What a new mark
sets off (the liquidation pass, then the conditional orders) is the engine's to run.
"""

from __future__ import annotations

from perpex.core.funding import FundingState
from perpex.core.messages import (
    Event,
    IndexUpdated,
    MarkPriceUpdated,
    Reason,
    RequestRejected,
    UpdateIndex,
    UpdateSources,
)
from perpex.core.oracle import compute_index_detail
from perpex.core.records import MarketState
from perpex.core.store import Store


def index_refusal(state: Store, cmd: UpdateIndex | UpdateSources) -> RequestRejected | None:
    """Why the oracle input cannot be taken (None: it can)."""
    market = state.markets.get(cmd.symbol)
    if market is None:
        return RequestRejected("", cmd.symbol, Reason.UNKNOWN_SYMBOL)
    spec = market.spec
    if isinstance(cmd, UpdateIndex):
        if not spec.min_price_ticks <= cmd.index_ticks <= spec.max_price_ticks:
            return RequestRejected("", cmd.symbol, Reason.PRICE_OUT_OF_RANGE)
        return None
    names = [name for name, _ in cmd.quotes]
    if not names or len(set(names)) != len(names):
        return RequestRejected("", cmd.symbol, Reason.UNKNOWN_INDEX_SOURCE)
    for name, price_ticks in cmd.quotes:
        if name not in state.index_config.sources:
            return RequestRejected("", cmd.symbol, Reason.UNKNOWN_INDEX_SOURCE)
        if not spec.min_price_ticks <= price_ticks <= spec.max_price_ticks:
            return RequestRejected("", cmd.symbol, Reason.PRICE_OUT_OF_RANGE)
    return None


def set_index(state: Store, cmd: UpdateIndex | UpdateSources, events: list[Event]) -> int:
    """Take oracle input that `index_refusal` passed: the new index, the mark it gives,
    `IndexUpdated`. Returns the mark before (the liquidation pass compares the two)."""
    market = state.markets[cmd.symbol]
    if isinstance(cmd, UpdateIndex):
        # One price for the whole index: it replaces the sources' quotes until the next ones.
        market.quotes.clear()
        index_ticks = cmd.index_ticks
    else:
        for name, price_ticks in cmd.quotes:
            market.quotes[name] = (price_ticks, state.clock_ns)
        result = compute_index_detail(market.quotes, state.clock_ns, state.index_config)
        assert result is not None  # the sources just quoted are fresh
        # The weighted average of in-range prices stays in range; the median too.
        index_ticks = result.index_ticks
    # Anchors the basis sampling grid at the first index (a no-op later: the clock has not
    # moved since the last sample), so the first clock step samples all of its grid points.
    book = market.book
    market.mark_state.on_sample(
        state.clock_ns, book.best_bid(), book.best_ask(), market.index_ticks or None
    )
    market.index_ticks = index_ticks
    if market.funding is None:  # funding periods start with the first price
        market.funding = FundingState.for_market(market.spec, state.clock_ns, market.funding_config)
    old_mark_ticks = market.mark_ticks
    market.mark_ticks = mark_now(state, market)
    events.append(IndexUpdated(cmd.symbol, market.index_ticks, market.mark_ticks))
    return old_mark_ticks


def refresh_mark(state: Store, symbol: str, market: MarketState, events: list[Event]) -> int:
    """Recompute the mark at the clock (Binance republishes it every second); returns the mark
    before. `MarkPriceUpdated` only when it moved."""
    old_mark_ticks = market.mark_ticks
    mark_ticks = mark_now(state, market)
    if mark_ticks != old_mark_ticks:
        market.mark_ticks = mark_ticks
        events.append(MarkPriceUpdated(symbol, market.index_ticks, mark_ticks))
    return old_mark_ticks


def mark_now(state: Store, market: MarketState) -> int:
    """The mark per the mark mode (MECHANICS.md §1.6), within the market's price range."""
    funding = market.funding
    if funding is None:
        mark = market.mark_state.mark(
            state.clock_ns, market.index_ticks or None, market.last_trade_ticks or None
        )
    else:  # Price 1 carries the predicted rate over the time left to the funding time
        mark = market.mark_state.mark(
            state.clock_ns,
            market.index_ticks or None,
            market.last_trade_ticks or None,
            predicted_funding_rate_e8(market),
            funding.next_funding_ns,
            market.funding_config.interval_ns,
        )
    assert mark is not None  # called only once there is an index
    spec = market.spec
    return min(max(mark, spec.min_price_ticks), spec.max_price_ticks)


def predicted_funding_rate_e8(market: MarketState) -> int:
    """The rate the coming settlement will charge if nothing changes (a replayed one if set)."""
    funding = market.funding
    if funding is None:
        return 0
    override = market.funding_overrides.get(funding.next_funding_ns)
    return funding.predicted_rate_e8() if override is None else override


__all__ = ["index_refusal", "mark_now", "predicted_funding_rate_e8", "refresh_mark", "set_index"]
