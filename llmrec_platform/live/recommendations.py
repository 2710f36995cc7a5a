"""Top-k lists for many users at once (no Dagster)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.rankers.base import Ranker, top_k_frame

COLUMNS = ["user_id", "rank", "item_id", "score"]


class TopKLists:
    """Every known user's top-k from a ranker's scores, never an item `excluded` (the `excluded_items` rule over
    everything each user has interacted with) rules out. Score batches computed for something else (the
    evaluation's, through `evaluate_slices(on_scores=...)`) are taken as they come; `frame` scores the rest."""

    def __init__(self, ranker: Ranker, excluded: sp.csr_matrix, k: int = 20):
        self.ranker, self.excluded, self.k = ranker, excluded, k
        self.frames: list[pd.DataFrame] = []
        self.done = np.zeros(len(ranker.user_ids_), dtype=bool)

    def __call__(self, users: np.ndarray, scores: np.ndarray) -> None:
        """Take one batch: `scores` are `ranker.score(users)` (users by position)."""
        self.take(users, self.block(users, scores))

    def block(self, users: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
        """One batch's lists (row, rank, item_id, score): where the batch was scored, a worker node on a cluster."""
        return top_k_frame(scores, self.excluded[users], self.k, self.ranker.item_ids_)

    def take(self, users: np.ndarray, frame: pd.DataFrame) -> None:
        """Keep the lists `block` made of `users`' batch (the `evaluate_slices` ScoreSink protocol)."""
        self.frames.append(frame.assign(position=users[frame.pop("row").to_numpy()]))
        self.done[users] = True

    def frame(self, batch_size: int = 1024) -> pd.DataFrame:
        """(user_id, rank, item_id, score) by user position then rank, after scoring the users not taken yet."""
        rest = np.flatnonzero(~self.done)
        for start in range(0, len(rest), batch_size):
            users = rest[start:start + batch_size]
            self(users, self.ranker.score(users))
        if not self.frames:
            return pd.DataFrame(columns=COLUMNS)
        frame = pd.concat(self.frames, ignore_index=True).sort_values(["position", "rank"], kind="stable")
        return frame.assign(user_id=self.ranker.user_ids_[frame["position"].to_numpy()])[COLUMNS].reset_index(drop=True)

