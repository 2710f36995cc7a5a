"""RP3beta: the ranker contract and the random-walk similarity computed by hand."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.rp3beta import RP3betaRanker, rp3beta_similarity
from llmrec_platform.testing import RankerContract, two_group_split


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_split(two_group_split())


class TestRP3beta(RankerContract):
    def make(self, data):
        return RP3betaRanker(alpha=0.7, beta=0.3, k=5)


# users x items: u0 {i0, i1}, u1 {i0, i2}, u2 {i1}; item degrees 2, 2, 1; user degrees 2, 2, 1.
X = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])


def test_similarity_by_hand():
    import scipy.sparse as sp

    x = sp.csr_matrix(X)
    # beta 0, alpha 1: W[i, j] = sum_u 1/|U_i| * 1/|I_u|.
    plain = rp3beta_similarity(x, alpha=1.0, beta=0.0, k=3, normalize=False).toarray()
    np.testing.assert_allclose(plain, [[0, 0.25, 0.25], [0.25, 0, 0], [0.5, 0, 0]], rtol=1e-6)
    # beta 1 divides column j by item j's degree (2, 2, 1).
    penalised = rp3beta_similarity(x, alpha=1.0, beta=1.0, k=3, normalize=False).toarray()
    np.testing.assert_allclose(penalised, [[0, 0.125, 0.25], [0.125, 0, 0], [0.25, 0, 0]], rtol=1e-6)
    # alpha 2 squares both transition probabilities: (1/2)^2 (1/2)^2 = 1/16; (1/1)^2 (1/2)^2 = 1/4.
    squared = rp3beta_similarity(x, alpha=2.0, beta=0.0, k=3, normalize=False).toarray()
    np.testing.assert_allclose(squared, [[0, 1 / 16, 1 / 16], [1 / 16, 0, 0], [0.25, 0, 0]], rtol=1e-6)
    # k 1 keeps each row's strongest link; normalize makes every non-empty row sum to 1.
    top1 = rp3beta_similarity(x, alpha=1.0, beta=1.0, k=1, normalize=True).toarray()
    np.testing.assert_allclose(top1, [[0, 0, 1], [1, 0, 0], [1, 0, 0]], rtol=1e-6)


def test_scores_sum_similarity_over_history():
    rows = [(f"u{u}", f"i{i}") for u, i in zip(*np.nonzero(X), strict=True)]
    split = pd.DataFrame(rows, columns=["user_id", "item_id"]).assign(rating=4.0, timestamp=0, fold="train")
    data = InteractionData.from_split(split)
    ranker = RP3betaRanker(alpha=1.0, beta=0.0, k=3, normalize=False).fit(data)
    expected = X @ np.array([[0, 0.25, 0.25], [0.25, 0, 0], [0.5, 0, 0]])
    np.testing.assert_allclose(ranker.score(np.arange(3)), expected, rtol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(alpha=0.0), dict(beta=-0.1), dict(k=0)])
def test_invalid_parameters(kwargs):
    with pytest.raises(ValueError):
        RP3betaRanker(**kwargs)
