"""Reference rankers: popularity (the bar every model must clear) and seeded random (the floor)."""

from __future__ import annotations

import numpy as np

from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker


class PopularityRanker(Ranker):
    """Scores items by their number of training interactions."""

    name = "popularity"

    def _fit(self, data: InteractionData) -> None:
        self.item_counts_ = np.asarray(data.train.getnnz(axis=0), dtype=np.float32)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.item_counts_, (len(users), len(self.item_counts_))).copy()


class RandomRanker(Ranker):
    """Uniform random scores, seeded per user so a user's list is the same however users are batched."""

    name = "random"
    scores_cold_items = True

    def __init__(self, seed: int = 2020):
        self.seed = seed

    def _fit(self, data: InteractionData) -> None:
        self.n_items_ = data.n_items

    def _score(self, users: np.ndarray) -> np.ndarray:
        return np.stack([
            np.random.default_rng([self.seed, int(u)]).random(self.n_items_, dtype=np.float32) for u in users
        ]) if len(users) else np.empty((0, self.n_items_), dtype=np.float32)
