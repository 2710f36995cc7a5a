"""Item-based k-nearest-neighbours with shrunk cosine similarity (RecBole's ItemKNN)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker


def binarize(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """The same sparsity pattern with every stored value set to 1 (float32), explicit zeros dropped."""
    binary = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
    binary.eliminate_zeros()
    binary.data[:] = 1.0
    return binary


class ItemKNNRanker(Ranker):
    """score(u, i) = sum of sim(i, j) over the training items j of u that are among i's k nearest neighbours.

    sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) * sqrt(|U_j|) + shrink) on the binarized training matrix, the
    item itself excluded; only the k most similar items per target item are kept (as RecBole's
    ComputeSimilarity, whose W[j, i] holds the neighbours j of item i). Similarities are computed in
    blocks of `block_size` target items so memory stays O(block_size * n_items + k * n_items).

    Defaults tuned on the ML-1M valid fold (RecBole protocol, seed 2020), NDCG@10 on valid:
      k:  50 -> 0.2215, 100 -> 0.2250, 200 -> 0.2246, 400 -> 0.2206  (shrink 0)
      shrink (k=100): 0 -> 0.2250, 10 -> 0.2250, 50 -> 0.2250, 100 -> 0.2249
    """

    name = "itemknn"

    def __init__(self, k: int = 100, shrink: float = 0.0, block_size: int = 1024):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if shrink < 0:
            raise ValueError(f"shrink must be >= 0, got {shrink}")
        self.k = k
        self.shrink = shrink
        self.block_size = block_size

    def _fit(self, data: InteractionData) -> None:
        x = binarize(data.train)
        n_items = x.shape[1]
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0), dtype=np.float64).ravel())
        k = min(self.k, max(n_items - 1, 1))
        rows, cols, values = [], [], []
        for start in range(0, n_items, self.block_size):
            stop = min(start + self.block_size, n_items)
            targets = np.arange(start, stop)
            dots = (xt[start:stop] @ x).toarray().astype(np.float64)  # (block, n_items) co-occurrence counts
            sims = dots / (norms[targets, None] * norms[None, :] + self.shrink + 1e-6)
            sims[np.arange(len(targets)), targets] = 0.0
            neighbours = np.argpartition(-sims, k - 1, axis=1)[:, :k]
            top = np.take_along_axis(sims, neighbours, axis=1)
            keep = top > 0
            rows.append(neighbours[keep])
            cols.append(np.broadcast_to(targets[:, None], neighbours.shape)[keep])
            values.append(top[keep].astype(np.float32))
        # similarity_[j, i] = sim(i, j) for the neighbours j of target item i, so scores = X_u @ similarity_.
        self.similarity_ = sp.csr_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(n_items, n_items),
            dtype=np.float32,
        )
        self.train_binary_ = x

    def _score(self, users: np.ndarray) -> np.ndarray:
        return (self.train_binary_[users] @ self.similarity_).toarray()
