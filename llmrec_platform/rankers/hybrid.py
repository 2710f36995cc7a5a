"""The LLM-enhanced hybrid: CF candidates re-ranked by LightGBM LambdaRank with LLM features.

Stage 1: candidates = union of the top-N (training items excluded) of each candidate ranker.
Stage 2: a LambdaRank model scores each (user, candidate) from features: every candidate ranker's score
and rank, the cosine between the user's LLM interest vector and the item, the max and mean LLM
similarity between the item and the user's liked training items, genre overlap with the user's history,
item popularity and user activity. It is trained on the validation fold (labels = validation items),
with a seeded share of validation users held out for early stopping and for the honest validation score.
Items outside the candidate set score -inf: the hybrid never ranks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker, top_k
from llmrec_platform.rankers.content import LLMContentRanker


@dataclass(frozen=True)
class HybridConfig:
    # LightGBM settings chosen on held-out validation users of ML-1M (recbole protocol, seed 2020), NDCG@10
    # on their candidates: lr 0.05/31 leaves/50 min -> 0.2747; lr 0.02/15/200 -> 0.2769 (kept);
    # lr 0.02/63/100/ff 0.7 -> 0.2752; lr 0.1/7/500 -> 0.2751; lr 0.03/31/300/ff 0.5 -> 0.2727.
    n_candidates: int = 50
    n_estimators: int = 500
    learning_rate: float = 0.02
    num_leaves: int = 15
    min_child_samples: int = 200
    early_stopping_rounds: int = 50
    feature_fraction: float = 1.0
    holdout_users: float = 0.2
    liked_threshold: float = 4.0
    batch_size: int = 512
    seed: int = 2020
    num_threads: int = 0


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

    # -- features -------------------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        names = []
        for r in self.candidate_rankers:
            names += [f"{r}_score", f"{r}_rank", f"{r}_score_gap"]
        names += ["llm_cosine", "llm_max_sim_liked", "llm_mean_sim_liked"]
        names += [f"{r}_score" for r in self.feature_rankers]
        return names + ["item_popularity", "user_activity"]

    def _candidates_and_features(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, items, features): one row per (user in batch, candidate item)."""
        n = self.config.n_candidates
        seen = self.train_[users].tocoo()
        scores, ranks = [], []
        candidate = np.zeros((len(users), len(self.item_ids_)), dtype=bool)
        for ranker in self.candidate_rankers.values():
            s = ranker.score(users)
            s[seen.row, seen.col] = -np.inf
            top = top_k(s, n)
            rank = np.full(s.shape, n + 1, dtype=np.float32)
            np.put_along_axis(rank, top, np.arange(1, top.shape[1] + 1, dtype=np.float32)[None, :], axis=1)
            np.put_along_axis(candidate, top, True, axis=1)
            scores.append(s)
            ranks.append(rank)
        candidate[seen.row, seen.col] = False
        rows, items = np.nonzero(candidate)
        columns = []
        for s, rank in zip(scores, ranks, strict=True):
            # The gap to the user's best candidate makes scores comparable across users (splits are global).
            best = np.max(np.where(candidate, s, -np.inf), axis=1)
            columns += [s[rows, items], rank[rows, items], s[rows, items] - best[rows]]
        columns.append(self.content.score(users)[rows, items])
        max_sim, mean_sim = self._liked_similarity(users, rows, items)
        columns += [max_sim, mean_sim]
        columns += [r.score(users)[rows, items] for r in self.feature_rankers.values()]
        columns += [self.item_popularity_[items], self.user_activity_[users][rows]]
        return rows, items, np.column_stack(columns).astype(np.float32)

    def _liked_similarity(self, users: np.ndarray, rows: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vectors = self.content.item_vectors_
        liked = self.liked_[users]
        mean_sim = np.asarray((liked @ vectors) @ vectors.T)[rows, items]  # liked rows are mean-normalised
        max_sim = np.zeros(len(rows), dtype=np.float32)
        boundaries = np.searchsorted(rows, np.arange(len(users) + 1))
        for b in range(len(users)):
            lo, hi = boundaries[b], boundaries[b + 1]
            history = liked[b].indices
            if hi > lo and len(history):
                max_sim[lo:hi] = (vectors[items[lo:hi]] @ vectors[history].T).max(axis=1)
        return max_sim, mean_sim

    # -- fitting --------------------------------------------------------------------------------------
    def _fit(self, data: InteractionData) -> None:
        for name, ranker in {**self.candidate_rankers, **self.feature_rankers, "content": self.content}.items():
            if ranker.item_ids_ is None or not np.array_equal(ranker.item_ids_, data.item_ids):
                raise ValueError(f"hybrid: sub-ranker {name!r} must be fitted on the same data first")
        self._prepare_user_and_item_features(data)
        self.train_model(self.training_matrices(data))

    def _prepare_user_and_item_features(self, data: InteractionData) -> None:
        binary = (data.train > 0).astype(np.float32)
        self.item_popularity_ = np.log1p(np.asarray(binary.sum(axis=0)).ravel()).astype(np.float32)
        self.user_activity_ = np.log1p(np.asarray(binary.sum(axis=1)).ravel()).astype(np.float32)
        liked = (data.train >= self.config.liked_threshold).astype(np.float32).tocsr()
        empty = np.asarray(liked.sum(axis=1)).ravel() == 0
        liked = (liked + sp.diags(empty.astype(np.float32)) @ binary).tocsr()  # no liked item: use all
        counts = np.asarray(liked.sum(axis=1)).ravel()
        self.liked_ = (sp.diags(1.0 / np.maximum(counts, 1)) @ liked).astype(np.float32).tocsr()

    def training_matrices(self, data: InteractionData) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """LambdaRank inputs (X, y, group sizes) for the training and the held-out validation users."""
        cfg = self.config
        valid_users = np.flatnonzero(np.asarray(data.valid.getnnz(axis=1)) > 0)
        rng = np.random.default_rng(cfg.seed)
        holdout = np.zeros(len(valid_users), dtype=bool)
        holdout[rng.permutation(len(valid_users))[: int(round(cfg.holdout_users * len(valid_users)))]] = True
        self.validation_users_ = np.sort(valid_users[holdout])
        matrices, retrieved = {}, 0
        for part, users in {"train": valid_users[~holdout], "holdout": self.validation_users_}.items():
            X, y, groups = [], [], []
            for start in range(0, len(users), cfg.batch_size):
                batch = users[start:start + cfg.batch_size]
                rows, items, features = self._candidates_and_features(batch)
                labels = np.asarray(data.valid[batch[rows], items]).ravel() > 0
                retrieved += int(labels.sum())
                sizes = np.bincount(rows, minlength=len(batch))
                has_positive = np.bincount(rows, weights=labels, minlength=len(batch)) > 0
                keep = has_positive[rows]  # groups without a positive teach LambdaRank nothing
                X.append(features[keep])
                y.append(labels[keep].astype(np.int32))
                groups.append(sizes[has_positive & (sizes > 0)])
            matrices[part] = (np.vstack(X), np.concatenate(y), np.concatenate(groups))
        self.candidate_recall_ = retrieved / max(int(data.valid.nnz), 1)
        return matrices

    def train_model(self, matrices: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
        import lightgbm as lgb

        cfg = self.config
        X_train, y_train, g_train = matrices["train"]
        X_hold, y_hold, g_hold = matrices["holdout"]
        self.model_ = lgb.LGBMRanker(
            objective="lambdarank", n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
            num_leaves=cfg.num_leaves, min_child_samples=cfg.min_child_samples, colsample_bytree=cfg.feature_fraction,
            random_state=cfg.seed, n_jobs=cfg.num_threads or None, deterministic=True, force_row_wise=True, verbose=-1,
        )
        self.model_.fit(
            X_train, y_train, group=g_train, eval_X=(X_hold,), eval_y=(y_hold,), eval_group=[g_hold], eval_at=[10],
            feature_name=self.feature_names,
            callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
        )
        curve = self.model_.evals_result_["valid_0"]["ndcg@10"]
        gains = self.model_.booster_.feature_importance("gain")
        self.training_log_ = HybridTrainingLog(
            feature_names=self.feature_names,
            importances={n: float(g) for n, g in zip(self.feature_names, gains / max(gains.sum(), 1e-12), strict=True)},
            validation_curve=[float(v) for v in curve],
            best_iteration=int(self.model_.best_iteration_ or len(curve)),
            train_rows=len(y_train), train_users=len(g_train), holdout_users=len(g_hold),
            candidate_recall=self.candidate_recall_,
        )

    def _score(self, users: np.ndarray) -> np.ndarray:
        scores = np.full((len(users), len(self.item_ids_)), -np.inf, dtype=np.float32)
        for start in range(0, len(users), self.config.batch_size):
            batch = users[start:start + self.config.batch_size]
            rows, items, features = self._candidates_and_features(batch)
            if len(rows):
                scores[start + rows, items] = self.model_.booster_.predict(features, num_iteration=self.model_.best_iteration_)
        return scores
