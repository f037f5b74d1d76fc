"""The golden journal: 11,272 fixed commands replayed to the state hash and event digest
recorded before the core was split into standalone modules (issue 11, "no behaviour change").

`tests/golden/journal.msgpack.gz` holds the commands as MessagePack (the journal's own
encoding); `tests/golden/expected.txt` holds what the engine of commit 42d46f3 gave for them:
the final `state_hash()` and a SHA-256 over every event's bytes in order. The journal mixes the
seeded stream (quotes, takers, cancels, venue ticks, leverage, margin modes, transfers) with a
crash: twenty 50x-100x longs liquidated into an empty book, the fund exhausted, the short whale
auto-deleveraged, then a funding settlement. `build_golden.py` made both files; it is kept to
show how, and is not run by the tests.

Updated once, on purpose (2026-12-05): a reduce-only order now gets only what the account's
open reduce-only orders leave of its position and is refused (-2022) when they leave nothing;
before, it was trimmed to the position alone and the two could exceed it. The first command
whose events changed is number 9,715 of the journal (a reduce-only sell of taker3 that is
now refused); the first 9,714 commands give the events they gave in commit 42d46f3.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
from pathlib import Path

import msgspec
import pytest

from perpex.core.engine import Engine
from perpex.core.markets import compile_market
from perpex.core.messages import AnyCommand, Command
from perpex.defaults import default_markets
from perpex.journal.journaled import JournaledEngine

GOLDEN = Path(__file__).resolve().parent / "golden"


def load_commands() -> list[Command]:
    blob = gzip.decompress((GOLDEN / "journal.msgpack.gz").read_bytes())
    commands: list[Command] = msgspec.msgpack.decode(blob, type=list[AnyCommand])  # type: ignore[valid-type]
    return commands


def expected() -> dict[str, str]:
    lines = (GOLDEN / "expected.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split(" ", 1) for line in lines)


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    return load_commands()


def specs() -> list:  # type: ignore[type-arg]
    return [compile_market(m) for m in default_markets()]


def test_the_journal_is_what_was_recorded(commands: list[Command]) -> None:
    assert len(commands) == int(expected()["commands"]) >= 10_000


def test_replay_gives_the_recorded_events_and_state_hash(commands: list[Command]) -> None:
    engine = Engine(specs(), "binance")
    digest = hashlib.sha256()
    encoder = msgspec.msgpack.Encoder()
    kinds: collections.Counter[str] = collections.Counter()
    for command in commands:
        for event in engine.apply(command):
            digest.update(encoder.encode(event))
            kinds[type(event).__name__] += 1
    engine.check_invariants()
    # The journal reaches what it was built to reach.
    for kind in ("LiquidationTriggered", "AutoDeleveraged", "FundingSettled", "TradeExecuted",
                 "OrderCanceled", "IndexUpdated", "OrderRejected"):
        assert kinds[kind] > 0, kind
    assert engine.state_hash() == expected()["state_hash"]
    assert digest.hexdigest() == expected()["events_sha256"]


def test_journaled_recovery_reaches_the_same_hash(
    commands: list[Command], tmp_path: Path
) -> None:
    path = tmp_path / "golden.db"
    with JournaledEngine(path, specs(), snapshot_every=4_000) as journaled:
        for start in range(0, len(commands), 4_000):
            journaled.apply_batch(commands[start : start + 4_000])
    reopened = JournaledEngine(path, specs())
    try:
        assert reopened.engine.state_hash() == expected()["state_hash"]
    finally:
        reopened.close(snapshot=False)
