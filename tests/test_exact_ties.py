"""Ties are broken by rule, (-score, item position), never by numpy's select order or float rounding.

Each case builds exact ties across a cut-off (the k-th list item, the k-th neighbour) and checks what is kept
against the rule computed independently: a lexsort of the whole row.
"""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.base import Histories, top_k, top_k_positions, top_k_row
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.rp3beta import rp3beta_similarity
from llmrec_platform.rating.features import ContentFeatures


def by_rule(row: np.ndarray, k: int) -> np.ndarray:
    """The first k positions of a row ordered by (-score, position)."""
    return np.lexsort((np.arange(len(row)), -row))[:k]


def tied_scores(seed: int = 0, shape: tuple[int, int] = (64, 300), levels: int = 4) -> np.ndarray:
    """Few distinct values, so every cut-off falls inside a tie of dozens of items."""
    return np.random.default_rng(seed).integers(0, levels, size=shape).astype(np.float32)


@pytest.mark.parametrize("k", [1, 10, 77, 299, 300, 400])
def test_top_k_keeps_the_lowest_positions_of_a_tie_at_the_cut_off(k):
    scores = tied_scores()
    top = top_k(scores, k)
    for row, kept in zip(scores, top, strict=True):
        np.testing.assert_array_equal(kept, by_rule(row, k))


def test_top_k_row_and_top_k_positions_follow_the_same_rule():
    scores = tied_scores(seed=1)
    excluded = sp.random(*scores.shape, density=0.1, random_state=3, format="csr", dtype=np.float32)
    lists = top_k_positions(scores, excluded, 20)
    for row, (kept, blocked) in enumerate(zip(lists, np.split(excluded.indices, excluded.indptr[1:-1]), strict=True)):
        allowed = scores[row].copy()
        allowed[blocked] = -np.inf
        np.testing.assert_array_equal(kept, by_rule(allowed, 20))
        np.testing.assert_array_equal(top_k_row(scores[row], blocked, 20), kept)


def tied_interactions(n_users: int = 12, n_items: int = 60, seed: int = 0) -> InteractionData:
    """Few users and many items: many items share their users, so their cosines (and walks) tie exactly."""
    rng = np.random.default_rng(seed)
    patterns = rng.random((4, n_users)) < 0.5  # each item copies one of four user patterns
    rows = [(f"u{u:02d}", f"i{i:03d}", 4.0, float(i), "train")
            for i in range(n_items) for u in np.flatnonzero(patterns[i % 4])]
    rows += [(f"u{u:02d}", "i999", 4.0, 1e6, fold) for u, fold in ((0, "valid"), (1, "test"))]
    return InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))


def neighbour_sets(matrix: sp.spmatrix, axis: int) -> list[np.ndarray]:
    """Per target, the positions of its stored neighbours (rows of `matrix` when axis is 1, columns when 0)."""
    matrix = sp.csr_matrix(matrix if axis == 1 else matrix.T)
    return [np.sort(matrix.indices[matrix.indptr[i]:matrix.indptr[i + 1]]) for i in range(matrix.shape[0])]


def expected_neighbours(full: sp.spmatrix, axis: int, k: int) -> list[np.ndarray]:
    """From the uncut similarity: the k best positive neighbours of each target by (-similarity, position)."""
    dense = (full.toarray() if axis == 1 else full.toarray().T).astype(np.float64)
    return [np.sort([j for j in by_rule(row, k) if row[j] > 0]) for row in dense]


@pytest.mark.parametrize("k", [3, 7])
def test_itemknn_keeps_the_lowest_positions_of_a_tie_at_the_k_th_neighbour(k):
    data = tied_interactions()
    full = ItemKNNRanker(k=data.n_items, shrink=0.0).fit(data).similarity_
    cut = ItemKNNRanker(k=k, shrink=0.0).fit(data).similarity_
    # similarity_[j, i] = sim(i, j): target i's neighbours are column i's rows.
    got, want = neighbour_sets(cut, axis=0), expected_neighbours(full, axis=0, k=k)
    assert sum(len(w) for w in want) > 0
    for target, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(g, w, err_msg=f"item {target}")


@pytest.mark.parametrize("k", [3, 7])
def test_rp3beta_keeps_the_lowest_positions_of_a_tie_at_the_k_th_neighbour(k):
    x = tied_interactions().train
    full = rp3beta_similarity(x, alpha=1.0, beta=0.5, k=x.shape[1], normalize=False)
    cut = rp3beta_similarity(x, alpha=1.0, beta=0.5, k=k, normalize=False)
    for source, (g, w) in enumerate(zip(neighbour_sets(cut, axis=1), expected_neighbours(full, axis=1, k=k),
                                        strict=True)):
        np.testing.assert_array_equal(g, w, err_msg=f"item {source}")


def test_rating_features_nearest_items_keep_the_lowest_positions_of_a_tie():
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(3, 8))
    vectors = distinct[np.arange(50) % 3].astype(np.float32)  # three directions: every cosine ties 16 ways
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    features = ContentFeatures(item_vectors=vectors, neighbours=5)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    for item, got in enumerate(neighbour_sets(features._neighbours, axis=1)):
        want = np.sort([j for j in by_rule(sims[item], 5) if sims[item, j] > 0])
        np.testing.assert_array_equal(got, want, err_msg=f"item {item}")


def genre_data(n_users: int = 40, n_items: int = 400, seed: int = 0) -> tuple[InteractionData, pd.DataFrame]:
    """Items drawn from five genre sets, so hundreds of items share their genres (and their exact score)."""
    rng = np.random.default_rng(seed)
    rows = [(f"u{u:02d}", f"i{i:03d}", 4.0, float(i), "train")
            for u in range(n_users) for i in rng.choice(n_items, size=int(rng.integers(3, 40)), replace=False)]
    rows += [("u00", "i999", 4.0, 1e6, "valid"), ("u01", "i999", 4.0, 1e6, "test")]
    data = InteractionData.from_split(pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"]))
    sets = [["Drama"], ["Comedy", "Romance"], ["Action", "Sci-Fi", "Thriller"], ["Comedy", "Drama"],
            ["Animation", "Children's", "Comedy", "Musical", "Fantasy"]]
    genres = pd.DataFrame({"item_id": data.item_ids, "genres": [sets[int(i[1:]) % 5] for i in data.item_ids]})
    return data, genres


def test_genre_match_gives_equal_genres_equal_scores_in_any_block_of_users():
    data, genres = genre_data()
    ranker = GenreMatchRanker(genres).fit(data)
    users = np.arange(data.n_users)
    whole = ranker.score(users)
    blocks = np.vstack([ranker.score(block) for block in np.array_split(users, 7)])
    singles = np.vstack([ranker.score(np.array([u])) for u in users])
    np.testing.assert_array_equal(blocks, whole)
    np.testing.assert_array_equal(singles, whole)
    set_of = np.array([int(i[1:]) % 5 for i in data.item_ids])
    for genre_set in range(5):  # every item of one genre set scores one value per user, bit for bit
        same = whole[:, set_of == genre_set]
        np.testing.assert_array_equal(same, np.repeat(same[:, :1], same.shape[1], axis=1))
    np.testing.assert_array_equal(top_k(whole, 50), top_k(blocks, 50))
    for row in whole:
        np.testing.assert_array_equal(top_k(row[None, :], 50)[0], by_rule(row, 50))


def test_genre_match_scores_by_hand():
    # A history of two Comedy-Romance items and one Drama item: counts Comedy 2, Romance 2, Drama 1 (total 5).
    data, genres = genre_data()
    ranker = GenreMatchRanker(genres).fit(data)
    position = {item: j for j, item in enumerate(data.item_ids)}
    history = [i for i in data.item_ids if int(i[1:]) % 5 == 1][:2] + [i for i in data.item_ids if int(i[1:]) % 5 == 0][:1]
    ratings = sp.csr_matrix((np.full(3, 4.0, np.float32), ([0, 0, 0], [position[i] for i in history])),
                            shape=(1, data.n_items))
    scores = ranker.score_histories(Histories(ratings, ratings, np.array([-1]), (None,)))[0]
    expected = {0: 1 / 5, 1: 4 / 5 / np.sqrt(2), 2: 0.0, 3: 3 / 5 / np.sqrt(2), 4: 2 / 5 / np.sqrt(5)}
    for item, j in position.items():
        if item != "i999":
            assert scores[j] == pytest.approx(expected[int(item[1:]) % 5], rel=1e-6), item
