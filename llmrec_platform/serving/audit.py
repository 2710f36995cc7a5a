"""The append-only audit log of writes and erasures: who (a token's name, never the token), what (the
route), whom (the user id as stored: the pseudonym when pseudonymization is on) and when.

One JSON object per line in `<LLMREC_HOME>/audit/access.jsonl`, appended under an exclusive `flock` and
fsynced before the write is acknowledged. It is never edited, except by an erasure: `redact` replaces the
erased person's stored id by the erasure's keyed hash. No web framework here: the CLI can use it too.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from llmrec_platform.live.events import fsync_dir

AUDIT_NAME = "access.jsonl"


@dataclass(frozen=True)
class AuditRecord:
    who: str  # the token's name in the token file, LLMREC_API_TOKEN for that one, "anonymous" without tokens
    action: str  # method and route template, e.g. "POST /events"
    user_id: str | None  # as stored; None where the action names no user
    detail: dict = field(default_factory=dict)  # e.g. the event id; never a raw id under pseudonymization
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    def to_json(self) -> str:
        return json_line(asdict(self))


def json_line(record: dict) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


class AuditLog:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / AUDIT_NAME

    def append(self, records: Iterable[AuditRecord]) -> int:
        """Append records durably (fsync before returning); returns the file's size after them."""
        payload = "".join(r.to_json() + "\n" for r in records).encode()
        new = not self.path.exists()
        if new:  # not once per flush: each syscall of the committer thread is a GIL hand-off
            self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            with self.path.open("ab") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)  # several server workers append to one file
                try:
                    if not self._is_current(handle):  # `redact` replaced the file while we waited: open the new one
                        continue
                    handle.write(payload)
                    handle.flush()
                    os.fsync(handle.fileno())
                    end = handle.tell()
                    break
                finally:
                    fcntl.flock(handle, fcntl.LOCK_UN)
        if new:
            fsync_dir(self.folder)
        return end

    def redact(self, user_id: str, replacement: str) -> int:
        """Replace `user_id` (as stored) by `replacement` (e.g. the erasure's keyed hash) in every record, so the
        log keeps who did what and when without the person; returns how many records changed. The file is
        rewritten and atomically renamed under the append lock, so no concurrent record is lost."""
        if not self.path.exists():
            return 0
        with self.path.open("ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                records = self.read()
                changed = sum(r["user_id"] == user_id for r in records)
                if changed:
                    staging = self.path.with_suffix(".redacting")
                    with staging.open("wb") as out:
                        out.write("".join(json_line({**r, "user_id": replacement if r["user_id"] == user_id
                                                     else r["user_id"]}) + "\n" for r in records).encode())
                        out.flush()
                        os.fsync(out.fileno())
                    os.replace(staging, self.path)
                    fsync_dir(self.folder)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return changed

    def _is_current(self, handle) -> bool:
        try:
            return os.fstat(handle.fileno()).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
