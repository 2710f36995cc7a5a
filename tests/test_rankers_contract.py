"""One contract every ranker passes (fit, score, recommend, unknown user, pickling, determinism), plus a
known-answer data set: two disjoint user groups (group A likes items i0-i4, group B items i5-i9) with one
item per user held out into test. Every personalised ranker must rank the held-out item above every item
of the other group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import NotFittedError, Ranker, UnknownUserError
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.implicit_models import AdamBPRRanker, ALSRanker, BPRRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.simple import PopularityRanker, RandomRanker

GROUPS = {"a": [f"i{i}" for i in range(5)], "b": [f"i{i}" for i in range(5, 10)]}
USERS_PER_GROUP = 10


def two_group_split() -> pd.DataFrame:
    rows = []
    for group, items in GROUPS.items():
        for j in range(USERS_PER_GROUP):
            held_out = items[j % len(items)]
            for t, item in enumerate(items):
                fold = "test" if item == held_out else "train"
                rows.append((f"{group}{j:02d}", item, 4.0 + (t % 2), 1_000 * j + t, fold))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"])


def group_of(item_or_user_id: str) -> str:
    if item_or_user_id.startswith("i"):
        return "a" if item_or_user_id in GROUPS["a"] else "b"
    return item_or_user_id[0]


def item_genres() -> pd.DataFrame:
    return pd.DataFrame({"item_id": GROUPS["a"] + GROUPS["b"],
                         "genres": [["Comedy"]] * 5 + [["Horror", "Thriller"]] * 5})


def unit_embeddings(ids: list[str], seed: int) -> pd.DataFrame:
    """Group A ids point along e0, group B along e1, with a little seeded noise; unit norm."""
    rng = np.random.default_rng(seed)
    vectors = []
    for id_ in ids:
        v = np.zeros(4, dtype=np.float32)
        v[0 if group_of(id_) == "a" else 1] = 1.0
        v[2:] = rng.normal(0, 0.1, 2)
        vectors.append(v / np.linalg.norm(v))
    return pd.DataFrame({"id": ids, "embedding": vectors})


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_split(two_group_split())


class RankerContract:
    """Mix into a test class and define `make(data)` returning an unfitted ranker."""

    known_answer = True  # personalised: must solve the two-group data set

    def make(self, data: InteractionData) -> Ranker:
        raise NotImplementedError

    def fitted(self, data: InteractionData) -> Ranker:
        return self.make(data).fit(data)

    def test_fit_returns_self(self, data):
        ranker = self.make(data)
        assert ranker.fit(data) is ranker

    def test_scores_shape_dtype_finite(self, data):
        scores = self.fitted(data).score(np.arange(data.n_users))
        assert scores.shape == (data.n_users, data.n_items)
        assert scores.dtype == np.float32
        assert np.isfinite(scores).all()

    def test_score_subset_matches_full(self, data):
        ranker = self.fitted(data)
        users = np.array([3, 0, 17])
        np.testing.assert_allclose(ranker.score(users), ranker.score(np.arange(data.n_users))[users], rtol=1e-5)

    def test_recommend(self, data):
        ranker = self.fitted(data)
        user_id = data.user_ids[4]
        k = 4
        recs = ranker.recommend(user_id, k)
        assert list(recs.columns) == ["rank", "item_id", "score"]
        assert len(recs) == k
        assert recs["rank"].tolist() == list(range(1, k + 1))
        assert (np.diff(recs["score"].to_numpy()) <= 0).all()
        trained = set(data.item_ids[data.train[4].indices])
        assert not trained & set(recs["item_id"])
        assert recs["item_id"].is_unique

    def test_unknown_user(self, data):
        with pytest.raises(UnknownUserError):
            self.fitted(data).recommend("no-such-user", 3)

    def test_score_before_fit(self, data):
        with pytest.raises(NotFittedError):
            self.make(data).score(np.array([0]))

    def test_save_load_round_trip(self, data, tmp_path):
        ranker = self.fitted(data)
        ranker.save(tmp_path / "ranker.pkl")
        loaded = Ranker.load(tmp_path / "ranker.pkl")
        assert type(loaded) is type(ranker)
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(loaded.score(users), ranker.score(users))
        assert loaded.recommend(data.user_ids[0], 3).equals(ranker.recommend(data.user_ids[0], 3))

    def test_deterministic(self, data):
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(self.fitted(data).score(users), self.fitted(data).score(users))

    def test_known_answer(self, data):
        if not self.known_answer:
            pytest.skip(f"{type(self).__name__} is not personalised")
        ranker = self.fitted(data)
        scores = ranker.score(np.arange(data.n_users))
        item_group = np.array([group_of(i) for i in data.item_ids])
        for u, user_id in enumerate(data.user_ids):
            held_out = data.test[u].indices
            assert len(held_out) == 1
            other = item_group != group_of(user_id)
            assert scores[u, held_out[0]] > scores[u, other].max(), (
                f"{ranker.name}: user {user_id} held-out {data.item_ids[held_out[0]]} "
                f"scores {scores[u, held_out[0]]:.4f} <= best other-group item {scores[u, other].max():.4f}"
            )
        result = evaluate(ranker, data, fold="test", ks=(5,))
        assert result.n_users == data.n_users
        assert result.per_user["hit@5"].eq(1.0).all()
        assert result.summary["mrr@5"] == 1.0


class TestPopularity(RankerContract):
    known_answer = False

    def make(self, data):
        return PopularityRanker()


class TestRandom(RankerContract):
    known_answer = False

    def make(self, data):
        return RandomRanker(seed=7)


class TestLLMContent(RankerContract):
    def make(self, data):
        items = unit_embeddings(list(data.item_ids), seed=1).rename(columns={"id": "item_id"})
        users = unit_embeddings(list(data.user_ids), seed=2).rename(columns={"id": "user_id"})
        return LLMContentRanker(items, users)


class TestItemKNN(RankerContract):
    def make(self, data):
        return ItemKNNRanker(k=5, shrink=1.0)


class TestEASE(RankerContract):
    def make(self, data):
        return EASERanker(reg_weight=5.0)


class TestALS(RankerContract):
    def make(self, data):  # num_threads=0 (all cores): ALS is still deterministic
        return ALSRanker(factors=2, regularization=1.0, alpha=10.0, iterations=15, seed=3)


class TestBPR(RankerContract):
    def make(self, data):
        return BPRRanker(factors=8, learning_rate=0.05, regularization=0.01, iterations=300, seed=3)


class TestAdamBPR(RankerContract):
    def make(self, data):
        return AdamBPRRanker(factors=8, learning_rate=0.05, epochs=60, batch_size=16, seed=3)


class TestGenreMatch(RankerContract):
    def make(self, data):
        return GenreMatchRanker(item_genres())


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
