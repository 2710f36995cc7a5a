"""Raw data into the warehouse: ratings (monthly partitions), items, users.

Each asset writes its part of the load's `quarantine` rows (replacing that part's earlier rows, even with
none), reports the counts in its metadata, and fails only when a file's share of rejected rows exceeds the
dataset's error budget.
"""

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.data.landing import landed_in_window, with_landed
from llmrec_platform.data.quarantine import QUERY_HINT, summary, write_quarantine
from llmrec_platform.data.specs import RATINGS_COLUMNS, Dataset, over_budget
from llmrec_platform.erasure.ledger import Tombstones, drop_erased
from llmrec_platform.resources import DatasetResource, ExperimentResource, HomeResource, WarehouseResource


def _table(rows: pd.DataFrame) -> str:
    lines = ["| file | row | field | reason |", "|---|---:|---|---|"]
    lines += [f"| {r.source_file} | {r.row_number} | {r.field} | {r.reason} |" for r in rows.itertuples()]
    return "\n".join(lines)


def _quarantine(context, loaded: Dataset, source: str, store, part: str) -> dict:
    """Write `part`'s quarantine rows, fail above the error budget, and return the metadata entries."""
    rejected = loaded.quarantined(part)
    write_quarantine(store, rejected, source, part)
    query = QUERY_HINT.format(dataset=source.replace("'", "''"))
    if len(rejected):
        context.log.warning(f"{part}: {summary(rejected)} quarantined; see them with: {query}")
    for note in loaded.notes:
        if any(f in note for f in loaded.files(part)):
            context.log.info(note)
    problems = over_budget(loaded, part)
    if problems:
        raise dg.Failure(
            description=f"{part}: " + "; ".join(problems) + f". Fix the file(s), or raise the error budget; the "
                        f"rejected rows are in the quarantine table: {query}",
            metadata={"quarantined": len(rejected), "first_rejected": dg.MetadataValue.md(_table(rejected.head(10)))},
        )
    return {
        "quarantined": len(rejected),
        "quarantine_summary": summary(rejected),
        "rows_read": sum(loaded.rows.get(part, {}).values()),
        "source_files": dg.MetadataValue.json(loaded.files(part)),
        "notes": dg.MetadataValue.json([n for n in loaded.notes if any(f in n for f in loaded.files(part))]),
        "error_budget": loaded.error_budget,
    }


def _without_erased(ratings: pa.Table, erased: Tombstones) -> pa.Table:
    """`drop_erased` on Arrow ratings: the check runs on the distinct user ids only."""
    users = pa.table({"user_id": pc.unique(ratings["user_id"])}).to_pandas()
    kept = drop_erased(users, erased)
    if len(kept) == len(users):
        return ratings
    return ratings.filter(pc.is_in(ratings["user_id"], value_set=pa.array(kept["user_id"], ratings["user_id"].type)))


@dg.asset(
    partitions_def=monthly_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    metadata={"table": "ratings", "partition_expr": "timestamp"},
    group_name="ingest",
    kinds={"duckdb", "arrow"},
)
def raw_ratings(context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource,
                experiment: ExperimentResource, home: HomeResource) -> pa.Table:
    """Ratings whose timestamp falls in the partition window (tagged with their dataset), plus the rows
    landed in that window from LLMREC_HOME/landing/ (the `landed_ratings` ledger); bad rows go to the
    `quarantine` table. Arrow from the reader to the warehouse: no pandas copy of the ratings."""
    window = context.partition_time_window
    start, end = int(window.start.timestamp()), int(window.end.timestamp())
    loaded, label = dataset.load(), dataset.label()
    if experiment.protocol == "temporal" and not loaded.has_timestamps:
        raise dg.Failure(f"dataset {label} has no timestamps (interactions.timestamp is not set), so the "
                         "temporal protocol cannot cut it in time: use the recbole protocol")
    table = loaded.ratings_table.select(RATINGS_COLUMNS)
    stamps = table["timestamp"]
    in_window = table.filter(pc.and_(pc.greater_equal(stamps, start), pc.less(stamps, end)))
    in_window = in_window.append_column("dataset", pa.repeat(pa.scalar(label, pa.string()), in_window.num_rows))
    store = warehouse.warehouse()
    landed = landed_in_window(store, start, end, label)
    ratings = _without_erased(with_landed(in_window, landed), Tombstones(home.paths().erasure))  # forgotten users
    if store.has_table("ratings"):
        # The warehouse holds one dataset at a time: switching datasets drops the other one's rows.
        dropped = store.delete("ratings", "dataset <> ?", [label])
        if dropped:
            context.log.warning(f"removed {dropped} ratings of another dataset from the warehouse")
    quality = _quarantine(context, loaded, label, store, "ratings")
    context.add_output_metadata({
        "dataset": label,
        "window": f"{window.start:%Y-%m} .. {window.end:%Y-%m} (exclusive)",
        "users": pc.count_distinct(ratings["user_id"]).as_py(),
        "items": pc.count_distinct(ratings["item_id"]).as_py(),
        "landed": len(landed),
        **quality,
    })
    return ratings


@dg.asset(metadata={"table": "items"}, group_name="ingest", kinds={"duckdb", "pandas"})
def raw_items(context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource) -> pd.DataFrame:
    """Item catalogue: id, title, year, genres (+ text for a dataset config); bad rows to `quarantine`."""
    loaded = dataset.load()
    context.add_output_metadata({"items": len(loaded.items),
                                 **_quarantine(context, loaded, dataset.label(), warehouse.warehouse(), "items")})
    return loaded.items


@dg.asset(metadata={"table": "users"}, group_name="ingest", kinds={"duckdb", "pandas"})
def raw_users(context: dg.AssetExecutionContext, dataset: DatasetResource, warehouse: WarehouseResource,
              home: HomeResource) -> pd.DataFrame:
    """Users: demographics (ML-1M codes decoded) or a config's profile text; bad rows to `quarantine`."""
    loaded = dataset.load()
    store = warehouse.warehouse()
    metadata = _quarantine(context, loaded, dataset.label(), store, "users")
    if "user_texts" in loaded.rows:
        texts = _quarantine(context, loaded, dataset.label(), store, "user_texts")
        metadata.update({f"user_texts_{k}": v for k, v in texts.items()})
    users = drop_erased(loaded.users, Tombstones(home.paths().erasure))  # `llmrec forget` users stay forgotten
    context.add_output_metadata({"users": len(users), **metadata})
    return users
