"""Split protocols: folds disjoint, ratios, every test user has training history, seeded."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.split import SplitConfig, cold_items, k_core, prepare_interactions, split_interactions


def synthetic(n_users=60, n_items=80, per_user=25, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, size=per_user, replace=False):
            rows.append((f"u{u}", f"i{i}", float(rng.integers(1, 6)), int(rng.integers(8e8, 9e8))))
    ratings = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(n_items)]})
    return ratings, items


def test_k_core_is_iterative():
    # u3 has 2 interactions; removing u3 drops item c to 1 user -> c must go, which then drops u2 below 2.
    frame = pd.DataFrame({"user_id": ["u1", "u1", "u2", "u2", "u3", "u3"],
                          "item_id": ["a", "b", "a", "c", "b", "d"]})
    kept = k_core(frame, 2)
    assert set(kept["user_id"]) == {"u1"} or kept.empty
    counts_ok = (kept["user_id"].value_counts() >= 2).all() and (kept["item_id"].value_counts() >= 2).all()
    assert kept.empty or counts_ok


def test_prepare_filters_ratings_and_core():
    ratings, items = synthetic(per_user=45)
    frame = prepare_interactions(ratings, items, min_rating=3, core=10)
    assert len(frame) > 0.5 * (ratings["rating"] >= 3).sum()
    assert frame["rating"].min() >= 3
    assert frame["user_id"].value_counts().min() >= 10
    assert frame["item_id"].value_counts().min() >= 10
    assert not frame.duplicated(["user_id", "item_id"]).any()


@pytest.mark.parametrize("protocol", ["recbole", "temporal"])
def test_split_invariants(protocol):
    ratings, items = synthetic()
    frame = prepare_interactions(ratings, items, 3, 5)
    split = split_interactions(frame, SplitConfig(protocol=protocol, core=5))
    assert set(split["fold"]) == {"train", "valid", "test"}
    # Folds are disjoint on user-item pairs.
    assert not split.duplicated(["user_id", "item_id"]).any()
    train_users = set(split.loc[split["fold"] == "train", "user_id"])
    assert set(split.loc[split["fold"] != "train", "user_id"]) <= train_users
    if protocol == "temporal":
        train_end = split.loc[split["fold"] == "train", "timestamp"].max()
        assert split.loc[split["fold"] != "train", "timestamp"].min() >= train_end  # no leak from the future
        train_items = set(split.loc[split["fold"] == "train", "item_id"])
        assert set(split.loc[split["fold"] != "train", "item_id"]) <= train_items


def test_recbole_ratios_per_user_match_recbole():
    ratings, items = synthetic(per_user=23)
    frame = prepare_interactions(ratings, items, 0.5, 1)
    split = split_interactions(frame, SplitConfig(core=1))
    counts = split.groupby(["user_id", "fold"]).size().unstack(fill_value=0)
    n = counts.sum(axis=1)
    # RecBole: valid = test = floor(0.1 n), train gets the rest.
    assert (counts["valid"] == np.floor(0.1 * n)).all()
    assert (counts["test"] == np.floor(0.1 * n)).all()
    assert (counts["train"] == n - 2 * np.floor(0.1 * n)).all()


def test_seeded_and_seed_sensitive():
    ratings, items = synthetic()
    frame = prepare_interactions(ratings, items, 3, 5)
    a = split_interactions(frame, SplitConfig(core=5, seed=1))
    b = split_interactions(frame.sample(frac=1, random_state=3), SplitConfig(core=5, seed=1))
    c = split_interactions(frame, SplitConfig(core=5, seed=2))
    key = ["user_id", "item_id"]
    assert a.sort_values(key).reset_index(drop=True).equals(b.sort_values(key).reset_index(drop=True))
    assert not a.sort_values(key)["fold"].reset_index(drop=True).equals(c.sort_values(key)["fold"].reset_index(drop=True))


def test_cold_items_never_in_train():
    ratings, items = synthetic()
    frame = prepare_interactions(ratings, items, 3, 5)
    split = split_interactions(frame, SplitConfig(core=5, cold_item_fraction=0.1))
    cold = cold_items(split)
    assert len(cold) == pytest.approx(0.1 * frame["item_id"].nunique(), abs=1)
    assert not split.loc[split["fold"] == "train", "item_id"].isin(cold).any()
    assert split.loc[split["fold"] == "test", "item_id"].isin(cold).any()


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="protocol"):
        SplitConfig(protocol="leave-one-out")
    with pytest.raises(ValueError, match="sum to 1"):
        SplitConfig(ratios=(0.5, 0.1, 0.1))
