"""The one ranker interface every model implements.

A ranker is fitted on the training matrix of an `InteractionData` and afterwards scores every item of
that item space for any known user: `score(user_positions) -> (n_users, n_items) float32`, higher is
better. Evaluation, recommendation and serving only ever call `score`.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import pandas as pd

from llmrec_platform.interactions import InteractionData


class UnknownUserError(KeyError):
    def __str__(self) -> str:
        return f"unknown user {self.args[0]!r}: the ranker was not fitted with this user"


class NotFittedError(RuntimeError):
    pass


class Ranker(ABC):
    name: ClassVar[str]
    # Whether scores for items without training interactions carry information (content-based rankers).
    scores_cold_items: ClassVar[bool] = False

    user_ids_: np.ndarray | None = None
    item_ids_: np.ndarray | None = None

    def fit(self, data: InteractionData) -> Self:
        self.user_ids_ = data.user_ids
        self.item_ids_ = data.item_ids
        self._user_position = {u: i for i, u in enumerate(data.user_ids)}
        self.train_ = data.train
        self._fit(data)
        return self

    @abstractmethod
    def _fit(self, data: InteractionData) -> None:
        """Learn from `data.train` (and `data.train_timestamps`); never read valid or test."""

    @abstractmethod
    def _score(self, users: np.ndarray) -> np.ndarray:
        """Scores of all items for the given user positions, shape (len(users), n_items)."""

    def score(self, users: np.ndarray) -> np.ndarray:
        if self.user_ids_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(data) first")
        users = np.asarray(users, dtype=np.int64)
        scores = np.asarray(self._score(users), dtype=np.float32)
        if scores.shape != (len(users), len(self.item_ids_)):
            raise AssertionError(f"{self.name}: scores shape {scores.shape}, expected {(len(users), len(self.item_ids_))}")
        return scores

    def user_position(self, user_id: str) -> int:
        if self.user_ids_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(data) first")
        try:
            return self._user_position[str(user_id)]
        except KeyError:
            raise UnknownUserError(user_id) from None

    def recommend(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """Top-k items for one user as (rank, item_id, score), training items excluded by default."""
        position = self.user_position(user_id)
        scores = self.score(np.array([position]))
        if exclude_seen:
            scores[0, self.train_[position].indices] = -np.inf
        top = top_k(scores, k)[0]
        top = top[np.isfinite(scores[0, top])]
        return pd.DataFrame({"rank": np.arange(1, len(top) + 1), "item_id": self.item_ids_[top], "score": scores[0, top]})

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as handle:
            pickle.dump(self, handle, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def load(path: str | Path) -> Ranker:
        with open(path, "rb") as handle:
            ranker = pickle.load(handle)
        if not isinstance(ranker, Ranker):
            raise TypeError(f"{path} does not hold a Ranker")
        return ranker


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column positions of the k best scores per row, best first; ties broken by lower position."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # stable tie-break by position before the score sort
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


@dataclass
class TrainedRanker:
    """A fitted ranker with its provenance: the MLflow run, the data it saw and its validation metrics."""

    ranker: Ranker
    mlflow_run_id: str
    data_fingerprint: str
    valid_metrics: dict[str, float]
    fit_seconds: float
