"""Stacker features of (user, item) pairs, from a training history only (no Dagster).

Collaborative: the base models' predictions and log counts of the user's and item's training ratings.
LLM: how close the item's text embedding is to the user's liked items (rating >= liked), disliked items
(rating <= disliked) and profile-text embedding, and a content-kNN estimate: the user's rating residuals
(rating - baseline) on the `neighbours` history items nearest the item in embedding space, weighted by
cosine similarity. Items or users without an embedding get zeros there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.encoders.vectors import normalize_rows
from llmrec_platform.rankers.base import top_k
from llmrec_platform.rating.data import Ratings

LLM_FEATURES = ("sim_liked", "sim_disliked", "sim_profile", "knn_residual", "knn_support")


def aligned_embeddings(ids: np.ndarray, frame: pd.DataFrame | None, id_column: str) -> np.ndarray | None:
    """Unit-norm rows of frame['embedding'] in the order of `ids`; zeros for ids the frame lacks (an item
    without text, a user without a profile). None when there is no frame."""
    if frame is None or not len(frame):
        return None
    unique = frame.drop_duplicates(id_column)
    matrix = np.zeros((len(ids), len(unique["embedding"].iloc[0])), dtype=np.float32)
    positions = pd.Index(unique[id_column].astype(str)).get_indexer(pd.Index(ids.astype(str)))
    found = positions >= 0
    if found.any():
        matrix[found] = np.stack(unique["embedding"].to_numpy()[positions[found]]).astype(np.float32)
    return normalize_rows(matrix)


@dataclass
class ContentFeatures:
    """The LLM features of pairs, given the history they are computed from."""

    item_vectors: np.ndarray  # (n_items, d) unit-norm, zero rows for items without text
    profile_vectors: np.ndarray | None = None  # (n_users, d) unit-norm, zero rows for users without a profile
    liked: float = 4.0
    disliked: float = 2.0
    neighbours: int = 30

    def __post_init__(self):
        self._neighbours = self._nearest_items()

    def _nearest_items(self) -> sp.csr_matrix:
        """(n_items, n_items): row i holds the positive cosines of i's `neighbours` nearest other items."""
        vectors = self.item_vectors
        n = len(vectors)
        k = min(self.neighbours, n - 1)
        rows, cols, vals = [], [], []
        for start in range(0, n, 1024):
            sims = vectors[start:start + 1024] @ vectors.T
            sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf  # not itself
            top = top_k(sims, k)  # ties at the k-th neighbour go to the lower item position
            top_sims = np.take_along_axis(sims, top, axis=1)
            rows.append(np.repeat(np.arange(start, start + len(sims)), top.shape[1]))
            cols.append(top.ravel())
            vals.append(np.maximum(top_sims.ravel(), 0.0))
        matrix = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
        matrix.eliminate_zeros()
        return matrix

    def compute(self, history: Ratings, baseline_predictions: np.ndarray, users: np.ndarray,
                items: np.ndarray) -> pd.DataFrame:
        """The LLM features of pairs (users[k], items[k]); `baseline_predictions` are the baseline's
        predictions of the history's own ratings (the kNN estimate averages their residuals)."""
        shape = (history.n_users, history.n_items)
        hu, hi, hr = history.users, history.items, history.values

        def centroid(mask: np.ndarray) -> np.ndarray:
            indicator = sp.csr_matrix((np.ones(mask.sum(), np.float32), (hu[mask], hi[mask])), shape=shape)
            return normalize_rows(indicator @ self.item_vectors)

        liked, disliked = centroid(hr >= self.liked), centroid(hr <= self.disliked)
        item_v = self.item_vectors[items]
        features = {
            "sim_liked": np.einsum("ij,ij->i", liked[users], item_v),
            "sim_disliked": np.einsum("ij,ij->i", disliked[users], item_v),
            "sim_profile": (np.einsum("ij,ij->i", self.profile_vectors[users], item_v)
                            if self.profile_vectors is not None else np.zeros(len(users), np.float32)),
        }
        residual = sp.csr_matrix(((hr - baseline_predictions).astype(np.float32), (hu, hi)), shape=shape)
        rated = sp.csr_matrix((np.ones(len(hr), np.float32), (hu, hi)), shape=shape)
        neighbours_t = self._neighbours.T.tocsr()
        # Per pair: Σ_j s_ij (r_uj - b_uj) and Σ_j s_ij over the user's history j among i's nearest items,
        # computed a block of users at a time (a dense users x items block).
        numerator = np.zeros(len(users), np.float32)
        support = np.zeros(len(users), np.float32)
        order = np.argsort(users, kind="stable")
        block = 512
        bounds = np.searchsorted(users[order], np.arange(0, history.n_users + block, block))
        for b in range(len(bounds) - 1):
            chosen = order[bounds[b]:bounds[b + 1]]
            if not len(chosen):
                continue
            first = b * block
            last = min(first + block, history.n_users)
            num_block = (residual[first:last] @ neighbours_t).toarray()
            sup_block = (rated[first:last] @ neighbours_t).toarray()
            numerator[chosen] = num_block[users[chosen] - first, items[chosen]]
            support[chosen] = sup_block[users[chosen] - first, items[chosen]]
        features["knn_residual"] = np.where(support > 0, numerator / np.maximum(support, 1e-6), 0.0)
        features["knn_support"] = support
        return pd.DataFrame({name: np.asarray(features[name], dtype=np.float32) for name in LLM_FEATURES})


def collaborative_features(history: Ratings, users: np.ndarray, items: np.ndarray,
                           predictions: dict[str, np.ndarray]) -> pd.DataFrame:
    """The base models' predictions (one column each) and log(1 + training ratings) of user and item."""
    frame = pd.DataFrame({f"pred_{name}": values.astype(np.float32) for name, values in predictions.items()})
    frame["log_user_ratings"] = np.log1p(np.bincount(history.users, minlength=history.n_users)[users]).astype(np.float32)
    frame["log_item_ratings"] = np.log1p(np.bincount(history.items, minlength=history.n_items)[items]).astype(np.float32)
    return frame
