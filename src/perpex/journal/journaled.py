"""The journaled engine: every command is durable before it is applied, and opening recovers.

`JournaledEngine(path, markets)` is the single writer of one journal file. `submit(command)`
journals one command (a transaction of its own: one fsync), applies it and returns its
`Outcome`. Group commit has two forms: `apply_batch(commands)` journals a list in one
transaction and then applies it; `with journaled.batch():` opens one transaction, journals
each submitted command into it before applying it, and commits at the end of the block — the
commands' answers are available at once, but they are durable (acknowledged) only when the
block exits. Should that commit fail, the in-memory state is ahead of the file: the instance
refuses further commands and must be reopened (which recovers the durable state).

Snapshots are taken every `snapshot_every` commands and on demand; the newest
`keep_snapshots` are kept. Journal rows are pruned only on demand (`prune()`) or with
`auto_prune=True`, so by default the journal stays replayable from seq 1.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Final

from perpex.core.engine import Engine, EngineError
from perpex.core.markets import MarketSpec
from perpex.core.messages import Command, Event
from perpex.journal.idempotency import IDEMPOTENCY_WINDOW, key_of
from perpex.journal.recovery import Outcome, RecoveryReport, encode_state, open_journal, step
from perpex.journal.store import MAX_BATCH_COMMANDS, JournalError

if TYPE_CHECKING:
    from perpex.core.funding import FundingConfig
    from perpex.core.liquidation import LiquidationConfig
    from perpex.core.oracle import IndexConfig
    from perpex.core.tokens import TokenSpec

DEFAULT_SNAPSHOT_EVERY: Final = 10_000
DEFAULT_KEEP_SNAPSHOTS: Final = 3


class JournaledEngine:
    """An `Engine` behind a SQLite journal, with an idempotency window. Single writer."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        markets: Sequence[MarketSpec],
        mark_mode: str = "binance",
        *,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        keep_snapshots: int = DEFAULT_KEEP_SNAPSHOTS,
        auto_prune: bool = False,
        window_capacity: int = IDEMPOTENCY_WINDOW,
        liquidation: LiquidationConfig | None = None,
        index: IndexConfig | None = None,
        funding: Mapping[str, FundingConfig] | None = None,
        tokens: Sequence[TokenSpec] = (),
        migrate: bool = False,
        verify: bool = True,
        on_events: Callable[[list[Event]], object] | None = None,
    ) -> None:
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every={snapshot_every}: must be >= 1")
        if keep_snapshots < 1:
            raise ValueError(f"keep_snapshots={keep_snapshots}: must be >= 1")
        if window_capacity < MAX_BATCH_COMMANDS:
            # A batch's in-batch duplicates are resolved against the window: it must hold them.
            raise ValueError(f"window_capacity={window_capacity} < {MAX_BATCH_COMMANDS}")
        recovered = open_journal(
            os.fspath(path),
            markets,
            mark_mode,
            window_capacity=window_capacity,
            liquidation=liquidation,
            index=index,
            funding=funding,
            tokens=tokens,
            migrate=migrate,
            verify=verify,
            on_events=on_events,
        )
        self.store = recovered.store
        self.engine: Engine = recovered.engine
        self.window = recovered.window
        self.report: RecoveryReport = recovered.report
        self.snapshot_every = snapshot_every
        self.keep_snapshots = keep_snapshots
        self.auto_prune = auto_prune
        self.snapshot_errors: list[str] = []  # automatic snapshots that failed (data is safe)
        self._failed: str | None = None
        self._batch_rows = 0
        self._closed = False
        snapshots = self.store.snapshots()
        self.last_snapshot_seq = snapshots[0].seq if snapshots else 0
        if recovered.report.migrated:
            self.snapshot()  # the old snapshots were dropped; start the new config with one

    # -- reads ----------------------------------------------------------------------------
    @property
    def last_seq(self) -> int:
        """The seq of the last journaled command (0 for an empty journal)."""
        return self.store.last_seq

    @property
    def path(self) -> str:
        return str(self.store.path)

    # -- writes ---------------------------------------------------------------------------
    def submit(
        self, command: Command, key: str | None = None, *, ts_ns: int | None = None
    ) -> Outcome:
        """Journal one command, then apply it. A duplicate key returns the first answer.

        Outside `batch()` the command is durable when this returns; inside, at the block's end.
        Raises `EngineError` for a command the engine cannot represent (it stays journaled and
        replay skips it the same way).
        """
        self._check_usable()
        ikey = key_of(command, key)
        if ikey is not None:
            first = self.window.get(ikey)
            if first is not None:
                return Outcome(first.seq, list(first.events), duplicate=True)
        stamp = self.engine.clock_ns if ts_ns is None else ts_ns
        if self.store.in_transaction:
            if self._batch_rows >= MAX_BATCH_COMMANDS:  # bounded transactions: commit early
                self._commit_batch()
                self.store.begin()
            (seq,) = self.store.append_in_transaction([command], [key], stamp)
            self._batch_rows += 1
            outcome = self._step(seq, command, key)
        else:
            (seq,) = self.store.append_batch([command], [key], stamp)
            outcome = self._step(seq, command, key)
            self._after_commit()
        if outcome.error is not None:
            raise outcome.error
        return outcome

    def apply_batch(
        self,
        commands: Sequence[Command],
        keys: Sequence[str | None] | None = None,
        *,
        ts_ns: int | None = None,
    ) -> list[Outcome]:
        """Journal a batch in one transaction (one fsync), then apply it in order.

        Duplicates (of the window or of an earlier command in the same batch) are not
        journaled; they get the first copy's answer. Engine errors come back in
        `Outcome.error` rather than raised, one per command.
        """
        self._check_usable()
        if self.store.in_transaction:
            raise JournalError("apply_batch inside batch(): submit() the commands instead")
        if keys is not None and len(keys) != len(commands):
            raise ValueError("keys and commands differ in length")
        fresh: list[int] = []
        ikeys: list[str | None] = []
        seen: set[str] = set()
        for i, command in enumerate(commands):
            ikey = key_of(command, None if keys is None else keys[i])
            ikeys.append(ikey)
            if ikey is not None:
                if ikey in seen or ikey in self.window:
                    continue
                seen.add(ikey)
            fresh.append(i)
        stamp = self.engine.clock_ns if ts_ns is None else ts_ns
        seqs = self.store.append_batch(
            [commands[i] for i in fresh],
            None if keys is None else [keys[i] for i in fresh],
            stamp,
        )
        seq_of = dict(zip(fresh, seqs, strict=True))
        outcomes: list[Outcome] = []
        for i, command in enumerate(commands):
            seq = seq_of.get(i)
            if seq is not None:
                outcomes.append(self._step(seq, command, None if keys is None else keys[i]))
                continue
            ikey = ikeys[i]
            assert ikey is not None
            first = self.window.get(ikey)
            if first is not None:
                outcomes.append(Outcome(first.seq, list(first.events), duplicate=True))
            else:  # its first copy in this batch hit an engine error, so was not remembered
                earlier = next(o for j, o in enumerate(outcomes) if ikeys[j] == ikey)
                outcomes.append(Outcome(earlier.seq, [], duplicate=True, error=earlier.error))
        self._after_commit()
        return outcomes

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Group commit for `submit()`: one transaction (and fsync) for the whole block.

        Commands applied inside the block stay applied even if the block raises (an
        `ExchangeError` for a rejected order is ordinary), so the block always commits.
        """
        self._check_usable()
        if self.store.in_transaction:  # nested: join the outer block
            yield
            return
        self.store.begin()
        self._batch_rows = 0
        try:
            yield
        finally:
            self._commit_batch()
        self._after_commit()

    def _commit_batch(self) -> None:
        try:
            self.store.commit()
        except JournalError as exc:
            if self._batch_rows:
                self._failed = (
                    f"the commit of a batch failed after its commands were applied ({exc}); "
                    "the in-memory state is ahead of the journal. Reopen the journal to recover."
                )
            raise
        finally:
            self._batch_rows = 0

    def _step(self, seq: int, command: Command, key: str | None) -> Outcome:
        try:
            return step(self.engine, self.window, seq, command, key)
        except BaseException as exc:
            # An assertion inside the engine is a bug: the state cannot be trusted any more.
            self._failed = f"applying seq {seq} raised {exc!r}; reopen the journal to recover"
            raise

    def _after_commit(self) -> None:
        if self.last_seq - self.last_snapshot_seq >= self.snapshot_every:
            try:
                self.snapshot()
            except JournalError as exc:  # the commands are durable; the next one retries
                self.snapshot_errors.append(str(exc))

    # -- snapshots and pruning ------------------------------------------------------------
    def snapshot(self) -> int:
        """Store the state at the current seq (with its state hash); returns that seq."""
        self._check_usable()
        if self.store.in_transaction:
            raise JournalError("snapshot inside batch(): take it after the block")
        seq = self.last_seq
        self.store.write_snapshot(
            seq, self.engine.state_hash(), encode_state(self.engine, self.window, seq)
        )
        self.last_snapshot_seq = seq
        old = [s.seq for s in self.store.snapshots()[self.keep_snapshots :]]
        self.store.delete_snapshots(old)
        if self.auto_prune:
            self.prune()
        return seq

    def prune(self) -> int:
        """Drop journal rows inside the oldest kept snapshot; returns how many were dropped."""
        snapshots = self.store.snapshots()
        if not snapshots:
            return 0
        return self.store.delete_commands_through(snapshots[-1].seq)

    # -- lifecycle ------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self._closed:
            raise JournalError(f"{self.path}: the journal is closed")
        if self._failed is not None:
            raise JournalError(f"{self.path}: {self._failed}")

    def close(self, *, snapshot: bool = True) -> None:
        """Snapshot (so the next start replays little) and close. Safe to call twice."""
        if self._closed:
            return
        try:
            if (
                snapshot
                and self._failed is None
                and not self.store.in_transaction
                and self.last_seq > self.last_snapshot_seq
            ):
                self.snapshot()
        finally:
            self._closed = True
            self.store.close()

    def __enter__(self) -> JournaledEngine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["EngineError", "JournaledEngine", "Outcome"]
