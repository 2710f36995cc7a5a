"""The code location lists the operating surface: partitions, jobs, schedules, sensors and asset checks.
(`dagster definitions validate -w workspace.yaml` itself runs in tests/test_definitions.py.)"""

import dagster as dg

from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.definitions import defs


def test_partitions_jobs_schedules_sensors_and_checks_are_listed():
    repo = defs.get_repository_def()
    assert defs.resolve_assets_def("raw_ratings").partitions_def == monthly_partitions
    assert {"full_pipeline", "ingest_ratings", "nightly_retrain", "ingest_landed_file", "events_refresh"} <= {
        job.name for job in repo.get_all_jobs()}
    assert {s.name for s in repo.schedule_defs} == {"nightly_retrain", "monthly_ratings_ingest"}
    assert {"landing_sensor", "events_sensor"} <= {s.name for s in repo.sensor_defs}
    assert repo.get_sensor_def("landing_sensor").job_name == "ingest_landed_file"
    assert repo.get_sensor_def("events_sensor").job_name == "events_refresh"
    checks = {k.to_user_string() for k in defs.resolve_asset_graph().asset_check_keys}
    assert checks == {
        "raw_ratings:ratings_schema_check", "raw_ratings:ratings_range_check", "raw_ratings:ratings_unique_key_check",
        "item_embeddings:item_embeddings_check", "split:split_leakage_check", "evaluation_report:champion_not_regressed",
    }
    # Nothing fires by itself on a fresh instance: operators turn schedules and sensors on.
    for instigator in [*repo.schedule_defs, *repo.sensor_defs]:
        assert instigator.default_status.value == "STOPPED"


def test_catalogue_assets_are_eager_and_the_automation_sensor_exists():
    graph = defs.resolve_asset_graph()
    for key in ("item_texts", "user_texts", "item_embeddings"):
        assert graph.get(dg.AssetKey(key)).automation_condition is not None
    for key in ("split", "popularity_ranker", "recommendations"):
        assert graph.get(dg.AssetKey(key)).automation_condition is None
    assert "default_automation_condition_sensor" in {s.name for s in defs.get_repository_def().sensor_defs}
