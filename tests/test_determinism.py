"""Replay determinism (DESIGN.md §1, §6.3): the same commands give the same events and the
same `state_hash()`, in another process with another `PYTHONHASHSEED`, in a second engine, and
across a snapshot -> restore at any cut point.

The input is the shared stream of tests/streams.py: deposits, oracle ticks, market makers
quoting around the mark, takers crossing it, cancels, leverage and margin-mode changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Final

import msgspec
import pytest

from perpex.core.engine import Engine
from perpex.core.messages import Command, Event, TradeExecuted
from streams import command_stream, default_specs

TESTS_DIR: Final = Path(__file__).resolve().parent
SEED: Final = 20240101
N_COMMANDS: Final = 3_000
HASH_SEEDS: Final = ("0", "12345")
MIN_TRADES: Final = 300  # the stream must exercise matching, not just bookkeeping

Run = tuple[list[list[Event]], str]  # events per command, final state hash

# Run in a fresh interpreter: builds the stream, applies it, prints four digests and a count.
REPLAY_SCRIPT: Final = """
import hashlib, sys
import msgspec
sys.path.insert(0, sys.argv[1])
from perpex.core.engine import Engine
from perpex.core.messages import TradeExecuted
from streams import command_stream, default_specs

commands = command_stream(int(sys.argv[2]), int(sys.argv[3]))
engine = Engine(default_specs())
events = engine.apply_all(commands)
engine.check_invariants()
digest = lambda obj: hashlib.blake2b(msgspec.msgpack.encode(obj), digest_size=32).hexdigest()
trades = sum(isinstance(e, TradeExecuted) for e in events)
print(digest(commands), digest(events), engine.state_hash(), digest(engine.snapshot()), trades)
"""


def digest(obj: object) -> str:
    return hashlib.blake2b(msgspec.msgpack.encode(obj), digest_size=32).hexdigest()


def run_in_subprocess(hash_seed: str) -> list[str]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run(
        [sys.executable, "-c", REPLAY_SCRIPT, str(TESTS_DIR), str(SEED), str(N_COMMANDS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    return command_stream(SEED, N_COMMANDS)


@pytest.fixture(scope="module")
def uninterrupted(commands: list[Command]) -> Run:
    """Events per command and the final hash of one straight run."""
    engine = Engine(default_specs())
    per_command = [engine.apply(c) for c in commands]
    return per_command, engine.state_hash()


def test_stream_is_realistic(commands: list[Command], uninterrupted: Run) -> None:
    per_command, _ = uninterrupted
    assert len(commands) == N_COMMANDS
    trades = sum(isinstance(e, TradeExecuted) for events in per_command for e in events)
    assert trades >= MIN_TRADES
    assert command_stream(SEED, N_COMMANDS) == commands, "the generator is not a pure function"


def test_replay_identical_across_hash_seeds_in_subprocesses(
    commands: list[Command], uninterrupted: Run
) -> None:
    runs = [run_in_subprocess(seed) for seed in HASH_SEEDS]
    assert runs[0] == runs[1], f"PYTHONHASHSEED changed the outcome: {runs}"
    commands_digest, events_digest, state_hash, _, trades = runs[0]
    per_command, final_hash = uninterrupted
    # ... and they agree with this process too.
    assert commands_digest == digest(commands)
    assert events_digest == digest([e for events in per_command for e in events])
    assert state_hash == final_hash
    assert int(trades) >= MIN_TRADES


def test_two_engines_fed_the_same_commands_agree(commands: list[Command]) -> None:
    first, second = Engine(default_specs()), Engine(default_specs())
    for i, cmd in enumerate(commands):
        assert first.apply(cmd) == second.apply(cmd), f"command {i} diverged: {cmd}"
    assert first.state_hash() == second.state_hash()
    assert first.snapshot() == second.snapshot()


@pytest.mark.parametrize("cut", [0, 1, 17, 500, 1_234, 2_999, N_COMMANDS])
def test_snapshot_restore_continue_matches_uninterrupted_run(
    commands: list[Command], uninterrupted: Run, cut: int
) -> None:
    per_command, final_hash = uninterrupted
    engine = Engine(default_specs())
    for cmd in commands[:cut]:
        engine.apply(cmd)
    restored = Engine.restore(engine.snapshot())
    assert restored.state_hash() == engine.state_hash()
    restored.check_invariants()
    remaining = [restored.apply(c) for c in commands[cut:]]
    assert remaining == per_command[cut:]
    assert restored.state_hash() == final_hash


def test_restore_twice_in_a_row_is_stable(commands: list[Command]) -> None:
    """A restored engine snapshots to the same bytes, however often it is restored."""
    engine = Engine(default_specs())
    engine.apply_all(commands[:1_500])
    blob = engine.snapshot()
    again = Engine.restore(Engine.restore(blob).snapshot())
    assert again.snapshot() == blob
