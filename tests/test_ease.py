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


def map_data(n_cold: int, seed: int = 7) -> tuple[InteractionData, pd.DataFrame]:
    """A skewed shop (popular items first) whose `n_cold` least popular items have no training rows, and seeded
    text vectors for every item."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 120, 60
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rows, cols = np.nonzero(rng.random((n_users, n_items)) < 0.1 + 0.5 * popularity / popularity.max())
    fold = rng.choice(["train", "train", "train", "valid", "test"], len(rows))
    fold[cols >= n_items - n_cold] = "test"
    data = InteractionData.from_split(pd.DataFrame({
        "user_id": [f"u{r:03d}" for r in rows], "item_id": [f"i{c:03d}" for c in cols], "rating": 4.0,
        "timestamp": 0, "fold": fold}))
    vectors = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    return data, pd.DataFrame({"item_id": list(data.item_ids), "embedding": list(vectors)})


@pytest.mark.parametrize("n_cold", [0, 4])
def test_llm_ease_map_from_ease_rankers_b_equals_the_map_fitted_alone(n_cold):
    """`llm_ease_map_ranker` takes `ease_ranker`'s B: warm columns bit for bit those of a fit alone; mapped cold
    columns from the float32 B instead of the float64 one, equal to float32 rounding (rtol 1e-5)."""
    import pickle

    from llmrec_platform.rankers.collab_map import CollabMapRanker

    data, embeddings = map_data(n_cold)
    cold = data.cold_item_mask()
    assert cold.sum() == n_cold
    alone = CollabMapRanker(embeddings, reg_weight=20.0, alpha=0.1).fit(data)
    ease = EASERanker(reg_weight=20.0).fit(data)
    ease_before = ease.weights_.copy()
    reused = CollabMapRanker(embeddings, reg_weight=20.0, alpha=0.1, ease=ease).fit(data)
    assert reused.ease_source_ == "ease_ranker" and alone.ease_source_.startswith("own fit")
    np.testing.assert_array_equal(ease.weights_, ease_before)  # EASE's own weights are never written
    np.testing.assert_array_equal(reused.weights_[:, ~cold], alone.weights_[:, ~cold])
    if n_cold:
        assert np.abs(alone.weights_[:, cold]).max() > 0
        np.testing.assert_allclose(reused.weights_[:, cold], alone.weights_[:, cold], rtol=1e-5,
                                   atol=1e-6 * np.abs(alone.weights_[:, cold]).max())
        assert np.all(np.diag(reused.weights_) == 0)
    else:
        np.testing.assert_array_equal(reused.weights_, alone.weights_)
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(np.argsort(-reused.score(users), axis=1, kind="stable")[:, :10],
                                  np.argsort(-alone.score(users), axis=1, kind="stable")[:, :10])
    # The fitted ranker keeps no reference to EASE: its pickle is the size of one fitted alone.
    assert abs(len(pickle.dumps(reused)) - len(pickle.dumps(alone))) < 1000


def test_llm_ease_map_fits_its_own_b_when_ease_rankers_differs():
    from llmrec_platform.rankers.collab_map import CollabMapRanker

    data, embeddings = map_data(4)
    other_reg = CollabMapRanker(embeddings, reg_weight=20.0, ease=EASERanker(reg_weight=750.0).fit(data)).fit(data)
    assert "reg_weight 750.0 is not 20.0" in other_reg.ease_source_
    np.testing.assert_array_equal(other_reg.weights_, CollabMapRanker(embeddings, reg_weight=20.0).fit(data).weights_)
    other_data = CollabMapRanker(embeddings, reg_weight=20.0, ease=EASERanker(reg_weight=20.0).fit(map_data(4, seed=8)[0]))
    assert "another training matrix" in other_data.fit(data).ease_source_
