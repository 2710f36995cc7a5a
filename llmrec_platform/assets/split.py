"""Interactions and the train/valid/test split."""

import dagster as dg
import pandas as pd

from llmrec_platform.data.split import cold_items, prepare_interactions, split_interactions
from llmrec_platform.resources import ExperimentResource


@dg.asset(metadata={"table": "interactions"}, group_name="split", kinds={"duckdb"})
def interactions(
    context: dg.AssetExecutionContext, raw_ratings: pd.DataFrame, raw_items: pd.DataFrame, experiment: ExperimentResource
) -> pd.DataFrame:
    """Ratings >= min_rating of known items, one per user-item, k-core filtered (all partitions)."""
    frame = prepare_interactions(raw_ratings, raw_items, experiment.min_rating, experiment.core)
    context.add_output_metadata({
        "ratings_in": len(raw_ratings),
        "users": int(frame["user_id"].nunique()),
        "items": int(frame["item_id"].nunique()),
    })
    return frame


@dg.asset(metadata={"table": "split"}, group_name="split", kinds={"duckdb"})
def split(context: dg.AssetExecutionContext, interactions: pd.DataFrame, experiment: ExperimentResource) -> pd.DataFrame:
    """user_id, item_id, rating, timestamp, fold (train / valid / test) under the configured protocol."""
    config = experiment.split_config()
    frame = split_interactions(interactions, config)
    context.add_output_metadata({
        "protocol": config.protocol,
        "seed": config.seed,
        **{f"{fold}_rows": int(n) for fold, n in frame["fold"].value_counts().items()},
        "cold_items": len(cold_items(frame)),
    })
    return frame
