"""Index spaces and sparse matrices shared by rankers and evaluation (no Dagster, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp


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
    def from_split(cls, split: pd.DataFrame) -> InteractionData:
        user_ids = np.array(sorted(split["user_id"].astype(str).unique()), dtype=object)
        item_ids = np.array(sorted(split["item_id"].astype(str).unique()), dtype=object)
        user_pos = pd.Index(user_ids).get_indexer(split["user_id"].astype(str))
        item_pos = pd.Index(item_ids).get_indexer(split["item_id"].astype(str))
        shape = (len(user_ids), len(item_ids))

        def matrix(fold: str, values: np.ndarray) -> sp.csr_matrix:
            mask = (split["fold"] == fold).to_numpy()
            return sp.csr_matrix((values[mask], (user_pos[mask], item_pos[mask])), shape=shape)

        ratings = split["rating"].to_numpy(dtype=np.float32)
        ones = np.ones(len(split), dtype=np.float32)
        return cls(
            user_ids=user_ids,
            item_ids=item_ids,
            train=matrix("train", ratings),
            train_timestamps=matrix("train", split["timestamp"].to_numpy(dtype=np.float64)),
            valid=matrix("valid", ones),
            test=matrix("test", ones),
        )

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
