"""Row checks shared by every loader (no Dagster): a bad row goes to the quarantine with file, row, field and
reason, and the other rows load (`data.datasets`, `data.config`, and `data.landing` for landed files)."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmrec_platform.data.duck import ORDER, register, session
from llmrec_platform.data.readers import ROW_FILE, ROW_NUMBER, concat_quarantine, quarantine_records
from llmrec_platform.data.specs import (
    ITEMS_COLUMNS,
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


# Python's str.strip() removes these (every c with c.isspace()); DuckDB's trim() alone removes spaces only.
_WHITESPACE = ("\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
               "\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "FLOAT", "DOUBLE", "DECIMAL", "BOOLEAN")


def _q(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def _literal(value: str | float) -> str:
    """A value written into SQL (a view takes no parameters)."""
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(float(value))


def _types(conn, view: str) -> dict[str, str]:
    return {name: kind.upper() for name, kind, *_ in conn.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()}


def _strip_sql(expr: str) -> str:
    """`expr` stripped as str.strip() does; the full trim only where an end is a space or not ASCII (it is slow)."""
    return (f"CASE WHEN ord({expr}) <= 32 OR ord({expr}) >= 133 OR ord(right({expr}, 1)) <= 32 "
            f"OR ord(right({expr}, 1)) >= 133 THEN trim({expr}, {_literal(_WHITESPACE)}) ELSE {expr} END")


def _stripped_rows(view: str, columns: list[str], types: dict[str, str], extra: str = "") -> str:
    """A subquery of `view` whose text `columns` are stripped (each once), plus `extra` columns computed on the
    rows as read. The value functions below read text columns from it."""
    text = [c for c in dict.fromkeys(columns) if types[c].startswith("VARCHAR")]
    replace = f" REPLACE ({', '.join(f'{_strip_sql(_q(c))} AS {_q(c)}' for c in text)})" if text else ""
    return f"(SELECT *{replace}{', ' + extra if extra else ''} FROM {view})"


def _stripped(column: str) -> str:
    """A column's text (text columns come stripped from `_stripped_rows`)."""
    return f"CAST({_q(column)} AS VARCHAR)"


def _id_sql(column: str, kind: str) -> str:
    """An id as text, stripped: a whole number without '.0' (ids read as floats), NULL where missing."""
    if kind.startswith(("FLOAT", "DOUBLE")):
        col = _q(column)
        return (f"CASE WHEN isnan({col}) THEN NULL WHEN isfinite({col}) AND {col} = floor({col}) "
                f"THEN coalesce(CAST(TRY_CAST({col} AS BIGINT) AS VARCHAR), CAST({col} AS VARCHAR)) "
                f"ELSE CAST({col} AS VARCHAR) END")
    return _stripped(column)


def _number_sql(column: str, kind: str) -> str:
    """DOUBLE from a number column, or from text (stripped); NULL where the text is not a number (DuckDB's digit
    separators, as in '1_000', are not: Python's float() refuses them in data, and so does pandas)."""
    if kind.startswith(_NUMERIC):
        return f"CAST({_q(column)} AS DOUBLE)"
    text = _stripped(column)
    return f"CASE WHEN NOT contains({text}, '_') THEN TRY_CAST({text} AS DOUBLE) END"


def _timestamp_sql(column: str, kind: str) -> str:
    """Epoch seconds (BIGINT) from a timestamp or date column, whole epoch numbers or ISO 8601 text (a date, or a
    date and time with an optional offset; none means UTC). NULL where unreadable: a fractional or non-finite
    number, other text."""
    if kind.startswith(("TIMESTAMP", "DATE")):
        return f"CAST(floor(epoch({_q(column)})) AS BIGINT)"
    number = _number_sql(column, kind)
    whole = f"CASE WHEN isfinite({number}) AND {number} = floor({number}) THEN TRY_CAST({number} AS BIGINT) END"
    if kind.startswith(_NUMERIC):
        return whole
    text = _stripped(column)
    # ISO 8601 allows a year and month alone ('2024-03': its first day); DuckDB's cast wants the day.
    iso = (f"epoch(TRY_CAST(CASE WHEN regexp_matches({text}, '^[0-9]{{4}}-[0-9]{{2}}$') THEN {text} || '-01' "
           f"ELSE {text} END AS TIMESTAMPTZ))")
    return (f"CASE WHEN {number} IS NOT NULL THEN {whole} WHEN regexp_matches({text}, '^[0-9]{{4}}-') "
            f"AND isfinite({iso}) THEN CAST(floor({iso}) AS BIGINT) END")


def _raw_sql(columns: list[str], types: dict[str, str]) -> str:
    """The row as the quarantine shows it: its values (not the bookkeeping `_` columns) joined by tabs, a missing
    one as ''."""
    def text(c):
        value = f"CAST({_q(c)} AS VARCHAR)"
        if types[c].startswith(("FLOAT", "DOUBLE")):
            value = f"CASE WHEN NOT isnan({_q(c)}) THEN {value} END"
        return f"coalesce({value}, '')"
    return " || chr(9) || ".join(text(c) for c in columns if not c.startswith("_")) or "''"


def parse_timestamps(values: pd.Series) -> pd.Series:
    """Epoch seconds (Int64, NA where unparseable) from epoch numbers, ISO 8601 strings or datetimes: the
    timestamp rule of the row checks, on one column."""
    with session() as conn:
        register(conn, "values_in", pd.DataFrame({"v": values.to_numpy()}))
        types = _types(conn, "values_in")
        parsed = conn.execute(f"SELECT {_timestamp_sql('v', types['v'])} AS t FROM "
                              f"{_stripped_rows('values_in', ['v'], types)} ORDER BY {ORDER}").df()["t"]
    return pd.Series(parsed.to_numpy(), index=values.index).astype("Int64")


def _split_problems(conn, view: str, good_columns: str) -> tuple[pa.Table, pd.DataFrame]:
    """(the rows of `view` without a problem, as `good_columns`, in Arrow: no Python string per row; the others as
    quarantine records), both in input order. `problem` is 'field|reason'."""
    # No ORDER BY: DuckDB keeps the input order through scans and filters (a sort of every row would cost as much
    # memory again); where a join moved rows, they are put back in order here.
    good = conn.sql(f"SELECT {good_columns}, {ORDER} FROM {view} WHERE problem IS NULL").to_arrow_table()
    order = good[ORDER].to_numpy()
    if len(order) > 1 and not np.all(order[1:] > order[:-1]):
        good = good.take(pc.sort_indices(good[ORDER]))
    good = good.drop_columns([ORDER])
    if ROW_FILE in good.column_names:  # one value per file: categorical, not a string per row
        good = good.set_column(good.column_names.index(ROW_FILE), ROW_FILE, pc.dictionary_encode(good[ROW_FILE]))
    rejected = conn.execute(f"""
        SELECT source_file, row_number, split_part(problem, '|', 1) AS field,
               substr(problem, length(split_part(problem, '|', 1)) + 2) AS reason, raw
        FROM {view} WHERE problem IS NOT NULL ORDER BY {ORDER}""").df()
    quarantine = concat_quarantine([rejected.astype({"source_file": object, "field": object, "reason": object,
                                                     "raw": object, "row_number": "int64"})])
    return good, quarantine


def validate_ratings(raw: pd.DataFrame | pa.Table, source_file: str, first_row_number: int = 1,
                     rating_range: tuple[float, float] = RATING_RANGE,
                     columns: dict[str, str | float] | None = None) -> tuple[pa.Table, pd.DataFrame]:
    """Split raw rows into valid canonical ratings (Arrow) and quarantined rows (file, row, field, reason), in SQL.

    Rows carry their file and row in `_file` / `_row` when a reader made them (kept on the good rows for
    later checks); otherwise they are numbered from `first_row_number` in `source_file`. The first failing
    field of a row names it: an empty id, a rating that is not a number or outside `rating_range`, a timestamp
    that is not epoch seconds or ISO 8601, or negative.

    `columns` maps each of RATINGS_COLUMNS to the raw column that holds it, or to a constant (a dataset config's
    implicit rating, or its one timestamp); default: the raw columns of those names."""
    columns = {**{c: c for c in RATINGS_COLUMNS}, **(columns or {})}
    names = list(raw.column_names if isinstance(raw, pa.Table) else raw.columns)
    missing = [c for c in columns.values() if isinstance(c, str) and c not in names]
    if missing:
        raise DatasetError(f"{source_file}: missing column(s) {missing}; expected {RATINGS_COLUMNS}")
    low, high = rating_range
    numbered = ROW_FILE in names
    with session() as conn:
        register(conn, "raw_in", raw)
        types = _types(conn, "raw_in")
        file_sql = f"CAST({ROW_FILE} AS VARCHAR)" if numbered else _literal(source_file)
        row_sql = f"CAST({ROW_NUMBER} AS BIGINT)" if ROW_NUMBER in names else f"{ORDER} + {int(first_row_number)}"

        def value(name: str, sql) -> str:
            source = columns[name]
            return sql(source, types[source]) if isinstance(source, str) else f"{float(source)!r}"

        sources = [c for c in columns.values() if isinstance(c, str)]
        raw_sql = _raw_sql(sources, types)
        conn.execute(f"""
            CREATE TEMP VIEW checked AS
            WITH typed AS (
                SELECT {ORDER}, {file_sql} AS source_file, {row_sql} AS row_number,
                       {value('user_id', _id_sql)} AS user_id, {value('item_id', _id_sql)} AS item_id,
                       CAST({value('rating', _number_sql)} AS DOUBLE) AS rating,
                       CAST({value('timestamp', _timestamp_sql)} AS BIGINT) AS timestamp,
                       _raw AS raw
                FROM {_stripped_rows('raw_in', sources, types, f'{raw_sql} AS _raw')})
            SELECT *, CASE
                WHEN user_id IS NULL OR user_id = '' THEN 'user_id|empty user_id'
                WHEN item_id IS NULL OR item_id = '' THEN 'item_id|empty item_id'
                WHEN rating IS NULL OR isnan(rating) THEN 'rating|rating is not a number'
                WHEN rating < {_literal(low)} OR rating > {_literal(high)} THEN 'rating|rating outside [{low:g}, {high:g}]'
                WHEN timestamp IS NULL THEN 'timestamp|timestamp is not epoch seconds or ISO 8601'
                WHEN timestamp < 0 THEN 'timestamp|timestamp is negative'
                END AS problem
            FROM typed""")
        extra = f", source_file AS {ROW_FILE}, row_number AS {ROW_NUMBER}" if numbered else ""
        return _split_problems(conn, "checked", f"user_id, item_id, rating, timestamp{extra}")


def check_ratings(ratings: pd.DataFrame | pa.Table, items: pd.DataFrame | None, valid_range: tuple[int, int] | None,
                  items_source: str = "the item file") -> tuple[pa.Table, pd.DataFrame]:
    """Rows that passed `validate_ratings` (with `_file` / `_row`) against the rest of the dataset, in SQL: a
    timestamp outside `valid_range`, a repeated (user_id, item_id, timestamp) (the first occurrence
    stays), an item that is not in `items`. Returns the canonical ratings (Arrow) and the quarantined rows."""
    with session() as conn:
        register(conn, "ratings_in", ratings, [*RATINGS_COLUMNS, ROW_FILE, ROW_NUMBER])
        window = "NULL"
        if valid_range is not None:
            start, end = (int(v) for v in valid_range)
            window = (f"CASE WHEN timestamp < {start} OR timestamp >= {end} THEN 'timestamp|timestamp outside the "
                      f"partitioned range [{iso_day(start)}, {iso_day(end)})' END")
        unknown, join_known = "NULL", ""
        if items is not None:
            register(conn, "items_in", items, ["item_id"])
            conn.execute("CREATE TEMP TABLE known AS SELECT DISTINCT CAST(item_id AS VARCHAR) AS item_id FROM items_in")
            unknown = f"CASE WHEN k.item_id IS NULL THEN {_literal('item_id|item not in ' + items_source)} END"
            join_known = "LEFT JOIN known k ON CAST(w.item_id AS VARCHAR) = k.item_id"
        raw = "w.user_id || chr(9) || w.item_id || chr(9) || CAST(w.rating AS VARCHAR) || chr(9) || CAST(w.timestamp AS VARCHAR)"
        # `raw` is made in the last projection, so only for the rows that are quarantined; `windowed` is not
        # materialized (a copy of every row, 0.6 GiB at 5M rows), its cheap window check is computed twice instead.
        conn.execute(f"""
            CREATE TEMP VIEW checked AS
            WITH windowed AS NOT MATERIALIZED (SELECT *, {window} AS p FROM ratings_in),
            repeated AS (  -- keys' hashes seen twice: 8 bytes a row to group, not the key's strings
                SELECT hash(user_id, item_id, timestamp) AS h FROM windowed WHERE p IS NULL GROUP BY h HAVING count(*) > 1),
            firsts AS (  -- a repeated key among the rows still good: the first occurrence stays
                SELECT user_id, item_id, timestamp, min({ORDER}) AS first_order, arg_min({ROW_NUMBER}, {ORDER}) AS first_row
                FROM windowed WHERE p IS NULL AND hash(user_id, item_id, timestamp) IN (SELECT h FROM repeated)
                GROUP BY ALL HAVING count(*) > 1)
            SELECT w.*, w.{ROW_FILE} AS source_file, w.{ROW_NUMBER} AS row_number, {raw} AS raw, coalesce(w.p,
                CASE WHEN f.first_order IS NOT NULL AND w.{ORDER} <> f.first_order
                     THEN 'timestamp|repeated (user_id, item_id, timestamp): first at row ' || f.first_row END,
                {unknown}) AS problem
            FROM windowed w
            LEFT JOIN firsts f ON w.p IS NULL AND w.user_id = f.user_id AND w.item_id = f.item_id
                                  AND w.timestamp = f.timestamp
            {join_known}""")
        return _split_problems(conn, "checked", ", ".join(RATINGS_COLUMNS))


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
