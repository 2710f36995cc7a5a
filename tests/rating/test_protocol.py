"""Surprise's k-fold protocol: seeded folds that test every rating once, and the stacker's ablation."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.rating.data import RatingDataError, Ratings, holdout_mask, kfold_assignment
from llmrec_platform.rating.protocol import STACK, STACK_NO_LLM, RatingProtocol, StackerConfig, cross_validate


def test_folds_are_seeded_balanced_and_test_every_rating_once():
    folds = kfold_assignment(1003, 5, seed=7)
    assert sorted(np.bincount(folds)) == [200, 200, 201, 201, 201]  # each rating in exactly one fold
    np.testing.assert_array_equal(folds, kfold_assignment(1003, 5, seed=7))
    assert not np.array_equal(folds, kfold_assignment(1003, 5, seed=8))
    # The training folds of the 5 splits cover each rating 4 times, the test folds once.
    assert all(((folds != f).sum() + (folds == f).sum()) == 1003 for f in range(5))
    with pytest.raises(RatingDataError, match="cannot cut 3 ratings into 5 folds"):
        kfold_assignment(3, 5, seed=0)


def test_the_holdout_is_a_seeded_share():
    mask = holdout_mask(1000, 0.1, seed=3)
    assert mask.sum() == 100
    np.testing.assert_array_equal(mask, holdout_mask(1000, 0.1, seed=3))


def synthetic(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Ratings driven by item 'topics' that the item embeddings encode, and user profiles."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 120, 60
    topics = rng.integers(0, 3, n_items)
    taste = rng.normal(0, 1, (n_users, 3))
    users, items = np.nonzero(rng.random((n_users, n_items)) < 0.5)
    ratings = np.clip(np.round(3 + taste[users, topics[items]] + rng.normal(0, 0.5, len(users))), 1, 5)
    frame = pd.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items], "rating": ratings})
    embeddings = np.eye(3)[topics] + rng.normal(0, 0.05, (n_items, 3))
    item_frame = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)], "embedding": list(embeddings)})
    profile_frame = pd.DataFrame({"user_id": [f"u{u}" for u in range(0, n_users, 2)],  # half the users have one
                                  "embedding": list(rng.normal(0, 1, (n_users // 2, 3)))})
    return frame, item_frame, profile_frame


SMALL = RatingProtocol(n_folds=3, seed=11, factors=4, epochs=3, stacker=StackerConfig(n_estimators=60,
                                                                                     min_child_samples=20))


def test_cross_validation_reports_every_model_on_every_fold_and_repeats_for_a_seed():
    ratings, items, profiles = synthetic()
    first = cross_validate(ratings, SMALL, items, profiles)
    models = {"baseline", "biased_mf", "svdpp", STACK_NO_LLM, STACK}
    assert set(first.metrics["model"]) == models
    assert len(first.metrics) == len(models) * 3 and set(first.metrics["fold"]) == {0, 1, 2}
    assert (first.metrics["rmse"] >= first.metrics["mae"]).all()
    second = cross_validate(ratings, SMALL, items, profiles)
    pd.testing.assert_frame_equal(first.metrics.drop(columns="fit_seconds"), second.metrics.drop(columns="fit_seconds"))
    ablation = first.ablation()
    assert ablation["diff"] == pytest.approx(ablation["rmse_with"] - ablation["rmse_without"])
    # The embeddings carry the topic that drives the ratings: the LLM features must help here.
    assert ablation["diff"] < 0, ablation


def test_without_item_embeddings_only_the_plain_stacker_runs():
    ratings, _, _ = synthetic()
    result = cross_validate(ratings, RatingProtocol(n_folds=2, seed=1, factors=2, epochs=1,
                                                    stacker=StackerConfig(n_estimators=10)))
    assert STACK not in set(result.metrics["model"]) and result.ablation() is None


def test_every_rating_is_tested_once_across_the_folds():
    ratings, _, _ = synthetic(1)
    data = Ratings.from_frame(ratings)
    folds = kfold_assignment(len(data), 5, seed=2020)
    tested = np.concatenate([np.flatnonzero(folds == f) for f in range(5)])
    np.testing.assert_array_equal(np.sort(tested), np.arange(len(data)))


def test_the_folds_do_not_depend_on_the_order_the_ratings_came_in():
    ratings, _, _ = synthetic(2)
    shuffled = ratings.sample(frac=1.0, random_state=0).reset_index(drop=True)
    a, b = Ratings.from_frame(ratings), Ratings.from_frame(shuffled)
    np.testing.assert_array_equal(a.users, b.users)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.values, b.values)


def test_embeddings_align_to_the_index_with_zeros_for_the_missing():
    from llmrec_platform.rating.features import aligned_embeddings

    frame = pd.DataFrame({"item_id": ["b", "a"], "embedding": [np.array([0.0, 2.0]), np.array([3.0, 4.0])]})
    matrix = aligned_embeddings(np.array(["a", "b", "c"], dtype=object), frame, "item_id")
    np.testing.assert_allclose(matrix, [[0.6, 0.8], [0.0, 1.0], [0.0, 0.0]])
    assert aligned_embeddings(np.array(["a"], dtype=object), None, "item_id") is None
