"""Replay determinism with conditional orders in the stream (DESIGN.md §1, §6.3): stops,
take-profits, trailing stops, protection attached to entries and exit ladders fire on marks
and trades, cascade, are canceled with their positions and move; the same commands still give
the same events and `state_hash()` in a second engine, in a fresh interpreter with another
`PYTHONHASHSEED`, after a snapshot -> restore at any cut point, and through the journal.

The input is the shared stream of tests/streams.py with conditional commands woven in by
`conditional_stream` (a pure function of the seed, like the stream itself).
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Final

import msgspec
import pytest

from perpex.core.engine import Engine
from perpex.core.messages import (
    AnyCommand,
    CancelOrder,
    Command,
    ConditionalKind,
    ConditionalOrderAccepted,
    ConditionalOrderCanceled,
    ConditionalOrderTriggered,
    Event,
    ExitLadderPlaced,
    ExitLadderStopMoved,
    OrderRejected,
    OrderType,
    PlaceConditionalOrder,
    PlaceExitLadder,
    PlaceOrder,
    RequestRejected,
    TimeInForce,
    UpdateIndex,
    UpdateSources,
    WorkingType,
)
from perpex.core.orders import trigger_direction
from perpex.journal import JournaledEngine
from streams import TAKERS, command_stream, default_specs

TESTS_DIR: Final = Path(__file__).resolve().parent
SEED: Final = 20240312
N_COMMANDS: Final = 2_500
BPS: Final = 10_000
PPM: Final = 1_000_000

Run = tuple[list[list[Event]], str]


def conditional_stream(seed: int, n: int) -> list[Command]:
    """The shared stream with conditional orders woven in after about a third of the takers'
    orders. Trigger prices are drawn a few bps around the stream's own index, mostly on the
    side they fire from (so many fire, a few are refused as immediate, most rest a while)."""
    rng = random.Random(seed + 1)
    index = {"BTCUSDT": 600_000, "ETHUSDT": 300_000}
    out: list[Command] = []
    guessed_ids = 0

    def away(symbol: str, bps: int) -> int:
        return max(1, index[symbol] * (BPS + bps) // BPS)

    for cmd in command_stream(seed, n):
        if isinstance(cmd, UpdateIndex):
            index[cmd.symbol] = cmd.index_ticks
        elif isinstance(cmd, UpdateSources):
            index[cmd.symbol] = sorted(p for _, p in cmd.quotes)[len(cmd.quotes) // 2]
        if isinstance(cmd, PlaceOrder) and cmd.account in TAKERS and not cmd.reduce_only:
            guessed_ids += 1
            if rng.random() < 0.15:  # protection attached to the entry
                cmd = msgspec.structs.replace(
                    cmd,
                    stop_loss_ticks=away(cmd.symbol, -cmd.side * rng.randint(3, 60)),
                    take_profit_ticks=away(cmd.symbol, cmd.side * rng.randint(3, 60)),
                    protection_working_type=rng.choice(list(WorkingType)),
                )
        out.append(cmd)
        if not (isinstance(cmd, PlaceOrder) and cmd.account in TAKERS) or rng.random() > 0.45:
            continue
        symbol, account = cmd.symbol, cmd.account
        roll = rng.random()
        if roll < 0.12:  # a ladder for a long (+1) or a short (-1): the guess may be wrong
            way = rng.choice((1, -1))
            trail = rng.random() < 0.5
            out.append(
                PlaceExitLadder(
                    account,
                    symbol,
                    ((away(symbol, way * 6), 400_000), (away(symbol, way * 14), 350_000),
                     (away(symbol, way * 30), 250_000)),
                    away(symbol, -way * 30),
                    1,
                    2 if trail else 0,
                    5_000 if trail else 0,
                    rng.choice(list(WorkingType)),
                )
            )  # fmt: skip
            continue
        if roll < 0.18:
            guess = rng.randint(max(1, guessed_ids * 2 - 40), guessed_ids * 2 + 5)
            out.append(CancelOrder(account, symbol, order_id=guess))
            continue
        kind = rng.choice(list(ConditionalKind))
        side = rng.choice((1, -1))
        close = kind in (ConditionalKind.STOP_MARKET, ConditionalKind.TAKE_PROFIT_MARKET) and (
            rng.random() < 0.2
        )
        fixed = kind != ConditionalKind.TRAILING_STOP_MARKET
        # mostly on the side it fires from (trigger_direction), now and then the wrong one
        direction = trigger_direction(kind, side) * (1 if rng.random() < 0.9 else -1)
        stop = away(symbol, direction * rng.randint(2, 40)) if fixed else 0
        limit = (
            away(symbol, rng.randint(-30, 30))
            if kind in (ConditionalKind.STOP, ConditionalKind.TAKE_PROFIT)
            else 0
        )
        out.append(
            PlaceConditionalOrder(
                account,
                symbol,
                side,
                kind,
                rng.choice(list(WorkingType)),
                0 if close else cmd.qty_lots,
                stop,
                limit,
                TimeInForce.GTC,
                (not close) and rng.random() < 0.3,
                close,
                None,
                0 if fixed else rng.choice((1_000, 3_000, 10_000)),
                None if fixed or rng.random() < 0.7 else away(symbol, -side * 10),
            )
        )
    return out[:n]


def digest(obj: object) -> str:
    return hashlib.blake2b(msgspec.msgpack.encode(obj), digest_size=32).hexdigest()


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    return conditional_stream(SEED, N_COMMANDS)


@pytest.fixture(scope="module")
def uninterrupted(commands: list[Command]) -> Run:
    engine = Engine(default_specs())
    per_command = []
    for i, cmd in enumerate(commands):
        per_command.append(engine.apply(cmd))
        if i % 250 == 0:
            engine.check_invariants()
    engine.check_invariants()
    return per_command, engine.state_hash()


def test_the_stream_exercises_conditional_orders(
    commands: list[Command], uninterrupted: Run
) -> None:
    per_command, _ = uninterrupted
    events = [e for batch in per_command for e in batch]
    count = {t: sum(isinstance(e, t) for e in events) for t in (
        ConditionalOrderAccepted, ConditionalOrderTriggered, ConditionalOrderCanceled,
        ExitLadderPlaced, ExitLadderStopMoved)}  # fmt: skip
    assert count[ConditionalOrderAccepted] >= 100, count
    assert count[ConditionalOrderTriggered] >= 40, count
    assert count[ConditionalOrderCanceled] >= 20, count
    assert count[ExitLadderPlaced] >= 3, count
    assert count[ExitLadderStopMoved] >= 1, count
    assert conditional_stream(SEED, N_COMMANDS) == commands, "the generator is not pure"
    # the journal's command codec carries the new commands and fields
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(commands), type=list[AnyCommand])
    assert decoded == commands


def test_two_engines_fed_the_same_commands_agree(commands: list[Command]) -> None:
    first, second = Engine(default_specs()), Engine(default_specs())
    for i, cmd in enumerate(commands):
        assert first.apply(cmd) == second.apply(cmd), f"command {i} diverged: {cmd}"
    assert first.snapshot() == second.snapshot()


@pytest.mark.parametrize("cut", [0, 40, 333, 1_000, 1_777, 2_400, N_COMMANDS])
def test_snapshot_restore_continue_matches_uninterrupted_run(
    commands: list[Command], uninterrupted: Run, cut: int
) -> None:
    per_command, final_hash = uninterrupted
    engine = Engine(default_specs())
    for cmd in commands[:cut]:
        engine.apply(cmd)
    restored = Engine.restore(engine.snapshot())
    assert restored.state_hash() == engine.state_hash()
    assert restored.snapshot() == engine.snapshot()
    restored.check_invariants()
    for i in range(cut, len(commands)):
        assert restored.apply(commands[i]) == per_command[i], f"command {i} after cut {cut}"
    assert restored.state_hash() == final_hash


REPLAY_SCRIPT: Final = """
import hashlib, sys
import msgspec
sys.path.insert(0, sys.argv[1])
from perpex.core.engine import Engine
from streams import default_specs
from test_conditional_determinism import conditional_stream

commands = conditional_stream(int(sys.argv[2]), int(sys.argv[3]))
engine = Engine(default_specs())
events = engine.apply_all(commands)
engine.check_invariants()
digest = lambda obj: hashlib.blake2b(msgspec.msgpack.encode(obj), digest_size=32).hexdigest()
print(digest(events), engine.state_hash(), digest(engine.snapshot()))
"""


def test_replay_is_identical_across_hash_seeds(uninterrupted: Run) -> None:
    runs = []
    for hash_seed in ("0", "4242"):
        done = subprocess.run(
            [sys.executable, "-c", REPLAY_SCRIPT, str(TESTS_DIR), str(SEED), str(N_COMMANDS)],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        runs.append(done.stdout.split())
    assert runs[0] == runs[1]
    per_command, final_hash = uninterrupted
    assert runs[0][0] == digest([e for batch in per_command for e in batch])
    assert runs[0][1] == final_hash


def test_journal_recovery_rebuilds_conditional_state(
    commands: list[Command], uninterrupted: Run, tmp_path: Path
) -> None:
    """Journal the stream with snapshots in between, reopen: the recovered engine (snapshot +
    replayed tail) has the same state, conditional books and ladders included."""
    _, final_hash = uninterrupted
    path = tmp_path / "conditional.db"
    journal = JournaledEngine(path, default_specs(), "binance", snapshot_every=700)
    for cmd in commands:
        journal.submit(cmd)
    assert journal.engine.state_hash() == final_hash
    journal.close(snapshot=False)  # recovery = the last snapshot + the journal's tail
    reopened = JournaledEngine(path, default_specs(), "binance", snapshot_every=700)
    assert reopened.engine.state_hash() == final_hash
    assert (
        reopened.engine.conditionals.record()
        == Engine.restore(reopened.engine.snapshot()).conditionals.record()
    )
    reopened.engine.check_invariants()
    reopened.close()


def test_a_market_order_type_is_what_a_fired_stop_market_places(uninterrupted: Run) -> None:
    per_command, _ = uninterrupted
    fired_ids = {
        e.placed_order_id
        for batch in per_command
        for e in batch
        if isinstance(e, ConditionalOrderTriggered) and e.placed_order_id is not None
    }
    assert fired_ids
    placed_types = {
        e.order_type
        for batch in per_command
        for e in batch
        if hasattr(e, "order_type") and getattr(e, "order_id", None) in fired_ids
    }
    assert placed_types <= {OrderType.MARKET, OrderType.LIMIT}


@pytest.mark.parametrize("seed", [7, 1_234])
def test_invariants_after_every_command_and_refusals_change_nothing(seed: int) -> None:
    """Another stream per seed, checked after every command: the invariants (trigger books,
    ladders, client ids, no stop outliving its position) hold, and a refused command leaves
    the state hash and the id counter as they were."""
    engine = Engine(default_specs())
    refusals = 0
    for cmd in conditional_stream(seed, 1_200):
        before, next_id = engine.state_hash(), engine.next_order_id
        events = engine.apply(cmd)
        engine.check_invariants()
        if events and isinstance(events[0], OrderRejected | RequestRejected):
            refusals += 1
            assert engine.state_hash() == before, cmd
            assert engine.next_order_id == next_id, cmd
    assert refusals >= 20
