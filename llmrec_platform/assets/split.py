"""Interactions and the train/valid/test split: Arrow in and out, so the rows stay in DuckDB and Arrow from the
warehouse's `ratings` to its `split` (the IO manager hands pandas only to inputs that ask for it)."""

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmrec_platform.data.split import cold_items, interactions_table, popularity_table, split_table
from llmrec_platform.resources import ExperimentResource


@dg.asset(metadata={"table": "interactions"}, group_name="split", kinds={"duckdb"})
def interactions(
    context: dg.AssetExecutionContext, raw_ratings: pa.Table, raw_items: pd.DataFrame, experiment: ExperimentResource
) -> pa.Table:
    """Ratings >= min_rating of known items, one per user-item, k-core filtered (all partitions)."""
    table = interactions_table(raw_ratings, raw_items, experiment.min_rating, experiment.core)
    context.add_output_metadata({
        "ratings_in": raw_ratings.num_rows,
        "users": pc.count_distinct(table["user_id"]).as_py(),
        "items": pc.count_distinct(table["item_id"]).as_py(),
    })
    return table


@dg.asset(metadata={"table": "split"}, group_name="split", kinds={"duckdb"})
def split(context: dg.AssetExecutionContext, interactions: pa.Table, experiment: ExperimentResource) -> pa.Table:
    """user_id, item_id, rating, timestamp, fold (train / valid / test) under the configured protocol."""
    config = experiment.split_config()
    table = split_table(interactions, config)
    folds = pc.value_counts(table["fold"])
    context.add_output_metadata({
        "protocol": config.protocol,
        "seed": config.seed,
        **{f"{fold}_rows": n for fold, n in zip(folds.field("values").to_pylist(), folds.field("counts").to_pylist(),
                                                strict=True)},
        "cold_items": len(cold_items(table)),
    })
    return table


@dg.asset(metadata={"table": "item_popularity"}, group_name="split", kinds={"duckdb"})
def item_popularity(context: dg.AssetExecutionContext, split: pa.Table) -> pa.Table:
    """Each item's training popularity (rank, interactions, mean rating, latest timestamp, valid and test rows),
    counted in SQL from the split: the table behind the popularity baseline, queryable in the warehouse."""
    table = popularity_table(split)
    top = table.slice(0, 10).to_pylist()
    context.add_output_metadata({
        "items": table.num_rows,
        "cold_items": pc.sum(pc.equal(table["interactions"], 0)).as_py() or 0,
        "top_10": dg.MetadataValue.md("| rank | item | interactions |\n|---:|---|---:|\n" + "\n".join(
            f"| {r['rank']} | {r['item_id']} | {r['interactions']} |" for r in top)),
    })
    return table
