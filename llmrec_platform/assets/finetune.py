"""The fine-tuned encoder branch: contrastive fine-tuning of MiniLM, its embeddings, its content ranker, the
hybrid with its LLM features from it, and a frozen-vs-fine-tuned comparison. Its own group and job: a CPU
fine-tune takes minutes, so the default `llmrec demo` leaves it out (`llmrec demo --finetune` includes it)."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from llmrec_platform.assets.embeddings import (
    GPU_OP_TAGS,
    GPU_POOL,
    UserEmbeddingsConfig,
    item_embedding_frame,
    user_embedding_frame,
)
from llmrec_platform.assets.rankers import ARTIFACTS_IO, RANKER_KWARGS, config_class, train_hybrid, train_ranker
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.finetune import FineTuneConfig, build_training_pairs, fine_tune
from llmrec_platform.evaluation.report import format_table, metrics_table
from llmrec_platform.evaluation.significance import PairedComparison, comparisons_markdown, paired_bootstrap
from llmrec_platform.evaluation.suite import CHAMPION_METRIC, SuiteResult, evaluate_suite
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.rankers.hybrid import HybridRanker
from llmrec_platform.resources import (
    DatasetResource,
    DeviceResource,
    EncoderResource,
    ExperimentResource,
    HomeResource,
    TrackingResource,
    WarehouseResource,
)
from llmrec_platform.storage.tracking import data_fingerprint

FINETUNE_GROUP = "finetune"
# (fine-tuned, frozen): each pair is compared per user on test NDCG@10 by `encoder_comparison`.
FINETUNED_PAIRS = (("llm_content_finetuned", "llm_content"), ("hybrid_finetuned", "hybrid"))


FineTuneAssetConfig = config_class(FineTuneConfig, [
    "epochs", "batch_size", "learning_rate", "max_pairs", "max_pairs_cpu", "history_len", "popularity_correction",
])


@dg.asset(group_name=FINETUNE_GROUP, io_manager_key=ARTIFACTS_IO, op_tags=GPU_OP_TAGS, pool=GPU_POOL,
          kinds={"pytorch", "mlflow"})
def finetuned_encoder(
    context: dg.AssetExecutionContext, config: FineTuneAssetConfig, split: pd.DataFrame, item_texts: pd.DataFrame,
    device: DeviceResource, encoder: EncoderResource, experiment: ExperimentResource, tracking: TrackingResource,
    home: HomeResource,
) -> str:
    """MiniLM fine-tuned on (user history, next liked item) pairs of the training fold, in-batch negatives.
    Returns the saved model folder, which the encoder loads like a packaged model."""
    settings = FineTuneConfig(base_model=encoder.model, seed=experiment.seed, precision=device.precision,
                              **config.model_dump())
    pairs = build_training_pairs(split, item_texts, history_len=settings.history_len, seed=experiment.seed)
    fingerprint = data_fingerprint(split)
    output = home.paths().artifacts / "models" / f"finetuned-{fingerprint}-seed{experiment.seed}"
    result = fine_tune(pairs, settings, device.resolve(context.log), output)
    tracker = tracking.tracker()
    run_id = tracker.start_run("finetuned_encoder", {**config.model_dump(), "base_model": encoder.model,
                                                     "data_fingerprint": fingerprint, "seed": experiment.seed})
    tracker.log_metric_history(run_id, "train_loss", result.loss_history)
    tracker.log_metrics(run_id, {"pairs_per_second": result.pairs_per_second, "seconds": result.seconds})
    tracker.end_run(run_id)
    context.add_output_metadata({**{k: v for k, v in result.metadata().items() if isinstance(v, int | float | str)},
                                 "mlflow_run_id": run_id, "model_dir": dg.MetadataValue.path(str(result.model_dir))})
    return str(result.model_dir)


@dg.asset(metadata={"table": "item_embeddings_finetuned"}, group_name=FINETUNE_GROUP, kinds={"pytorch", "duckdb"},
          op_tags=GPU_OP_TAGS, pool=GPU_POOL)
def item_embeddings_finetuned(
    context: dg.AssetExecutionContext, item_texts: pd.DataFrame, finetuned_encoder: str, device: DeviceResource,
    warehouse: WarehouseResource,
) -> pd.DataFrame:
    """Item embeddings from the fine-tuned encoder (cached like the frozen ones, by model digest)."""
    return item_embedding_frame(context, item_texts, device, EncoderResource(model=finetuned_encoder), warehouse)


@dg.asset(metadata={"table": "user_embeddings_finetuned"}, group_name=FINETUNE_GROUP, kinds={"pytorch", "duckdb"},
          op_tags=GPU_OP_TAGS, pool=GPU_POOL)
def user_embeddings_finetuned(
    context: dg.AssetExecutionContext, config: UserEmbeddingsConfig, split: pd.DataFrame,
    item_embeddings_finetuned: pd.DataFrame, user_texts: pd.DataFrame, finetuned_encoder: str,
    device: DeviceResource, warehouse: WarehouseResource,
) -> pd.DataFrame:
    """User interest vectors in the fine-tuned encoder's space."""
    return user_embedding_frame(context, config, split, item_embeddings_finetuned, user_texts, device,
                                EncoderResource(model=finetuned_encoder), warehouse)


@dg.asset(kinds={"numpy", "mlflow"}, **{**RANKER_KWARGS, "group_name": FINETUNE_GROUP})
def llm_content_finetuned_ranker(
    context: dg.AssetExecutionContext, split: pd.DataFrame, item_embeddings_finetuned: pd.DataFrame,
    user_embeddings_finetuned: pd.DataFrame, tracking: TrackingResource, dataset: DatasetResource,
    experiment: ExperimentResource,
) -> TrainedRanker:
    """The LLM content ranker on the fine-tuned encoder."""
    ranker = LLMContentRanker(item_embeddings_finetuned, user_embeddings_finetuned, name="llm_content_finetuned")
    params = {"encoder": str(item_embeddings_finetuned["model"].iloc[0])}
    return train_ranker(context, ranker, split, params, tracking, dataset, experiment)


def with_content(hybrid: HybridRanker, content: LLMContentRanker, name: str,
                 refit_cache: FitCache | None = None) -> HybridRanker:
    """An unfitted copy of `hybrid` (its candidate and feature rankers, config and seeds) whose four LLM columns
    come from `content`: built from the trained hybrid so that only the encoder differs, whatever run config it had."""
    copy = HybridRanker(hybrid.candidate_rankers, content, hybrid.feature_rankers, hybrid.config, refit_cache=refit_cache)
    copy.name = name
    return copy


@dg.asset(kinds={"lightgbm", "mlflow"}, **{**RANKER_KWARGS, "group_name": FINETUNE_GROUP})
def hybrid_finetuned_ranker(
    context: dg.AssetExecutionContext, split: pd.DataFrame, hybrid_ranker: TrainedRanker,
    llm_content_finetuned_ranker: TrainedRanker, tracking: TrackingResource, dataset: DatasetResource,
    experiment: ExperimentResource,
) -> TrainedRanker:
    """The hybrid with its LLM features from the fine-tuned encoder: `hybrid_ranker`'s candidates, feature rankers,
    config and seeds, only the content ranker swapped (its pseudo-label refits come from the fit cache)."""
    ranker = with_content(hybrid_ranker.ranker, llm_content_finetuned_ranker.ranker, "hybrid_finetuned",
                          refit_cache=experiment.fit_cache_store())
    return train_hybrid(context, ranker, split, tracking, dataset, experiment)


def paired_by_slice(suite: SuiteResult, pairs=FINETUNED_PAIRS, seed: int = 2020) -> list[tuple[str, PairedComparison]]:
    """(slice, fine-tuned - frozen test NDCG@10, paired per user) for each pair on every slice where both were
    evaluated (the hybrids have no cold slice)."""
    evaluated = set(zip(suite.metrics["ranker"], suite.metrics["slice"], strict=True))
    return [(s, paired_bootstrap(suite.per_user(a, "test", s), suite.per_user(b, "test", s), CHAMPION_METRIC, a, b,
                                 seed=seed))
            for s in sorted(suite.metrics["slice"].unique()) for a, b in pairs if {(a, s), (b, s)} <= evaluated]


@dg.asset(group_name=FINETUNE_GROUP, io_manager_key=ARTIFACTS_IO, kinds={"duckdb", "mlflow"})
def encoder_comparison(
    context: dg.AssetExecutionContext, split: pd.DataFrame, llm_content_ranker: TrainedRanker,
    llm_content_finetuned_ranker: TrainedRanker, hybrid_ranker: TrainedRanker, hybrid_finetuned_ranker: TrainedRanker,
    warehouse: WarehouseResource, tracking: TrackingResource, experiment: ExperimentResource,
) -> dict:
    """Frozen vs fine-tuned encoder, for the content ranker and for the hybrid, on every slice (warm and cold when
    cold items are held out; the hybrids have no cold slice), reported whichever wins: the slice metrics go to
    `evaluation_metrics`, the paired per-user differences (95% bootstrap interval, Wilcoxon p) to the metadata and
    to the fine-tuned rankers' MLflow runs."""
    data = InteractionData.from_split(split)
    trained = {t.ranker.name: t for t in (llm_content_ranker, llm_content_finetuned_ranker, hybrid_ranker,
                                          hybrid_finetuned_ranker)}
    suite = evaluate_suite(trained, data, seed=experiment.seed)
    rows = suite.metrics.assign(run_id=context.run_id, created_at=datetime.now(UTC).replace(tzinfo=None))
    warehouse.warehouse().append(
        "evaluation_metrics", rows[["run_id", "ranker", "slice", "fold", "metric", "k", "value", "created_at"]])
    paired = paired_by_slice(suite, FINETUNED_PAIRS, experiment.seed)
    tracker = tracking.tracker()
    for slice_name, c in paired:
        tracker.log_metrics(trained[c.ranker].mlflow_run_id, {
            "ndcg10_diff": c.mean_difference, "ndcg10_ci_low": c.ci_low, "ndcg10_ci_high": c.ci_high,
            "wilcoxon_p": c.wilcoxon_p}, prefix=f"vs_{c.baseline}_{slice_name}_")
    sections = [f"### test fold, {s} items\n\n{format_table(metrics_table(suite.metrics, 'test', s))}\n\n"
                + comparisons_markdown([c for t, c in paired if t == s])
                for s in sorted(suite.metrics["slice"].unique())]
    context.add_output_metadata({
        "comparison": dg.MetadataValue.md("\n\n".join(sections)),
        **{f"ndcg@10_diff/{c.ranker}_vs_{c.baseline}/{s}": dg.MetadataValue.float(round(c.mean_difference, 5))
           for s, c in paired},
    })
    return {"metrics": suite.metrics, "valid_scores": suite.valid_scores,
            "comparisons": [{"slice": s, **c.as_dict()} for s, c in paired]}
