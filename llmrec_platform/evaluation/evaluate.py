"""Full-ranking evaluation: every item the user has not interacted with before the fold is a candidate."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.compute import BlockMap, InProcess, cut
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
    on_scores: Callable[[np.ndarray, np.ndarray], None] | ScoreSink | None = None,
    blocks: BlockMap | None = None,
) -> dict[str, EvaluationResult]:
    """`evaluate` on several slices (name -> (users or None, candidate item mask or None)), scoring each user once:
    a slice takes its users' rows of the shared score batches, so every slice gets the scores it would get alone.
    `on_scores(users, scores)` sees every score batch too (the champion's recommendations reuse them; a `ScoreSink`
    works on a cluster too). `blocks` says where the user blocks are scored (default: in-process, `batch_size` users
    a block); with `blocks`, its `block_users` sets the block size, so the results are the same wherever they run."""
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
    mapper = blocks or InProcess()
    sink = on_scores if isinstance(on_scores, ScoreSink) else None
    if on_scores is not None and sink is None and not isinstance(mapper, InProcess):
        raise ValueError("on_scores must be a ScoreSink (block + take) when the blocks run on a cluster")
    plans = [_SlicePlan(s.users, s.relevant, s.candidate_items, s.top_lists.shape[1]) for s in lists.values()]
    user_blocks = cut(scored, batch_size if blocks is None else blocks.block_users)
    plain = None if sink is not None else on_scores  # a plain callable only runs in this process
    done = mapper.map(f"evaluate {ranker.name} ({fold}/{label})", _score_block, user_blocks, ranker, excluded, plans,
                      sink, plain, progress=show)
    for batch, (per_slice, extra) in zip(user_blocks, done, strict=True):  # the reduce
        if sink is not None:
            sink.take(batch, extra)
        for s, (rows, top, hits) in zip(lists.values(), per_slice, strict=True):
            s.top_lists[rows] = top
            s.hits[rows] = hits
    item_users = np.asarray(data.train.getnnz(axis=0))
    return {name: _result(ranker.name, fold, name, s, ks, data, item_users) for name, s in lists.items()}


@dataclass
class _SlicePlan:
    """What a block needs of one slice: its users (sorted positions), relevant items, candidates and list length."""

    users: np.ndarray
    relevant: sp.csr_matrix
    candidate_items: np.ndarray | None
    k_max: int


@runtime_checkable
class ScoreSink(Protocol):
    """Takes a share of every score batch (the champion's recommendations): `block` runs where the batch was
    scored (a worker node) and returns something small; `take` collects it on the driver."""

    def block(self, users: np.ndarray, scores: np.ndarray) -> Any: ...

    def take(self, users: np.ndarray, taken: Any) -> None: ...


def _score_block(batch: np.ndarray, ranker: Ranker, excluded: sp.csr_matrix, plans: list[_SlicePlan],
                 sink: ScoreSink | None, on_scores: Callable[[np.ndarray, np.ndarray], None] | None = None):
    """Score one block of users once: per slice, (rows of its users, top-k positions, hits), and the sink's share."""
    scores = ranker.score(batch)
    if on_scores is not None:
        on_scores(batch, scores)
    per_slice = []
    for plan in plans:
        rows = np.searchsorted(plan.users, batch)
        inside = rows < len(plan.users)
        inside[inside] = plan.users[rows[inside]] == batch[inside]
        mine = batch[inside]
        top = np.full((len(mine), plan.k_max), -1, dtype=np.int64)
        for row, positions in enumerate(top_k_positions(scores[inside], excluded[mine], plan.k_max,
                                                        plan.candidate_items)):
            top[row, :len(positions)] = positions
        rel = plan.relevant[mine].toarray().astype(bool)
        hits = np.take_along_axis(rel, np.maximum(top, 0), axis=1) & (top >= 0)
        per_slice.append((rows[inside], top, hits))
    return per_slice, sink.block(batch, scores) if sink is not None else None


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
