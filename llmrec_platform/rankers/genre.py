"""Genre-match ranker: items whose genres the user watched most score highest (attributes only)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.rankers.base import Histories, ItemInputs, Ranker


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
        del self._item_genres  # keep the pickled ranker small

    def refit_elsewhere(self, data: InteractionData, items: ItemInputs) -> GenreMatchRanker:
        """The item genres are not kept after fitting: built again from `items.catalogue`."""
        return GenreMatchRanker(items.catalogue).fit(data)

    def refit_copy(self, data: InteractionData) -> GenreMatchRanker:
        """Keeps the item side (the item genres are not kept after fitting); only the training histories change."""
        clone = copy.copy(self)
        clone.train_ = data.train.tocsr()
        clone.train_timestamps_ = data.train_timestamps.tocsr()
        clone.popularity_ = np.asarray(data.train.getnnz(axis=0), dtype=np.float32)
        return clone

    def _score_histories(self, histories: Histories) -> np.ndarray:
        # Exact, so items with the same genres score the same bit for bit and ties fall to the item position:
        # integer genre counts (exact in float32 below 2**24, in whatever order a product adds them), then two
        # element-wise scalings, each rounded once. A float product of profiles and weights split such ties by
        # an item's place in the product's tiles, which moves with the block of users scored.
        counts = histories.binary() @ self.item_genre_
        totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
        if totals.max(initial=0.0) >= 2**24:
            raise ValueError(f"{self.name}: a history with {totals.max():.0f} genre counts is past float32's exact "
                             "integers (2**24)")
        scores = counts.toarray() @ self.item_genre_.T.toarray()  # (histories, items): genres shared, counted
        n_genres = np.asarray(self.item_genre_.sum(axis=1), dtype=np.float64).ravel()
        scores *= np.divide(1.0, totals, out=np.zeros_like(totals), where=totals > 0).astype(np.float32)[:, None]
        scores *= np.divide(1.0, np.sqrt(n_genres), out=np.zeros_like(n_genres), where=n_genres > 0).astype(np.float32)
        return scores
