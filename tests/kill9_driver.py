"""A journaled exchange in a process of its own, for tests/test_kill9.py to kill with SIGKILL.

    python tests/kill9_driver.py DB SEED N START SNAPSHOT_EVERY

Opens (recovers) the journal at DB, prints `ready <last seq> <snapshot seq or -1>`, then
applies the keyed stream `keyed_stream(SEED, N)` from index START in group-commit batches of
seeded random sizes. After each batch's commit returns it prints `ack <last index of the
batch>` and flushes: a printed ack is an acknowledged command. The stream's i-th command has
seq i + 1, whether it is journaled now or was already journaled before a crash (a resend then
comes back as a duplicate carrying the first copy's seq); the driver checks that for every
command and prints `error ...` and exits 3 if it does not hold. At the end it prints
`done <state hash>`.
"""

from __future__ import annotations

import random
import sys
from typing import Final

import msgspec

from perpex.core.messages import Command, PlaceOrder
from perpex.journal import JournaledEngine
from streams import command_stream, default_specs

BATCH_SIZES: Final = (1, 1, 2, 3, 8, 16, 32, 64)


def keyed_stream(seed: int, n: int) -> list[tuple[Command, str | None]]:
    """The shared stream with an idempotency key on every command: a client order id on each
    order (the makers' own, `k<i>` for the takers'), a request key `r<i>` on everything else."""
    out: list[tuple[Command, str | None]] = []
    for i, command in enumerate(command_stream(seed, n)):
        if isinstance(command, PlaceOrder):
            if command.client_order_id is None:
                command = msgspec.structs.replace(command, client_order_id=f"k{i}")
            out.append((command, None))
        else:
            out.append((command, f"r{i}"))
    return out


def main(argv: list[str]) -> int:
    db, seed, n, start, snapshot_every = argv[0], *map(int, argv[1:5])
    stream = keyed_stream(seed, n)
    journaled = JournaledEngine(db, default_specs(), snapshot_every=snapshot_every)
    snap = journaled.report.snapshot_seq
    print(f"ready {journaled.last_seq} {-1 if snap is None else snap}", flush=True)
    rng = random.Random(seed * 1_000_003 + start)
    i = start
    while i < n:
        chunk = stream[i : i + rng.choice(BATCH_SIZES)]
        outcomes = journaled.apply_batch([c for c, _ in chunk], [k for _, k in chunk])
        for j, outcome in enumerate(outcomes):
            if outcome.seq != i + j + 1 or outcome.error is not None:
                print(f"error index {i + j} got {outcome}", flush=True)
                return 3
        i += len(chunk)
        print(f"ack {i - 1}", flush=True)
    print(f"done {journaled.engine.state_hash()}", flush=True)
    journaled.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
