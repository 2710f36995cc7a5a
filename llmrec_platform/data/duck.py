"""The DuckDB session every step of the data path runs in (no Dagster): a memory limit (LLMREC_DUCKDB_MEMORY_LIMIT;
beyond it DuckDB spills to a temporary folder), a fixed thread count, UTC and no progress bar; and how a frame
enters it (`register`)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from llmrec_platform.data.readers import frame_table

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_MEMORY_LIMIT = "4GB"  # LLMREC_DUCKDB_MEMORY_LIMIT (settings.py) replaces it per process
DEFAULT_THREADS = 2
_memory_limit = DEFAULT_MEMORY_LIMIT


def set_memory_limit(limit: str) -> None:
    """The memory limit of every later session of this process (the code location and the CLI call it once with
    `Settings.duckdb_memory_limit`); checked by DuckDB now, so a bad value fails at start-up."""
    global _memory_limit
    with session(limit):
        pass
    _memory_limit = limit


@contextlib.contextmanager
def session(memory_limit: str | None = None, threads: int = DEFAULT_THREADS,
            spill: str | Path | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB connection under `memory_limit` (None: the process's, see `set_memory_limit`), spilling
    to `spill` (default: a temporary folder)."""
    memory_limit = memory_limit or _memory_limit
    with contextlib.ExitStack() as stack:
        folder = spill or stack.enter_context(tempfile.TemporaryDirectory(prefix="llmrec-duckdb-"))
        conn = stack.enter_context(duckdb.connect())
        try:
            conn.execute("SET memory_limit = ?", [memory_limit])
        except duckdb.Error as exc:
            raise ValueError(f"DuckDB memory limit {memory_limit!r}: {str(exc).splitlines()[0]} (give e.g. '4GB')") \
                from exc
        conn.execute(f"SET threads = {int(threads)}")
        conn.execute("SET temp_directory = ?", [str(folder)])
        conn.execute("SET enable_progress_bar = false")
        conn.execute("SET TimeZone = 'UTC'")  # a timestamp without an offset is UTC, on any machine
        yield conn


ORDER = "_order"  # a frame's row position: ties keep the input order, as a stable sort would


def register(conn: duckdb.DuckDBPyConnection, name: str, frame: pd.DataFrame | pa.Table,
             columns: list[str] | None = None) -> int:
    """`frame` (pandas or Arrow; `columns` of it) as view `name`, with its row position in ORDER; returns its row
    count."""
    if isinstance(frame, pa.Table):
        table = frame.select(columns) if columns is not None else frame
    else:
        table = frame_table(frame[columns] if columns is not None else frame)
    table = table.append_column(ORDER, pa.array(np.arange(table.num_rows, dtype=np.int64)))
    conn.register(name, table)
    return table.num_rows

