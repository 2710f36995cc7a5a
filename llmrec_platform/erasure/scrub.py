"""Remove users from fitted rankers and other pickled results, in place (no Dagster).

A fitted `Ranker` keeps its users by position: `user_ids_`, `_user_position`, the training rows (`train_`,
`train_timestamps_`) and per-user arrays (factor rows, interest and profile vectors). Erasing a user blanks
their position rather than removing it, so every other user keeps theirs: the id becomes "", the rows are
zeroed, and `popularity_` is recounted from what is left. Nested rankers (a hybrid's bases), frames with a
`user_id` column, dicts, lists and id arrays are walked the same way.

What a blanked row cannot undo is what the model learned from everyone at once, the user included:
item-item weights, item factors, network weights, a learned re-ranker. `REFIT_NEEDED` says which models
that is; they are only fully forgotten by a refit on the data without the user (`forget.py` schedules it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.rankers.base import Ranker, clear_rows

# Rankers whose fitted state, apart from per-user rows, holds nothing learned from users: blanking suffices.
ROW_DROP_SUFFICES = {
    "popularity": "item counts, recounted without the user",
    "random": "nothing learned",
    "genre_match": "item-genre weights come from the catalogue",
    "llm_content": "item vectors come from the text encoder; the user's interest and profile rows are blanked",
    "tfidf_content": "TF-IDF is fitted on item texts; the user's interest and profile rows are blanked",
}
# Rankers that keep, beyond the user's row, weights learned from every training history: a refit forgets.
REFIT_NEEDED = {
    "ease": "item-item weights B solved from everyone's histories",
    "itemknn": "item-item similarities counted over everyone's histories",
    "rp3beta": "random-walk item-item weights over everyone's histories",
    "sequence_neighbours": "item-to-next-item counts over everyone's sequences",
    "llm_ease_map": "the text-to-collaborative map is fitted on everyone's histories",
    "als": "item factors learned with the user's factor",
    "bpr": "item factors learned with the user's factor",
    "bpr_adam": "item factors learned with the user's factor",
    "multvae": "encoder and decoder weights trained on everyone's histories",
    "hybrid": "the re-ranker (LightGBM) was trained on feature rows of users, this one included",
}
# Library objects whose insides hold no user ids (walking them would only cost time).
_OPAQUE_MODULES = ("torch", "lightgbm", "sklearn", "scipy", "numpy", "implicit", "threadpoolctl", "builtins")


def needs_refit(name: str) -> bool:
    """Whether blanking the user leaves something learned from them (unknown rankers: assume so)."""
    return name not in ROW_DROP_SUFFICES


@dataclasses.dataclass
class Scrubbed:
    """What a walk removed: rows and entries, and the names of the rankers that held the user."""

    removed: int = 0
    rankers: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Rows:
    """The positions to zero in arrays with one row per user (None outside a ranker)."""

    positions: np.ndarray
    n_users: int
    n_items: int


def scrub(obj: object, ids: Iterable[str]) -> tuple[object, Scrubbed]:
    """`obj` without the users `ids` (modified in place where it can be; frames are replaced): returns the
    object to store and what was removed.

    An id is matched by structure, never by its digits alone ("42" is also an item id): rankers by their user
    positions, frames by their user columns, and strings in containers only under a name that says they are
    users (`users`, `user_ids`, a dict key `user_id`)."""
    result = Scrubbed()
    cleaned = _walk(obj, frozenset(str(i) for i in ids), None, result, set(), 0, False)
    return cleaned, result


def _is_user_name(name: object) -> bool:
    return isinstance(name, str) and "user" in name.lower()


def _walk(obj, ids: frozenset[str], rows: _Rows | None, result: Scrubbed, seen: set[int], depth: int, users: bool):
    if obj is None or isinstance(obj, str | int | float | bool | bytes) or depth > 12:
        return obj
    if isinstance(obj, pd.DataFrame):
        return _frame(obj, ids, result)
    if isinstance(obj, pd.Series):
        if not users:
            return obj
        keep = ~obj.astype(str).isin(ids)
        result.removed += int((~keep).sum())
        return obj[keep]
    if isinstance(obj, np.ndarray):
        return _array(obj, ids, rows, result, users)
    if sp.issparse(obj):
        return _sparse_rows(obj, rows, result)
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, dict):
        if users:
            for key in [k for k in obj if isinstance(k, str) and k in ids]:
                del obj[key]
                result.removed += 1
        for key, value in list(obj.items()):
            obj[key] = _walk(value, ids, rows, result, seen, depth + 1, users or _is_user_name(key))
        return obj
    if isinstance(obj, list):
        kept = [v for v in obj if not (users and isinstance(v, str) and v in ids)]
        result.removed += len(obj) - len(kept)
        obj[:] = [_walk(v, ids, rows, result, seen, depth + 1, users) for v in kept]
        return obj
    if isinstance(obj, tuple):
        walked = tuple(_walk(v, ids, rows, result, seen, depth + 1, users) for v in obj)
        return type(obj)(*walked) if hasattr(obj, "_fields") else walked
    if isinstance(obj, set | frozenset):
        kept = {v for v in obj if not (users and isinstance(v, str) and v in ids)}
        result.removed += len(obj) - len(kept)
        return type(obj)(kept)
    if type(obj).__module__.split(".")[0] in _OPAQUE_MODULES or not hasattr(obj, "__dict__"):
        return obj
    skip: tuple[str, ...] = ()
    if isinstance(obj, Ranker):
        rows, skip = _blank_ranker(obj, ids, result), Ranker.USER_STATE
    for name, value in list(vars(obj).items()):
        if name in skip:
            continue  # cleared by Ranker.forget_users
        walked = _walk(value, ids, rows, result, seen, depth + 1, users or _is_user_name(name))
        if walked is not value:
            object.__setattr__(obj, name, walked)  # also through frozen dataclasses
    return obj


def _blank_ranker(ranker: Ranker, ids: frozenset[str], result: Scrubbed) -> _Rows | None:
    positions = ranker.forget_users(sorted(ids))
    if not len(positions):
        return None
    result.rankers.append(ranker.name)
    result.removed += len(positions)
    return _Rows(positions, len(ranker.user_ids_), len(ranker.item_ids_) if ranker.item_ids_ is not None else -1)


def _sparse_rows(matrix, rows: _Rows | None, result: Scrubbed):
    if rows is None or rows.n_users == rows.n_items or matrix.shape[0] != rows.n_users:
        return matrix
    result.removed += len(rows.positions)
    return clear_rows(matrix, rows.positions)


def _array(array: np.ndarray, ids: frozenset[str], rows: _Rows | None, result: Scrubbed, users: bool) -> np.ndarray:
    if array.dtype.kind in "OUS":
        if users and array.size:
            hit = np.isin(array.astype(str), list(ids))
            if hit.any():
                array = array.copy()
                array[hit] = ""
                result.removed += int(hit.sum())
        return array
    if rows is not None and rows.n_users != rows.n_items and array.ndim >= 1 and array.shape[0] == rows.n_users \
            and array.dtype.kind in "fc":
        array = array.copy()
        array[rows.positions] = 0
        result.removed += len(rows.positions)
    return array


def _frame(frame: pd.DataFrame, ids: frozenset[str], result: Scrubbed) -> pd.DataFrame:
    """The frame without rows whose user column (`user_id`, `user`, ...) or user index is one of `ids`."""
    columns = [c for c in frame.columns if _is_user_name(c)]
    if not len(frame) or not (columns or _is_user_name(frame.index.name)):
        return frame
    hit = np.zeros(len(frame), dtype=bool)
    for column in columns:
        hit |= frame[column].astype(str).isin(ids).to_numpy()
    if _is_user_name(frame.index.name):
        hit |= frame.index.astype(str).isin(ids)
    if not hit.any():
        return frame
    result.removed += int(hit.sum())
    return frame[~hit]
