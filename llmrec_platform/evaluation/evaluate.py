"""Full-ranking evaluation: every item the user has not interacted with before the fold is a candidate."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.metrics import accuracy_at_k, item_coverage, novelty, personalization
from llmrec_platform.rankers.base import Ranker, excluded_items, top_k_positions

DEFAULT_KS = (10, 20)
log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    ranker: str
    fold: str
    slice: str
    per_user: pd.DataFrame  # user_id + one column per "metric@k"
    summary: dict[str, float]  # "metric@k" -> value (accuracy means and beyond-accuracy metrics)
    n_users: int

    def long(self) -> pd.DataFrame:
        """(ranker, slice, metric, k, value) rows for the evaluation_metrics table."""
        rows = []
        for key, value in self.summary.items():
            metric, k = key.split("@")
            rows.append({"ranker": self.ranker, "slice": self.slice, "fold": self.fold,
                         "metric": metric, "k": int(k), "value": float(value)})
        return pd.DataFrame(rows)


def evaluate(
    ranker: Ranker,
    data: InteractionData,
    fold: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    slice_name: str = "all",
    candidate_items: np.ndarray | None = None,
    users: np.ndarray | None = None,
    progress: bool | None = False,
) -> EvaluationResult:
    """Rank all candidate items for every user with relevant items in `fold` and compute metrics.

    `candidate_items` (a boolean mask over items) restricts both the ranking and the relevant set,
    which is how the cold-item slice ranks among cold items only. `users` (positions) restricts who is
    evaluated, e.g. to the validation users a re-ranker did not train on. `progress=None`: a bar when this
    module's logger is at INFO (as sentence-transformers decides), i.e. `llmrec demo --verbose`.
    """
    relevant = data.relevant(fold)
    excluded = excluded_items(*data.seen_before(fold))
    if candidate_items is not None:
        relevant = relevant.multiply(candidate_items[None, :].astype(np.float32)).tocsr()
        relevant.eliminate_zeros()
    n_relevant = np.asarray(relevant.getnnz(axis=1))
    evaluable = n_relevant > 0
    if users is not None:
        evaluable &= np.isin(np.arange(data.n_users), users)
    users = np.flatnonzero(evaluable)
    n_candidates = int(candidate_items.sum()) if candidate_items is not None else data.n_items
    k_max = min(max(ks), n_candidates)  # lists never reach past the candidates
    # Short lists (fewer unseen candidates than k) are padded with -1: never a hit, never an item.
    top_lists = np.full((len(users), k_max), -1, dtype=np.int64)
    hits = np.zeros((len(users), k_max), dtype=bool)
    batches = range(0, len(users), batch_size)
    show = log.isEnabledFor(logging.INFO) if progress is None else progress
    for start in tqdm(batches, desc=f"evaluate {ranker.name} ({fold}/{slice_name})", disable=not show):
        batch = users[start:start + batch_size]
        lists = top_k_positions(ranker.score(batch), excluded[batch], k_max, candidate_items)
        top = np.full((len(batch), k_max), -1, dtype=np.int64)
        for row, positions in enumerate(lists):
            top[row, :len(positions)] = positions
        rel = relevant[batch].toarray().astype(bool)
        top_lists[start:start + len(batch)] = top
        hits[start:start + len(batch)] = np.take_along_axis(rel, np.maximum(top, 0), axis=1) & (top >= 0)
    per_user = {"user_id": data.user_ids[users]}
    summary: dict[str, float] = {}
    item_users = np.asarray(data.train.getnnz(axis=0))
    for k in ks:
        for metric, values in accuracy_at_k(hits, n_relevant[users], k).items():
            per_user[f"{metric}@{k}"] = values
            summary[f"{metric}@{k}"] = float(values.mean()) if len(values) else float("nan")
        lists = top_lists[:, :k]
        summary[f"coverage@{k}"] = item_coverage(lists, n_candidates) if len(lists) else float("nan")
        summary[f"novelty@{k}"] = novelty(lists, item_users, data.n_users) if len(lists) else float("nan")
        summary[f"personalization@{k}"] = personalization(lists, data.n_items)
    return EvaluationResult(ranker.name, fold, slice_name, pd.DataFrame(per_user), summary, len(users))
