"""The durable journal (DESIGN.md §1, §6; issue 5): SQLite journal, snapshots, recovery,
replay, idempotency, corruption handling and the journaled `Exchange`.

Inputs are the shared stream of tests/streams.py; every expected state comes from an
uninterrupted in-memory run of the same commands (`Engine.apply_all`). The kill -9 tests live
in tests/test_kill9.py.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec
import pytest

from perpex import Exchange, ExchangeError, Market
from perpex.core.engine import Engine, EngineError
from perpex.core.liquidation import LiquidationConfig
from perpex.core.messages import (
    Command,
    Deposit,
    Event,
    OrderType,
    PlaceOrder,
    TimeInForce,
    UpdateIndex,
)
from perpex.defaults import default_brackets, default_markets
from perpex.journal import (
    MAX_BATCH_COMMANDS,
    ConfigMismatch,
    CorruptJournal,
    JournaledEngine,
    JournalError,
    event_digest,
    inspect,
    replay,
)
from perpex.journal.store import JournalStore, encode_command
from streams import command_stream, default_specs

TESTS_DIR: Final = Path(__file__).resolve().parent
SEED: Final = 7
N_COMMANDS: Final = 2_000
NEVER: Final = 10**12  # snapshot_every that never triggers
HASH_SEEDS: Final = ("0", "4242")


@pytest.fixture(scope="module")
def commands() -> list[Command]:
    return command_stream(SEED, N_COMMANDS)


@pytest.fixture(scope="module")
def reference(commands: list[Command]) -> tuple[list[list[Event]], str]:
    """Events per command and the final state hash of one uninterrupted in-memory run."""
    engine = Engine(default_specs())
    per_command = [engine.apply(c) for c in commands]
    return per_command, engine.state_hash()


def hash_after(commands: list[Command], n: int) -> str:
    engine = Engine(default_specs())
    engine.apply_all(commands[:n])
    return engine.state_hash()


def journal_batches(
    path: Path, commands: list[Command], batch: int = 100, **kwargs: object
) -> JournaledEngine:
    journaled = JournaledEngine(path, default_specs(), **kwargs)  # type: ignore[arg-type]
    for i in range(0, len(commands), batch):
        journaled.apply_batch(commands[i : i + batch])
    return journaled


def flip_bit_in_file(path: Path, needle: bytes, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "needle must occur exactly once"
    data[at + len(needle) // 2] ^= 1 << bit
    path.write_bytes(bytes(data))


# -- the journal round-trips -------------------------------------------------------------------
def test_journal_then_recover_gives_the_uninterrupted_state(
    tmp_path: Path, commands: list[Command], reference: tuple[list[list[Event]], str]
) -> None:
    db = tmp_path / "j.db"
    journaled = journal_batches(db, commands, snapshot_every=NEVER)
    assert journaled.report.created and journaled.last_seq == N_COMMANDS
    assert journaled.engine.state_hash() == reference[1]
    journaled.close(snapshot=False)

    replayed_events: list[Event] = []
    again = JournaledEngine(db, default_specs(), on_events=replayed_events.extend)
    assert not again.report.created
    assert again.report.snapshot_seq is None and again.report.replayed == N_COMMANDS
    assert again.engine.state_hash() == reference[1]
    assert replayed_events == [e for events in reference[0] for e in events]
    again.close()


def test_group_commit_assigns_dense_seqs_and_skips_in_batch_duplicates(tmp_path: Path) -> None:
    order = PlaceOrder(
        "alice", "BTCUSDT", 1, OrderType.LIMIT, TimeInForce.GTC, 1, 590_000, client_order_id="a1"
    )
    with JournaledEngine(tmp_path / "j.db", default_specs()) as journaled:
        outcomes = journaled.apply_batch(
            [Deposit("alice", 10**12), order, order, Deposit("bob", 10**12)]
        )
        assert [o.seq for o in outcomes] == [1, 2, 2, 3]
        assert [o.duplicate for o in outcomes] == [False, False, True, False]
        assert outcomes[2].events == outcomes[1].events
        assert journaled.last_seq == 3


def test_batch_block_is_one_transaction_durable_at_exit(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Exchange(journal=db) as ex:
        with ex.batch():
            ex.deposit("alice", "1000")
            ex.deposit("bob", "2000")
            # Inside the block the answers are there but nothing is committed yet.
            assert ex.account("bob").wallet_balance == Decimal("2000")
            with sqlite3.connect(db) as reader:
                assert reader.execute("SELECT count(*) FROM commands").fetchone() == (0,)
        with sqlite3.connect(db) as reader:
            assert reader.execute("SELECT count(*) FROM commands").fetchone() == (2,)
        # A rejection inside the block is ordinary: the block still commits what it applied.
        with pytest.raises(ExchangeError), ex.batch():
            ex.deposit("carol", "5")
            ex.withdraw("carol", "6")
        assert ex.journal is not None and ex.journal.last_seq == 4
    with Exchange(journal=db) as again:
        assert again.account("carol").wallet_balance == Decimal("5")


# -- replay equals live ------------------------------------------------------------------------
LIVE_SCRIPT: Final = """
import sys
sys.path.insert(0, sys.argv[1])
from perpex import Exchange
from perpex.journal import event_digest
from streams import command_stream

commands = command_stream(int(sys.argv[3]), int(sys.argv[4]))
with Exchange(journal=sys.argv[2], snapshot_every=500) as ex:
    for i in range(0, len(commands), 64):
        with ex.batch():
            for command in commands[i : i + 64]:
                ex._apply(command)
    ex.check_invariants()
    print(ex.state_hash(), event_digest(ex.events()), len(commands))
"""

REPLAY_SCRIPT: Final = """
import sys
from perpex.journal import replay
print(*replay(sys.argv[1]))
"""


def python(script: str, hash_seed: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_replay_equals_live_under_two_hash_seeds(
    tmp_path: Path, reference: tuple[list[list[Event]], str]
) -> None:
    want = [reference[1], event_digest(e for es in reference[0] for e in es), str(N_COMMANDS)]
    dbs = {seed: tmp_path / f"live-{seed}.db" for seed in HASH_SEEDS}
    for seed, db in dbs.items():
        live = python(LIVE_SCRIPT, seed, str(TESTS_DIR), str(db), str(SEED), str(N_COMMANDS))
        assert live == want, f"live run under PYTHONHASHSEED={seed}"
    for live_seed, replay_seed in zip(HASH_SEEDS, reversed(HASH_SEEDS), strict=True):
        replayed = python(REPLAY_SCRIPT, replay_seed, str(dbs[live_seed]))
        assert replayed == want, f"live {live_seed}, replay {replay_seed}"
    assert replay(dbs[HASH_SEEDS[0]]) == (want[0], want[1], N_COMMANDS)


# -- snapshots ---------------------------------------------------------------------------------
CUTS: Final = sorted({0, 1, N_COMMANDS, *random.Random(SEED).sample(range(2, N_COMMANDS), 6)})


@pytest.mark.parametrize("cut", CUTS)
def test_snapshot_anywhere_then_restore_and_continue(
    tmp_path: Path,
    commands: list[Command],
    reference: tuple[list[list[Event]], str],
    cut: int,
) -> None:
    db = tmp_path / "j.db"
    journaled = journal_batches(db, commands[:cut], batch=37, snapshot_every=NEVER)
    assert journaled.snapshot() == cut
    journaled.close(snapshot=False)

    resumed = JournaledEngine(db, default_specs(), snapshot_every=NEVER)
    assert resumed.report.snapshot_seq == cut and resumed.report.replayed == 0
    continued = [resumed.submit(c).events for c in commands[cut:]]
    assert continued == reference[0][cut:]
    assert resumed.engine.state_hash() == reference[1]
    resumed.close(snapshot=False)

    # And once more from the file: the snapshot at `cut` plus a replay of the rest.
    final = JournaledEngine(db, default_specs())
    assert final.report.snapshot_seq == cut
    assert final.report.replayed == N_COMMANDS - cut
    assert final.engine.state_hash() == reference[1]
    final.close()


def test_snapshots_every_n_keeps_the_newest_and_prunes_on_demand(
    tmp_path: Path, commands: list[Command], reference: tuple[list[list[Event]], str]
) -> None:
    db = tmp_path / "j.db"
    journaled = journal_batches(db, commands, batch=50, snapshot_every=300, keep_snapshots=2)
    seqs = [s["seq"] for s in inspect(db)["snapshots"]]
    assert seqs == [1800, 1500]  # every 300 commands; the two newest kept
    assert journaled.prune() == 1500
    journaled.close(snapshot=False)
    info = inspect(db, by_type=True)
    assert (info["commands"], info["first_seq"], info["last_seq"]) == (500, 1501, 2000)
    assert sum(info["commands_by_type"].values()) == 500
    again = JournaledEngine(db, default_specs())
    assert again.report.snapshot_seq == 1800
    assert again.engine.state_hash() == reference[1]
    again.close(snapshot=False)
    with pytest.raises(JournalError, match="pruned"):
        replay(db)


# -- corruption --------------------------------------------------------------------------------
def test_torn_wal_tail_drops_exactly_the_torn_batches(
    tmp_path: Path, commands: list[Command]
) -> None:
    """A crash image (db + WAL copied while the writer is idle) whose WAL is cut short."""
    db = tmp_path / "live.db"
    wal = Path(f"{db}-wal")
    journaled = JournaledEngine(db, default_specs(), snapshot_every=NEVER)
    ends: list[tuple[int, int]] = []  # (WAL size after the batch's commit, last seq)
    for i in range(0, 600, 20):
        journaled.apply_batch(commands[i : i + 20])
        ends.append((wal.stat().st_size, journaled.last_seq))
    crash = tmp_path / "crash"
    crash.mkdir()
    shutil.copy(db, crash / "j.db")
    shutil.copy(wal, crash / "j.db-wal")  # no -shm: SQLite rebuilds the index from the WAL
    journaled.close(snapshot=False)
    image = (crash / "j.db").read_bytes(), (crash / "j.db-wal").read_bytes()
    # The premise: no checkpoint reset the WAL, so each commit only appended to it.
    assert all(a[0] < b[0] for a, b in itertools.pairwise(ends))

    rng = random.Random(SEED)
    cuts = [
        ends[-1][0] - 1,
        ends[-2][0] + 1,
        ends[-2][0],
        *rng.sample(range(ends[0][0], ends[-1][0]), 5),
    ]
    target = tmp_path / "t.db"
    for cut in cuts:
        Path(f"{target}-shm").unlink(missing_ok=True)
        target.write_bytes(image[0])
        Path(f"{target}-wal").write_bytes(image[1][:cut])
        survivors = [seq for size, seq in ends if size <= cut]
        recovered = JournaledEngine(target, default_specs())
        assert recovered.last_seq == survivors[-1], f"WAL cut at byte {cut}"
        assert recovered.engine.state_hash() == hash_after(commands, survivors[-1])
        recovered.close(snapshot=False)
        Path(f"{target}-wal").unlink(missing_ok=True)


@pytest.mark.parametrize("pages", [1, 3])
def test_truncated_database_file_is_reported_not_guessed(
    tmp_path: Path, commands: list[Command], pages: int
) -> None:
    db = tmp_path / "j.db"
    journal_batches(db, commands, snapshot_every=NEVER).close(snapshot=False)
    size = db.stat().st_size
    os.truncate(db, size - pages * 4096)
    with pytest.raises(CorruptJournal, match=r"damaged.*Restore it"):
        JournaledEngine(db, default_specs())


def test_bit_flip_in_a_row_is_refused_naming_its_seq(
    tmp_path: Path, commands: list[Command]
) -> None:
    db = tmp_path / "j.db"
    journal_batches(db, commands, snapshot_every=NEVER).close(snapshot=False)
    seq = 1_234
    flip_bit_in_file(db, encode_command(commands[seq - 1]) + b"")
    with pytest.raises(CorruptJournal, match=f"seq {seq} is damaged") as info:
        JournaledEngine(db, default_specs())
    assert info.value.seq == seq
    with pytest.raises(CorruptJournal, match=f"seq {seq}"):
        replay(db)


def test_bit_flip_in_a_row_inside_a_snapshot_is_not_needed(
    tmp_path: Path, commands: list[Command], reference: tuple[list[list[Event]], str]
) -> None:
    db = tmp_path / "j.db"
    journaled = journal_batches(db, commands[:1_500], snapshot_every=NEVER)
    journaled.snapshot()
    for i in range(1_500, N_COMMANDS, 100):
        journaled.apply_batch(commands[i : i + 100])
    journaled.close(snapshot=False)
    flip_bit_in_file(db, encode_command(commands[99]))  # seq 100, inside the snapshot
    recovered = JournaledEngine(db, default_specs())
    assert recovered.report.snapshot_seq == 1_500
    assert recovered.engine.state_hash() == reference[1]
    recovered.close(snapshot=False)
    with pytest.raises(CorruptJournal, match="seq 100 is damaged"):
        replay(db)  # a replay from the start does need it, and says so


def test_missing_row_is_refused_naming_its_seq(tmp_path: Path, commands: list[Command]) -> None:
    db = tmp_path / "j.db"
    journal_batches(db, commands, snapshot_every=NEVER).close(snapshot=False)
    with sqlite3.connect(db) as writer:
        writer.execute("DELETE FROM commands WHERE seq = 777")
    with pytest.raises(CorruptJournal, match="seq 777 is missing") as info:
        JournaledEngine(db, default_specs())
    assert info.value.seq == 777


def test_damaged_newest_snapshot_falls_back_to_an_older_one(
    tmp_path: Path, commands: list[Command], reference: tuple[list[list[Event]], str]
) -> None:
    db = tmp_path / "j.db"
    journaled = journal_batches(db, commands, batch=100, snapshot_every=500)
    snapshots = [s["seq"] for s in inspect(db)["snapshots"]]
    assert snapshots == [2000, 1500, 1000]
    journaled.close(snapshot=False)
    with sqlite3.connect(db) as writer:
        # A flipped byte in the newest blob (checksum no longer matches) ...
        blob = bytearray(writer.execute("SELECT blob FROM snapshots WHERE seq=2000").fetchone()[0])
        blob[len(blob) // 2] ^= 0x10
        writer.execute("UPDATE snapshots SET blob=? WHERE seq=2000", (bytes(blob),))
        # ... and one whose checksum is right but whose state is not what its hash says.
        wrong = writer.execute("SELECT blob, checksum FROM snapshots WHERE seq=1000").fetchone()
        writer.execute(
            "UPDATE snapshots SET blob=?, checksum=? WHERE seq=1500", (wrong[0], wrong[1])
        )
    recovered = JournaledEngine(db, default_specs())
    report = recovered.report
    assert report.snapshot_seq == 1000 and report.replayed == 1000
    assert len(report.warnings) == 2
    assert "seq 2000" in report.warnings[0] and "checksum" in report.warnings[0]
    assert "seq 1500" in report.warnings[1]
    assert recovered.engine.state_hash() == reference[1]
    recovered.close(snapshot=False)


def test_no_usable_snapshot_after_pruning_is_refused(
    tmp_path: Path, commands: list[Command]
) -> None:
    db = tmp_path / "j.db"
    journaled = journal_batches(db, commands, snapshot_every=NEVER, keep_snapshots=1)
    journaled.snapshot()
    journaled.prune()
    journaled.close(snapshot=False)
    with sqlite3.connect(db) as writer:
        writer.execute("UPDATE snapshots SET checksum='0'")
    with pytest.raises(CorruptJournal, match="no usable snapshot"):
        JournaledEngine(db, default_specs())


# -- config and version ------------------------------------------------------------------------
def cheaper_btc() -> list[Market]:
    markets = default_markets()
    btc = markets[0]
    assert btc.symbol == "BTCUSDT"
    return [
        Market(
            symbol="BTCUSDT",
            tick_size=btc.tick_size,
            step_size=btc.step_size,
            brackets=default_brackets()["BTCUSDT"],
            taker_fee="0.0004",
        ),
        *markets[1:],
    ]


def test_another_config_refuses_with_a_clear_message(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Exchange(journal=db) as ex:
        ex.deposit("alice", "100")
    with pytest.raises(ConfigMismatch, match=r"market configuration.*migrate=True"):
        Exchange(journal=db, markets=cheaper_btc())
    with pytest.raises(ConfigMismatch, match="BTCUSDT, ETHUSDT"):
        Exchange(journal=db, markets=cheaper_btc()[:1])
    # The refusal changed nothing: the right config still opens it.
    with Exchange(journal=db) as ex:
        assert ex.account("alice").wallet_balance == Decimal("100")


def test_another_engine_version_refuses_unless_migrated(
    tmp_path: Path, commands: list[Command], reference: tuple[list[list[Event]], str]
) -> None:
    db = tmp_path / "j.db"
    journal_batches(db, commands, snapshot_every=500).close()
    with sqlite3.connect(db) as writer:
        writer.execute("UPDATE meta SET value='perpex 0.0.1' WHERE key='engine_version'")
    with pytest.raises(ConfigMismatch, match=r"engine 'perpex 0\.0\.1'"):
        JournaledEngine(db, default_specs())
    migrated = JournaledEngine(db, default_specs(), migrate=True)
    assert migrated.report.migrated and migrated.report.snapshot_seq is None
    assert migrated.report.replayed == N_COMMANDS
    assert migrated.engine.state_hash() == reference[1]
    migrated.close()
    assert [s["seq"] for s in inspect(db)["snapshots"]] == [N_COMMANDS]
    assert JournaledEngine(db, default_specs()).report.snapshot_seq == N_COMMANDS


def test_migrating_to_another_config_replays_the_journal_under_it(
    tmp_path: Path, commands: list[Command]
) -> None:
    db = tmp_path / "j.db"
    journal_batches(db, commands, snapshot_every=500).close()
    specs = [m for m in default_specs() if m.symbol == "BTCUSDT"]
    migrated = JournaledEngine(db, specs, migrate=True)
    fresh = Engine(specs)
    fresh.apply_all(commands)
    assert migrated.engine.state_hash() == fresh.state_hash()
    migrated.close()


def test_a_file_that_is_not_a_journal_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(JournalError, match="not a perpex journal"):
        JournaledEngine(other, default_specs())
    with pytest.raises(JournalError, match="no such journal"):
        inspect(tmp_path / "missing.db")


# -- idempotency -------------------------------------------------------------------------------
def funded_exchange(db: Path) -> Exchange:
    ex = Exchange(journal=db)
    ex.set_index_price("BTCUSDT", "60000")
    ex.deposit("alice", "100000")
    ex.deposit("bob", "100000")
    return ex


def test_resent_client_order_id_returns_the_first_answer(tmp_path: Path) -> None:
    ex = funded_exchange(tmp_path / "j.db")
    first = ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", "0.5", "59000", client_order_id="a")
    events, seq = len(ex.events()), ex.journal.last_seq if ex.journal else 0
    again = ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", "0.5", "59000", client_order_id="a")
    assert again == first
    assert len(ex.open_orders("alice")) == 1
    assert len(ex.events()) == events and ex.journal is not None and ex.journal.last_seq == seq
    # Still the first answer after the order has filled (no second order, no second fill).
    ex.place_order("bob", "BTCUSDT", "SELL", "LIMIT", "0.5", "59000")
    assert ex.position("alice", "BTCUSDT").size == Decimal("0.5")
    assert (
        ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", "0.5", "59000", client_order_id="a")
        == first
    )
    assert ex.position("alice", "BTCUSDT").size == Decimal("0.5")
    # The same id from another account is another order.
    other = ex.place_order("bob", "BTCUSDT", "BUY", "LIMIT", "0.1", "59000", client_order_id="a")
    assert other.order_id != first.order_id
    ex.close()


def test_resent_rejected_order_gets_the_same_rejection(tmp_path: Path) -> None:
    ex = funded_exchange(tmp_path / "j.db")
    with pytest.raises(ExchangeError) as first:
        ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", "100", "59000", client_order_id="big")
    ex.deposit("alice", "10000000")  # now it would fit, but the answer was given
    with pytest.raises(ExchangeError) as again:
        ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", "100", "59000", client_order_id="big")
    assert (again.value.code, again.value.msg) == (first.value.code, first.value.msg)
    assert ex.open_orders("alice") == []
    ex.close()


@pytest.mark.parametrize("snapshot_on_close", [True, False], ids=["from snapshot", "replayed"])
def test_idempotency_window_survives_a_restart(tmp_path: Path, snapshot_on_close: bool) -> None:
    db = tmp_path / "j.db"
    ex = funded_exchange(db)
    first = ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", "0.5", "59000", client_order_id="x")
    assert ex.journal is not None
    ex.journal.close(snapshot=snapshot_on_close)
    with Exchange(journal=db) as again:
        assert again.journal is not None
        assert (again.journal.report.snapshot_seq is not None) == snapshot_on_close
        resent = again.place_order(
            "alice", "BTCUSDT", "BUY", "LIMIT", "0.5", "59000", client_order_id="x"
        )
        assert resent == first
        assert len(again.open_orders("alice")) == 1


def test_window_is_bounded_and_the_oldest_key_acts_again(tmp_path: Path) -> None:
    capacity = MAX_BATCH_COMMANDS
    with JournaledEngine(tmp_path / "j.db", default_specs(), window_capacity=capacity) as j:
        deposits = [Deposit(f"a{i % 50}", 1) for i in range(capacity + 1)]
        keys = [f"dep-{i}" for i in range(capacity + 1)]
        j.apply_batch(deposits[:capacity], keys[:capacity])
        assert j.submit(deposits[0], keys[0]).duplicate  # remembered
        j.submit(deposits[capacity], keys[capacity])  # pushes dep-0 out
        assert len(j.window) == capacity
        assert not j.submit(deposits[0], keys[0]).duplicate


# -- the journaled facade ----------------------------------------------------------------------
def test_exchange_reopens_where_it_stopped(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with Exchange(journal=db, start_time="2024-01-01T00:00:00Z") as ex:
        start_ns = ex.time_ns
        ex.set_index_price("BTCUSDT", "60000")
        ex.deposit("alice", "10000")
        ex.deposit("bob", "10000")
        ex.place_order("alice", "BTCUSDT", "BUY", "LIMIT", "0.1", "60000")
        ex.place_order("bob", "BTCUSDT", "SELL", "MARKET", "0.1")
        ex.advance_time(seconds=60)
        want_hash, want_events = ex.state_hash(), ex.events()
        assert ex.journal is not None
        ex.journal.close(snapshot=False)
    with Exchange(journal=db, start_time="2030-01-01T00:00:00Z") as again:
        assert again.state_hash() == want_hash
        assert again.events() == want_events  # replayed from genesis
        assert again.time_ns == start_ns + 60 * 10**9  # start_time is not applied twice
        assert again.position("alice", "BTCUSDT").size == Decimal("0.1")


def test_engine_error_is_journaled_and_skipped_alike_on_replay(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    bad = PlaceOrder("alice", "BTCUSDT", 0, OrderType.LIMIT, TimeInForce.GTC, 1, 590_000)
    with JournaledEngine(db, default_specs()) as journaled:
        journaled.submit(Deposit("alice", 10**9))
        journaled.submit(UpdateIndex("BTCUSDT", 600_000))
        with pytest.raises(EngineError):
            journaled.submit(bad)
        journaled.submit(Deposit("alice", 10**9))
        want = journaled.engine.state_hash()
    again = JournaledEngine(db, default_specs())
    assert again.engine.state_hash() == want
    again.close()
    assert replay(db).state_hash == want


def test_one_writer_per_journal(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    first = JournaledEngine(db, default_specs())
    second = JournaledEngine(db, default_specs())
    first.submit(Deposit("alice", 1))
    with pytest.raises(JournalError, match="another process is writing"):
        second.submit(Deposit("bob", 1))
    second.close(snapshot=False)
    first.close()


def test_closed_journal_refuses_commands(tmp_path: Path) -> None:
    ex = Exchange(journal=tmp_path / "j.db")
    ex.close()
    ex.close()
    with pytest.raises(JournalError, match="closed"):
        ex.deposit("alice", "1")


def test_inspect_describes_the_file(tmp_path: Path, commands: list[Command]) -> None:
    db = tmp_path / "j.db"
    journal_batches(db, commands[:500], snapshot_every=200).close(snapshot=False)
    info = inspect(db)
    assert (info["commands"], info["first_seq"], info["last_seq"]) == (500, 1, 500)
    assert [s["seq"] for s in info["snapshots"]] == [400, 200]
    assert info["config"] == "BTCUSDT, ETHUSDT; mark binance"
    assert info["file_bytes"] > 0 and info["format_version"] == 1
    msgspec.json.encode(info)  # plain data, printable by the CLI


def test_core_never_imports_the_journal() -> None:
    core = Path(__file__).resolve().parents[1] / "src" / "perpex" / "core"
    offenders = [p.name for p in core.glob("*.py") if "perpex.journal" in p.read_text()]
    assert offenders == []


def test_store_rows_carry_checksums(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    with JournaledEngine(db, default_specs()) as journaled:
        journaled.submit(Deposit("alice", 5), "req-1")
    store = JournalStore(db, create=False)
    try:
        assert [(s, k, c) for s, _ts, k, c in store.iter_commands()] == [
            (1, "req-1", Deposit("alice", 5))
        ]
    finally:
        store.close()


def test_liquidation_config_is_part_of_the_journal_config(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    gentle = LiquidationConfig(max_liquidations_per_tick=7, clearance_fee_ppm=1_000)
    with Exchange(journal=db, liquidation=gentle) as ex:
        ex.deposit("alice", "100")
    with Exchange(journal=db, liquidation=gentle) as again:
        assert again.engine.liquidator.config == gentle
        assert again.account("alice").wallet_balance == Decimal("100")
    with pytest.raises(ConfigMismatch, match="migrate=True"):
        Exchange(journal=db)  # the default liquidation config is another config
