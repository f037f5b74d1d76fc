"""The sequencer: the one thread that touches the exchange (DESIGN.md §1, "one writer").

Requests become jobs, `fn(ex) -> result`, queued from the asyncio loop. The writer thread takes
what is queued (up to `max_batch`), and inside one `ex.batch()` (one journal transaction, one
fsync: group commit) stamps the wall clock (`AdvanceClock`, journaled like any input, only when
the batch writes and time moved on), runs each job and hands its events to the sinks (the
server's views: order history, trades, candles). Only after the commit does it run each job's
`then` (a rendering step that reads the views), publish the batch's events to the streams and
resolve the callers' futures: an acknowledged request is durable.

Reads go through the same queue (`write=False`), so a reply never sees a half-applied command.
The queue is bounded: when it is full the caller gets -1008 (server busy) instead of a growing
backlog. A job's `ExchangeError` is its answer; any other exception is reported as -1000 and
logged. If a commit fails, the exchange is ahead of its journal: every later job fails until
the server restarts and recovers.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future as SyncFuture
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from perpex.core.messages import AdvanceClock, Event
from perpex.errors import ExchangeError
from perpex.exchange import Exchange
from perpex.server.errors import ApiError

log = logging.getLogger("perpex.server")

T = TypeVar("T")
R = TypeVar("R")
MAX_QUEUE: Final = 10_000
NS_PER_MS: Final = 1_000_000


class EventSink(Protocol):
    """A view kept by the writer thread: it sees every event once, in order."""

    def apply(self, events: Sequence[Event]) -> None: ...


class Publisher(Protocol):
    """Where a committed batch's events go next (the streams); called in the writer thread."""

    def publish(self, events: Sequence[Event], ex: Exchange) -> None: ...


def wall_clock_ns() -> int:
    """The server's clock: wall time, floored to the millisecond (Binance's resolution)."""
    return time.time_ns() // NS_PER_MS * NS_PER_MS


@dataclass
class _Job:
    fn: Callable[[Exchange], Any]
    then: Callable[[Any], Any] | None
    write: bool
    done: Callable[[bool, Any], None]
    ok: bool = True
    result: Any = None
    extra: list[Any] = field(default_factory=list)


class Sequencer:
    """Single writer over an `Exchange`. Start with `start()`, stop with `stop()`."""

    def __init__(
        self,
        ex: Exchange,
        sinks: Sequence[EventSink] = (),
        publishers: Sequence[Publisher] = (),
        *,
        max_batch: int = 256,
        clock: Callable[[], int] = wall_clock_ns,
    ) -> None:
        self.ex = ex
        self.sinks = list(sinks)
        self.publishers = list(publishers)
        self.max_batch = max_batch
        self.clock = clock
        self._queue: queue.Queue[_Job | None] = queue.Queue(MAX_QUEUE)
        self._thread = threading.Thread(target=self._run, name="perpex-sequencer", daemon=True)
        self._broken: str | None = None
        self.batches = 0  # committed batches (for the benchmark and the dashboard)
        self.jobs = 0

    # -- life -----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued, then stop the thread (the caller closes the exchange)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    # -- submitting -----------------------------------------------------------------------
    async def call(
        self,
        fn: Callable[[Exchange], T],
        then: Callable[[T], R] | None = None,
        *,
        write: bool = True,
    ) -> Any:
        """Run `fn(ex)` in the writer thread; after the commit, `then(result)`; return that.

        Raises the job's `ExchangeError`/`ApiError`, or `ApiError(-1000)` for anything else.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def done(ok: bool, value: Any) -> None:
            loop.call_soon_threadsafe(_settle, future, ok, value)

        self._put(_Job(fn, then, write, done))
        return await future

    def call_sync(
        self,
        fn: Callable[[Exchange], T],
        then: Callable[[T], R] | None = None,
        *,
        write: bool = True,
        timeout: float | None = 30.0,
    ) -> Any:
        """`call` from a plain thread (the CLI, tests, start-up): blocks until answered."""
        future: SyncFuture[Any] = SyncFuture()

        def done(ok: bool, value: Any) -> None:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

        self._put(_Job(fn, then, write, done))
        return future.result(timeout)

    def _put(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ApiError(
                -1008,
                "Server is currently overloaded with other requests. Please try again in a few "
                "minutes.",
                503,
            ) from None

    # -- the writer thread ----------------------------------------------------------------
    def _run(self) -> None:
        q = self._queue
        while True:
            first = q.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    job = q.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Job]) -> None:
        ex = self.ex
        if self._broken is not None:
            error = ApiError(
                -1001, f"Internal error; unable to process your request. {self._broken}", 503
            )
            for job in batch:
                job.done(False, error)
            return
        events: list[Event] = []
        try:
            with ex.batch():
                if any(job.write for job in batch):
                    now_ns = self.clock()
                    if now_ns > ex.time_ns:
                        ex.submit([AdvanceClock(now_ns)])
                        self._sink(events)
                for job in batch:
                    try:
                        job.result = job.fn(ex)
                    except (ExchangeError, ApiError) as exc:
                        job.ok, job.result = False, exc
                    except Exception as exc:  # a bug: answer -1000, keep serving
                        log.exception("job failed")
                        job.ok, job.result = (
                            False,
                            _unknown(exc),
                        )
                    self._sink(events)
        except Exception as exc:  # the commit failed: the journal is behind the state
            self._broken = f"journal commit failed: {exc}"
            log.exception("journal commit failed; refusing further requests")
            error = ApiError(
                -1001, "Internal error; unable to process your request. Please try again.", 503
            )
            for job in batch:
                job.done(False, error)
            return
        self.batches += 1
        self.jobs += len(batch)
        for job in batch:
            if job.ok and job.then is not None:
                try:
                    job.result = job.then(job.result)
                except (ExchangeError, ApiError) as exc:
                    job.ok, job.result = False, exc
                except Exception as exc:
                    log.exception("rendering failed")
                    job.ok, job.result = (
                        False,
                        _unknown(exc),
                    )
        if events:
            for publisher in self.publishers:
                try:
                    publisher.publish(events, ex)
                except Exception:
                    log.exception("publishing failed")
        for job in batch:
            job.done(job.ok, job.result)

    def _sink(self, events: list[Event]) -> None:
        taken = self.ex.take_events()
        if not taken:
            return
        for sink in self.sinks:
            try:
                sink.apply(taken)
            except Exception:  # a view's bug must not stop the exchange
                log.exception("a view failed on %d events", len(taken))
        events.extend(taken)


def _unknown(exc: Exception) -> ApiError:
    name = type(exc).__name__
    return ApiError(-1000, f"An unknown error occured while processing the request. ({name})", 500)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the caller went away (a dropped connection)
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


__all__ = ["MAX_QUEUE", "EventSink", "Publisher", "Sequencer", "wall_clock_ns"]
