"""Durability: the SQLite journal of input commands, snapshots, recovery and replay.

`JournaledEngine` is the engine behind a journal (every command durable before it is applied,
opening the file recovers its state); `Exchange(journal=path)` uses it. `tools.replay` and
`tools.inspect` read a journal offline. This package imports `perpex.core`, never the reverse.
"""

from perpex.journal.idempotency import IDEMPOTENCY_WINDOW, IdempotencyWindow
from perpex.journal.journaled import JournaledEngine
from perpex.journal.recovery import Outcome, RecoveryReport
from perpex.journal.store import (
    FORMAT_VERSION,
    MAX_BATCH_COMMANDS,
    ConfigMismatch,
    CorruptJournal,
    JournalError,
)
from perpex.journal.tools import (
    ReplayResult,
    event_digest,
    inspect,
    iter_commands,
    iter_events,
    replay,
)

__all__ = [
    "FORMAT_VERSION",
    "IDEMPOTENCY_WINDOW",
    "MAX_BATCH_COMMANDS",
    "ConfigMismatch",
    "CorruptJournal",
    "IdempotencyWindow",
    "JournalError",
    "JournaledEngine",
    "Outcome",
    "RecoveryReport",
    "ReplayResult",
    "event_digest",
    "inspect",
    "iter_commands",
    "iter_events",
    "replay",
]
