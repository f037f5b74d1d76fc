"""The sequencer: one writer thread, group commit, answers only after the commit.

Driven directly (no HTTP): jobs from many threads share transactions, each is answered with
its own result or error, `then` runs after the commit, the wall clock is stamped as a journaled
`AdvanceClock` only by writing batches, and a failing job or view does not stop the writer."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from perpex.core.messages import Event
from perpex.errors import ExchangeError
from perpex.exchange import Exchange
from perpex.server.errors import ApiError
from perpex.server.sequencer import Sequencer

START_NS = 1_700_000_000 * 10**9


class Clock:
    def __init__(self) -> None:
        self.now_ns = START_NS

    def __call__(self) -> int:
        return self.now_ns


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[Event] = []
        self.fail = fail

    def apply(self, events: Sequence[Event]) -> None:
        if self.fail:
            raise RuntimeError("a view's bug")
        self.events.extend(events)


@pytest.fixture
def journaled(tmp_path: Path) -> Iterator[tuple[Exchange, Sequencer, Clock, Recorder]]:
    ex = Exchange(journal=tmp_path / "j.db", start_time=START_NS // 10**9, mark_price="index")
    ex.set_index_price("BTCUSDT", "60000")
    clock = Clock()
    view = Recorder()
    seq = Sequencer(ex, sinks=[Recorder(fail=True), view], clock=clock, max_batch=64)
    seq.start()
    try:
        yield ex, seq, clock, view
    finally:
        seq.stop()
        ex.close()


def test_jobs_from_many_threads_share_commits_and_get_their_own_answers(
    journaled: tuple[Exchange, Sequencer, Clock, Recorder],
) -> None:
    _, seq, _, view = journaled
    answers: dict[int, Any] = {}

    def client(i: int) -> None:
        answers[i] = seq.call_sync(lambda e: e.deposit(f"acct{i}", str(i + 1)))

    running, gate = threading.Event(), threading.Event()

    def hold(e: Exchange) -> bool:
        running.set()
        return gate.wait(10)

    holder = threading.Thread(target=lambda: seq.call_sync(hold))
    holder.start()
    assert running.wait(10)  # the writer is busy with this job while the 40 queue behind it
    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while seq._queue.qsize() < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    for t in [holder, *threads]:
        t.join()
    assert answers == {i: i + 1 for i in range(40)}  # each its own wallet after its deposit
    assert seq.jobs == 41 and seq.batches == 2  # the 40 shared one transaction (group commit)
    deposits = [e for e in view.events if type(e).__name__ == "Deposited"]
    assert len(deposits) == 40  # the working view saw every event; the failing one did not stop it


def test_then_runs_after_the_commit_and_errors_stay_with_their_job(
    journaled: tuple[Exchange, Sequencer, Clock, Recorder],
) -> None:
    ex, seq, _, _ = journaled
    assert ex.journal is not None
    store = ex.journal.store
    inside = seq.call_sync(
        lambda e: store.in_transaction, lambda flag: (flag, store.in_transaction)
    )
    assert inside == (True, False)  # fn inside the group commit, then after it
    with pytest.raises(ExchangeError) as refused:
        seq.call_sync(lambda e: e.withdraw("nobody", "5"))
    assert refused.value.code < 0
    with pytest.raises(ApiError) as bug:
        seq.call_sync(lambda e: 1 // 0)
    assert bug.value.code == -1000 and bug.value.status == 500
    assert seq.call_sync(lambda e: e.deposit("after", "7")) == 7  # still serving


def test_only_writing_batches_stamp_the_wall_clock(
    journaled: tuple[Exchange, Sequencer, Clock, Recorder],
) -> None:
    _, seq, clock, view = journaled
    clock.now_ns += 5 * 10**9
    assert seq.call_sync(lambda e: e.time_ns, write=False) == START_NS  # a read: no stamp
    assert seq.call_sync(lambda e: e.time_ns) == START_NS + 5 * 10**9  # a write: stamped first
    stamps = [e for e in view.events if type(e).__name__ == "ClockAdvanced"]
    assert stamps and stamps[-1].ts_ns == START_NS + 5 * 10**9  # type: ignore[attr-defined]
    clock.now_ns -= 10**9  # the wall clock stepped back: the exchange's clock never does
    assert seq.call_sync(lambda e: e.time_ns) == START_NS + 5 * 10**9
