"""Ratings as integer-indexed arrays, and the seeded k-fold split of Surprise's protocol (no Dagster)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

RATING_COLUMNS = ("user_id", "item_id", "rating")


class RatingDataError(ValueError):
    """The ratings cannot be used for rating prediction; the message says which row or field."""


@dataclass(frozen=True)
class Ratings:
    """Ratings with users and items as positions in `user_ids` / `item_ids` (every fold shares the index),
    ordered by user, then item."""

    users: np.ndarray  # int32 positions
    items: np.ndarray  # int32 positions
    values: np.ndarray  # float64 ratings
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def __len__(self) -> int:
        return len(self.values)

    def subset(self, rows: np.ndarray) -> Ratings:
        """The ratings at `rows` (positions or a mask), in the same user and item index."""
        return Ratings(self.users[rows], self.items[rows], self.values[rows], self.user_ids, self.item_ids)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Ratings:
        missing = [c for c in RATING_COLUMNS if c not in frame.columns]
        if missing:
            raise RatingDataError(f"ratings frame lacks column(s) {missing}: it has {list(frame.columns)}")
        values = pd.to_numeric(frame["rating"], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise RatingDataError(f"ratings row {row}: field 'rating' is {frame['rating'].iloc[row]!r}, not a number")
        if frame.duplicated(["user_id", "item_id"]).any():
            row = int(np.flatnonzero(frame.duplicated(["user_id", "item_id"]).to_numpy())[0])
            raise RatingDataError(f"ratings row {row}: user {frame['user_id'].iloc[row]!r} rated item "
                                  f"{frame['item_id'].iloc[row]!r} twice; keep one rating per user and item")
        users, user_ids = pd.factorize(frame["user_id"].astype(str), sort=True)
        items, item_ids = pd.factorize(frame["item_id"].astype(str), sort=True)
        # Rows ordered by user, then item: the seeded folds do not depend on the order the ratings came in.
        order = np.lexsort((items, users))
        return cls(users[order].astype(np.int32), items[order].astype(np.int32), values[order],
                   np.asarray(user_ids, dtype=object), np.asarray(item_ids, dtype=object))


def kfold_assignment(n_ratings: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of every rating: a seeded shuffle cut into n_folds near-equal parts, as
    Surprise's KFold does, so each rating is tested exactly once."""
    if n_folds < 2 or n_ratings < n_folds:
        raise RatingDataError(f"cannot cut {n_ratings} ratings into {n_folds} folds: need n_folds >= 2 ratings each")
    order = np.random.default_rng(seed).permutation(n_ratings)
    folds = np.empty(n_ratings, dtype=np.int16)
    for fold, rows in enumerate(np.array_split(order, n_folds)):
        folds[rows] = fold
    return folds


def holdout_mask(n_ratings: int, share: float, seed: int) -> np.ndarray:
    """A seeded random `share` of rows (True): the slice the stacker learns on, unseen by the base models."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(n_ratings, dtype=bool)
    mask[rng.permutation(n_ratings)[: int(round(share * n_ratings))]] = True
    return mask
