"""Embedding matrices aligned to an index space, and user interest vectors built from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

# Weight of the user's own text (profile, reviews, search queries) in the interest vector: a conservative default
# (on ML-100K's demographic profiles 0.25 scores best on valid; benchmarks/user_texts.py); LLMREC_USER_TEXT_WEIGHT
# or a config's `user_texts.weight` change it.
DEFAULT_TEXT_WEIGHT = 0.05


def align(ids: np.ndarray, frame: pd.DataFrame, id_column: str, what: str) -> np.ndarray:
    """Rows of frame['embedding'] in the order of `ids`; fails loudly on missing ids."""
    indexed = frame.set_index(id_column)["embedding"]
    missing = pd.Index(ids).difference(indexed.index)
    if len(missing):
        raise KeyError(f"{len(missing)} {what} have no embedding (e.g. {list(missing[:3])}): re-materialize the embeddings")
    return np.stack(indexed.loc[ids].to_numpy()).astype(np.float32)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def user_interest_vectors(
    ratings: sp.csr_matrix,
    timestamps: sp.csr_matrix,
    item_vectors: np.ndarray,
    profile_vectors: np.ndarray | None = None,
    profile_weight: float = DEFAULT_TEXT_WEIGHT,
    half_life_days: float = 365.0,
    rating_offset: float = 2.0,
) -> np.ndarray:
    """Unit-norm interest vectors of histories (rows of `ratings`, with their `timestamps`): the rating- and
    recency-weighted mean of the history items' embeddings, blended with the embedding of the user's own text
    (profile, reviews, search queries; weight `profile_weight`): normalize((1 - w) * history + w * text). A user
    without text (a zero row) keeps the history alone, so w changes only users who have text; w = 0 ignores
    text, w = 1 is text alone. An empty history with no text gives a zero vector.

    Interaction weight = max(rating - rating_offset, 0.5) * 0.5 ** (age / half_life), where age is measured
    from the history's latest interaction, so each user's newest tastes count most.
    """
    ratings = sp.csr_matrix(ratings)
    times = sp.csr_matrix(timestamps)
    ratings.sort_indices()
    times.sort_indices()
    if not (np.array_equal(ratings.indptr, times.indptr) and np.array_equal(ratings.indices, times.indices)):
        raise ValueError("ratings and timestamps must share one sparsity pattern")
    rows = np.repeat(np.arange(ratings.shape[0]), np.diff(ratings.indptr))
    latest = np.full(ratings.shape[0], -np.inf)
    np.maximum.at(latest, rows, times.data)
    age_days = (latest[rows] - times.data) / 86400.0
    weights = np.maximum(ratings.data - rating_offset, 0.5) * 0.5 ** (age_days / half_life_days)
    weighted = sp.csr_matrix((weights.astype(np.float32), ratings.indices, ratings.indptr), shape=ratings.shape)
    interest = normalize_rows(weighted @ item_vectors)
    if profile_vectors is None or profile_weight <= 0:
        return interest
    texts = normalize_rows(profile_vectors)
    blended = normalize_rows((1.0 - profile_weight) * interest + profile_weight * texts)
    # Users without text keep their history's vector (even at weight 1, which would otherwise zero it).
    has_text = np.linalg.norm(texts, axis=1) > 0
    return np.where(has_text[:, None], blended, interest).astype(np.float32)
