"""LLM content ranker: how close each item's text embedding is to a history, in the encoder's space."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.vectors import align, normalize_rows, user_interest_vectors
from llmrec_platform.rankers.base import Histories, ItemInputs, Ranker
from llmrec_platform.retrieval import DEFAULT_ANN_MIN_ITEMS, VectorIndex

DENSE_SIMILARITY_MAX_ITEMS = 20_000  # items x items float32 similarities: 1.6 GB at 20k items (LLMREC_DENSE_MAX_ITEMS)

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

    Size: up to `dense_max_items` items nearest_x(i) reads a dense items x items similarity matrix (exact). Above
    it each item keeps its `neighbours` nearest items (found by `VectorIndex`: exact below `ann_min_items`, faiss
    HNSW above), and nearest_x(i) is 0 for an item outside every history item's list. `similar_items` and
    `retrieve` use the same index. `retrieval_note_` says which path a fit took.
    """

    name = "llm_content"
    scores_cold_items = True
    scores_text = True

    def __init__(self, item_embeddings: pd.DataFrame, profile_embeddings: pd.DataFrame | None = None,
                 history_weight: float = 0.8, profile_weight: float = 0.05, half_life_days: float = 365.0,
                 encoder: str | None = None, name: str | None = None,
                 dense_max_items: int = DENSE_SIMILARITY_MAX_ITEMS, ann_min_items: int = DEFAULT_ANN_MIN_ITEMS,
                 neighbours: int = 100):
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
        self.dense_max_items = dense_max_items
        self.ann_min_items = ann_min_items
        self.neighbours = neighbours
        if name:
            self.name = name

    def refit_elsewhere(self, data: InteractionData, items: ItemInputs) -> LLMContentRanker:
        """The item and profile vectors are not kept after fitting: built again from `items`."""
        return LLMContentRanker(items.item_embeddings, items.profiles, history_weight=self.history_weight,
                                profile_weight=self.profile_weight, half_life_days=self.half_life_days,
                                encoder=self.encoder, name=self.name, dense_max_items=self.dense_max_items,
                                ann_min_items=self.ann_min_items, neighbours=self.neighbours).fit(data)

    def _fit(self, data: InteractionData) -> None:
        self.item_vectors_ = align(data.item_ids, self._item_frame, "item_id", "items")
        self.profile_vectors_ = np.zeros((data.n_users, self.item_vectors_.shape[1]), dtype=np.float32)
        if self._profile_frame is not None:
            known = self._profile_frame[self._profile_frame["user_id"].isin(data.user_ids)]
            if len(known):
                positions = pd.Index(data.user_ids).get_indexer(known["user_id"])
                self.profile_vectors_[positions] = np.stack(known["embedding"].to_numpy())
        del self._item_frame, self._profile_frame  # keep the pickled ranker small
        self.item_index_ = VectorIndex(self.item_vectors_, self.ann_min_items)
        n_items = len(self.item_vectors_)
        self.retrieval_note_ = f"{self.name}: {self.item_index_.describe()}"
        if self.item_index_.approximate:  # measured once per fit: the share of the exact top 100 the index finds
            self.retrieval_recall_ = self.item_index_.recall_at(k=100, sample=1000, seed=0)
            self.retrieval_note_ += f", recall@100 against exact search {self.retrieval_recall_:.4f} (1,000 items)"
        if self.history_weight > 0 and n_items <= self.dense_max_items:
            self.item_similarity_ = self.item_vectors_ @ self.item_vectors_.T
        elif self.history_weight > 0:
            # Counting the item itself, as the dense matrix's diagonal does.
            ids, scores = self.item_index_.neighbours(min(self.neighbours, n_items), include_self=True)
            found = ids >= 0
            self.item_neighbours_ = sp.csr_matrix(
                (scores[found], ids[found], np.r_[0, np.cumsum(found.sum(axis=1))]), shape=(n_items, n_items))
            self.retrieval_note_ += (
                f"; nearest history item: the {self.neighbours} nearest items of each item, not a dense "
                f"{n_items:,} x {n_items:,} similarity matrix ({4 * n_items**2 / 1e9:,.1f} GB; above "
                f"LLMREC_DENSE_MAX_ITEMS {self.dense_max_items:,})")
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
        dense = getattr(self, "item_similarity_", None)
        nearest = np.zeros((len(histories), len(self.item_vectors_)), dtype=np.float32)
        ratings = histories.ratings
        for row in range(len(histories)):
            history = ratings.indices[ratings.indptr[row]:ratings.indptr[row + 1]]
            if not len(history):
                continue
            if dense is not None:
                nearest[row] = dense[history].max(axis=0)
            else:  # the sparse lists: each history item's neighbours; an item outside all of them stays 0
                lists = self.item_neighbours_[history]
                best = np.full(len(self.item_vectors_), -np.inf, dtype=np.float32)
                np.maximum.at(best, lists.indices, lists.data)
                nearest[row] = np.where(np.isfinite(best), best, 0.0)
        return nearest

    def similar_items(self, item_id: str, k: int = 10) -> pd.DataFrame:
        """The k items whose text is nearest to `item_id`'s; on a catalogue of `ann_min_items` or more, through
        the HNSW index instead of scoring every item."""
        self._check_fitted()
        index = getattr(self, "item_index_", None)
        position = self._item_position.get(str(item_id))
        if index is None or not index.approximate or position is None:
            return super().similar_items(item_id, k)
        ids, scores = index.search(self.item_vectors_[position], k, exclude=[np.array([position])])
        found = ids[0] >= 0
        return pd.DataFrame({"item_id": self.item_ids_[ids[0][found]], "score": scores[0][found]})

    def retrieve(self, histories: Histories, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Content retrieval without scoring every item: each history's `k` unseen items nearest its interest
        vector, as (item positions, cosines), through the index (exact below `ann_min_items`)."""
        self._check_fitted()
        index = getattr(self, "item_index_", None) or VectorIndex(
            self.item_vectors_, getattr(self, "ann_min_items", DEFAULT_ANN_MIN_ITEMS))  # a ranker pickled before
        return index.search(self.interest_vectors(histories), k, exclude=histories.ratings)

    def _similar_item_scores(self, position: int) -> np.ndarray:
        return self.item_vectors_ @ self.item_vectors_[position]
