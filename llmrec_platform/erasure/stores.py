"""Each store a user lives in, and how they leave it (no Dagster). Every function is idempotent: run again
after a crash, it removes what is left and counts nothing twice that is gone.

Rows are deleted, and then the bytes are gone too: DuckDB and SQLite keep deleted values in free pages, so the
warehouse is copied into a fresh file (`COPY FROM DATABASE`) that atomically replaces it, and SQLite stores are
vacuumed. The event and impression logs are blanked in place: each of the user's lines is overwritten with as
many spaces, so every byte offset (the events sensor's cursor, a bundle's `event_offset`, a server's position)
stays valid, and readers skip blank lines. The audit log keeps its records, with the id overwritten in place.

A user is found by structure (a `user_id` column, a ranker's user positions), never by digits alone: "42" is
also an item id. Byte searches (which files to look into, the final check) use only ids of `DISTINCTIVE_CHARS`
or more.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pickle
import re
import shutil
import sqlite3
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from llmrec_platform.data.privacy import USER_PARTS
from llmrec_platform.erasure.ledger import write_durably
from llmrec_platform.erasure.scrub import scrub
from llmrec_platform.live.events import LOG_NAME, fsync_dir
from llmrec_platform.live.online import IMPRESSIONS_NAME

ERASED = "[erased]"
# A byte search can tell a needle of this many characters from other data; "42" (an ML-100K user id) is also an
# item id, a rating count and part of a timestamp, so short ids are removed by structure only (columns, keys).
DISTINCTIVE_CHARS = 8


def variants(needle: str) -> list[bytes]:
    """How a string can sit in a file: UTF-8, and UTF-32 / UTF-16 (numpy string arrays, some formats)."""
    return [needle.encode(encoding) for encoding in ("utf-8", "utf-32-le", "utf-16-le")]


def holds(data: bytes, needles: Iterable[str]) -> bool:
    return any(v in data for n in needles for v in variants(n))


def distinctive(needles: Iterable[str]) -> list[str]:
    return [n for n in needles if len(n) >= DISTINCTIVE_CHARS]


# --- the warehouse ---------------------------------------------------------------------------------------------

def user_texts(path: Path, ids: list[str]) -> list[str]:
    """The user's own texts in the warehouse (profile, reviews), to scrub wherever a preview copied them; a
    text another user has too ("Likes red things") names no one and stays."""
    if not path.exists():
        return []
    with duckdb.connect(str(path), read_only=True) as conn:
        texts = set()
        for table, column in (("user_texts", "text"), ("users", "text")):
            if _has_columns(conn, table, ("user_id", column)):
                texts |= {t for (t,) in conn.execute(
                    f"SELECT {column} FROM {table} WHERE list_contains(?, user_id) AND {column} <> '' AND {column} NOT IN "
                    f"(SELECT {column} FROM {table} WHERE NOT list_contains(?, user_id) AND {column} IS NOT NULL)",
                    [ids, ids]).fetchall()}
    return sorted(texts)


def _has_columns(conn, table: str, columns: tuple[str, ...]) -> bool:
    found = {c for (c,) in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                        [table]).fetchall()}
    return set(columns) <= found


def erase_warehouse(path: Path, ids: list[str]) -> int:
    """Delete the users' rows from every table with a `user_id` column, their quarantined raw rows, their text
    embeddings in `embedding_cache`, then rewrite the file so no free block keeps them. Returns rows deleted."""
    if not path.exists():
        return 0
    deleted = 0
    with duckdb.connect(str(path)) as conn:
        tables = [t for (t,) in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'user_id' AND table_schema = 'main' "
            "ORDER BY table_name").fetchall()]
        conn.execute("BEGIN")
        if "user_texts" in tables and _has_columns(conn, "embedding_cache", ("text_hash",)):
            # Their text's embedding, unless another user has the very same text.
            deleted += conn.execute(
                "DELETE FROM embedding_cache WHERE text_hash IN (SELECT text_hash FROM user_texts WHERE "
                "list_contains(?, user_id)) AND text_hash NOT IN (SELECT text_hash FROM user_texts WHERE NOT "
                "list_contains(?, user_id))", [ids, ids]).fetchone()[0]
        for table in tables:
            deleted += conn.execute(f'DELETE FROM "{table}" WHERE list_contains(?, user_id)', [ids]).fetchone()[0]
        if _has_columns(conn, "quarantine", ("raw", "part")):
            # Bad rows of the parts that carry user ids, kept as raw text (withheld under pseudonymization).
            # RE2 has no look-behind; a short id only as the row's first field (where the user column sits).
            alternatives = "|".join(re.escape(i) for i in ids)
            pattern = rf"(^|[^\w.-])({alternatives})([^\w.-]|$)" if distinctive(ids) else rf"^({alternatives})([^\w.-]|$)"
            deleted += conn.execute("DELETE FROM quarantine WHERE list_contains(?, part) AND regexp_matches(raw, ?)",
                                    [list(USER_PARTS), pattern]).fetchone()[0]
        conn.execute("COMMIT")
    if deleted:
        rewrite_duckdb(path)
    return deleted


def rewrite_duckdb(path: Path) -> None:
    """Copy the database into a fresh file and atomically put it in place: deleted values leave with the old file."""
    fresh = path.with_name(f".{path.name}.rewrite")
    for stale in (fresh, fresh.with_name(fresh.name + ".wal")):
        stale.unlink(missing_ok=True)
    with duckdb.connect() as conn:
        conn.execute("ATTACH ? AS source (READ_ONLY)", [str(path)])
        conn.execute("ATTACH ? AS fresh", [str(fresh)])
        conn.execute("COPY FROM DATABASE source TO fresh")
        conn.execute("DETACH fresh")
        conn.execute("DETACH source")
    with open(fresh, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(fresh, path)
    fsync_dir(path.parent)


# --- the event and impression logs ---------------------------------------------------------------------------

def blank_log_lines(path: Path, ids: list[str], until: int | None = None) -> int:
    """Overwrite every line of `path` (before byte `until`) that names one of `ids` as its user with spaces (same
    length), under the log's flock, and fsync. Returns how many lines were blanked."""
    keys = [f'"user_id":{json.dumps(i)}'.encode() for i in ids]

    def blank(line: bytes) -> bytes | None:
        if (line.endswith(b"\n") and any(k in line for k in keys)) or _names_user(line, ids):
            return b" " * (len(line) - 1)
        return None

    return _rewrite_lines_in_place(path, blank, until)


def redact_log_ids(path: Path, ids: list[str]) -> int:
    """Overwrite each of `ids` standing as a JSON string in `path` with as many `*`, in place, under the log's flock
    (the audit log: the record of who did what stays, without whom). Returns how many lines changed."""
    quoted = [json.dumps(i).encode() for i in ids]

    def redact(line: bytes) -> bytes | None:
        if not (line.endswith(b"\n") and any(q in line for q in quoted)):
            return None
        for q in quoted:
            line = line.replace(q, b'"' + b"*" * (len(q) - 2) + b'"')
        return line

    return _rewrite_lines_in_place(path, redact, None)


def _rewrite_lines_in_place(path: Path, rewrite: Callable[[bytes], bytes | None], until: int | None) -> int:
    """Apply `rewrite` (a same-length replacement, or None to keep the line) to each line of `path` before byte
    `until`, in place under the writers' flock (EventLog.append, AuditLog.append), so every offset stays valid;
    fsync when anything changed. Returns how many lines changed."""
    if not path.exists():
        return 0
    changed = 0
    with open(path, "r+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # no append lands meanwhile
        try:
            position = 0
            for line in iter(handle.readline, b""):
                if until is not None and position >= until:
                    break  # events after the request are new: the erasure covers what was there
                replacement = rewrite(line)
                if replacement is not None:
                    os.pwrite(handle.fileno(), replacement, position)
                    changed += 1
                position += len(line)
            if changed:
                os.fsync(handle.fileno())
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return changed


def _names_user(line: bytes, ids: list[str]) -> bool:
    """A complete line that is an event or impression of one of `ids`, however its JSON is spaced."""
    if not line.endswith(b"\n") or not line.strip():
        return False
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and str(record.get("user_id")) in ids


def erase_event_logs(folder: Path, ids: list[str], until: int | None = None) -> int:
    """Blank the users' events before byte `until` of the event log, and all their impressions so far."""
    return blank_log_lines(Path(folder) / LOG_NAME, ids, until) + blank_log_lines(Path(folder) / IMPRESSIONS_NAME, ids)


# --- pickles: artifacts, the fit cache --------------------------------------------------------------------------

def scrub_pickle(path: Path, ids: list[str], needles: list[str],
                 before_write: Callable[[list[str]], None] | None = None) -> tuple[str, list[str]]:
    """Remove the users from a pickled object and write it back atomically; a file that still holds a needle
    afterwards (or cannot be read) is deleted. `before_write` hears which rankers held a user before the file
    changes (so a refit is recorded even if the process dies right after). Returns (what happened:
    untouched|scrubbed|deleted, rankers that held a user)."""
    data = path.read_bytes()
    if not holds(data, needles):
        return "untouched", []
    try:
        obj = pickle.loads(data)
    except Exception:  # noqa: BLE001 - any unreadable pickle that holds the user goes
        path.unlink()
        return "deleted", []
    cleaned, result = scrub(obj, ids)
    if not result.removed and not holds(data, distinctive(needles)):
        return "untouched", []  # a short id's digits only, not the user
    if before_write is not None and result.rankers:
        before_write(result.rankers)
    payload = pickle.dumps(cleaned, protocol=pickle.HIGHEST_PROTOCOL)
    if holds(payload, distinctive(needles)):
        path.unlink()
        return "deleted", result.rankers
    write_durably(path, payload)
    return "scrubbed", result.rankers


def erase_pickles(folder: Path, ids: list[str], needles: list[str], drop: bool = False,
                  before_write: Callable[[list[str]], None] | None = None) -> tuple[int, list[str]]:
    """Scrub (or with `drop`, delete: a cache refits) every pickle under `folder` that holds a user.
    Returns (files changed, rankers that held a user)."""
    changed, rankers = 0, []
    if not Path(folder).exists():
        return 0, []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink()):
        with path.open("rb") as handle:
            if handle.read(1) != b"\x80":  # not a pickle (a fine-tuned model's files, a note)
                continue
        if drop or path.suffix == ".tmp":  # a cache entry (refitted next run), or a write a crash left behind
            if holds(path.read_bytes(), needles):
                path.unlink()
                changed += 1
            continue
        outcome, held = scrub_pickle(path, ids, needles, before_write)
        changed += outcome != "untouched"
        rankers += held
    return changed, rankers


# --- files of other formats: reports, landing, MLflow artifacts, Dagster's compute logs ---------------------------

@dataclass(frozen=True)
class Finder:
    """How a user is found in text: their ids as JSON strings under a user-named key (`"user_ids": ["42"]`, any
    id), and anywhere in free text their distinctive ids and their own texts (never a short id's digits)."""

    ids: frozenset[str]
    found: tuple[str, ...]  # distinctive ids and the user's texts, longest first

    @classmethod
    def of(cls, ids: list[str], needles: list[str], texts: list[str]) -> Finder:
        return cls(frozenset(ids), tuple(sorted({*distinctive(needles), *(t for t in texts if t)}, key=len, reverse=True)))

    def probes(self) -> list[bytes]:
        """Bytes one of which a value holds if it may name the user (a cheap filter before parsing)."""
        return [json.dumps(i).encode() for i in self.ids] + [f.encode() for f in self.found]

    def text(self, value: str) -> str:
        for needle in self.found:
            value = value.replace(needle, ERASED)
        return value

    def json_value(self, value, users: bool = False):
        """A parsed JSON value with the user replaced inside strings (numbers untouched)."""
        if isinstance(value, str):
            return ERASED if users and value in self.ids else self.text(value)
        if isinstance(value, list):
            return [self.json_value(v, users) for v in value]
        if isinstance(value, dict):
            return {self.text(k): self.json_value(v, users or "user" in k.lower()) for k, v in value.items()}
        return value

    def string(self, value: str) -> str:
        """JSON stays valid JSON (strings scrubbed inside); anything else is scrubbed as free text. Unchanged: `value`."""
        if value.lstrip()[:1] in ("{", "["):
            with contextlib.suppress(json.JSONDecodeError, RecursionError):
                parsed = json.loads(value)
                cleaned = self.json_value(parsed)
                return value if cleaned == parsed else json.dumps(cleaned)
        return self.text(value)


def scrub_file(path: Path, ids: list[str], needles: list[str], texts: list[str]) -> bool:
    """Remove the users from one file of a known format; returns whether it changed. Parquet and CSV with a
    `user_id` column lose the users' rows; JSON documents have them replaced inside their strings; other text
    files lose the lines that name them (a distinctive id or their own text); SQLite databases are scrubbed and
    vacuumed; a binary file that names them is deleted."""
    data = path.read_bytes()
    if data.startswith(b"SQLite format 3"):
        return scrub_sqlite(path, Finder.of(ids, needles, texts))
    if data[:1] == b"\x80":
        return scrub_pickle(path, ids, needles + texts)[0] != "untouched"
    if not holds(data, needles + texts):
        return False
    finder = Finder.of(ids, needles, texts)
    if path.suffix in (".parquet", ".csv") and _drop_user_rows(path, ids):
        # A landed ratings file: by its user_id column, not by any text that happens to match a numeric id.
        data = path.read_bytes()
        if not holds(data, distinctive(needles) + texts):
            return True
    if b"\x00" not in data:
        text = data.decode("utf-8", errors="replace")
        if path.suffix == ".json":
            cleaned = finder.string(text)
        else:
            lines = text.splitlines(keepends=True)
            cleaned = "".join(line for line in lines if finder.text(line) == line)
        if cleaned == text:
            return False  # a short id's digits inside other data only (a model file, a number in a report)
        write_durably(path, cleaned.encode())
        return True
    if not holds(data, distinctive(needles) + texts):
        return False  # only a short id's digits, which a binary file (a plot) holds by chance
    path.unlink()  # a binary file we cannot edit that names the user: the backstop
    return True


def _drop_user_rows(path: Path, ids: list[str]) -> bool:
    """Rewrite a Parquet or CSV file without the rows whose `user_id` is one of `ids`; False when it has no such
    column (or is not a table)."""
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError):
        return False
    if "user_id" not in frame.columns:
        return False
    kept = frame[~frame["user_id"].astype(str).isin(ids)]
    staging = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".parquet":
        kept.to_parquet(staging, index=False)
    else:
        kept.to_csv(staging, index=False)
    os.replace(staging, path)
    return True


def scrub_sqlite(path: Path, finder: Finder) -> bool:
    """Scrub every text and (zlib-compressed) blob value that names a user, then VACUUM so no free page keeps
    the old values, and truncate the write-ahead log. Returns whether anything changed."""
    probes = finder.probes()
    changed = 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                                             "'sqlite_%'")]
        for table in tables:
            rows = conn.execute(f'SELECT rowid, * FROM "{table}"')
            columns = [d[0] for d in rows.description][1:]
            updates = []
            while batch := rows.fetchmany(1000):
                for rowid, *values in batch:
                    new = {c: v2 for c, v, v2 in ((c, v, _scrub_sqlite_value(v, probes, finder))
                                                  for c, v in zip(columns, values, strict=True)) if v2 != v}
                    if new:
                        updates.append((rowid, new))
            for rowid, new in updates:
                assignments = ", ".join(f'"{c}" = ?' for c in new)
                conn.execute(f'UPDATE "{table}" SET {assignments} WHERE rowid = ?', [*new.values(), rowid])
            changed += len(updates)
        conn.commit()
        if changed:
            conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return bool(changed)


def _scrub_sqlite_value(value, probes: list[bytes], finder: Finder):
    if isinstance(value, str):
        return finder.string(value) if any(p in value.encode() for p in probes) else value
    if isinstance(value, bytes):
        try:
            raw = zlib.decompress(value)
        except zlib.error:
            raw = None
        if any(p in (raw if raw is not None else value) for p in probes):
            text = (raw if raw is not None else value).decode("utf-8", errors="replace")
            cleaned = finder.string(text)
            if cleaned != text:
                return zlib.compress(cleaned.encode()) if raw is not None else cleaned.encode()
    return value


def erase_files(folder: Path, ids: list[str], needles: list[str], texts: list[str]) -> int:
    """`scrub_file` on `folder` (a file) or every file under it (SQLite sidecars -wal/-shm are the database's own)."""
    folder = Path(folder)
    if not folder.exists() or folder.is_symlink():
        return 0
    changed = 0
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files:
        if path.name.endswith(("-wal", "-shm", "-journal")) or path.suffix == ".lock":
            continue
        changed += scrub_file(path, ids, needles, texts)
    return changed


# --- serving bundles --------------------------------------------------------------------------------------------

def erase_bundles(root: Path, ids: list[str], needles: list[str],
                  before_write: Callable[[list[str]], None] | None = None) -> tuple[int, list[str]]:
    """Republish the current bundle without the users (histories, and the rankers blanked as `scrub` does),
    then delete every other bundle folder that still holds them. Returns (bundles changed, rankers that held
    a user)."""
    from llmrec_platform.serving.bundle import current_bundle, current_version, load_bundle, publish_bundle

    root = Path(root)
    if not root.exists():
        return 0, []
    for staging in root.glob(".tmp-*"):  # a publish that crashed half-way
        shutil.rmtree(staging)
    changed, rankers = 0, []
    if current_version(root) is not None and _bundle_holds(current_bundle(root), ids, needles):
        bundle = load_bundle(current_bundle(root))
        blanked = {}
        for name in ("champion", "collab", "challenger"):
            ranker = getattr(bundle, name)
            if ranker is not None:
                blanked[name], result = scrub(ranker, ids)
                rankers += result.rankers
        if before_write is not None and rankers:
            before_write(rankers)
        histories = bundle.histories[~bundle.histories["user_id"].astype(str).isin(ids)]
        vectors = pd.DataFrame({"item_id": bundle.items["item_id"], "embedding": list(bundle.item_vectors)})
        computed = {"version", "created_at", "champion", "challenger", "collab", "items", "users", "interactions",
                    "embedded_items"}
        manifest = {k: v for k, v in bundle.manifest.items() if k not in computed}
        manifest.update(republished_from=bundle.version, erasures=int(bundle.manifest.get("erasures", 0)) + 1)
        # A noisy popularity column already protects each person: keep it (a new release would spend the budget
        # again). Exact counts are recounted without the user (the blanked champion's).
        noisy = manifest.get("popularity_privacy", {}).get("dp_epsilon", "inf") != "inf"
        publish_bundle(root, blanked["champion"], bundle.items, vectors, histories, manifest,
                       collab=blanked.get("collab"), challenger=blanked.get("challenger"),
                       popularity=bundle.items["popularity"].to_numpy() if noisy else None)
        changed += 1
    serving = current_bundle(root) if current_version(root) is not None else None
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        if folder != serving and _bundle_holds(folder, ids, needles):
            shutil.rmtree(folder)
            changed += 1
    return changed, rankers


def _bundle_holds(folder: Path, ids: list[str], needles: list[str]) -> bool:
    """Whether a bundle still names a user: its histories, its rankers' users, or (distinctive ids) any bytes."""
    histories = folder / "histories.parquet"
    if histories.exists() and pd.read_parquet(histories, columns=["user_id"])["user_id"].astype(str).isin(ids).any():
        return True
    for ranker_file in folder.glob("*.pkl"):
        with open(ranker_file, "rb") as handle:
            users = getattr(pickle.load(handle), "user_ids_", None)
        if users is not None and set(ids) & set(np.asarray(users).astype(str)):
            return True
    return any(holds(f.read_bytes(), distinctive(needles)) for f in folder.iterdir()
               if f.is_file() and f.suffix != ".parquet")


def leftovers(home: Path, needles: list[str], skip: Iterable[Path]) -> list[str]:
    """Files under `home` whose bytes (or, for DuckDB, values) still hold a needle: the erasure's own check (of the
    needles long enough for a byte search to mean something, `DISTINCTIVE_CHARS`)."""
    needles = distinctive(needles)
    if not needles:
        return []
    skipped = [Path(s) for s in skip]
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file() and not p.is_symlink()):
        if any(path.is_relative_to(s) for s in skipped):
            continue
        if holds(path.read_bytes(), needles) or (path.suffix == ".duckdb" and _duckdb_holds(path, needles)):
            found.append(str(path.relative_to(home)))
    return found


def _duckdb_holds(path: Path, needles: list[str]) -> bool:
    with duckdb.connect(str(path), read_only=True) as conn:
        for (table,) in conn.execute("SELECT table_name FROM information_schema.tables").fetchall():
            text = conn.execute(f'SELECT * FROM "{table}"').df().to_csv()
            if any(n in text for n in needles):
                return True
    return False

