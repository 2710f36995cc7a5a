"""Serving's one-user fast paths give bit for bit what the batch (sparse) paths give.

`Histories.single` builds the same CSR matrices as the COO constructor, `top_k_row` the same list as
`top_k_positions`, and the one-history `_score_histories` of EASE, ItemKNN and RP3beta (a dense or sparse row
gather instead of a sparse product) the same float32 scores, byte for byte, as the batch path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.base import Histories, top_k_positions, top_k_row
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.rp3beta import RP3betaRanker


def random_data(seed: int = 3, n_users: int = 120, n_items: int = 90) -> InteractionData:
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(rng.random((n_users, n_items)) < 0.2)
    return InteractionData.from_split(pd.DataFrame({
        "user_id": [f"u{r:03d}" for r in rows], "item_id": [f"i{c:03d}" for c in cols],
        "rating": rng.choice([1.0, 3.0, 4.0, 5.0], len(rows)), "timestamp": rng.integers(0, 10**9, len(rows)),
        "fold": "train",
    }))


def coo_histories(positions, ratings, stamps, user, n_items) -> Histories:
    """The reference: what serving built per request before (three COO-to-CSR conversions)."""
    rows = np.zeros(len(positions), dtype=np.int64)
    shape = (1, n_items)
    return Histories(sp.csr_matrix((np.asarray(ratings, dtype=np.float32), (rows, positions)), shape=shape),
                     sp.csr_matrix((np.asarray(stamps, dtype=np.float64), (rows, positions)), shape=shape),
                     np.array([user]), (None,))


def same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.indptr, b.indptr)
            and np.array_equal(a.indices, b.indices) and a.data.tobytes() == b.data.tobytes())


@pytest.mark.parametrize("length", [0, 1, 7, 60])
def test_single_history_equals_the_coo_built_one(length):
    rng = np.random.default_rng(length)
    positions = rng.choice(500, length, replace=False)  # any order: single() sorts them
    ratings = rng.choice([0.0, 2.0, 4.5], length)  # an explicit zero stays stored, as with the COO constructor
    stamps = rng.integers(0, 2**40, length).astype(np.float64) + 0.25
    fast = Histories.single(positions, ratings, stamps, 17, 500)
    slow = coo_histories(positions, ratings, stamps, 17, 500)
    assert same_csr(fast.ratings, slow.ratings) and same_csr(fast.timestamps, slow.timestamps)
    assert fast.users.tolist() == [17] and fast.texts == (None,) and len(fast) == 1
    assert np.array_equal(fast.nonzero_positions(), slow.binary().indices)


def test_single_history_refuses_repeated_or_outside_positions():
    with pytest.raises(ValueError, match="distinct"):
        Histories.single(np.array([3, 3]), np.ones(2), np.zeros(2), -1, 10)
    with pytest.raises(ValueError, match="within 0..9"):
        Histories.single(np.array([10]), np.ones(1), np.zeros(1), -1, 10)


@pytest.mark.parametrize("seed", range(6))
def test_top_k_row_equals_top_k_positions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    scores = rng.integers(0, 6, n).astype(np.float32) / 4  # many ties: the position breaks them
    scores[rng.choice(n, n // 10, replace=False)] = -np.inf
    excluded = rng.choice(n, int(rng.integers(0, n)), replace=False)
    mask = sp.csr_matrix((np.ones(len(excluded), dtype=bool), (np.zeros(len(excluded), dtype=np.int64), excluded)),
                         shape=(1, n))
    for k in (1, 3, 10, n, n + 5):
        expected = top_k_positions(scores[None, :], mask, k)[0]
        got = top_k_row(scores, excluded, k)
        assert got.tolist() == expected.tolist()
        assert not set(got.tolist()) & set(excluded.tolist())
    assert scores[top_k_row(scores, [], 1)[0]] == scores[np.isfinite(scores)].max()


@pytest.mark.parametrize("ranker", [EASERanker(reg_weight=5.0), ItemKNNRanker(), RP3betaRanker()],
                         ids=lambda r: r.name)
def test_one_history_scores_are_the_batch_scores_bit_for_bit(ranker):
    data = random_data()
    ranker.fit(data)
    users = np.arange(data.n_users)
    batch = ranker._score_histories(ranker.training_histories(users))  # several rows: the sparse product
    for user in users:
        one = ranker._score_histories(ranker.training_histories(np.array([user])))
        assert one.shape == (1, data.n_items)
        assert np.asarray(one, dtype=np.float32).tobytes() == np.asarray(batch[user:user + 1], np.float32).tobytes()
    # a live history with a zero-valued event and unsorted positions goes through Histories.single the same way
    positions = np.array([40, 2, 77, 15])
    live = Histories.single(positions, np.array([4.0, 0.0, 5.0, 1.0]), np.arange(4.0), -1, data.n_items)
    reference = coo_histories(positions, [4.0, 0.0, 5.0, 1.0], np.arange(4.0), -1, data.n_items)
    pair = Histories(sp.vstack([reference.ratings, reference.ratings]).tocsr(),
                     sp.vstack([reference.timestamps, reference.timestamps]).tocsr(), np.array([-1, -1]), (None, None))
    assert np.asarray(ranker._score_histories(live), np.float32).tobytes() == \
        np.asarray(ranker._score_histories(pair)[:1], np.float32).tobytes()
