"""What is subscribed, as the writer thread reads it, and what the writer hands back.

The event loop owns the subscriptions (`perpex.server.streams`); whenever one changes it builds
a new immutable `Demand` and swaps it in, so the writer thread reads one consistent picture per
batch without a lock. What the writer makes of a batch goes back to the loop as encoded texts:
`MarketItem` (the stream names it is for, the text) and `UserItem` (the account, the text).

Units: times on the wire in ms; `wall_clock_ms` is the wall clock (Binance's event time `E`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from perpex.server.stream_payloads import Stream

NS_PER_MS: Final = 1_000_000

MarketItem = tuple[tuple[str, ...], str]  # (stream names, encoded message)
UserItem = tuple[str, str]  # (account, encoded message)
Encode = Callable[[Any], str]  # a payload -> its JSON text


def wall_clock_ms() -> int:
    return time.time_ns() // NS_PER_MS


def json_text() -> Encode:
    """A JSON encoder for one thread (msgspec: each message is encoded once, then fanned out)."""
    encode = msgspec.json.Encoder().encode
    return lambda payload: encode(payload).decode()


@dataclass(frozen=True)
class Demand:
    """An immutable picture of the subscriptions; the writer reads the latest one."""

    streams: Mapping[str, Stream] = field(default_factory=dict)
    names: Mapping[tuple[str, str | None], tuple[str, ...]] = field(default_factory=dict)
    accounts: frozenset[str] = frozenset()

    def names_for(self, kind: str, symbol: str) -> tuple[str, ...]:
        """Names subscribed for `kind` on `symbol`, its own and the all-symbols one."""
        return self.names.get((kind, symbol), ()) + self.names.get((kind, None), ())

    def wants(self, kind: str, symbol: str) -> bool:
        return (kind, symbol) in self.names or (kind, None) in self.names

    @property
    def idle(self) -> bool:
        return not self.streams and not self.accounts


def build_demand(streams: Mapping[str, Stream], accounts: frozenset[str]) -> Demand:
    names: dict[tuple[str, str | None], list[str]] = {}
    for name, stream in streams.items():
        names.setdefault((stream.kind, stream.symbol), []).append(name)
    return Demand(dict(streams), {k: tuple(v) for k, v in names.items()}, accounts)


__all__ = [
    "NS_PER_MS",
    "Demand",
    "Encode",
    "MarketItem",
    "UserItem",
    "build_demand",
    "json_text",
    "wall_clock_ms",
]
