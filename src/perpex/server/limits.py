"""Request-weight and order-count limits per key (and per client address for public calls).

Rolling one-minute windows as Binance counts them; answers 429 / -1003 past a limit and reports
the counts in `X-MBX-USED-WEIGHT-1M` and `X-MBX-ORDER-COUNT-1M`.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from perpex.server.config import Limits
from perpex.server.errors import ApiError


@dataclass
class Usage:
    weight_1m: int
    orders_1m: int | None  # None when the call placed no order


class RateLimiter:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._weights: dict[str, deque[tuple[float, int]]] = {}
        self._orders: dict[str, deque[float]] = {}

    def charge(self, who: str, weight: int, orders: int = 0) -> Usage:
        now = time.monotonic()
        window = self._weights.setdefault(who, deque())
        while window and window[0][0] <= now - 60:
            window.popleft()
        used = sum(w for _, w in window) + weight
        if used > self.limits.weight_per_minute:
            raise ApiError(
                -1003,
                f"Too many requests; current limit is {self.limits.weight_per_minute} requests "
                "per minute. Please use the websocket for live updates to avoid polling the API.",
                429,
            )
        window.append((now, weight))
        count = None
        if orders:
            stamps = self._orders.setdefault(who, deque())
            while stamps and stamps[0] <= now - 60:
                stamps.popleft()
            if len(stamps) + orders > self.limits.orders_per_minute:
                raise ApiError(
                    -1015,
                    f"Too many new orders; current limit is {self.limits.orders_per_minute} "
                    "orders per MINUTE.",
                    429,
                )
            stamps.extend([now] * orders)
            count = len(stamps)
        return Usage(used, count)


__all__ = ["RateLimiter", "Usage"]
