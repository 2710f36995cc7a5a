"""Ratings files dropped into LLMREC_HOME/landing/ (no Dagster).

A landed file is CSV (with a header) or Parquet with the columns user_id, item_id, rating, timestamp
(epoch seconds). Ingesting it:

1. reads it; a file that cannot be read or lacks a column is *rejected*: it moves to
   `landing/rejected/` next to a `<name>.reason.txt` that says why, and nothing is written;
2. validates every row (`validate_ratings`, plus: timestamp inside the partitioned range, no repeated
   (user_id, item_id, timestamp) key within the file); bad rows go to the `quarantine` table;
3. writes the good rows, tagged with the warehouse's dataset, in one transaction, to `landed_ratings`
   (the ledger: rows per source file) and to `ratings` — first deleting what an earlier ingestion of the
   same file name wrote and any row with the same (user_id, item_id, timestamp), so a re-run never
   duplicates;
4. moves the file to `landing/processed/`.

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

from llmrec_platform.data.datasets import (
    QUARANTINE_COLUMNS,
    RATING_KEY,
    RATINGS_COLUMNS,
    DatasetError,
    quarantine_rows,
    validate_ratings,
)
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
    destination: Path
    rows: int = 0
    loaded: int = 0
    quarantined: int = 0
    reason: str | None = None
    timestamps: list[int] = field(default_factory=list)  # of the loaded rows (to name the touched partitions)


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


def read_ratings_file(path: Path) -> tuple[pd.DataFrame, int]:
    """The raw rows as strings and the row number of the first data row (CSV: its line in the file)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
            first_row = 2
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
            first_row = 1
        else:
            raise LandingRejected(f"unsupported file type {suffix!r}: use .csv or .parquet")
    except LandingRejected:
        raise
    except pd.errors.EmptyDataError as exc:
        raise LandingRejected("the file is empty (expected a header user_id,item_id,rating,timestamp)") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as exc:
        raise LandingRejected(f"cannot read the file as {suffix[1:]}: {exc}") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in RATINGS_COLUMNS if c not in frame.columns]
    if missing:
        raise LandingRejected(f"missing column(s) {missing}; expected {RATINGS_COLUMNS}, found {list(frame.columns)}")
    return frame[RATINGS_COLUMNS], first_row


def validate_landed(
    raw: pd.DataFrame, source_file: str, valid_range: tuple[int, int] | None = None, first_row_number: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Good rows and quarantined rows of one landed file.

    On top of `validate_ratings`: a timestamp outside `valid_range` ([start, end) epoch seconds: the
    partitioned months) and a repeated (user_id, item_id, timestamp) key are quarantined too.
    """
    try:
        good, quarantine = validate_ratings(raw, source_file=source_file, first_row_number=first_row_number)
    except DatasetError as exc:
        raise LandingRejected(str(exc)) from exc
    bad_numbers = set(quarantine["row_number"].astype(int)) if len(quarantine) else set()
    numbers = pd.Series([n for n in range(first_row_number, first_row_number + len(raw)) if n not in bad_numbers])
    rejects = [quarantine] if len(quarantine) else []
    keep = pd.Series(True, index=good.index)
    if valid_range is not None:
        start, end = valid_range
        outside = ~good["timestamp"].between(start, end - 1)
        if outside.any():
            rejects.append(quarantine_rows(good[outside], numbers[outside], source_file, "timestamp",
                                        f"timestamp outside the partitioned range [{_iso(start)}, {_iso(end)})"))
        keep &= ~outside
    repeated = good.duplicated(RATING_KEY, keep="first") & keep
    if repeated.any():
        rejects.append(quarantine_rows(good[repeated], numbers[repeated], source_file, "timestamp",
                                    "repeated (user_id, item_id, timestamp) in the file"))
    keep &= ~repeated
    quarantine = pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    return good[keep].reset_index(drop=True), quarantine.sort_values("row_number", kind="stable").reset_index(drop=True)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


_CREATE = {
    "ratings": "CREATE TABLE IF NOT EXISTS ratings (user_id VARCHAR, item_id VARCHAR, rating DOUBLE, timestamp BIGINT, "
               "dataset VARCHAR)",
    LANDED_TABLE: f"CREATE TABLE IF NOT EXISTS {LANDED_TABLE} (source_file VARCHAR, user_id VARCHAR, item_id VARCHAR, "
                  "rating DOUBLE, timestamp BIGINT, dataset VARCHAR, landed_at TIMESTAMP)",
    "quarantine": "CREATE TABLE IF NOT EXISTS quarantine (source_file VARCHAR, row_number BIGINT, field VARCHAR, "
                  "reason VARCHAR, raw VARCHAR, dataset VARCHAR)",
}


def load_landed(store: Warehouse, source_file: str, good: pd.DataFrame, quarantine: pd.DataFrame, dataset: str) -> None:
    """Replace everything an earlier ingestion of `source_file` wrote, in one transaction; the rows join
    the warehouse's current `dataset`."""
    landed = good[RATINGS_COLUMNS].assign(source_file=source_file, dataset=dataset,
                                          landed_at=datetime.now(UTC).replace(tzinfo=None))
    rejected = quarantine[QUARANTINE_COLUMNS].assign(dataset=QUARANTINE_DATASET)
    with store.connect() as conn:
        conn.register("incoming", landed)
        conn.register("incoming_quarantine", rejected)
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
        conn.execute("DELETE FROM quarantine WHERE source_file = ? AND dataset = ?", [source_file, QUARANTINE_DATASET])
        conn.execute("INSERT INTO quarantine BY NAME SELECT * FROM incoming_quarantine")
        conn.execute("COMMIT")


def landed_in_window(store: Warehouse, start: int, end: int, dataset: str) -> pd.DataFrame:
    """Ratings landed for `dataset` with start <= timestamp < end, oldest landing first."""
    columns = RATINGS_COLUMNS + ["dataset"]
    if not store.has_table(LANDED_TABLE):
        return pd.DataFrame(columns=columns)
    return store.query(f"SELECT {', '.join(columns)} FROM {LANDED_TABLE} WHERE timestamp >= ? AND timestamp < ? "
                       "AND dataset = ? ORDER BY landed_at, source_file", [start, end, dataset])


def with_landed(ratings: pd.DataFrame, landed: pd.DataFrame) -> pd.DataFrame:
    """Dataset ratings plus landed ones (same columns); a landed row replaces a row with the same key."""
    if landed.empty:
        return ratings
    landed = landed[list(ratings.columns)].astype(ratings.dtypes.to_dict())
    combined = pd.concat([ratings, landed], ignore_index=True)
    return combined.drop_duplicates(RATING_KEY, keep="last").reset_index(drop=True)


def move(path: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    destination = folder / path.name
    os.replace(path, destination)
    return destination


def ingest_landed_file(path: Path, store: Warehouse, dataset: str, valid_range: tuple[int, int] | None = None) -> LandingResult:
    """Read, validate, load and file away one landed ratings file (see the module docstring)."""
    path = Path(path)
    landing_dir = path.parent
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the landing folder (already ingested? "
                                f"look in {landing_dir / PROCESSED} and {landing_dir / REJECTED})")
    try:
        raw, first_row = read_ratings_file(path)
        good, quarantine = validate_landed(raw, path.name, valid_range, first_row)
    except LandingRejected as exc:
        destination = move(path, landing_dir / REJECTED)
        reason_file = destination.with_name(destination.name + ".reason.txt")
        reason_file.write_text(f"{path.name} was rejected: {exc}\nFix the file and drop it into {landing_dir} again.\n")
        return LandingResult(path.name, "rejected", destination, reason=str(exc))
    load_landed(store, path.name, good, quarantine, dataset)
    destination = move(path, landing_dir / PROCESSED)
    return LandingResult(path.name, "processed", destination, rows=len(raw), loaded=len(good),
                         quarantined=len(quarantine), timestamps=good["timestamp"].astype(int).tolist())
