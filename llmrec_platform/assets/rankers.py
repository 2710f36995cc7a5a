"""Trained rankers. Each asset fits one model on the training fold, scores it on validation and logs
an MLflow run (params, validation metrics, data fingerprint)."""

import inspect
import json
import tempfile
import time
import typing
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from llmrec_platform import progress
from llmrec_platform.compute import rows_by_node
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.vectors import align
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.rankers.base import Ranker, TrainedRanker
from llmrec_platform.rankers.collab_map import CollabMapRanker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.fit_cache import fit_key
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.implicit_models import AdamBPRRanker, ALSRanker, BPRRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.multvae import MultVAERanker
from llmrec_platform.rankers.scale import fit_within
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.rankers.tfidf import TfidfContentRanker
from llmrec_platform.resources import ComputeResource, DatasetResource, ExperimentResource, TrackingResource
from llmrec_platform.storage.tracking import data_fingerprint

ARTIFACTS_IO = "artifacts_io"
# Every ranker asset, in report order; the evaluation report and recommendations take them all.
RANKER_ASSETS = [
    "popularity_ranker", "itemknn_ranker", "ease_ranker", "als_ranker", "bpr_ranker", "bpr_adam_ranker",
    "multvae_ranker", "genre_match_ranker",
    "llm_content_ranker", "tfidf_content_ranker", "llm_ease_map_ranker", "hybrid_ranker",
]


def train_ranker(
    context: dg.AssetExecutionContext,
    ranker: Ranker,
    split: pa.Table,
    params: dict,
    tracking: TrackingResource,
    dataset: DatasetResource,
    experiment: ExperimentResource,
) -> TrainedRanker:
    data = InteractionData.from_split(split)
    ranker, skipped = fit_within(ranker, data.n_items, experiment.dense_max_items)
    if skipped:  # a dense model that does not fit the catalogue: a sparse one stands in
        context.log.warning(skipped)
        context.add_output_metadata({"skipped": skipped})
        params = {"in_place_of": context.asset_key.to_user_string(), "k": ranker.k}
    fingerprint = data_fingerprint(split)

    def fit_and_validate() -> tuple[Ranker, float, dict]:
        start = time.perf_counter()
        ranker.fit(data)
        seconds = time.perf_counter() - start
        # A ranker trained on part of the validation fold (the hybrid) is scored on the users it did not see.
        return ranker, seconds, evaluate(ranker, data, "valid", users=getattr(ranker, "validation_users_", None)).summary

    cache = experiment.fit_cache_store()
    key = fit_key(ranker, fingerprint) if cache.folder else ""  # hashed before fitting, which changes the ranker
    with progress.listening(progress.throttled(context.log.debug)):  # the CLI's progress bar for the step
        (ranker, fit_seconds, valid), cached = cache.get_or_compute(context.asset_key.to_user_string(), key,
                                                                    fit_and_validate)
    if cached:
        context.log.info(f"{ranker.name}: inputs unchanged, loaded from the fit cache (first fit took {fit_seconds:.1f} s)")
    tracker = tracking.tracker()
    run_id = tracker.start_run(
        ranker.name,
        {**params, "dataset": dataset.label(), "protocol": experiment.protocol, "seed": experiment.seed,
         "cold_items": experiment.cold_items, "data_fingerprint": fingerprint},
        tags={"dagster_run_id": context.run_id, "ranker": ranker.name, "fit_cache": "hit" if cached else "miss"},
    )
    tracker.log_metrics(run_id, {**valid, "fit_seconds": fit_seconds}, prefix="valid_")
    tracker.end_run(run_id)
    context.add_output_metadata({
        "mlflow_run_id": run_id,
        "data_fingerprint": fingerprint,
        "valid_ndcg@10": dg.MetadataValue.float(round(valid["ndcg@10"], 5)),
        "fit_seconds": dg.MetadataValue.float(round(fit_seconds, 3)),
        "fit_cache": "hit" if cached else "miss",
    })
    if getattr(ranker, "epoch_note_", None):  # a size cap cut the epochs (Mult-VAE): said once per run
        context.log.warning(ranker.epoch_note_)
        context.add_output_metadata({"epochs_trained": ranker.epochs_trained_, "epoch_note": ranker.epoch_note_})
    if getattr(ranker, "best_epoch_", None) is not None:  # early stopping chose the epoch (Mult-VAE, Adam-BPR)
        context.add_output_metadata({"best_epoch": ranker.best_epoch_, "max_epochs": ranker.epochs})
    return TrainedRanker(ranker, run_id, fingerprint, valid, fit_seconds, key)


RANKER_KWARGS = {"group_name": "rankers", "io_manager_key": ARTIFACTS_IO}


@dg.asset(kinds={"numpy", "mlflow"}, **RANKER_KWARGS)
def popularity_ranker(
    context: dg.AssetExecutionContext, split: pa.Table, tracking: TrackingResource,
    dataset: DatasetResource, experiment: ExperimentResource,
) -> TrainedRanker:
    """Most-interacted items first: the bar every personalised model must clear. Its counts are published (its
    recommendations), so with a finite LLMREC_DP_EPSILON it ranks by their differentially private release."""
    release = experiment.count_release()
    return train_ranker(context, PopularityRanker(release), split, release.params(), tracking, dataset, experiment)


@dg.asset(kinds={"numpy", "mlflow"}, **RANKER_KWARGS)
def llm_content_ranker(
    context: dg.AssetExecutionContext, split: pa.Table, item_embeddings: pd.DataFrame,
    user_embeddings: pd.DataFrame, tracking: TrackingResource, dataset: DatasetResource,
    experiment: ExperimentResource,
) -> TrainedRanker:
    """Cosine between a history's LLM interest vector and each item's text embedding (plus the nearest history
    item); the interest vectors are `user_embeddings`', rebuilt for any live history."""
    encoder = str(item_embeddings["model"].iloc[0])
    profiles = user_embeddings[["user_id", "profile_embedding"]].rename(columns={"profile_embedding": "embedding"})
    weight = float(user_embeddings["profile_weight"].iloc[0]) if "profile_weight" in user_embeddings else None
    ranker = LLMContentRanker(item_embeddings, profiles, encoder=encoder, dense_max_items=experiment.dense_max_items,
                              ann_min_items=experiment.ann_min_items,
                              **({} if weight is None else {"profile_weight": weight}))  # the weight user_embeddings used
    trained = train_ranker(context, ranker, split, {"encoder": encoder, "user_text_weight": ranker.profile_weight},
                           tracking, dataset, experiment)
    ranker = trained.ranker  # the fitted one (possibly from the fit cache)
    if ranker.item_index_.approximate or not hasattr(ranker, "item_similarity_"):  # what falls back, once per run
        context.log.warning(ranker.retrieval_note_)
    context.add_output_metadata({"retrieval": ranker.retrieval_note_, **(
        {"ann_recall@100": dg.MetadataValue.float(round(ranker.retrieval_recall_, 4))}
        if ranker.item_index_.approximate else {})})
    stored = align(ranker.user_ids_, user_embeddings, "user_id", "users")
    if not np.allclose(ranker.user_vectors_, stored, atol=1e-5):
        raise dg.Failure("llm_content_ranker's interest vectors differ from user_embeddings': both must weight "
                         f"histories alike (profile_weight {ranker.profile_weight}, half_life_days "
                         f"{ranker.half_life_days}); set the same values in the user_embeddings config")
    return trained


def config_class(cls: type, parameters: list[str]) -> type[dg.Config]:
    """A run-config class whose fields are `cls`'s constructor parameters, with their types and defaults,
    so asset config and domain class never disagree."""
    hints = typing.get_type_hints(cls.__init__)
    signature = inspect.signature(cls)
    namespace = {name: signature.parameters[name].default for name in parameters}
    namespace["__annotations__"] = {name: hints[name] for name in parameters}
    return type(f"{cls.__name__}Config", (dg.Config,), namespace)


def cf_ranker_asset(name: str, ranker_cls: type[Ranker], parameters: list[str], description: str, kind: str,
                    seeded: bool = False) -> dg.AssetsDefinition:
    """A ranker asset fitted on the training fold only, hyper-parameters from run config."""
    config_cls = config_class(ranker_cls, parameters)

    @dg.asset(name=name, description=description, kinds={kind, "mlflow"}, **RANKER_KWARGS)
    def ranker_asset(
        context: dg.AssetExecutionContext, config: config_cls, split: pa.Table, tracking: TrackingResource,
        dataset: DatasetResource, experiment: ExperimentResource,
    ) -> TrainedRanker:
        params = {**config.model_dump(), **({"seed": experiment.seed} if seeded else {})}
        return train_ranker(context, ranker_cls(**params), split, params, tracking, dataset, experiment)

    return ranker_asset


itemknn_ranker = cf_ranker_asset(
    "itemknn_ranker", ItemKNNRanker, ["k", "shrink"], "Item-based k-nearest neighbours on cosine similarity with shrinkage.",
    "scipy")
ease_ranker = cf_ranker_asset(
    "ease_ranker", EASERanker, ["reg_weight"],
    "EASE: the closed-form shallow autoencoder (Steck 2019), the strongest classical baseline here.", "scipy")
als_ranker = cf_ranker_asset(
    "als_ranker", ALSRanker, ["factors", "regularization", "alpha", "iterations"],
    "Implicit-feedback ALS (the `implicit` library).", "implicit", seeded=True)
bpr_ranker = cf_ranker_asset(
    "bpr_ranker", BPRRanker, ["factors", "learning_rate", "regularization", "iterations"],
    "Bayesian Personalized Ranking (the `implicit` library), seeded and single-threaded for determinism.", "implicit",
    seeded=True)
bpr_adam_ranker = cf_ranker_asset(
    "bpr_adam_ranker", AdamBPRRanker, ["factors", "learning_rate", "epochs", "batch_size", "patience", "eval_every"],
    "BPR trained as RecBole trains it (mini-batch Adam in torch): the reproduction of its published BPR.", "pytorch", seeded=True)

multvae_ranker = cf_ranker_asset(
    "multvae_ranker", MultVAERanker, ["hidden", "latent", "dropout", "epochs", "batch_size", "learning_rate",
                                      "dp_epsilon", "dp_delta", "dp_max_grad_norm", "patience", "eval_every", "max_cells"],
    "Mult-VAE (Liang et al. 2018): a variational autoencoder with a multinomial likelihood, torch on the CPU; patience "
    "> 0 stops early on validation (epochs is then the maximum); dp_epsilon trains it with DP-SGD (opacus); "
    "max_cells caps users x items x epochs (fewer epochs on a large catalogue).",
    "pytorch", seeded=True)


@dg.asset(kinds={"scipy", "mlflow"}, **RANKER_KWARGS)
def genre_match_ranker(
    context: dg.AssetExecutionContext, split: pa.Table, raw_items: pd.DataFrame, tracking: TrackingResource,
    dataset: DatasetResource, experiment: ExperimentResource,
) -> TrainedRanker:
    """Items scored by the overlap of their genres with the user's history: the fair cold-start floor."""
    return train_ranker(context, GenreMatchRanker(raw_items), split, {}, tracking, dataset, experiment)


TfidfContentConfig = config_class(TfidfContentRanker, ["svd_dims", "ngram_max", "history_weight"])


@dg.asset(kinds={"scikitlearn", "mlflow"}, **RANKER_KWARGS)
def tfidf_content_ranker(
    context: dg.AssetExecutionContext, config: TfidfContentConfig, split: pa.Table, item_texts: pd.DataFrame,
    user_texts: pd.DataFrame, tracking: TrackingResource, dataset: DatasetResource, experiment: ExperimentResource,
) -> TrainedRanker:
    """The non-LLM text baseline: TF-IDF (+ SVD) on the same item text as llm_content, scored like it."""
    params = {**config.model_dump(), "seed": experiment.seed}
    ranker = TfidfContentRanker(item_texts, user_texts, **params)
    trained = train_ranker(context, ranker, split, params, tracking, dataset, experiment)
    context.add_output_metadata({"text_dim": trained.ranker.vectorizer.dim})
    return trained


CollabMapConfig = config_class(CollabMapRanker, ["reg_weight", "alpha"])


@dg.asset(kinds={"scipy", "mlflow"}, **RANKER_KWARGS)
def llm_ease_map_ranker(
    context: dg.AssetExecutionContext, config: CollabMapConfig, split: pa.Table, item_embeddings: pd.DataFrame,
    ease_ranker: TrainedRanker, tracking: TrackingResource, dataset: DatasetResource, experiment: ExperimentResource,
) -> TrainedRanker:
    """EASE on warm items; cold items scored x·B̂, their EASE columns mapped from LLM item embeddings (ridge). B is
    `ease_ranker`'s when it was fitted with the same reg_weight (else fitted here: metadata `ease_weights`)."""
    encoder = str(item_embeddings["model"].iloc[0])
    ranker = CollabMapRanker(item_embeddings, **config.model_dump(), ease=ease_ranker.ranker)
    trained = train_ranker(context, ranker, split, {**config.model_dump(), "encoder": encoder}, tracking, dataset,
                           experiment)
    context.add_output_metadata({"cold_items_mapped": int(getattr(trained.ranker, "cold_", np.zeros(0)).sum()),
                                 **({"ease_weights": trained.ranker.ease_source_}
                                    if hasattr(trained.ranker, "ease_source_") else {})})
    return trained


HybridAssetConfig = config_class(HybridConfig, [
    "n_candidates", "n_estimators", "learning_rate", "num_leaves", "min_child_samples", "feature_fraction",
    "early_stopping_rounds", "holdout_users", "n_models", "pseudo_label_share",
])


@dg.asset(kinds={"lightgbm", "mlflow"}, **RANKER_KWARGS)
def hybrid_ranker(
    context: dg.AssetExecutionContext, config: HybridAssetConfig, split: pa.Table,
    ease_ranker: TrainedRanker, itemknn_ranker: TrainedRanker, als_ranker: TrainedRanker,
    bpr_adam_ranker: TrainedRanker, multvae_ranker: TrainedRanker, llm_content_ranker: TrainedRanker,
    genre_match_ranker: TrainedRanker,
    tracking: TrackingResource, dataset: DatasetResource, experiment: ExperimentResource, compute: ComputeResource,
) -> TrainedRanker:
    """CF candidates (EASE, ItemKNN, ALS, Adam-BPR, Mult-VAE) re-ranked by LightGBM LambdaRank with LLM features,
    trained on the validation fold; its feature matrices are built over user blocks where `compute` says."""
    blocks = compute.blocks()  # an unreachable cluster fails here, before any work
    candidates = {t.ranker.name: t.ranker
                  for t in (ease_ranker, itemknn_ranker, als_ranker, bpr_adam_ranker, multvae_ranker)}
    hybrid_config = HybridConfig(**config.model_dump(), seed=experiment.seed)
    ranker = HybridRanker(candidates, llm_content_ranker.ranker, {"genre_match": genre_match_ranker.ranker}, hybrid_config,
                          refit_cache=experiment.fit_cache_store(), blocks=blocks)
    trained = train_hybrid(context, ranker, split, tracking, dataset, experiment)
    # which node built the feature rows of how many users (none when the fit came from the cache)
    context.add_output_metadata({"compute": blocks.name,
                                 "featurised_rows_by_node": dg.MetadataValue.json(rows_by_node(blocks.placements))})
    return trained


def train_hybrid(
    context: dg.AssetExecutionContext, ranker: HybridRanker, split: pa.Table, tracking: TrackingResource,
    dataset: DatasetResource, experiment: ExperimentResource,
) -> TrainedRanker:
    """`train_ranker` for a hybrid, plus its LightGBM model and training summary (MLflow, metadata). Shared by the
    frozen-encoder hybrid and the fine-tuned one (assets/finetune.py)."""
    params = {**{name: getattr(ranker.config, name) for name in HybridAssetConfig.model_fields},
              "candidates": ",".join(ranker.candidate_rankers), "encoder": ranker.content.name}
    trained = train_ranker(context, ranker, split, params, tracking, dataset, experiment)
    log_hybrid_training(tracking, trained)
    log = trained.ranker.training_log_
    context.add_output_metadata({
        "best_iteration": log.best_iteration,
        "candidate_recall_valid": dg.MetadataValue.float(round(log.candidate_recall, 4)),
        "feature_importance": dg.MetadataValue.md(
            "| feature | gain share |\n|---|---:|\n" + "\n".join(
                f"| {name} | {share:.3f} |" for name, share in sorted(log.importances.items(), key=lambda x: -x[1]))),
    })
    return trained


def log_hybrid_training(tracking: TrackingResource, trained: TrainedRanker) -> None:
    """The LightGBM model, its feature importances and its validation curve, in the ranker's MLflow run."""
    ranker, tracker = trained.ranker, tracking.tracker()
    log = ranker.training_log_
    tracker.log_metric_history(trained.mlflow_run_id, "holdout_valid_ndcg_at_10", log.validation_curve)
    tracker.log_metrics(trained.mlflow_run_id, {"best_iteration": log.best_iteration,
                                                "candidate_recall": log.candidate_recall})
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "lightgbm_model.txt"
        ranker.model_.booster_.save_model(str(model_path), num_iteration=log.best_iteration)
        importance_path = Path(tmp) / "feature_importance.json"
        importance_path.write_text(json.dumps(log.importances, indent=2))
        tracker.log_artifact(trained.mlflow_run_id, model_path, "model")
        tracker.log_artifact(trained.mlflow_run_id, importance_path, "model")
