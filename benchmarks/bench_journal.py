"""Journal throughput (group commit) and recovery time of the SQLite journal.

Workload: the shared seeded stream of tests/streams.py (`command_stream(SEED, n)`: makers
quoting around the mark, takers crossing it, cancels, oracle and clock ticks, deposits,
leverage and margin-mode changes), so the payloads have realistic sizes and the replay does
realistic work. The journal runs as configured for production: WAL mode, `synchronous=FULL`,
one fsync per committed batch, on the temporary directory's disk.

Rows:

- journal append, batch 256: commands/s through `JournalStore.append_batch` (encode, CRC,
  insert, commit + fsync) with 256 commands per transaction; baseline = the same with one
  command per transaction (one fsync each), so ratio = what group commit buys. Best of 3.
- journal + apply, batch 256: commands/s through `JournaledEngine.apply_batch` (journal, then
  the engine applies) on the first 100k commands; baseline = the bare engine's `apply` on the
  same commands, so ratio = the cost of durability. Best of 2.
- recovery of 1M journaled commands, full replay: seconds to open a journal of 1,000,000 rows
  with no snapshot (SQLite quick_check, then every row read, checksummed, decoded and applied,
  then the invariant check); baseline = the bare engine applying the same 1M commands in
  memory, so ratio shows how much of recovery is the engine itself. One run each.
- recovery from a snapshot: the same journal after a snapshot at 1M and 5,000 more commands
  (at most `snapshot_every` = 10,000 by default): restore and verify the snapshot, replay the
  tail. Baseline = the full replay.

The cyclic garbage collector is off while timing, as the other benchmarks do.
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from perpex.core.engine import Engine
from perpex.core.markets import MarketSpec
from perpex.core.messages import Command
from perpex.journal import JournaledEngine
from perpex.journal.store import JournalStore

SEED: Final = 42
BATCH: Final = 256
APPEND_COMMANDS: Final = 256 * 1_000  # batch-256 figure: 1,000 commits
SINGLE_COMMANDS: Final = 3_000  # batch-1 figure: 3,000 commits (fsyncs)
APPLY_COMMANDS: Final = 100_000  # journal + apply figure
RECOVERY_COMMANDS: Final = 1_000_000
TAIL_COMMANDS: Final = 5_000  # journaled after the snapshot, replayed by the second recovery
REPETITIONS: Final = 3

_streams_path = Path(__file__).resolve().parents[1] / "tests" / "streams.py"
_spec = importlib.util.spec_from_file_location("perpex_bench_streams", _streams_path)
assert _spec is not None and _spec.loader is not None
streams: Any = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(streams)


def timed(fn: Callable[[], object]) -> float:
    gc.collect()
    gc.disable()
    try:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started
    finally:
        gc.enable()


def append_rate(workdir: Path, commands: list[Command], batch: int) -> float:
    """Best commands/s of `append_batch` in batches of `batch`, each run on a fresh file."""
    best = 0.0
    for rep in range(REPETITIONS):
        path = workdir / f"append-{batch}-{rep}.db"
        store = JournalStore(path)

        def write(store: JournalStore = store) -> None:
            for i in range(0, len(commands), batch):
                store.append_batch(commands[i : i + batch])

        best = max(best, len(commands) / timed(write))
        store.close()
        path.unlink()
    return best


def journaled_rate(workdir: Path, specs: list[MarketSpec], commands: list[Command]) -> float:
    best = 0.0
    for rep in range(2):
        path = workdir / f"journaled-{rep}.db"
        journaled = JournaledEngine(path, specs, snapshot_every=10**12)

        def write(journaled: JournaledEngine = journaled) -> None:
            for i in range(0, len(commands), BATCH):
                journaled.apply_batch(commands[i : i + BATCH])

        best = max(best, len(commands) / timed(write))
        journaled.close(snapshot=False)
        path.unlink()
    return best


def engine_rate(specs: list[MarketSpec], commands: list[Command]) -> tuple[float, float]:
    """(best commands/s, best seconds) of the bare engine applying `commands` in memory."""
    best = float("inf")
    for _ in range(2):
        engine = Engine(specs)
        best = min(best, timed(lambda engine=engine: engine.apply_all(commands)))
    return len(commands) / best, best


def recovery_seconds(path: Path, specs: list[MarketSpec]) -> tuple[float, JournaledEngine]:
    holder: list[JournaledEngine] = []
    seconds = timed(lambda: holder.append(JournaledEngine(path, specs)))
    return seconds, holder[0]


def run() -> list[dict[str, object]]:
    specs = streams.default_specs()
    with tempfile.TemporaryDirectory(prefix="perpex-bench-journal-") as tmp:
        workdir = Path(tmp)
        commands: list[Command] = streams.command_stream(SEED, RECOVERY_COMMANDS + TAIL_COMMANDS)
        journal_part, tail_part = commands[:RECOVERY_COMMANDS], commands[RECOVERY_COMMANDS:]
        rate_1 = append_rate(workdir, commands[:SINGLE_COMMANDS], 1)
        rate_256 = append_rate(workdir, commands[:APPEND_COMMANDS], BATCH)
        journaled_256 = journaled_rate(workdir, specs, commands[:APPLY_COMMANDS])
        engine_head, _ = engine_rate(specs, commands[:APPLY_COMMANDS])
        bare = Engine(specs)
        engine_all_s = timed(lambda: bare.apply_all(journal_part))

        # A journal of RECOVERY_COMMANDS rows and no snapshot: created (meta) by the journaled
        # engine, the rows written by the store directly (applying them here would only
        # repeat what recovery is about to measure).
        path = workdir / "recovery.db"
        JournaledEngine(path, specs).close()
        store = JournalStore(path)
        for i in range(0, len(journal_part), BATCH):
            store.append_batch(journal_part[i : i + BATCH])
        store.close()

        full_s, opened = recovery_seconds(path, specs)
        assert opened.report.snapshot_seq is None
        assert opened.report.replayed == len(journal_part)
        assert opened.engine.state_hash() == bare.state_hash()
        # Then as production runs: a snapshot, commands after it, a restart.
        opened.snapshot()
        for i in range(0, len(tail_part), BATCH):
            opened.apply_batch(tail_part[i : i + BATCH])
        want_hash = opened.engine.state_hash()
        opened.close(snapshot=False)
        snap_s, opened = recovery_seconds(path, specs)
        assert opened.engine.state_hash() == want_hash
        assert opened.report.snapshot_seq == RECOVERY_COMMANDS
        tail = opened.report.replayed
        opened.close(snapshot=False)

    millions = f"{RECOVERY_COMMANDS / 1e6:g}M"
    return [
        {
            "benchmark": f"journal append, group commit {BATCH} (fsync per batch)",
            "metric": "commands/s",
            "value": rate_256,
            "baseline": rate_1,
            "ratio": rate_256 / rate_1,
            "goal": f">= 100k commands/s at batch {BATCH} (baseline: batch 1)",
        },
        {
            "benchmark": f"journal + apply, batch {BATCH} (JournaledEngine)",
            "metric": "commands/s",
            "value": journaled_256,
            "baseline": engine_head,
            "ratio": journaled_256 / engine_head,
            "goal": "informational (baseline: bare Engine.apply)",
        },
        {
            "benchmark": f"recovery of {millions} journaled commands, full replay (no snapshot)",
            "metric": "s",
            "value": full_s,
            "baseline": engine_all_s,
            "ratio": full_s / engine_all_s,
            "goal": f"<= 30 s for 1M (baseline: bare engine applying the {millions})",
        },
        {
            "benchmark": (
                f"recovery of {millions} + {tail:,} journaled commands, from the snapshot at "
                f"{millions} (replays {tail:,})"
            ),
            "metric": "s",
            "value": snap_s,
            "baseline": full_s,
            "ratio": snap_s / full_s,
            "goal": "informational (baseline: full replay)",
        },
    ]


if __name__ == "__main__":
    for row in run():
        print(
            f"{row['benchmark']}: {row['value']:,.3f} {row['metric']} "
            f"(baseline {row['baseline']:,.3f}, ratio {row['ratio']:.3f}; goal {row['goal']})"
        )
