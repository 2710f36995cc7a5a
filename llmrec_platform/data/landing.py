"""Ratings files dropped into LLMREC_HOME/landing/ (no Dagster).

A landed file is CSV (with a header; delimiter, quoting and encoding detected, a UTF-8 byte-order mark
stripped) or Parquet with the columns user_id, item_id, rating, timestamp (epoch seconds or ISO 8601).
Ingesting it:

1. reads it; a file that cannot be read at all, is empty or lacks a column is *rejected*: it moves to
   `landing/rejected/` next to a `<name>.reason.txt` that says why, and nothing is written;
2. validates every row: a row with the wrong number of fields or bytes invalid in the file's encoding
   (DuckDB's CSV reader with `store_rejects`), then `validate_ratings` and `check_ratings` (timestamp inside
   the partitioned range, no repeated (user_id, item_id, timestamp) key within the file, an item the
   warehouse's `items` catalogue knows, when it has one); bad rows go to the `quarantine` table, the
   others load — one malformed row never rejects the file. Only when the share of bad rows exceeds the
   error budget is the whole file rejected (the reason file lists every bad row);
3. writes the good rows, tagged with the warehouse's dataset, in one transaction, to `landed_ratings`
   (the ledger: rows per source file) and to `ratings` — first deleting what an earlier ingestion of the
   same file name wrote and any row with the same (user_id, item_id, timestamp), so a re-run never
   duplicates — and replaces the file's quarantine rows (a fixed file leaves none of its old ones);
4. moves the file to `landing/processed/`.

With pseudonymization on (a `privacy.Pseudonymizer`, the dataset's key), step 3 writes pseudonyms, never
the raw user ids: the good rows' ids are replaced by the same pseudonyms the dataset's own rows get (one
user, one history), the quarantine rows keep file, row, field and reason but their raw text is withheld,
and step 4 deletes the file instead of keeping a raw copy in `processed/`. A rejected file still moves to
`rejected/` as it came (it is to be fixed and dropped again); its reason file names rows, never values.

Writers should create the file under a temporary name (a leading dot, or `.tmp` / `.part`) and rename it
when complete: those names are ignored. The `raw_ratings` asset re-reads `landed_ratings` for its window,
so re-materializing a month keeps the landed rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from llmrec_platform.data import quarantine as quarantine_table
from llmrec_platform.data.duck import ORDER, register, session
from llmrec_platform.data.privacy import WITHHELD, Pseudonymizer
from llmrec_platform.data.readers import (
    QUARANTINE_COLUMNS,
    ROW_FILE,
    ROW_NUMBER,
    ReadError,
    concat_quarantine,
    read_delimited,
    read_parquet,
)
from llmrec_platform.data.specs import DEFAULT_ERROR_BUDGET, RATING_KEY, RATINGS_COLUMNS, DatasetError
from llmrec_platform.data.validation import check_ratings, validate_ratings
from llmrec_platform.storage.warehouse import Warehouse

SUFFIXES = (".csv", ".parquet")
PROCESSED = "processed"
REJECTED = "rejected"
LANDED_TABLE = "landed_ratings"
QUARANTINE_DATASET = "landing"


class LandingRejected(ValueError):
    """The whole file is unusable (unreadable, or wrong columns)."""


@dataclass(frozen=True)
class LandedFile:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def signature(self) -> str:
        """Changes when a file of the same name is dropped again with other content."""
        stat = self.path.stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"


@dataclass
class LandingResult:
    file: str
    status: str  # "processed" or "rejected"
    destination: Path | None  # None: deleted after loading (pseudonymization is on)
    rows: int = 0
    loaded: int = 0
    quarantined: int = 0
    reason: str | None = None
    timestamps: list[int] = field(default_factory=list)  # of the loaded rows (to name the touched partitions)

    @property
    def disposition(self) -> str:
        if self.destination is None:
            return "deleted (pseudonymization is on: no raw copy is kept; its rows are in the warehouse)"
        return f"moved to {self.destination}"


def pending_files(landing_dir: Path) -> list[LandedFile]:
    """Complete ratings files waiting in the landing folder (sub-folders and temporary names ignored)."""
    if not landing_dir.is_dir():
        return []
    files = []
    for path in sorted(landing_dir.iterdir()):
        name = path.name
        if not path.is_file() or name.startswith(".") or name.endswith((".tmp", ".part")):
            continue
        if path.suffix.lower() in SUFFIXES:
            files.append(LandedFile(path))
    return files


def read_ratings_file(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows (the ratings columns as read, plus `_file` = the file name and `_row` = the CSV line or the
    Parquet row) and the rows the reader itself rejected (wrong number of fields, invalid bytes)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            result = read_delimited(path)
        elif suffix == ".parquet":
            result = read_parquet(path)
        else:
            raise LandingRejected(f"unsupported file type {suffix!r}: use .csv or .parquet")
    except ReadError as exc:
        message = str(exc).replace(f"{path}: ", "")
        if "is empty" in message:
            message = "the file is empty (expected a header user_id,item_id,rating,timestamp)"
        raise LandingRejected(message) from exc
    frame = result.frame
    missing = [c for c in RATINGS_COLUMNS if c not in frame.columns]
    if missing:
        found = [c for c in frame.columns if not c.startswith("_")]
        raise LandingRejected(f"missing column(s) {missing}; expected {RATINGS_COLUMNS}, found {found}")
    frame = frame[RATINGS_COLUMNS + [ROW_NUMBER]].assign(**{ROW_FILE: path.name})
    return frame, result.quarantine.assign(source_file=path.name)


def validate_landed(
    raw: pd.DataFrame, source_file: str, valid_range: tuple[int, int] | None = None, first_row_number: int = 1,
    known_items: pd.Series | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Good rows and quarantined rows of one landed file.

    On top of `validate_ratings`: a timestamp outside `valid_range` ([start, end) epoch seconds: the
    partitioned months), a repeated (user_id, item_id, timestamp) key and, given `known_items`, an item
    outside the catalogue are quarantined too.
    """
    raw = raw.reset_index(drop=True)
    if ROW_NUMBER not in raw.columns:
        raw = raw.assign(**{ROW_NUMBER: range(first_row_number, first_row_number + len(raw))})
    raw = raw.assign(**{ROW_FILE: source_file})
    try:
        good, quarantine = validate_ratings(raw, source_file=source_file)
    except DatasetError as exc:
        raise LandingRejected(str(exc)) from exc
    items = None if known_items is None else pd.DataFrame({"item_id": known_items.astype(str)})
    good, checked = check_ratings(good, items, valid_range, items_source="the warehouse's items")
    rejected = concat_quarantine([quarantine, checked])
    return good.to_pandas(), rejected.sort_values("row_number", kind="stable").reset_index(drop=True)


_CREATE = {
    "ratings": "CREATE TABLE IF NOT EXISTS ratings (user_id VARCHAR, item_id VARCHAR, rating DOUBLE, timestamp BIGINT, "
               "dataset VARCHAR)",
    LANDED_TABLE: f"CREATE TABLE IF NOT EXISTS {LANDED_TABLE} (source_file VARCHAR, user_id VARCHAR, item_id VARCHAR, "
                  "rating DOUBLE, timestamp BIGINT, dataset VARCHAR, landed_at TIMESTAMP)",
}


def load_landed(store: Warehouse, source_file: str, good: pd.DataFrame, quarantine: pd.DataFrame, dataset: str) -> None:
    """Replace everything an earlier ingestion of `source_file` wrote, in one transaction; the rows join
    the warehouse's current `dataset`."""
    landed = good[RATINGS_COLUMNS].assign(source_file=source_file, dataset=dataset,
                                          landed_at=datetime.now(UTC).replace(tzinfo=None))
    rejected = quarantine_table.typed(quarantine[QUARANTINE_COLUMNS], QUARANTINE_DATASET, "ratings")
    with store.connect() as conn:
        conn.register("incoming", landed)
        conn.execute("BEGIN")
        for sql in _CREATE.values():
            conn.execute(sql)
        # What the previous version of this file put into `ratings`, then the keys this version brings.
        conn.execute(f"DELETE FROM ratings WHERE (user_id, item_id, timestamp) IN "
                     f"(SELECT (user_id, item_id, timestamp) FROM {LANDED_TABLE} WHERE source_file = ?)", [source_file])
        conn.execute("DELETE FROM ratings WHERE (user_id, item_id, timestamp) IN "
                     "(SELECT (user_id, item_id, timestamp) FROM incoming)")
        conn.execute(f"DELETE FROM {LANDED_TABLE} WHERE source_file = ?", [source_file])
        conn.execute(f"INSERT INTO {LANDED_TABLE} BY NAME SELECT * FROM incoming")
        conn.execute("INSERT INTO ratings BY NAME SELECT user_id, item_id, rating, timestamp, dataset FROM incoming")
        quarantine_table.replace_in(conn, rejected, "source_file = ? AND dataset = ?", [source_file, QUARANTINE_DATASET])
        conn.execute("COMMIT")


def landed_in_window(store: Warehouse, start: int, end: int, dataset: str) -> pd.DataFrame:
    """Ratings landed for `dataset` with start <= timestamp < end, oldest landing first."""
    columns = RATINGS_COLUMNS + ["dataset"]
    if not store.has_table(LANDED_TABLE):
        return pd.DataFrame(columns=columns)
    return store.query(f"SELECT {', '.join(columns)} FROM {LANDED_TABLE} WHERE timestamp >= ? AND timestamp < ? "
                       "AND dataset = ? ORDER BY landed_at, source_file", [start, end, dataset])


def with_landed(ratings: pa.Table, landed: pd.DataFrame) -> pa.Table:
    """Dataset ratings plus landed ones (same columns, after them); a landed row replaces a row with the same key
    (the last of a key stays, where it stands)."""
    if landed.empty:
        return ratings
    key = ", ".join(RATING_KEY)
    with session() as conn:
        register(conn, "ratings_in", ratings)
        register(conn, "landed_in", landed[ratings.column_names])
        combined = conn.sql(f"""
            SELECT {', '.join(ratings.column_names)} FROM (
                SELECT *, 0 AS _part FROM ratings_in UNION ALL BY NAME SELECT *, 1 AS _part FROM landed_in)
            QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY _part DESC, {ORDER} DESC) = 1
            ORDER BY _part, {ORDER}""").to_arrow_table()
    return combined.cast(ratings.schema)


def move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / path.name
    os.replace(path, destination)
    return destination


def known_items(store: Warehouse) -> pd.Series | None:
    """The warehouse's item ids, or None when it has no catalogue yet."""
    if not store.has_table("items"):
        return None
    return store.query("SELECT DISTINCT item_id FROM items")["item_id"]


def ingest_landed_file(path: Path, store: Warehouse, dataset: str, valid_range: tuple[int, int] | None = None,
                       error_budget: float = DEFAULT_ERROR_BUDGET,
                       pseudonymizer: Pseudonymizer | None = None) -> LandingResult:
    """Read, validate, load and file away one landed ratings file (see the module docstring); with a
    `pseudonymizer`, only pseudonyms reach the warehouse."""
    path = Path(path)
    landing_dir = path.parent
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the landing folder (already ingested? "
                                f"look in {landing_dir / PROCESSED} and {landing_dir / REJECTED})")
    rows = 0
    try:
        raw, read_rejects = read_ratings_file(path)
        good, quarantine = validate_landed(raw, path.name, valid_range, known_items=known_items(store))
        quarantine = concat_quarantine([read_rejects, quarantine]).sort_values("row_number", kind="stable")
        rows = len(raw) + len(read_rejects)
        share = quarantine["row_number"].nunique() / rows if rows else 0.0
        if share > error_budget:
            listing = "\n".join(f"  row {r.row_number}, {r.field}: {r.reason}" for r in quarantine.itertuples())
            raise LandingRejected(f"{len(quarantine)} of {rows} rows are bad ({share:.1%}), above the error budget of "
                                  f"{error_budget:.1%}; first: row {quarantine.iloc[0]['row_number']}, "
                                  f"{quarantine.iloc[0]['field']}: {quarantine.iloc[0]['reason']}\n{listing}")
    except LandingRejected as exc:
        destination = move(path, landing_dir / REJECTED)
        reason_file = destination.with_name(destination.name + ".reason.txt")
        reason_file.write_text(f"{path.name} was rejected: {exc}\nFix the file and drop it into {landing_dir} again.\n")
        return LandingResult(path.name, "rejected", destination, rows=rows, reason=str(exc).splitlines()[0])
    if pseudonymizer is not None:
        good = good.assign(user_id=pseudonymizer.series(good["user_id"]))
        quarantine = quarantine.assign(raw=WITHHELD)  # every landed row carries a user id
    load_landed(store, path.name, good, quarantine, dataset)
    if pseudonymizer is not None:
        path.unlink()
        destination = None
    else:
        destination = move(path, landing_dir / PROCESSED)
    return LandingResult(path.name, "processed", destination, rows=rows, loaded=len(good),
                         quarantined=len(quarantine), timestamps=good["timestamp"].astype(int).tolist())
