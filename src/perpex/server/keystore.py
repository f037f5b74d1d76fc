"""API keys: a SQLite file in the data dir, created 0600, shared by the server and the CLI.

One key belongs to one account (the key's name is the account's name). An HMAC key's secret is
stored as is, since verifying HMAC-SHA256 needs the secret itself; an Ed25519 key stores only
the raw 32-byte public key (its private key is shown once, as PKCS8 PEM, and never stored).

The server reads the file from its event loop, so reads must be cheap and never wait: the file
is in WAL mode (a reader never waits for a writer), a looked-up key is cached, and the cache is
checked against the file at most once per `revalidate_s` through `PRAGMA data_version` (one
integer read, whatever the number of keys), which changes when another connection, such as
`perpex keys revoke` in another process, commits. A key created elsewhere is found at once (a
cache miss reads the file); a key revoked elsewhere is refused within `revalidate_s`.

A key's deposit (USDT, a decimal string) is applied by the server, the only writer of the
exchange, when the account does not exist yet, so it is applied exactly once. Secrets never
appear in a record's repr, so logging a record cannot leak one.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from perpex import parse
from perpex.errors import ExchangeError

KEY_CHARS: Final = 64  # api keys and HMAC secrets: 64 hex characters, as long as Binance's
HMAC: Final = "HMAC"
ED25519: Final = "ED25519"
ED25519_PUBLIC_BYTES: Final = 32
MAX_DEPOSIT: Final = Decimal(1_000_000_000)  # USDT per key; far below the engine's total bound
MAX_CACHED_KEYS: Final = 4096  # the cache is cleared when it reaches this (it refills on demand)
REVALIDATE_S: Final = 1.0  # how stale a cached key may be (a revocation's delay at most)
BUSY_TIMEOUT_MS: Final = 5000  # a writer (the CLI) waits this long for another writer
_COLUMNS: Final = "name, api_key, kind, secret, public_key, deposit, created_ms, revoked"
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
    secret: str | None = field(repr=False)  # HMAC only
    public_key: bytes | None  # ED25519 only (raw 32 bytes)
    deposit: str  # USDT, canonical decimal text ("0": none)
    created_ms: int
    revoked: bool


@dataclass(frozen=True)
class NewKey:
    name: str
    api_key: str
    # Shown once: the HMAC secret, or the Ed25519 private key (PKCS8 PEM) when the store made
    # the pair; None for an Ed25519 key registered with the caller's own public key.
    secret: str | None = field(repr=False)
    kind: str = HMAC
    deposit: str = "0"


class KeyError_(Exception):
    """A refused key operation (duplicate name, unknown name, bad name or deposit), with a
    message for people."""


def check_name(name: object) -> str:
    """The account rules (`perpex.parse.account`): 1-64 of `A-Za-z0-9_.:@-`."""
    try:
        return parse.account(name)
    except ExchangeError:
        raise KeyError_(
            f"bad key name {name!r}: use 1 to 64 of the characters A-Z a-z 0-9 _ . : @ -"
        ) from None


def check_deposit(deposit: object) -> str:
    """A non-negative USDT amount with at most 6 decimals, at most `MAX_DEPOSIT`; canonical
    text ("10000", "0.5", "0")."""
    text = str(deposit).strip()
    try:
        amount = Decimal(text)
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite() or amount < 0 or amount > MAX_DEPOSIT:
        raise KeyError_(
            f"bad deposit {deposit!r}: a USDT amount from 0 to {MAX_DEPOSIT:,} (like 10000)"
        )
    if amount == 0:
        return "0"
    try:
        atoms = parse.amount_atoms(text)
    except ExchangeError:
        raise KeyError_(
            f"bad deposit {deposit!r}: at most 6 decimals (1 atom = 0.000001 USDT)"
        ) from None
    return f"{(Decimal(atoms).scaleb(-6)).normalize():f}"


def new_ed25519_pair() -> tuple[str, bytes]:
    """A fresh Ed25519 key pair: (private key as unencrypted PKCS8 PEM, raw public key)."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return pem, public


def _private_file(path: Path) -> None:
    """Create `path` 0600 before SQLite writes a byte (secrets never sit in a readable file);
    tighten an existing one that group or others can read."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)
    else:
        os.close(fd)


class KeyStore:
    """The key file. Thread-safe (one connection behind a lock); each call is one short
    statement, so a call from the server's event loop never blocks it for long."""

    def __init__(self, path: str | os.PathLike[str], *, revalidate_s: float = REVALIDATE_S) -> None:
        self.path = Path(path)
        # A new data dir is private (0700): it also holds the journal of every account.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _private_file(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # WAL: the server's reads never wait for the CLI's writes. SQLite gives the -wal
            # and -shm files the database file's mode (0600).
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error:
            self._db.close()
            raise
        self._revalidate_ns = int(revalidate_s * 1e9)
        self._data_version = self._read_data_version()
        self._checked_ns = time.monotonic_ns()
        self._cache: dict[str, KeyRecord] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes ---------------------------------------------------------------------------
    def create(
        self,
        name: str,
        *,
        deposit: str = "0",
        ed25519_public_key: bytes | None = None,
        ed25519: bool = False,
    ) -> NewKey:
        """A new key for account `name`. HMAC by default (the secret is returned once);
        `ed25519=True` makes a key pair and returns its private key (PEM) as the secret;
        `ed25519_public_key` registers the caller's own public key (raw 32 bytes)."""
        name = check_name(name)
        deposit = check_deposit(deposit)
        private_pem: str | None = None
        if ed25519 and ed25519_public_key is None:
            private_pem, ed25519_public_key = new_ed25519_pair()
        if ed25519_public_key is not None and len(ed25519_public_key) != ED25519_PUBLIC_BYTES:
            raise KeyError_("an Ed25519 public key is 32 raw bytes")
        api_key = secrets.token_hex(KEY_CHARS // 2)
        if ed25519_public_key is None:
            kind, secret = HMAC, secrets.token_hex(KEY_CHARS // 2)
        else:
            kind, secret = ED25519, None
        with self._lock:
            try:
                self._db.execute(
                    f"INSERT INTO keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                    (
                        name,
                        api_key,
                        kind,
                        secret,
                        ed25519_public_key,
                        deposit,
                        time.time_ns() // 1_000_000,
                    ),
                )
            except sqlite3.IntegrityError:
                old = self._fetch_one("SELECT revoked FROM keys WHERE name = ?", name)
                state = " (revoked)" if old is not None and old[0] else ""
                raise KeyError_(f"a key named {name!r} exists already{state}") from None
        return NewKey(name, api_key, secret if kind == HMAC else private_pem, kind, deposit)

    def revoke(self, name: str) -> bool:
        """Revoke the key of `name`; False when it was revoked already. Refused at once here,
        within `revalidate_s` by a server in another process."""
        with self._lock:
            row = self._fetch_one("SELECT revoked FROM keys WHERE name = ?", name)
            if row is None:
                raise KeyError_(f"no key named {name!r}")
            if row[0]:
                return False
            self._db.execute("UPDATE keys SET revoked = 1 WHERE name = ?", (name,))
            # This connection's own commit does not move its data_version: drop the entry.
            self._cache = {k: r for k, r in self._cache.items() if r.name != name}
        return True

    # -- reads ----------------------------------------------------------------------------
    def lookup(self, api_key: str) -> KeyRecord | None:
        """The live (not revoked) key: from the cache when the file has not changed since it
        was last checked (at most `revalidate_s` ago), else from the file."""
        now_ns = time.monotonic_ns()
        if now_ns - self._checked_ns >= self._revalidate_ns:
            self._revalidate(now_ns)
        record = self._cache.get(api_key)
        if record is not None:
            return record
        with self._lock:
            row = self._fetch_one(
                f"SELECT {_COLUMNS} FROM keys WHERE api_key = ? AND revoked = 0", api_key
            )
        if row is None:
            return None  # never cached: a key made a moment later must work at once
        record = _record(row)
        if len(self._cache) >= MAX_CACHED_KEYS:
            self._cache = {}
        self._cache[api_key] = record
        return record

    def by_name(self, name: str) -> KeyRecord | None:
        with self._lock:
            row = self._fetch_one(f"SELECT {_COLUMNS} FROM keys WHERE name = ?", name)
        return None if row is None else _record(row)

    def pending_deposits(self) -> list[tuple[str, str]]:
        """(name, deposit) of every live key with a deposit, oldest first: what the server
        credits to accounts it has not seen yet (no secret is read)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT name, deposit FROM keys WHERE revoked = 0 AND deposit != '0' "
                "ORDER BY created_ms, name"
            ).fetchall()
        return [(str(name), str(deposit)) for name, deposit in rows]

    def list(self) -> list[KeyRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM keys ORDER BY created_ms, name"
            ).fetchall()
        return [_record(r) for r in rows]

    # -- internals ------------------------------------------------------------------------
    def _revalidate(self, now_ns: int) -> None:
        version = self._read_data_version()
        if version != self._data_version:
            self._cache = {}  # another connection committed: re-read what is asked next
            self._data_version = version
        self._checked_ns = now_ns

    def _read_data_version(self) -> int:
        with self._lock:
            row = self._db.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def _fetch_one(self, sql: str, *args: object) -> tuple[object, ...] | None:
        row: tuple[object, ...] | None = self._db.execute(sql, args).fetchone()
        return row


def _record(row: tuple[object, ...]) -> KeyRecord:
    name, api_key, kind, secret, public_key, deposit, created_ms, revoked = row
    assert isinstance(created_ms, int) and isinstance(revoked, int)
    assert public_key is None or isinstance(public_key, bytes)
    return KeyRecord(
        name=str(name),
        api_key=str(api_key),
        kind=str(kind),
        secret=None if secret is None else str(secret),
        public_key=public_key,
        deposit=str(deposit),
        created_ms=created_ms,
        revoked=bool(revoked),
    )


__all__ = [
    "ED25519",
    "HMAC",
    "MAX_DEPOSIT",
    "REVALIDATE_S",
    "KeyError_",
    "KeyRecord",
    "KeyStore",
    "NewKey",
    "check_deposit",
    "check_name",
    "new_ed25519_pair",
]
