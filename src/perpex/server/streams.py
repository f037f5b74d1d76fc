"""Placeholder (owned by the streams helper): the WebSocket hub."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from perpex.core.messages import Event
from perpex.exchange import Exchange
from perpex.server.config import ServerConfig


class StreamHub:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def publish(self, events: Sequence[Event], ex: Exchange) -> None:
        pass

    async def close(self) -> None:
        pass


__all__ = ["StreamHub"]
