"""The sequence-neighbour ranker: the ranker contract and hand-computed co-occurrence counts."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.sequence import SequenceNeighbourRanker, sequence_cooccurrence
from llmrec_platform.testing import RankerContract, two_group_split


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_split(two_group_split())


class TestSequenceNeighbours(RankerContract):
    def make(self, data):
        return SequenceNeighbourRanker(window=2)


def test_cooccurrence_by_hand():
    # user 0 rates items 2, 0, 1 in that order; user 1 rates 1 and 3 at the same second (tie: item order).
    timestamps = sp.csr_matrix(np.array([[20.0, 30.0, 10.0, 0.0], [0.0, 5.0, 0.0, 5.0]]))
    window1 = sequence_cooccurrence(timestamps, 1).toarray()
    expected = np.zeros((4, 4))
    for a, b in [(2, 0), (0, 1), (1, 3)]:
        expected[a, b] = expected[b, a] = 1.0
    np.testing.assert_array_equal(window1, expected)
    window2 = sequence_cooccurrence(timestamps, 2).toarray()
    expected[2, 1] = expected[1, 2] = 0.5  # two apart: weight 1/2
    np.testing.assert_array_equal(window2, expected)


def test_scores_are_normalised_sums_over_history():
    rows = [("u0", "a", 1), ("u0", "b", 2), ("u0", "c", 3), ("u1", "a", 1), ("u1", "b", 2), ("u2", "c", 1)]
    split = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=4.0, fold="train")
    interactions = InteractionData.from_split(split)
    ranker = SequenceNeighbourRanker(window=1).fit(interactions)
    counts = np.array([2.0, 2.0, 2.0])  # users per item a, b, c
    pairs = np.array([[0, 2, 0], [2, 0, 1], [0, 1, 0]])  # a-b twice, b-c once
    similarity = pairs / np.sqrt(np.outer(counts, counts))
    np.testing.assert_allclose(ranker.similarity_.toarray(), similarity, rtol=1e-6)
    np.testing.assert_allclose(ranker.score(np.array([2])), similarity[[2]], rtol=1e-6)  # u2 saw c


def test_window_must_be_positive():
    with pytest.raises(ValueError, match="window"):
        SequenceNeighbourRanker(window=0)
