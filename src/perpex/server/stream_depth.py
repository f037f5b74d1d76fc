"""The books as last published: the diff-depth chains with their update ids, and the book tops.

Writer thread only (BINANCE_API.md §6.2). Each symbol has one update id `g`, which grows by one
for every `depthUpdate` published by any of its chains. Each push speed is its own chain
(Binance: `<s>@depth` every 250 ms, `@depth@500ms` every 500 ms, `@depth@100ms` every 100 ms):
it keeps the book it last published and its last `u`; when a batch changed a book that one of
its subscribers watches, its next flush (at most once per its period) diffs the book against
what it last published and publishes one `depthUpdate` with `pu` its previous `u`,
`U = pu + 1` and `u` the new `g`: every subscription sees a gapless chain at its own speed, and
an event of any chain spans the versions since its previous one. Quantities are ABSOLUTE
("0" deletes).

REST depth answers the current `g` as lastUpdateId (`snapshot_id`): for a chain whose last `u`
is `g` the next event has `pu` = lastUpdateId, for any other U <= lastUpdateId < u (Binance's
rules for the first event to apply). The snapshot may already hold changes the next event
carries (harmless: quantities are absolute), but a level that changed by the time of the
snapshot and changed back before the chain's next event would be missing from that event (it
diffs against the chain's older book), and a client would keep the snapshot's quantity: so the
snapshot marks, for each chain, the levels where the book differs from what the chain last
published, and the chain's next event carries them. `bookTicker` carries the current `g` and
is pushed when the best bid or ask (price or size) changed.

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
DEPTH_EVERY_NS: Final = 100_000_000  # the fastest chain's period (`@100ms`)
NS_PER_MS: Final = 1_000_000

UpdateIds = tuple[int, int, int]  # (U, u, pu) of a depthUpdate
Book = tuple[dict[int, int], dict[int, int]]  # (bids, asks): price ticks -> lots


class _Chain:
    """One diff stream of one symbol at one speed: the book it last published, its last `u`,
    the levels a snapshot marked, whether its book changed since, when it last flushed."""

    __slots__ = ("book", "dirty", "flushed_ns", "last_id", "marked", "period_ns")

    def __init__(self, period_ms: int, last_id: int) -> None:
        self.period_ns = period_ms * NS_PER_MS
        self.book: Book = ({}, {})
        self.last_id = last_id
        self.marked: tuple[set[int], set[int]] = (set(), set())
        self.dirty = False
        self.flushed_ns = 0


class DepthChain:
    """The diff-depth chains, the update ids and the book tops last pushed [writer].

    `specs` is the publisher's map, read on every use (it is filled when the hub is bound)."""

    def __init__(self, specs: Mapping[str, MarketSpec], text: Encode) -> None:
        self._specs = specs
        self._text = text
        self._chains: dict[tuple[str, int], _Chain] = {}  # (symbol, period ms) -> its chain
        self._g: dict[str, int] = {}  # symbol -> its last update id
        self._ids: dict[str, UpdateIds] = {}  # symbol -> (U, u, pu) last published, any chain
        self._tops: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        self._touched: dict[str, None] = {}  # symbols whose book changed since the last flush
        self.pending = False  # a changed, watched book waits for its chain's period

    def update_id(self, symbol: str) -> int:
        """The symbol's current update id (bookTicker's `u`, REST bookTicker's lastUpdateId)."""
        return self._g.get(symbol, FIRST_UPDATE_ID)

    def ids(self, symbol: str) -> UpdateIds:
        """(U, u, pu) of the last depthUpdate published (partial depth repeats them)."""
        return self._ids.get(symbol, (FIRST_UPDATE_ID, FIRST_UPDATE_ID, 0))

    def _next_id(self, symbol: str) -> int:
        g = self.update_id(symbol) + 1
        self._g[symbol] = g
        return g

    def snapshot_id(self, ex: Exchange, symbol: str, demand: Demand | None = None) -> int:
        """REST depth's lastUpdateId for the book as it is now (call it in the same writer job
        as the book is read); each chain's next event carries every level that differs between
        this book and the one the chain last published (see the module docstring). The chains
        of the speeds `demand` watches are made first, so that a subscription whose chain has
        not published yet is covered too."""
        if demand is not None and demand.wants("depth", symbol):
            self._chains_for(demand, symbol)
        chains = [c for (s, _), c in self._chains.items() if s == symbol]
        if not chains:
            return self.update_id(symbol)
        bids, asks = ex.engine.market(symbol).book.depth(DEPTH_LEVELS)
        now: Book = (dict(bids), dict(asks))
        for chain in chains:
            for side in (0, 1):
                old, new, marked = chain.book[side], now[side], chain.marked[side]
                marked.update(p for p, q in new.items() if old.get(p) != q)
                marked.update(p for p in old if p not in new)
        return self.update_id(symbol)

    def touch(self, symbol: str) -> None:
        """A batch changed the (watched) book of `symbol`: diff it at the next flushes."""
        for (s, _), chain in self._chains.items():
            if s == symbol:
                chain.dirty = True
        self._touched[symbol] = None
        self.pending = True

    def _chains_for(self, demand: Demand, symbol: str) -> dict[int, tuple[str, ...]]:
        """The periods watched on `symbol`, each with its stream names (chains made here)."""
        periods: dict[int, list[str]] = {}
        for name in demand.names_for("depth", symbol):
            stream = demand.streams.get(name)
            if stream is not None:
                periods.setdefault(stream.period_ms, []).append(name)
        for period_ms in periods:
            if (symbol, period_ms) not in self._chains:
                chain = _Chain(period_ms, self.update_id(symbol))
                chain.dirty = True  # a new subscriber's first event: the whole book
                self._chains[(symbol, period_ms)] = chain
        return {period: tuple(names) for period, names in periods.items()}

    def flush(
        self,
        ex: Exchange,
        demand: Demand,
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        """Publish one diff per dirty, watched chain whose period has passed."""
        symbols = self._touched | {s: None for (s, _), c in self._chains.items() if c.dirty}
        self._touched = {}
        if not symbols:
            self.pending = False
            return
        now_ns = time.monotonic_ns()
        waiting = False
        for symbol in symbols:
            watched = self._chains_for(demand, symbol) if demand.wants("depth", symbol) else {}
            for (s, period_ms), chain in self._chains.items():
                if s != symbol or not chain.dirty:
                    continue
                names = watched.get(period_ms)
                if not names:
                    chain.dirty = False  # nobody watches this speed: its next diff covers it
                    continue
                if now_ns - chain.flushed_ns < chain.period_ns:
                    waiting = True
                    continue
                chain.dirty = False
                chain.flushed_ns = now_ns
                self._diff(ex, chain, symbol, names, now_ms, tx_ms, out)
        self.pending = waiting

    def next_due_ns(self) -> int | None:
        """When (monotonic ns) the first waiting chain may flush; None if none waits."""
        due = [c.flushed_ns + c.period_ns for c in self._chains.values() if c.dirty]
        return min(due) if due else None

    def _diff(
        self,
        ex: Exchange,
        chain: _Chain,
        symbol: str,
        names: tuple[str, ...],
        now_ms: int,
        tx_ms: int,
        out: list[MarketItem],
    ) -> None:
        bids, asks = ex.engine.market(symbol).book.depth(DEPTH_LEVELS)
        old_bids, old_asks = chain.book
        new_bids, new_asks = dict(bids), dict(asks)
        marked_bids, marked_asks = chain.marked
        bid_changes = _changes(bids, old_bids, new_bids, marked_bids)
        ask_changes = _changes(asks, old_asks, new_asks, marked_asks)
        chain.marked = (set(), set())
        if not bid_changes and not ask_changes:
            return
        chain.book = (new_bids, new_asks)
        previous_id = chain.last_id
        final_id = self._next_id(symbol)
        ids = (previous_id + 1, final_id, previous_id)
        chain.last_id = final_id
        self._ids[symbol] = ids
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
    rows: list[tuple[int, int]], old: dict[int, int], new: dict[int, int], marked: set[int]
) -> list[tuple[int, int]]:
    """Levels whose quantity changed or that a snapshot marked (absolute, best first), then
    removed levels (qty 0)."""
    changed = [(p, q) for p, q in rows if old.get(p) != q or p in marked]
    changed += [(p, 0) for p in old if p not in new]
    changed += [(p, 0) for p in sorted(marked) if p not in new and p not in old]
    return changed


__all__ = [
    "DEPTH_EVERY_NS",
    "DEPTH_LEVELS",
    "FIRST_UPDATE_ID",
    "NS_PER_MS",
    "DepthChain",
    "UpdateIds",
]
