"""Top-k ranking metrics with RecBole's definitions: binary relevance, log2 discount, ideal DCG over
min(|relevant|, k), MAP@k normalised by min(|relevant|, k), F1@k the per-user harmonic mean of P@k and R@k
(0 for a user without a hit), then averaged like every other metric. All functions are per user and vectorised:
`hits` is a (n_users, K) boolean matrix of the ranked lists, best first."""

from __future__ import annotations

import numpy as np

ACCURACY_METRICS = ("precision", "recall", "f1", "ndcg", "map", "mrr", "hit")


def accuracy_at_k(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    hits = np.asarray(hits, dtype=bool)[:, :k]
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    if np.any(n_relevant <= 0):
        raise ValueError("every evaluated user needs at least one relevant item")
    positions = np.arange(1, hits.shape[1] + 1)
    n_hits = hits.sum(axis=1)
    discount = 1.0 / np.log2(positions + 1)
    dcg = (hits * discount).sum(axis=1)
    ideal_len = np.minimum(n_relevant, k).astype(int)
    ideal_dcg = np.cumsum(1.0 / np.log2(np.arange(1, k + 1) + 1))[ideal_len - 1]
    precision_at_i = np.cumsum(hits, axis=1) / positions
    first_hit = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, np.inf)
    precision, recall = n_hits / k, n_hits / n_relevant
    # 2PR/(P+R) simplifies to 2 hits / (k + |relevant|): no 0/0 for users without a hit.
    f1 = 2.0 * n_hits / (k + n_relevant)
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "ndcg": dcg / ideal_dcg,
        "map": (precision_at_i * hits).sum(axis=1) / np.minimum(n_relevant, k),
        "mrr": 1.0 / first_hit,
        "hit": (n_hits > 0).astype(np.float64),
    }


def item_coverage(top_items: np.ndarray, n_items: int) -> float:
    """Share of the catalogue that appears in at least one list (-1 pads a short list)."""
    return len(np.unique(top_items[top_items >= 0])) / n_items


def novelty(top_items: np.ndarray, item_user_counts: np.ndarray, n_users: int) -> float:
    """Mean self-information -log2(p(i)) of recommended items, p(i) = (users of i + 1) / (users + 1)."""
    p = (item_user_counts[top_items[top_items >= 0]] + 1.0) / (n_users + 1.0)
    return float(np.mean(-np.log2(p)))


def personalization(top_items: np.ndarray, n_items: int) -> float:
    """1 - mean overlap |L_u & L_v| / k over all pairs of distinct users (computed in O(items); -1 pads)."""
    n_users, k = top_items.shape
    if n_users < 2:
        return float("nan")
    listed = top_items[top_items >= 0]
    counts = np.bincount(listed, minlength=n_items).astype(np.float64)
    pair_overlap = (np.sum(counts**2) - len(listed)) / (n_users * (n_users - 1))
    return float(1.0 - pair_overlap / k)


def rmse(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error of rating predictions (rating prediction, not ranking)."""
    errors = _rating_errors(predicted, actual)
    return float(np.sqrt(np.mean(errors**2)))


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error of rating predictions."""
    return float(np.mean(np.abs(_rating_errors(predicted, actual))))


def _rating_errors(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    predicted, actual = np.asarray(predicted, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    if predicted.shape != actual.shape or predicted.ndim != 1 or not len(actual):
        raise ValueError(f"need two non-empty 1-d arrays of one length, got shapes {predicted.shape} and {actual.shape}")
    return predicted - actual
