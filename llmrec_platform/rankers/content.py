"""LLM content ranker: cosine between a user's interest vector and each item's text embedding."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_platform.embeddings import align
from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker


class LLMContentRanker(Ranker):
    """Scores every item, cold ones included, from text embeddings alone.

    `item_embeddings` (item_id, embedding) and `user_embeddings` (user_id, embedding) are unit-norm
    vectors from the same encoder; `fit` aligns them to the data's index space.
    """

    name = "llm_content"
    scores_cold_items = True

    def __init__(self, item_embeddings: pd.DataFrame, user_embeddings: pd.DataFrame, name: str | None = None):
        self._item_frame = item_embeddings[["item_id", "embedding"]]
        self._user_frame = user_embeddings[["user_id", "embedding"]]
        if name:
            self.name = name

    def _fit(self, data: InteractionData) -> None:
        self.item_vectors_ = align(data.item_ids, self._item_frame, "item_id", "items")
        self.user_vectors_ = align(data.user_ids, self._user_frame, "user_id", "users")
        del self._item_frame, self._user_frame  # keep the pickled ranker small

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.user_vectors_[users] @ self.item_vectors_.T
