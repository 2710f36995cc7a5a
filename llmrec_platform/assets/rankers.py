"""Trained rankers. Each asset fits one model on the training fold, scores it on validation and logs
an MLflow run (params, validation metrics, data fingerprint)."""

import time

import dagster as dg
import pandas as pd

from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker, TrainedRanker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.resources import DatasetResource, ExperimentResource, TrackingResource
from llmrec_platform.tracking import data_fingerprint

ARTIFACTS_IO = "artifacts_io"
# Every ranker asset, in report order; the evaluation report and recommendations take them all.
RANKER_ASSETS = ["popularity_ranker", "llm_content_ranker"]


def train_ranker(
    context: dg.AssetExecutionContext,
    ranker: Ranker,
    split: pd.DataFrame,
    params: dict,
    tracking: TrackingResource,
    dataset: DatasetResource,
    experiment: ExperimentResource,
) -> TrainedRanker:
    data = InteractionData.from_split(split)
    start = time.perf_counter()
    ranker.fit(data)
    fit_seconds = time.perf_counter() - start
    valid = evaluate(ranker, data, "valid").summary
    fingerprint = data_fingerprint(split)
    tracker = tracking.tracker()
    run_id = tracker.start_run(
        ranker.name,
        {**params, "dataset": dataset.source, "protocol": experiment.protocol, "seed": experiment.seed,
         "cold_items": experiment.cold_items, "data_fingerprint": fingerprint},
        tags={"dagster_run_id": context.run_id, "ranker": ranker.name},
    )
    tracker.log_metrics(run_id, {**valid, "fit_seconds": fit_seconds}, prefix="valid_")
    tracker.end_run(run_id)
    context.add_output_metadata({
        "mlflow_run_id": run_id,
        "data_fingerprint": fingerprint,
        "valid_ndcg@10": dg.MetadataValue.float(round(valid["ndcg@10"], 5)),
        "fit_seconds": dg.MetadataValue.float(round(fit_seconds, 3)),
    })
    return TrainedRanker(ranker, run_id, fingerprint, valid, fit_seconds)


RANKER_KWARGS = {"group_name": "rankers", "io_manager_key": ARTIFACTS_IO, "kinds": {"scikitlearn", "mlflow"}}


@dg.asset(**RANKER_KWARGS)
def popularity_ranker(
    context: dg.AssetExecutionContext, split: pd.DataFrame, tracking: TrackingResource,
    dataset: DatasetResource, experiment: ExperimentResource,
) -> TrainedRanker:
    """Most-interacted items first: the bar every personalised model must clear."""
    return train_ranker(context, PopularityRanker(), split, {}, tracking, dataset, experiment)


@dg.asset(**RANKER_KWARGS)
def llm_content_ranker(
    context: dg.AssetExecutionContext, split: pd.DataFrame, item_embeddings: pd.DataFrame,
    user_embeddings: pd.DataFrame, tracking: TrackingResource, dataset: DatasetResource,
    experiment: ExperimentResource,
) -> TrainedRanker:
    """Cosine between the user's LLM interest vector and each item's text embedding."""
    ranker = LLMContentRanker(item_embeddings, user_embeddings)
    params = {"encoder": str(item_embeddings["model"].iloc[0])}
    return train_ranker(context, ranker, split, params, tracking, dataset, experiment)
