"""The DuckDB warehouse: one file, short-lived connections, idempotent writes (no Dagster here)."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

# The warehouse contract other issues and users rely on.
CONTRACT_TABLES = (
    "ratings", "items", "users", "item_embeddings", "user_embeddings", "split",
    "evaluation_metrics", "recommendations",
)
# Rating prediction (`llmrec demo --task rating`): one row per model and fold, every run kept.
RATING_METRICS_TABLE = "rating_metrics"
RATING_METRICS_COLUMNS = ("run_id", "model", "fold", "rmse", "mae")
_IDENTIFIER_OK = set("abcdefghijklmnopqrstuvwxyz0123456789_")


def _check_identifier(name: str) -> str:
    if not name or not set(name.lower()) <= _IDENTIFIER_OK:
        raise ValueError(f"invalid table name {name!r}")
    return name


class Warehouse:
    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0):
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s

    @contextlib.contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection, retrying while another process holds the file lock (multiprocess runs)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_timeout_s
        while True:
            try:
                conn = duckdb.connect(str(self.path), read_only=read_only and self.path.exists())
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(0.2 + random.random() * 0.5)
        try:
            yield conn
        finally:
            conn.close()

    def has_table(self, table: str) -> bool:
        if not self.path.exists():
            return False
        with self.connect(read_only=True) as conn:
            return bool(conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]
            ).fetchone()[0])

    def tables(self) -> list[str]:
        if not self.path.exists():
            return []
        with self.connect(read_only=True) as conn:
            return sorted(r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall())

    @staticmethod
    def _select_all(table: str, where: str | None) -> str:
        """Every row of `table` (a checked identifier), filtered by `where` (code with ? parameters)."""
        return f"SELECT * FROM {_check_identifier(table)}" + (f" WHERE {where}" if where else "")

    def read(self, table: str, where: str | None = None, params: list | None = None) -> pd.DataFrame:
        with self.connect(read_only=True) as conn:
            return conn.execute(self._select_all(table, where), params or []).df()

    def read_arrow(self, table: str, where: str | None = None, params: list | None = None) -> pa.Table:
        """`read` in Arrow: no pandas and no Python object per value."""
        with self.connect(read_only=True) as conn:
            return conn.sql(self._select_all(table, where), params=params or None).to_arrow_table()

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        with self.connect(read_only=True) as conn:
            return conn.execute(sql, params or []).df()

    def replace(self, table: str, frame: pd.DataFrame | pa.Table) -> int:
        """Replace the whole table with `frame` (pandas or Arrow), atomically."""
        table = _check_identifier(table)
        with self.connect() as conn:
            conn.register("incoming", frame)
            conn.execute("BEGIN")
            conn.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM incoming")
            conn.execute("COMMIT")
        return len(frame)

    def replace_where(self, table: str, frame: pd.DataFrame | pa.Table, where: str, params: list) -> int:
        """Delete the rows matching `where`, then insert `frame`, in one transaction (idempotent windows)."""
        table = _check_identifier(table)
        with self.connect() as conn:
            conn.register("incoming", frame)
            conn.execute("BEGIN")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming LIMIT 0")
            conn.execute(f"DELETE FROM {table} WHERE {where}", params)
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
            conn.execute("COMMIT")
        return len(frame)

    def delete(self, table: str, where: str, params: list) -> int:
        """Delete matching rows; returns how many went."""
        table = _check_identifier(table)
        with self.connect() as conn:
            return conn.execute(f"DELETE FROM {table} WHERE {where}", params).fetchone()[0]

    def append(self, table: str, frame: pd.DataFrame) -> int:
        table = _check_identifier(table)
        if frame.empty and self.has_table(table):
            return 0
        with self.connect() as conn:
            conn.register("incoming", frame)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} AS SELECT * FROM incoming LIMIT 0")
            conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
        return len(frame)
