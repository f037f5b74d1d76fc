"""The journal's SQLite file: schema, meta checks, checksummed command rows and snapshots.

One database holds everything (stdlib `sqlite3`, WAL mode, `synchronous=FULL`):

- `meta`: format version, engine version, config fingerprint and the genesis state (the empty
  engine the journal starts from, as `Engine.snapshot()` bytes: it carries the market specs and
  the mark mode, so a replay tool needs nothing but the file);
- `commands`: one row per journaled input command: `seq` (dense from 1), `ts_ns` (the
  sequencer's stamp; informational, replay never reads it), an optional idempotency `key`, the
  msgspec MessagePack `payload` and a CRC-32 over all of them;
- `snapshots`: the full state at an exact `seq` with its `state_hash` and a BLAKE2b checksum.

A batch of commands is one transaction, hence one fsync (group commit). SQLite commits are
atomic, so a batch torn by a crash is simply absent when the file is opened again. Damage that
SQLite cannot see (a flipped bit inside a row) is caught by the row's checksum and reported
with its sequence number. This module stores and verifies bytes; `recovery.py` decides what
the bytes mean.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from perpex.core.messages import AnyCommand, Command

FORMAT_VERSION: Final = 1
APPLICATION_ID: Final = 0x70657270  # "perp": marks the file as a perpex journal
MAX_BATCH_COMMANDS: Final = 4096  # one transaction; keeps a commit's WAL growth bounded

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS commands ("
    " seq INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, key TEXT,"
    " payload BLOB NOT NULL, checksum INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS snapshots ("
    " seq INTEGER PRIMARY KEY, state_hash TEXT NOT NULL,"
    " blob BLOB NOT NULL, checksum TEXT NOT NULL)",
)

_encoder: Final = msgspec.msgpack.Encoder()
_command_decoder: Final = msgspec.msgpack.Decoder(AnyCommand)
_SEQ_TS: Final = struct.Struct(">qq")


class JournalError(Exception):
    """The journal cannot be opened or used; the message says why and what to do."""


class ConfigMismatch(JournalError):
    """The journal was written by another format, engine version or market configuration."""


class CorruptJournal(JournalError):
    """A row or snapshot failed its checksum (or is missing); `seq` names it when known."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


def row_checksum(seq: int, ts_ns: int, key: str | None, payload: bytes) -> int:
    """CRC-32 over everything in the row, so a row moved to another seq fails as well."""
    head = _SEQ_TS.pack(seq, ts_ns) + (b"\x00" if key is None else b"\x01" + key.encode())
    return zlib.crc32(payload, zlib.crc32(head))


def blob_checksum(blob: bytes) -> str:
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def encode_command(command: Command) -> bytes:
    return _encoder.encode(command)


def decode_command(payload: bytes) -> Command:
    command: Command = _command_decoder.decode(payload)
    return command


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    seq: int
    state_hash: str
    size_bytes: int


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    seq: int
    state_hash: str
    blob: bytes


@dataclass(frozen=True, slots=True)
class Meta:
    format_version: int
    engine_version: str
    config_fingerprint: str
    genesis: bytes  # Engine.snapshot() of the empty engine: market specs and mark mode
    window_capacity: int  # size of the idempotency window (replay evicts exactly as live did)


class JournalStore:
    """The SQLite file. Single writer: the owner serializes calls (one sequencer)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise JournalError(f"{self.path}: no such journal")
        try:
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from exc
        self._in_txn = False
        try:
            self._open_schema(create)
            self.last_seq = self._max_seq()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise damaged(self.path, exc) from exc
            raise

    def _open_schema(self, create: bool) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"{self.path}: SQLite refused WAL mode (got {mode!r})")
        self._db.execute("PRAGMA synchronous=FULL")
        app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (tables or not create)):
            raise JournalError(f"{self.path}: not a perpex journal")
        if app_id == 0:
            self._db.execute(f"PRAGMA application_id={APPLICATION_ID}")
        for statement in _SCHEMA:
            self._db.execute(statement)

    # -- meta -----------------------------------------------------------------------------
    def read_meta(self) -> Meta | None:
        rows = dict(self._query("SELECT key, value FROM meta"))
        if not rows:
            return None
        try:
            return Meta(
                format_version=int(rows["format_version"]),
                engine_version=str(rows["engine_version"]),
                config_fingerprint=str(rows["config_fingerprint"]),
                genesis=bytes(rows["genesis"]),
                window_capacity=int(rows["window_capacity"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise CorruptJournal(f"{self.path}: the meta table is damaged ({exc!r})") from exc

    def write_meta(self, meta: Meta) -> None:
        values = [
            ("format_version", meta.format_version),
            ("engine_version", meta.engine_version),
            ("config_fingerprint", meta.config_fingerprint),
            ("genesis", meta.genesis),
            ("window_capacity", meta.window_capacity),
        ]
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values)

    # -- commands -------------------------------------------------------------------------
    def append_batch(
        self,
        commands: Sequence[Command],
        keys: Sequence[str | None] | None = None,
        ts_ns: int = 0,
    ) -> list[int]:
        """Journal a batch in one transaction (one fsync); returns the seqs it was given."""
        if len(commands) > MAX_BATCH_COMMANDS:
            raise JournalError(f"batch of {len(commands)} > {MAX_BATCH_COMMANDS} commands")
        if keys is not None and len(keys) != len(commands):
            raise JournalError("keys and commands differ in length")
        if self._in_txn:
            return self.append_in_transaction(commands, keys, ts_ns)
        with self._transaction():
            return self.append_in_transaction(commands, keys, ts_ns)

    def append_in_transaction(
        self,
        commands: Sequence[Command],
        keys: Sequence[str | None] | None = None,
        ts_ns: int = 0,
    ) -> list[int]:
        """Write rows into the open transaction; durable only at `commit()`."""
        assert self._in_txn, "append_in_transaction outside a transaction"
        first = self.last_seq + 1
        rows = []
        for i, command in enumerate(commands):
            seq = first + i
            key = None if keys is None else keys[i]
            payload = _encoder.encode(command)
            rows.append((seq, ts_ns, key, payload, row_checksum(seq, ts_ns, key, payload)))
        try:
            self._db.executemany("INSERT INTO commands VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.IntegrityError as exc:
            raise JournalError(
                f"{self.path}: seq {first} already taken: another process is writing to this "
                "journal (one writer only)"
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from exc
        self.last_seq = first + len(rows) - 1
        return list(range(first, first + len(rows)))

    def iter_commands(
        self, after_seq: int = 0, *, verify: bool = True
    ) -> Iterator[tuple[int, int, str | None, Command]]:
        """(seq, ts_ns, key, command) for every row after `after_seq`, dense and verified.

        A missing seq, a checksum mismatch or an undecodable payload raises `CorruptJournal`
        naming the seq: recovery never guesses what a damaged row said.
        """
        expected = after_seq + 1
        cursor = self._db.execute(
            "SELECT seq, ts_ns, key, payload, checksum FROM commands WHERE seq > ? ORDER BY seq",
            (after_seq,),
        )
        # The loop runs once per row on recovery: row_checksum and decode_command, inlined.
        pack, crc32, decode = _SEQ_TS.pack, zlib.crc32, _command_decoder.decode
        try:
            for seq, ts_ns, key, payload, checksum in cursor:
                if seq != expected:
                    raise CorruptJournal(
                        f"{self.path}: journal row seq {expected} is missing (next row is "
                        f"seq {seq}); recovery refuses to guess what it said",
                        expected,
                    )
                head = pack(seq, ts_ns) + (b"\x00" if key is None else b"\x01" + key.encode())
                if verify and crc32(payload, crc32(head)) != checksum:
                    raise CorruptJournal(
                        f"{self.path}: journal row seq {seq} is damaged (checksum mismatch); "
                        "recovery refuses to guess what it said. Restore the file from a "
                        "replica or backup.",
                        seq,
                    )
                try:
                    command: Command = decode(payload)
                except msgspec.DecodeError as exc:
                    raise CorruptJournal(
                        f"{self.path}: journal row seq {seq} does not decode ({exc})", seq
                    ) from exc
                yield seq, ts_ns, key, command
                expected += 1
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc, near_seq=expected) from exc
        finally:
            cursor.close()

    def command_range(self) -> tuple[int, int, int]:
        """(count, first seq, last seq) of the rows present; (0, 0, 0) when there are none."""
        row = self._query("SELECT count(*), min(seq), max(seq) FROM commands")[0]
        return int(row[0]), int(row[1] or 0), int(row[2] or 0)

    # -- snapshots ------------------------------------------------------------------------
    def write_snapshot(self, seq: int, state_hash: str, blob: bytes) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?)",
                (seq, state_hash, blob, blob_checksum(blob)),
            )

    def snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot, newest first."""
        rows = self._query("SELECT seq, state_hash, length(blob) FROM snapshots ORDER BY seq DESC")
        return [SnapshotInfo(int(s), str(h), int(n)) for s, h, n in rows]

    def read_snapshot(self, seq: int) -> SnapshotRow:
        """The snapshot at `seq`, its checksum verified (`CorruptJournal` if it fails)."""
        rows = self._query("SELECT state_hash, blob, checksum FROM snapshots WHERE seq = ?", (seq,))
        if not rows:
            raise CorruptJournal(f"{self.path}: no snapshot at seq {seq}", seq)
        state_hash, blob, checksum = rows[0]
        if blob_checksum(bytes(blob)) != checksum:
            raise CorruptJournal(
                f"{self.path}: snapshot at seq {seq} is damaged (checksum mismatch)", seq
            )
        return SnapshotRow(seq, str(state_hash), bytes(blob))

    def delete_snapshots(self, seqs: Sequence[int]) -> None:
        if seqs:
            with self._transaction():
                self._db.executemany("DELETE FROM snapshots WHERE seq = ?", [(s,) for s in seqs])

    def delete_commands_through(self, seq: int) -> int:
        """Drop the rows with seq <= `seq` (they are inside a kept snapshot); returns how many."""
        with self._transaction():
            cursor = self._db.execute("DELETE FROM commands WHERE seq <= ?", (seq,))
        return int(cursor.rowcount)

    def clear_snapshots(self) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM snapshots")

    # -- transactions and housekeeping ----------------------------------------------------
    def begin(self) -> None:
        assert not self._in_txn, "nested transaction"
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from exc
        self._in_txn = True

    def commit(self) -> None:
        assert self._in_txn, "commit outside a transaction"
        try:
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self.rollback()  # the batch is not durable: forget its seqs
            raise damaged(self.path, exc) from exc
        self._in_txn = False

    def rollback(self) -> None:
        if self._in_txn:
            self._in_txn = False
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self.last_seq = self._max_seq()

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def quick_check(self) -> None:
        """SQLite's own structural check (b-tree pages, lengths); `CorruptJournal` if it fails."""
        try:
            rows = self._query("PRAGMA quick_check")
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from exc
        problems = [str(r[0]) for r in rows]
        if problems != ["ok"]:
            raise CorruptJournal(
                f"{self.path}: the database file is damaged (SQLite quick_check: "
                f"{'; '.join(problems[:5])}). Restore it from a replica or backup."
            )

    def size_bytes(self) -> tuple[int, int]:
        """(database file, write-ahead log) sizes in bytes."""
        wal = Path(f"{self.path}-wal")
        return self.path.stat().st_size, wal.stat().st_size if wal.exists() else 0

    def close(self) -> None:
        if self._in_txn:
            self.rollback()
        self._db.close()

    def _max_seq(self) -> int:
        row = self._query(
            "SELECT max(coalesce((SELECT max(seq) FROM commands), 0),"
            " coalesce((SELECT max(seq) FROM snapshots), 0))"
        )[0]
        return int(row[0])

    def _query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute(sql, params))
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from exc

    def _transaction(self) -> _Transaction:
        return _Transaction(self)


class _Transaction:
    """`with store._transaction():` one BEGIN IMMEDIATE ... COMMIT, rolled back on error."""

    def __init__(self, store: JournalStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store.begin()

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self._store.commit()
        else:
            self._store.rollback()


def damaged(path: Path, exc: sqlite3.DatabaseError, near_seq: int | None = None) -> JournalError:
    """Turn SQLite's error into one that says which file and what to do."""
    where = f" near journal row seq {near_seq}" if near_seq is not None else ""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return JournalError(f"{path}: the journal is locked by another process ({text})")
    return CorruptJournal(
        f"{path}: the database file is damaged{where} (SQLite: {text}). Restore it from a "
        "replica or backup; recovery will not guess.",
        near_seq,
    )
