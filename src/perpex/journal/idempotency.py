"""Idempotency: at most one effect per `(account, client_order_id)` or per request key.

A `PlaceOrder` with a client order id, or any command submitted with an explicit request key,
is remembered with the answer it got (its seq and its events). Sending it again returns that
answer and changes nothing: the engine never sees it and the journal never stores it. The
window is part of the durable state: snapshots carry it and replay rebuilds it, command by
command, exactly as the live run did (same order, same evictions), so a resend after a crash
is recognised whether the first copy was recovered from a snapshot or from the journal.

Every outcome is remembered, a rejection too: an order refused for lack of margin and sent
again with the same client order id gets the same refusal, not a second attempt in a state
that has moved on (a retry after fixing the cause takes a new client order id). The window is
bounded (`capacity` keys, oldest forgotten first); a key older than that acts again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from perpex.core.messages import (
    AnyEvent,
    Command,
    ConditionalOrderAccepted,
    Event,
    OrderAccepted,
    OrderCanceled,
    OrderRejected,
    PlaceConditionalOrder,
    PlaceOrder,
    TradeExecuted,
)

IDEMPOTENCY_WINDOW: Final = 10_000  # keys remembered; the config fingerprint includes it
_SEP: Final = "\x00"


class Remembered(msgspec.Struct, frozen=True, array_like=True):
    """The first answer to a keyed command: its seq and the events of its response."""

    key: str
    seq: int
    events: tuple[AnyEvent, ...]


def key_of(command: Command, request_key: str | None) -> str | None:
    """The idempotency key of a command: the explicit one, else (account, client_order_id)."""
    if request_key is not None:
        return f"req{_SEP}{request_key}"
    if (
        isinstance(command, PlaceOrder | PlaceConditionalOrder)
        and command.client_order_id is not None
    ):
        return f"cid{_SEP}{command.account}{_SEP}{command.client_order_id}"
    return None


def response_events(command: Command, events: Sequence[Event]) -> tuple[Event, ...]:
    """What a resend gets back. For an order: its acceptance or refusal, its own trades and its
    end (not the counterparties' position updates), which is what the first caller was told."""
    if not isinstance(command, PlaceOrder):
        return tuple(events)
    order_id = next((e.order_id for e in events if isinstance(e, OrderAccepted)), None)
    kept: list[Event] = []
    for e in events:
        if (
            isinstance(e, OrderAccepted | OrderRejected | ConditionalOrderAccepted)
            or (isinstance(e, TradeExecuted) and order_id in (e.taker_order_id, e.maker_order_id))
            or (isinstance(e, OrderCanceled) and e.order_id == order_id)
        ):
            kept.append(e)
    return tuple(kept)


class IdempotencyWindow:
    """The last `capacity` keys and their first answers, oldest first."""

    def __init__(self, capacity: int = IDEMPOTENCY_WINDOW) -> None:
        if capacity < 1:
            raise ValueError(f"idempotency window of {capacity} keys")
        self.capacity = capacity
        self._entries: OrderedDict[str, Remembered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> Remembered | None:
        return self._entries.get(key)

    def remember(self, key: str, seq: int, events: tuple[Event, ...]) -> None:
        assert key not in self._entries, f"key {key!r} remembered twice"
        self._entries[key] = Remembered(key, seq, events)  # type: ignore[arg-type]
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def entries(self) -> list[Remembered]:
        return list(self._entries.values())

    @classmethod
    def from_entries(cls, capacity: int, entries: Iterable[Remembered]) -> IdempotencyWindow:
        window = cls(capacity)
        for entry in entries:
            window._entries[entry.key] = entry
        if len(window._entries) > capacity:
            raise ValueError(f"{len(window._entries)} remembered keys > capacity {capacity}")
        return window
