"""Index spaces and sparse matrices shared by rankers and evaluation (no Dagster, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class InteractionData:
    """Users x items matrices of one split, all in one index space.

    `user_ids` / `item_ids` map positions to external ids. The item space holds every item of the split,
    including cold items that never appear in `train`.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix  # rating values
    train_timestamps: sp.csr_matrix
    valid: sp.csr_matrix  # binary relevance
    test: sp.csr_matrix

    @classmethod
    def from_split(cls, split: pd.DataFrame | pa.Table, batch_rows: int = 1_000_000) -> InteractionData:
        """The matrices of a split (SPLIT_COLUMNS; pandas or Arrow). DuckDB numbers the users and items (ids
        sorted) and hands the rows over in Arrow batches of positions and values, so no id string is made per
        row in Python; each fold's CSR matrix is built from them."""
        from llmrec_platform.data.duck import register, session

        with session() as conn:
            register(conn, "split_in", split, ["user_id", "item_id", "rating", "timestamp", "fold"])
            for side in ("user", "item"):
                conn.execute(f"CREATE TEMP TABLE {side}s AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS pos "
                             f"FROM (SELECT DISTINCT CAST({side}_id AS VARCHAR) AS id FROM split_in)")
            ids = [np.array(conn.sql(f"SELECT id FROM {side}s ORDER BY pos").to_arrow_table()["id"].to_pylist(), dtype=object)
                   for side in ("user", "item")]
            shape = (len(ids[0]), len(ids[1]))
            parts: dict[str, list] = {fold: [] for fold in ("train", "valid", "test")}
            reader = conn.sql("""
                SELECT CAST(u.pos AS INTEGER) AS u, CAST(i.pos AS INTEGER) AS i, CAST(s.rating AS FLOAT) AS rating,
                       CAST(s.timestamp AS DOUBLE) AS timestamp, s.fold
                FROM split_in s JOIN users u ON CAST(s.user_id AS VARCHAR) = u.id
                JOIN items i ON CAST(s.item_id AS VARCHAR) = i.id""").to_arrow_reader(batch_rows)
            for batch in reader:
                fold = batch.column("fold").to_numpy(zero_copy_only=False)
                columns = [batch.column(c).to_numpy() for c in ("u", "i", "rating", "timestamp")]
                for name, rows in parts.items():
                    mask = fold == name
                    rows.append([c[mask] for c in columns])

        def matrix(fold: str, value: int | None) -> sp.csr_matrix:
            rows = parts[fold]
            users, items = (np.concatenate([r[k] for r in rows]) if rows else np.array([], np.int32) for k in (0, 1))
            values = (np.concatenate([r[value] for r in rows]) if value is not None
                      else np.ones(len(users), dtype=np.float32))
            return sp.csr_matrix((values, (users, items)), shape=shape)

        return cls(user_ids=ids[0], item_ids=ids[1], train=matrix("train", 2), train_timestamps=matrix("train", 3),
                   valid=matrix("valid", None), test=matrix("test", None))

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def seen_before(self, fold: str) -> tuple[sp.csr_matrix, ...]:
        """The folds a user has already interacted with when ranking for `fold`: train, plus valid for test."""
        if fold == "valid":
            return (self.train,)
        if fold == "test":
            return (self.train, self.valid)
        raise ValueError(f"unknown fold {fold!r}: use 'valid' or 'test'")

    def relevant(self, fold: str) -> sp.csr_matrix:
        return {"valid": self.valid, "test": self.test}[fold]

    def cold_item_mask(self) -> np.ndarray:
        return np.asarray(self.train.getnnz(axis=0) == 0)


def binarize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The same sparsity pattern with every stored value set to 1 (float32), explicit zeros dropped."""
    binary = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    binary.eliminate_zeros()
    binary.data[:] = 1.0
    return binary
