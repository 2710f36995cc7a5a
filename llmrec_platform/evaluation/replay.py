"""Replay evaluation of the live loop (no Dagster).

For each user, the held-out interactions of a fold are replayed in time order as events: before each one,
the ranker scores the history so far (the earlier folds plus the events replayed before it) and the
held-out item is looked up in that list. hit@k and NDCG@k (one relevant item) are averaged over all
steps. This is the offline mirror of serving: the history goes through `score_histories` (fold-in), the
list never shows what the history holds (`excluded_items`), and a `ShortTermBlend` is applied exactly as
the server applies it. Choose blend settings on the valid fold; report the test fold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.live.short_term import ShortTermBlend, latest_positions
from llmrec_platform.rankers.base import Histories, Ranker, excluded_items


@dataclass(frozen=True)
class ReplayStep:
    user: int  # training position of the user, or -1
    history: np.ndarray  # item positions
    ratings: np.ndarray
    timestamps: np.ndarray
    target: int  # item position of the interaction replayed next


def replay_steps(ranker: Ranker, split: pd.DataFrame, fold: str, max_users: int | None = None,
                 seed: int = 0) -> list[ReplayStep]:
    """One step per held-out interaction of `fold` ("valid": history is train; "test": train + valid), in
    time order per user, for at most `max_users` users drawn with `seed`."""
    earlier = {"valid": ["train"], "test": ["train", "valid"]}[fold]
    frame = split.assign(item=pd.Index(ranker.item_ids_).get_indexer(split["item_id"].astype(str)),
                         user_id=split["user_id"].astype(str))
    frame = frame[frame["item"] >= 0]
    users = np.array(sorted(frame.loc[frame["fold"] == fold, "user_id"].unique()), dtype=object)
    if max_users is not None and len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    frame = frame[frame["user_id"].isin(set(users))].sort_values(["user_id", "timestamp", "item"], kind="stable")
    steps = []
    for user_id, rows in frame.groupby("user_id", sort=True):
        base = rows[rows["fold"].isin(earlier)]
        held_out = rows[rows["fold"] == fold]
        items = np.concatenate([base["item"].to_numpy(), held_out["item"].to_numpy()])
        ratings = np.concatenate([base["rating"].to_numpy(), held_out["rating"].to_numpy()]).astype(np.float32)
        stamps = np.concatenate([base["timestamp"].to_numpy(), held_out["timestamp"].to_numpy()]).astype(np.float64)
        position = ranker._user_position.get(str(user_id), -1)
        for j in range(len(held_out)):
            end = len(base) + j
            steps.append(ReplayStep(position, items[:end], ratings[:end], stamps[:end], int(items[end])))
    return steps


def replay(ranker: Ranker, steps: list[ReplayStep], item_vectors: np.ndarray | None,
           blends: dict[str, ShortTermBlend], k: int = 10, batch_size: int = 256) -> pd.DataFrame:
    """(variant, steps, hit@k, ndcg@k) for each blend (ShortTermBlend(weight=0) is the champion alone).
    `item_vectors` are unit-norm rows in the ranker's item order (needed by any active blend)."""
    n_items = len(ranker.item_ids_)
    hits = {name: [] for name in blends}
    gains = {name: [] for name in blends}
    for start in range(0, len(steps), batch_size):
        batch = steps[start:start + batch_size]
        rows = np.repeat(np.arange(len(batch)), [len(s.history) for s in batch])
        cols = np.concatenate([s.history for s in batch]) if batch else np.zeros(0, np.int64)
        shape = (len(batch), n_items)
        ratings = sp.csr_matrix((np.concatenate([s.ratings for s in batch]), (rows, cols)), shape=shape)
        stamps = sp.csr_matrix((np.concatenate([s.timestamps for s in batch]), (rows, cols)), shape=shape)
        histories = Histories(ratings, stamps, np.array([s.user for s in batch]), (None,) * len(batch))
        scores = ranker.score_histories(histories)
        blocked = excluded_items(ratings).toarray()
        targets = np.array([s.target for s in batch])
        for name, blend in blends.items():
            latest = [latest_positions(s.history, s.timestamps, blend.recent) for s in batch] if blend.active else \
                [[] for _ in batch]
            blended = blend.apply(scores, latest, item_vectors, ranker._similar_item_scores) if blend.active else scores
            rank = target_ranks(blended, blocked, targets)
            hits[name].append(rank < k)
            gains[name].append(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0))
    return pd.DataFrame([{
        "variant": name, "steps": len(steps),
        f"hit@{k}": float(np.concatenate(hits[name]).mean()) if steps else float("nan"),
        f"ndcg@{k}": float(np.concatenate(gains[name]).mean()) if steps else float("nan"),
    } for name in blends])


def target_ranks(scores: np.ndarray, blocked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among its non-blocked items; ties go to the lower position, as in
    `top_k`."""
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets][:, None]
    positions = np.arange(scores.shape[1])[None, :]
    ahead = (scores > target_scores) | ((scores == target_scores) & (positions < targets[:, None]))
    return (ahead & ~blocked).sum(axis=1)
