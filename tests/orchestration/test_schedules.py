"""Schedules: the nightly retrain (cron and time zone from the settings) and monthly ingestion."""

from datetime import UTC, datetime

import dagster as dg

from llmrec_platform.orchestration.jobs import ingest_ratings_job
from llmrec_platform.orchestration.schedules import build_nightly_retrain_schedule, monthly_ingest_schedule
from llmrec_platform.settings import Settings


def test_nightly_retrain_defaults_to_two_am_utc(defs):
    schedule = defs.resolve_schedule_def("nightly_retrain")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == "nightly_retrain"


def test_nightly_retrain_reads_cron_and_time_zone_from_the_settings(instance):
    settings = Settings.from_env({"LLMREC_RETRAIN_CRON": "30 3 * * 1-5", "LLMREC_TIMEZONE": "Europe/Berlin"})
    schedule = build_nightly_retrain_schedule(settings)
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 3 * * 1-5", "Europe/Berlin")
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 11, 23, 2, 30, tzinfo=UTC))
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key is None


def test_nightly_retrain_rebuilds_the_split_and_republishes(defs):
    selected = {k.to_user_string() for k in defs.resolve_job_def("nightly_retrain").asset_layer.selected_asset_keys}
    assert {"popularity_ranker", "llm_content_ranker", "evaluation_report", "recommendations"} <= selected
    assert {"interactions", "split", "user_embeddings"} <= selected
    assert not {"raw_ratings", "raw_items", "item_embeddings"} & selected


def test_monthly_ingest_requests_the_month_that_just_closed(defs, instance):
    schedule = defs.resolve_schedule_def("monthly_ratings_ingest")
    # Same cadence as build_schedule_from_partitioned_job derives from the job's monthly partitions.
    derived = dg.build_schedule_from_partitioned_job(ingest_ratings_job, hour_of_day=1)
    resolved = dg.Definitions(assets=defs.assets, jobs=[ingest_ratings_job], schedules=[derived], resources=defs.resources)
    derived = resolved.resolve_schedule_def(derived.name)
    assert (schedule.cron_schedule, schedule.execution_timezone) == (derived.cron_schedule, derived.execution_timezone)
    tick = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
    [request] = schedule.evaluate_tick(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def())).run_requests
    assert request.partition_key == "2026-11-01" and request.run_key == "2026-11-01"
    assert schedule.job_name == "ingest_ratings"
    # What the derived schedule would have asked for: the month that starts that day (end_offset=1).
    [derived_request] = derived.evaluate_tick(dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=resolved.get_repository_def())).run_requests
    assert derived_request.partition_key == "2026-12-01"


def test_monthly_ingest_year_boundary(instance):
    tick = datetime(2027, 1, 1, 1, 0, tzinfo=UTC)
    request = monthly_ingest_schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))
    assert request.partition_key == "2026-12-01"
