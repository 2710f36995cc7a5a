"""The ranker contract, as a pytest suite you can run on your own ranker (like `lenskit.testing`).

    from llmrec_platform.testing import RankerContract

    class TestMyRanker(RankerContract):
        def make(self, data):          # an unfitted ranker for `data` (an InteractionData)
            return MyRanker()

It checks, on a known-answer data set (two taste groups; each user holds one valid and one test item of their
own group): fit, scores (shape, float32, all finite), fold-in of a training user's own history against
scoring that user by id (exact to 1e-5, or with `exact_fold_in = False` the test NDCG@10 within 0.005),
exclusion of history items, the cold start of an unknown user, `similar_items`, pickling, determinism, and
that a personalised ranker puts the held-out item above every item of the other group, for a training user
and for a new user's history alike. Needs pytest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.metrics import accuracy_at_k
from llmrec_platform.rankers.base import Interaction, NotFittedError, Query, Ranker, excluded_items, top_k_positions

GROUPS = {"a": [f"i{i}" for i in range(6)], "b": [f"i{i}" for i in range(6, 12)]}
USERS_PER_GROUP = 12
FOLD_IN_NDCG_TOLERANCE = 0.005


def two_group_split() -> pd.DataFrame:
    """Users a00.. like items i0-i5, users b00.. items i6-i11; each user's items j and j + 1 (mod 6) of their
    group are held out into test and valid, the other four are training ratings (4 or 5) at increasing times."""
    rows = []
    for group, items in GROUPS.items():
        for j in range(USERS_PER_GROUP):
            for t, item in enumerate(items):
                fold = {j % 6: "test", (j + 1) % 6: "valid"}.get(t, "train")
                rows.append((f"{group}{j:02d}", item, 4.0 + (t % 2), 1_000_000 * j + 86_400 * t, fold))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"])


def group_of(item_or_user_id: str) -> str:
    if item_or_user_id.startswith("i"):
        return "a" if item_or_user_id in GROUPS["a"] else "b"
    return item_or_user_id[0]


def item_genres() -> pd.DataFrame:
    return pd.DataFrame({"item_id": GROUPS["a"] + GROUPS["b"],
                         "genres": [["Comedy"]] * 6 + [["Horror", "Thriller"]] * 6})


def unit_embeddings(ids: list[str], id_column: str, seed: int) -> pd.DataFrame:
    """Group A ids point along e0, group B along e1, with a little seeded noise; unit norm."""
    rng = np.random.default_rng(seed)
    vectors = []
    for id_ in ids:
        v = np.zeros(4, dtype=np.float32)
        v[0 if group_of(id_) == "a" else 1] = 1.0
        v[2:] = rng.normal(0, 0.1, 2)
        vectors.append(v / np.linalg.norm(v))
    return pd.DataFrame({id_column: ids, "embedding": vectors})


def history_of(data: InteractionData, user: int) -> tuple[Interaction, ...]:
    """A training user's history as explicit interactions (what a live query would send)."""
    row, stamps = data.train[user], data.train_timestamps[user]
    return tuple(Interaction(str(data.item_ids[i]), float(r), float(stamps[0, i]))
                 for i, r in zip(row.indices, row.data, strict=True))


def ndcg_at_10(scores: np.ndarray, data: InteractionData, users: np.ndarray, fold: str = "test") -> float:
    """Full-ranking NDCG@10 of the score rows of `users` (what `evaluate` computes)."""
    relevant = data.relevant(fold)[users].toarray() > 0
    lists = top_k_positions(scores, excluded_items(*data.seen_before(fold))[users], 10)
    hits = np.zeros((len(users), 10), dtype=bool)
    for row, top in enumerate(lists):
        hits[row, :len(top)] = relevant[row, top]
    return float(accuracy_at_k(hits, relevant.sum(axis=1), 10)["ndcg"].mean())


class RankerContract:
    """Mix into a pytest test class and define `make(data)`, returning an unfitted ranker for `data`."""

    known_answer = True  # personalised: must solve the two-group data set
    exact_fold_in = True  # False for rankers that store learned user factors (fold-in solves them afresh)
    uses_history = True  # False for a ranker whose scores ignore the history (the random floor)

    def make(self, data: InteractionData) -> Ranker:
        raise NotImplementedError

    @pytest.fixture(scope="class")
    def data(self) -> InteractionData:
        return InteractionData.from_split(two_group_split())

    @pytest.fixture(scope="class")
    def fitted(self, data) -> Ranker:
        return self.make(data).fit(data)

    def test_fit_returns_self(self, data):
        ranker = self.make(data)
        assert ranker.fit(data) is ranker

    def test_score_before_fit(self, data):
        with pytest.raises(NotFittedError):
            self.make(data).score_query(Query(history=(Interaction("i0"),)))

    def test_scores_shape_dtype_finite(self, fitted, data):
        scores = fitted.score(np.arange(data.n_users))
        assert scores.shape == (data.n_users, data.n_items)
        assert scores.dtype == np.float32
        assert np.isfinite(scores).all()
        users = np.array([3, 0, 17])
        np.testing.assert_allclose(fitted.score(users), scores[users], rtol=1e-5)

    def test_query_scores(self, fitted, data):
        scores = fitted.score_query(Query(history=(Interaction("i1", 5.0, 10.0), Interaction("i7", event="click"))))
        assert scores.shape == (data.n_items,) and scores.dtype == np.float32 and np.isfinite(scores).all()

    def test_fold_in_matches_by_id(self, fitted, data):
        users = np.arange(data.n_users)
        by_id = fitted.score(users)
        if not self.uses_history:
            pytest.skip(f"{type(self).__name__} ignores the history")
        folded = np.stack([fitted.score_query(Query(data.user_ids[u], history_of(data, u))) for u in users])
        assert np.isfinite(folded).all()
        if self.exact_fold_in:
            np.testing.assert_allclose(folded, by_id, rtol=1e-5, atol=1e-5)
        else:
            by_id_ndcg, folded_ndcg = ndcg_at_10(by_id, data, users), ndcg_at_10(folded, data, users)
            assert abs(folded_ndcg - by_id_ndcg) <= FOLD_IN_NDCG_TOLERANCE, (by_id_ndcg, folded_ndcg)
        # An empty history with a known user id means that user's training history.
        np.testing.assert_allclose(fitted.score_query(Query(user_id=data.user_ids[5])), by_id[5], rtol=1e-5, atol=1e-6)

    def test_recommend_excludes_history(self, fitted, data):
        k = 4
        recs = fitted.recommend(data.user_ids[4], k)
        assert list(recs.columns) == ["rank", "item_id", "score"]
        assert recs["rank"].tolist() == list(range(1, k + 1))
        assert (np.diff(recs["score"].to_numpy()) <= 0).all() and recs["item_id"].is_unique
        assert not set(data.item_ids[data.train[4].indices]) & set(recs["item_id"])
        history = (Interaction("i0", 5.0, 1.0), Interaction("i2", 4.0, 2.0), Interaction("i9", event="click"))
        recs = fitted.recommend(Query(user_id="someone-new", history=history), k=20)
        assert len(recs) == data.n_items - len(history)
        assert not {"i0", "i2", "i9"} & set(recs["item_id"])

    def test_unknown_user_gets_a_cold_start(self, fitted, data):
        scores = fitted.score_query(Query(user_id="no-such-user"))
        assert scores.shape == (data.n_items,) and np.isfinite(scores).all()
        assert len(fitted.recommend(Query(user_id="no-such-user"), 3)) == 3
        # Items the ranker does not know are left out of a history, not an error.
        assert np.isfinite(fitted.score_query(Query(history=(Interaction("no-such-item"),)))).all()

    def test_similar_items(self, fitted, data):
        similar = fitted.similar_items("i1", k=5)
        assert list(similar.columns) == ["item_id", "score"]
        assert len(similar) == 5 and "i1" not in set(similar["item_id"])
        assert (np.diff(similar["score"].to_numpy()) <= 0).all()
        with pytest.raises(KeyError, match="unknown item"):
            fitted.similar_items("no-such-item")

    def test_save_load_round_trip(self, fitted, data, tmp_path):
        fitted.save(tmp_path / "ranker.pkl")
        loaded = Ranker.load(tmp_path / "ranker.pkl")
        assert type(loaded) is type(fitted)
        np.testing.assert_array_equal(loaded.score(np.arange(data.n_users)), fitted.score(np.arange(data.n_users)))
        query = Query(history=history_of(data, 2))
        np.testing.assert_array_equal(loaded.score_query(query), fitted.score_query(query))

    def test_deterministic(self, fitted, data):
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(self.make(data).fit(data).score(users), fitted.score(users))

    def test_known_answer(self, fitted, data):
        if not self.known_answer:
            pytest.skip(f"{type(self).__name__} is not personalised")
        item_group = np.array([group_of(i) for i in data.item_ids])
        scores = fitted.score(np.arange(data.n_users))
        for u, user_id in enumerate(data.user_ids):
            held_out = data.test[u].indices[0]
            other = item_group != group_of(user_id)
            assert scores[u, held_out] > scores[u, other].max(), (
                f"{fitted.name}: user {user_id} held-out {data.item_ids[held_out]} scores {scores[u, held_out]:.4f} "
                f"<= best other-group item {scores[u, other].max():.4f}")
        # A new user with three group-B items gets the rest of group B first.
        recs = fitted.recommend(Query(history=tuple(Interaction(i, 5.0, 100.0 * t) for t, i in
                                                    enumerate(["i6", "i8", "i10"]))), k=3)
        assert {group_of(i) for i in recs["item_id"]} == {"b"}, recs
