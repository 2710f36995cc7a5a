"""Sensors: ratings files dropped into LLMREC_HOME/landing/, and new events in the event log.

Both keep their progress in the sensor cursor (stored by the Dagster instance, so it survives restarts)
and put a run_key on every request, so the daemon never launches the same work twice. They name their jobs
(`ingest_landed_file`, `events_refresh`, defined in `jobs.py` and listed in the Definitions) rather than
holding them, so Dagster does not rebuild them when it binds resources.
"""

import json

import dagster as dg

from llmrec_platform.data.landing import pending_files
from llmrec_platform.erasure.forget import refit_waiting
from llmrec_platform.resources import EventLogResource, HomeResource


@dg.sensor(
    job_name="ingest_landed_file", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
    description="One ingestion run per ratings file (CSV/Parquet: user_id,item_id,rating,timestamp) dropped into "
                "LLMREC_HOME/landing/. Write files under a temporary name (.tmp, .part or a leading dot) and rename.",
)
def landing_sensor(context: dg.SensorEvaluationContext, home: HomeResource) -> dg.SensorResult:
    # Cursor: {file name: signature} of the files already requested that are still in the folder. A file
    # leaves the cursor once its run moves it away; dropping a file of the same name again requests it again.
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    landing = home.paths().landing
    files = pending_files(landing)
    current = {f.name: f.signature for f in files}
    run_requests = [
        dg.RunRequest(
            run_key=f"landing:{f.name}:{current[f.name]}",
            run_config={"ops": {"ingest_landed_ratings": {"config": {"path": str(f.path)}}}},
            tags={"llmrec/landed_file": f.name},
        )
        for f in files if requested.get(f.name) != current[f.name]
    ]
    cursor = json.dumps(current, sort_keys=True)
    if not run_requests:
        return dg.SensorResult(skip_reason=f"no new files in {landing}", cursor=cursor)
    return dg.SensorResult(run_requests=run_requests, cursor=cursor)


@dg.sensor(
    job_name="events_refresh", minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.STOPPED,
    description="One refresh run per batch of new events in LLMREC_HOME/events/events.jsonl (at most "
                "LLMREC_EVENTS_BATCH events): the affected users' embeddings and recommendations are recomputed.",
)
def events_sensor(context: dg.SensorEvaluationContext, events: EventLogResource) -> dg.SensorResult:
    # Cursor: {"offset": byte offset in the event log up to which events have been requested}.
    offset = int(json.loads(context.cursor)["offset"]) if context.cursor else 0
    batch = events.log().read(offset, max_events=events.max_batch)
    cursor = json.dumps({"offset": batch.end})
    if batch.malformed:
        context.log.warning(f"event log bytes {batch.start}-{batch.end}: {len(batch.malformed)} malformed lines skipped")
    if not batch.events:
        return dg.SensorResult(skip_reason=f"no new events after byte {offset}", cursor=cursor)
    request = dg.RunRequest(
        run_key=f"events:{batch.start}-{batch.end}",
        run_config={"ops": {"refresh_users_from_events": {"config": {
            "start_offset": batch.start, "end_offset": batch.end, "user_ids": batch.user_ids}}}},
        tags={"llmrec/events": str(len(batch.events)), "llmrec/users": str(len(batch.user_ids))},
    )
    return dg.SensorResult(run_requests=[request], cursor=cursor)


@dg.sensor(
    job_name="nightly_retrain", minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.STOPPED,
    description="A retrain run when `llmrec forget` has erased a user from rankers that keep what they learned from "
                "them beyond their own row (EASE, item-kNN, factor models, Mult-VAE, the hybrid): "
                "LLMREC_HOME/erasure/refit.json.",
)
def erasure_refit_sensor(context: dg.SensorEvaluationContext, home: HomeResource) -> dg.SensorResult:
    # Cursor: the `requested_at` of the last refit requested; a later erasure requests another.
    waiting = refit_waiting(home.paths().erasure)
    if waiting is None or waiting["requested_at"] == context.cursor:
        return dg.SensorResult(skip_reason="no erasure waits for a refit", cursor=context.cursor)
    request = dg.RunRequest(run_key=f"erasure-refit:{waiting['requested_at']}",
                            tags={"llmrec/trigger": "erasure", "llmrec/refit": ",".join(waiting["models"])})
    return dg.SensorResult(run_requests=[request], cursor=waiting["requested_at"])
