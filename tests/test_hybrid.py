"""The LLM-enhanced hybrid re-ranker and the paired comparison, on small synthetic data."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.simple import PopularityRanker


@pytest.fixture(scope="module")
def data():
    """Two taste groups over 40 items; each user has train, valid and test items from their group."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(80):
        group = np.arange(0, 20) if u % 2 else np.arange(20, 40)
        items = rng.choice(group, size=14, replace=False)
        for pos, i in enumerate(items):
            fold = "train" if pos < 10 else ("valid" if pos < 12 else "test")
            rows.append((f"u{u}", f"i{i:02d}", float(rng.integers(3, 6)), 1000 + pos, fold))
    return InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))


def content_ranker(data):
    rng = np.random.default_rng(1)
    item_vectors = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    item_vectors /= np.linalg.norm(item_vectors, axis=1, keepdims=True)
    user_vectors = (data.train @ item_vectors).astype(np.float32)
    user_vectors /= np.linalg.norm(user_vectors, axis=1, keepdims=True)
    return LLMContentRanker(
        pd.DataFrame({"item_id": data.item_ids, "embedding": list(item_vectors)}),
        pd.DataFrame({"user_id": data.user_ids, "embedding": list(user_vectors)}),
    ).fit(data)


def fit_hybrid(data, seed=3):
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "popularity": PopularityRanker().fit(data)}
    config = HybridConfig(n_candidates=8, n_estimators=30, min_child_samples=5, early_stopping_rounds=10,
                          num_leaves=7, seed=seed, num_threads=1)
    return HybridRanker(candidates, content_ranker(data), config=config).fit(data)


def test_hybrid_ranks_only_candidates_and_learns(data):
    hybrid = fit_hybrid(data)
    scores = hybrid.score(np.arange(data.n_users))
    finite = np.isfinite(scores)
    # Candidates: at most 8 per candidate ranker, never a training item.
    assert (finite.sum(axis=1) <= 16).all() and (finite.sum(axis=1) >= 8).all()
    assert not (finite & (data.train.toarray() > 0)).any()
    log = hybrid.training_log_
    assert log.train_users + log.holdout_users <= data.n_users
    assert set(log.feature_names) >= {"ease_score", "ease_rank", "llm_cosine", "llm_max_sim_liked", "item_popularity"}
    assert sum(log.importances.values()) == pytest.approx(1.0)
    assert 0 < log.candidate_recall <= 1
    # On two clean taste groups the hybrid must beat popularity by far.
    popularity = evaluate(PopularityRanker().fit(data), data, "test").summary["ndcg@10"]
    assert evaluate(hybrid, data, "test").summary["ndcg@10"] > popularity + 0.1


def test_hybrid_is_seeded(data):
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(fit_hybrid(data, seed=3).score(users), fit_hybrid(data, seed=3).score(users))
    assert not np.array_equal(fit_hybrid(data, seed=3).validation_users_, fit_hybrid(data, seed=4).validation_users_)


def test_hybrid_needs_sub_rankers_fitted_on_the_same_data(data):
    hybrid = HybridRanker({"ease": EASERanker()}, content_ranker(data))
    with pytest.raises(ValueError, match="must be fitted on the same data"):
        hybrid.fit(data)


def test_paired_bootstrap_by_construction():
    users = [f"u{i}" for i in range(200)]
    base = pd.DataFrame({"user_id": users, "ndcg@10": np.linspace(0, 0.5, 200)})
    better = base.assign(**{"ndcg@10": base["ndcg@10"] + 0.05})
    same = paired_bootstrap(base, base, "ndcg@10", "a", "b")
    assert same.mean_difference == 0 and same.ci_low == 0 and same.ci_high == 0 and not same.excludes_zero
    up = paired_bootstrap(better, base, "ndcg@10", "a", "b")
    assert up.mean_difference == pytest.approx(0.05) and up.excludes_zero and up.wilcoxon_p < 1e-6
    noisy = better.assign(**{"ndcg@10": base["ndcg@10"] + np.random.default_rng(0).normal(0, 0.5, 200)})
    wide = paired_bootstrap(noisy, base, "ndcg@10", "a", "b")
    assert wide.ci_low < wide.mean_difference < wide.ci_high
