"""`perpex keys create | list | revoke` through the real command line (typer's CliRunner on
`perpex.cli.app`): one JSON object for scripts, a secret shown once, a user's mistake as one
line on stderr with exit status 2 and nothing written."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from typer.testing import CliRunner

from perpex.cli import app
from perpex.server.keystore import KeyStore

runner = CliRunner()


def keys(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["keys", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def stored(data_dir: Path) -> KeyStore:
    return KeyStore(data_dir / "keys.db")


def test_create_json_is_one_object_with_the_key_and_its_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    code, out, err = keys(
        "create", "alice", "--deposit", "2500.50", "--json", "--data-dir", str(data_dir)
    )
    assert (code, err) == (0, "")
    made = json.loads(out)  # exactly one JSON document
    assert out.count("\n") == 1
    assert {k: made[k] for k in ("name", "kind", "deposit")} == {
        "name": "alice",
        "kind": "HMAC",
        "deposit": "2500.5",
    }
    assert len(made["api_key"]) == 64 and len(made["secret"]) == 64
    store = stored(data_dir)
    try:
        record = store.lookup(made["api_key"])
        assert record is not None
        assert (record.name, record.secret, record.deposit) == ("alice", made["secret"], "2500.5")
    finally:
        store.close()
    assert stat.S_IMODE((data_dir / "keys.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


def test_create_plain_prints_the_secret_once_and_says_so(tmp_path: Path) -> None:
    code, out, _ = keys("create", "bob", "--data-dir", str(tmp_path))
    assert code == 0
    store = stored(tmp_path)
    try:
        record = store.by_name("bob")
    finally:
        store.close()
    assert record is not None and record.secret is not None
    assert record.api_key in out and record.secret in out
    assert "shown once" in out
    assert record.deposit == "10000"  # the CLI's default deposit


def test_create_ed25519_prints_the_private_key_and_stores_only_the_public_key(
    tmp_path: Path,
) -> None:
    code, out, _ = keys("create", "eddie", "--ed25519", "--json", "--data-dir", str(tmp_path))
    assert code == 0
    made = json.loads(out)
    assert made["kind"] == "ED25519"
    private = load_pem_private_key(made["secret"].encode(), None)
    assert isinstance(private, Ed25519PrivateKey)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    store = stored(tmp_path)
    try:
        record = store.by_name("eddie")
    finally:
        store.close()
    assert record is not None
    assert (record.public_key, record.secret) == (public, None)
    assert b"PRIVATE" not in (tmp_path / "keys.db").read_bytes()
    code, plain, _ = keys("create", "eddie2", "--ed25519", "--data-dir", str(tmp_path))
    assert code == 0
    assert "-----BEGIN PRIVATE KEY-----" in plain and "shown once" in plain


def test_duplicate_name_is_refused_with_exit_2_and_nothing_written(tmp_path: Path) -> None:
    code, out, _ = keys("create", "alice", "--json", "--data-dir", str(tmp_path))
    assert code == 0
    first = json.loads(out)
    before = (tmp_path / "keys.db").read_bytes()
    code, out, err = keys(
        "create", "alice", "--deposit", "5", "--json", "--data-dir", str(tmp_path)
    )
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and err.startswith("error: ") and "alice" in err
    store = stored(tmp_path)
    try:
        (record,) = store.list()
    finally:
        store.close()
    assert (record.api_key, record.deposit) == (first["api_key"], "10000")
    assert (tmp_path / "keys.db").read_bytes() == before


@pytest.mark.parametrize(
    ("name", "deposit"),
    [
        ("has space", "1"),
        ("semi;colon", "1"),
        ("x" * 65, "1"),
        ("ok", "-1"),
        ("ok", "abc"),
        ("ok", "1.0000001"),
        ("ok", "nan"),
        ("ok", "Infinity"),
        ("ok", "1000000001"),
    ],
)
def test_bad_name_or_deposit_is_refused_before_anything_is_made(
    tmp_path: Path, name: str, deposit: str
) -> None:
    data_dir = tmp_path / "never"
    code, out, err = keys("create", name, "--deposit", deposit, "--data-dir", str(data_dir))
    assert (code, out) == (2, "")
    assert err.startswith("error: ") and err.count("\n") == 1
    assert not data_dir.exists()


def test_list_shows_keys_but_never_a_secret(tmp_path: Path) -> None:
    secrets = []
    for name in ("alice", "bob"):
        code, out, _ = keys("create", name, "--json", "--data-dir", str(tmp_path))
        assert code == 0
        secrets.append(json.loads(out)["secret"])
    code, out, _ = keys("revoke", "bob", "--data-dir", str(tmp_path))
    assert code == 0 and "revoked" in out
    code, out, _ = keys("list", "--json", "--data-dir", str(tmp_path))
    assert code == 0
    rows = json.loads(out)
    assert [(r["name"], r["revoked"]) for r in rows] == [("alice", False), ("bob", True)]
    assert all("secret" not in r for r in rows)
    code, table, _ = keys("list", "--data-dir", str(tmp_path))
    assert code == 0 and "alice" in table and "revoked" in table
    for secret in secrets:
        assert secret not in out and secret not in table


def test_list_of_an_empty_data_dir_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "none"
    code, out, _ = keys("list", "--json", "--data-dir", str(data_dir))
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = keys("list", "--data-dir", str(data_dir))
    assert code == 0 and "no keys" in out
    assert not data_dir.exists()


def test_revoke_unknown_or_twice(tmp_path: Path) -> None:
    code, _, err = keys("revoke", "ghost", "--data-dir", str(tmp_path / "none"))
    assert code == 2 and err.startswith("error: ") and "ghost" in err
    assert not (tmp_path / "none").exists()
    assert keys("create", "alice", "--data-dir", str(tmp_path))[0] == 0
    code, _, err = keys("revoke", "ghost", "--data-dir", str(tmp_path))
    assert code == 2 and "ghost" in err
    assert keys("revoke", "alice", "--data-dir", str(tmp_path))[0] == 0
    code, out, _ = keys("revoke", "alice", "--data-dir", str(tmp_path))
    assert code == 0 and "already" in out


def test_default_data_dir_follows_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    code, out, _ = keys("create", "alice", "--json")
    assert code == 0
    assert json.loads(out)["keys_file"] == str(tmp_path / "xdg" / "perpex" / "keys.db")
    assert (tmp_path / "xdg" / "perpex" / "keys.db").is_file()
    code, out, _ = keys("list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["alice"]
