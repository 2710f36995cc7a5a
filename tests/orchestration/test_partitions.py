"""Monthly ratings partitions: the `ingest_ratings` job, idempotent re-runs and single-run ranges."""

import dagster as dg
import pandas as pd

from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.storage.warehouse import Warehouse
from tests.orchestration.conftest import month_range, range_tags


def dataset_rows_between(dataset_dir, start_key: str, end_key: str) -> pd.DataFrame:
    ratings = load_dataset(str(dataset_dir)).ratings
    start = monthly_partitions.time_window_for_partition_key(start_key).start.timestamp()
    end = monthly_partitions.time_window_for_partition_key(end_key).end.timestamp()
    return ratings[(ratings["timestamp"] >= start) & (ratings["timestamp"] < end)]


def ratings_table(home) -> pd.DataFrame:
    return Warehouse(home.warehouse).read("ratings")


def test_ingest_ratings_is_a_partitioned_job_of_raw_ratings_only(defs):
    job = defs.resolve_job_def("ingest_ratings")
    assert job.partitions_def == monthly_partitions
    assert {k.to_user_string() for k in job.asset_layer.selected_asset_keys} == {"raw_ratings"}
    assert defs.resolve_assets_def("raw_ratings").backfill_policy == dg.BackfillPolicy.single_run()


def test_one_partition_twice_writes_its_rows_once(defs, home, tiny_dataset_dir):
    first, _ = month_range(tiny_dataset_dir)
    key = monthly_partitions.get_next_partition_key(first)  # a full month of the tiny dataset
    job = defs.resolve_job_def("ingest_ratings")
    expected = dataset_rows_between(tiny_dataset_dir, key, key)
    assert len(expected) > 10
    counts = []
    for _ in range(2):
        result = job.execute_in_process(partition_key=key, instance=dg.DagsterInstance.ephemeral())
        assert result.success
        [materialization] = result.asset_materializations_for_node("raw_ratings")
        assert materialization.partition == key
        table = ratings_table(home)
        counts.append(len(table))
        assert not table.duplicated(["user_id", "item_id", "timestamp"]).any()
    assert counts == [len(expected), len(expected)]
    # The window holds exactly the dataset's rows of that month.
    got = ratings_table(home).sort_values(["user_id", "item_id", "timestamp"]).reset_index(drop=True)
    want = expected.sort_values(["user_id", "item_id", "timestamp"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)


def test_a_range_in_one_run_writes_exactly_that_range(defs, home, tiny_dataset_dir):
    first, last = month_range(tiny_dataset_dir)
    keys = monthly_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    start, end = keys[1], keys[-2]  # a range inside the data, so rows on both sides stay out
    assert start < end
    result = defs.resolve_job_def("ingest_ratings").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=range_tags(start, end))
    assert result.success
    partitions = {m.partition for m in result.asset_materializations_for_node("raw_ratings")}
    assert partitions == set(monthly_partitions.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))
    table = ratings_table(home)
    assert len(table) == len(dataset_rows_between(tiny_dataset_dir, start, end))
    window_start = monthly_partitions.time_window_for_partition_key(start).start.timestamp()
    window_end = monthly_partitions.time_window_for_partition_key(end).end.timestamp()
    assert table["timestamp"].between(window_start, window_end - 1).all()
    # Re-running the same range replaces it.
    again = defs.resolve_job_def("ingest_ratings").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=range_tags(start, end))
    assert again.success and len(ratings_table(home)) == len(table)
