"""The erasure ledger, its key, and the journal that makes an erasure resumable (no Dagster).

    <LLMREC_HOME>/erasure/key            a random HMAC key (0600), made on the first erasure; never leaves the home
    <LLMREC_HOME>/erasure/ledger.jsonl   one line per step of an erasure, keyed by its tombstone, never the id:
        {"at":"2026-12-07T10:40:00+00:00","log_offset":5120,"status":"requested","tombstone":"9f2c…"}
        {"at":"…","held":true,"refit":["ease",…],"status":"completed","stores":{"warehouse":42,…},"tombstone":"9f2c…"}
    <LLMREC_HOME>/erasure/pending.json   the journal: the erasures under way, with the ids they need (written and
                                         fsynced before any store is touched; removed when they complete)

A tombstone is HMAC-SHA256(key, stored id): the id the stores hold (the pseudonym when pseudonymization is on);
`log_offset` is the event log's size when the erasure was requested (the events it covers).
A repeated request has the same tombstone, so the ledger matches it without holding the id. Readers of the
event log and the server consult the tombstones (`Tombstones`), so an old copy of the log replayed later
cannot bring an erased user back, and a running server stops serving one within a request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llmrec_platform.live.events import fsync_dir

KEY_NAME = "key"
LEDGER_NAME = "ledger.jsonl"
JOURNAL_NAME = "pending.json"


class ErasureError(RuntimeError):
    """The erasure state under the home is unreadable; the message names the file."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_durably(path: Path, data: bytes) -> None:
    """Replace `path` with `data`: a temporary file, fsync, atomic rename, fsync of the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    with open(staging, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, path)
    fsync_dir(path.parent)


def erasure_key(folder: Path, create: bool = False) -> bytes | None:
    """The ledger's HMAC key (None when there is none yet and `create` is False)."""
    path = Path(folder) / KEY_NAME
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return erasure_key(folder)
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
    key = path.read_text().strip()
    if len(key) < 32:
        raise ErasureError(f"{path} holds no usable key ({len(key)} characters): restore it from a backup")
    return key.encode()


def tombstone(key: bytes, stored_id: str) -> str:
    return hmac.new(key, str(stored_id).encode("utf-8"), hashlib.sha256).hexdigest()


def append_ledger(folder: Path, entry: dict) -> None:
    """Append one line to the ledger and fsync it (the line never holds an id)."""
    path = Path(folder) / LEDGER_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"at": now(), **entry}, separators=(",", ":"), sort_keys=True) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ledger(folder: Path) -> list[dict]:
    path = Path(folder) / LEDGER_NAME
    if not path.exists():
        return []
    entries = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # only a torn last line (a crash mid-append) is tolerated
                raise ErasureError(f"{path} line {number} is not JSON: restore the ledger from a backup") from None
    return entries


class Tombstones:
    """The tombstones of an erasure folder, re-read when the ledger changes (one stat per `current()` call).

    Each tombstone covers the event log up to the byte offset the log had when the erasure was requested
    (`log_offset` of its `requested` line; the largest, when one person was erased more than once): an event of
    an erased user before that offset is what the erasure removed, so a reader drops it (`drops`); one after it
    is new (the person came back), and counts."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._ledger = os.fspath(self.folder / LEDGER_NAME)  # a str: `os.stat` on it is the per-request cost
        self._stamp: tuple[int, int] | None = None
        self._key: bytes | None = None
        self._until: dict[str, int] = {}  # tombstone -> event-log offset it covers

    def current(self) -> Tombstones:
        """Re-read the ledger if it changed since the last call; returns self."""
        try:
            stat = os.stat(self._ledger)
            stamp = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._key = erasure_key(self.folder) if stamp != (0, 0) else None
            until: dict[str, int] = {}
            for entry in read_ledger(self.folder):
                if entry.get("status") == "requested":
                    until[entry["tombstone"]] = max(until.get(entry["tombstone"], 0), int(entry.get("log_offset", 0)))
            self._until, self._stamp = until, stamp
        return self

    @property
    def hashes(self) -> frozenset[str]:
        """Every tombstone, as of the last `current()` (what changes when someone is erased)."""
        return frozenset(self._until)

    def __bool__(self) -> bool:
        return bool(self._until)

    def hash(self, stored_id: object) -> str | None:
        return tombstone(self._key, str(stored_id)) if self._until and self._key is not None else None

    def __contains__(self, stored_id: object) -> bool:
        """Whether `stored_id` was ever erased, as of the last `current()`."""
        return self.hash(stored_id) in self._until

    def drops(self, stored_id: str, position: int) -> bool:
        """Whether an event of `stored_id` at byte `position` of the event log is one an erasure removed."""
        mark = self.hash(stored_id)
        return mark is not None and position < self._until.get(mark, -1)


@dataclass
class PendingErasure:
    tombstone: str
    ids: list[str]  # the stored id first, then the raw id when pseudonymization maps it
    texts: list[str] = field(default_factory=list)  # the user's own texts, to scrub from logs and previews
    requested_at: str = field(default_factory=now)
    log_offset: int = 0  # the event log's size when requested: the erasure covers the events before it


def read_journal(folder: Path) -> list[PendingErasure]:
    path = Path(folder) / JOURNAL_NAME
    if not path.exists():
        return []
    try:
        return [PendingErasure(**entry) for entry in json.loads(path.read_text())["pending"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ErasureError(f"{path} is not a journal of pending erasures ({exc}): was it edited by hand?") from exc


def write_journal(folder: Path, pending: list[PendingErasure]) -> None:
    """Durably record the erasures under way; an empty list removes the journal."""
    path = Path(folder) / JOURNAL_NAME
    if not pending:
        if path.exists():
            path.unlink()
            fsync_dir(path.parent)
        return
    body = {"pending": [entry.__dict__ for entry in pending]}
    write_durably(path, json.dumps(body, indent=1, sort_keys=True).encode())


def drop_erased(frame, erased: Tombstones):
    """`frame` (a DataFrame with `user_id`) without the rows of erased users: what the ingest assets load from a
    dataset's files, which still hold them (the files are the user's own, outside the home)."""
    if frame.empty or "user_id" not in frame.columns or not erased.current():
        return frame
    users = frame["user_id"].astype(str)
    gone = [u for u in users.unique() if u in erased]
    return frame[~users.isin(gone)].reset_index(drop=True) if gone else frame
