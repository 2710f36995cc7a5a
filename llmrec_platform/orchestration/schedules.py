"""Schedules: the nightly retrain (cron and time zone from the settings) and monthly ingestion."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.orchestration.jobs import ingest_ratings_job, nightly_retrain_job
from llmrec_platform.settings import Settings


def build_nightly_retrain_schedule(settings: Settings) -> dg.ScheduleDefinition:
    """The nightly retrain at the settings' cron and time zone (the code location passes its settings)."""
    return dg.ScheduleDefinition(
        name="nightly_retrain",
        job=nightly_retrain_job,
        cron_schedule=settings.retrain_cron,
        execution_timezone=settings.timezone,
        description=f"Retrain and republish at `{settings.retrain_cron}` ({settings.timezone}); "
                    "set LLMREC_RETRAIN_CRON / LLMREC_TIMEZONE to change it.",
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )


# Monthly ingestion of the partitioned job, on the cadence `build_schedule_from_partitioned_job` derives from
# its partitions (01:00 on the 1st, in the partitions' time zone, UTC). That helper requests the *last*
# partition, and ours include the running month (end_offset=1, so landed ratings of this month have a
# partition): at 01:00 on the 1st it would ingest the month that has just begun, still empty. This schedule
# requests the month that has just closed instead.
@dg.schedule(
    name="monthly_ratings_ingest",
    job=ingest_ratings_job,
    cron_schedule=monthly_partitions.get_cron_schedule(hour_of_day=1),
    execution_timezone=monthly_partitions.timezone,
    description="At 01:00 UTC on the 1st of every month, ingest the month that has just closed (one partition of raw_ratings).",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def monthly_ingest_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    closed_month = (context.scheduled_execution_time or datetime.now(UTC)) - timedelta(days=1)
    key = monthly_partitions.get_partition_key_for_timestamp(closed_month.timestamp())
    return dg.RunRequest(run_key=key, partition_key=key, tags={"llmrec/trigger": "monthly_ingest"})
