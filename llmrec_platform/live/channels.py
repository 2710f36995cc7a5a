"""The live ranking: several candidate channels merged by one score over the whole catalogue (no Dagster).

A user's next list draws on three channels, each standardized per user over the item space (zero mean, unit
variance), so that their scores sit on one scale:

- long-term: the champion's fold-in of the whole history, for the champion's items (catalogue positions
  [0, n)); catalogue items the champion cannot score (filtered, cold, added live) get the content score of the
  history's text centroid instead, `content_offset` standard deviations lower (they have no collaborative evidence);
- short-term: the similarity of every item to the latest `recent` events that are **newer than the champion's
  training timeline** (`horizon`), recency-weighted (`decay`), `llm_share` from the language-model vectors and the
  rest from the champion's item-item similarity (the vectors alone beyond the champion's items);
- the per-user weight of the short-term channel grows with how far those events are from the long-term profile:
  `weight * (1 + shift_weight * (1 - cos(recent-events centroid, long-term centroid)))` in the text space.

Where no event is newer than the horizon (a random split interleaves held-out events with the history), the list
is the champion's own order. Serving (`LiveService`) and the replay evaluation (`evaluation/replay.py`) call the same
`LiveRanking.scores`; a request does a few O(n_items) numpy passes and builds no scipy object.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtri

SCALES = ("rank", "z")


@dataclass(frozen=True)
class LiveRanking:
    weight: float = 1.0  # weight of the short-term channel against the standardized long-term one; 0 turns the
    #                      live ranking off (the champion's raw scores, its items only)
    recent: int = 5  # how many of the latest distinct short-term items form the short-term interest
    decay: float = 0.5  # weight of each older recent item relative to the next newer one (the latest counts 1)
    llm_share: float = 0.5  # share of the language-model similarity; the rest is the ranker's item-item similarity
    shift_weight: float = 5.0  # relative extra short-term weight per unit of distance from the long-term interest
    content_offset: float = 1.0  # how many standard deviations a content-only item starts below a champion item
    scale: str = "rank"  # how a channel is put on the common scale: "rank" (normal scores of the ranks) or "z"

    def __post_init__(self):
        if (self.weight < 0 or self.shift_weight < 0 or self.recent < 0 or not 0 < self.decay <= 1
                or not 0 <= self.llm_share <= 1 or self.scale not in SCALES):
            raise ValueError(f"live ranking needs weight >= 0, shift_weight >= 0, recent >= 0, 0 < decay <= 1, "
                             f"0 <= llm_share <= 1 and a scale in {SCALES}, got {self}")

    def standardize(self, scores: np.ndarray) -> np.ndarray:
        """One channel's scores on the common scale (zero mean, unit variance over the item space)."""
        return normal_scores(scores) if self.scale == "rank" else standardize(scores)

    @property
    def active(self) -> bool:
        return self.weight > 0 and self.recent > 0

    def scores(self, champion_scores: np.ndarray, n_catalogue: int, positions: np.ndarray, timestamps: np.ndarray,
               horizon: float, item_vectors: np.ndarray | None,
               item_similarity: Callable[[int], np.ndarray] | None, memo: dict | None = None) -> np.ndarray:
        """One user's scores over the catalogue, (n_catalogue,) float32.

        `champion_scores` (n,) is the champion's fold-in over catalogue positions [0, n); `positions` and
        `timestamps` are the user's history in catalogue positions (any item, one entry per item); events with a
        timestamp above `horizon` are short-term. `item_vectors` are unit-norm catalogue rows (None: no text
        channel); `item_similarity(p)` the champion's similarity of its n items to its item p. `memo`: a dict the
        caller keeps for this user while these inputs stay the same; the long-term channel's two full-catalogue
        passes (the champion's rank order, the content scores) are kept in it, so a repeated list skips them."""
        champion_scores = np.asarray(champion_scores, dtype=np.float32)
        n = len(champion_scores)
        if not self.active:
            return _pad(champion_scores, n_catalogue)
        positions = np.asarray(positions, dtype=np.int64)
        timestamps = np.asarray(timestamps, dtype=np.float64)
        vectors = item_vectors if item_vectors is not None and len(item_vectors) == n_catalogue else None
        long_term = np.empty(n_catalogue, dtype=np.float64)
        long_term[:n] = self._standardize_memo(champion_scores, memo)
        if n_catalogue > n:
            content = None if memo is None else memo.get("content")
            if content is None:
                content = self._content(long_term[:n], positions, vectors, n, n_catalogue)
                if memo is not None:
                    content.flags.writeable = False
                    memo["content"] = content
            long_term[n:] = content
        newer = timestamps > horizon
        recent = latest_positions(positions[newer], timestamps[newer], self.recent)
        if not len(recent) or (vectors is None and item_similarity is None):
            return long_term.astype(np.float32) if n_catalogue > n else champion_scores
        weights = self.decay ** np.arange(len(recent), dtype=np.float64)
        text = self.standardize(vectors @ (weights @ vectors[recent]).astype(vectors.dtype)) if vectors is not None else None
        in_champion = recent < n
        item = None
        if item_similarity is not None and in_champion.any():
            rows = np.stack([np.asarray(item_similarity(int(p)), dtype=np.float64) for p in recent[in_champion]])
            item = np.empty(n_catalogue, dtype=np.float64)
            item[:n] = self.standardize(weights[in_champion] @ rows)
            if n_catalogue > n:  # the champion cannot relate its items to the rest: text carries those
                item[n:] = text[n:] if text is not None else long_term[n:].min()
        if text is None or item is None:
            short_term = text if item is None else item
        else:
            short_term = self.llm_share * text + (1 - self.llm_share) * item
        older = positions[~newer]
        user_weight = self.weight * (1 + self.shift_weight * _distance(vectors, recent, older))
        return (long_term + user_weight * short_term).astype(np.float32)

    def _standardize_memo(self, scores: np.ndarray, memo: dict | None) -> np.ndarray:
        """`standardize`, with the rank order of the scale "rank" kept in `memo` (2 bytes an item below 32,768)."""
        if memo is None or self.scale != "rank":
            return self.standardize(scores)
        order = memo.get("order")
        if order is None:
            order = rank_order(scores)
            order = memo["order"] = order.astype(np.int16 if len(order) <= np.iinfo(np.int16).max else np.int32)
        return ordered_normal_scores(order)

    def _content(self, champion_z: np.ndarray, positions: np.ndarray, vectors: np.ndarray | None, n: int,
                 size: int) -> np.ndarray:
        """Long-term scores of the catalogue items beyond the champion's: the history's text centroid, on the
        champion's scale and `content_offset` below it; the lowest champion score when there is no text."""
        floor = float(champion_z.min(initial=0.0))
        if vectors is None or not len(positions):
            return np.full(size - n, floor)
        content = self.standardize(vectors @ vectors[positions].mean(axis=0))
        return content[n:] - self.content_offset


def _pad(scores: np.ndarray, size: int) -> np.ndarray:
    """Champion scores over a larger catalogue: the items it cannot score rank below all of its own."""
    if size == len(scores):
        return scores
    low = float(scores.min(initial=0.0)) - 1.0
    return np.r_[scores, np.full(size - len(scores), low, dtype=np.float32)].astype(np.float32)


def _distance(vectors: np.ndarray | None, recent: np.ndarray, older: np.ndarray) -> float:
    """1 - cosine between the recent items' and the older items' text centroids (1 when either is missing)."""
    if vectors is None or not len(older):
        return 1.0
    a, b = vectors[recent].mean(axis=0), vectors[older].mean(axis=0)
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return 1.0 - float(a @ b) / norm if norm > 0 else 1.0


def standardize(scores: np.ndarray) -> np.ndarray:
    """A score vector (or each row of a matrix) to zero mean and unit variance (a constant one becomes zeros)."""
    scores = np.asarray(scores, dtype=np.float64)
    spread = scores.std(axis=-1, keepdims=True)
    return (scores - scores.mean(axis=-1, keepdims=True)) / np.where(spread > 0, spread, 1.0)


def normal_scores(scores: np.ndarray) -> np.ndarray:
    """Each item's rank mapped to the standard normal quantile (the best of n at about the 1 - 1/(n+1) quantile):
    a channel with a heavy tail (a champion's fold-in) and one without (text similarity) get the same spread at the
    top, where the list is decided. Ties are broken by position, as `top_k` breaks them."""
    return ordered_normal_scores(rank_order(scores))


def rank_order(scores: np.ndarray) -> np.ndarray:
    """The positions from the best score to the worst, ties by position."""
    return np.argsort(-np.asarray(scores), kind="stable")


def ordered_normal_scores(order: np.ndarray) -> np.ndarray:
    """`normal_scores` of the scores whose `rank_order` this is."""
    out = np.empty(len(order), dtype=np.float64)
    out[order] = _normal_table(len(order))
    return out


@functools.lru_cache(maxsize=32)
def _normal_table(n: int) -> np.ndarray:
    """The normal scores of ranks 1..n, best first (read-only: shared between requests)."""
    table = -ndtri(np.arange(1, n + 1) / (n + 1.0))
    table.flags.writeable = False
    return table


def latest_positions(item_positions: np.ndarray, timestamps: np.ndarray, limit: int) -> np.ndarray:
    """The `limit` most recent distinct item positions, newest first (ties: later in the sequence is newer)."""
    order = np.lexsort((np.arange(len(timestamps)), np.asarray(timestamps, dtype=np.float64)))[::-1]
    newest = np.asarray(item_positions, dtype=np.int64)[order]
    _, first = np.unique(newest, return_index=True)
    return newest[np.sort(first)][:limit]


def one_per_item(positions: np.ndarray, ratings: np.ndarray, timestamps: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One entry per item, its latest interaction (by timestamp, then order), sorted by position: what
    `Ranker.histories` keeps of a history."""
    positions = np.asarray(positions, dtype=np.int64)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    newest_first = np.lexsort((np.arange(len(timestamps)), timestamps))[::-1]
    _, first = np.unique(positions[newest_first], return_index=True)
    chosen = newest_first[first]
    return positions[chosen], np.asarray(ratings)[chosen], timestamps[chosen]


def training_horizon(ranker) -> float:
    """The end of a ranker's training timeline: events after it are new to the ranker (short-term)."""
    stamps = getattr(ranker, "train_timestamps_", None)
    return float(stamps.data.max()) if stamps is not None and stamps.nnz else -np.inf
