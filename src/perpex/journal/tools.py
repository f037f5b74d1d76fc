"""Offline tools over a journal file: replay it into a fresh engine, and inspect it.

`replay(path)` rebuilds the state from the genesis the journal records (its markets and mark
mode), applying every row from seq 1 with the same `step()` the live exchange used, and
returns the final `state_hash()`, the digest of every event it produced and the number of
rows. It checks each stored snapshot's state hash on the way: a replay that disagrees with a
snapshot is an engine that is not deterministic (or not the one that wrote the file). It only
reads the file, so it is safe next to a running exchange (SQLite WAL readers do not block the
writer). `inspect(path)` describes the file without replaying it.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Final, NamedTuple

import msgspec

from perpex.core.engine import Engine
from perpex.core.messages import Command, Event
from perpex.journal.idempotency import IdempotencyWindow
from perpex.journal.recovery import Outcome, describe_genesis, step
from perpex.journal.store import (
    FORMAT_VERSION,
    ConfigMismatch,
    JournalError,
    JournalStore,
    Meta,
)

_event_encoder: Final = msgspec.msgpack.Encoder()


class EventDigest:
    """BLAKE2b over the MessagePack encoding of each event, in order (encodings delimit
    themselves, so the concatenation is unambiguous)."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=32)
        self.count = 0

    def update(self, events: Iterable[Event]) -> None:
        encode = _event_encoder.encode
        for event in events:
            self._hash.update(encode(event))
            self.count += 1

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


def event_digest(events: Iterable[Event]) -> str:
    """The digest `replay()` reports, for a list of events (e.g. `Exchange.events()`)."""
    digest = EventDigest()
    digest.update(events)
    return digest.hexdigest()


class ReplayResult(NamedTuple):
    state_hash: str
    event_digest: str
    commands: int  # journal rows replayed


def replay(path: str | os.PathLike[str], *, check_snapshots: bool = True) -> ReplayResult:
    """Replay the whole journal at `path` into a fresh engine (the file is not modified)."""
    store = JournalStore(path, create=False)
    try:
        expected = {s.seq: s.state_hash for s in store.snapshots()} if check_snapshots else {}
        engine = None
        digest = EventDigest()
        replayed = 0
        for engine, seq, _command, outcome in _replay_rows(store):
            if not outcome.duplicate and outcome.error is None:
                digest.update(outcome.events)
            replayed += 1
            want = expected.get(seq)
            if want is not None and engine.state_hash() != want:
                raise JournalError(
                    f"{store.path}: replay disagrees with the snapshot at seq {seq} "
                    f"(state hash {engine.state_hash()[:16]}... != {want[:16]}...): the engine "
                    "is not the one that wrote the journal, or not deterministic"
                )
        if engine is None:  # no rows: the genesis state
            engine = Engine.restore(_meta(store).genesis)
        engine.check_invariants()
        return ReplayResult(engine.state_hash(), digest.hexdigest(), replayed)
    finally:
        store.close()


def iter_commands(path: str | os.PathLike[str]) -> Iterator[tuple[Command, list[Event]]]:
    """`iter_events` with each row's command: (command, its events), for a view that needs what
    was asked as well as what happened (the server's self-trade prevention mode of an order).
    Read-only; a duplicate or a refused row yields nothing, as in `iter_events`."""
    store = JournalStore(path, create=False)
    try:
        for _engine, _seq, command, outcome in _replay_rows(store):
            if not outcome.duplicate and outcome.error is None and outcome.events:
                yield command, outcome.events
    finally:
        store.close()


def iter_events(path: str | os.PathLike[str]) -> Iterator[list[Event]]:
    """Every journaled command's events, from seq 1, as a fresh engine replays them: how a
    driver that keeps views of the past (the server's order history, trades and candles)
    rebuilds them on start, whatever snapshots the live recovery starts from. Read-only.
    A duplicate (a resent client order id) and a row the engine refused yield nothing."""
    store = JournalStore(path, create=False)
    try:
        for _engine, _seq, _command, outcome in _replay_rows(store):
            if not outcome.duplicate and outcome.error is None and outcome.events:
                yield outcome.events
    finally:
        store.close()


def inspect(path: str | os.PathLike[str], *, by_type: bool = False) -> dict[str, Any]:
    """Counts, seq range, snapshots, sizes and the config of the journal at `path`.

    `by_type=True` also counts the commands by type (decodes every row: slower).
    """
    store = JournalStore(path, create=False)
    try:
        meta = _meta(store, check_format=False)
        count, first, last = store.command_range()
        db_bytes, wal_bytes = store.size_bytes()
        info: dict[str, Any] = {
            "path": str(store.path),
            "file_bytes": db_bytes,
            "wal_bytes": wal_bytes,
            "format_version": meta.format_version,
            "engine_version": meta.engine_version,
            "config_fingerprint": meta.config_fingerprint,
            "config": describe_genesis(meta.genesis),
            "idempotency_window": meta.window_capacity,
            "commands": count,
            "first_seq": first,
            "last_seq": max(last, store.last_seq),
            "snapshots": [
                {"seq": s.seq, "state_hash": s.state_hash, "bytes": s.size_bytes}
                for s in store.snapshots()
            ],
        }
        if by_type:
            counts: Counter[str] = Counter(
                type(command).__name__
                for _seq, _ts, _key, command in store.iter_commands(first - 1 if count else 0)
            )
            info["commands_by_type"] = dict(sorted(counts.items()))
        return info
    finally:
        store.close()


def _replay_rows(store: JournalStore) -> Iterator[tuple[Engine, int, Command, Outcome]]:
    """Every row from seq 1 through a fresh engine (the one `step()` live recovery uses):
    (the engine after the row, its seq, its command, its outcome). Refuses a journal pruned at
    the start."""
    meta = _meta(store)
    count, first, _ = store.command_range()
    if count and first != 1:
        raise JournalError(
            f"{store.path}: journal rows before seq {first} were pruned; a replay from the "
            "start is impossible (opening the journal recovers from its snapshots instead)"
        )
    engine = Engine.restore(meta.genesis)
    window = IdempotencyWindow(meta.window_capacity)
    for seq, _ts_ns, key, command in store.iter_commands(0):
        yield engine, seq, command, step(engine, window, seq, command, key)


def _meta(store: JournalStore, *, check_format: bool = True) -> Meta:
    meta = store.read_meta()
    if meta is None:
        raise JournalError(f"{store.path}: an empty journal (no meta table rows)")
    if check_format and meta.format_version != FORMAT_VERSION:
        raise ConfigMismatch(
            f"{store.path}: journal format v{meta.format_version}, this perpex reads "
            f"v{FORMAT_VERSION}"
        )
    return meta
