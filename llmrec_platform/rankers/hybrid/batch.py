"""The histories one hybrid call ranks for: what candidate retrieval and the features both take."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmrec_platform.rankers.base import Histories, Ranker


@dataclass(frozen=True)
class UserBatch:
    """Histories to rank for. `by_id`: they are the context's own training rows, so base rankers score the users
    by position (their stored answer); otherwise the base rankers fold the histories in."""

    histories: Histories
    by_id: bool

    def __len__(self) -> int:
        return len(self.histories)

    def scores(self, ranker: Ranker) -> np.ndarray:
        if self.by_id:
            return ranker.score(self.histories.users)
        return ranker.score_histories(self.histories)
