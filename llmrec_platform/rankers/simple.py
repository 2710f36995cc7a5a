"""Reference rankers: popularity (the bar every model must clear) and seeded random (the floor)."""

from __future__ import annotations

import zlib

import numpy as np

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.privacy.dp import CountRelease
from llmrec_platform.rankers.base import Histories, Query, Ranker


class PopularityRanker(Ranker):
    """Scores items by their number of training interactions, whatever the history. With a `release` of finite
    epsilon, by those counts released with differential privacy (one interaction changes one count)."""

    name = "popularity"
    release: CountRelease | None = None
    released_popularity_: np.ndarray | None = None  # None: the exact counts

    def __init__(self, release: CountRelease | None = None):
        self.release = release

    def _fit(self, data: InteractionData) -> None:
        exact = self.release is None or self.release.exact
        self.released_popularity_ = None if exact else \
            self.release.release(self.popularity_, stream="popularity").astype(np.float32)

    def _score_histories(self, histories: Histories) -> np.ndarray:
        scores = self.popularity_ if self.released_popularity_ is None else self.released_popularity_
        return np.broadcast_to(scores, (len(histories), len(scores))).copy()


class RandomRanker(Ranker):
    """Uniform random scores, seeded per user so a user's list is the same however users are batched.

    A training user's seed is their position; any other query's is a digest of its user id (or 0).
    """

    name = "random"
    scores_cold_items = True

    def __init__(self, seed: int = 2020):
        self.seed = seed

    def _fit(self, data: InteractionData) -> None:
        pass

    def _user_seed(self, position: int, user_id: str | None) -> int:
        return position if position >= 0 else len(self.user_ids_) + zlib.crc32(str(user_id or "").encode())

    def _draw(self, user_seed: int) -> np.ndarray:
        return np.random.default_rng([self.seed, user_seed]).random(len(self.item_ids_), dtype=np.float32)

    def _score_histories(self, histories: Histories) -> np.ndarray:
        return np.stack([self._draw(self._user_seed(int(u), None)) for u in histories.users]) if len(histories) \
            else np.empty((0, len(self.item_ids_)), dtype=np.float32)

    def _cold_start_scores(self, query: Query) -> np.ndarray:
        return self._draw(self._user_seed(-1, query.user_id))
