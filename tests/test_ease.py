"""EASE against a dense numpy reference (Steck 2019, eq. 8) on a small random matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.ease import MIRROR_BLOCK, EASERanker, ease_weights, float32_in_place


def random_data(seed: int = 0, n_users: int = 50, n_items: int = 20) -> InteractionData:
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(rng.random((n_users, n_items)) < 0.25)
    return InteractionData.from_split(pd.DataFrame({
        "user_id": [f"u{r:03d}" for r in rows], "item_id": [f"i{c:03d}" for c in cols],
        "rating": rng.choice([3.0, 4.0, 5.0], len(rows)), "timestamp": 0,
        "fold": rng.choice(["train", "train", "train", "test"], len(rows)),
    }))


def dense_reference(x: np.ndarray, reg_weight: float) -> np.ndarray:
    gram = x.T @ x + reg_weight * np.eye(x.shape[1])
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("reg_weight", [1.0, 10.0, 250.0])
def test_ease_matches_dense_reference(reg_weight):
    data = random_data()
    x = (data.train.toarray() > 0).astype(np.float64)  # EASE works on the binarized matrix
    reference = dense_reference(x, reg_weight)
    np.testing.assert_allclose(ease_weights(data.train > 0, reg_weight), reference, rtol=1e-9, atol=1e-12)
    ranker = EASERanker(reg_weight=reg_weight).fit(data)
    assert ranker.weights_.dtype == np.float32
    np.testing.assert_allclose(ranker.weights_, reference, rtol=1e-5, atol=1e-5)
    scores = ranker.score(np.arange(data.n_users))
    np.testing.assert_allclose(scores, x @ reference, rtol=1e-5, atol=1e-5)


def test_ease_weights_solve_the_constrained_problem():
    # B minimises ||X - XB||^2 + reg ||B||^2 with diag(B) = 0: the gradient vanishes off the diagonal.
    data = random_data(seed=1)
    x = (data.train.toarray() > 0).astype(np.float64)
    reg_weight = 5.0
    b = ease_weights(x, reg_weight)
    assert np.all(np.diag(b) == 0)
    gradient = -x.T @ (x - x @ b) + reg_weight * b
    off_diagonal = ~np.eye(len(b), dtype=bool)
    np.testing.assert_allclose(gradient[off_diagonal], 0.0, atol=1e-9)


def test_ease_weights_equal_the_general_inverse_on_more_items_than_a_mirror_block():
    # The in-place Cholesky path (potrf/potri, the upper triangle mirrored in blocks) against the formula it replaced:
    # a general LU inverse of a fresh Gram, on enough items for several mirror blocks.
    rng = np.random.default_rng(3)
    n_items = 2 * MIRROR_BLOCK + 77
    x = sp.csr_matrix((rng.random((400, n_items)) < 0.05).astype(np.float64))
    for reg_weight in (1.0, 750.0):
        gram = (x.T @ x).toarray() + reg_weight * np.eye(n_items)
        precision = scipy.linalg.inv(gram, assume_a="general")
        reference = precision / -np.diag(precision)[None, :]
        np.fill_diagonal(reference, 0.0)
        weights = ease_weights(x, reg_weight)
        np.testing.assert_allclose(weights, reference, rtol=0, atol=1e-10 * np.abs(reference).max())
        np.testing.assert_array_equal(weights, ease_weights(x.toarray(), reg_weight))  # dense input, same numbers
    assert EASERanker(reg_weight=750.0).fit(random_data(n_items=30)).weights_.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("n_items", [1, 2, 7, 600])  # odd sizes: the float32 half is not a whole float64 count
def test_float32_in_place_equals_a_float32_copy(n_items):
    rng = np.random.default_rng(n_items)
    weights = ease_weights(sp.csr_matrix((rng.random((300, n_items)) < 0.1).astype(np.float64)), 5.0)
    expected = weights.astype(np.float32)
    converted = float32_in_place(weights)
    del weights
    assert converted.dtype == np.float32 and converted.flags["C_CONTIGUOUS"] and converted.shape == (n_items, n_items)
    np.testing.assert_array_equal(converted, expected)
    with pytest.raises(ValueError, match="whole of its own buffer"):
        float32_in_place(np.ones((4, 4))[:, :2])  # a view of part of a buffer is refused


def test_ease_weights_refuse_a_gram_that_is_not_positive_definite():
    x = np.eye(3)  # X'X = I: a negative reg_weight (which EASERanker refuses) leaves no Cholesky factor
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        ease_weights(x, -2.0)


def test_ease_rejects_non_positive_regularisation():
    with pytest.raises(ValueError, match="reg_weight"):
        EASERanker(reg_weight=0.0)
