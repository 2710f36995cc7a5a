"""Replay evaluation of the live loop (no Dagster).

For each user, the held-out interactions of a fold are replayed in time order as events: before each one,
the ranker scores the history so far (the earlier folds plus the events replayed before it) and the
held-out item is looked up in that list. hit@k and NDCG@k (one relevant item) are averaged over all
steps, and per user for paired comparisons. This is the offline mirror of serving: the history goes through
`score_histories` (fold-in), the list never shows what the history holds (`excluded_items`), and the
`LiveRanking` is applied exactly as the server applies it (`LiveRanking.scores`, with the ranker's training
timeline as the short-term horizon). Choose settings on the valid fold; report the test fold. A published
ranker replays on another split of its interactions through `Ranker.refit_elsewhere` (a home's hybrid on the
temporal split).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd

from llmrec_platform.live.channels import LiveRanking, one_per_item, training_horizon
from llmrec_platform.live.long_term import history_matrices
from llmrec_platform.rankers.base import Ranker


@dataclass(frozen=True)
class ReplayStep:
    user: int  # training position of the user, or -1
    history: np.ndarray  # item positions
    ratings: np.ndarray
    timestamps: np.ndarray
    target: int  # item position of the interaction replayed next
    user_id: str = ""


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
            steps.append(ReplayStep(position, *one_per_item(items[:end], ratings[:end], stamps[:end]),
                                    int(items[end]), str(user_id)))
    return steps


def replay_per_step(ranker: Ranker, steps: list[ReplayStep], item_vectors: np.ndarray | None,
                    variants: dict[str, LiveRanking], k: int = 10, batch_size: int = 256) -> pd.DataFrame:
    """(variant, user_id, rank, hit@k, ndcg@k) per step and variant (`LiveRanking(weight=0)` is the champion
    alone). `item_vectors` are unit-norm rows in the ranker's item order."""
    n_items = len(ranker.item_ids_)
    horizon = training_horizon(ranker)
    similarity = functools.lru_cache(maxsize=8192)(ranker._similar_item_scores)  # the latest items recur step to step
    ranks: dict[str, list[np.ndarray]] = {name: [] for name in variants}
    for start in range(0, len(steps), batch_size):
        batch = steps[start:start + batch_size]
        histories = history_matrices([(s.user, s.history, s.ratings, s.timestamps) for s in batch], n_items)
        scores = ranker.score_histories(histories)
        pattern = histories.ratings
        blocked = np.zeros(pattern.shape, dtype=bool)
        blocked[np.repeat(np.arange(len(batch)), np.diff(pattern.indptr)), pattern.indices] = True  # the one exclusion rule
        targets = np.array([s.target for s in batch])
        for name, variant in variants.items():
            live = np.stack([variant.scores(scores[r], n_items, s.history, s.timestamps, horizon, item_vectors,
                                            similarity) for r, s in enumerate(batch)]) if variant.active else scores
            ranks[name].append(target_ranks(live, blocked, targets))
    users = np.array([s.user_id for s in steps], dtype=object)
    frames = []
    for name in variants:
        rank = np.concatenate(ranks[name]) if steps else np.zeros(0, np.int64)
        frames.append(pd.DataFrame({"variant": name, "user_id": users, "rank": rank, f"hit@{k}": (rank < k).astype(float),
                                    f"ndcg@{k}": np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)}))
    return pd.concat(frames, ignore_index=True)


def replay(ranker: Ranker, steps: list[ReplayStep], item_vectors: np.ndarray | None,
           blends: dict[str, LiveRanking], k: int = 10, batch_size: int = 256) -> pd.DataFrame:
    """(variant, steps, hit@k, ndcg@k) for each variant, averaged over all steps."""
    per_step = replay_per_step(ranker, steps, item_vectors, blends, k, batch_size)
    summary = per_step.groupby("variant", sort=False)[[f"hit@{k}", f"ndcg@{k}"]].mean().reindex(list(blends))
    return summary.reset_index().assign(steps=len(steps))[["variant", "steps", f"hit@{k}", f"ndcg@{k}"]]


def per_user(per_step: pd.DataFrame, variant: str, metric: str) -> pd.DataFrame:
    """(user_id, metric): one variant's metric averaged over each user's steps, for a paired comparison."""
    rows = per_step[per_step["variant"] == variant]
    return rows.groupby("user_id", sort=True)[metric].mean().reset_index()


def target_ranks(scores: np.ndarray, blocked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each row's target among its non-blocked items; ties go to the lower position, as in
    `top_k`."""
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets][:, None]
    positions = np.arange(scores.shape[1])[None, :]
    ahead = (scores > target_scores) | ((scores == target_scores) & (positions < targets[:, None]))
    return (ahead & ~blocked).sum(axis=1)
