"""Request-weight and order-count limits per API key (and per client address for public
calls), in rolling windows: weight per minute (-1003), orders per minute and per 10 s (-1015).

Units: time in monotonic nanoseconds, counted in buckets of `BUCKET_NS` (100 ms), so a window
holds at most 600 buckets whatever the request rate; each window keeps its running total, so
`charge` is O(1) amortised (a bucket is added once and expired once). A refused request is not
counted (it did no work), so a client that backs off gets its full allowance back 60 s after
its last accepted request. Clients idle for a whole minute are forgotten, in sweeps that run
when the table has doubled since the last one (amortised O(1) too).

The limiter runs in the event loop's thread; a lock makes it safe from any other thread too.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from perpex.server.config import Limits
from perpex.server.errors import ApiError

BUCKET_NS: Final = 100_000_000  # 100 ms: the windows' resolution
MINUTE_NS: Final = 60_000_000_000
TEN_SECONDS_NS: Final = 10_000_000_000
MIN_SWEEP_CLIENTS: Final = 1024  # the table is swept no earlier than at this size


@dataclass(frozen=True)
class Usage:
    """What a client has used in the current windows, for Binance's headers."""

    weight_1m: int  # X-MBX-USED-WEIGHT-1M
    orders_1m: int | None  # X-MBX-ORDER-COUNT-1M; None when the call places no order


class RateLimited(ApiError):
    """A 429 refusal (-1003 weight, -1015 orders) that also carries the client's usage, so the
    response can still report it in the headers."""

    def __init__(self, code: int, msg: str, usage: Usage) -> None:
        super().__init__(code, msg, 429)
        self.usage = usage


class _Window:
    """The amounts added in the last `span_buckets` buckets, and their running total."""

    __slots__ = ("buckets", "span_buckets", "total")

    def __init__(self, span_ns: int) -> None:
        self.span_buckets = span_ns // BUCKET_NS
        self.buckets: deque[list[int]] = deque()  # [bucket number, amount], oldest first
        self.total = 0

    def expire(self, bucket: int) -> None:
        oldest_kept = bucket - self.span_buckets + 1
        buckets = self.buckets
        while buckets and buckets[0][0] < oldest_kept:
            self.total -= buckets.popleft()[1]

    def add(self, bucket: int, amount: int) -> None:
        if self.buckets and self.buckets[-1][0] == bucket:
            self.buckets[-1][1] += amount
        else:
            self.buckets.append([bucket, amount])
        self.total += amount


class _Client:
    __slots__ = ("last_ns", "orders_1m", "orders_10s", "weight_1m")

    def __init__(self) -> None:
        self.weight_1m = _Window(MINUTE_NS)
        self.orders_1m = _Window(MINUTE_NS)
        self.orders_10s = _Window(TEN_SECONDS_NS)
        self.last_ns = 0


class RateLimiter:
    def __init__(self, limits: Limits, *, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.limits = limits
        self._clock = clock
        self._clients: dict[str, _Client] = {}
        self._sweep_at = MIN_SWEEP_CLIENTS
        self._lock = threading.Lock()

    def charge(self, who: str, weight: int, orders: int = 0) -> Usage:
        """Count one request of `weight` placing `orders` orders for `who` ("key:..." or
        "ip:..."), or refuse it with `RateLimited` (HTTP 429) and count nothing."""
        limits = self.limits
        with self._lock:
            now_ns = self._clock()
            bucket = now_ns // BUCKET_NS
            client = self._clients.get(who)
            if client is None:
                if len(self._clients) >= self._sweep_at:
                    self._sweep(now_ns)
                client = self._clients[who] = _Client()
            client.last_ns = now_ns
            weight_window = client.weight_1m
            weight_window.expire(bucket)
            used = weight_window.total
            orders_used: int | None = None
            if orders:
                client.orders_1m.expire(bucket)
                client.orders_10s.expire(bucket)
                orders_used = client.orders_1m.total
            if used + weight > limits.weight_per_minute:
                raise RateLimited(
                    -1003,
                    f"Too much request weight used; current limit is {limits.weight_per_minute} "
                    "request weight per 1 MINUTE. Please use the websocket for live updates to "
                    "avoid polling the API.",
                    Usage(used, orders_used),
                )
            if orders:
                assert orders_used is not None
                if orders_used + orders > limits.orders_per_minute:
                    raise RateLimited(
                        -1015,
                        f"Too many new orders; current limit is {limits.orders_per_minute} "
                        "orders per MINUTE.",
                        Usage(used, orders_used),
                    )
                if client.orders_10s.total + orders > limits.orders_per_10s:
                    raise RateLimited(
                        -1015,
                        f"Too many new orders; current limit is {limits.orders_per_10s} "
                        "orders per 10 SECONDS.",
                        Usage(used, orders_used),
                    )
                client.orders_1m.add(bucket, orders)
                client.orders_10s.add(bucket, orders)
                orders_used += orders
            weight_window.add(bucket, weight)
            return Usage(used + weight, orders_used)

    def usage(self, who: str, *, orders: bool = False) -> Usage:
        """`who`'s current counts, charging nothing."""
        with self._lock:
            client = self._clients.get(who)
            if client is None:
                return Usage(0, 0 if orders else None)
            bucket = self._clock() // BUCKET_NS
            client.weight_1m.expire(bucket)
            client.orders_1m.expire(bucket)
            return Usage(client.weight_1m.total, client.orders_1m.total if orders else None)

    def __len__(self) -> int:
        return len(self._clients)

    def _sweep(self, now_ns: int) -> None:
        """Forget clients with nothing in any window (idle for a minute or more)."""
        idle_before_ns = now_ns - MINUTE_NS
        self._clients = {w: c for w, c in self._clients.items() if c.last_ns > idle_before_ns}
        self._sweep_at = max(MIN_SWEEP_CLIENTS, 2 * len(self._clients))


__all__ = ["BUCKET_NS", "RateLimited", "RateLimiter", "Usage"]
