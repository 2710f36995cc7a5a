"""The ingest assets: each writes its part of the quarantine, owns it (a fixed file leaves none of its old
rows), reports the counts in its metadata, and fails only above the error budget."""

import dagster as dg
import pytest

from llmrec_platform.assets.ingest import raw_items, raw_ratings, raw_users
from llmrec_platform.definitions import build_resources
from llmrec_platform.resources import DatasetResource
from llmrec_platform.storage.warehouse import Warehouse
from tests.orchestration.conftest import month_range


def materialize(home, dataset_dir, budget=None):
    resources = build_resources(home, dataset=str(dataset_dir), device="cpu")
    resources["dataset"] = DatasetResource(source=str(dataset_dir), error_budget=budget)
    key = month_range(dataset_dir)[0]
    ratings = dg.materialize([raw_ratings], partition_key=key, resources=resources, raise_on_error=False)
    catalogue = dg.materialize([raw_items, raw_users], resources=resources, raise_on_error=False)
    return ratings, catalogue


def metadata(result, asset):
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture
def bad_rows(tiny_dataset_dir):
    ratings = tiny_dataset_dir / "u.data"
    original = ratings.read_text()
    lines = original.splitlines()
    lines[1] += "\t99"  # five fields
    lines[2] = "5\t3\t9\t881250949"  # rating outside [0.5, 5]
    ratings.write_text("\n".join(lines) + "\n")
    users = tiny_dataset_dir / "u.user"
    user_lines = users.read_text().splitlines()
    users.write_text("\n".join(user_lines + [user_lines[0]]) + "\n")  # a repeated user id
    return original


def test_quarantine_rows_belong_to_the_load_that_made_them(home, tiny_dataset_dir, bad_rows):
    ratings, catalogue = materialize(home, tiny_dataset_dir)
    assert ratings.success and catalogue.success
    store = Warehouse(home.warehouse)
    rows = store.query("SELECT part, row_number, field, reason FROM quarantine ORDER BY part, row_number")
    assert rows[rows["part"] == "ratings"]["row_number"].tolist() == [2, 3]
    assert rows[rows["part"] == "users"]["reason"].str.startswith("repeated user_id").tolist() == [True]
    meta = metadata(ratings, "raw_ratings")
    assert meta["quarantined"] == 2 and meta["error_budget"] == 0.05
    assert "wrong number of fields" in meta["quarantine_summary"]
    assert metadata(catalogue, "raw_users")["quarantined"] == 1
    # The ratings file is fixed: re-loading it leaves none of its old rows (the users file is still bad).
    (tiny_dataset_dir / "u.data").write_text(bad_rows)
    ratings, _ = materialize(home, tiny_dataset_dir)
    assert ratings.success and metadata(ratings, "raw_ratings")["quarantined"] == 0
    parts = store.query("SELECT part, count(*) AS n FROM quarantine GROUP BY part")
    assert dict(zip(parts["part"], parts["n"], strict=True)) == {"users": 1}


def test_a_run_fails_only_above_the_error_budget(home, tiny_dataset_dir, bad_rows):
    ratings, _ = materialize(home, tiny_dataset_dir, budget=0.001)
    assert not ratings.success
    failure = next(e for e in ratings.all_events if e.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert f"{tiny_dataset_dir / 'u.data'}: 2 of" in message and "above the error budget of 0.1%" in message
    assert "SELECT source_file, row_number, field, reason, raw FROM quarantine" in message
    # The rejected rows are written before the run fails: nothing is lost.
    assert len(Warehouse(home.warehouse).read("quarantine", "part = 'ratings'")) == 2


def test_the_cli_summary_line_names_the_counts_and_the_query(home, tiny_dataset_dir, bad_rows):
    from llmrec_platform.data.quarantine import load_summary

    store = Warehouse(home.warehouse)
    assert load_summary(store, str(tiny_dataset_dir)) == "quarantine: no rows rejected"
    materialize(home, tiny_dataset_dir)
    line = load_summary(store, str(tiny_dataset_dir))
    assert line.startswith("quarantine: 3 rows rejected (ratings 2, users 1); see them: duckdb ")
    assert f"WHERE dataset = '{tiny_dataset_dir}'" in line


def test_the_temporal_protocol_is_refused_without_timestamps(home, tmp_path):
    import yaml

    from tests.shop_data import write_shop

    config = write_shop(tmp_path / "shop")
    raw = yaml.safe_load(config.read_text())
    del raw["interactions"]["timestamp"]
    config.write_text(yaml.safe_dump(raw, allow_unicode=True))
    resources = build_resources(home, dataset=str(config), protocol="temporal", device="cpu")
    result = dg.materialize([raw_ratings], partition_key="2000-01-01", resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "has no timestamps" in failure.step_failure_data.user_failure_data.description
    recbole = build_resources(home, dataset=str(config), protocol="recbole", device="cpu")
    result = dg.materialize([raw_ratings], partition_key="2000-01-01", resources=recbole)
    assert metadata(result, "raw_ratings")["users"] == 30  # every interaction sits in the 2000-01 partition
