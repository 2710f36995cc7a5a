"""The `quarantine` table: rejected input rows, owned by the load that made them (no Dagster).

Columns: source_file, row_number, field, reason, raw, dataset, part (ratings / items / users / user_texts).
A load replaces every row of its (dataset, part) — or, for a landed file, of its source file — in one
transaction, including with nothing: re-loading a fixed file leaves none of its old rows behind.
The raw rows of the text parts (items, users, user texts) are PII-scrubbed before they are written; with
pseudonymization on, those of the parts that carry user ids arrive withheld (`privacy`).
"""

from __future__ import annotations

import pandas as pd

from llmrec_platform.data.privacy import scrub_pii
from llmrec_platform.data.readers import QUARANTINE_COLUMNS
from llmrec_platform.storage.warehouse import Warehouse

TABLE = "quarantine"
COLUMNS = [*QUARANTINE_COLUMNS, "dataset", "part"]
CREATE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (source_file VARCHAR, row_number BIGINT, field VARCHAR, reason VARCHAR, "
          "raw VARCHAR, dataset VARCHAR, part VARCHAR)")
# A warehouse made before `part` existed gains the column.
MIGRATE = f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS part VARCHAR"
TEXT_PARTS = ("items", "users", "user_texts")
QUERY_HINT = "SELECT source_file, row_number, field, reason, raw FROM quarantine WHERE dataset = '{dataset}' ORDER BY ALL"


def typed(frame: pd.DataFrame, dataset: str, part: str) -> pd.DataFrame:
    """`frame` (QUARANTINE_COLUMNS) with dataset and part, in the table's column order and types."""
    out = pd.DataFrame({c: frame[c].astype("object") if c != "row_number" else frame[c].astype("int64")
                        for c in QUARANTINE_COLUMNS})
    raw = out["raw"].map(lambda v: "" if v is None else str(v))
    # Text parts' raw rows are texts on their way into the warehouse: scrubbed like every other text.
    out["raw"] = raw.map(scrub_pii) if part in TEXT_PARTS else raw
    return out.assign(dataset=dataset, part=part)[COLUMNS]


def replace_in(conn, frame: pd.DataFrame, where: str, params: list) -> None:
    """Inside an open transaction of `conn`: delete the rows matching `where`, insert `frame` (COLUMNS)."""
    conn.execute(CREATE)
    conn.execute(MIGRATE)
    conn.execute(f"DELETE FROM {TABLE} WHERE {where}", params)
    if len(frame):
        conn.register("incoming_quarantine", frame)
        conn.execute(f"INSERT INTO {TABLE} BY NAME SELECT * FROM incoming_quarantine")
        conn.unregister("incoming_quarantine")


def write_quarantine(store: Warehouse, frame: pd.DataFrame, dataset: str, part: str) -> int:
    """Replace the quarantine rows of (dataset, part) with `frame` (QUARANTINE_COLUMNS), atomically."""
    rows = typed(frame, dataset, part)
    with store.connect() as conn:
        conn.execute("BEGIN")
        replace_in(conn, rows, "dataset = ? AND coalesce(part, 'ratings') = ?", [dataset, part])
        conn.execute("COMMIT")
    return len(rows)


def summary(frame: pd.DataFrame) -> str:
    """'3 rows: 2 rating outside [0.5, 5], 1 wrong number of fields ...' (most frequent reasons first)."""
    if not len(frame):
        return "no rows rejected"
    reasons = frame["reason"].str.replace(r": first at row \d+", "", regex=True).str.replace(
        r"wrong number of fields: expected \d+, found \d+", "wrong number of fields", regex=True)
    counts = reasons.value_counts()
    top = ", ".join(f"{n} {reason}" for reason, n in counts.head(4).items())
    more = f", {counts.iloc[4:].sum()} other" if len(counts) > 4 else ""
    return f"{len(frame)} rows: {top}{more}"


def load_summary(store: Warehouse, dataset: str) -> str:
    """One line for the CLI: how many rows of `dataset`'s last load were rejected, per part, and the query
    that lists them."""
    if not store.has_table(TABLE):
        return "quarantine: no rows rejected"
    counts = store.query(f"SELECT coalesce(part, 'ratings') AS part, count(*) AS n FROM {TABLE} WHERE dataset = ? "
                         "GROUP BY ALL ORDER BY part", [dataset])
    if counts.empty:
        return "quarantine: no rows rejected"
    parts = ", ".join(f"{p} {n}" for p, n in zip(counts["part"], counts["n"], strict=True))
    query = QUERY_HINT.format(dataset=dataset.replace("'", "''"))
    return f'quarantine: {int(counts["n"].sum())} rows rejected ({parts}); see them: duckdb {store.path} "{query}"'
