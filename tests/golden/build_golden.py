"""Builds `tests/golden/journal.msgpack.gz`, the fixed command journal of the golden test.

Run once, on the engine before a refactor (`python tests/golden/build_golden.py`); the test
then replays the stored bytes, so later changes to this script or to `tests/streams.py` cannot
move the target. The journal: 9,000 commands of the shared seeded stream (quotes, takers,
cancels, index ticks from one or several venues, leverage and margin-mode changes, transfers),
then a crash: twenty 50x-100x longs buy from one short whale, every maker bid is pulled, and
the index falls 25 % in steps, so the longs are liquidated into an empty book, the fund cannot
cover them and the whale is auto-deleveraged; then the clock crosses a funding time and the
stream's tail runs on. The engine is run while building only to learn which bids to pull.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import sys
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from perpex.core.engine import Engine
from perpex.core.messages import (
    AdvanceClock,
    AnyCommand,
    CancelOrder,
    Command,
    Deposit,
    OrderType,
    PlaceOrder,
    SetLeverage,
    TimeInForce,
    UpdateIndex,
)
from streams import ATOMS_PER_USDT, MAKERS, NS_PER_SECOND, command_stream, default_specs

HERE = Path(__file__).resolve().parent
JOURNAL = HERE / "journal.msgpack.gz"
EXPECTED = HERE / "expected.txt"
SEED = 20261205
SYMBOL = "BTCUSDT"
CRASH_LONGS = 20


def new_engine() -> Engine:
    return Engine(default_specs(), "binance")


def digest_events(
    engine: Engine, commands: list[Command], kinds: collections.Counter[str] | None = None
) -> str:
    """SHA-256 over every event's MessagePack bytes, in order; counts the kinds if asked."""
    h = hashlib.sha256()
    encoder = msgspec.msgpack.Encoder()
    for command in commands:
        for event in engine.apply(command):
            h.update(encoder.encode(event))
            if kinds is not None:
                kinds[type(event).__name__] += 1
    return h.hexdigest()


def build() -> list[Command]:
    stream = command_stream(SEED, 11_000)
    head, tail = stream[:9_000], stream[9_000:]
    engine = new_engine()
    engine.apply_all(head)
    clock_ns = engine.clock_ns
    mark = engine.markets[SYMBOL].index_ticks
    crash: list[Command] = []
    # Pull every maker bid in the crash market: the liquidations meet an empty book.
    for maker in MAKERS:
        acct = engine.accounts[maker]
        for order_id, order in sorted(acct.orders.items()):
            if order.symbol == SYMBOL and order.side > 0:
                crash.append(CancelOrder(maker, SYMBOL, order_id=order_id))
    crash.append(Deposit("whale", 50_000_000 * ATOMS_PER_USDT))
    crash.append(SetLeverage("whale", SYMBOL, 5))
    for i in range(CRASH_LONGS):
        name = f"degen{i:02d}"
        crash.append(Deposit(name, (500 + 100 * i) * ATOMS_PER_USDT))
        crash.append(SetLeverage(name, SYMBOL, 50 + (i % 3) * 25))
    for i in range(CRASH_LONGS):
        # The whale offers at the mark; each long lifts it with a market order.
        lots = 100 + 10 * i
        crash.append(
            PlaceOrder("whale", SYMBOL, -1, OrderType.LIMIT, TimeInForce.GTC, lots, mark)
        )
        crash.append(
            PlaceOrder(f"degen{i:02d}", SYMBOL, 1, OrderType.MARKET, TimeInForce.IOC, lots, 0)
        )
    for step in range(1, 26):  # -1 % a step, a second apart
        clock_ns += NS_PER_SECOND
        crash.append(AdvanceClock(clock_ns))
        crash.append(UpdateIndex(SYMBOL, mark * (100 - step) // 100))
    # Cross the next 8-hour funding time, then the stream's tail with its clock shifted past
    # the crash (its index ticks take the price back up to the stream's level).
    clock_ns += 9 * 3600 * NS_PER_SECOND
    crash.append(AdvanceClock(clock_ns))
    crash.append(UpdateIndex(SYMBOL, mark * 75 // 100))
    shift_ns = clock_ns - engine.clock_ns
    shifted = [
        AdvanceClock(c.ts_ns + shift_ns) if isinstance(c, AdvanceClock) else c for c in tail
    ]
    return head + crash + shifted


def main() -> None:
    commands = build()
    blob = msgspec.msgpack.encode(commands)
    decoded = msgspec.msgpack.decode(blob, type=list[AnyCommand])  # type: ignore[valid-type]
    assert decoded == commands
    JOURNAL.write_bytes(gzip.compress(blob, mtime=0))
    engine = new_engine()
    kinds: collections.Counter[str] = collections.Counter()
    events_digest = digest_events(engine, commands, kinds)
    print(dict(sorted(kinds.items())))
    engine.check_invariants()
    EXPECTED.write_text(
        f"commands {len(commands)}\nstate_hash {engine.state_hash()}\n"
        f"events_sha256 {events_digest}\n",
        encoding="utf-8",
    )
    print(EXPECTED.read_text(encoding="utf-8"), end="")


if __name__ == "__main__":
    main()
