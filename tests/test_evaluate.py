"""Full-ranking evaluation on a hand-built split."""

import gc
import weakref
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import evaluate, evaluate_slices
from llmrec_platform.rankers.base import Ranker


class FixedScores(Ranker):
    name = "fixed"

    def __init__(self, scores):
        self.scores = np.asarray(scores, dtype=np.float32)

    def _fit(self, data):
        pass

    def _score_histories(self, histories):  # scores by training position: only training users' rows
        return self.scores[histories.users]


def split_frame(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"])


@pytest.fixture
def data():
    return InteractionData.from_split(split_frame([
        ("u1", "a", 5, 1, "train"), ("u1", "b", 4, 2, "valid"), ("u1", "c", 4, 3, "test"), ("u1", "d", 4, 3, "test"),
        ("u2", "b", 5, 1, "train"), ("u2", "a", 4, 2, "test"),
        ("u3", "e", 5, 1, "train"),  # no test items: not evaluated
    ]))


def test_excludes_train_and_valid_and_ranks_everything_else(data):
    # items a b c d e; u1 likes c,d in test. Scores put a (train) and b (valid) on top: they must be skipped.
    scores = [[9, 8, 1, 7, 6], [1, 9, 2, 3, 4], [0, 0, 0, 0, 0]]
    result = evaluate(FixedScores(scores).fit(data), data, "test", ks=(2,))
    per_user = result.per_user.set_index("user_id")
    assert list(per_user.index) == ["u1", "u2"]
    # u1 ranking without a, b: d(7), e(6), c(1) -> top-2 = d, e: one hit of two relevant at rank 1.
    assert per_user.loc["u1", "precision@2"] == pytest.approx(0.5)
    assert per_user.loc["u1", "mrr@2"] == pytest.approx(1.0)
    # u2 ranking without b: e(4), d(3), c(2), a(1) -> a not in top-2.
    assert per_user.loc["u2", "hit@2"] == 0.0
    assert result.summary["hit@2"] == pytest.approx(0.5)
    assert result.n_users == 2


def test_valid_fold_excludes_only_train(data):
    scores = [[9, 8, 1, 7, 6], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    result = evaluate(FixedScores(scores).fit(data), data, "valid", ks=(1,))
    assert result.per_user["user_id"].tolist() == ["u1"]
    assert result.summary["ndcg@1"] == pytest.approx(1.0)  # b is top once a (train) is excluded


def test_candidate_mask_restricts_ranking_and_relevance(data):
    scores = [[9, 8, 1, 7, 6], [1, 9, 2, 3, 4], [0, 0, 0, 0, 0]]
    only_c = np.array([False, False, True, False, False])
    result = evaluate(FixedScores(scores).fit(data), data, "test", ks=(1,), candidate_items=only_c, slice_name="c")
    assert result.per_user["user_id"].tolist() == ["u1"]
    assert result.summary["ndcg@1"] == pytest.approx(1.0)
    assert set(result.long()["slice"]) == {"c"}


def test_batches_do_not_change_results(data):
    rng = np.random.default_rng(0)
    ranker = FixedScores(rng.random((3, 5))).fit(data)
    one = evaluate(ranker, data, "test", batch_size=1).summary
    many = evaluate(ranker, data, "test", batch_size=1024).summary
    assert one == pytest.approx(many, nan_ok=True)


def test_lists_stop_at_the_candidates(data):
    scores = [[9, 8, 1, 7, 6], [1, 9, 2, 3, 4], [0, 0, 0, 0, 0]]
    two = np.array([False, False, True, True, False])
    result = evaluate(FixedScores(scores).fit(data), data, "test", ks=(10,), candidate_items=two)
    assert result.summary["coverage@10"] <= 1.0
    # u1: both candidates (c, d) relevant -> perfect list; precision still divides by k.
    assert result.summary["ndcg@10"] == pytest.approx(1.0)
    assert result.summary["precision@10"] == pytest.approx(0.2)


class CountingScores(FixedScores):
    """Counts the users it scores: evaluate_slices must score each one once, whatever the number of slices."""

    def __init__(self, scores):
        super().__init__(scores)
        self.scored = []

    def _score_histories(self, histories):
        self.scored.extend(histories.users.tolist())
        return super()._score_histories(histories)


def test_slices_score_each_user_once_and_match_separate_evaluations(data):
    rng = np.random.default_rng(1)
    ranker = CountingScores(rng.random((3, 5))).fit(data)
    only_c = np.array([False, False, True, False, False])
    slices = {"all": (None, None), "u2": (np.array([1]), None), "c": (None, only_c), "nobody": (np.array([2]), None)}
    together = evaluate_slices(ranker, data, slices, "test", ks=(1, 2), batch_size=1)
    assert sorted(ranker.scored) == [0, 1]  # u1 and u2 once each; u3 has no test items
    for name, (users, candidates) in slices.items():
        alone = evaluate(ranker, data, "test", ks=(1, 2), slice_name=name, candidate_items=candidates, users=users)
        assert together[name].n_users == alone.n_users
        assert together[name].summary == pytest.approx(alone.summary, nan_ok=True)
        pd.testing.assert_frame_equal(together[name].per_user, alone.per_user)
    assert together["u2"].per_user["user_id"].tolist() == ["u2"]
    assert together["c"].per_user["user_id"].tolist() == ["u1"] and together["nobody"].n_users == 0


def test_the_champions_lists_reuse_the_evaluation_scores(data):
    """TopKLists takes the evaluation's score batches and scores only the users they missed (u3: no test items)."""
    from llmrec_platform.live.recommendations import TopKLists
    from llmrec_platform.rankers.base import excluded_items

    scores = [[9, 8, 1, 7, 6], [1, 9, 2, 3, 4], [5, 1, 4, 3, 2]]
    ranker = CountingScores(scores).fit(data)
    lists = TopKLists(ranker, excluded_items(data.train, data.valid, data.test), k=2)
    evaluate_slices(ranker, data, {"all": (None, None)}, "test", ks=(2,), on_scores=lists)
    assert sorted(ranker.scored) == [0, 1]
    frame = lists.frame()
    assert sorted(ranker.scored) == [0, 1, 2]  # u3 scored once, by the lists themselves
    # By hand, everything each user interacted with excluded: u1 (a, b, c, d seen) -> e; u2 (b, a seen) -> e, d;
    # u3 (e seen) -> a, c.
    assert list(frame.itertuples(index=False, name=None)) == [
        ("u1", 1, "e", 6.0), ("u2", 1, "e", 4.0), ("u2", 2, "d", 3.0), ("u3", 1, "a", 5.0), ("u3", 2, "c", 4.0)]
    fresh = CountingScores(scores).fit(data)
    pd.testing.assert_frame_equal(TopKLists(fresh, excluded_items(data.train, data.valid, data.test), k=2).frame(), frame)


@pytest.fixture
def shop():
    """40 users and 30 items with a few interactions each, as a split arrives (several per user, some users
    without a test item)."""
    rng = np.random.default_rng(3)
    rows = []
    for user in range(40):
        items = rng.choice(30, size=int(rng.integers(3, 12)), replace=False)
        folds = rng.choice(["train", "train", "train", "valid", "test"], size=len(items))
        folds[0] = "train"
        rows += [(f"user{user}", f"item{i}", 4, t, fold) for t, (i, fold) in enumerate(zip(items, folds, strict=True))]
    return InteractionData.from_split(split_frame(rows))


def test_user_blocks_of_any_size_give_the_identical_metrics_and_lists(shop):
    """Scores rounded to one decimal tie often: the lists (ties broken by item position) and every metric are the
    same, bit for bit, whether the users are scored one, seven or all at a time."""
    scores = np.round(np.random.default_rng(4).random((shop.n_users, shop.n_items)), 1)
    ranker = FixedScores(scores).fit(shop)
    slices = {"all": (None, None), "some items": (None, np.arange(shop.n_items) % 3 > 0)}
    by_size = {size: evaluate_slices(ranker, shop, slices, "test", ks=(5, 10), batch_size=size)
               for size in (1, 7, shop.n_users)}
    for size, results in by_size.items():
        for name in slices:
            pd.testing.assert_frame_equal(results[name].per_user, by_size[shop.n_users][name].per_user, check_exact=True)
            assert results[name].summary == by_size[shop.n_users][name].summary, (size, name)
    assert by_size[1]["all"].n_users > 20


def test_evaluation_memory_is_bounded_by_a_user_block_not_users_by_items():
    """Python-side allocations (numpy's included) stay far below one dense users x items score matrix."""
    import tracemalloc

    rng = np.random.default_rng(5)
    n_users, n_items = 3000, 800
    rows = [(f"u{u}", f"i{i}", 4, t, fold) for u in range(n_users)
            for t, (i, fold) in enumerate(zip(rng.choice(n_items, 6, replace=False),
                                             ["train", "train", "train", "train", "valid", "test"], strict=True))]
    data = InteractionData.from_split(split_frame(rows))

    class Seeded(Ranker):  # scores made per block, as a real ranker's are
        name = "seeded"

        def _fit(self, data):
            pass

        def _score_histories(self, histories):
            return np.random.default_rng(len(histories.users)).random((len(histories.users), len(self.item_ids_)))

    ranker = Seeded().fit(data)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        evaluate(ranker, data, "test", ks=(10,), batch_size=100)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    dense = n_users * n_items * 8
    assert peak < dense / 4, f"evaluation allocated {peak / 2**20:.1f} MiB at its peak; users x items is {dense / 2**20:.1f}"


class OneAtATime(Mapping):
    """Ranker name -> a freshly built fit on every access (as `assets.evaluation.RankerFiles` reads a file), noting
    how many rankers it built earlier are still alive at each access."""

    def __init__(self, build: dict):
        self.build = build
        self.built: list[weakref.ref] = []
        self.alive_at_access: list[int] = []

    def __getitem__(self, name):
        gc.collect()
        self.alive_at_access.append(sum(ref() is not None for ref in self.built))
        trained = self.build[name]()
        self.built.append(weakref.ref(trained.ranker))
        return trained

    def __iter__(self):
        return iter(self.build)

    def __len__(self):
        return len(self.build)


def test_the_suite_reads_one_ranker_at_a_time_and_gets_what_it_gets_from_all_at_once(shop):
    from llmrec_platform.evaluation.suite import evaluate_suite
    from llmrec_platform.rankers.base import TrainedRanker

    def fit(name: str, seed: int, valid: float):
        def build():
            ranker = FixedScores(np.round(np.random.default_rng(seed).random((shop.n_users, shop.n_items)), 1))
            ranker.name = name
            return TrainedRanker(ranker.fit(shop), f"run-{name}", "fp", {"ndcg@10": valid}, 0.0)
        return build

    build = {"ease": fit("ease", 1, 0.2), "hybrid": fit("hybrid", 2, 0.3), "itemknn": fit("itemknn", 3, 0.1)}
    eager = evaluate_suite({name: make() for name, make in build.items()}, shop, seed=9, folds=("test", "valid"), top_k=3)
    lazy_rankers = OneAtATime(build)
    lazy = evaluate_suite(lazy_rankers, shop, seed=9, folds=("test", "valid"), top_k=3,
                          valid_scores={"ease": 0.2, "hybrid": 0.3, "itemknn": 0.1})
    assert lazy_rankers.alive_at_access == [0, 0, 0]  # each read once, after the one before it was dropped
    assert lazy.champion == eager.champion == "hybrid"
    pd.testing.assert_frame_equal(lazy.metrics, eager.metrics, check_exact=True)
    pd.testing.assert_frame_equal(lazy.recommendations, eager.recommendations, check_exact=True)
    assert [c.as_dict() for c in lazy.comparisons] == [c.as_dict() for c in eager.comparisons]
    assert set(lazy.metrics["fold"]) == {"test", "valid"} and len(lazy.recommendations) == 3 * shop.n_users
