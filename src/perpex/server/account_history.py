"""Placeholder (owned by the trading helper): orders, algo orders, user trades, income."""

from __future__ import annotations

from collections.abc import Sequence

from perpex.core.markets import MarketSpec
from perpex.core.messages import Event


class AccountHistory:
    def __init__(self, specs: Sequence[MarketSpec]) -> None:
        self.specs = {s.symbol: s for s in specs}
        self.live = False  # set once the start-up replay is done
        self.user_messages: list[tuple[str, dict[str, object]]] = []  # (account, payload)

    def apply(self, events: Sequence[Event]) -> None:
        pass


__all__ = ["AccountHistory"]
