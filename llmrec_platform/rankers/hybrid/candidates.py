"""Stage 1 of the hybrid: the union of the top-n unseen items of each candidate ranker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llmrec_platform.rankers.base import Ranker, top_k
from llmrec_platform.rankers.hybrid.batch import UserBatch


@dataclass(frozen=True)
class Candidates:
    """(row, item) pairs in row order, and every candidate ranker's full scores and ranks (depth 2n; deeper
    items rank 2n + 1) for the batch. Seen items score -inf in `scores`."""

    rows: np.ndarray
    items: np.ndarray
    scores: list[np.ndarray]
    ranks: list[np.ndarray]


def retrieve(batch: UserBatch, rankers: dict[str, Ranker], seen: sp.csr_matrix, n: int) -> Candidates:
    """Candidates of each history of `batch`: the union of every ranker's top `n` items it has not seen."""
    seen = seen.tocoo()
    scores, ranks = [], []
    candidate = np.zeros(seen.shape, dtype=bool)
    depth = 2 * n
    for ranker in rankers.values():
        s = batch.scores(ranker)
        s[seen.row, seen.col] = -np.inf
        top = top_k(s, depth)
        rank = np.full(s.shape, depth + 1, dtype=np.float32)
        np.put_along_axis(rank, top, np.arange(1, top.shape[1] + 1, dtype=np.float32)[None, :], axis=1)
        np.put_along_axis(candidate, top[:, :n], True, axis=1)
        scores.append(s)
        ranks.append(rank)
    candidate[seen.row, seen.col] = False
    rows, items = np.nonzero(candidate)
    return Candidates(rows, items, scores, ranks)
