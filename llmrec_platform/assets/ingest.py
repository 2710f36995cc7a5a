"""Raw data into the warehouse: ratings (monthly partitions), items, users."""

import dagster as dg
import pandas as pd

from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.data.landing import landed_in_window, with_landed
from llmrec_platform.resources import DatasetResource, WarehouseResource


@dg.asset(
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"table": "ratings", "partition_expr": "timestamp"},
    group_name="ingest",
    kinds={"duckdb", "pandas"},
)
def raw_ratings(context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource) -> pd.DataFrame:
    """Ratings whose timestamp falls in the partition window (tagged with their dataset), plus the rows
    landed in that window from LLMREC_HOME/landing/ (the `landed_ratings` ledger); bad rows go to the
    `quarantine` table."""
    window = context.partition_time_window
    start, end = int(window.start.timestamp()), int(window.end.timestamp())
    loaded = dataset.load()
    in_window = loaded.ratings["timestamp"].between(start, end - 1)
    store = warehouse.warehouse()
    landed = landed_in_window(store, start, end, dataset.source)
    ratings = with_landed(loaded.ratings[in_window].reset_index(drop=True).assign(dataset=dataset.source), landed)
    if store.has_table("ratings"):
        # The warehouse holds one dataset at a time: switching datasets drops the other one's rows.
        dropped = store.delete("ratings", "dataset <> ?", [dataset.source])
        if dropped:
            context.log.warning(f"removed {dropped} ratings of another dataset from the warehouse")
    quarantine = loaded.quarantine.assign(dataset=dataset.source)
    if len(quarantine):
        store.replace_where("quarantine", quarantine, "dataset = ?", [dataset.source])
        context.log.warning(f"{len(quarantine)} rating rows quarantined (see the quarantine table)")
    context.add_output_metadata({
        "dataset": dataset.source,
        "window": f"{window.start:%Y-%m} .. {window.end:%Y-%m} (exclusive)",
        "users": int(ratings["user_id"].nunique()),
        "items": int(ratings["item_id"].nunique()),
        "quarantined": len(quarantine),
        "landed": len(landed),
    })
    return ratings


@dg.asset(metadata={"table": "items"}, group_name="ingest", kinds={"duckdb", "pandas"})
def raw_items(dataset: DatasetResource) -> pd.DataFrame:
    """Item catalogue: id, title, year, genres."""
    return dataset.load().items


@dg.asset(metadata={"table": "users"}, group_name="ingest", kinds={"duckdb", "pandas"})
def raw_users(dataset: DatasetResource) -> pd.DataFrame:
    """User demographics (ML-1M codes decoded)."""
    return dataset.load().users
