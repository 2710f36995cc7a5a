"""LLM content ranker: how close each item's text embedding is to a history, in the encoder's space."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.vectors import align, normalize_rows, user_interest_vectors
from llmrec_platform.rankers.base import Histories, Ranker

TextEncode = Callable[[list[str]], np.ndarray]


class LLMContentRanker(Ranker):
    """Scores every item, cold ones included, from text embeddings alone:

        score(x, i) = (1 - w) * cos(interest_x, v_i) + w * nearest_x(i)
        nearest_x(i) = (1 - u) * max_{j in x} cos(v_j, v_i) + u * cos(t_x, v_i)    (u = 0 when x has no text)

    The interest vector of a history x is `user_interest_vectors` of it (rating- and recency-weighted, with
    `profile_weight` and `half_life_days` as the `user_embeddings` asset uses them), blended with the embedding
    t_x of the user's own text (profile, reviews, search queries), or of the query's `text` when it has one.
    It captures the overall taste; the nearest history item keeps niche tastes that a mean blurs away. The
    text weight u = `profile_weight` counts in both terms, so u = 0 ignores text and u = 1 ranks by the text
    alone (in the interest term only, a review about running shoes could not lift them past the history's
    own neighbours: benchmarks/user_texts.py). With no history and no text the answer is popularity.
    `item_embeddings` (item_id, embedding) and `profile_embeddings` (user_id, embedding; optional) are
    unit-norm vectors from the encoder named `encoder`, which encodes query text on first use.

    history_weight chosen on the ML-1M valid fold (recbole protocol, --cold-items 0.1), NDCG@10:
    0.0 -> 0.0155, 0.5 -> 0.0470, 0.8 -> 0.0480 (kept), 1.0 -> 0.0469. On the cold test slice the same
    weights give 0.1277, 0.2009, 0.1993 and 0.1911 (genre match 0.1291, random 0.0454).
    """

    name = "llm_content"
    scores_cold_items = True
    scores_text = True

    def __init__(self, item_embeddings: pd.DataFrame, profile_embeddings: pd.DataFrame | None = None,
                 history_weight: float = 0.8, profile_weight: float = 0.05, half_life_days: float = 365.0,
                 encoder: str | None = None, name: str | None = None):
        if not 0.0 <= history_weight <= 1.0:
            raise ValueError(f"history_weight must be in [0, 1], got {history_weight}")
        if not 0.0 <= profile_weight <= 1.0:
            raise ValueError(f"profile_weight must be in [0, 1], got {profile_weight}")
        self._item_frame = item_embeddings[["item_id", "embedding"]]
        self._profile_frame = None if profile_embeddings is None else profile_embeddings[["user_id", "embedding"]]
        self.history_weight = history_weight
        self.profile_weight = profile_weight
        self.half_life_days = half_life_days
        self.encoder = encoder
        if name:
            self.name = name

    def _fit(self, data: InteractionData) -> None:
        self.item_vectors_ = align(data.item_ids, self._item_frame, "item_id", "items")
        self.profile_vectors_ = np.zeros((data.n_users, self.item_vectors_.shape[1]), dtype=np.float32)
        if self._profile_frame is not None:
            known = self._profile_frame[self._profile_frame["user_id"].isin(data.user_ids)]
            if len(known):
                positions = pd.Index(data.user_ids).get_indexer(known["user_id"])
                self.profile_vectors_[positions] = np.stack(known["embedding"].to_numpy())
        del self._item_frame, self._profile_frame  # keep the pickled ranker small
        if self.history_weight > 0:
            self.item_similarity_ = self.item_vectors_ @ self.item_vectors_.T
        self.user_vectors_ = self.interest_vectors(self.training_histories(np.arange(data.n_users)))

    def set_text_encoder(self, encode: TextEncode) -> None:
        """Use `encode(texts) -> unit-norm vectors` for query text (instead of loading `encoder`); not pickled."""
        self.__dict__["_text_encode"] = encode

    def _encode(self, texts: list[str]) -> np.ndarray:
        if "_text_encode" not in self.__dict__:
            if not self.encoder:
                raise ValueError(f"{self.name}: a query has text but the ranker has no encoder: pass encoder= or "
                                 "call set_text_encoder()")
            from llmrec_platform.encoders.models import TextEncoder

            model = TextEncoder(self.encoder)
            self.set_text_encoder(lambda batch: model.encode(batch)[0])
        return np.asarray(self.__dict__["_text_encode"](texts), dtype=np.float32)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_text_encode"}

    def text_vectors(self, histories: Histories) -> np.ndarray:
        """Each history's text embedding: the query's text when it has one, else the user's own (zero: none)."""
        profiles = np.zeros((len(histories), self.item_vectors_.shape[1]), dtype=np.float32)
        known = histories.users >= 0
        profiles[known] = self.profile_vectors_[histories.users[known]]
        with_text = [row for row, text in enumerate(histories.texts) if text]
        if with_text:
            profiles[with_text] = self._encode([histories.texts[row] for row in with_text])
        return profiles

    def interest_vectors(self, histories: Histories, texts: np.ndarray | None = None) -> np.ndarray:
        """Unit-norm interest vectors of the histories, blended with each user's profile or the query text."""
        texts = self.text_vectors(histories) if texts is None else texts
        return user_interest_vectors(histories.ratings, histories.timestamps, self.item_vectors_, texts,
                                     profile_weight=self.profile_weight, half_life_days=self.half_life_days)

    def _score_histories(self, histories: Histories) -> np.ndarray:
        texts = self.text_vectors(histories)
        scores = self.interest_vectors(histories, texts) @ self.item_vectors_.T
        if self.history_weight == 0:
            return scores
        nearest = self.nearest_history_similarity(histories).astype(scores.dtype, copy=False)
        with_text = np.flatnonzero(np.linalg.norm(texts, axis=1) > 0) if self.profile_weight > 0 else []
        if len(with_text):
            text_scores = normalize_rows(texts[with_text]) @ self.item_vectors_.T
            u = self.profile_weight
            nearest[with_text] = (1.0 - u) * nearest[with_text] + u * text_scores
        return (1.0 - self.history_weight) * scores + self.history_weight * nearest

    def nearest_history_similarity(self, histories: Histories) -> np.ndarray:
        """Each item's highest cosine with any item of each history (0 for an empty history)."""
        nearest = np.zeros((len(histories), len(self.item_vectors_)), dtype=self.item_similarity_.dtype)
        ratings = histories.ratings
        for row in range(len(histories)):
            history = ratings.indices[ratings.indptr[row]:ratings.indptr[row + 1]]
            if len(history):
                nearest[row] = self.item_similarity_[history].max(axis=0)
        return nearest

    def _similar_item_scores(self, position: int) -> np.ndarray:
        return self.item_vectors_ @ self.item_vectors_[position]
