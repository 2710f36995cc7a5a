"""Top-k lists for many users at once (no Dagster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.rankers.base import Ranker, top_k


def recommend_all(ranker: Ranker, exclude: sp.csr_matrix, k: int = 20, batch_size: int = 1024) -> pd.DataFrame:
    """(user_id, rank, item_id, score) for every user the ranker knows, excluding `exclude` items."""
    frames = []
    n_users = len(ranker.user_ids_)
    for start in range(0, n_users, batch_size):
        users = np.arange(start, min(start + batch_size, n_users))
        scores = ranker.score(users)
        seen = exclude[users].tocoo()
        scores[seen.row, seen.col] = -np.inf
        top = top_k(scores, k)
        top_scores = np.take_along_axis(scores, top, axis=1)
        frames.append(pd.DataFrame({
            "user_id": np.repeat(ranker.user_ids_[users], top.shape[1]),
            "rank": np.tile(np.arange(1, top.shape[1] + 1), len(users)),
            "item_id": ranker.item_ids_[top.ravel()],
            "score": top_scores.ravel(),
        }))
    frame = pd.concat(frames, ignore_index=True)
    return frame[np.isfinite(frame["score"])].reset_index(drop=True)
