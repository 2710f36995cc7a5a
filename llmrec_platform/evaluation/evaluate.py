"""Full-ranking evaluation: every item the user has not interacted with before the fold is a candidate."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
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
    return evaluate_slices(ranker, data, {slice_name: (users, candidate_items)}, fold, ks, batch_size, progress)[slice_name]


@dataclass
class _SliceLists:
    """One slice's evaluable users and, filled batch by batch, their top-k lists and hits."""

    candidate_items: np.ndarray | None
    n_candidates: int
    relevant: sp.csr_matrix
    n_relevant: np.ndarray
    users: np.ndarray
    top_lists: np.ndarray
    hits: np.ndarray


def evaluate_slices(
    ranker: Ranker,
    data: InteractionData,
    slices: dict[str, tuple[np.ndarray | None, np.ndarray | None]],
    fold: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    progress: bool | None = False,
    on_scores: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> dict[str, EvaluationResult]:
    """`evaluate` on several slices (name -> (users or None, candidate item mask or None)), scoring each user once:
    a slice takes its users' rows of the shared score batches, so every slice gets the scores it would get alone.
    `on_scores(users, scores)` sees every score batch too (the champion's recommendations reuse them)."""
    excluded = excluded_items(*data.seen_before(fold))
    lists: dict[str, _SliceLists] = {}
    for name, (users, candidate_items) in slices.items():
        relevant = data.relevant(fold)
        if candidate_items is not None:
            relevant = relevant.multiply(candidate_items[None, :].astype(np.float32)).tocsr()
            relevant.eliminate_zeros()
        n_relevant = np.asarray(relevant.getnnz(axis=1))
        evaluable = n_relevant > 0
        if users is not None:
            evaluable &= np.isin(np.arange(data.n_users), users)
        n_candidates = int(candidate_items.sum()) if candidate_items is not None else data.n_items
        k_max = min(max(ks), n_candidates)  # lists never reach past the candidates
        evaluable_users = np.flatnonzero(evaluable)
        # Short lists (fewer unseen candidates than k) are padded with -1: never a hit, never an item.
        lists[name] = _SliceLists(candidate_items, n_candidates, relevant, n_relevant, evaluable_users,
                                  np.full((len(evaluable_users), k_max), -1, dtype=np.int64),
                                  np.zeros((len(evaluable_users), k_max), dtype=bool))
    scored = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), *(s.users for s in lists.values())]))
    show = log.isEnabledFor(logging.INFO) if progress is None else progress
    label = "/".join(slices)
    for start in tqdm(range(0, len(scored), batch_size), desc=f"evaluate {ranker.name} ({fold}/{label})", disable=not show):
        batch = scored[start:start + batch_size]
        scores = ranker.score(batch)
        if on_scores is not None:
            on_scores(batch, scores)
        for s in lists.values():
            rows = np.searchsorted(s.users, batch)
            inside = rows < len(s.users)
            inside[inside] = s.users[rows[inside]] == batch[inside]
            if not inside.any():
                continue
            mine = batch[inside]
            top = np.full((len(mine), s.top_lists.shape[1]), -1, dtype=np.int64)
            for row, positions in enumerate(top_k_positions(scores[inside], excluded[mine], s.top_lists.shape[1],
                                                            s.candidate_items)):
                top[row, :len(positions)] = positions
            rel = s.relevant[mine].toarray().astype(bool)
            s.top_lists[rows[inside]] = top
            s.hits[rows[inside]] = np.take_along_axis(rel, np.maximum(top, 0), axis=1) & (top >= 0)
    item_users = np.asarray(data.train.getnnz(axis=0))
    return {name: _result(ranker.name, fold, name, s, ks, data, item_users) for name, s in lists.items()}


def _result(ranker: str, fold: str, slice_name: str, s: _SliceLists, ks: Sequence[int], data: InteractionData,
            item_users: np.ndarray) -> EvaluationResult:
    per_user = {"user_id": data.user_ids[s.users]}
    summary: dict[str, float] = {}
    for k in ks:
        for metric, values in accuracy_at_k(s.hits, s.n_relevant[s.users], k).items():
            per_user[f"{metric}@{k}"] = values
            summary[f"{metric}@{k}"] = float(values.mean()) if len(values) else float("nan")
        top = s.top_lists[:, :k]
        summary[f"coverage@{k}"] = item_coverage(top, s.n_candidates) if len(top) else float("nan")
        summary[f"novelty@{k}"] = novelty(top, item_users, data.n_users) if len(top) else float("nan")
        summary[f"personalization@{k}"] = personalization(top, data.n_items)
    return EvaluationResult(ranker, fold, slice_name, pd.DataFrame(per_user), summary, len(s.users))
