"""Group commit (`serving.commit`): a flush settles in the request's own turn when the disk is fast, and is
awaited through the event loop otherwise; every waiter gets the flush's outcome or its error."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import pytest

from llmrec_platform.serving.commit import INLINE_WAIT_SECONDS, GroupCommitLog, wait_inline


class FakeLog:
    def __init__(self, seconds: float = 0.0, error: Exception | None = None):
        self.seconds, self.error, self.batches = seconds, error, []

    def append(self, records: list):
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        self.batches.append(list(records))
        return len(self.batches)


def run_in_fresh_thread(coroutine_function):
    """asyncio.run in a thread of its own: another test may leave an event loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_function())).result()

def test_a_fast_flush_settles_inline_and_await_does_not_suspend():
    async def run():
        log = GroupCommitLog(FakeLog())
        flush = log.submit("a")
        assert wait_inline([(log, flush)], seconds=1.0)
        suspended = []
        loop = asyncio.get_running_loop()
        loop.call_soon(suspended.append, "another callback ran first")
        result = await flush
        return result, list(suspended), log.log.batches

    result, suspended, batches = run_in_fresh_thread(run)
    assert (result, batches) == (1, [["a"]])
    assert suspended == []  # the request went on in its own turn: no callback of the loop ran before it


def test_a_slow_flush_is_awaited_after_at_most_the_inline_wait():
    async def run():
        log = GroupCommitLog(FakeLog(seconds=0.2))
        flushes = [log.submit("a")]
        time.sleep(0.05)  # the committer is writing "a" now
        flushes += [log.submit(record) for record in "bc"]
        start = time.perf_counter()
        settled = wait_inline([(log, flushes[0])])
        waited = time.perf_counter() - start
        results = [await flush for flush in flushes]
        return settled, waited, results, log

    settled, waited, results, log = run_in_fresh_thread(run)
    assert not settled and waited < INLINE_WAIT_SECONDS + 0.05
    assert results[0] == 1 and results[1:] == [2, 2]  # the records queued during the first flush share the second
    assert log.log.batches == [["a"], ["b", "c"]]
    assert log.last_flush_seconds >= 0.2 and log.typical_flush_seconds >= 0.2
    start = time.perf_counter()
    assert not wait_inline([(log, log.submit("d"))])  # flushes are typically slow here: no wait at all
    assert time.perf_counter() - start < INLINE_WAIT_SECONDS


def test_one_slow_flush_among_fast_ones_keeps_the_inline_wait():
    """An idle disk's fsync is 0.13 ms at p50 and 5 ms at p99: after its one slow flush, the next request must still
    settle inline (skipping the wait would cost it a whole turn of the busy loop)."""
    async def run():
        fake = FakeLog()
        log = GroupCommitLog(fake)
        for record in "abcde":
            assert wait_inline([(log, log.submit(record))], seconds=1.0)
        fake.seconds = 0.05
        slow = log.submit("slow")
        assert not wait_inline([(log, slow)], seconds=0.001)
        await slow
        assert log.last_flush_seconds >= 0.05
        fake.seconds = 0.0
        # A wait shorter than the slow flush: skipped if that one flush decided it, taken by the median.
        return wait_inline([(log, log.submit("f"))], seconds=0.04), log.typical_flush_seconds

    settled, typical = run_in_fresh_thread(run)
    assert settled and typical < 0.05


@pytest.mark.parametrize("inline", [True, False])
def test_every_waiter_of_a_failed_flush_gets_its_error(inline):
    async def run():
        log = GroupCommitLog(FakeLog(seconds=0.0 if inline else 0.05, error=OSError("disk full")))
        flush = log.submit("a")
        assert wait_inline([(log, flush)], seconds=1.0 if inline else 0.0) is inline
        with pytest.raises(OSError, match="disk full"):
            await flush

    run_in_fresh_thread(run)
