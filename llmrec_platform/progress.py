"""Progress of long work (texts encoded, epochs, trees), reported to whoever listens; nothing is printed here.

Domain code calls `report(done, total, unit)` at natural boundaries; it costs nothing when no one listens. The
orchestration layer listens for one step at a time (`listening`) and turns reports into the step's log, which
the CLI draws as its one progress bar. A context variable, not a global: a listener sees only its own thread's
work.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import time
from collections.abc import Callable, Iterator

Listener = Callable[[int, int, str], None]  # (done, total, unit)

_listener: contextvars.ContextVar[Listener | None] = contextvars.ContextVar("llmrec_progress", default=None)


def report(done: int, total: int, unit: str) -> None:
    listener = _listener.get()
    if listener is not None:
        listener(int(done), int(total), unit)


@contextlib.contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Send the reports made inside the block (in this thread) to `listener`."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


def message(done: int, total: int, unit: str) -> str:
    """How a report travels through a step's log ('progress 640/1682 texts')."""
    return f"progress {done}/{total} {unit}"


_MESSAGE = re.compile(r"^progress (\d+)/(\d+) (\S.*)$")


def parse(text: str) -> tuple[int, int, str] | None:
    """(done, total, unit) of a `message`, else None."""
    match = _MESSAGE.match(text)
    return (int(match[1]), int(match[2]), match[3]) if match else None


def throttled(log: Callable[[str], None], every_s: float = 1.0) -> Listener:
    """A listener that passes `message(...)` to `log` at most every `every_s` seconds, and always when done."""
    last = -float("inf")

    def listener(done: int, total: int, unit: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every_s or done >= total:
            last = now
            log(message(done, total, unit))

    return listener
