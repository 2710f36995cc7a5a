"""The long-term channel's cache: every user's champion fold-in, computed once per bundle (no Dagster).

The live ranking's long-term channel is the champion's fold-in of a user's whole history. For the hybrid
champion that is ~50 ms of CPU per list (LightGBM's predict and the candidate retrieval), so serving it per
request caps a 2-core machine at ~40 lists/s. It changes only when the history does, so it is computed once:

- when a bundle is published (`write_long_term`): every user of the bundle's histories, in batches (a batch of
  256 costs a tenth of 256 single fold-ins), into `long_term.npy` ((users, n) float32, memory-mapped by every
  server process, so `--workers N` share one copy in the page cache) and `long_term.json` (the ranker's name,
  the users in row order);
- for a user the file lacks (new, or a bundle without the file), on their first request;
- after a user's history changes (a live event), again, but off the request path: `LiveService` marks them
  stale and the server's refresher recomputes the stale users in batches in a worker thread, within a share of
  one core (`serving.state`). Until then the list uses the older fold-in, and the event acts at once through
  the short-term channel and the exclusion of what the history holds (a clicked item is never listed).

`fold_in` is the one batch path (serving's refresher, the bundle writer and the replay evaluation build their
history matrices with `history_matrices`); row for row it gives what a one-user `score_histories` gives
(`tests/live/test_long_term.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llmrec_platform.rankers.base import Histories, Ranker

SCORES_FILE = "long_term.npy"
INDEX_FILE = "long_term.json"
BATCH = 256
# When a changed history is folded in again: on the next request (exact), or by the server's refresher.
REFRESH_MODES = ("request", "background")

# One history: (the ranker's user position or -1, item positions in the ranker's space, ratings, timestamps),
# one entry per item.
Row = tuple[int, np.ndarray, np.ndarray, np.ndarray]


def history_matrices(rows: Sequence[Row], n_items: int) -> Histories:
    """A batch of histories as CSR matrices (rows in the given order, each row's items as given)."""
    indptr = np.r_[0, np.cumsum([len(r[1]) for r in rows])].astype(np.int64)
    cols = np.concatenate([np.asarray(r[1], dtype=np.int64) for r in rows]) if rows else np.zeros(0, np.int64)
    shape = (len(rows), n_items)
    ratings = np.concatenate([np.asarray(r[2], dtype=np.float32) for r in rows]) if rows else np.zeros(0, np.float32)
    stamps = np.concatenate([np.asarray(r[3], dtype=np.float64) for r in rows]) if rows else np.zeros(0)
    return Histories(sp.csr_matrix((ratings, cols, indptr), shape=shape), sp.csr_matrix((stamps, cols, indptr), shape=shape),
                     np.array([r[0] for r in rows], dtype=np.int64), (None,) * len(rows))


def fold_in(ranker: Ranker, rows: Sequence[Row]) -> np.ndarray:
    """The ranker's fold-in of each history, (len(rows), n) float32: one `score_histories` per batch of `BATCH`
    (a single history through `Histories.single`, the rankers' one-user path)."""
    n = len(ranker.item_ids_)
    if len(rows) == 1:
        user, positions, ratings, stamps = rows[0]
        return ranker.score_histories(Histories.single(positions, ratings, stamps, user, n))
    out = np.empty((len(rows), n), dtype=np.float32)
    for start in range(0, len(rows), BATCH):
        out[start:start + BATCH] = ranker.score_histories(history_matrices(rows[start:start + BATCH], n))
    return out


def write_long_term(folder: str | Path, service) -> int:
    """Write every bundle user's fold-in by the service's champion into `folder` (`SCORES_FILE` row per user,
    `INDEX_FILE`); `service` is a `LiveService` over the bundle, with no live events. Returns how many users."""
    folder = Path(folder)
    ranker = service.bundle.champion
    users = [u for u in service.bundle_users() if service.champion_row(u, ranker) is not None]
    scores = np.lib.format.open_memmap(folder / SCORES_FILE, mode="w+", dtype=np.float32,
                                       shape=(len(users), len(ranker.item_ids_)))
    for start in range(0, len(users), BATCH):
        chunk = users[start:start + BATCH]
        scores[start:start + len(chunk)] = fold_in(ranker, [service.champion_row(u, ranker) for u in chunk])
    scores.flush()
    del scores
    (folder / INDEX_FILE).write_text(json.dumps({"ranker": ranker.name, "items": len(ranker.item_ids_),
                                                 "users": users}))
    return len(users)


def read_long_term(folder: str | Path, ranker: Ranker) -> tuple[np.ndarray, dict[str, int]] | None:
    """The bundle's stored fold-ins, memory-mapped, and the row of each user; None when the bundle has none, or
    they belong to another ranker (a copy of the bundle serving another champion) or another item space."""
    folder = Path(folder)
    if not (folder / SCORES_FILE).exists() or not (folder / INDEX_FILE).exists():
        return None
    index = json.loads((folder / INDEX_FILE).read_text())
    scores = np.load(folder / SCORES_FILE, mmap_mode="r")
    if (index.get("ranker") != ranker.name or index.get("items") != len(ranker.item_ids_)
            or scores.shape != (len(index["users"]), len(ranker.item_ids_))):
        return None
    return scores, {str(u): row for row, u in enumerate(index["users"])}


def remove_long_term(folder: str | Path) -> None:
    """Drop a bundle copy's stored fold-ins (before another champion is put in it: they are the old one's)."""
    for name in (SCORES_FILE, INDEX_FILE):
        if os.path.lexists(Path(folder) / name):
            os.unlink(Path(folder) / name)
