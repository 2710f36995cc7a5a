"""Group commit: concurrent requests share one write + fsync of the event log (or the audit log).

Each request queues its event and waits for its own future. Whoever holds the flush lock writes everything
queued so far in one `EventLog.append` (one fsync, off the event loop), then resolves all those futures;
requests that queued meanwhile are flushed together by the next holder. A 202 is sent only after the
future resolves, so an acknowledged event is on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class DurableLog(Protocol):
    def append(self, records: list) -> Any:
        """Write the records and fsync before returning (`EventLog`, `AuditLog`)."""


class GroupCommitLog:
    def __init__(self, log: DurableLog, on_flush: Callable[[int], None] | None = None):
        self.log = log
        self.on_flush = on_flush  # called with each flush's batch size (the fsync batch metric)
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._lock = asyncio.Lock()

    async def append(self, event: Any) -> Any:
        """Durably append `event` (a record of the log); returns what the log's `append` returned for the flush
        that wrote it (the event log: its (start, end) byte offsets)."""
        future = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        async with self._lock:
            if not future.done():
                batch, self._pending = self._pending, []
                try:
                    offsets = await asyncio.to_thread(self.log.append, [e for e, _ in batch])
                except Exception as exc:  # every waiter of this flush gets the error (and answers 5xx)
                    for _, waiting in batch:
                        if not waiting.done():  # a client that hung up has a cancelled future
                            waiting.set_exception(exc)
                else:
                    for _, waiting in batch:
                        if not waiting.done():
                            waiting.set_result(offsets)
                    if self.on_flush is not None:
                        self.on_flush(len(batch))
        return await future
