"""Index spaces and sparse matrices shared by rankers and evaluation (no Dagster, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

if TYPE_CHECKING:
    import pandas as pd


FOLD_CODES = {"train": 0, "valid": 1, "test": 2}


class _CsrBuilder:
    """One fold's CSR arrays, appended from batches of (user, item, rating, timestamp) rows sorted by user and item:
    row counts per user, column indices and values, concatenated once at the end."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.row_counts = np.zeros(shape[0], dtype=np.int64)
        self.parts: dict[str, list[np.ndarray]] = {"indices": [], "rating": [], "timestamp": []}

    def append(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray, stamps: np.ndarray) -> None:
        self.row_counts += np.bincount(users, minlength=self.shape[0])
        for name, values in (("indices", items), ("rating", ratings), ("timestamp", stamps)):
            self.parts[name].append(values)

    def matrix(self, value: str | None) -> sp.csr_matrix:
        """The CSR matrix of `value` (None: 1 per row, binary relevance); duplicates summed (scipy's canonical form)."""
        nnz = int(self.row_counts.sum())
        index_type = np.int32 if max(nnz, self.shape[1]) < 2**31 else np.int64
        indptr = np.zeros(self.shape[0] + 1, dtype=index_type)
        np.cumsum(self.row_counts, out=indptr[1:])
        indices = np.concatenate(self.parts["indices"]).astype(index_type, copy=False) if nnz else \
            np.zeros(0, dtype=index_type)
        if value is None:
            data = np.ones(nnz, dtype=np.float32)
        else:
            data = np.concatenate(self.parts[value]) if nnz else np.zeros(0, np.float32 if value == "rating" else np.float64)
        matrix = sp.csr_matrix((data, indices, indptr), shape=self.shape)
        matrix.sum_duplicates()  # a no-op check when (as in every split) each pair is once per fold
        return matrix


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
        """The matrices of a split (SPLIT_COLUMNS; Arrow, or pandas). DuckDB numbers the users and items (ids
        sorted) and hands the rows over in Arrow batches of positions and values, sorted by (fold, user, item), so
        each fold's CSR arrays are appended batch by batch: no id string is made per row in Python, and there is no
        COO copy to convert. A user-item pair twice in a fold adds up, as scipy's COO conversion does."""
        from llmrec_platform.data.duck import register, session

        with session() as conn:
            register(conn, "split_in", split, ["user_id", "item_id", "rating", "timestamp", "fold"])
            for side in ("user", "item"):
                conn.execute(f"CREATE TEMP TABLE {side}s AS SELECT id, row_number() OVER (ORDER BY id) - 1 AS pos "
                             f"FROM (SELECT DISTINCT CAST({side}_id AS VARCHAR) AS id FROM split_in)")
            ids = [np.array(conn.sql(f"SELECT id FROM {side}s ORDER BY pos").to_arrow_table()["id"].to_pylist(), dtype=object)
                   for side in ("user", "item")]
            shape = (len(ids[0]), len(ids[1]))
            folds = {fold: _CsrBuilder(shape) for fold in FOLD_CODES}
            reader = conn.sql(f"""
                SELECT CAST(CASE s.fold {" ".join(f"WHEN '{f}' THEN {c}" for f, c in FOLD_CODES.items())} END AS TINYINT)
                           AS f,
                       CAST(u.pos AS INTEGER) AS u, CAST(i.pos AS INTEGER) AS i, CAST(s.rating AS FLOAT) AS rating,
                       CAST(s.timestamp AS DOUBLE) AS timestamp
                FROM split_in s JOIN users u ON CAST(s.user_id AS VARCHAR) = u.id
                JOIN items i ON CAST(s.item_id AS VARCHAR) = i.id
                WHERE s.fold IN ({", ".join(f"'{f}'" for f in FOLD_CODES)})
                ORDER BY f, u, i""").to_arrow_reader(batch_rows)
            for batch in reader:
                code, users, items, ratings, stamps = (batch.column(c).to_numpy() for c in range(5))
                cuts = np.searchsorted(code, np.arange(len(FOLD_CODES) + 1))  # the batch is sorted by fold
                for fold, start, end in zip(FOLD_CODES, cuts[:-1], cuts[1:], strict=True):
                    if end > start:
                        folds[fold].append(users[start:end], items[start:end], ratings[start:end], stamps[start:end])
        return cls(user_ids=ids[0], item_ids=ids[1], train=folds["train"].matrix("rating"),
                   train_timestamps=folds["train"].matrix("timestamp"), valid=folds["valid"].matrix(None),
                   test=folds["test"].matrix(None))

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
