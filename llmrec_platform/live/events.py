"""The durable interaction-event log (no Dagster).

Whoever records user events (a client, a serving process, the tests) appends them with `EventLog.append`;
the `events_sensor` reads what is new and the `events_refresh` job replays each batch. The log is an
append-only JSON Lines file, `events.jsonl` in the folder it is given (the platform passes
`<LLMREC_HOME>/events/`), one event per line, keys sorted:

    {"event_id":"…","event_type":"rating","item_id":"50","timestamp":1700000000,"user_id":"42","value":4.0}

`append` writes whole lines under an exclusive `flock` and fsyncs before returning (and the folder, when
the log was empty), so an acknowledged event survives a crash and writers that go through `append` never
interleave. A line left half-written by a crashed writer is terminated by the next append and from then
on reads as malformed. Readers address the log by byte offset: `read(offset)` parses the complete lines
after `offset` (at most `max_events` events, none past byte `until`), returns malformed lines apart from
the events, and the offset to continue from; a partially written last line is left for the next read.
That offset is the events sensor's cursor. With pseudonymization on, the `user_id`s in the log are the
keyed pseudonyms (the serving API maps the raw ids it receives; `data.privacy`): a writer that appends
directly must do the same, with the same key. An erasure (`llmrec forget`, llmrec_platform.erasure) overwrites
an erased user's lines with spaces in place, so every offset stays valid; readers skip blank lines.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

LOG_NAME = "events.jsonl"
EVENT_COLUMNS = ["event_id", "user_id", "item_id", "event_type", "value", "timestamp"]
# Event types whose value is the rating itself; any other type counts as the rating its weight says.
EXPLICIT_TYPES = ("rating", "rate")
# The rating each implicit event type counts as (LLMREC_EVENT_WEIGHTS overrides it); unknown types count 4.
DEFAULT_EVENT_WEIGHTS = {"view": 2.0, "click": 4.0, "favorite": 5.0}
DEFAULT_IMPLICIT_WEIGHT = 4.0


def event_rating(event_type: str, value: float, weights: Mapping[str, float] | None = None) -> float:
    """The rating an event counts as in a history: its value for a rating, its type's weight otherwise."""
    if event_type in EXPLICIT_TYPES:
        return float(value)
    return float((DEFAULT_EVENT_WEIGHTS if weights is None else weights).get(event_type, DEFAULT_IMPLICIT_WEIGHT))


class EventError(ValueError):
    """An event is malformed, or the log and a cursor disagree."""


@dataclass(frozen=True)
class Event:
    user_id: str
    item_id: str
    event_type: str = "rating"
    value: float = 1.0
    timestamp: int = field(default_factory=lambda: int(time.time()))
    event_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    request_id: str | None = None  # the recommendation response the event answers (online CTR)

    def __post_init__(self):
        for name in ("user_id", "item_id", "event_type", "event_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise EventError(f"event {name} must be a non-empty string, got {value!r}")
        if not isinstance(self.value, int | float) or not math.isfinite(self.value):
            raise EventError(f"event value must be a finite number, got {self.value!r}")
        if not isinstance(self.timestamp, int) or self.timestamp < 0:
            raise EventError(f"event timestamp must be epoch seconds (a non-negative int), got {self.timestamp!r}")

    @classmethod
    def from_dict(cls, data: dict) -> Event:
        missing = [k for k in EVENT_COLUMNS if k not in data]
        if missing:
            raise EventError(f"event misses {missing}: {data}")
        try:
            return cls(user_id=str(data["user_id"]), item_id=str(data["item_id"]), event_type=str(data["event_type"]),
                       value=float(data["value"]), timestamp=int(data["timestamp"]), event_id=str(data["event_id"]),
                       request_id=None if data.get("request_id") is None else str(data["request_id"]))
        except (TypeError, ValueError) as exc:
            raise EventError(f"malformed event {data}: {exc}") from exc

    def to_json(self) -> str:
        fields = asdict(self)
        if fields["request_id"] is None:
            del fields["request_id"]  # lines without one stay as they were
        return json.dumps(fields, separators=(",", ":"), sort_keys=True)


@dataclass
class EventBatch:
    events: list[Event]
    start: int  # byte offset of the first line read
    end: int  # byte offset after the last complete line read: the next cursor
    malformed: list[str] = field(default_factory=list)  # complete lines that are not events (e.g. a torn write)

    def frame(self) -> pd.DataFrame:
        if not self.events:
            return pd.DataFrame(columns=EVENT_COLUMNS + ["request_id"])
        return pd.DataFrame([asdict(e) for e in self.events])[EVENT_COLUMNS + ["request_id"]]

    @property
    def user_ids(self) -> list[str]:
        return sorted({e.user_id for e in self.events})


class EventLog:
    def __init__(self, folder: str | Path, erased=None):
        """`erased`: the erasure ledger's tombstones (`erasure.Tombstones`): `read` leaves out the events an
        erasure removed, so an old copy of the log replayed later cannot bring them back."""
        self.folder = Path(folder)
        self.path = self.folder / LOG_NAME
        self.erased = erased

    def size(self) -> int:
        try:  # one os.stat: servers call this before every answer, Path.exists + Path.stat cost 5 % of a request
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def append(self, events: Iterable[Event]) -> tuple[int, int]:
        """Append events durably; returns the (start, end) byte offsets they occupy."""
        payload = "".join(e.to_json() + "\n" for e in events).encode()
        if not payload:
            size = self.size()
            return size, size
        with self._open_for_append() as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.seek(0, os.SEEK_END)
                start = handle.tell()
                if start and os.pread(handle.fileno(), 1, start - 1) != b"\n":
                    # A writer crashed mid-line: terminate that line so ours stays parseable.
                    handle.write(b"\n")
                    start += 1
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
                end = handle.tell()
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        if start == 0:
            fsync_dir(self.folder)  # the file itself is new: make its directory entry durable too
        return start, end

    def _open_for_append(self):
        """The log, to append to and to read its last byte from; its folder is made only when missing (not a
        `mkdir` per flush: each syscall of a server's committer thread is a GIL hand-off)."""
        try:
            return open(self.path, "ab+")
        except FileNotFoundError:
            self.folder.mkdir(parents=True, exist_ok=True)
            return open(self.path, "ab+")

    def read(self, offset: int = 0, max_events: int | None = None, until: int | None = None) -> EventBatch:
        """Complete events after byte `offset` (at most `max_events`, and none at or past byte `until`)."""
        size = self.size()
        if offset < 0 or offset > size:
            raise EventError(f"cursor offset {offset} is outside the event log {self.path} ({size} bytes): "
                             "was the log truncated or replaced? Reset the events sensor's cursor.")
        events, malformed, position = [], [], offset
        if size == offset:
            return EventBatch(events, offset, offset)
        erased = self.erased.current() if self.erased is not None else ()
        with open(self.path, "rb") as handle:
            handle.seek(offset)
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # being written right now: leave it for the next read
                if max_events is not None and len(events) >= max_events:
                    break
                if until is not None and position + len(line) > until:
                    break
                at = position
                position += len(line)
                text = line.decode("utf-8", errors="replace").strip()
                if not text:
                    continue
                try:
                    event = Event.from_dict(json.loads(text))
                except (json.JSONDecodeError, EventError):
                    malformed.append(text[:200])
                    continue
                if not (erased and erased.drops(event.user_id, at)):
                    events.append(event)
        return EventBatch(events, offset, position, malformed)


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a new file, a rename) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
