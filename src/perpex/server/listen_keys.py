"""Listen keys: the tokens that open an account's user-data stream (BINANCE_API.md §3, §6.3).

Binance USDⓈ-M rules: one key per account; `POST /fapi/v1/listenKey` makes it, or returns the
active one (and extends it); `PUT` extends it by 60 minutes; `DELETE` closes it; a key not
kept alive expires 60 minutes after its last POST/PUT, and its streams get `listenKeyExpired`.

Keys live in memory only (a restarted server has none, like a Binance stream after a
disconnect: clients ask for a new one). Only the event loop touches this store, so it has no
lock. Times are `time.monotonic()` seconds; the store holds at most one key per account.
"""

from __future__ import annotations

import re
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

LISTEN_KEY_TTL_S: Final = 3600.0  # Binance: 60 minutes after the last POST/PUT
LISTEN_KEY_CHARS: Final = 64
_ALPHABET: Final = string.ascii_letters + string.digits
_KEY_RE: Final = re.compile(r"[A-Za-z0-9]{64}")
NO_SUCH_KEY: Final = (-1125, "This listenKey does not exist.")


def looks_like_listen_key(text: str) -> bool:
    """A listen key's shape (64 letters and digits): how `/ws/<key>` is told from a stream."""
    return _KEY_RE.fullmatch(text) is not None


def new_listen_key() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(LISTEN_KEY_CHARS))


@dataclass
class _Entry:
    account: str
    expires_s: float


class ListenKeys:
    """account <-> key, with an expiry per key. `clock` is injectable for tests."""

    def __init__(
        self, ttl_s: float = LISTEN_KEY_TTL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._by_key: dict[str, _Entry] = {}
        self._by_account: dict[str, str] = {}
        self._lapsed: list[tuple[str, str]] = []  # expired keys replaced before `expire` ran

    def __len__(self) -> int:
        return len(self._by_key)

    def open(self, account: str) -> str:
        """The account's active key, extended, or a new one (Binance's POST)."""
        key = self._by_account.get(account)
        if key is not None and self._live(key):
            self._by_key[key].expires_s = self.clock() + self.ttl_s
            return key
        if key is not None:
            self._lapsed.append((key, account))
            self._forget(key)
        key = new_listen_key()
        self._by_key[key] = _Entry(account, self.clock() + self.ttl_s)
        self._by_account[account] = key
        return key

    def keep_alive(self, account: str, key: str | None = None) -> str | None:
        """Extend the account's key (PUT); None when it has none, or `key` is not its key."""
        active = self._by_account.get(account)
        if active is None or not self._live(active) or (key is not None and key != active):
            return None
        self._by_key[active].expires_s = self.clock() + self.ttl_s
        return active

    def close(self, account: str, key: str | None = None) -> str | None:
        """Close the account's key (DELETE); the closed key, or None when there was none."""
        active = self._by_account.get(account)
        if active is None or (key is not None and key != active):
            return None
        self._forget(active)
        return active

    def account_of(self, key: str) -> str | None:
        """The account of a live key (None for an unknown or expired one)."""
        if not self._live(key):
            return None
        return self._by_key[key].account

    def expire(self) -> list[tuple[str, str]]:
        """Forget every key past its expiry; (key, account) of each, for `listenKeyExpired`."""
        now = self.clock()
        gone = [(k, e.account) for k, e in self._by_key.items() if e.expires_s <= now]
        for key, _ in gone:
            self._forget(key)
        gone, self._lapsed = self._lapsed + gone, []
        return gone

    def _live(self, key: str) -> bool:
        entry = self._by_key.get(key)
        return entry is not None and entry.expires_s > self.clock()

    def _forget(self, key: str) -> None:
        entry = self._by_key.pop(key, None)
        if entry is not None and self._by_account.get(entry.account) == key:
            del self._by_account[entry.account]


__all__ = [
    "LISTEN_KEY_CHARS",
    "LISTEN_KEY_TTL_S",
    "NO_SUCH_KEY",
    "ListenKeys",
    "looks_like_listen_key",
    "new_listen_key",
]
