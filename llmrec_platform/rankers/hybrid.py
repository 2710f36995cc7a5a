"""The LLM-enhanced hybrid: CF candidates re-ranked by LightGBM LambdaRank with LLM features.

Stage 1: candidates = union of the top-N (training items excluded) of each candidate ranker.
Stage 2: a LambdaRank model scores each (user, candidate) from features (see `HybridRanker.feature_names`):
every candidate ranker's score, rank, gap to the user's best candidate and z-score within the user's
candidate list; for item-item rankers (EASE's B, ItemKNN's similarities) the strongest single link between
the item and the user's history and a rating-centred score; the cosine between the user's LLM interest vector
and the item and the max / mean LLM similarity between the item and the user's liked training items; the
feature rankers' scores (genre match); item popularity and mean rating, user activity, and when the item was
popular relative to the user's active period (all from training interactions only).

It is trained on the validation fold (labels = validation items), with a seeded share of validation users held
out for early stopping and for the honest validation score. With `pseudo_label_share > 0` it also trains on
pseudo-labelled groups from the training fold: a seeded share of each user's training items is held out,
copies of the base rankers are refitted on the rest, and their features for the held-out items become extra
LambdaRank groups. No valid item of a held-out user and no test item is ever a label. At scoring time only
the rankers fitted on the full training fold are used. Items outside the candidate set score -inf.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from llmrec_platform.embeddings import user_interest_vectors
from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker, top_k
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.itemknn import binarize
from llmrec_platform.rankers.sequence import SequenceNeighbourRanker

DAY = 86400.0


@dataclass(frozen=True)
class HybridConfig:
    # Chosen on the valid fold of ML-1M (recbole protocol, seed 2020) by 5-fold cross-validation over all 6,033
    # validation users (benchmarks/hybrid_ml1m.py --sweep cv cv-pseudo cv-combined): full-ranking NDCG@10 at the
    # best number of trees; EASE scores 0.2285. From n_candidates 50, lr 0.02, 15 leaves, min 200, truncation 30,
    # no pseudo-labels: as is 0.2362 (600 trees) | truncation 10 0.2356, 20 0.2363, 60 0.2365 | 31 leaves/min 100
    # 0.2350 | 7 leaves/min 500 0.2358 | lr 0.05 0.2356 (150) | feature/bagging fraction 0.7/0.8 0.2370 (400).
    # Pseudo-labels: share 0.125 0.2372 (500) | 0.125 with valid labels 0.2374 (400) | 0.25 with valid labels 0.2365;
    # share 0.125 + fractions 0.7/0.8 0.2371 (600) | + truncation 60 0.2368 | + n_candidates 30 0.2374 (500, kept)
    # | + n_candidates 100 0.2360. Differences under ~0.001 are noise; ties went to the cheaper setting. The number
    # of trees is fixed (early_stopping_rounds 0): early stopping on 20% of the users stopped after ~10 trees.
    # Then (--sweep cv-extra), from the config above (0.2374 at 500 trees): more candidate rankers: + RP3beta 0.2376
    # | + sequence neighbours window 5 0.2370 | + Mult-VAE 0.2386 (kept); pseudo_draws 2 0.2376 | rank_xendcg 0.2369 |
    # seed averages n_models 3 0.2379, 5 0.2381 (kept: averaging only removes seed variance; each fold's first
    # model alone scores 0.2374) | + RP3beta, pseudo_draws 2, n_models 3, 800 trees 0.2377 (first model 0.2382).
    # Both kept changes together (Mult-VAE candidates in the pipeline's hybrid_ranker, n_models 5): 0.2393 at 500
    # trees (300: 0.2397, 400: 0.2395; 500 kept, the difference is noise), first model alone 0.2386.
    n_candidates: int = 30
    n_estimators: int = 500
    learning_rate: float = 0.02
    num_leaves: int = 15
    min_child_samples: int = 200
    early_stopping_rounds: int = 0  # > 0: stop when the holdout users' NDCG@10 has not improved for this many trees
    feature_fraction: float = 0.7
    holdout_users: float = 0.2
    liked_threshold: float = 4.0
    batch_size: int = 512
    seed: int = 2020
    num_threads: int = 0
    bagging_fraction: float = 0.8
    truncation_level: int = 30  # lambdarank_truncation_level
    pseudo_label_share: float = 0.125  # share of each user's training items held out as pseudo-labels (0: off)
    pseudo_users: float = 1.0  # share of users that get a pseudo-labelled group
    pseudo_with_valid: bool = False  # also label the validation items in the training users' pseudo groups
    pseudo_draws: int = 1  # independent pseudo-label draws (each refits the base rankers once)
    sequence_window: int = 3  # the hybrid's own SequenceNeighbourRanker feature (0: off)
    n_models: int = 5  # LambdaRank models with seeds seed, seed + 1, ...; the hybrid scores their mean
    objective: str = "lambdarank"  # or "rank_xendcg"


@dataclass
class HybridTrainingLog:
    feature_names: list[str]
    importances: dict[str, float]
    validation_curve: list[float]
    best_iteration: int
    train_rows: int
    train_users: int
    holdout_users: int
    candidate_recall: float  # share of validation items that the candidate stage retrieved
    extra: dict = field(default_factory=dict)


@dataclass
class RankingSet:
    """LambdaRank inputs for one set of users: rows grouped by user, in user order."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # rows per user that has at least one positive candidate
    n_relevant: np.ndarray  # relevant items per such user (retrieved or not), for full-ranking NDCG
    n_users: int  # users the set stands for, including those whose positives were all missed
    users: np.ndarray  # the user (position) of each group

    def subset(self, keep_groups: np.ndarray, n_users: int) -> RankingSet:
        """The groups where `keep_groups` is true, standing for `n_users` users."""
        rows = np.repeat(keep_groups, self.groups)
        return RankingSet(self.X[rows], self.y[rows], self.groups[keep_groups], self.n_relevant[keep_groups], n_users,
                          self.users[keep_groups])

    def full_ranking_ndcg(self, predictions: np.ndarray, k: int = 10) -> float:
        """Mean NDCG@k over all `n_users`, as `evaluate` computes it: non-candidates never rank, so only the
        candidates' order matters (ties: lower item position first, the order rows are stored in), and the
        ideal DCG counts every relevant item, retrieved or not (up to k)."""
        if not self.n_users:
            return float("nan")
        group = np.repeat(np.arange(len(self.groups)), self.groups)
        starts = np.cumsum(self.groups) - self.groups
        order = np.lexsort((np.arange(len(predictions)), -np.asarray(predictions, dtype=np.float64), group))
        rank = np.arange(len(order)) - starts[group]  # rows of a group stay contiguous after the sort
        top = rank < k
        dcg = np.bincount(group[top], weights=self.y[order][top] / np.log2(rank[top] + 2.0), minlength=len(self.groups))
        ideal = np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))[np.minimum(self.n_relevant, k) - 1]
        return float((dcg / ideal).sum() / self.n_users)


def concat_sets(sets: list[RankingSet]) -> RankingSet:
    return RankingSet(np.vstack([s.X for s in sets]), np.concatenate([s.y for s in sets]),
                      np.concatenate([s.groups for s in sets]), np.concatenate([s.n_relevant for s in sets]),
                      sum(s.n_users for s in sets), np.concatenate([s.users for s in sets]))


class _FeatureContext:
    """Everything features are computed from: fitted rankers and the history they were fitted on."""

    def __init__(self, candidate_rankers: dict[str, Ranker], user_vectors: np.ndarray, item_vectors: np.ndarray,
                 feature_rankers: dict[str, Ranker], history: sp.csr_matrix, timestamps: sp.csr_matrix,
                 liked_threshold: float):
        self.candidate_rankers = candidate_rankers
        self.user_vectors = user_vectors
        self.item_vectors = item_vectors
        self.feature_rankers = feature_rankers
        self.item_item = {name: matrix for name, r in {**candidate_rankers, **feature_rankers}.items()
                          if (matrix := item_item_matrix(r)) is not None}
        history = sp.csr_matrix(history, dtype=np.float32)
        history.sort_indices()
        self.binary = binarize(history)
        counts = np.asarray(self.binary.sum(axis=1)).ravel()
        item_counts = np.asarray(self.binary.sum(axis=0)).ravel()
        rating_sum = np.asarray(history.sum(axis=1)).ravel()
        self.user_mean_rating = np.divide(rating_sum, counts, out=np.full(len(counts), 4.0), where=counts > 0)
        centred = history.copy()
        centred.data -= np.repeat(self.user_mean_rating, np.diff(centred.indptr)).astype(np.float32)
        self.centred = centred
        item_rating_sum = np.asarray(history.sum(axis=0)).ravel()
        self.item_mean_rating = ((item_rating_sum + 10 * 3.8) / (item_counts + 10)).astype(np.float32)
        self.item_popularity = np.log1p(item_counts).astype(np.float32)
        self.user_activity = np.log1p(counts).astype(np.float32)
        liked = (history >= liked_threshold).astype(np.float32).tocsr()
        empty = np.asarray(liked.sum(axis=1)).ravel() == 0
        liked = (liked + sp.diags(empty.astype(np.float32)) @ self.binary).tocsr()  # no liked item: use all
        liked_counts = np.asarray(liked.sum(axis=1)).ravel()
        self.liked = (sp.diags(1.0 / np.maximum(liked_counts, 1)) @ liked).astype(np.float32).tocsr()
        self._time_statistics(sp.csr_matrix(timestamps, dtype=np.float64))

    def _time_statistics(self, timestamps: sp.csr_matrix) -> None:
        """When each user was active and when each item was rated (days), from training interactions."""
        timestamps.sort_indices()
        coo = timestamps.tocoo()
        days = coo.data / DAY
        n_users, n_items = timestamps.shape
        has = np.diff(timestamps.indptr) > 0
        first, last = np.zeros(n_users), np.zeros(n_users)
        if coo.nnz:
            base = days.min()
            first = np.full(n_users, np.inf)
            last = np.full(n_users, -np.inf)
            np.minimum.at(first, coo.row, days)
            np.maximum.at(last, coo.row, days)
            fallback = float(np.median(days))
            first[~has], last[~has] = fallback, fallback
            first, last = first - base, last - base
            days = days - base
        self.user_first, self.user_last = first, last
        item_first = np.full(n_items, np.inf)
        np.minimum.at(item_first, coo.col, days)
        self.item_first = np.where(np.isfinite(item_first), item_first, days.max() if coo.nnz else 0.0)
        # (item, day) keys sorted, to count an item's ratings inside any user's active window.
        self.item_day_keys = np.sort(coo.col * 1e5 + days)
        self.all_days = np.sort(days)

    def window_counts(self, users_of_rows: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Training ratings of each item while its user was active (one day either side), raw and as a share."""
        low, high = self.user_first[users_of_rows] - 1.0, self.user_last[users_of_rows] + 1.0
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
        names += ["candidate_votes", "llm_cosine", "llm_cosine_z", "llm_max_sim_liked", "llm_mean_sim_liked"]
        for r in self.feature_rankers:
            names += [f"{r}_score", f"{r}_score_z"]
        return names + ["item_popularity", "item_mean_rating", "user_activity", "user_mean_rating",
                        "user_active_days", "item_first_minus_user_last", "window_popularity", "window_share"]

    def candidates_and_features(self, users: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, items, features): one row per (user in batch, candidate item), rows ascending."""
        seen = self.binary[users].tocoo()
        scores, ranks = [], []
        candidate = np.zeros((len(users), self.binary.shape[1]), dtype=bool)
        depth = 2 * n
        for ranker in self.candidate_rankers.values():
            s = ranker.score(users)
            s[seen.row, seen.col] = -np.inf
            top = top_k(s, depth)
            rank = np.full(s.shape, depth + 1, dtype=np.float32)
            np.put_along_axis(rank, top, np.arange(1, top.shape[1] + 1, dtype=np.float32)[None, :], axis=1)
            np.put_along_axis(candidate, top[:, :n], True, axis=1)
            scores.append(s)
            ranks.append(rank)
        candidate[seen.row, seen.col] = False
        rows, items = np.nonzero(candidate)
        sizes = np.bincount(rows, minlength=len(users)).astype(np.float64)

        def within_user(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            """(value - the user's best candidate value, z-score among the user's candidates)."""
            mean = np.bincount(rows, weights=values, minlength=len(users)) / np.maximum(sizes, 1)
            var = np.bincount(rows, weights=(values - mean[rows]) ** 2, minlength=len(users)) / np.maximum(sizes, 1)
            best = np.full(len(users), -np.inf)
            np.maximum.at(best, rows, values)
            return values - best[rows], (values - mean[rows]) / np.sqrt(var[rows] + 1e-12)

        columns = []
        votes = np.zeros(len(rows), dtype=np.float32)
        for s, rank in zip(scores, ranks, strict=True):
            values, r = s[rows, items].astype(np.float64), rank[rows, items]
            gap, z = within_user(values)
            columns += [values, r, gap, z]
            votes += r <= n
        max_links, centred_scores = self._item_item_features(users, rows, items)
        columns += [c for pair in zip(max_links, centred_scores, strict=True) for c in pair]
        cosine = np.einsum("ij,ij->i", self.user_vectors[users][rows], self.item_vectors[items]).astype(np.float64)
        columns += [votes, cosine, within_user(cosine)[1]]
        columns += list(self._liked_similarity(users, rows, items))
        for r in self.feature_rankers.values():
            values = r.score(users)[rows, items].astype(np.float64)
            columns += [values, within_user(values)[1]]
        user_rows = users[rows]
        columns += [self.item_popularity[items], self.item_mean_rating[items], self.user_activity[user_rows],
                    self.user_mean_rating[user_rows], np.log1p(self.user_last[user_rows] - self.user_first[user_rows]),
                    self.item_first[items] - self.user_last[user_rows], *self.window_counts(user_rows, items)]
        return rows, items, np.column_stack(columns).astype(np.float32)

    def _dense(self, key: str) -> np.ndarray:
        """Dense item x item matrices (item-item rankers' W, LLM cosine), built once per process, not pickled."""
        cache = self.__dict__.setdefault("_dense_cache", {})
        if key not in cache:
            if key == "llm":
                cache[key] = (self.item_vectors @ self.item_vectors.T).astype(np.float32)
            else:
                matrix = self.item_item[key]
                cache[key] = np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)
        return cache[key]

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_dense_cache"}

    def _max_over_history(self, matrix: np.ndarray, history: sp.csr_matrix, rows, items) -> np.ndarray:
        """max over the user's history items j of matrix[j, item], per (row, item) pair."""
        result = np.zeros(len(rows), dtype=np.float32)
        boundaries = np.searchsorted(rows, np.arange(history.shape[0] + 1))
        for b in range(history.shape[0]):
            lo, hi = boundaries[b], boundaries[b + 1]
            seen = history.indices[history.indptr[b]:history.indptr[b + 1]]
            if hi > lo and len(seen):
                result[lo:hi] = matrix[np.ix_(seen, items[lo:hi])].max(axis=0)
        return result

    def _item_item_features(self, users, rows, items) -> tuple[list[np.ndarray], list[np.ndarray]]:
        history, centred = self.binary[users], self.centred[users]
        max_links, centred_scores = [], []
        for name in self.item_item:
            dense = self._dense(name)
            max_links.append(self._max_over_history(dense, history, rows, items))
            centred_scores.append(np.asarray(centred @ dense)[rows, items])
        return max_links, centred_scores

    def _liked_similarity(self, users, rows, items) -> tuple[np.ndarray, np.ndarray]:
        similarity = self._dense("llm")
        liked = self.liked[users]
        mean_sim = np.asarray(liked @ similarity)[rows, items]  # liked rows are mean-normalised
        return self._max_over_history(similarity, liked, rows, items), mean_sim


def item_item_matrix(ranker: Ranker) -> np.ndarray | sp.csr_matrix | None:
    """The item x item matrix W of a ranker that scores X_u W (EASE's B, ItemKNN's similarities), else None."""
    for attribute in ("weights_", "similarity_"):
        matrix = getattr(ranker, attribute, None)
        if matrix is not None and matrix.ndim == 2 and matrix.shape[0] == matrix.shape[1] == len(ranker.item_ids_):
            return matrix.tocsr() if sp.issparse(matrix) else matrix
    return None


class HybridRanker(Ranker):
    name = "hybrid"

    def __init__(self, candidate_rankers: dict[str, Ranker], content: LLMContentRanker,
                 feature_rankers: dict[str, Ranker] | None = None, config: HybridConfig = HybridConfig()):
        if not candidate_rankers:
            raise ValueError("the hybrid needs at least one candidate ranker")
        self.candidate_rankers = candidate_rankers
        self.content = content
        self.feature_rankers = feature_rankers or {}
        self.config = config

    @property
    def feature_names(self) -> list[str]:
        return self.context_.feature_names()

    # -- fitting --------------------------------------------------------------------------------------
    def _fit(self, data: InteractionData) -> None:
        for name, ranker in {**self.candidate_rankers, **self.feature_rankers, "content": self.content}.items():
            if ranker.item_ids_ is None or not np.array_equal(ranker.item_ids_, data.item_ids):
                raise ValueError(f"hybrid: sub-ranker {name!r} must be fitted on the same data first")
        self.prepare(data)
        self.train_model(self.training_matrices(data))

    def _all_feature_rankers(self) -> dict[str, Ranker]:
        return {**self.feature_rankers, **self.own_rankers_}

    def prepare(self, data: InteractionData) -> None:
        """Fit the hybrid's own feature rankers and build the feature context of the rankers fitted on the full
        training fold (what `score` uses)."""
        self.own_rankers_ = {}
        if self.config.sequence_window > 0:
            self.own_rankers_["sequence"] = SequenceNeighbourRanker(self.config.sequence_window).fit(data)
        self.context_ = _FeatureContext(self.candidate_rankers, self.content.user_vectors_, self.content.item_vectors_,
                                        self._all_feature_rankers(), data.train, data.train_timestamps,
                                        self.config.liked_threshold)

    def _ranking_set(self, context: _FeatureContext, users: np.ndarray, labels: sp.csr_matrix) -> tuple[RankingSet, int]:
        """Features and labels of `users`; also how many of their labelled items the candidates retrieved."""
        cfg = self.config
        X, y, groups, n_relevant, group_users, retrieved = [np.zeros((0, len(context.feature_names())))], [], [], [], [], 0
        for start in range(0, len(users), cfg.batch_size):
            batch = users[start:start + cfg.batch_size]
            rows, items, features = context.candidates_and_features(batch, cfg.n_candidates)
            positive = np.asarray(labels[batch[rows], items]).ravel() > 0
            retrieved += int(positive.sum())
            sizes = np.bincount(rows, minlength=len(batch))
            has_positive = np.bincount(rows, weights=positive, minlength=len(batch)) > 0
            keep = has_positive[rows]  # groups without a positive teach LambdaRank nothing
            X.append(features[keep])
            y.append(positive[keep].astype(np.int32))
            groups.append(sizes[has_positive])
            n_relevant.append(np.asarray(labels[batch].getnnz(axis=1))[has_positive])
            group_users.append(batch[has_positive])
        ints = np.zeros(0, dtype=np.int64)
        return RankingSet(np.vstack(X).astype(np.float32), np.concatenate([ints, *y]), np.concatenate([ints, *groups]),
                          np.concatenate([ints, *n_relevant]), len(users), np.concatenate([ints, *group_users])), retrieved

    def training_matrices(self, data: InteractionData) -> dict[str, RankingSet]:
        """LambdaRank inputs: 'train' (validation users not held out, plus pseudo-labelled groups when
        configured) and 'holdout' (the held-out validation users, for early stopping and validation)."""
        cfg = self.config
        valid_users = np.flatnonzero(np.asarray(data.valid.getnnz(axis=1)) > 0)
        rng = np.random.default_rng(cfg.seed)
        holdout = np.zeros(len(valid_users), dtype=bool)
        holdout[rng.permutation(len(valid_users))[: int(round(cfg.holdout_users * len(valid_users)))]] = True
        self.validation_users_ = np.sort(valid_users[holdout])
        train, retrieved_train = self._ranking_set(self.context_, valid_users[~holdout], data.valid)
        hold, retrieved_hold = self._ranking_set(self.context_, self.validation_users_, data.valid)
        self.candidate_recall_ = (retrieved_train + retrieved_hold) / max(int(data.valid.nnz), 1)
        matrices = {"valid_train": train, "holdout": hold}
        if cfg.pseudo_label_share > 0:
            draws = [self.pseudo_label_set(data, draw) for draw in range(max(cfg.pseudo_draws, 1))]
            self.pseudo_recall_ = float(np.mean([recall for _, recall in draws]))
            matrices["pseudo"] = concat_sets([ranking_set for ranking_set, _ in draws])
        return matrices

    def pseudo_label_set(self, data: InteractionData, draw: int = 0) -> tuple[RankingSet, float]:
        """Groups from the training fold: a seeded share of each user's training items are labels for rankers
        refitted on the rest (copies; the hybrid's own rankers are untouched). Also the share of those labels
        that the candidates retrieved. Each `draw` holds out a different random share."""
        cfg = self.config
        rng = np.random.default_rng([cfg.seed, 1 + draw])
        train = data.train.tocsr().copy()
        train.sort_indices()
        stamps = sp.csr_matrix(data.train_timestamps, dtype=np.float64).tocsr().copy()
        stamps.sort_indices()
        row_of = np.repeat(np.arange(train.shape[0]), np.diff(train.indptr))
        order = np.lexsort((rng.random(train.nnz), row_of))
        position = np.empty(train.nnz, dtype=np.int64)
        position[order] = np.arange(train.nnz) - train.indptr[row_of[order]]
        take = np.floor(np.diff(train.indptr) * cfg.pseudo_label_share).astype(np.int64)
        held = position < take[row_of]

        def part(matrix: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
            coo = matrix.tocoo()
            return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=matrix.shape)

        inner = InteractionData(data.user_ids, data.item_ids, part(train, ~held), part(stamps, ~held),
                                valid=part(binarize(train), held), test=sp.csr_matrix(train.shape, dtype=np.float32))
        users = np.flatnonzero(take > 0)
        if cfg.pseudo_users < 1:
            users = np.sort(rng.choice(users, size=int(round(cfg.pseudo_users * len(users))), replace=False))
        rankers = {name: refit_copy(r, inner) for name, r in self.candidate_rankers.items()}
        features = {name: refit_copy(r, inner) for name, r in self._all_feature_rankers().items()}
        # The interest vectors are rebuilt from the reduced history (user_interest_vectors' defaults).
        user_vectors = user_interest_vectors(inner, self.content.item_vectors_)
        context = _FeatureContext(rankers, user_vectors, self.content.item_vectors_, features, inner.train,
                                  inner.train_timestamps, cfg.liked_threshold)
        labels = inner.valid
        if cfg.pseudo_with_valid:  # never the held-out validation users' items: they score the hybrid
            training_users = np.ones(data.n_users, dtype=np.float32)
            training_users[self.validation_users_] = 0.0
            labels = (labels + sp.diags(training_users) @ binarize(data.valid)).tocsr()
        result, retrieved = self._ranking_set(context, users, labels)
        return result, retrieved / max(int(labels[users].nnz), 1)

    def make_model(self, seed_offset: int = 0):
        """An unfitted LGBMRanker with the config's settings (random_state seed + seed_offset)."""
        import lightgbm as lgb

        cfg = self.config
        return lgb.LGBMRanker(
            objective=cfg.objective, n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
            num_leaves=cfg.num_leaves, min_child_samples=cfg.min_child_samples, colsample_bytree=cfg.feature_fraction,
            subsample=cfg.bagging_fraction, subsample_freq=1 if cfg.bagging_fraction < 1 else 0,
            lambdarank_truncation_level=cfg.truncation_level, metric="None",
            random_state=cfg.seed + seed_offset, n_jobs=cfg.num_threads or None, deterministic=True, force_row_wise=True,
            verbose=-1,
        )

    def train_model(self, matrices: dict[str, RankingSet]) -> None:
        """Fit the LambdaRank model on every set but 'holdout'; the holdout users' full-ranking NDCG@10 is the
        validation curve, and with early_stopping_rounds > 0 it picks the number of trees. With n_models > 1,
        models with the next seeds are fitted with that many trees, and the holdout score is their mean's."""
        import lightgbm as lgb

        cfg = self.config
        train = concat_sets([s for name, s in matrices.items() if name != "holdout"])
        hold = matrices["holdout"]
        if not len(train.groups):
            raise ValueError("hybrid: no training user has a labelled item among their candidates; raise n_candidates "
                             "or check that the validation fold is not empty")
        self.model_ = self.make_model()
        names = self.feature_names

        def full_ranking_ndcg(_y_true, y_pred):  # what evaluate() reports for the held-out users
            return "full_ranking_ndcg@10", hold.full_ranking_ndcg(y_pred), True

        evaluation = {}
        if len(hold.groups):  # tiny data: possibly no held-out user with a retrieved validation item
            evaluation = {"eval_X": (hold.X,), "eval_y": (hold.y,), "eval_group": [hold.groups],
                          "eval_metric": full_ranking_ndcg}
        early_stopping = [lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)]
        self.model_.fit(train.X, train.y, group=train.groups, feature_name=names, **evaluation,
                        callbacks=early_stopping if cfg.early_stopping_rounds and evaluation else [])
        curve = self.model_.evals_result_["valid_0"]["full_ranking_ndcg@10"] if evaluation else []
        best_iteration = int(self.model_.best_iteration_ or self.model_.booster_.current_iteration())
        gains = self.model_.booster_.feature_importance("gain", iteration=best_iteration)
        holdout_ndcg = float(curve[best_iteration - 1]) if evaluation else (0.0 if hold.n_users else float("nan"))
        self.extra_models_ = []
        for offset in range(1, cfg.n_models):
            model = self.make_model(offset).set_params(n_estimators=best_iteration)
            self.extra_models_.append(model.fit(train.X, train.y, group=train.groups, feature_name=names))
        if self.extra_models_ and evaluation:
            holdout_ndcg = hold.full_ranking_ndcg(self.predict(hold.X, best_iteration))
        self.training_log_ = HybridTrainingLog(
            feature_names=names,
            importances={n: float(g) for n, g in zip(names, gains / max(gains.sum(), 1e-12), strict=True)},
            validation_curve=[float(v) for v in curve],
            best_iteration=best_iteration,
            train_rows=len(train.y), train_users=len(train.groups), holdout_users=len(hold.groups),
            candidate_recall=self.candidate_recall_,
            extra={"holdout_full_ranking_ndcg@10": holdout_ndcg,
                   "pseudo_groups": len(matrices["pseudo"].groups) if "pseudo" in matrices else 0,
                   "pseudo_recall": getattr(self, "pseudo_recall_", None)},
        )

    def _score(self, users: np.ndarray) -> np.ndarray:
        scores = np.full((len(users), len(self.item_ids_)), -np.inf, dtype=np.float32)
        for start in range(0, len(users), self.config.batch_size):
            batch = users[start:start + self.config.batch_size]
            rows, items, features = self.context_.candidates_and_features(batch, self.config.n_candidates)
            if len(rows):
                scores[start + rows, items] = self.predict(features, self.training_log_.best_iteration)
        return scores

    def predict(self, features: np.ndarray, num_iteration: int) -> np.ndarray:
        """The mean prediction of the LambdaRank models (the first with `num_iteration` trees)."""
        prediction = self.model_.booster_.predict(features, num_iteration=num_iteration)
        for model in getattr(self, "extra_models_", []):
            prediction = prediction + model.booster_.predict(features)
        return prediction / (1 + len(getattr(self, "extra_models_", [])))


def refit_copy(ranker: Ranker, data: InteractionData) -> Ranker:
    """A copy of a fitted ranker refitted on `data` (same item space); the original is not modified.

    Genre match keeps its item side and only rebuilds the users' genre profiles from `data.train`.
    """
    clone = copy.copy(ranker)
    if isinstance(ranker, GenreMatchRanker):
        counts = binarize(data.train) @ (ranker.item_genre_weights_ > 0).astype(np.float32)
        totals = counts.sum(axis=1, keepdims=True)
        clone.user_profiles_ = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0).astype(np.float32)
        clone.train_ = data.train
        return clone
    return clone.fit(data)
