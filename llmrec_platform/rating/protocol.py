"""Surprise's k-fold rating protocol with the base models and the LightGBM stacker (no Dagster).

Per fold: the base models (baseline, biased MF, SVD++) are fitted on the training fold minus a seeded
`holdout` share and predict that slice; the stacker learns on the slice alone (features from the reduced
history), so no rating it learns from was seen by the models that feed it. Then the base models are refitted
on the whole training fold (with `refit`) and every model predicts the test fold. The stacker runs twice,
with and without the LLM features (the ablation), on the same rows, seeds and settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmrec_platform.evaluation.metrics import mae, rmse
from llmrec_platform.rating.data import Ratings, holdout_mask, kfold_assignment
from llmrec_platform.rating.features import LLM_FEATURES, ContentFeatures, collaborative_features
from llmrec_platform.rating.models import BaselineModel, FactorModel, RatingModel

STACK, STACK_NO_LLM = "lightgbm_llm", "lightgbm_no_llm"
# Surprise's published ML-1M table (5-fold mean RMSE), the anchors the report sets beside our means.
SURPRISE_ANCHORS = {"baseline": ("BaselineOnly", 0.909), "biased_mf": ("SVD", 0.873), "svdpp": ("SVD++", 0.862)}


@dataclass
class StackerConfig:
    n_estimators: int = 400
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 100
    num_threads: int = 1
    seed: int = 2020

    def model(self):
        import lightgbm as lgb

        return lgb.LGBMRegressor(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples, random_state=self.seed, n_jobs=self.num_threads,
            deterministic=True, force_row_wise=True, verbose=-1,
        )


@dataclass
class RatingProtocol:
    n_folds: int = 5
    seed: int = 2020
    holdout: float = 0.1
    refit: bool = True
    factors: int = 32
    epochs: int = 10
    reg: float = 0.08
    reg_implicit: float = 20.0
    neighbours: int = 30
    blas_threads: int = 1  # BLAS threads: many tiny solves run slower with more, on a shared machine above all
    stacker: StackerConfig = field(default_factory=StackerConfig)

    def base_models(self, seed: int) -> list[RatingModel]:
        common = {"factors": self.factors, "epochs": self.epochs, "reg": self.reg, "seed": seed}
        return [BaselineModel(), FactorModel(name="biased_mf", **common),
                FactorModel(name="svdpp", implicit=True, reg_implicit=self.reg_implicit, **common)]

    def params(self) -> dict:
        keys = ("n_folds", "seed", "holdout", "refit", "factors", "epochs", "reg", "reg_implicit", "neighbours")
        return {k: getattr(self, k) for k in keys} | {f"stacker_{k}": v for k, v in vars(self.stacker).items()}


@dataclass
class CrossValidation:
    metrics: pd.DataFrame  # model, fold, rmse, mae, fit_seconds
    feature_importance: pd.DataFrame  # fold, feature, gain (the LLM stacker)
    params: dict

    def summary(self) -> pd.DataFrame:
        """Mean and std over folds per model, best mean RMSE first."""
        grouped = self.metrics.groupby("model")[["rmse", "mae"]].agg(["mean", "std"])
        grouped.columns = [f"{m}_{s}" for m, s in grouped.columns]
        return grouped.sort_values("rmse_mean")

    def ablation(self) -> dict | None:
        """Mean RMSE with minus without the LLM features, and the per-fold differences (negative: they help)."""
        if not {STACK, STACK_NO_LLM} <= set(self.metrics["model"]):
            return None
        wide = self.metrics.pivot(index="fold", columns="model", values="rmse")
        diffs = wide[STACK] - wide[STACK_NO_LLM]
        return {"rmse_with": float(wide[STACK].mean()), "rmse_without": float(wide[STACK_NO_LLM].mean()),
                "diff": float(diffs.mean()), "folds_better": int((diffs < 0).sum()), "folds": len(diffs)}


def _predictions(models: list[RatingModel], users: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
    return {m.name: m.predict(users, items) for m in models}


def _fit(models: list[RatingModel], ratings: Ratings, seconds: dict[str, float]) -> None:
    for model in models:
        start = time.perf_counter()
        model.fit(ratings)
        seconds[model.name] = seconds.get(model.name, 0.0) + time.perf_counter() - start


def _features(history: Ratings, models: list[RatingModel], content: ContentFeatures | None, users: np.ndarray,
              items: np.ndarray) -> pd.DataFrame:
    frame = collaborative_features(history, users, items, _predictions(models, users, items))
    if content is not None:
        baseline = models[0]
        llm = content.compute(history, baseline.predict(history.users, history.items), users, items)
        frame = pd.concat([frame, llm], axis=1)
    return frame


def cross_validate(
    ratings: pd.DataFrame,
    protocol: RatingProtocol,
    item_embeddings: pd.DataFrame | None = None,
    profile_embeddings: pd.DataFrame | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> CrossValidation:
    """Run the protocol on `ratings` (user_id, item_id, rating); embeddings frames hold (item_id | user_id,
    embedding). Without item embeddings only the stacker without LLM features runs."""
    from threadpoolctl import threadpool_limits

    from llmrec_platform.rating.features import aligned_embeddings

    data = Ratings.from_frame(ratings)
    folds = kfold_assignment(len(data), protocol.n_folds, protocol.seed)
    item_vectors = aligned_embeddings(data.item_ids, item_embeddings, "item_id")
    profile_vectors = aligned_embeddings(data.user_ids, profile_embeddings, "user_id")
    rows, importance = [], []
    with threadpool_limits(limits=protocol.blas_threads, user_api="blas"):
        content = (ContentFeatures(item_vectors, profile_vectors, neighbours=protocol.neighbours)
                   if item_vectors is not None else None)
        for fold in range(protocol.n_folds):
            fold_seed = protocol.seed + fold
            train, test = data.subset(folds != fold), data.subset(folds == fold)
            seconds: dict[str, float] = {}
            # 1. The stacker's rows: a held-out slice of the training fold, predicted by models that never saw it.
            held = holdout_mask(len(train), protocol.holdout, fold_seed)
            inner, slice_ = train.subset(~held), train.subset(held)
            models = protocol.base_models(fold_seed)
            _fit(models, inner, seconds)
            train_x = _features(inner, models, content, slice_.users, slice_.items)
            # 2. The base models on the whole training fold (or kept), and the test fold's features.
            if protocol.refit:
                models = protocol.base_models(fold_seed)
                _fit(models, train, seconds)
            test_x = _features(train if protocol.refit else inner, models, content, test.users, test.items)
            predictions = _predictions(models, test.users, test.items)
            low, high = float(train.values.min()), float(train.values.max())
            variants = {STACK_NO_LLM: [c for c in train_x.columns if c not in LLM_FEATURES]}
            if content is not None:
                variants[STACK] = list(train_x.columns)
            for name, columns in variants.items():
                start = time.perf_counter()
                stacker = protocol.stacker.model()
                stacker.fit(train_x[columns], slice_.values)
                predictions[name] = np.clip(stacker.predict(test_x[columns]), low, high)
                seconds[name] = time.perf_counter() - start
                if name == STACK:
                    gains = stacker.booster_.feature_importance(importance_type="gain")
                    importance += [{"fold": fold, "feature": c, "gain": float(g)} for c, g in zip(columns, gains, strict=True)]
            for name, predicted in predictions.items():
                rows.append({"model": name, "fold": fold, "rmse": rmse(predicted, test.values),
                             "mae": mae(predicted, test.values), "fit_seconds": seconds.get(name, 0.0)})
            log(f"fold {fold + 1}/{protocol.n_folds}: " + ", ".join(
                f"{r['model']} {r['rmse']:.4f}" for r in rows if r["fold"] == fold))
    return CrossValidation(pd.DataFrame(rows), pd.DataFrame(importance, columns=["fold", "feature", "gain"]),
                           protocol.params())
