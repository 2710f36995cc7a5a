"""Short-term interest: what a user just did moves the next list at once (no Dagster).

A long history dominates fold-in: three fresh clicks barely move EASE's x·B. The blend adds a short-term
component to the champion's scores: the similarity of every item to the user's latest interactions
(recency-weighted), half from the language-model vectors and half from the ranker's own item-item similarity
(`similar_items`). Each part is standardized per user (zero mean, unit variance over the item space), so
`weight` means the same for every ranker. Serving and the replay evaluation
(`evaluation/replay.py`, which chose the defaults) call the same `ShortTermBlend.apply`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ShortTermBlend:
    weight: float = 1.0  # how much the short-term component counts against the (standardized) champion
    recent: int = 5  # how many of the latest distinct items form the short-term interest
    decay: float = 0.5  # weight of each older item relative to the next newer one (the latest counts 1)
    llm_share: float = 0.5  # share of the language-model similarity; the rest is the ranker's item-item similarity

    def __post_init__(self):
        if self.weight < 0 or self.recent < 0 or not 0 < self.decay <= 1 or not 0 <= self.llm_share <= 1:
            raise ValueError(f"short-term blend needs weight >= 0, recent >= 0, 0 < decay <= 1 and 0 <= llm_share <= 1, "
                             f"got {self}")

    @property
    def active(self) -> bool:
        return self.weight > 0 and self.recent > 0

    def apply(self, scores: np.ndarray, latest: Sequence[Sequence[int]], item_vectors: np.ndarray | None,
              item_similarity: Callable[[int], np.ndarray] | None) -> np.ndarray:
        """Blended scores, (n, n_items) float32. `latest[r]` lists row r's item positions, newest first (only
        the first `recent` count); `item_vectors` are unit-norm rows in the same item order, and
        `item_similarity(p)` is the ranker's similarity of every item to item p (`Ranker._similar_item_scores`).
        Either may be None: the other source then carries the whole short-term component."""
        scores = np.atleast_2d(np.asarray(scores, dtype=np.float32))
        if not self.active:
            return scores
        sources = [(share, similarity) for share, similarity in (
            # Both are linear in the weights: sum_j w_j sim(item, p_j), computed as one matrix-vector product.
            (self.llm_share, None if item_vectors is None else lambda p, w: item_vectors @ (w @ item_vectors[p])),
            (1 - self.llm_share, None if item_similarity is None else
             lambda p, w: w @ np.stack([item_similarity(q) for q in p])),
        ) if share > 0 and similarity is not None]
        total = sum(share for share, _ in sources)
        blended = scores.copy()
        for row, positions in enumerate(latest):
            positions = np.asarray(positions[: self.recent], dtype=np.int64)
            if not len(positions) or not sources:
                continue
            weights = self.decay ** np.arange(len(positions), dtype=np.float32)
            short_term = sum(share / total * standardize(similarity(positions, weights)[None, :])[0]
                             for share, similarity in sources)
            blended[row] = standardize(scores[row][None, :])[0] + self.weight * short_term
        return blended.astype(np.float32)


def standardize(scores: np.ndarray) -> np.ndarray:
    """Each row to zero mean and unit variance (a constant row becomes zeros)."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std(axis=1, keepdims=True)
    return (scores - scores.mean(axis=1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def latest_positions(item_positions: np.ndarray, timestamps: np.ndarray, limit: int) -> list[int]:
    """The `limit` most recent distinct item positions, newest first (ties: later in the sequence is newer)."""
    order = np.lexsort((np.arange(len(timestamps)), np.asarray(timestamps, dtype=np.float64)))[::-1]
    seen: list[int] = []
    for position in np.asarray(item_positions)[order]:
        if int(position) not in seen:
            seen.append(int(position))
            if len(seen) == limit:
                break
    return seen
