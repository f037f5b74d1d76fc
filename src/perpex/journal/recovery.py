"""Startup is recovery: open or create the journal, load a verified snapshot, replay the rest.

There is one path whether the last stop was clean or a crash (DESIGN.md §6.5):

1. open or create the file and check its meta (format version, engine version, config
   fingerprint); a journal of another config refuses to load unless `migrate=True`, which
   drops its snapshots and replays the whole journal under the new config;
2. take the newest snapshot whose checksum verifies and whose restored state gives the stored
   `state_hash()`; a damaged one is reported and the next older one tried (sound, because
   journal rows are only pruned up to the oldest kept snapshot); none at all means the genesis
   state at seq 0, which needs the journal from seq 1;
3. replay every row after it in seq order, each row's checksum verified: a damaged or missing
   row raises `CorruptJournal` naming its seq (a torn last batch is simply absent: SQLite
   commits are atomic, and a batch is acknowledged only after its commit);
4. check the engine's invariants; only then are commands accepted.

`step()` is the one function that applies a journaled command, live and on replay alike, so
the idempotency window and the events are the same in both.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import msgspec

from perpex.core.engine import SNAPSHOT_VERSION, Engine, EngineError
from perpex.core.markets import MarketSpec
from perpex.core.messages import Command, Event
from perpex.journal.idempotency import (
    IdempotencyWindow,
    Remembered,
    key_of,
    response_events,
)
from perpex.journal.store import (
    FORMAT_VERSION,
    ConfigMismatch,
    CorruptJournal,
    JournalError,
    JournalStore,
    Meta,
)
from perpex.version import __version__

if TYPE_CHECKING:
    from perpex.core.funding import FundingConfig
    from perpex.core.liquidation import LiquidationConfig
    from perpex.core.oracle import IndexConfig
    from perpex.core.tokens import TokenSpec

STATE_FORMAT: Final = 1  # layout of the snapshot blob below (the engine's part has its own)


class _State(msgspec.Struct, frozen=True, array_like=True):
    """A snapshot blob: the engine's own snapshot plus the idempotency window."""

    format: int
    seq: int
    engine: bytes
    window: list[Remembered]


_state_encoder: Final = msgspec.msgpack.Encoder()
_state_decoder: Final = msgspec.msgpack.Decoder(_State)


def engine_version() -> str:
    """What must match for a journal to replay to the same state (code, snapshot layout)."""
    return f"perpex {__version__}; engine snapshot v{SNAPSHOT_VERSION}; journal v{FORMAT_VERSION}"


def genesis_state(
    markets: Sequence[MarketSpec],
    mark_mode: str,
    liquidation: LiquidationConfig | None = None,
    index: IndexConfig | None = None,
    funding: Mapping[str, FundingConfig] | None = None,
    tokens: Sequence[TokenSpec] = (),
) -> bytes:
    """The empty engine as bytes: the journal's seq 0, and the identity of its config (market
    specs, mark mode, index sources, liquidation and funding parameters, leveraged tokens:
    everything the engine's snapshot records)."""
    return Engine(
        markets, mark_mode, liquidation=liquidation, index=index, funding=funding, tokens=tokens
    ).snapshot()


def config_fingerprint(genesis: bytes, window_capacity: int) -> str:
    h = hashlib.blake2b(genesis, digest_size=16)
    h.update(f"|idempotency window {window_capacity}".encode())
    return h.hexdigest()


def encode_state(engine: Engine, window: IdempotencyWindow, seq: int) -> bytes:
    return _state_encoder.encode(_State(STATE_FORMAT, seq, engine.snapshot(), window.entries()))


def decode_state(blob: bytes, capacity: int) -> tuple[int, Engine, IdempotencyWindow]:
    state = _state_decoder.decode(blob)
    if state.format != STATE_FORMAT:
        raise JournalError(f"snapshot format {state.format} != {STATE_FORMAT}")
    return (
        state.seq,
        Engine.restore(state.engine),
        IdempotencyWindow.from_entries(capacity, state.window),
    )


@dataclass(slots=True)
class Outcome:
    """What a submitted command got: its seq (the first copy's, for a duplicate) and events."""

    seq: int
    events: list[Event]
    duplicate: bool = False
    error: EngineError | None = None  # the engine could not represent the command (edge bug)


def step(
    engine: Engine,
    window: IdempotencyWindow,
    seq: int,
    command: Command,
    request_key: str | None,
) -> Outcome:
    """Apply one journaled command: the same code live and on replay."""
    key = key_of(command, request_key)
    if key is not None:
        first = window.get(key)
        if first is not None:
            return Outcome(first.seq, list(first.events), duplicate=True)
    try:
        events = engine.apply(command)
    except EngineError as exc:
        # The engine validates before it mutates, so nothing changed; replay meets the same
        # error at the same row and skips it the same way.
        return Outcome(seq, [], error=exc)
    if key is not None:
        window.remember(key, seq, response_events(command, events))
    return Outcome(seq, events)


@dataclass(slots=True)
class RecoveryReport:
    """What opening the journal did; `warnings` lists every damaged thing it stepped over."""

    path: str
    created: bool = False
    migrated: bool = False
    snapshot_seq: int | None = None  # the snapshot recovery started from (None: genesis)
    start_clock_ns: int = 0  # the engine clock there: where the replayed events begin
    replayed: int = 0  # journal rows applied after it
    refused: int = 0  # rows the engine could not represent (skipped alike live and on replay)
    last_seq: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Recovered:
    store: JournalStore
    meta: Meta
    engine: Engine
    window: IdempotencyWindow
    report: RecoveryReport


def open_journal(
    path: str,
    markets: Sequence[MarketSpec],
    mark_mode: str,
    *,
    window_capacity: int,
    liquidation: LiquidationConfig | None = None,
    index: IndexConfig | None = None,
    funding: Mapping[str, FundingConfig] | None = None,
    tokens: Sequence[TokenSpec] = (),
    migrate: bool = False,
    verify: bool = True,
    on_events: Callable[[list[Event]], object] | None = None,
) -> Recovered:
    """Open or create the journal at `path` and recover its state (the only startup path)."""
    started = time.perf_counter()
    store = JournalStore(path)
    try:
        report = RecoveryReport(path=str(store.path))
        genesis = genesis_state(markets, mark_mode, liquidation, index, funding, tokens)
        wanted = Meta(
            format_version=FORMAT_VERSION,
            engine_version=engine_version(),
            config_fingerprint=config_fingerprint(genesis, window_capacity),
            genesis=genesis,
            window_capacity=window_capacity,
        )
        if verify:
            store.quick_check()
        meta = store.read_meta()
        if meta is None:
            count, _, _ = store.command_range()
            if count or store.snapshots():
                raise CorruptJournal(f"{store.path}: journal rows without a meta table")
            store.write_meta(wanted)
            meta = wanted
            report.created = True
        elif _differs(meta, wanted):
            _refuse_or_migrate(store, meta, wanted, migrate)
            meta = wanted
            report.migrated = True
        engine, window = _recover_state(store, meta, report, on_events)
        try:
            engine.check_invariants()
        except AssertionError as exc:
            raise JournalError(
                f"{store.path}: the recovered state at seq {report.last_seq} breaks an "
                f"invariant ({exc}); refusing to accept commands"
            ) from exc
        report.seconds = time.perf_counter() - started
        return Recovered(store, meta, engine, window, report)
    except BaseException:
        store.close()
        raise


def _differs(have: Meta, want: Meta) -> bool:
    return (
        have.format_version != want.format_version
        or have.engine_version != want.engine_version
        or have.config_fingerprint != want.config_fingerprint
    )


def describe_genesis(genesis: bytes) -> str:
    """'BTCUSDT, ETHUSDT; mark index' (and '; tokens BTCUP3, BTCDOWN3' when there are any),
    for messages and `inspect`."""
    try:
        engine = Engine.restore(genesis)
    except Exception as exc:  # a foreign engine's snapshot: say so rather than fail
        return f"unreadable by this engine ({exc})"
    text = f"{', '.join(sorted(engine.markets))}; mark {engine.mark_mode}"
    if engine.tokens.tokens:
        text += f"; tokens {', '.join(engine.tokens.tokens)}"
    return text


def _refuse_or_migrate(store: JournalStore, have: Meta, want: Meta, migrate: bool) -> None:
    if have.format_version != want.format_version:
        raise ConfigMismatch(
            f"{store.path}: journal format v{have.format_version}, this perpex reads "
            f"v{want.format_version}; there is no migration between them"
        )
    what = []
    if have.engine_version != want.engine_version:
        what.append(f"engine {have.engine_version!r} (this is {want.engine_version!r})")
    if have.config_fingerprint != want.config_fingerprint:
        what.append(
            f"config {have.config_fingerprint} [{describe_genesis(have.genesis)}; idempotency "
            f"window {have.window_capacity}] (this exchange has {want.config_fingerprint} "
            f"[{describe_genesis(want.genesis)}; idempotency window {want.window_capacity}])"
        )
    if not migrate:
        raise ConfigMismatch(
            f"{store.path} was written by another engine version or market configuration: "
            f"{'; '.join(what)}. Open it with the configuration it was written with, or pass "
            "migrate=True to replay its whole journal under this one."
        )
    count, first, _ = store.command_range()
    if count and first != 1:
        raise ConfigMismatch(
            f"{store.path}: cannot migrate ({'; '.join(what)}): journal rows before seq "
            f"{first} were pruned, so the journal cannot be replayed from the start"
        )
    if not count and store.last_seq:
        raise ConfigMismatch(f"{store.path}: cannot migrate: every journal row was pruned")
    # Snapshots hold states computed by the old engine or config: the new one recomputes them.
    store.clear_snapshots()
    store.write_meta(want)


def _recover_state(
    store: JournalStore,
    meta: Meta,
    report: RecoveryReport,
    on_events: Callable[[list[Event]], object] | None,
) -> tuple[Engine, IdempotencyWindow]:
    count, first, _ = store.command_range()
    loaded: tuple[int, Engine, IdempotencyWindow] | None = None
    for info in store.snapshots():  # newest first
        try:
            loaded = load_snapshot(store, info.seq, meta.window_capacity)
        except JournalError as exc:
            report.warnings.append(f"snapshot at seq {info.seq} skipped: {exc}")
            continue
        if count and info.seq < first - 1:
            report.warnings.append(
                f"snapshot at seq {info.seq} skipped: journal rows {info.seq + 1}-{first - 1} "
                "after it were pruned"
            )
            loaded = None
            continue
        break
    if loaded is None:
        if (count and first != 1) or (not count and store.last_seq):
            raise CorruptJournal(
                f"{store.path}: no usable snapshot ({'; '.join(report.warnings) or 'none'}) "
                f"and the journal rows before seq {first or store.last_seq + 1} were pruned; "
                "recovery refuses to guess",
                first - 1 if count else store.last_seq,
            )
        base, engine, window = (
            0,
            Engine.restore(meta.genesis),
            IdempotencyWindow(meta.window_capacity),
        )
    else:
        base, engine, window = loaded
        report.snapshot_seq = base
    report.start_clock_ns = engine.clock_ns
    last = base
    for seq, _ts_ns, key, command in store.iter_commands(base):
        try:
            outcome = step(engine, window, seq, command, key)
        except Exception as exc:  # an engine bug: never continue on a state it broke
            raise JournalError(
                f"{store.path}: replaying journal row seq {seq} ({type(command).__name__}) "
                f"raised {exc!r}; refusing to accept commands"
            ) from exc
        if outcome.error is not None:
            report.refused += 1
        elif on_events is not None and not outcome.duplicate:
            on_events(outcome.events)
        report.replayed += 1
        last = seq
    if last < store.last_seq:
        # A (damaged) snapshot newer than the last row: the rows up to it are gone.
        raise CorruptJournal(
            f"{store.path}: journal rows {last + 1}-{store.last_seq} are missing (a snapshot "
            f"at seq {store.last_seq} existed); recovery refuses to guess",
            last + 1,
        )
    report.last_seq = last
    return engine, window


def load_snapshot(
    store: JournalStore, seq: int, window_capacity: int
) -> tuple[int, Engine, IdempotencyWindow]:
    """Restore the snapshot at `seq` and prove it: checksum, then the recomputed state hash."""
    row = store.read_snapshot(seq)
    try:
        state_seq, engine, window = decode_state(row.blob, window_capacity)
    except JournalError:
        raise
    except Exception as exc:  # any failure to rebuild means the snapshot cannot be used
        raise CorruptJournal(f"snapshot at seq {seq} does not restore ({exc!r})", seq) from exc
    if state_seq != seq:
        raise CorruptJournal(f"snapshot filed at seq {seq} says seq {state_seq}", seq)
    actual = engine.state_hash()
    if actual != row.state_hash:
        raise CorruptJournal(
            f"snapshot at seq {seq} restores to state hash {actual[:16]}..., not the "
            f"{row.state_hash[:16]}... recorded with it",
            seq,
        )
    return seq, engine, window
