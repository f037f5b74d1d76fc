"""The books as last published: the diff-depth chain with its update ids, and the book tops.

Writer thread only (BINANCE_API.md §6.2). Per symbol it keeps the last published book (up to
1000 levels a side) and the last update id `u`. When a batch changed a book that someone
watches, the next flush (at most every 100 ms per symbol, Binance's `@100ms`; `@depth` and
`@depth@500ms` get the same chain, faster than they promise) diffs the book against it and
publishes one `depthUpdate` with `U = pu + 1`, `u` the new id, `pu` the previous `u`, and
ABSOLUTE quantities ("0" deletes). REST depth reports `update_id(symbol)` as `lastUpdateId`; a
snapshot taken before a flush already holds changes the flush carries, which is harmless since
applying an absolute quantity twice changes nothing. `bookTicker` carries the same `u` and is
pushed when the best bid or ask (price or size) changed.

Units: prices in ticks, sizes in lots as the engine has them; times on the wire in ms.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from perpex.core.markets import MarketSpec
from perpex.exchange import Exchange
from perpex.server import stream_payloads as wire_ws
from perpex.server.stream_demand import Demand, Encode, MarketItem

DEPTH_LEVELS: Final = 1000  # a side, as REST depth's largest limit
FIRST_UPDATE_ID: Final = 1  # `lastUpdateId` of a book never published
DEPTH_EVERY_NS: Final = 100_000_000  # one diff per symbol per 100 ms at most (`@100ms`)

UpdateIds = tuple[int, int, int]  # (U, u, pu) of a depthUpdate


class DepthChain:
    """The diff-depth books, their update ids and the book tops last pushed [writer].

    `specs` is the publisher's map, read on every use (it is filled when the hub is bound)."""

    def __init__(self, specs: Mapping[str, MarketSpec], text: Encode) -> None:
        self._specs = specs
        self._text = text
        self._books: dict[str, tuple[dict[int, int], dict[int, int]]] = {}
        self._ids: dict[str, UpdateIds] = {}  # symbol -> (U, u, pu) last published
        self._dirty: dict[str, None] = {}  # books changed since their last diff
        self._flushed_ns: dict[str, int] = {}
        self._tops: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        self.pending = False  # a changed, watched book waits for its 100 ms

    def update_id(self, symbol: str) -> int:
        """`u` of the last depthUpdate published for `symbol` (REST depth's lastUpdateId)."""
        ids = self._ids.get(symbol)
        return ids[1] if ids is not None else FIRST_UPDATE_ID

    def ids(self, symbol: str) -> UpdateIds:
        """(U, u, pu) of the last depthUpdate published (partial depth repeats them)."""
        return self._ids.get(symbol, (FIRST_UPDATE_ID, FIRST_UPDATE_ID, 0))

    def touch(self, symbol: str) -> None:
        """A batch changed the (watched) book of `symbol`: diff it at the next flush."""
        self._dirty[symbol] = None
        self.pending = True

    def flush(
        self,
        ex: Exchange,
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        """Publish one diff per dirty, watched book (those flushed < 100 ms ago wait)."""
        if not self._dirty:
            self.pending = False
            return
        now_ns = time.monotonic_ns()
        for symbol in list(self._dirty):
            if not demand.wants("depth", symbol):
                del self._dirty[symbol]  # nobody watches: the next diff will cover it
                continue
            if now_ns - self._flushed_ns.get(symbol, 0) < DEPTH_EVERY_NS:
                continue
            del self._dirty[symbol]
            self._flushed_ns[symbol] = now_ns
            self._diff(ex, demand, symbol, now_ms, tx_ms, out)
        self.pending = bool(self._dirty)

    def _diff(
        self,
        ex: Exchange,
        demand: Demand,
        symbol: str,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        bids, asks = ex.engine.market(symbol).book.depth(DEPTH_LEVELS)
        old_bids, old_asks = self._books.get(symbol, ({}, {}))
        new_bids, new_asks = dict(bids), dict(asks)
        bid_changes = _changes(bids, old_bids, new_bids)
        ask_changes = _changes(asks, old_asks, new_asks)
        if not bid_changes and not ask_changes:
            return
        self._books[symbol] = (new_bids, new_asks)
        previous_id = self.update_id(symbol)
        ids = (previous_id + 1, previous_id + 1, previous_id)
        self._ids[symbol] = ids
        names = demand.names_for("depth", symbol)
        if names:
            payload = wire_ws.depth_update(
                self._specs[symbol], now_ms, tx_ms, ids, bid_changes, ask_changes
            )
            out.append((names, self._text(payload)))

    def book_ticker(
        self,
        ex: Exchange,
        demand: Demand,
        symbol: str,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
        *,
        force: bool,
    ) -> None:
        """Push the best bid and ask when they changed (`force`: a new subscriber's first)."""
        bids, asks = ex.engine.market(symbol).book.depth(1)
        top = (bids[0] if bids else (0, 0), asks[0] if asks else (0, 0))
        if not force and self._tops.get(symbol) == top:
            return
        self._tops[symbol] = top
        names = demand.names_for("bookTicker", symbol)
        if names:
            spec = self._specs[symbol]
            update_id = self.update_id(symbol)
            payload = wire_ws.book_ticker(spec, update_id, now_ms, tx_ms, top[0], top[1])
            out.append((names, self._text(payload)))


def _changes(
    rows: list[tuple[int, int]], old: dict[int, int], new: dict[int, int]
) -> list[tuple[int, int]]:
    """Levels whose quantity changed (absolute, best first), then removed levels (qty 0)."""
    changed = [(p, q) for p, q in rows if old.get(p) != q]
    changed += [(p, 0) for p in old if p not in new]
    return changed


__all__ = [
    "DEPTH_EVERY_NS",
    "DEPTH_LEVELS",
    "FIRST_UPDATE_ID",
    "DepthChain",
    "UpdateIds",
]
