"""The hybrid's features for (history, candidate item) pairs.

Item-side statistics are fixed when the context is built (from a training matrix); user-side statistics are
computed from each batch's histories, so a training user and a live history go through the same code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llmrec_platform.compute import BlockMap
from llmrec_platform.data.interactions import binarize
from llmrec_platform.rankers.base import Histories, Ranker
from llmrec_platform.rankers.hybrid.batch import UserBatch
from llmrec_platform.rankers.hybrid.candidates import Candidates, retrieve

DAY = 86400.0
# The columns computed from the content ranker (its interest and item vectors): the only ones an ablation variant
# with other content changes.
CONTENT_FEATURES = ["llm_cosine", "llm_cosine_z", "llm_max_sim_liked", "llm_mean_sim_liked"]


def item_item_matrix(ranker: Ranker) -> np.ndarray | sp.csr_matrix | None:
    """The item x item matrix W of a ranker that scores X_u W (EASE's B, ItemKNN's similarities), else None."""
    for attribute in ("weights_", "similarity_"):
        matrix = getattr(ranker, attribute, None)
        if matrix is not None and matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1] == len(ranker.item_ids_):
            return matrix.tocsr() if sp.issparse(matrix) else matrix
    return None


@dataclass(frozen=True)
class UserStatistics:
    """What the features need to know about each history of a batch."""

    binary: sp.csr_matrix
    centred: sp.csr_matrix  # ratings minus the history's mean rating
    liked: sp.csr_matrix  # row-normalised liked items (all items when none is liked)
    mean_rating: np.ndarray
    activity: np.ndarray
    first: np.ndarray  # first and last active day, relative to the training data's first day
    last: np.ndarray


class FeatureContext:
    """Everything features are computed from: fitted rankers, item statistics of the training matrix they were
    fitted on, and how to get a batch's user vectors."""

    def __init__(self, candidate_rankers: dict[str, Ranker], user_vectors: Callable[[UserBatch], np.ndarray],
                 item_vectors: np.ndarray, feature_rankers: dict[str, Ranker], history: sp.csr_matrix,
                 timestamps: sp.csr_matrix, liked_threshold: float, item_similarity: np.ndarray | None = None):
        # item_similarity: item_vectors @ item_vectors.T when the caller holds it (the content ranker's), so one
        # items x items matrix serves the ranker, this context and the pseudo-label contexts.
        self.candidate_rankers = candidate_rankers
        self.user_vectors = user_vectors
        self.item_vectors = item_vectors
        self.feature_rankers = feature_rankers
        self.liked_threshold = liked_threshold
        self.item_item = {name: matrix for name, r in {**candidate_rankers, **feature_rankers}.items()
                          if (matrix := item_item_matrix(r)) is not None}
        history = sp.csr_matrix(history, dtype=np.float32)
        history.sort_indices()
        self.history = history
        self.timestamps = sp.csr_matrix(timestamps, dtype=np.float64)
        self.timestamps.sort_indices()
        item_counts = np.asarray(binarize(history).sum(axis=0)).ravel()
        item_rating_sum = np.asarray(history.sum(axis=0)).ravel()
        self.item_mean_rating = ((item_rating_sum + 10 * 3.8) / (item_counts + 10)).astype(np.float32)
        self.item_popularity = np.log1p(item_counts).astype(np.float32)
        self._item_time_statistics(self.timestamps)
        if item_similarity is not None:
            self._shared_similarity(item_similarity)

    def _shared_similarity(self, item_similarity: np.ndarray) -> None:
        if item_similarity.shape != (len(self.item_vectors),) * 2 or item_similarity.dtype != np.float32:
            raise ValueError(f"hybrid features: item_similarity must be the float32 items x items product of the item "
                             f"vectors, {(len(self.item_vectors),) * 2}; got {item_similarity.dtype} {item_similarity.shape}")
        self.__dict__.setdefault("_dense_cache", {})["llm"] = item_similarity

    def _item_time_statistics(self, timestamps: sp.csr_matrix) -> None:
        """When each item was rated (days from the first training day), and the day a history without
        interactions counts as active (the median training day)."""
        coo = timestamps.tocoo()
        days = coo.data / DAY
        self.base_day = days.min() if coo.nnz else 0.0
        self.fallback_day = float(np.median(days)) if coo.nnz else 0.0
        days = days - self.base_day
        item_first = np.full(timestamps.shape[1], np.inf)
        np.minimum.at(item_first, coo.col, days)
        self.item_first = np.where(np.isfinite(item_first), item_first, days.max() if coo.nnz else 0.0)
        # (item, day) keys sorted, to count an item's ratings inside any user's active window.
        self.item_day_keys = np.sort(coo.col * 1e5 + days)
        self.all_days = np.sort(days)

    def batch(self, users: np.ndarray) -> UserBatch:
        """The training rows of `users` (positions) of the matrix the context was built on."""
        return UserBatch(Histories(self.history[users], self.timestamps[users], users, (None,) * len(users)), True)

    def user_statistics(self, histories: Histories) -> UserStatistics:
        history = sp.csr_matrix(histories.ratings, dtype=np.float32)
        history.sort_indices()
        binary = binarize(history)
        counts = np.asarray(binary.sum(axis=1)).ravel()
        rating_sum = np.asarray(history.sum(axis=1)).ravel()
        mean_rating = np.divide(rating_sum, counts, out=np.full(len(counts), 4.0), where=counts > 0)
        centred = history.copy()
        centred.data -= np.repeat(mean_rating, np.diff(centred.indptr)).astype(np.float32)
        liked = (history >= self.liked_threshold).astype(np.float32).tocsr()
        empty = np.asarray(liked.sum(axis=1)).ravel() == 0
        liked = (liked + sp.diags(empty.astype(np.float32)) @ binary).tocsr()  # no liked item: use all
        liked_counts = np.asarray(liked.sum(axis=1)).ravel()
        liked = (sp.diags(1.0 / np.maximum(liked_counts, 1)) @ liked).astype(np.float32).tocsr()
        liked.sort_indices()  # the product's scaling leaves each row's order to the batch: sums in item order instead
        stamps = sp.csr_matrix(histories.timestamps, dtype=np.float64).tocoo()
        days = stamps.data / DAY
        n = history.shape[0]
        first, last = np.full(n, np.inf), np.full(n, -np.inf)
        np.minimum.at(first, stamps.row, days)
        np.maximum.at(last, stamps.row, days)
        has = np.isfinite(first)
        first[~has], last[~has] = self.fallback_day, self.fallback_day
        return UserStatistics(binary, centred, liked, mean_rating, np.log1p(counts).astype(np.float32),
                              first - self.base_day, last - self.base_day)

    def window_counts(self, users: UserStatistics, rows: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training ratings of each item while its history was active (one day either side), raw and as a share."""
        low, high = users.first[rows] - 1.0, users.last[rows] + 1.0
        base = items * 1e5
        count = (np.searchsorted(self.item_day_keys, base + high, side="right")
                 - np.searchsorted(self.item_day_keys, base + low, side="left"))
        total = (np.searchsorted(self.all_days, high, side="right")
                 - np.searchsorted(self.all_days, low, side="left"))
        return np.log1p(count).astype(np.float32), (count / np.maximum(total, 1) * 1000).astype(np.float32)

    def feature_names(self) -> list[str]:
        names = []
        for r in self.candidate_rankers:
            names += [f"{r}_score", f"{r}_rank", f"{r}_score_gap", f"{r}_score_z"]
        for r in self.item_item:
            names += [f"{r}_max_link", f"{r}_centred_score"]
        names += ["candidate_votes", *CONTENT_FEATURES]
        for r in self.feature_rankers:
            names += [f"{r}_score", f"{r}_score_z"]
        return names + ["item_popularity", "item_mean_rating", "user_activity", "user_mean_rating",
                        "user_active_days", "item_first_minus_user_last", "window_popularity", "window_share"]

    def candidates_and_features(self, batch: UserBatch, n: int) -> tuple[Candidates, np.ndarray]:
        """The batch's candidates (`retrieve`) and their features, one row per (history, candidate item)."""
        users = self.user_statistics(batch.histories)
        candidates = retrieve(batch, self.candidate_rankers, users.binary, n)
        rows, items = candidates.rows, candidates.items

        def within_user(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return within_history(values, rows, len(batch))

        columns = []
        votes = np.zeros(len(rows), dtype=np.float32)
        for s, r in zip(candidates.scores, candidates.ranks, strict=True):
            values = s.astype(np.float64)
            gap, z = within_user(values)
            columns += [values, r, gap, z]
            votes += r <= n
        max_links, centred_scores = self._item_item_features(users, rows, items)
        columns += [c for pair in zip(max_links, centred_scores, strict=True) for c in pair]
        columns += [votes, *self._content_columns(batch, users, rows, items)]
        for r in self.feature_rankers.values():
            values = batch.scores(r)[rows, items].astype(np.float64)
            columns += [values, within_user(values)[1]]
        columns += [self.item_popularity[items], self.item_mean_rating[items], users.activity[rows],
                    users.mean_rating[rows], np.log1p(users.last[rows] - users.first[rows]),
                    self.item_first[items] - users.last[rows], *self.window_counts(users, rows, items)]
        return candidates, np.column_stack(columns).astype(np.float32)

    def _content_columns(self, batch: UserBatch, users: UserStatistics, rows: np.ndarray,
                         items: np.ndarray) -> list[np.ndarray]:
        """The CONTENT_FEATURES of (row, item) pairs; each row's values depend on that history alone."""
        user_vectors = self.user_vectors(batch)
        cosine = np.einsum("ij,ij->i", user_vectors[rows], self.item_vectors[items]).astype(np.float64)
        return [cosine, within_history(cosine, rows, len(batch))[1], *self._liked_similarity(users, rows, items)]

    def content_columns(self, users: np.ndarray, groups: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The CONTENT_FEATURES (float32, one row per pair) of `items`, whose first `groups[0]` pairs belong to
        the history of users[0] (a training row of this context), the next `groups[1]` to users[1], ... Each
        group must hold all of its history's candidates (the z-score is taken among them): the values are the
        ones `candidates_and_features` gives these pairs, so a stored feature matrix can take another content's
        columns without retrieving candidates or computing the other features again."""
        columns = np.zeros((len(items), len(CONTENT_FEATURES)), dtype=np.float32)
        ends = np.cumsum(groups)
        step = 512
        for start in range(0, len(users), step):
            stop = min(start + step, len(users))
            lo, hi = (ends[start - 1] if start else 0), ends[stop - 1]
            batch = self.batch(users[start:stop])
            rows = np.repeat(np.arange(stop - start), groups[start:stop])
            statistics = self.user_statistics(batch.histories)
            columns[lo:hi] = np.column_stack(self._content_columns(batch, statistics, rows, items[lo:hi]))
        return columns

    def with_content(self, user_vectors: Callable[[UserBatch], np.ndarray], item_vectors: np.ndarray,
                     item_similarity: np.ndarray | None = None) -> FeatureContext:
        """A copy whose CONTENT_FEATURES come from other interest and item vectors (the rest is shared)."""
        other = object.__new__(FeatureContext)
        other.__dict__.update(self.__getstate__())
        other.user_vectors, other.item_vectors = user_vectors, item_vectors
        other._dense_cache = {key: value for key, value in self.__dict__.get("_dense_cache", {}).items() if key != "llm"}
        if item_similarity is not None:
            other._shared_similarity(item_similarity)
        return other

    def _matrix(self, key: str) -> np.ndarray | sp.csr_matrix:
        """The float32 item x item matrices (item-item rankers' W, LLM cosine), built once per process, not pickled.
        A sparse W (ItemKNN's) stays sparse: a dense copy would cost 4 x items^2 bytes per context, and products with
        it add the same terms in the same order (zeros add nothing), so the features are the same to the bit."""
        cache = self.__dict__.setdefault("_dense_cache", {})
        if key not in cache:
            if key == "llm":
                cache[key] = (self.item_vectors @ self.item_vectors.T).astype(np.float32)
            elif sp.issparse(matrix := self.item_item[key]):
                matrix = sp.csr_matrix(matrix, dtype=np.float32)
                matrix.sort_indices()
                cache[key] = matrix
            else:
                cache[key] = np.asarray(matrix, dtype=np.float32)
        return cache[key]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_dense_cache"}

    @staticmethod
    def _max_over_history(matrix: np.ndarray | sp.csr_matrix, history: sp.csr_matrix, rows, items) -> np.ndarray:
        """max over the history's items j of matrix[j, item], per (row, item) pair (a sparse matrix's missing
        entries count as 0, as in its dense form)."""
        result = np.zeros(len(rows), dtype=np.float32)
        boundaries = np.searchsorted(rows, np.arange(history.shape[0] + 1))
        for b in range(history.shape[0]):
            lo, hi = boundaries[b], boundaries[b + 1]
            seen = history.indices[history.indptr[b]:history.indptr[b + 1]]
            if hi > lo and len(seen):
                if sp.issparse(matrix):
                    result[lo:hi] = matrix[seen][:, items[lo:hi]].toarray().max(axis=0)
                else:
                    result[lo:hi] = matrix[np.ix_(seen, items[lo:hi])].max(axis=0)
        return result

    def _item_item_features(self, users: UserStatistics, rows, items) -> tuple[list[np.ndarray], list[np.ndarray]]:
        max_links, centred_scores = [], []
        for name in self.item_item:
            matrix = self._matrix(name)
            max_links.append(self._max_over_history(matrix, users.binary, rows, items))
            product = users.centred @ matrix  # sparse for a sparse W: only the history items' neighbours
            centred_scores.append(np.asarray(product[rows, items]).ravel().astype(np.float32, copy=False))
        return max_links, centred_scores

    def _liked_similarity(self, users: UserStatistics, rows, items) -> tuple[np.ndarray, np.ndarray]:
        similarity = self._matrix("llm")
        mean_sim = np.asarray(users.liked @ similarity)[rows, items]  # liked rows are mean-normalised
        return self._max_over_history(similarity, users.liked, rows, items), mean_sim


@dataclass(frozen=True)
class LabelledFeatures:
    """The LambdaRank rows of one block of users: the features of every candidate of each user that has a labelled
    item among its candidates (a group without one teaches LambdaRank nothing), grouped by user in block order."""

    X: np.ndarray  # float32, one row per kept (user, candidate) pair
    items: np.ndarray  # the candidate item (position) of each row
    y: np.ndarray  # 1 where the candidate is labelled
    groups: np.ndarray  # rows per kept user
    n_relevant: np.ndarray  # labelled items per kept user, retrieved or not
    users: np.ndarray  # the kept users (positions)
    retrieved: int  # labelled items the block's candidates retrieved (all users, kept or not)


def labelled_features(users: np.ndarray, context: FeatureContext, labels: sp.csr_matrix,
                      n_candidates: int) -> LabelledFeatures:
    """The candidates and features of `users` (training rows of `context`), labelled by `labels` (user x item)."""
    candidates, features = context.candidates_and_features(context.batch(users), n_candidates)
    rows, items = candidates.rows, candidates.items
    positive = np.asarray(labels[users[rows], items]).ravel() > 0
    sizes = np.bincount(rows, minlength=len(users))
    has_positive = np.bincount(rows, weights=positive, minlength=len(users)) > 0
    keep = has_positive[rows]
    return LabelledFeatures(features[keep], items[keep], positive[keep].astype(np.int32), sizes[has_positive],
                            np.asarray(labels[users].getnnz(axis=1))[has_positive], users[has_positive],
                            int(positive.sum()))


def build_labelled_features(blocks: BlockMap, context: FeatureContext, users: np.ndarray, labels: sp.csr_matrix,
                            n_candidates: int, block_users: int) -> list[LabelledFeatures]:
    """`labelled_features` of `users` in consecutive blocks of `block_users`, each block where `blocks` runs it (this
    process, or a Ray worker): the same blocks everywhere, so the same candidates and features to the last bit (a
    base ranker's scores can differ in the last bit with how many users one product scores)."""
    user_blocks = [users[start:start + block_users] for start in range(0, len(users), block_users)]
    return blocks.map("hybrid features", labelled_features, user_blocks, context, labels, n_candidates)


def within_history(values: np.ndarray, rows: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(value - the history's best candidate value, z-score among the history's candidates) of each pair."""
    sizes = np.bincount(rows, minlength=n_rows).astype(np.float64)
    mean = np.bincount(rows, weights=values, minlength=n_rows) / np.maximum(sizes, 1)
    var = np.bincount(rows, weights=(values - mean[rows]) ** 2, minlength=n_rows) / np.maximum(sizes, 1)
    best = np.full(n_rows, -np.inf)
    np.maximum.at(best, rows, values)
    return values - best[rows], (values - mean[rows]) / np.sqrt(var[rows] + 1e-12)
