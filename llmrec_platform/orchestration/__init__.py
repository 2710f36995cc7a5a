"""Operating the graph: jobs, schedules, sensors and asset checks (the Dagster side of operations).

The domain logic they call lives in Dagster-free modules: `llmrec_platform.data.landing`,
`.data.quality`, `.live.events`, `.live.refresh`, `.evaluation.champion` and `.settings`.
"""

from llmrec_platform.orchestration.checks import ASSET_CHECKS
from llmrec_platform.orchestration.jobs import (
    events_refresh_job,
    ingest_landed_file_job,
    ingest_ratings_job,
    nightly_retrain_job,
)
from llmrec_platform.orchestration.schedules import build_nightly_retrain_schedule, monthly_ingest_schedule
from llmrec_platform.orchestration.sensors import erasure_refit_sensor, events_sensor, landing_sensor

__all__ = [
    "ASSET_CHECKS",
    "build_nightly_retrain_schedule",
    "erasure_refit_sensor",
    "events_refresh_job",
    "events_sensor",
    "ingest_landed_file_job",
    "ingest_ratings_job",
    "landing_sensor",
    "monthly_ingest_schedule",
    "nightly_retrain_job",
]
