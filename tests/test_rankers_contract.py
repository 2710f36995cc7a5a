"""Every ranker passes the contract that ships in `llmrec_platform.testing` (fit, scores, fold-in equals by-id,
exclusion, cold start, similar items, pickling, determinism, a known answer), plus hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.implicit_models import AdamBPRRanker, ALSRanker, BPRRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.simple import PopularityRanker, RandomRanker
from llmrec_platform.testing import RankerContract, item_genres, unit_embeddings


def content_ranker(data: InteractionData) -> LLMContentRanker:
    return LLMContentRanker(unit_embeddings(list(data.item_ids), "item_id", seed=1),
                            unit_embeddings(list(data.user_ids), "user_id", seed=2))


class TestPopularity(RankerContract):
    known_answer = False

    def make(self, data):
        return PopularityRanker()


class TestRandom(RankerContract):
    known_answer = False
    uses_history = False

    def make(self, data):
        return RandomRanker(seed=7)


class TestLLMContent(RankerContract):
    def make(self, data):
        return content_ranker(data)


class TestItemKNN(RankerContract):
    def make(self, data):
        return ItemKNNRanker(k=5, shrink=1.0)


class TestEASE(RankerContract):
    def make(self, data):
        return EASERanker(reg_weight=5.0)


class TestALS(RankerContract):
    exact_fold_in = False

    def make(self, data):  # num_threads=0 (all cores): ALS is still deterministic
        return ALSRanker(factors=2, regularization=1.0, alpha=10.0, iterations=15, seed=3)


class TestBPR(RankerContract):
    exact_fold_in = False

    def make(self, data):
        return BPRRanker(factors=8, learning_rate=0.05, regularization=0.01, iterations=300, seed=3, fold_in_confidence=10.0,
                         fold_in_regularization=1.0)


class TestAdamBPR(RankerContract):
    exact_fold_in = False

    def make(self, data):
        return AdamBPRRanker(factors=8, learning_rate=0.05, epochs=100, batch_size=16, weight_decay=1e-3, seed=3,
                             fold_in_regularization=10.0)


class TestGenreMatch(RankerContract):
    def make(self, data):
        return GenreMatchRanker(item_genres())


class TestHybrid(RankerContract):
    exact_fold_in = False

    def make(self, data):
        candidates = {"ease": EASERanker(reg_weight=5.0).fit(data), "als": ALSRanker(factors=2, alpha=10.0).fit(data)}
        config = HybridConfig(n_candidates=4, n_estimators=20, min_child_samples=2, num_leaves=4, n_models=2,
                              pseudo_label_share=0.25, seed=3, num_threads=1)
        return HybridRanker(candidates, content_ranker(data).fit(data), {"genre_match": GenreMatchRanker(
            item_genres()).fit(data)}, config)


def test_itemknn_matches_dense_reference():
    rng = np.random.default_rng(0)
    dense = rng.random((40, 15)) < 0.3
    rows, cols = np.nonzero(dense)
    split = pd.DataFrame({"user_id": [f"u{r:02d}" for r in rows], "item_id": [f"i{c:02d}" for c in cols],
                          "rating": rng.choice([3.0, 4.0, 5.0], len(rows)), "timestamp": 0, "fold": "train"})
    data = InteractionData.from_split(split)
    x = (data.train.toarray() > 0).astype(np.float64)  # ItemKNN works on the binarized matrix
    shrink = 2.0
    norms = np.sqrt(x.sum(axis=0))
    sim = (x.T @ x) / (np.outer(norms, norms) + shrink + 1e-6)
    np.fill_diagonal(sim, 0.0)
    users = np.arange(data.n_users)
    # Without truncation: score(u, i) = sum_j x_uj sim(i, j).
    full = ItemKNNRanker(k=data.n_items, shrink=shrink).fit(data)
    np.testing.assert_allclose(full.score(users), x @ sim.T, rtol=1e-5, atol=1e-6)
    # With k = 4, target item i keeps its 4 most similar items (ties at the cut may go either way).
    k = 4
    knn = ItemKNNRanker(k=k, shrink=shrink).fit(data)
    weights = knn.similarity_.toarray()  # weights[j, i] = sim(i, j) for the neighbours j of item i
    for i in range(data.n_items):
        kept = np.flatnonzero(weights[:, i])
        assert len(kept) <= k
        np.testing.assert_allclose(weights[kept, i], sim[i, kept], rtol=1e-6)
        np.testing.assert_allclose(np.sort(weights[:, i])[::-1][:k], np.sort(sim[i])[::-1][:k], rtol=1e-6)
    np.testing.assert_allclose(knn.score(users), x @ weights, rtol=1e-5, atol=1e-6)


def test_genre_match_hand_computed_and_missing_genres():
    split = pd.DataFrame({
        "user_id": ["u", "u", "v", "v", "v"],
        "item_id": ["m1", "m2", "m3", "m4", "m5"],
        "rating": 4.0, "timestamp": 0,
        "fold": ["train", "train", "train", "test", "test"],
    })
    genres = pd.DataFrame({"item_id": ["m1", "m2", "m3", "m4"],
                           "genres": [["Comedy"], ["Comedy", "Drama"], ["Horror"], ["Drama", "Horror"]]})
    data = InteractionData.from_split(split)
    ranker = GenreMatchRanker(genres).fit(data)
    scores = ranker.score(np.array([0]))[0]  # user u: profile Comedy 2/3, Drama 1/3
    expected = [2 / 3, (2 / 3 + 1 / 3) / np.sqrt(2), 0.0, (1 / 3) / np.sqrt(2), 0.0]  # m5 has no genres
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    assert GenreMatchRanker.scores_cold_items
