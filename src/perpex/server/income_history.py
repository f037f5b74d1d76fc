"""Placeholder (owned by the account helper): income (funding, realized PnL, commission,
transfers) kept from events."""

from __future__ import annotations

from collections.abc import Sequence

from perpex.core.markets import MarketSpec
from perpex.core.messages import Event


class IncomeHistory:
    def __init__(self, specs: Sequence[MarketSpec]) -> None:
        self.specs = {s.symbol: s for s in specs}

    def apply(self, events: Sequence[Event]) -> None:
        pass


__all__ = ["IncomeHistory"]
