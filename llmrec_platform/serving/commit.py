"""Group commit: concurrent requests share one write + fsync of the event log (or the audit log).

Each request queues its record (`submit`) and gets the `Flush` that will write it. One committer thread per
log takes everything queued so far, writes it in one `append` (one fsync) and marks that flush done; records
queued meanwhile go into the next flush, which starts as soon as this one ends. A 2xx is sent only after the
flush is done, so an acknowledged event is on disk.

How a request waits for its flush: on an event loop busy with scoring, every await is one more turn in the
loop's queue behind the in-flight requests (16 clients at ~1.5 ms each: a turn of 20-25 ms). A future settled
from the thread costs two turns: the settling callback's, then the task's wake-up (measured under the 80/20
load: POST /events p50 45 ms for a 0.13 ms fsync). So the request first blocks the loop for up to
`INLINE_WAIT_SECONDS` (the GIL is released meanwhile, so the committer runs): a fast disk's fsync settles within
the request's own turn, at the cost of that wait to the loop. When the flush takes longer (or flushes typically do:
the median of the last `RECENT_FLUSHES`; a slow disk would make every wait a loss, while one slow fsync among fast
ones, an idle disk's p99 of 5 ms, must not cost the next requests their inline wait), the request yields for
`POLL_TURNS` turns, checking the flush after each
(a busy loop's next turn starts after the fsync: one turn, not two), and only then awaits the settling callback
(on an idle loop the polls take microseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

IDLE_SECONDS = 30.0  # a committer thread with nothing to write for this long ends (the next append starts one)
INLINE_WAIT_SECONDS = 0.002  # the longest a request blocks its event loop for its flush (an idle fsync: 0.13 ms)
POLL_TURNS = 2  # turns of the loop a request checks its flush after, before it awaits the settling callback
RECENT_FLUSHES = 16  # the flushes whose median duration says whether waiting inline pays


class DurableLog(Protocol):
    def append(self, records: list) -> Any:
        """Write the records and fsync before returning (`EventLog`, `AuditLog`)."""


class Flush:
    """The records of one write + fsync and its outcome, which the committer thread sets once."""

    def __init__(self):
        self.records: list = []
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()  # `done` and `_waiters` change together: a waiter is either settled or seen
        self._waiters: list[tuple[asyncio.Future, asyncio.AbstractEventLoop]] = []

    def finish(self, result: Any, error: BaseException | None) -> None:
        """Record the outcome (in the committer thread) and settle the requests awaiting it on their loops."""
        with self._lock:
            self.result, self.error = result, error
            self.done.set()
            waiters, self._waiters = self._waiters, []
        for loop in {id(loop): loop for _, loop in waiters}.values():
            futures = [future for future, owner in waiters if owner is loop]
            with contextlib.suppress(RuntimeError):  # that loop has closed (its server stopped): nobody waits
                loop.call_soon_threadsafe(settle, futures, result, error)

    def outcome(self) -> Any:
        """What the log's `append` returned for this flush (the event log: its (start, end) byte offsets)."""
        if self.error is not None:
            raise self.error
        return self.result

    def __await__(self):
        """Settled already (no suspension: the request goes on in its own turn), settled by one of the next
        `POLL_TURNS` turns, or await the settling callback."""
        for _ in range(POLL_TURNS):
            if self.done.is_set():
                return self.outcome()
            yield  # as `asyncio.sleep(0)`: the task's next step is queued behind this turn's callbacks
        with self._lock:
            if not self.done.is_set():
                loop = asyncio.get_running_loop()
                future = loop.create_future()
                self._waiters.append((future, loop))
            else:
                future = None
        if future is not None:
            return (yield from future)
        return self.outcome()


class GroupCommitLog:
    def __init__(self, log: DurableLog, on_flush: Callable[[int], None] | None = None):
        self.log = log
        self.on_flush = on_flush  # called with each flush's batch size (the fsync batch metric), in the thread
        self.last_flush_seconds = 0.0  # how long the latest flush's write + fsync took
        self.typical_flush_seconds = 0.0  # the median of the last `RECENT_FLUSHES` (`wait_inline` reads it)
        self._recent = deque(maxlen=RECENT_FLUSHES)
        self._open = Flush()  # the flush that records queue into now
        self._wake = threading.Condition()
        self._committer: threading.Thread | None = None

    async def append(self, record: Any) -> Any:
        """Durably append `record` (a record of the log); returns what the log's `append` returned for the flush
        that wrote it."""
        return await self.submit(record)

    def submit(self, record: Any) -> Flush:
        """Queue `record` and return the flush that writes it (await it, after `wait_inline`). Awaiting the flushes
        of two logs one after the other costs no task, as `asyncio.gather` of two `append` coroutines would."""
        with self._wake:
            flush = self._open
            flush.records.append(record)
            if self._committer is None:
                self._committer = threading.Thread(target=self._commit_loop, name="group-commit", daemon=True)
                self._committer.start()
            self._wake.notify()
        return flush

    def _commit_loop(self) -> None:
        while True:
            with self._wake:
                if not self._open.records:
                    self._wake.wait(IDLE_SECONDS)
                if not self._open.records:
                    self._committer = None
                    return
                flush, self._open = self._open, Flush()
            start = time.perf_counter()
            try:
                result, error = self.log.append(flush.records), None
            except Exception as exc:  # every waiter of this flush gets the error (and answers 5xx)
                result, error = None, exc
            self.last_flush_seconds = time.perf_counter() - start
            self._recent.append(self.last_flush_seconds)
            self.typical_flush_seconds = statistics.median(self._recent)
            flush.finish(result, error)
            if error is None and self.on_flush is not None:
                self.on_flush(len(flush.records))


def wait_inline(commits: list[tuple[GroupCommitLog, Flush]], seconds: float = INLINE_WAIT_SECONDS) -> bool:
    """Block this thread (the event loop) until every flush is done, for at most `seconds` in all, unless a log's
    flushes typically take longer than that (then waiting is likely a loss). Returns whether all are done."""
    if any(log.typical_flush_seconds > seconds for log, _ in commits):
        return all(flush.done.is_set() for _, flush in commits)
    deadline = time.perf_counter() + seconds
    return all(flush.done.wait(max(deadline - time.perf_counter(), 0.0)) for _, flush in commits)


def settle(futures: list[asyncio.Future], result: Any, error: BaseException | None) -> None:
    for future in futures:
        if future.done():  # a client that hung up has a cancelled future
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
