import warnings

import dagster as dg

from llmrec_platform.data.specs import PARTITIONS_START  # loaders quarantine ratings outside the partitions

# backfill_policy is marked beta; it is the documented way to ingest a partition range in one run.
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)

# Monthly windows over rating timestamps; 1995 precedes every MovieLens release. The current month is
# included so that freshly landed ratings have a partition.
monthly_partitions = dg.MonthlyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1, timezone="UTC")
