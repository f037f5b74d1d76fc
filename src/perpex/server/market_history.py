"""Placeholder (owned by the market-data helper): trades, candles, tickers kept from events."""

from __future__ import annotations

from collections.abc import Sequence

from perpex.core.markets import MarketSpec
from perpex.core.messages import Event


class MarketHistory:
    def __init__(self, specs: Sequence[MarketSpec]) -> None:
        self.specs = {s.symbol: s for s in specs}

    def apply(self, events: Sequence[Event]) -> None:
        pass


__all__ = ["MarketHistory"]
