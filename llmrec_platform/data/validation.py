"""Row checks shared by every loader (no Dagster): a bad row goes to the quarantine with file, row, field and
reason, and the other rows load (`data.datasets`, `data.config`, and `data.landing` for landed files)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from llmrec_platform.data.readers import ROW_FILE, ROW_NUMBER, concat_quarantine, quarantine_records
from llmrec_platform.data.specs import (
    ITEMS_COLUMNS,
    RATING_KEY,
    RATING_RANGE,
    RATINGS_COLUMNS,
    DatasetError,
    empty_dataset_quarantine,
)
from llmrec_platform.data.text import normalize_text


def tag_parts(**parts) -> pd.DataFrame:
    """One quarantine frame from lists of frames per part."""
    frames = [concat_quarantine(frames).assign(part=part) for part, frames in parts.items()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_dataset_quarantine()
    return pd.concat(frames, ignore_index=True).sort_values(["part", "source_file", "row_number"], kind="stable") \
        .reset_index(drop=True)


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Epoch seconds (Int64, NA where unparseable) from epoch numbers, ISO 8601 strings or datetimes."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _epoch_seconds(pd.to_datetime(values, utc=True))
    text = values.astype("string").str.strip()
    number = pd.to_numeric(text, errors="coerce")
    result = pd.Series(pd.NA, index=values.index, dtype="Int64")
    whole = number.notna() & np.isfinite(number.fillna(0)) & (number.fillna(0) == np.floor(number.fillna(0)))
    result[whole] = number[whole].astype("int64")
    rest = number.isna() & text.notna() & (text != "")
    if rest.any():
        stamps = pd.to_datetime(text[rest], utc=True, errors="coerce", format="ISO8601")
        ok = stamps.notna()
        result.loc[stamps.index[ok]] = _epoch_seconds(stamps[ok])
    return result


def _epoch_seconds(stamps: pd.Series) -> pd.Series:
    """Whole epoch seconds of tz-aware datetimes, whatever their resolution (NA stays NA)."""
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype("Int64")


def validate_ratings(raw: pd.DataFrame, source_file: str, first_row_number: int = 1,
                     rating_range: tuple[float, float] = RATING_RANGE) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw rows into valid canonical ratings and quarantined rows (file, row, field, reason).

    Rows carry their file and row in `_file` / `_row` when a reader made them (kept on the good rows for
    later checks); otherwise they are numbered from `first_row_number` in `source_file`."""
    missing = [c for c in RATINGS_COLUMNS if c not in raw.columns]
    if missing:
        raise DatasetError(f"{source_file}: missing column(s) {missing}; expected {RATINGS_COLUMNS}")
    raw = raw.reset_index(drop=True)
    files = raw[ROW_FILE] if ROW_FILE in raw.columns else pd.Series(source_file, index=raw.index)
    numbers = raw[ROW_NUMBER] if ROW_NUMBER in raw.columns else pd.Series(raw.index.to_numpy() + first_row_number)
    text = {c: raw[c].astype("string").str.strip() for c in ("user_id", "item_id")}
    low, high = rating_range
    rating = raw["rating"]
    if not pd.api.types.is_numeric_dtype(rating):
        rating = rating.astype("string").str.strip()
    rating = pd.to_numeric(rating, errors="coerce").astype("float64")
    timestamp = parse_timestamps(raw["timestamp"])
    checks = [
        ("user_id", text["user_id"].isna() | (text["user_id"] == ""), "empty user_id"),
        ("item_id", text["item_id"].isna() | (text["item_id"] == ""), "empty item_id"),
        ("rating", rating.isna(), "rating is not a number"),
        ("rating", rating.notna() & ~rating.between(low, high), f"rating outside [{low:g}, {high:g}]"),
        ("timestamp", timestamp.isna(), "timestamp is not epoch seconds or ISO 8601"),
        ("timestamp", timestamp.notna() & (timestamp < 0), "timestamp is negative"),
    ]
    bad = pd.Series(False, index=raw.index)
    rejects = []
    for field_name, mask, reason in checks:
        mask = mask.fillna(True).astype(bool) & ~bad  # first failing field wins
        if mask.any():
            rejects.append(quarantine_records(files[mask].to_numpy(), numbers[mask].to_numpy(), field_name, reason,
                                              _raw_text(raw[mask])))
            bad |= mask
    good = pd.DataFrame({
        "user_id": text["user_id"][~bad].astype(str),
        "item_id": text["item_id"][~bad].astype(str),
        "rating": rating[~bad].astype("float64"),
        "timestamp": timestamp[~bad].astype("int64"),
        ROW_FILE: files[~bad].astype(str),
        ROW_NUMBER: numbers[~bad].astype("int64"),
    }).reset_index(drop=True)
    if ROW_FILE not in raw.columns:
        good = good[RATINGS_COLUMNS]
    return good, concat_quarantine(rejects)


def check_ratings(ratings: pd.DataFrame, items: pd.DataFrame | None, valid_range: tuple[int, int] | None,
                  items_source: str = "the item file") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows that passed `validate_ratings` (with `_file` / `_row`) against the rest of the dataset: a
    timestamp outside `valid_range`, a repeated (user_id, item_id, timestamp) (the first occurrence
    stays), an item that is not in `items`. Returns the canonical ratings and the quarantined rows."""
    rejects = []
    keep = pd.Series(True, index=ratings.index)

    def reject(mask, field_name, reason):
        nonlocal keep
        mask = mask & keep
        if mask.any():
            rows = ratings[mask]
            reasons = reason(rows) if callable(reason) else reason
            rejects.append(quarantine_records(rows[ROW_FILE].to_numpy(), rows[ROW_NUMBER].to_numpy(), field_name,
                                              reasons, _raw_text(rows)))
            keep &= ~mask

    if valid_range is not None:
        start, end = valid_range
        reject(~ratings["timestamp"].between(start, end - 1), "timestamp",
               f"timestamp outside the partitioned range [{iso_day(start)}, {iso_day(end)})")
    repeated = ratings[keep].duplicated(RATING_KEY, keep="first").reindex(ratings.index, fill_value=False)
    if repeated.any():
        involved = ratings[keep & ratings.duplicated(RATING_KEY, keep=False)]
        first_row = involved.groupby(RATING_KEY, sort=False)[ROW_NUMBER].transform("first")
        reject(repeated, "timestamp", lambda rows: [f"repeated (user_id, item_id, timestamp): first at row {n}"
                                                    for n in first_row.loc[rows.index]])
    if items is not None:
        reject(~ratings["item_id"].isin(items["item_id"]), "item_id", f"item not in {items_source}")
    good = ratings[keep][RATINGS_COLUMNS].reset_index(drop=True)
    return good, concat_quarantine(rejects)


def iso_day(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _raw_text(rows: pd.DataFrame) -> np.ndarray:
    columns = [c for c in rows.columns if not c.startswith("_")]
    if not len(rows):
        return np.array([], dtype=object)
    values = rows[columns].map(lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v))
    return values.agg("\t".join, axis=1).to_numpy()


def checked_ids(frame: pd.DataFrame, id_column: str, what: str) -> tuple[pd.Series, pd.DataFrame]:
    """Keep-mask and quarantine for an empty or repeated id (the first occurrence stays)."""
    ids = frame[id_column].astype("string").str.strip()
    empty = ids.isna() | (ids == "")
    repeated = ids.duplicated(keep="first") & ~empty
    rejects = []
    for mask, reason in ((empty, f"empty {id_column}"), (repeated, f"repeated {id_column}: the {what} is already "
                                                                   "defined on an earlier row")):
        if mask.any():
            rows = frame[mask]
            rejects.append(quarantine_records(rows[ROW_FILE].to_numpy(), rows[ROW_NUMBER].to_numpy(), id_column,
                                              reason, _raw_text(rows)))
    return ~(empty | repeated), concat_quarantine(rejects)


def finish_items(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Canonical items (plus `text` when present) and the quarantined rows (empty or repeated id)."""
    keep, quarantine = checked_ids(frame, "item_id", "item")
    frame = frame[keep].reset_index(drop=True)
    frame["item_id"] = frame["item_id"].astype(str).str.strip()
    frame["title"] = frame["title"].map(normalize_text)
    frame["year"] = pd.to_numeric(frame["year"], errors="coerce").astype("Int64")
    frame["genres"] = frame["genres"].map(lambda g: [normalize_text(x) for x in g if str(x).strip()])
    columns = ITEMS_COLUMNS + (["text"] if "text" in frame.columns else [])
    return frame[columns], quarantine
