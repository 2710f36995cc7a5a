"""Interactions at scale: read, validate, quarantine, insert, split and count inside DuckDB (no Dagster).

`load_dataset` materialises every interaction in pandas (a Python string per id): about 0.6 GiB per
million rows, so 20 million do not fit in 8 GiB. This path never pulls the rows into Python: DuckDB reads
the Parquet files, applies the same row checks as `validation.validate_ratings` / `check_ratings` (in the same
order, with the same field names and reasons), writes the bad rows to `quarantine` and the good ones to
`ratings`, and then builds `split` and `popularity` with SQL. A `memory_limit` caps DuckDB's own memory;
beyond it, DuckDB spills to a temporary folder next to the warehouse.

Scope: Parquet interactions (their row numbers are exact: `file_row_number`); CSV and JSON Lines go through
`load_dataset`. The random split is RecBole's protocol (ratings >= 3, k-core, 8:1:1 per user) with a seeded
hash order in place of numpy's permutation, so its folds differ from `split.split_interactions`' row by row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from llmrec_platform.data.config import DatasetConfig
from llmrec_platform.data.privacy import WITHHELD, Pseudonymizer
from llmrec_platform.data.quarantine import CREATE as CREATE_QUARANTINE
from llmrec_platform.data.readers import expand, file_format
from llmrec_platform.data.specs import RATING_RANGE, DatasetError
from llmrec_platform.data.split import SplitConfig
from llmrec_platform.data.validation import iso_day
from llmrec_platform.storage.warehouse import Warehouse

DEFAULT_MEMORY_LIMIT = "4GB"


@dataclass
class BulkReport:
    rows_read: int = 0
    loaded: int = 0
    quarantined: int = 0
    split_rows: int = 0
    items_with_train: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds


def _q(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _parquet_files(config: DatasetConfig, section) -> list[str]:
    files = [str(p) for p in expand(section.path, f"{config.file}: {section.key}.path")]
    formats = {file_format(Path(f), section.format) for f in files}
    if formats != {"parquet"}:
        raise DatasetError(f"{config.file}: {section.key}.path: the bulk path reads Parquet only (found "
                           f"{', '.join(sorted(formats))}); load CSV or JSON Lines with load_dataset")
    return files


def _tune(conn, store: Warehouse, memory_limit: str, threads: int) -> None:
    spill = store.path.parent / f"{store.path.stem}.tmp"
    conn.execute(f"SET memory_limit = '{memory_limit}'")
    conn.execute(f"SET threads = {int(threads)}")
    conn.execute(f"SET temp_directory = '{spill}'")
    conn.execute("SET preserve_insertion_order = false")  # lets DuckDB stream inserts without buffering order
    conn.execute("SET enable_progress_bar = false")


def _timestamp_sql(conn, files: list[str], column: str | None) -> str:
    """Epoch seconds from a timestamp column, whole epoch numbers or ISO 8601 text (as
    `validation.parse_timestamps`: a fractional number is unparseable); NULL where it cannot be read."""
    if column is None:
        return "946684800"  # config.NO_TIMESTAMP
    kinds = dict(conn.execute("SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM read_parquet(?))",
                              [files]).fetchall())
    kind, col = kinds.get(column, "VARCHAR").upper(), _q(column)
    if kind.startswith("TIMESTAMP") or kind == "DATE":
        return f"CAST(floor(epoch({col})) AS BIGINT)"
    number = f"TRY_CAST({col} AS DOUBLE)"
    whole = f"CASE WHEN {number} = floor({number}) THEN CAST({number} AS BIGINT) END"
    if kind != "VARCHAR":
        return whole
    return (f"CASE WHEN {number} IS NOT NULL THEN {whole} "
            f"ELSE CAST(floor(epoch(TRY_CAST({col} AS TIMESTAMPTZ))) AS BIGINT) END")


def bulk_load(config: DatasetConfig, store: Warehouse, valid_range: tuple[int, int], dataset: str | None = None,
              memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int = 2,
              pseudonymizer: Pseudonymizer | None = None) -> BulkReport:
    """Validate `config`'s interactions into `ratings` (this dataset's rows replaced) and `quarantine`
    (part ratings), all inside DuckDB. With a `pseudonymizer`, user ids are written as its pseudonyms (each
    distinct id hashed once in Python) and quarantined rows' raw text is withheld, as `privacy` does.
    Returns the counts and each stage's seconds."""
    report = BulkReport()
    dataset = dataset or str(config.file)
    inter = config.interactions.columns
    files = _parquet_files(config, config.interactions)
    item_files = _parquet_files(config, config.items)
    low, high = tuple(inter.get("rating_range") or RATING_RANGE)
    start, end = valid_range
    with store.connect() as conn:
        _tune(conn, store, memory_limit, threads)
        clock = time.perf_counter()
        conn.execute(f"CREATE OR REPLACE TEMP TABLE known_items AS SELECT DISTINCT item_id FROM (SELECT trim(CAST("
                     f"{_q(config.items.columns['id'])} AS VARCHAR)) AS item_id FROM read_parquet(?)) "
                     "WHERE item_id IS NOT NULL AND item_id <> ''", [item_files])
        user, item = _q(inter["user"]), _q(inter["item"])
        rating = f"TRY_CAST({_q(inter['rating'])} AS DOUBLE)" if "rating" in inter else "4.0"  # IMPLICIT_RATING
        ts = _timestamp_sql(conn, files, inter.get("timestamp"))
        raw_columns = [_q(inter[k]) for k in ("user", "item", "rating", "timestamp") if k in inter]
        raw = "concat_ws(chr(9), " + ", ".join(f"CAST({c} AS VARCHAR)" for c in raw_columns) + ")"
        # Row-local checks, first failing field wins (the order of `validate_ratings`, then the window).
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE staged AS
            WITH typed AS (
                SELECT filename AS source_file, file_row_number + 1 AS row_number,
                       trim(CAST({user} AS VARCHAR)) AS user_id, trim(CAST({item} AS VARCHAR)) AS item_id,
                       {rating} AS rating, {ts} AS timestamp, {raw} AS raw
                FROM read_parquet(?, filename = true, file_row_number = true))
            SELECT *, CASE
                WHEN user_id IS NULL OR user_id = '' THEN 'user_id|empty user_id'
                WHEN item_id IS NULL OR item_id = '' THEN 'item_id|empty item_id'
                WHEN rating IS NULL OR isnan(rating) THEN 'rating|rating is not a number'
                WHEN rating < {low} OR rating > {high} THEN 'rating|rating outside [{low:g}, {high:g}]'
                WHEN timestamp IS NULL THEN 'timestamp|timestamp is not epoch seconds or ISO 8601'
                WHEN timestamp < 0 THEN 'timestamp|timestamp is negative'
                WHEN timestamp < {start} OR timestamp >= {end}
                    THEN 'timestamp|timestamp outside the partitioned range [{iso_day(start)}, {iso_day(end)})'
                END AS problem
            FROM typed""", [files])
        report.rows_read = conn.execute("SELECT count(*) FROM staged").fetchone()[0]
        report.seconds["read + row checks"] = time.perf_counter() - clock

        clock = time.perf_counter()
        # A repeated (user_id, item_id, timestamp) among the rows still good: the first occurrence stays.
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE repeated AS
            WITH firsts AS (
                SELECT user_id, item_id, timestamp, min(source_file) AS first_file FROM staged WHERE problem IS NULL
                GROUP BY ALL HAVING count(*) > 1),
            first_rows AS (
                SELECT s.user_id, s.item_id, s.timestamp, f.first_file, min(s.row_number) AS first_row
                FROM staged s JOIN firsts f USING (user_id, item_id, timestamp)
                WHERE s.problem IS NULL AND s.source_file = f.first_file GROUP BY ALL)
            SELECT s.source_file, s.row_number, 'timestamp|repeated (user_id, item_id, timestamp): first at row '
                   || f.first_row AS problem
            FROM staged s JOIN first_rows f USING (user_id, item_id, timestamp)
            WHERE s.problem IS NULL AND (s.source_file, s.row_number) <> (f.first_file, f.first_row)""")
        # Joins with small build sides (the repeated rows, the catalogue) instead of UPDATEs of every row.
        conn.execute("""
            CREATE OR REPLACE TEMP VIEW validated AS
            SELECT s.source_file, s.row_number, s.user_id, s.item_id, s.rating, s.timestamp, s.raw,
                   coalesce(s.problem, r.problem,
                            CASE WHEN k.item_id IS NULL THEN 'item_id|item not in items.path' END) AS problem
            FROM staged s
            LEFT JOIN repeated r ON s.source_file = r.source_file AND s.row_number = r.row_number
            LEFT JOIN known_items k ON s.item_id = k.item_id""")
        if pseudonymizer is not None:
            ids = [u for (u,) in conn.execute("SELECT DISTINCT user_id FROM staged WHERE user_id IS NOT NULL").fetchall()]
            conn.register("pseudonym_map", pa.table({"user_id": ids, "pseudonym": [pseudonymizer(u) for u in ids]}))
            conn.execute(f"""
                CREATE OR REPLACE TEMP VIEW checked AS
                SELECT c.source_file, c.row_number, m.pseudonym AS user_id, c.item_id, c.rating, c.timestamp,
                       CASE WHEN c.problem IS NULL THEN c.raw ELSE '{WITHHELD}' END AS raw, c.problem
                FROM validated c LEFT JOIN pseudonym_map m ON c.user_id = m.user_id""")
        else:
            conn.execute("CREATE OR REPLACE TEMP VIEW checked AS SELECT * FROM validated")
        report.seconds["repeated keys"] = time.perf_counter() - clock

        clock = time.perf_counter()
        scale = (f"1.0 + 4.0 * (rating - {low}) / ({high} - {low})"
                 if "rating" in inter and (low < RATING_RANGE[0] or high > RATING_RANGE[1]) else "rating")
        conn.execute("BEGIN")
        conn.execute(CREATE_QUARANTINE)
        conn.execute("DELETE FROM quarantine WHERE dataset = ? AND coalesce(part, 'ratings') = 'ratings'", [dataset])
        conn.execute("""
            INSERT INTO quarantine BY NAME
            SELECT source_file, row_number, split_part(problem, '|', 1) AS field,
                   substr(problem, length(split_part(problem, '|', 1)) + 2) AS reason, raw, ? AS dataset,
                   'ratings' AS part
            FROM checked WHERE problem IS NOT NULL""", [dataset])
        conn.execute("CREATE TABLE IF NOT EXISTS ratings (user_id VARCHAR, item_id VARCHAR, rating DOUBLE, "
                     "timestamp BIGINT, dataset VARCHAR)")
        conn.execute("DELETE FROM ratings")  # the warehouse holds one dataset at a time (as raw_ratings)
        conn.execute(f"""
            INSERT INTO ratings BY NAME
            SELECT user_id, item_id, {scale} AS rating, timestamp, ? AS dataset FROM checked WHERE problem IS NULL""",
                     [dataset])
        conn.execute("COMMIT")
        report.quarantined = conn.execute("SELECT count(*) FROM quarantine WHERE dataset = ? AND part = 'ratings'",
                                          [dataset]).fetchone()[0]
        report.loaded = report.rows_read - report.quarantined
        conn.execute("DROP VIEW checked")
        conn.execute("DROP VIEW validated")
        conn.execute("DROP TABLE staged")
        report.seconds["unknown items + insert ratings, quarantine"] = time.perf_counter() - clock
    return report


def bulk_split(store: Warehouse, config: SplitConfig, report: BulkReport | None = None,
               memory_limit: str = DEFAULT_MEMORY_LIMIT, threads: int = 2) -> BulkReport:
    """`split` (user_id, item_id, rating, timestamp, fold) from `ratings`, and `popularity` (item_id,
    interactions in train), both in SQL. The protocol of `split.split_interactions` (see the module note)."""
    report = report or BulkReport()
    with store.connect() as conn:
        _tune(conn, store, memory_limit, threads)
        clock = time.perf_counter()
        # Known items are guaranteed by the load; one row per user-item: the latest.
        conn.execute("""
            CREATE OR REPLACE TEMP TABLE inter AS
            SELECT user_id, item_id, arg_max(rating, timestamp) AS rating, max(timestamp) AS timestamp
            FROM ratings WHERE rating >= ? GROUP BY user_id, item_id""", [config.min_rating])
        while config.core > 1:
            removed = conn.execute("""
                DELETE FROM inter WHERE user_id IN (SELECT user_id FROM inter GROUP BY 1 HAVING count(*) < $1)
                OR item_id IN (SELECT item_id FROM inter GROUP BY 1 HAVING count(*) < $1)""",
                                   [config.core]).fetchone()[0]
            if not removed:
                break
        report.seconds["filter + k-core"] = time.perf_counter() - clock
        clock = time.perf_counter()
        valid_share, test_share = config.ratios[1], config.ratios[2]
        if config.protocol == "recbole":
            conn.execute(f"""
                CREATE OR REPLACE TABLE split AS
                WITH ranked AS (
                    SELECT *, row_number() OVER (PARTITION BY user_id ORDER BY hash(user_id, item_id, {int(config.seed)}))
                              - 1 AS position,
                           count(*) OVER (PARTITION BY user_id) AS n FROM inter),
                cuts AS (
                    SELECT *, n - greatest(floor(n * {test_share}), {1 if test_share > 0 else 0})
                              - greatest(floor(n * {valid_share}), {1 if valid_share > 0 else 0}) AS train_end,
                           n - greatest(floor(n * {test_share}), {1 if test_share > 0 else 0}) AS valid_end
                    FROM ranked)
                SELECT user_id, item_id, rating, timestamp,
                       CASE WHEN position < train_end THEN 'train' WHEN position < valid_end THEN 'valid'
                            ELSE 'test' END AS fold
                FROM cuts""")
        else:
            train_cut, valid_cut = conn.execute(
                "SELECT quantile_disc(timestamp, ?), quantile_disc(timestamp, ?) FROM inter",
                [config.ratios[0], config.ratios[0] + config.ratios[1]]).fetchone()
            conn.execute(f"""
                CREATE OR REPLACE TABLE split AS
                WITH folds AS (
                    SELECT *, CASE WHEN timestamp <= {train_cut} THEN 'train' WHEN timestamp <= {valid_cut}
                                   THEN 'valid' ELSE 'test' END AS fold FROM inter)
                SELECT * FROM folds WHERE fold = 'train'
                   OR (user_id IN (SELECT user_id FROM folds WHERE fold = 'train')
                       AND item_id IN (SELECT item_id FROM folds WHERE fold = 'train'))""")
        report.split_rows = conn.execute("SELECT count(*) FROM split").fetchone()[0]
        report.seconds["split"] = time.perf_counter() - clock
        clock = time.perf_counter()
        conn.execute("""
            CREATE OR REPLACE TABLE popularity AS
            SELECT item_id, count(*) AS interactions FROM split WHERE fold = 'train' GROUP BY item_id
            ORDER BY interactions DESC, item_id""")
        report.items_with_train = conn.execute("SELECT count(*) FROM popularity").fetchone()[0]
        report.seconds["popularity"] = time.perf_counter() - clock
        conn.execute("DROP TABLE inter")
    return report
