"""Mult-VAE: the ranker contract and the deterministic forward pass computed by hand."""

import numpy as np
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.multvae import MultVAERanker, multvae_forward
from llmrec_platform.testing import RankerContract, two_group_split


@pytest.fixture(scope="module")
def data() -> InteractionData:
    return InteractionData.from_split(two_group_split())


class TestMultVAE(RankerContract):
    def make(self, data):
        return MultVAERanker(hidden=16, latent=4, dropout=0.2, epochs=150, batch_size=8, learning_rate=1e-2,
                             anneal_steps=100, seed=3)


def test_forward_by_hand():
    # 2 items -> hidden 1 -> (mean 1, logvar 1) -> hidden 1 -> 2 items; input row (1, 1) is normalised first.
    x = np.array([[1.0, 1.0]])
    weights = [(np.array([[1.0], [1.0]]), np.array([0.0])),  # h = tanh(sqrt(2))
               (np.array([[2.0, 5.0]]), np.array([0.5, 9.0])),  # mean = 2 h + 0.5; the logvar column is dropped
               (np.array([[1.0]]), np.array([0.0])),  # g = tanh(mean)
               (np.array([[1.0, -1.0]]), np.array([0.0, 1.0]))]  # logits = (g, 1 - g)
    h = np.tanh(np.sqrt(2.0))
    g = np.tanh(2 * h + 0.5)
    np.testing.assert_allclose(multvae_forward(x, weights), [[g, 1 - g]], rtol=1e-6)


def test_invalid_parameters():
    with pytest.raises(ValueError, match="dropout"):
        MultVAERanker(dropout=1.0)
    with pytest.raises(ValueError, match="epochs"):
        MultVAERanker(epochs=0)
