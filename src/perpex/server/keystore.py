"""API keys: a SQLite file in the data dir, created 0600, shared by the server and the CLI.

One key belongs to one account (the key's name is the account's name). An HMAC key's secret is
stored as is, since verifying HMAC-SHA256 needs the secret itself; an Ed25519 key stores only
the public key. A key created while the server runs works at once: the server looks a key up
in the file when its cache misses. A key's optional deposit is applied by the server (the only
writer of the exchange) when the account does not exist yet, so it is applied exactly once.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

KEY_CHARS: Final = 64
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY,
    api_key TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('HMAC', 'ED25519')),
    secret TEXT,
    public_key BLOB,
    deposit TEXT NOT NULL DEFAULT '0',
    created_ms INTEGER NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
"""


@dataclass(frozen=True)
class KeyRecord:
    name: str  # the account
    api_key: str
    kind: str  # "HMAC" or "ED25519"
    secret: str | None  # HMAC only
    public_key: bytes | None  # ED25519 only (raw 32 bytes)
    deposit: str
    created_ms: int
    revoked: bool


@dataclass(frozen=True)
class NewKey:
    name: str
    api_key: str
    secret: str | None  # HMAC: shown once; Ed25519: None (the user keeps the private key)


class KeyError_(Exception):
    """A refused key operation (duplicate name, unknown name), with a message for people."""


class KeyStore:
    """The key file. Thread-safe; each call opens a short transaction."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Create it 0600 before SQLite writes a byte: secrets never sit in a readable file.
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            os.close(fd)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        self._cache: dict[str, KeyRecord] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create(
        self, name: str, *, deposit: str = "0", ed25519_public_key: bytes | None = None
    ) -> NewKey:
        api_key = secrets.token_hex(KEY_CHARS // 2)
        secret = None if ed25519_public_key is not None else secrets.token_hex(KEY_CHARS // 2)
        kind = "HMAC" if ed25519_public_key is None else "ED25519"
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO keys (name, api_key, kind, secret, public_key, deposit, "
                    "created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        api_key,
                        kind,
                        secret,
                        ed25519_public_key,
                        deposit,
                        int(time.time() * 1000),
                    ),
                )
            except sqlite3.IntegrityError:
                raise KeyError_(f"a key named {name!r} exists already") from None
        return NewKey(name, api_key, secret)

    def lookup(self, api_key: str) -> KeyRecord | None:
        """The live (not revoked) key, from the cache or the file."""
        record = self._cache.get(api_key)
        if record is not None:
            return record
        with self._lock:
            row = self._db.execute(
                "SELECT name, api_key, kind, secret, public_key, deposit, created_ms, revoked "
                "FROM keys WHERE api_key = ? AND revoked = 0",
                (api_key,),
            ).fetchone()
        if row is None:
            return None
        record = _record(row)
        self._cache[api_key] = record
        return record

    def by_name(self, name: str) -> KeyRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT name, api_key, kind, secret, public_key, deposit, created_ms, revoked "
                "FROM keys WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else _record(row)

    def list(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, api_key, kind, secret, public_key, deposit, created_ms, revoked "
                "FROM keys ORDER BY created_ms, name"
            ).fetchall()
        return [_record(r) for r in rows]

    def revoke(self, name: str) -> None:
        with self._lock:
            cursor = self._db.execute("UPDATE keys SET revoked = 1 WHERE name = ?", (name,))
            if cursor.rowcount == 0:
                raise KeyError_(f"no key named {name!r}")
        self._cache = {k: r for k, r in self._cache.items() if r.name != name}


def _record(row: tuple[object, ...]) -> KeyRecord:
    name, api_key, kind, secret, public_key, deposit, created_ms, revoked = row
    return KeyRecord(
        str(name),
        str(api_key),
        str(kind),
        None if secret is None else str(secret),
        None if public_key is None else bytes(public_key),  # type: ignore[call-overload]
        str(deposit),
        int(created_ms),  # type: ignore[call-overload]
        bool(revoked),
    )


__all__ = ["KeyError_", "KeyRecord", "KeyStore", "NewKey"]
