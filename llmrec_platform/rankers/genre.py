"""Genre-match ranker: items whose genres the user watched most score highest (attributes only)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.base import Histories, Ranker


class GenreMatchRanker(Ranker):
    """score(x, i) = sum over the genres g of i of profile_x(g), divided by sqrt(#genres of i).

    profile_x is the history's genre distribution: genre counts over the history's items, normalised
    to sum to 1. Dividing by sqrt(#genres) keeps many-genre items from winning on breadth alone. Items
    without genres score 0. Needs only item attributes, so cold items are scored too.
    """

    name = "genre_match"
    scores_cold_items = True

    def __init__(self, item_genres: pd.DataFrame):
        missing = {"item_id", "genres"} - set(item_genres.columns)
        if missing:
            raise ValueError(f"item_genres needs columns item_id and genres (list of str); missing {sorted(missing)}")
        self._item_genres = item_genres[["item_id", "genres"]]

    def _fit(self, data: InteractionData) -> None:
        genres_by_item = (
            self._item_genres.assign(item_id=self._item_genres["item_id"].astype(str))
            .drop_duplicates("item_id").set_index("item_id")["genres"]
        )
        aligned = genres_by_item.reindex(pd.Index(data.item_ids))
        lists = [sorted(set(g)) if isinstance(g, list | tuple | np.ndarray) else [] for g in aligned]
        self.genres_ = np.array(sorted({g for genres in lists for g in genres}), dtype=object)
        genre_position = {g: j for j, g in enumerate(self.genres_)}
        rows = np.repeat(np.arange(len(lists)), [len(genres) for genres in lists])
        cols = np.array([genre_position[g] for genres in lists for g in genres], dtype=np.int64)
        item_genre = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)),
                                   shape=(len(lists), len(self.genres_)))
        self.item_genre_ = item_genre
        n_genres = np.asarray(item_genre.sum(axis=1)).ravel()
        scale = np.divide(1.0, np.sqrt(n_genres), out=np.zeros_like(n_genres), where=n_genres > 0)
        self.item_genre_weights_ = np.asarray((sp.diags(scale) @ item_genre).toarray(), dtype=np.float32)
        del self._item_genres  # keep the pickled ranker small

    def refit_copy(self, data: InteractionData) -> GenreMatchRanker:
        """Keeps the item side (the item genres are not kept after fitting); only the training histories change."""
        clone = copy.copy(self)
        clone.train_ = data.train.tocsr()
        clone.train_timestamps_ = data.train_timestamps.tocsr()
        clone.popularity_ = np.asarray(data.train.getnnz(axis=0), dtype=np.float32)
        return clone

    def genre_profiles(self, histories: Histories) -> np.ndarray:
        """Each history's genre distribution, (len(histories), n_genres); all zero for an empty history."""
        counts = histories.binary() @ self.item_genre_
        totals = np.asarray(counts.sum(axis=1)).ravel()
        inverse = np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0)
        return np.asarray(sp.diags(inverse) @ counts.toarray(), dtype=np.float32)

    def _score_histories(self, histories: Histories) -> np.ndarray:
        return self.genre_profiles(histories) @ self.item_genre_weights_.T
