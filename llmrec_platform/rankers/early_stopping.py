"""Early stopping on the validation fold for rankers trained in epochs (Mult-VAE, Adam-BPR), no Dagster.

Every `every` epochs the trainer scores a seeded sample of validation users; NDCG@10 (the evaluation's own
exclusion rule, top-k and metric) decides. The best epoch's weights are kept, and training stops after `patience`
evaluations without a gain; the configured number of epochs is the maximum. Ties keep the earlier epoch, the
sample and the scores are seeded or deterministic, so the chosen epoch is the same on every run.

The validation fold is the one `InteractionData` carries (as the hybrid reads it). The hybrid's pseudo-label
refits turn it off (`patience` 0): their validation fold holds the hybrid's own labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.metrics import accuracy_at_k
from llmrec_platform.rankers.base import excluded_items, top_k_positions

K = 10


def check_early_stopping(patience: int, every: int, users: int) -> None:
    """A ranker's constructor check: a bad setting fails at once, not after loading data."""
    if patience < 0:
        raise ValueError(f"patience must be >= 0 (0: no early stopping), got {patience}")
    if every < 1:
        raise ValueError(f"eval_every must be >= 1 epoch, got {every}")
    if users < 1:
        raise ValueError(f"eval_users must be >= 1, got {users}")


@dataclass
class EarlyStopping:
    """Tracks the validation NDCG@10 of one training run; `state` is whatever the trainer needs to restore."""

    users: np.ndarray  # positions of the sampled validation users
    excluded: object  # their training items (csr), never ranked
    relevant: object  # their validation items (csr)
    patience: int
    every: int
    best_epoch: int = 0
    best_ndcg: float = -np.inf
    best_state: object = None
    curve: list[tuple[int, float]] = field(default_factory=list)
    waited: int = 0

    @classmethod
    def for_data(cls, data: InteractionData, patience: int, every: int, max_users: int,
                 seed: int) -> EarlyStopping | None:
        """None (train every epoch, keep the last) when patience is 0 or no user has a validation item."""
        with_valid = np.flatnonzero(np.asarray(data.valid.getnnz(axis=1)) > 0)
        if patience == 0 or not len(with_valid):
            return None
        if len(with_valid) > max_users:
            with_valid = np.sort(np.random.default_rng(seed).choice(with_valid, size=max_users, replace=False))
        return cls(with_valid, excluded_items(data.train[with_valid]), data.valid[with_valid].tocsr(), patience, every)

    def ndcg(self, score_users: Callable[[np.ndarray], np.ndarray], chunk: int = 512) -> float:
        """Mean NDCG@10 of the sampled users, scored `chunk` users at a time ((users x items) scores each)."""
        hits = np.zeros((len(self.users), K), dtype=bool)
        for start in range(0, len(self.users), chunk):
            rows = slice(start, start + chunk)
            lists = top_k_positions(score_users(self.users[rows]), self.excluded[rows], K)
            for row, positions in enumerate(lists, start=start):
                hits[row, :len(positions)] = self.relevant[row, positions].toarray().ravel() > 0
        return float(accuracy_at_k(hits, self.relevant.getnnz(axis=1), K)["ndcg"].mean())

    def due(self, epoch: int, last_epoch: int) -> bool:
        return epoch % self.every == 0 or epoch == last_epoch

    def update(self, epoch: int, score_users: Callable[[np.ndarray], np.ndarray], state: Callable[[], object]) -> bool:
        """Record this epoch's validation NDCG@10; keep `state()` when it is the best so far. True: stop now."""
        value = self.ndcg(score_users)
        self.curve.append((epoch, value))
        if value > self.best_ndcg:
            self.best_epoch, self.best_ndcg, self.best_state, self.waited = epoch, value, state(), 0
            return False
        self.waited += 1
        return self.waited >= self.patience
