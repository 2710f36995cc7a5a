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

The models after the first train side by side, one LightGBM thread each (`parallel_models`; the same trees). A fit
keeps its training matrices (`training_parts_`, not pickled) and stores them in its refit cache: a
`content_variant` (the ablation) is trained on them with only the CONTENT_FEATURES columns computed again.
"""

from __future__ import annotations

import contextvars
import copy
import dataclasses
import hashlib
import itertools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llmrec_platform.compute import BlockMap, InProcess
from llmrec_platform.data.interactions import InteractionData, binarize
from llmrec_platform.encoders.vectors import user_interest_vectors
from llmrec_platform.progress import report as report_progress
from llmrec_platform.rankers.base import Histories, ItemInputs, Ranker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.rankers.hybrid.batch import UserBatch
from llmrec_platform.rankers.hybrid.config import HybridConfig, HybridTrainingLog
from llmrec_platform.rankers.hybrid.features import CONTENT_FEATURES, FeatureContext, build_labelled_features
from llmrec_platform.rankers.sequence import SequenceNeighbourRanker

TRAINING_SETS = "hybrid_training_sets"  # the refit cache's name for a fit's training parts (for its ablation)


@dataclass
class RankingSet:
    """LambdaRank inputs for one set of users: rows grouped by user, in user order."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # rows per user that has at least one positive candidate
    n_relevant: np.ndarray  # relevant items per such user (retrieved or not), for full-ranking NDCG
    n_users: int  # users the set stands for, including those whose positives were all missed
    users: np.ndarray  # the user (position) of each group
    items: np.ndarray | None = None  # the candidate item (position) of each row

    def subset(self, keep_groups: np.ndarray, n_users: int) -> RankingSet:
        """The groups where `keep_groups` is true, standing for `n_users` users."""
        rows = np.repeat(keep_groups, self.groups)
        return RankingSet(self.X[rows], self.y[rows], self.groups[keep_groups], self.n_relevant[keep_groups], n_users,
                          self.users[keep_groups], None if self.items is None else self.items[rows])

    def with_columns(self, columns: np.ndarray, values: np.ndarray) -> RankingSet:
        """A copy whose feature `columns` hold `values` (one row per row of X)."""
        X = self.X.copy()
        X[:, columns] = values
        return dataclasses.replace(self, X=X)

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
    items = None if any(s.items is None for s in sets) else np.concatenate([s.items for s in sets])
    return RankingSet(np.vstack([s.X for s in sets]), np.concatenate([s.y for s in sets]),
                      np.concatenate([s.groups for s in sets]), np.concatenate([s.n_relevant for s in sets]),
                      sum(s.n_users for s in sets), np.concatenate([s.users for s in sets]), items)


class PrecomputedVectors:
    """A context's user vectors looked up by training row (picklable, unlike a lambda)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = vectors

    def __call__(self, batch: UserBatch) -> np.ndarray:
        return self.vectors[batch.histories.users]


class HybridRanker(Ranker):
    name = "hybrid"

    def __init__(self, candidate_rankers: dict[str, Ranker], content: LLMContentRanker,
                 feature_rankers: dict[str, Ranker] | None = None, config: HybridConfig | None = None,
                 refit_cache: FitCache | None = None, blocks: BlockMap | None = None):
        if not candidate_rankers:
            raise ValueError("the hybrid needs at least one candidate ranker")
        self.candidate_rankers = candidate_rankers
        self.content = content
        self.feature_rankers = feature_rankers or {}
        self.config = config or HybridConfig()
        # Where the pseudo-label refits are memoised: the ablation's variants refit the same rankers on the same
        # reduced fold, and a re-run on unchanged inputs does too. Not part of the model (see __getstate__).
        self.refit_cache = refit_cache
        self.blocks = blocks  # where the fit builds its feature matrices (a Ray cluster, or in-process); not pickled

    def refit_elsewhere(self, data: InteractionData, items: ItemInputs) -> HybridRanker:
        """Every base ranker refitted on `data` first, then the hybrid itself, with the same settings."""
        return HybridRanker({name: ranker.refit_elsewhere(data, items) for name, ranker in self.candidate_rankers.items()},
                            self.content.refit_elsewhere(data, items),
                            {name: ranker.refit_elsewhere(data, items) for name, ranker in self.feature_rankers.items()},
                            self.config).fit(data)

    def __getstate__(self) -> dict:
        # The training matrices and a scoring memo are large and transient: `training_parts_for` finds them again.
        state = {**self.__dict__, "refit_cache": None, "blocks": None}
        for transient in ("training_parts_", "feature_memo_"):
            state.pop(transient, None)
        return state

    @property
    def feature_names(self) -> list[str]:
        return self.context_.feature_names()

    # -- fitting --------------------------------------------------------------------------------------
    def _fit(self, data: InteractionData) -> None:
        for name, ranker in {**self.candidate_rankers, **self.feature_rankers, "content": self.content}.items():
            if ranker.item_ids_ is None or not np.array_equal(ranker.item_ids_, data.item_ids):
                raise ValueError(f"hybrid: sub-ranker {name!r} must be fitted on the same data first")
        source = getattr(self, "_content_source", None)
        if source is not None:  # content_variant: the source hybrid's matrices with this content's columns
            hybrid, parts = source
            self.own_rankers_ = hybrid.own_rankers_
            self.context_ = hybrid.context_.with_content(self._content_user_vectors, self.content.item_vectors_,
                                                         self._item_similarity())
            self.validation_users_ = hybrid.validation_users_
            self.candidate_recall_ = hybrid.candidate_recall_
            if hasattr(hybrid, "pseudo_recall_"):
                self.pseudo_recall_ = hybrid.pseudo_recall_
            parts = self._with_own_content(parts, data)
        else:
            self.prepare(data)
            parts = self.training_parts(data)
        self.train_model(parts)
        self.training_parts_ = parts
        # The fit's own key (its first model's trees): the ablation, another step, loads the parts by it.
        self.training_sets_key_ = hashlib.sha256(self.model_.booster_.model_to_string().encode()).hexdigest()[:24]
        if source is None and self.refit_cache is not None and self.refit_cache.folder is not None:
            self.refit_cache.get_or_compute(TRAINING_SETS, self.training_sets_key_, lambda: parts)

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
                                       self.config.liked_threshold, self._item_similarity())

    def _item_similarity(self) -> np.ndarray | None:
        """The content ranker's dense item x item similarity (item_vectors_ @ item_vectors_.T), when it keeps one: the
        feature contexts share it instead of each computing its own (one in float32, the features' type)."""
        similarity = getattr(self.content, "item_similarity_", None)
        return similarity if similarity is not None and similarity.dtype == np.float32 else None

    def _content_user_vectors(self, batch: UserBatch) -> np.ndarray:
        if batch.by_id:
            return self.content.user_vectors_[batch.histories.users]
        return self.content.interest_vectors(batch.histories)

    def _ranking_set(self, context: FeatureContext, users: np.ndarray, labels: sp.csr_matrix) -> tuple[RankingSet, int]:
        """Features and labels of `users`; also how many of their labelled items the candidates retrieved."""
        parts = build_labelled_features(getattr(self, "blocks", None) or InProcess(), context, users, labels,
                                        self.config.n_candidates, self.config.batch_size)
        ints = np.zeros(0, dtype=np.int64)

        def joined(name: str) -> np.ndarray:
            return np.concatenate([ints, *(getattr(part, name) for part in parts)])

        X = np.vstack([np.zeros((0, len(context.feature_names()))), *(part.X for part in parts)]).astype(np.float32)
        return RankingSet(X, joined("y"), joined("groups"), joined("n_relevant"), len(users), joined("users"),
                          joined("items")), sum(part.retrieved for part in parts)

    def training_matrices(self, data: InteractionData) -> dict[str, RankingSet]:
        """LambdaRank inputs: 'valid_train' (validation users not held out), 'holdout' (the held-out validation
        users, for early stopping and validation) and 'pseudo' (the pseudo-labelled groups of every draw, when
        configured)."""
        parts = self.training_parts(data)
        draws = [part for name, part in parts.items() if name.startswith("pseudo")]
        matrices = {name: part for name, part in parts.items() if not name.startswith("pseudo")}
        return {**matrices, "pseudo": concat_sets(draws)} if draws else matrices

    def training_parts(self, data: InteractionData) -> dict[str, RankingSet]:
        """`training_matrices` with each pseudo-label draw d apart ('pseudo_d'): the parts a variant's content
        columns are computed again on (each draw has its own reduced history)."""
        cfg = self.config
        valid_users = np.flatnonzero(np.asarray(data.valid.getnnz(axis=1)) > 0)
        rng = np.random.default_rng(cfg.seed)
        holdout = np.zeros(len(valid_users), dtype=bool)
        holdout[rng.permutation(len(valid_users))[: int(round(cfg.holdout_users * len(valid_users)))]] = True
        self.validation_users_ = np.sort(valid_users[holdout])
        train, retrieved_train = self._ranking_set(self.context_, valid_users[~holdout], data.valid)
        hold, retrieved_hold = self._ranking_set(self.context_, self.validation_users_, data.valid)
        self.candidate_recall_ = (retrieved_train + retrieved_hold) / max(int(data.valid.nnz), 1)
        parts = {"valid_train": train, "holdout": hold}
        if cfg.pseudo_label_share > 0:
            draws = [self.pseudo_label_set(data, draw) for draw in range(max(cfg.pseudo_draws, 1))]
            self.pseudo_recall_ = float(np.mean([recall for _, recall in draws]))
            parts.update({f"pseudo_{draw}": ranking_set for draw, (ranking_set, _) in enumerate(draws)})
        return parts

    def pseudo_fold(self, data: InteractionData, draw: int = 0) -> tuple[InteractionData, np.ndarray]:
        """The training fold of pseudo-label `draw`: a seeded share of each user's training items held out as
        its valid fold, the rest its train fold; and the users that get a pseudo-labelled group."""
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
        return inner, users

    def pseudo_label_set(self, data: InteractionData, draw: int = 0) -> tuple[RankingSet, float]:
        """Groups from the training fold: a seeded share of each user's training items are labels for rankers
        refitted on the rest (copies; the hybrid's own rankers are untouched). Also the share of those labels
        that the candidates retrieved. Each `draw` holds out a different random share (`pseudo_fold`)."""
        cfg = self.config
        inner, users = self.pseudo_fold(data, draw)
        fingerprint = fold_fingerprint(inner.train, inner.train_timestamps)
        to_refit = [*self.candidate_rankers.items(), *self._all_feature_rankers().items()]
        refits = []
        for name, ranker in to_refit:
            refits.append(self._pseudo_refit(name, ranker, inner, fingerprint))
            report_progress(len(refits), len(to_refit), "base rankers refitted")
        rankers = dict(zip(self.candidate_rankers, refits[:len(self.candidate_rankers)], strict=True))
        features = dict(zip(self._all_feature_rankers(), refits[len(self.candidate_rankers):], strict=True))
        context = FeatureContext(rankers, self._pseudo_user_vectors(inner), self.content.item_vectors_, features,
                                 inner.train, inner.train_timestamps, cfg.liked_threshold, self._item_similarity())
        labels = inner.valid
        if cfg.pseudo_with_valid:  # never the held-out validation users' items: they score the hybrid
            training_users = np.ones(data.n_users, dtype=np.float32)
            training_users[self.validation_users_] = 0.0
            labels = (labels + sp.diags(training_users) @ binarize(data.valid)).tocsr()
        result, retrieved = self._ranking_set(context, users, labels)
        return result, retrieved / max(int(labels[users].nnz), 1)

    def _pseudo_user_vectors(self, inner: InteractionData) -> PrecomputedVectors:
        """The interest vectors of a pseudo-label fold, rebuilt from its reduced history (user_interest_vectors'
        defaults)."""
        return PrecomputedVectors(user_interest_vectors(inner.train, inner.train_timestamps, self.content.item_vectors_))

    def _with_own_content(self, parts: dict[str, RankingSet], data: InteractionData) -> dict[str, RankingSet]:
        """Another hybrid's training parts with this hybrid's CONTENT_FEATURES columns: every other column (the
        candidates, the base rankers' and their pseudo-label refits' features) is taken as it is."""
        columns = [self.feature_names.index(name) for name in CONTENT_FEATURES]
        result = {}
        for name, part in parts.items():
            if part.items is None:
                raise ValueError(f"hybrid: training part {name!r} has no candidate items; build it with training_parts")
            context = self.context_
            if name.startswith("pseudo_"):
                inner, _ = self.pseudo_fold(data, int(name.removeprefix("pseudo_")))
                context = FeatureContext({}, self._pseudo_user_vectors(inner), self.content.item_vectors_, {},
                                         inner.train, inner.train_timestamps, self.config.liked_threshold,
                                         self._item_similarity())
            result[name] = part.with_columns(columns, context.content_columns(part.users, part.groups, part.items))
        return result

    def content_variant(self, content: LLMContentRanker, data: InteractionData, name: str,
                        parts: dict[str, RankingSet] | None = None, n_models: int = 1, **config) -> HybridRanker:
        """A hybrid trained on this fitted hybrid's feature matrices (`parts`: `training_parts_for(data)` unless
        given) with the CONTENT_FEATURES columns computed from `content` instead: the same candidates, other
        features, pseudo-label refits, holdout users, config (but `n_models` and any other `config` field given)
        and seeds; nothing but those columns is computed again."""
        variant = HybridRanker(self.candidate_rankers, content, self.feature_rankers,
                               dataclasses.replace(self.config, n_models=n_models, **config), refit_cache=self.refit_cache)
        variant.name = name
        variant._content_source = (self, self.training_parts_for(data) if parts is None else parts)
        try:
            return variant.fit(data)
        finally:
            del variant._content_source

    def training_parts_for(self, data: InteractionData, refit_cache: FitCache | None = None) -> dict[str, RankingSet]:
        """The training parts this fitted hybrid was trained on (`data` must be what it was fitted on): kept from
        the fit in this process, else loaded from the refit cache (`refit_cache`, else its own) where the fit
        stored them, else built again (on a copy; the pseudo-label refits come from that cache when it holds
        them)."""
        parts = self.__dict__.get("training_parts_")
        if parts is not None:
            return parts
        cache = refit_cache or self.refit_cache or FitCache(None)

        def build() -> dict[str, RankingSet]:
            clone = copy.copy(self)  # a copy leaves the transient state and the cache behind (__getstate__)
            clone.refit_cache = cache
            return clone.training_parts(data)

        parts, _ = cache.get_or_compute(TRAINING_SETS, getattr(self, "training_sets_key_", ""), build)
        return parts

    def _pseudo_refit(self, name: str, ranker: Ranker, inner: InteractionData, fingerprint: str) -> Ranker:
        cache = self.refit_cache or FitCache(None)
        # The pseudo fold's valid items are the hybrid's labels: a refit that stopped early on them would fit them.
        if getattr(ranker, "patience", 0):
            ranker = copy.copy(ranker)
            ranker.patience = 0
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
        first_trees = self.model_.booster_.current_iteration()
        total_trees = first_trees + (cfg.n_models - 1) * best_iteration
        offsets = range(1, cfg.n_models)
        workers = min(cfg.num_threads, len(offsets)) if cfg.parallel_models else 1
        trees = itertools.count(first_trees + 1)  # one count, however many models train at once

        def fit_extra(offset: int):
            # Side by side, each model gets one LightGBM thread: the same trees as with more (deterministic=True).
            model = self.make_model(offset).set_params(n_estimators=best_iteration, **({"n_jobs": 1} if workers > 1 else {}))
            return model.fit(train.X, train.y, group=train.groups, feature_name=names,
                             callbacks=[lambda env: report_progress(next(trees), total_trees, "trees")])

        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:  # LightGBM releases the GIL while it grows trees
                futures = [pool.submit(contextvars.copy_context().run, fit_extra, offset) for offset in offsets]
                self.extra_models_ = [future.result() for future in futures]
        else:
            self.extra_models_ = [fit_extra(offset) for offset in offsets]
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
                   "pseudo_groups": sum(len(s.groups) for name, s in matrices.items() if name.startswith("pseudo")),
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
            rows, items, fallback, features = self._candidate_features(batch)
            prediction = self.predict(features, self.training_log_.best_iteration).astype(np.float32)
            scores[start:start + len(batch)] = below_candidates(fallback, rows, prediction)
            scores[start + rows, items] = prediction
            start += len(batch)
        return scores

    def _candidate_features(self, batch: UserBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rows, items, the first candidate ranker's scores, features) of a batch's candidates. With a
        `feature_memo_` (a dict that `content_variant`s of one hybrid share: the ablation), a batch of training
        users that one of them has scored is not retrieved or featurised again; only the CONTENT_FEATURES
        columns are computed, when the content differs."""
        memo = getattr(self, "feature_memo_", None)
        key = batch.histories.users.tobytes() if memo is not None and batch.by_id else None
        if key is None or key not in memo:
            candidates, features = self.context_.candidates_and_features(batch, self.config.n_candidates)
            found = (candidates.rows, candidates.items, candidates.first_scores, features, self.content)
            if key is not None:
                memo[key] = found
            return found[:4]
        rows, items, fallback, features, content = memo[key]
        if content is not self.content:
            groups = np.bincount(rows, minlength=len(batch))
            columns = [self.feature_names.index(name) for name in CONTENT_FEATURES]
            features = features.copy()
            features[:, columns] = self.context_.content_columns(batch.histories.users, groups, items)
        return rows, items, fallback, features

    def _similar_item_scores(self, position: int) -> np.ndarray:
        """From the first candidate ranker (the pipeline passes EASE, the strongest single model, first)."""
        return next(iter(self.candidate_rankers.values()))._similar_item_scores(position)

    def predict(self, features: np.ndarray, num_iteration: int) -> np.ndarray:
        """The mean prediction of the LambdaRank models, each with its first `num_iteration` trees (the extra models
        have that many, unless `with_models` cut them)."""
        prediction = self.model_.booster_.predict(features, num_iteration=num_iteration)
        for model in getattr(self, "extra_models_", []):
            prediction = prediction + model.booster_.predict(features, num_iteration=num_iteration)
        return prediction / (1 + len(getattr(self, "extra_models_", [])))

    def with_models(self, n_models: int, n_trees: int) -> HybridRanker:
        """A copy that scores with this fit's first `n_models` models cut to their first `n_trees` trees: the hybrid
        that `n_models` and `n_estimators=n_trees` (no early stopping) would train, without training it. LightGBM
        grows tree t the same whatever the number of trees to come (`tests/test_hybrid.py` checks it)."""
        log = self.training_log_
        if not 1 <= n_models <= 1 + len(self.extra_models_) or not 1 <= n_trees <= log.best_iteration:
            raise ValueError(f"hybrid: with_models({n_models}, {n_trees}) needs 1..{1 + len(self.extra_models_)} models "
                             f"and 1..{log.best_iteration} trees (what this fit trained)")
        clone = copy.copy(self)  # drops the transient state, the cache and the blocks (__getstate__): keep them
        clone.refit_cache, clone.blocks = self.refit_cache, getattr(self, "blocks", None)
        if "training_parts_" in self.__dict__:
            clone.training_parts_ = self.training_parts_
        clone.config = dataclasses.replace(self.config, n_models=n_models, n_estimators=n_trees, early_stopping_rounds=0)
        clone.extra_models_ = self.extra_models_[:n_models - 1]
        clone.training_log_ = dataclasses.replace(log, best_iteration=n_trees, extra={
            **log.extra, "holdout_full_ranking_ndcg@10": None})  # that of this fit's models, not of the cut ones
        return clone


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
