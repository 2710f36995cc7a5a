"""Jobs: partitioned ingestion, the nightly retrain, and the op jobs the sensors launch."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from llmrec_platform.assets.embeddings import UserEmbeddingsConfig
from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.assets.rankers import RANKER_ASSETS
from llmrec_platform.data.landing import ingest_landed_file
from llmrec_platform.evaluation.champion import latest_publication
from llmrec_platform.live.online import ImpressionLog, refresh_online_metrics
from llmrec_platform.live.refresh import (
    RefreshResult,
    record_events,
    refresh_recommendations,
    refresh_user_embeddings,
)
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.resources import DatasetResource, EventLogResource, ExperimentResource, WarehouseResource

# --- partitioned ingestion --------------------------------------------------------------------------

ingest_ratings_job = dg.define_asset_job(
    "ingest_ratings",
    selection=dg.AssetSelection.assets("raw_ratings"),
    description="Ingest ratings month by month (monthly partitions of raw_ratings). Backfill a range from the UI "
                "(one run, BackfillPolicy.single_run) or with `dagster job backfill -j ingest_ratings` (one run per month).",
)

# --- nightly retrain --------------------------------------------------------------------------------

# Everything computed from the ratings: the split is rebuilt from what was ingested since the last run, then
# the rankers, the evaluation (with its blocking champion gate) and the published recommendations. Rankers
# and recommendations must share one split (recommendations index the split with the rankers' item space).
RETRAIN_SELECTION = dg.AssetSelection.assets("interactions").downstream() - dg.AssetSelection.groups("finetune")

nightly_retrain_job = dg.define_asset_job(
    "nightly_retrain",
    selection=RETRAIN_SELECTION,
    description="Rebuild interactions and the split from the warehouse ratings, retrain every ranker, evaluate, "
                "and publish the champion's recommendations (if the champion gate passes).",
)


# --- landing: one run per file dropped into LLMREC_HOME/landing/ ---------------------------------------

class LandedFileConfig(dg.Config):
    path: str = Field(description="the ratings file in LLMREC_HOME/landing/ (CSV with a header, or Parquet)")


def partitioned_range() -> tuple[int, int]:
    """[start, end) in epoch seconds of all monthly partitions: landed rows outside it are quarantined."""
    first, last = monthly_partitions.get_first_partition_window(), monthly_partitions.get_last_partition_window()
    return int(first.start.timestamp()), int(last.end.timestamp())


@dg.op(out={}, tags={"kind": "duckdb"})
def ingest_landed_ratings(
    context: dg.OpExecutionContext, config: LandedFileConfig, warehouse: WarehouseResource, dataset: DatasetResource,
):
    """Validate a landed ratings file, load its good rows into `ratings` (idempotently, keyed by file name),
    quarantine the bad ones, and move it to landing/processed/ (or landing/rejected/ with a reason)."""
    result = ingest_landed_file(Path(config.path), warehouse.warehouse(), dataset.label(), partitioned_range(),
                                error_budget=dataset.budget(), pseudonymizer=dataset.pseudonymizer())
    if result.status == "rejected":
        raise dg.Failure(
            description=f"{result.file} rejected: {result.reason}",
            metadata={"moved_to": dg.MetadataValue.path(str(result.destination))},
        )
    if result.quarantined:
        context.log.warning(f"{result.quarantined} of {result.rows} rows of {result.file} quarantined "
                            "(see the quarantine table, source_file = the file name)")
    per_month: dict[str, int] = {}
    for timestamp in result.timestamps:
        key = monthly_partitions.get_partition_key_for_timestamp(timestamp)
        per_month[key] = per_month.get(key, 0) + 1
    # The ratings table backs raw_ratings: record which monthly partitions this file changed.
    for key, rows in sorted(per_month.items()):
        yield dg.AssetMaterialization(
            asset_key="raw_ratings", partition=key, description=f"rows landed from {result.file}",
            metadata={"source_file": result.file, "landed_rows": rows},
        )
    context.log.info(f"{result.file}: {result.loaded} rows loaded, {result.quarantined} quarantined, "
                     f"{result.disposition}")


@dg.job(name="ingest_landed_file", description="Ingest one file from LLMREC_HOME/landing/ (launched by landing_sensor).")
def ingest_landed_file_job():
    ingest_landed_ratings()


# --- events: refresh the users touched by new events ------------------------------------------------

class EventsRefreshConfig(dg.Config):
    start_offset: int = Field(description="byte offset in the event log where the batch starts")
    end_offset: int = Field(description="byte offset where it ends (exclusive)")
    user_ids: list[str] = Field(default_factory=list,
                                description="users to refresh; empty: every user with an event in the batch")
    profile_weight: float | None = Field(default=None, description="None: the experiment's user_text_weight, as "
                                                                  "the user_embeddings asset uses it")
    half_life_days: float = UserEmbeddingsConfig.model_fields["half_life_days"].default


def load_champion(artifacts_io: dg.IOManager, asset_name: str) -> TrainedRanker:
    """The published champion, read through the rankers' own IO manager (whatever storage it uses)."""
    if asset_name not in RANKER_ASSETS:
        raise dg.Failure(f"the published champion asset {asset_name!r} is not a ranker asset of this code location "
                         f"({RANKER_ASSETS})")
    return TrainedRanker.checked(artifacts_io.load_input(dg.build_input_context(asset_key=dg.AssetKey(asset_name))),
                                 asset_name)


@dg.op(out={}, tags={"kind": "duckdb"})
def refresh_users_from_events(
    context: dg.OpExecutionContext,
    config: EventsRefreshConfig,
    warehouse: WarehouseResource,
    experiment: ExperimentResource,
    artifacts_io: dg.ResourceParam[dg.IOManager],
    events: EventLogResource,
):
    """Record a batch of the event log in `events`, then recompute the affected users' `user_embeddings`
    and `recommendations` rows (see llmrec_platform.live.refresh)."""
    batch = events.log().read(config.start_offset, until=config.end_offset)
    if batch.end != config.end_offset:
        raise dg.Failure(f"the event log holds complete events only up to byte {batch.end}, not {config.end_offset}: "
                         "was it truncated?")
    if batch.malformed:
        context.log.warning(f"{len(batch.malformed)} malformed lines skipped, e.g. {batch.malformed[0]!r}")
    store = warehouse.warehouse()
    recorded = record_events(store, batch)
    online = refresh_online_metrics(store, ImpressionLog(events.folder))
    if len(online):
        context.log.info(f"online_metrics: {int(online.loc[online['position'] == 0, 'impressions'].sum())} impressions")
    users = sorted(set(config.user_ids) or set(batch.user_ids))
    erased = events.log().erased.current()  # named in the run config but erased since, with no new event
    users = [u for u in users if u not in erased or u in batch.user_ids]
    if not users:
        context.log.info(f"events {config.start_offset}-{config.end_offset}: {recorded} recorded; no user to refresh")
        return
    result = RefreshResult(users)
    weight = experiment.user_text_weight if config.profile_weight is None else config.profile_weight
    refresh_user_embeddings(store, users, weight, config.half_life_days, events.event_weights, result)
    publication = latest_publication(store)
    if publication is None:
        result.notes.append("no published champion yet: recommendations are refreshed after the first publication")
        result.waiting = users
    else:
        trained = load_champion(artifacts_io, publication["ranker_asset"])
        refresh_recommendations(store, users, trained.ranker, experiment.top_k, events.event_weights, result)
    for note in result.notes:
        context.log.info(note)
    offsets = f"{config.start_offset}-{config.end_offset}"
    if result.embedded:
        yield dg.AssetMaterialization(asset_key="user_embeddings", description=f"users refreshed from events {offsets}",
                                      metadata={"refreshed_users": len(result.embedded), "events": recorded})
    if result.recommended:
        yield dg.AssetMaterialization(asset_key="recommendations", description=f"users re-ranked from events {offsets}",
                                      metadata={"refreshed_users": len(result.recommended),
                                                "ranker": publication["ranker"],
                                                "waiting_for_retrain": len(result.waiting)})
    context.log.info(f"events {offsets}: {recorded} recorded; {len(result.embedded)} embeddings and "
                     f"{len(result.recommended)} recommendation lists refreshed; {len(result.waiting)} users wait for "
                     "the nightly retrain")


@dg.job(name="events_refresh", description="Refresh the users touched by a batch of the event log (launched by events_sensor).")
def events_refresh_job():
    refresh_users_from_events()
