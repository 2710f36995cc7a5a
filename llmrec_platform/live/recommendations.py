"""Top-k lists for many users at once (no Dagster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.rankers.base import Ranker, top_k_frame


def recommend_all(ranker: Ranker, excluded: sp.csr_matrix, k: int = 20, batch_size: int = 1024) -> pd.DataFrame:
    """(user_id, rank, item_id, score) for every user the ranker knows, never an item `excluded` (the
    `excluded_items` rule over everything each user has interacted with) rules out."""
    frames = []
    n_users = len(ranker.user_ids_)
    for start in range(0, n_users, batch_size):
        users = np.arange(start, min(start + batch_size, n_users))
        frame = top_k_frame(ranker.score(users), excluded[users], k, ranker.item_ids_)
        frames.append(frame.assign(user_id=ranker.user_ids_[users][frame.pop("row").to_numpy()]))
    columns = ["user_id", "rank", "item_id", "score"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
