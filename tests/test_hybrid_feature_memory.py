"""The hybrid's features without dense items x items copies: a sparse item-item matrix (ItemKNN's) stays sparse, the
LLM similarity is the content ranker's own, and the features are the dense path's to the last bit, in any block of
users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.hybrid import FeatureContext
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.simple import PopularityRanker
from tests.test_hybrid import content_ranker


@pytest.fixture(scope="module")
def data() -> InteractionData:
    """Users of three overlapping tastes over 60 items, with uneven history lengths and 1-5 stars."""
    rng = np.random.default_rng(11)
    rows = []
    for u in range(90):
        pool = (np.arange(30) + 15 * (u % 3)) % 60
        for pos, item in enumerate(rng.choice(pool, size=int(rng.integers(8, 25)), replace=False)):
            rows.append((f"u{u:02d}", f"i{item:02d}", float(rng.integers(1, 6)), 1000 + 86400 * pos, "train"))
    return InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))


def context(data: InteractionData, itemknn: ItemKNNRanker, item_similarity=None) -> FeatureContext:
    content = content_ranker(data)
    return FeatureContext({"ease": EASERanker(reg_weight=10).fit(data), "itemknn": itemknn,
                           "popularity": PopularityRanker().fit(data)},
                          lambda batch: content.user_vectors_[batch.histories.users], content.item_vectors_, {},
                          data.train, data.train_timestamps, 4.0, item_similarity)


def features(context: FeatureContext, users: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows as user positions, items, features) of `users` featurised `block` users at a time."""
    rows, items, X = [], [], []
    for start in range(0, len(users), block):
        candidates, x = context.candidates_and_features(context.batch(users[start:start + block]), 10)
        rows.append(users[start:start + block][candidates.rows])
        items.append(candidates.items)
        X.append(x)
    return np.concatenate(rows), np.concatenate(items), np.vstack(X)


def test_sparse_item_item_and_shared_similarity_give_the_dense_features(data):
    itemknn = ItemKNNRanker(k=8).fit(data)
    content = content_ranker(data)
    users = np.random.default_rng(3).permutation(data.n_users)  # not in position order
    sparse = context(data, itemknn, content.item_vectors_ @ content.item_vectors_.T)
    rows, items, X = features(sparse, users, 32)
    assert "itemknn" in sparse.item_item and "_dense_cache" in sparse.__dict__
    assert not isinstance(sparse._matrix("itemknn"), np.ndarray)  # no items x items copy of a sparse W
    dense = context(data, itemknn)
    dense.item_item["itemknn"] = itemknn.similarity_.toarray().astype(np.float32)  # the old path: a dense copy of W
    reference_rows, reference_items, reference = features(dense, users, 32)
    np.testing.assert_array_equal(rows, reference_rows)
    np.testing.assert_array_equal(items, reference_items)
    names = sparse.feature_names()
    for column in ("itemknn_max_link", "itemknn_centred_score", "llm_max_sim_liked", "llm_mean_sim_liked"):
        assert np.unique(X[:, names.index(column)]).size > 10, column  # the compared columns carry information
    np.testing.assert_array_equal(X, reference)


def test_features_do_not_depend_on_the_block_of_users(data):
    ctx = context(data, ItemKNNRanker(k=8).fit(data))
    users = np.random.default_rng(5).permutation(data.n_users)[:40]
    one = features(ctx, users, 1)
    everyone = features(ctx, users, len(users))
    for a, b in zip(one, everyone, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_similarity_of_the_wrong_shape_is_refused(data):
    with pytest.raises(ValueError, match="item_similarity"):
        context(data, ItemKNNRanker(k=8).fit(data), np.zeros((3, 3), dtype=np.float32))
