"""The canonical dataset every source loads into (no Dagster): its columns, `Dataset`, `DatasetError`, and what
a source can be (a name, a folder, a config file, or an `InlineConfig`).

Canonical frames (ids are strings everywhere):
  ratings: user_id, item_id, rating (float), timestamp (int64 epoch seconds); Arrow in `ratings_table`
  items:   item_id, title, year (Int64), genres (list[str]) [+ text: the item text, for config datasets]
  users:   user_id, age (Int64), gender, occupation, zip_code, age_group [+ text: the profile text]

The loaders (`datasets` for packaged and GroupLens sources, `config` for dataset configs) and the row checks
(`validation`) all stand on this module, so none of them needs another to name what it returns.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from llmrec_platform.data.readers import empty_quarantine

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


class DatasetError(ValueError):
    """A dataset cannot be loaded at all; the message says what is wrong and what to do."""


def empty_dataset_quarantine() -> pd.DataFrame:
    """An empty `Dataset.quarantine`: QUARANTINE_COLUMNS + part."""
    return empty_quarantine().assign(part=pd.Series(dtype="object"))


@dataclass
class Dataset:
    name: str
    # The canonical ratings in Arrow (no Python string per row): what the ingest assets hand to the warehouse.
    ratings_table: pa.Table
    items: pd.DataFrame
    users: pd.DataFrame
    # QUARANTINE_COLUMNS + part (ratings / items / users / user_texts): the rows this load rejected.
    quarantine: pd.DataFrame = field(default_factory=empty_dataset_quarantine)
    rows: dict[str, dict[str, int]] = field(default_factory=dict)  # part -> file -> data rows read
    notes: list[str] = field(default_factory=list)  # BOMs stripped, encodings detected, empty files skipped
    error_budget: float = DEFAULT_ERROR_BUDGET
    has_timestamps: bool = True
    encoder: str | None = None  # the encoder a dataset config asks for (None: the platform default)
    rating_range: tuple[float, float] = RATING_RANGE
    pseudonymize: bool = False  # the config asks for pseudonymized user ids (`load_pseudonymized`)

    @functools.cached_property
    def ratings(self) -> pd.DataFrame:
        """`ratings_table` as pandas, made on first use (the ingest assets never ask for it)."""
        return self.ratings_table.to_pandas()

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
