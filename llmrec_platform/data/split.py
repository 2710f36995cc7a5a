"""Train/valid/test protocols, computed in DuckDB (no Dagster).

recbole:  ratings >= 3, iterative 10-core on users and items, random 8:1:1 per user (seeded) — RecBole's
          ML-1M "general" protocol, so results compare with its published tables.
temporal: one global time cut (the leak-free choice for production): the latest interactions form
          valid and test; users and items first seen after the training cut are dropped from those folds,
          so every evaluated user has training history.

Filtering, k-core, folds and the cold-item hold-out run in SQL inside one `duck.session` (under its memory
limit). Python draws only the seeded random numbers: one permutation of the interactions (the RecBole shuffle)
and the cold items, so the folds are exactly those of numpy's generator for a seed, on any machine and thread
count. Frames (pandas or Arrow) come in; Arrow goes out (`interactions_table`, `split_table`: what the assets hand on),
or pandas (`prepare_interactions`, `split_interactions`) for callers that want it. `popularity_table` counts each
item's training rows in SQL too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from llmrec_platform.data.duck import ORDER, register, session

if TYPE_CHECKING:
    import pandas as pd

FOLDS = ("train", "valid", "test")
PROTOCOLS = ("recbole", "temporal")
SPLIT_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "fold"]


@dataclass(frozen=True)
class SplitConfig:
    protocol: str = "recbole"
    min_rating: float = 3.0
    core: int = 10
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2020
    cold_item_fraction: float = 0.0

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if not np.isclose(sum(self.ratios), 1.0):
            raise ValueError(f"split ratios {self.ratios} must sum to 1")


def _k_core(conn, table: str, core: int) -> None:
    """Iteratively drop users and items with fewer than `core` interactions from `table` until both sides
    comply (the counts of each round are taken before its deletes, on users and items at once)."""
    while core > 1 and conn.execute(f"""
            DELETE FROM {table} WHERE user_id IN (SELECT user_id FROM {table} GROUP BY 1 HAVING count(*) < $1)
               OR item_id IN (SELECT item_id FROM {table} GROUP BY 1 HAVING count(*) < $1)""", [core]).fetchone()[0]:
        pass


def k_core(frame: pd.DataFrame | pa.Table, core: int, memory_limit: str | None = None) -> pd.DataFrame:
    """`frame`'s rows (in its order) whose users and items keep at least `core` interactions each."""
    with session(memory_limit) as conn:
        register(conn, "frame_in", frame)
        conn.execute("CREATE TEMP TABLE kept AS SELECT * FROM frame_in")
        _k_core(conn, "kept", core)
        return conn.sql(f"SELECT * EXCLUDE ({ORDER}) FROM kept ORDER BY {ORDER}").df()


def prepare_interactions(ratings: pd.DataFrame | pa.Table, items: pd.DataFrame | pa.Table, min_rating: float, core: int,
                         memory_limit: str | None = None) -> pd.DataFrame:
    """`interactions_table` as pandas."""
    return interactions_table(ratings, items, min_rating, core, memory_limit).to_pandas()


def interactions_table(ratings: pd.DataFrame | pa.Table, items: pd.DataFrame | pa.Table, min_rating: float, core: int,
                       memory_limit: str | None = None) -> pa.Table:
    """Keep ratings >= min_rating of known items (one row per user-item: the latest; on a tie in time the later
    row), then k-core filter. Rows come out in time order (ties: input order), in Arrow."""
    with session(memory_limit) as conn:
        register(conn, "ratings_in", ratings)
        register(conn, "items_in", items, ["item_id"])
        conn.execute(f"""
            CREATE TEMP TABLE inter AS
            SELECT * EXCLUDE (_latest) FROM (
                SELECT *, row_number() OVER (PARTITION BY user_id, item_id ORDER BY timestamp DESC, {ORDER} DESC)
                          AS _latest
                FROM ratings_in WHERE rating >= CAST($1 AS DOUBLE) AND item_id IN (SELECT item_id FROM items_in))
            WHERE _latest = 1""", [float(min_rating)])
        _k_core(conn, "inter", core)
        return conn.sql(f"SELECT * EXCLUDE ({ORDER}) FROM inter ORDER BY timestamp, {ORDER}").to_arrow_table()


def split_interactions(interactions: pd.DataFrame | pa.Table, config: SplitConfig,
                       memory_limit: str | None = None) -> pd.DataFrame:
    """`split_table` as pandas."""
    return split_table(interactions, config, memory_limit).to_pandas()


def split_table(interactions: pd.DataFrame | pa.Table, config: SplitConfig, memory_limit: str | None = None) -> pa.Table:
    """SPLIT_COLUMNS in Arrow: each interaction with its fold under `config`. recbole rows come out by user (in
    shuffled order), temporal ones in input order."""
    with session(memory_limit) as conn:
        n = register(conn, "inter_in", interactions, ["user_id", "item_id", "rating", "timestamp"])
        if n == 0:
            raise ValueError("no interactions left to split: check the rating threshold and k-core settings")
        if config.protocol == "recbole":
            _random_per_user(conn, n, config)
        else:
            _temporal(conn, n, config)
        if config.cold_item_fraction > 0:
            _hold_out_cold_items(conn, config.cold_item_fraction, config.seed)
        return conn.sql(f"SELECT {', '.join(SPLIT_COLUMNS)} FROM folds ORDER BY _rank").to_arrow_table()


def _random_per_user(conn, n: int, config: SplitConfig) -> None:
    """RecBole's RS split: shuffle each user's interactions, then cut them 8:1:1 (valid and test get
    floor(ratio * n), at least 1, as RecBole's _calcu_split_ids; train the rest).

    The shuffle is numpy's seeded permutation of the rows sorted by (user, time, item): sorted row i lands at
    position `_key` = inverse_permutation[i], and a user's rows are taken in `_key` order."""
    permutation = np.random.default_rng(config.seed).permutation(n)
    key = np.empty(n, dtype=np.int64)
    key[permutation] = np.arange(n, dtype=np.int64)
    conn.register("shuffle", pa.table({"_sorted": np.arange(n, dtype=np.int64), "_key": key}))
    del permutation, key
    valid, test = (float(r) for r in config.ratios[1:])
    conn.execute(f"""
        CREATE TEMP TABLE folds AS
        WITH sorted AS (
            SELECT *, row_number() OVER (ORDER BY user_id, timestamp, item_id, {ORDER}) - 1 AS _sorted FROM inter_in),
        ranked AS (
            SELECT s.*, k._key, row_number() OVER (PARTITION BY s.user_id ORDER BY k._key) - 1 AS _position,
                   count(*) OVER (PARTITION BY s.user_id) AS _n
            FROM sorted s JOIN shuffle k USING (_sorted)),
        cut AS (
            SELECT *, greatest(floor(_n * CAST($1 AS DOUBLE)), {1 if valid > 0 else 0}) AS _n_valid,
                      greatest(floor(_n * CAST($2 AS DOUBLE)), {1 if test > 0 else 0}) AS _n_test
            FROM ranked)
        SELECT user_id, item_id, rating, timestamp,
               CASE WHEN _position < _n - _n_valid - _n_test THEN 'train'
                    WHEN _position < _n - _n_test THEN 'valid' ELSE 'test' END AS fold,
               row_number() OVER (ORDER BY user_id, _key) AS _rank
        FROM cut""", [valid, test])
    conn.unregister("shuffle")


def lower_quantile_position(n: int, q: float) -> int:
    """The 0-based position in sorted order of numpy's quantile(values, q, method="lower") of n values."""
    return math.floor((n - 1) * q)


def _temporal(conn, n: int, config: SplitConfig) -> None:
    train_cut, valid_cut = (
        conn.execute("SELECT timestamp FROM inter_in ORDER BY timestamp LIMIT 1 OFFSET ?",
                     [lower_quantile_position(n, q)]).fetchone()[0]
        for q in (config.ratios[0], config.ratios[0] + config.ratios[1]))
    conn.execute(f"""
        CREATE TEMP TABLE folds AS
        WITH cut AS (
            SELECT *, CASE WHEN timestamp <= $1 THEN 'train' WHEN timestamp <= $2 THEN 'valid' ELSE 'test' END AS fold
            FROM inter_in)
        SELECT user_id, item_id, rating, timestamp, fold, {ORDER} AS _rank FROM cut
        WHERE fold = 'train' OR (user_id IN (SELECT user_id FROM cut WHERE fold = 'train')
                                 AND item_id IN (SELECT item_id FROM cut WHERE fold = 'train'))""",
                 [train_cut, valid_cut])


def _hold_out_cold_items(conn, fraction: float, seed: int) -> None:
    """Remove a seeded fraction of items from training entirely: all their interactions become test rows,
    evaluated as the cold-item slice (valid keeps warm items only, so tuning never sees a cold item). Users
    whose only training rows were cold items have no history left: they leave the split."""
    items = np.array([i for (i,) in conn.execute("SELECT DISTINCT item_id FROM folds ORDER BY item_id").fetchall()],
                     dtype=object)
    cold = np.random.default_rng(seed + 1).choice(items, size=max(1, int(round(fraction * len(items)))), replace=False)
    conn.register("cold_in", pa.table({"item_id": pa.array(cold.tolist(), type=pa.string())}))
    conn.execute("UPDATE folds SET fold = 'test' WHERE item_id IN (SELECT item_id FROM cold_in)")
    conn.execute("DELETE FROM folds WHERE user_id NOT IN (SELECT user_id FROM folds WHERE fold = 'train')")
    conn.unregister("cold_in")


def cold_items(split: pd.DataFrame | pa.Table) -> np.ndarray:
    """Items that appear in valid/test but never in train (sorted ids, in DuckDB)."""
    with session() as conn:
        register(conn, "split_in", split, ["item_id", "fold"])
        cold = conn.sql("SELECT item_id FROM split_in EXCEPT SELECT item_id FROM split_in WHERE fold = 'train' "
                        "ORDER BY item_id").to_arrow_table()
    return np.array(cold["item_id"].to_pylist(), dtype=object)


POPULARITY_COLUMNS = ["rank", "item_id", "interactions", "mean_rating", "last_timestamp", "valid", "test"]


def popularity_table(split: pd.DataFrame | pa.Table, memory_limit: str | None = None) -> pa.Table:
    """Every item of the split with its training popularity, in SQL: `interactions` is its number of training rows
    (what the rankers' `popularity_` counts), with their mean rating and latest timestamp, and its valid and test
    rows. `rank` is 1 for the most popular; ties by item id, the rankers' (-score, item id) order. Cold items (no
    training rows) come last with 0 interactions and a null mean."""
    with session(memory_limit) as conn:
        register(conn, "split_in", split, ["item_id", "rating", "timestamp", "fold"])
        return conn.sql("""
            SELECT CAST(row_number() OVER (ORDER BY interactions DESC, item_id) AS INTEGER) AS rank, *
            FROM (SELECT item_id,
                         count(*) FILTER (WHERE fold = 'train') AS interactions,
                         avg(rating) FILTER (WHERE fold = 'train') AS mean_rating,
                         max(timestamp) FILTER (WHERE fold = 'train') AS last_timestamp,
                         count(*) FILTER (WHERE fold = 'valid') AS valid,
                         count(*) FILTER (WHERE fold = 'test') AS test
                  FROM split_in GROUP BY item_id)
            ORDER BY rank""").to_arrow_table()
