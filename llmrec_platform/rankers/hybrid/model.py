"""The LLM-enhanced hybrid: CF candidates re-ranked by LightGBM LambdaRank with LLM features.

Stage 1 (`candidates.py`): candidates = union of the top-N unseen items of each candidate ranker.
Stage 2: a LambdaRank model scores each (history, candidate) from features (`features.py`): every candidate
ranker's score, rank, gap to the history's best candidate and z-score within its candidate list; for item-item
rankers (EASE's B, ItemKNN's similarities) the strongest single link between the item and the history and a
rating-centred score; the cosine between the history's LLM interest vector and the item and the max / mean LLM
similarity between the item and the history's liked items; the feature rankers' scores (genre match); item
popularity and mean rating, user activity, and when the item was popular relative to the history's active
period (item statistics from training interactions only).

It is trained on the validation fold (labels = validation items), with a seeded share of validation users held
out for early stopping and for the honest validation score. With `pseudo_label_share > 0` it also trains on
pseudo-labelled groups from the training fold: a seeded share of each user's training items is held out,
copies of the base rankers are refitted on the rest, and their features for the held-out items become extra
LambdaRank groups. No valid item of a held-out user and no test item is ever a label. At scoring time only
the rankers fitted on the full training fold are used: a training user by position (`score`), any other
history through the base rankers' fold-in (`score_query`). Items outside the candidate set score below every
candidate, in the order of the first candidate ranker, so every score is finite.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData, binarize
from llmrec_platform.encoders.vectors import user_interest_vectors
from llmrec_platform.progress import report as report_progress
from llmrec_platform.rankers.base import Histories, Ranker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.rankers.hybrid.batch import UserBatch
from llmrec_platform.rankers.hybrid.config import HybridConfig, HybridTrainingLog
from llmrec_platform.rankers.hybrid.features import FeatureContext
from llmrec_platform.rankers.sequence import SequenceNeighbourRanker


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


def fold_fingerprint(*matrices: sp.spmatrix) -> str:
    """A hash of sparse matrices' contents (a fold the pseudo-label refits are fitted on)."""
    digest = hashlib.sha256()
    for matrix in matrices:
        csr = sp.csr_matrix(matrix)
        csr.sort_indices()
        for part in (np.asarray(csr.shape), csr.indptr, csr.indices, csr.data):
            digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()


def concat_sets(sets: list[RankingSet]) -> RankingSet:
    return RankingSet(np.vstack([s.X for s in sets]), np.concatenate([s.y for s in sets]),
                      np.concatenate([s.groups for s in sets]), np.concatenate([s.n_relevant for s in sets]),
                      sum(s.n_users for s in sets), np.concatenate([s.users for s in sets]))


class HybridRanker(Ranker):
    name = "hybrid"

    def __init__(self, candidate_rankers: dict[str, Ranker], content: LLMContentRanker,
                 feature_rankers: dict[str, Ranker] | None = None, config: HybridConfig | None = None,
                 refit_cache: FitCache | None = None):
        if not candidate_rankers:
            raise ValueError("the hybrid needs at least one candidate ranker")
        self.candidate_rankers = candidate_rankers
        self.content = content
        self.feature_rankers = feature_rankers or {}
        self.config = config or HybridConfig()
        # Where the pseudo-label refits are memoised: the ablation's variants refit the same rankers on the same
        # reduced fold, and a re-run on unchanged inputs does too. Not part of the model (see __getstate__).
        self.refit_cache = refit_cache

    def __getstate__(self) -> dict:
        return {**self.__dict__, "refit_cache": None}

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
        self.context_ = FeatureContext(self.candidate_rankers, self._content_user_vectors, self.content.item_vectors_,
                                       self._all_feature_rankers(), data.train, data.train_timestamps,
                                       self.config.liked_threshold)

    def _content_user_vectors(self, batch: UserBatch) -> np.ndarray:
        if batch.by_id:
            return self.content.user_vectors_[batch.histories.users]
        return self.content.interest_vectors(batch.histories)

    def _ranking_set(self, context: FeatureContext, users: np.ndarray, labels: sp.csr_matrix) -> tuple[RankingSet, int]:
        """Features and labels of `users`; also how many of their labelled items the candidates retrieved."""
        cfg = self.config
        X, y, groups, n_relevant, group_users, retrieved = [np.zeros((0, len(context.feature_names())))], [], [], [], [], 0
        for start in range(0, len(users), cfg.batch_size):
            batch = users[start:start + cfg.batch_size]
            candidates, features = context.candidates_and_features(context.batch(batch), cfg.n_candidates)
            rows, items = candidates.rows, candidates.items
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
        fingerprint = fold_fingerprint(inner.train, inner.train_timestamps)
        to_refit = [*self.candidate_rankers.items(), *self._all_feature_rankers().items()]
        refits = []
        for name, ranker in to_refit:
            refits.append(self._pseudo_refit(name, ranker, inner, fingerprint))
            report_progress(len(refits), len(to_refit), "base rankers refitted")
        rankers = dict(zip(self.candidate_rankers, refits[:len(self.candidate_rankers)], strict=True))
        features = dict(zip(self._all_feature_rankers(), refits[len(self.candidate_rankers):], strict=True))
        # The interest vectors are rebuilt from the reduced history (user_interest_vectors' defaults).
        user_vectors = user_interest_vectors(inner.train, inner.train_timestamps, self.content.item_vectors_)
        context = FeatureContext(rankers, lambda batch: user_vectors[batch.histories.users], self.content.item_vectors_,
                                 features, inner.train, inner.train_timestamps, cfg.liked_threshold)
        labels = inner.valid
        if cfg.pseudo_with_valid:  # never the held-out validation users' items: they score the hybrid
            training_users = np.ones(data.n_users, dtype=np.float32)
            training_users[self.validation_users_] = 0.0
            labels = (labels + sp.diags(training_users) @ binarize(data.valid)).tocsr()
        result, retrieved = self._ranking_set(context, users, labels)
        return result, retrieved / max(int(labels[users].nnz), 1)

    def _pseudo_refit(self, name: str, ranker: Ranker, inner: InteractionData, fingerprint: str) -> Ranker:
        cache = self.refit_cache or FitCache(None)
        refit, _ = cache.get_or_fit(f"hybrid_pseudo_{name}", ranker, fingerprint, lambda: ranker.refit_copy(inner))
        return refit

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
        total_trees = cfg.n_estimators * cfg.n_models  # until early stopping sizes the other models

        def trees_done(before: int):
            return lambda env: report_progress(before + env.iteration + 1, total_trees, "trees")

        self.model_.fit(train.X, train.y, group=train.groups, feature_name=names, **evaluation,
                        callbacks=[*(early_stopping if cfg.early_stopping_rounds and evaluation else []), trees_done(0)])
        curve = self.model_.evals_result_["valid_0"]["full_ranking_ndcg@10"] if evaluation else []
        best_iteration = int(self.model_.best_iteration_ or self.model_.booster_.current_iteration())
        gains = self.model_.booster_.feature_importance("gain", iteration=best_iteration)
        holdout_ndcg = float(curve[best_iteration - 1]) if evaluation else (0.0 if hold.n_users else float("nan"))
        self.extra_models_ = []
        first_trees = self.model_.booster_.current_iteration()
        total_trees = first_trees + (cfg.n_models - 1) * best_iteration
        for offset in range(1, cfg.n_models):
            model = self.make_model(offset).set_params(n_estimators=best_iteration)
            self.extra_models_.append(model.fit(train.X, train.y, group=train.groups, feature_name=names,
                                                callbacks=[trees_done(first_trees + (offset - 1) * best_iteration)]))
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
        return self._score_batches([self.context_.batch(users[start:start + self.config.batch_size])
                                    for start in range(0, len(users), self.config.batch_size)], len(users))

    def _score_histories(self, histories: Histories) -> np.ndarray:
        step = self.config.batch_size
        return self._score_batches([UserBatch(slice_histories(histories, start, start + step), by_id=False)
                                    for start in range(0, len(histories), step)], len(histories))

    def _score_batches(self, batches: list[UserBatch], n: int) -> np.ndarray:
        scores = np.empty((n, len(self.item_ids_)), dtype=np.float32)
        start = 0
        for batch in batches:
            candidates, features = self.context_.candidates_and_features(batch, self.config.n_candidates)
            prediction = self.predict(features, self.training_log_.best_iteration).astype(np.float32)
            scores[start:start + len(batch)] = below_candidates(candidates.scores[0], candidates.rows, prediction)
            scores[start + candidates.rows, candidates.items] = prediction
            start += len(batch)
        return scores

    def _similar_item_scores(self, position: int) -> np.ndarray:
        """From the first candidate ranker (the pipeline passes EASE, the strongest single model, first)."""
        return next(iter(self.candidate_rankers.values()))._similar_item_scores(position)

    def predict(self, features: np.ndarray, num_iteration: int) -> np.ndarray:
        """The mean prediction of the LambdaRank models (the first with `num_iteration` trees)."""
        prediction = self.model_.booster_.predict(features, num_iteration=num_iteration)
        for model in getattr(self, "extra_models_", []):
            prediction = prediction + model.booster_.predict(features)
        return prediction / (1 + len(getattr(self, "extra_models_", [])))


def slice_histories(histories: Histories, start: int, stop: int) -> Histories:
    return Histories(histories.ratings[start:stop], histories.timestamps[start:stop], histories.users[start:stop],
                     histories.texts[start:stop])


def below_candidates(fallback: np.ndarray, rows: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Scores for the items that are not candidates: below each row's lowest candidate prediction, ordered by
    `fallback` (a base ranker's scores; -inf for seen items, which rank last)."""
    floor = np.zeros(fallback.shape[0], dtype=np.float64)
    if len(rows):
        lowest = np.full(fallback.shape[0], np.inf)
        np.minimum.at(lowest, rows, prediction)
        floor = np.where(np.isfinite(lowest), lowest, 0.0)
    finite = np.where(np.isfinite(fallback), fallback, np.nan)
    mean = np.nanmean(finite, axis=1, keepdims=True)
    spread = np.nanstd(finite, axis=1, keepdims=True) + 1e-12
    squashed = np.nan_to_num(np.tanh((finite - np.nan_to_num(mean)) / spread), nan=-1.0)  # in [-1, 1]
    return (floor[:, None] - 2.0 + 0.5 * squashed).astype(np.float32)
