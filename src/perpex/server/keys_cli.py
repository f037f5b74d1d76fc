"""`perpex keys create | list | revoke`: the API keys of a `perpex serve` data dir.

These commands write the key file only; a running server sees a new key at once, refuses a
revoked one within a second, and credits a new key's deposit to its account (once, when the
account does not exist yet). A secret is printed once, by `create`, and never again: `list`
shows names, kinds, api keys, deposits and states. A user's mistake (a bad name or deposit, a
duplicate name, an unknown key) is one line on stderr and exit status 2, with nothing written.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import typer

from perpex.server.config import KEYS_FILE, default_data_dir
from perpex.server.keystore import (
    ED25519,
    KeyError_,
    KeyRecord,
    KeyStore,
    check_deposit,
    check_name,
)


def _fail(message: str) -> NoReturn:
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(2)


def _keys_path(data_dir: str | None) -> Path:
    return (Path(data_dir) if data_dir is not None else default_data_dir()) / KEYS_FILE


def _open(path: Path) -> KeyStore:
    try:
        return KeyStore(path)
    except (sqlite3.Error, OSError) as exc:
        _fail(f"cannot open the key file {path}: {exc}")


def _open_existing(path: Path) -> KeyStore | None:
    """The store, or None when there is no key file (reading never creates one)."""
    return _open(path) if path.is_file() else None


def create(name: str, *, deposit: str, ed25519: bool, as_json: bool, data_dir: str | None) -> None:
    """Make a key (and, through the server, its account funded with `deposit` USDT)."""
    try:  # everything is checked before a directory or a file is made
        name = check_name(name)
        deposit = check_deposit(deposit)
    except KeyError_ as exc:
        _fail(str(exc))
    path = _keys_path(data_dir)
    store = _open(path)
    try:
        made = store.create(name, deposit=deposit, ed25519=ed25519)
    except KeyError_ as exc:
        _fail(str(exc))
    finally:
        store.close()
    assert made.secret is not None
    if as_json:
        out = {
            "name": made.name,
            "api_key": made.api_key,
            "secret": made.secret,
            "kind": made.kind,
            "deposit": made.deposit,
            "keys_file": str(path),
        }
        sys.stdout.write(json.dumps(out) + "\n")
        return
    secret_label = "private key (PEM)" if made.kind == ED25519 else "secret"
    lines = [
        f"name      {made.name}",
        f"kind      {made.kind}",
        f"deposit   {made.deposit} USDT (credited by the server to a new account)",
        f"api key   {made.api_key}",
    ]
    if made.kind == ED25519:
        lines += [f"{secret_label}:", made.secret.rstrip("\n")]
    else:
        lines.append(f"secret    {made.secret}")
    lines.append(f"The {secret_label} is shown once, now: store it (it cannot be shown again).")
    sys.stdout.write("\n".join(lines) + "\n")


def _row(record: KeyRecord) -> dict[str, object]:
    created = datetime.fromtimestamp(record.created_ms / 1000, tz=UTC)
    return {
        "name": record.name,
        "kind": record.kind,
        "api_key": record.api_key,
        "deposit": record.deposit,
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revoked": record.revoked,
    }


def list_keys(*, as_json: bool, data_dir: str | None) -> None:
    """The keys, oldest first (never a secret)."""
    path = _keys_path(data_dir)
    store = _open_existing(path)
    records: list[KeyRecord] = []
    if store is not None:
        try:
            records = store.list()
        finally:
            store.close()
    rows = [_row(r) for r in records]
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    if not rows:
        sys.stdout.write(f"no keys in {path}\n")
        return
    # Plain aligned lines (not a table that folds the 64-character api keys): easy to read,
    # to copy from and to grep.
    header = ("name", "kind", "state", "deposit", "created", "api key")
    lines = [header] + [
        (
            str(row["name"]),
            str(row["kind"]),
            "revoked" if row["revoked"] else "active",
            str(row["deposit"]),
            str(row["created"]),
            str(row["api_key"]),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    sys.stdout.write(f"API keys in {path}\n")
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=False)]
        sys.stdout.write("  ".join([*cells, line[-1]]) + "\n")


def revoke(name: str, *, data_dir: str | None) -> None:
    """Revoke `name`'s key: a running server refuses it within a second (-2015)."""
    path = _keys_path(data_dir)
    store = _open_existing(path)
    if store is None:
        _fail(f"no key named {name!r} (there is no key file {path})")
    try:
        changed = store.revoke(name)
    except KeyError_ as exc:
        _fail(str(exc))
    finally:
        store.close()
    if changed:
        sys.stdout.write(f"revoked the key of {name!r}; a running server refuses it within 1 s\n")
    else:
        sys.stdout.write(f"the key of {name!r} was revoked already\n")


__all__ = ["create", "list_keys", "revoke"]
