"""The LLM-enhanced hybrid re-ranker and the paired comparison, on small synthetic data."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker, RankingSet, item_item_matrix
from llmrec_platform.rankers.itemknn import ItemKNNRanker
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


def item_genres(data):
    return pd.DataFrame({"item_id": data.item_ids,
                         "genres": [["Drama"] if int(i[1:]) < 20 else ["Comedy", "Action"] for i in data.item_ids]})


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
    users = np.arange(data.n_users)
    scores = hybrid.score(users)
    assert np.isfinite(scores).all()
    candidates, _ = hybrid.context_.candidates_and_features(hybrid.context_.batch(users), 8)
    candidate = np.zeros(scores.shape, dtype=bool)
    candidate[candidates.rows, candidates.items] = True
    # Candidates: at most 8 per candidate ranker, never a training item, and every one above every other item.
    assert (candidate.sum(axis=1) <= 16).all() and (candidate.sum(axis=1) >= 8).all()
    assert not (candidate & (data.train.toarray() > 0)).any()
    lowest_candidate = np.where(candidate, scores, np.inf).min(axis=1)
    assert (np.where(candidate, -np.inf, scores).max(axis=1) < lowest_candidate).all()
    log = hybrid.training_log_
    # Validation groups: one per user at most; pseudo-labelled groups come on top (on by default).
    assert 0 < log.extra["pseudo_groups"] <= data.n_users
    assert log.train_users - log.extra["pseudo_groups"] + log.holdout_users <= data.n_users
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


def test_holdout_score_is_evaluate_on_the_validation_users(data):
    hybrid = fit_hybrid(data)
    log = hybrid.training_log_
    assert len(log.validation_curve) >= log.best_iteration >= 1
    expected = evaluate(hybrid, data, "valid", users=hybrid.validation_users_).summary["ndcg@10"]
    assert log.extra["holdout_full_ranking_ndcg@10"] == pytest.approx(expected, abs=1e-9)
    assert len(log.feature_names) == hybrid.model_.n_features_ == len(log.importances)


def test_full_ranking_ndcg_by_hand():
    # Two users in the set, three stand for it (the third had no retrieved positive). User 1: candidates scored
    # (0.9, 0.5, 0.7), labels (0, 1, 1), 3 relevant items in all; user 2: one candidate, relevant, 1 relevant.
    ranking = RankingSet(X=np.zeros((4, 1)), y=np.array([0, 1, 1, 1]), groups=np.array([3, 1]),
                         n_relevant=np.array([3, 1]), n_users=3, users=np.array([0, 1]))
    dcg_1 = 1 / np.log2(3) + 1 / np.log2(4)  # ranks 2 and 3
    idcg_1 = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    expected = (dcg_1 / idcg_1 + 1.0 + 0.0) / 3
    assert ranking.full_ranking_ndcg(np.array([0.9, 0.5, 0.7, 0.1])) == pytest.approx(expected)
    # Ties go to the lower row (item) position, as in evaluate's top_k.
    tied = RankingSet(X=np.zeros((2, 1)), y=np.array([0, 1]), groups=np.array([2]), n_relevant=np.array([1]),
                      n_users=1, users=np.array([0]))
    assert tied.full_ranking_ndcg(np.array([0.5, 0.5])) == pytest.approx(1 / np.log2(3))
    assert tied.subset(np.array([True]), 1).full_ranking_ndcg(np.array([0.1, 0.9])) == pytest.approx(1.0)


@pytest.mark.parametrize("with_valid", [False, True])
def test_pseudo_labels_add_groups_and_leave_the_rankers_alone(data, with_valid):
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "itemknn": ItemKNNRanker(k=10).fit(data)}
    weights = candidates["ease"].weights_.copy()
    genre = GenreMatchRanker(item_genres(data)).fit(data)
    config = HybridConfig(n_candidates=8, n_estimators=20, min_child_samples=5, num_leaves=7, seed=3, num_threads=1,
                          pseudo_label_share=0.2, pseudo_with_valid=with_valid)
    hybrid = HybridRanker(candidates, content_ranker(data), {"genre_match": genre}, config).fit(data)
    assert hybrid.training_log_.extra["pseudo_groups"] > 0
    assert 0 < hybrid.pseudo_recall_ <= 1
    np.testing.assert_array_equal(candidates["ease"].weights_, weights)  # refitted copies, not the originals
    assert hybrid.context_.candidate_rankers["ease"] is candidates["ease"]
    assert np.isfinite(hybrid.score(np.arange(data.n_users))).any(axis=1).all()


def test_refit_copy_matches_a_fresh_fit(data):
    half = InteractionData(data.user_ids, data.item_ids, data.train.multiply(data.train > 4).tocsr(),
                           data.train_timestamps.multiply(data.train > 4).tocsr(), data.valid, data.test)
    genre = GenreMatchRanker(item_genres(data)).fit(data)
    np.testing.assert_allclose(genre.refit_copy(half).score(np.arange(data.n_users)),
                               GenreMatchRanker(item_genres(data)).fit(half).score(np.arange(data.n_users)), rtol=1e-6)
    ease = EASERanker(reg_weight=10).fit(data)
    np.testing.assert_allclose(ease.refit_copy(half).weights_, EASERanker(reg_weight=10).fit(half).weights_)
    assert not np.allclose(ease.refit_copy(half).weights_, ease.weights_)


def test_item_item_matrices_are_found(data):
    assert item_item_matrix(EASERanker(reg_weight=10).fit(data)).shape == (data.n_items, data.n_items)
    assert item_item_matrix(ItemKNNRanker(k=5).fit(data)).shape == (data.n_items, data.n_items)
    assert item_item_matrix(PopularityRanker().fit(data)) is None


def test_no_holdout_and_no_pseudo_group_still_fits(data):
    candidates = {"ease": EASERanker(reg_weight=10).fit(data)}
    config = HybridConfig(n_candidates=8, n_estimators=10, min_child_samples=5, num_leaves=7, num_threads=1,
                          holdout_users=0.0, pseudo_label_share=0.01)  # 10 training items each: nothing held out
    hybrid = HybridRanker(candidates, content_ranker(data), config=config).fit(data)
    log = hybrid.training_log_
    assert log.validation_curve == [] and log.holdout_users == 0 and log.best_iteration == 10
    assert log.extra["pseudo_groups"] == 0 and np.isnan(log.extra["holdout_full_ranking_ndcg@10"])
    assert np.isfinite(hybrid.score(np.arange(data.n_users))).any(axis=1).all()


def test_pseudo_draws_and_model_average(data):
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "popularity": PopularityRanker().fit(data)}
    base = HybridConfig(n_candidates=8, n_estimators=15, min_child_samples=5, num_leaves=7, seed=3, num_threads=1,
                        pseudo_label_share=0.2, n_models=1)
    one = HybridRanker(candidates, content_ranker(data), config=base).fit(data)
    two = HybridRanker(candidates, content_ranker(data), config=HybridConfig(**{
        **base.__dict__, "pseudo_draws": 2, "n_models": 3})).fit(data)
    # A second draw holds out other items: about twice the pseudo groups.
    assert one.training_log_.extra["pseudo_groups"] < two.training_log_.extra["pseudo_groups"]
    assert len(two.extra_models_) == 2 and not one.extra_models_
    # The ensemble scores the mean of its models' predictions, and the holdout score is the ensemble's.
    users = np.arange(data.n_users)
    candidates, features = two.context_.candidates_and_features(two.context_.batch(users), 8)
    rows, items = candidates.rows, candidates.items
    members = [two.model_, *two.extra_models_]
    mean = np.mean([m.booster_.predict(features, num_iteration=15) for m in members], axis=0)
    np.testing.assert_allclose(two.score(users)[rows, items], mean, rtol=1e-5)
    expected = evaluate(two, data, "valid", users=two.validation_users_).summary["ndcg@10"]
    assert two.training_log_.extra["holdout_full_ranking_ndcg@10"] == pytest.approx(expected, abs=1e-9)


def test_models_side_by_side_are_bit_identical_to_one_after_another(data):
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "popularity": PopularityRanker().fit(data)}
    config = HybridConfig(n_candidates=8, n_estimators=25, min_child_samples=5, num_leaves=7, seed=3, n_models=3,
                          pseudo_label_share=0.2, num_threads=2, parallel_models=True)
    parallel = HybridRanker(candidates, content_ranker(data), config=config).fit(data)
    users = np.arange(data.n_users)
    for other in ({"parallel_models": False}, {"parallel_models": False, "num_threads": 1}):
        sequential = HybridRanker(candidates, content_ranker(data), config=dataclasses.replace(config, **other)).fit(data)
        for mine, theirs in zip([parallel.model_, *parallel.extra_models_],
                                [sequential.model_, *sequential.extra_models_], strict=True):
            assert trees(mine) == trees(theirs)
        np.testing.assert_array_equal(parallel.score(users), sequential.score(users))
    assert trees(parallel.extra_models_[0]) != trees(parallel.model_)  # another seed, other trees


def test_with_models_is_the_hybrid_those_settings_train(data):
    """`with_models` (what benchmarks/profile_hybrid.py --prefix scores) equals training with fewer models and trees:
    LightGBM's tree t does not depend on how many trees follow it."""
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "popularity": PopularityRanker().fit(data)}
    config = HybridConfig(n_candidates=8, n_estimators=20, min_child_samples=5, num_leaves=7, seed=3, n_models=3,
                          pseudo_label_share=0.2, num_threads=1)
    full = HybridRanker(candidates, content_ranker(data), config=config).fit(data)
    cut = full.with_models(2, 12)
    trained = HybridRanker(candidates, content_ranker(data),
                           config=dataclasses.replace(config, n_models=2, n_estimators=12)).fit(data)
    assert cut.config == trained.config and cut.training_log_.best_iteration == 12 and len(full.extra_models_) == 2
    for mine, theirs in zip([cut.model_, *cut.extra_models_], [trained.model_, *trained.extra_models_], strict=True):
        assert trees(mine, 12) == trees(theirs)
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(cut.score(users), trained.score(users))
    assert not np.array_equal(full.score(users), cut.score(users))  # the cut really scores with less
    with pytest.raises(ValueError, match="needs 1..3 models and 1..20 trees"):
        full.with_models(2, 21)


def trees(model, num_iteration: int | None = None) -> str:
    """A LightGBM model's (first `num_iteration`) trees as text (without the parameters it lists after them, n_jobs
    among them)."""
    return model.booster_.model_to_string(num_iteration=num_iteration).split("end of trees")[0]
