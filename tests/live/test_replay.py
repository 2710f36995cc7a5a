"""`Ranker.refit_elsewhere`: a published hybrid's copy fitted on another split of its interactions (the temporal replay)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.base import ItemInputs
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker


def interactions() -> pd.DataFrame:
    """Two taste groups over 40 items, 14 rated items per user at increasing times."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(80):
        group = np.arange(0, 20) if u % 2 else np.arange(20, 40)
        for t, i in enumerate(rng.choice(group, size=14, replace=False)):
            rows.append((f"u{u}", f"i{i:02d}", float(rng.integers(3, 6)), 1000 + t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


def split(frame: pd.DataFrame, holdout: tuple[int, int]) -> InteractionData:
    """Each user's `holdout` rows (positions in time order) are valid and test, the rest train."""
    position = frame.groupby("user_id").cumcount()
    fold = np.where(position == holdout[0], "valid", np.where(position == holdout[1], "test", "train"))
    return InteractionData.from_split(frame.assign(fold=fold))


@pytest.fixture(scope="module")
def inputs():
    frame = interactions()
    items = np.array(sorted(frame["item_id"].unique()), dtype=object)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(len(items), 8)).astype(np.float32)
    embeddings = pd.DataFrame({"item_id": items, "embedding": list(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))})
    users = np.array(sorted(frame["user_id"].unique()), dtype=object)
    profiles = pd.DataFrame({"user_id": users, "embedding": list(rng.normal(size=(len(users), 8)).astype(np.float32))})
    catalogue = pd.DataFrame({"item_id": items, "genres": [["Drama"] if int(i[1:]) < 20 else ["Comedy"] for i in items]})
    return frame, embeddings, profiles, catalogue


def fitted_hybrid(data: InteractionData, embeddings, profiles, catalogue) -> HybridRanker:
    candidates = {"ease": EASERanker(reg_weight=10).fit(data), "itemknn": ItemKNNRanker(k=10).fit(data)}
    content = LLMContentRanker(embeddings, profiles, profile_weight=0.2).fit(data)
    config = HybridConfig(n_candidates=8, n_estimators=30, min_child_samples=5, early_stopping_rounds=10,
                          num_leaves=7, seed=3, num_threads=1, n_models=1, pseudo_label_share=0.0)
    return HybridRanker(candidates, content, {"genre_match": GenreMatchRanker(catalogue).fit(data)}, config).fit(data)


def test_refit_elsewhere_on_the_same_split_scores_as_the_original(inputs):
    frame, embeddings, profiles, catalogue = inputs
    data = split(frame, (12, 13))
    hybrid = fitted_hybrid(data, embeddings, profiles, catalogue)
    copy = hybrid.refit_elsewhere(data, ItemInputs(embeddings, profiles, catalogue))
    assert copy is not hybrid and copy.content.profile_weight == 0.2 and list(copy.feature_rankers) == ["genre_match"]
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(copy.score(users), hybrid.score(users))


def test_refit_elsewhere_on_another_split_learns_it_and_leaves_the_original(inputs):
    frame, embeddings, profiles, catalogue = inputs
    data = split(frame, (12, 13))
    hybrid = fitted_hybrid(data, embeddings, profiles, catalogue)
    before = hybrid.score(np.arange(data.n_users))
    other = split(frame[~frame["item_id"].isin(["i00", "i21"])], (0, 1))  # a smaller item space, other held-out rows
    copy = hybrid.refit_elsewhere(other, ItemInputs(embeddings, profiles, catalogue))
    assert len(copy.item_ids_) == len(data.item_ids) - 2
    for ranker in (*copy.candidate_rankers.values(), *copy.feature_rankers.values(), copy.content):
        np.testing.assert_array_equal(ranker.item_ids_, other.item_ids)
        assert (ranker.train_ != other.train).nnz == 0
    np.testing.assert_array_equal(hybrid.score(np.arange(data.n_users)), before)
    assert EASERanker(reg_weight=10).fit(data).refit_elsewhere(other, ItemInputs(embeddings, profiles, catalogue)).score(
        np.arange(3)).shape == (3, other.n_items)
