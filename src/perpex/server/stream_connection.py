"""One WebSocket client of the stream hub: its subscriptions and its bounded outgoing queue.

Event-loop only. The hub pushes encoded texts; a sender task writes them out. A client that
does not read fast enough is dropped (close 1008) instead of growing its queue, so a slow
reader costs the server a bounded amount of memory and never slows anyone else. The limits on
one connection (Binance's) are here too.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Final

from starlette.websockets import WebSocket

from perpex.server.stream_payloads import Stream

MAX_STREAMS: Final = 1024  # per connection (Binance)
CONNECTION_LIFETIME_S: Final = 24 * 3600.0  # Binance closes a connection after 24 hours
CLOSE_TIMEOUT_S: Final = 2.0  # a close frame that cannot be written in this time is abandoned


class Connection:
    """A WebSocket client: its subscriptions, listen keys and bounded outgoing queue.

    Loop-only. `push` never waits. A client that still has `limit` messages queued when the
    next delivery comes is dropped: one delivery (a batch's messages) may overshoot the limit,
    so a healthy client is never dropped for a burst, and the queue stays below `limit` plus
    one batch."""

    def __init__(self, ws: WebSocket, *, combined: bool, limit: int) -> None:
        self.ws = ws
        self.combined = combined  # messages wrapped {"stream": name, "data": payload}
        self.limit = limit
        self.streams: dict[str, Stream] = {}
        self.keys: dict[str, str] = {}  # listen key -> account
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()
        self.closing: tuple[int, str] | None = None
        self.sender: asyncio.Task[None] | None = None
        self.opened_s = time.monotonic()
        self.round = -1  # the hub's delivery round of the last push
        self.backlog = 0  # messages queued when that round began

    def push(self, text: str, round_: int = -1) -> None:
        """Queue `text`; `round_` is the hub's delivery round (-1: a reply, counted alone)."""
        if self.closing is not None:
            return
        if round_ != self.round or round_ < 0:
            self.round = round_
            self.backlog = len(self.queue)
        if self.backlog >= self.limit:
            self.close(1008, "Client is too slow: its message queue is full.", flush=False)
            return
        self.queue.append(text)
        self.wake.set()

    def close(self, code: int, reason: str, *, flush: bool = True) -> None:
        """Close after the queued messages (`flush`), or at once (drop what is queued)."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        if not flush:
            self.queue.clear()
            if self.sender is not None:
                self.sender.cancel()  # it may be stuck writing to a client that does not read
        self.wake.set()

    async def run_sender(self) -> None:
        """Write the queue out until the connection closes."""
        send = self.ws.send_text
        queue = self.queue
        while True:
            while queue:
                await send(queue.popleft())
            if self.closing is not None:
                return
            self.wake.clear()
            await self.wake.wait()

    @property
    def stream_count(self) -> int:
        return len(self.streams) + len(self.keys)


def wrap(name: str, text: str) -> str:
    """A combined stream's message: `{"stream": name, "data": <text>}`."""
    # Names are checked against the stream grammar (letters, digits, @ ! _), listen keys are
    # alphanumeric: nothing in them needs JSON escaping.
    return f'{{"stream":"{name}","data":{text}}}'


__all__ = [
    "CLOSE_TIMEOUT_S",
    "CONNECTION_LIFETIME_S",
    "MAX_STREAMS",
    "Connection",
    "wrap",
]
