"""Stage 1 of the hybrid: the union of the top-n unseen items of each candidate ranker."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llmrec_platform.rankers.base import Ranker, top_k
from llmrec_platform.rankers.hybrid.batch import UserBatch


@dataclass(frozen=True)
class Candidates:
    """(row, item) pairs in row order; every candidate ranker's score and rank (depth 2n; deeper items rank 2n + 1)
    of each pair; and the first candidate ranker's full scores of the batch (seen items -inf), which order the items
    that are not candidates. Only that one users x items matrix outlives `retrieve`."""

    rows: np.ndarray
    items: np.ndarray
    scores: list[np.ndarray]  # per candidate ranker, float32, one value per pair
    ranks: list[np.ndarray]  # per candidate ranker, float32, one value per pair
    first_scores: np.ndarray


def retrieve(batch: UserBatch, rankers: dict[str, Ranker], seen: sp.csr_matrix, n: int) -> Candidates:
    """Candidates of each history of `batch`: the union of every ranker's top `n` items it has not seen."""
    seen = seen.tocoo()
    scores, tops = [], []
    candidate = np.zeros(seen.shape, dtype=bool)
    depth = 2 * n
    for ranker in rankers.values():
        s = batch.scores(ranker)
        s[seen.row, seen.col] = -np.inf
        top = top_k(s, depth)
        np.put_along_axis(candidate, top[:, :n], True, axis=1)
        scores.append(s)
        tops.append(top)
    candidate[seen.row, seen.col] = False
    rows, items = np.nonzero(candidate)
    pair_keys = rows.astype(np.int64) * seen.shape[1] + items
    values, ranks = [], []
    for s, top in zip(scores, tops, strict=True):
        values.append(s[rows, items])
        ranks.append(rank_of_pairs(top, pair_keys, seen.shape[1], depth))
    return Candidates(rows, items, values, ranks, scores[0])


def rank_of_pairs(top: np.ndarray, pair_keys: np.ndarray, n_items: int, depth: int) -> np.ndarray:
    """The 1-based place of each (row, item) pair (key row * n_items + item) in its row of `top` (a ranker's top
    items per row), or depth + 1 where the item is not there."""
    top_keys = (np.arange(top.shape[0], dtype=np.int64)[:, None] * n_items + top).ravel()
    places = np.tile(np.arange(1, top.shape[1] + 1, dtype=np.float32), top.shape[0])
    order = np.argsort(top_keys, kind="stable")
    sorted_keys = top_keys[order]
    found = np.minimum(np.searchsorted(sorted_keys, pair_keys), max(len(sorted_keys) - 1, 0))
    rank = np.full(len(pair_keys), depth + 1, dtype=np.float32)
    hit = sorted_keys[found] == pair_keys if len(sorted_keys) else np.zeros(len(pair_keys), dtype=bool)
    rank[hit] = places[order[found[hit]]]
    return rank
