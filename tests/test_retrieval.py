"""The vector index: exact top-k below LLMREC_ANN_MIN_ITEMS, a faiss HNSW index above it (recall, determinism)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from llmrec_platform.retrieval import VectorIndex


def clustered_vectors(n: int, dim: int = 32, clusters: int = 40, seed: int = 3) -> np.ndarray:
    """Unit vectors around `clusters` centres: the shape text embeddings of a catalogue have."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    vectors = centres[rng.integers(0, clusters, size=n)] + 0.6 * rng.normal(size=(n, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def brute_force(vectors: np.ndarray, query: np.ndarray, k: int, seen=()) -> list[int]:
    scores = vectors @ query
    order = [int(i) for i in np.lexsort((np.arange(len(vectors)), -scores)) if i not in set(seen)]
    return order[:k]


def test_below_the_threshold_the_search_is_exact_with_ties_by_position():
    vectors = clustered_vectors(500)
    vectors[[7, 3, 400]] = vectors[200]  # a four-way tie: broken by position
    index = VectorIndex(vectors, ann_min_items=501)
    assert not index.approximate and "exact" in index.describe()
    queries = vectors[[200, 10, 11]]
    seen = [np.array([3]), np.array([], dtype=np.int64), np.arange(0, 50)]
    ids, scores = index.search(queries, 20, exclude=seen)
    for row, query in enumerate(queries):
        assert ids[row].tolist() == brute_force(vectors, query, 20, seen[row])
        np.testing.assert_allclose(scores[row], vectors[ids[row]] @ query, rtol=1e-6)
    assert ids[0, :3].tolist() == [7, 200, 400]  # 3 is excluded; the other tied copies in position order
    # More than there are: padded with -1 and -inf.
    small, small_scores = VectorIndex(vectors[:5]).search(vectors[:1], 8)
    assert small[0, 5:].tolist() == [-1, -1, -1] and np.isneginf(small_scores[0, 5:]).all()


def test_above_the_threshold_the_index_finds_the_exact_neighbours_and_is_deterministic():
    vectors = clustered_vectors(6000)
    index = VectorIndex(vectors, ann_min_items=5000)
    assert index.approximate and "HNSW" in index.describe()
    recall = index.recall_at(k=100, sample=300, seed=1)
    assert 0.95 <= recall <= 1.0
    queries = clustered_vectors(50, seed=9)
    seen = [np.arange(row, 6000, 97) for row in range(50)]
    ids, scores = index.search(queries, 100, exclude=seen)
    assert not any(np.isin(ids[row], seen[row]).any() for row in range(50))
    np.testing.assert_allclose(scores[5], vectors[ids[5]] @ queries[5], rtol=1e-6)  # exact rescoring
    assert (np.diff(scores, axis=1) <= 0).all()
    # Same vectors, same index, same answers: built again, and loaded from a pickle.
    again = VectorIndex(vectors, ann_min_items=5000)
    loaded = pickle.loads(pickle.dumps(index))
    for other in (again, loaded):
        other_ids, other_scores = other.search(queries, 100, exclude=seen)
        assert np.array_equal(other_ids, ids) and np.array_equal(other_scores, scores)
    assert again.recall_at(k=100, sample=300, seed=1) == recall


def test_neighbours_leave_out_the_item_itself_and_errors_name_the_problem():
    vectors = clustered_vectors(300)
    ids, scores = VectorIndex(vectors).neighbours(10)
    assert ids.shape == (300, 10) and not (ids == np.arange(300)[:, None]).any()
    assert ids[42].tolist() == brute_force(vectors, vectors[42], 10, seen=[42])
    with pytest.raises(ValueError, match="query vectors have 8 dimensions, the items 32"):
        VectorIndex(vectors).search(np.zeros((1, 8)), 5)
    with pytest.raises(ValueError, match="ann_min_items must be >= 1"):
        VectorIndex(vectors, ann_min_items=0)


def test_the_content_ranker_keeps_its_scores_on_neighbour_lists_and_retrieves_through_the_index():
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.rankers.base import Query
    from llmrec_platform.rankers.content import LLMContentRanker
    from llmrec_platform.testing import two_group_split, unit_embeddings

    data = InteractionData.from_split(two_group_split())
    embeddings = unit_embeddings(list(data.item_ids), "item_id", seed=1)
    n_items = len(data.item_ids)
    dense = LLMContentRanker(embeddings).fit(data)
    assert hasattr(dense, "item_similarity_") and "exact top-k" in dense.retrieval_note_
    # Above the dense limit, lists as long as the catalogue: the same scores as the dense matrix.
    listed = LLMContentRanker(embeddings, dense_max_items=1, neighbours=n_items).fit(data)
    assert not hasattr(listed, "item_similarity_") and "not a dense" in listed.retrieval_note_
    users = np.arange(data.n_users)
    np.testing.assert_allclose(listed.score(users), dense.score(users), atol=1e-6)
    # Shorter lists only change the items outside every history item's list.
    short = LLMContentRanker(embeddings, dense_max_items=1, neighbours=3).fit(data)
    assert short.item_neighbours_.getnnz(axis=1).max() == 3
    # The HNSW path (threshold 1): similar items and retrieval agree with exact scoring on this small catalogue.
    hnsw = LLMContentRanker(embeddings, ann_min_items=1).fit(data)
    assert hnsw.item_index_.approximate and "HNSW" in hnsw.retrieval_note_
    item = str(data.item_ids[0])
    assert hnsw.similar_items(item, 3)["item_id"].tolist() == dense.similar_items(item, 3)["item_id"].tolist()
    histories = hnsw.histories([Query(user_id=str(data.user_ids[0]))])
    ids, scores = hnsw.retrieve(histories, 3)
    interest = hnsw.interest_vectors(histories)[0] @ hnsw.item_vectors_.T
    interest[histories.ratings.indices] = -np.inf
    assert ids[0].tolist() == np.lexsort((np.arange(n_items), -interest))[:3].tolist()
    np.testing.assert_allclose(scores[0], interest[ids[0]], rtol=1e-5)


def test_the_threshold_is_a_setting_that_reaches_the_experiment(tmp_path):
    from llmrec_platform.definitions import build_resources
    from llmrec_platform.paths import Paths
    from llmrec_platform.settings import Settings, SettingsError

    assert Settings.from_env({}).ann_min_items == 50_000
    settings = Settings.from_env({"LLMREC_ANN_MIN_ITEMS": "1200"})
    assert build_resources(Paths(tmp_path), settings=settings)["experiment"].ann_min_items == 1200
    with pytest.raises(SettingsError, match=r"^LLMREC_ANN_MIN_ITEMS='0': must be >= 1$"):
        Settings.from_env({"LLMREC_ANN_MIN_ITEMS": "0"})
