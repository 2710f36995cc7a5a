"""Ratings files dropped into LLMREC_HOME/landing/: the sensor, the ingestion job, the domain rules."""

import codecs
import json

import dagster as dg
import pandas as pd
import pytest

from llmrec_platform.assets.partitions import monthly_partitions
from llmrec_platform.data.landing import LANDED_TABLE, ingest_landed_file, pending_files, read_ratings_file
from llmrec_platform.definitions import build_definitions, build_resources
from llmrec_platform.orchestration.sensors import landing_sensor
from llmrec_platform.paths import Paths
from llmrec_platform.resources import DatasetResource
from llmrec_platform.storage.warehouse import Warehouse
from tests.orchestration.conftest import month_range

NOV_1997 = 880_000_000  # 1997-11-20, inside the tiny dataset's months

GOOD_CSV = (
    "user_id,item_id,rating,timestamp\n"
    f"1,2,4,{NOV_1997}\n"
    f"1,3,5,{NOV_1997 + 60}\n"
    f"900,7,3.5,{NOV_1997 + 120}\n"
    f"2,5,9,{NOV_1997}\n"  # rating out of range
    f"2,6,4,not-a-time\n"  # bad timestamp
    f",6,4,{NOV_1997}\n"  # empty user
    f"1,2,4,{NOV_1997}\n"  # repeats the first row's key
    "3,4,4,100\n"  # 1970: before the first partition
)


@pytest.fixture
def lenient_defs(home, tiny_dataset_dir) -> dg.Definitions:
    """GOOD_CSV has 5 bad rows of 8: far above the default error budget (5%)."""
    resources = build_resources(home, dataset=str(tiny_dataset_dir), device="cpu")
    resources["dataset"] = DatasetResource(source=str(tiny_dataset_dir), error_budget=1.0)
    return build_definitions(resources)


def tick(instance, home, cursor=None) -> dg.SensorResult:
    resources = {"home": build_resources(home)["home"]}
    return landing_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))


def ingest_run(defs, request: dg.RunRequest, instance):
    return defs.resolve_job_def("ingest_landed_file").execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags, raise_on_error=False)


def test_one_request_per_new_file_and_none_on_the_next_tick(home, instance):
    landing = home.landing
    (landing / "a.csv").write_text(GOOD_CSV)
    pd.DataFrame({"user_id": ["5"], "item_id": ["9"], "rating": [4.0], "timestamp": [NOV_1997]}).to_parquet(
        landing / "b.parquet")
    (landing / ".c.csv").write_text(GOOD_CSV)  # still being written
    (landing / "d.csv.part").write_text(GOOD_CSV)
    (landing / "notes.txt").write_text("not ratings")
    first = tick(instance, home)
    assert [r.tags["llmrec/landed_file"] for r in first.run_requests] == ["a.csv", "b.parquet"]
    assert len({r.run_key for r in first.run_requests}) == 2
    assert first.run_requests[0].run_config["ops"]["ingest_landed_ratings"]["config"]["path"] == str(landing / "a.csv")
    second = tick(instance, home, first.cursor)
    assert second.run_requests == [] and second.skip_reason
    # A new file: only it. The same name dropped again with new content: requested again.
    (landing / "e.csv").write_text(GOOD_CSV)
    (landing / "a.csv").unlink()
    third = tick(instance, home, second.cursor)
    assert [r.tags["llmrec/landed_file"] for r in third.run_requests] == ["e.csv"]
    assert "a.csv" not in json.loads(third.cursor)
    (landing / "a.csv").write_text(GOOD_CSV + f"4,4,4,{NOV_1997}\n")
    fourth = tick(instance, home, third.cursor)
    assert [r.tags["llmrec/landed_file"] for r in fourth.run_requests] == ["a.csv"]
    assert fourth.run_requests[0].run_key not in {r.run_key for r in first.run_requests}


def test_the_sensor_watches_the_home_it_is_given_not_the_environment(home, tmp_path, instance):
    (home.landing / "a.csv").write_text(GOOD_CSV)  # home is also LLMREC_HOME here
    other = Paths(tmp_path / "other").ensure()
    (other.landing / "b.csv").write_text(GOOD_CSV)
    context = dg.build_sensor_context(instance=instance, resources={"home": build_resources(other)["home"]})
    assert [r.tags["llmrec/landed_file"] for r in landing_sensor(context).run_requests] == ["b.csv"]


def test_ingestion_loads_good_rows_quarantines_bad_ones_and_moves_the_file(lenient_defs, home, instance):
    defs = lenient_defs
    (home.landing / "a.csv").write_text(GOOD_CSV)
    [request] = tick(instance, home).run_requests
    result = ingest_run(defs, request, instance)
    assert result.success
    store = Warehouse(home.warehouse)
    ratings = store.read("ratings")
    assert sorted(zip(ratings["user_id"], ratings["item_id"], strict=True)) == [("1", "2"), ("1", "3"), ("900", "7")]
    quarantine = store.read("quarantine").sort_values("row_number")
    assert quarantine["row_number"].tolist() == [5, 6, 7, 8, 9]  # CSV line numbers
    assert set(quarantine["source_file"]) == {"a.csv"}
    assert any("outside the partitioned range" in r for r in quarantine["reason"])
    assert not (home.landing / "a.csv").exists() and (home.landing / "processed" / "a.csv").exists()
    # The landing run records the monthly partition of raw_ratings it changed.
    [materialization] = result.asset_materializations_for_node("ingest_landed_ratings")
    assert materialization.asset_key == dg.AssetKey("raw_ratings")
    assert materialization.partition == monthly_partitions.get_partition_key_for_timestamp(NOV_1997)
    # Dropping the same file again (the run key differs: new mtime) rewrites instead of duplicating.
    (home.landing / "a.csv").write_text(GOOD_CSV)
    [again] = tick(instance, home).run_requests
    assert ingest_run(defs, again, instance).success
    assert len(store.read("ratings")) == 3 and len(store.read("quarantine")) == 5
    assert len(store.read(LANDED_TABLE)) == 3


def test_a_month_backfill_keeps_the_landed_rows(lenient_defs, home, instance, tiny_dataset_dir):
    defs = lenient_defs
    key = monthly_partitions.get_partition_key_for_timestamp(NOV_1997)
    ingest = defs.resolve_job_def("ingest_ratings")
    assert ingest.execute_in_process(partition_key=key, instance=instance).success
    before = len(Warehouse(home.warehouse).read("ratings"))
    (home.landing / "a.csv").write_text(GOOD_CSV)
    [request] = tick(instance, home).run_requests
    assert ingest_run(defs, request, instance).success
    after_landing = Warehouse(home.warehouse).read("ratings")
    assert len(after_landing) == before + 3
    assert ingest.execute_in_process(partition_key=key, instance=instance).success
    rebuilt = Warehouse(home.warehouse).read("ratings")
    assert len(rebuilt) == len(after_landing)
    assert not rebuilt.duplicated(["user_id", "item_id", "timestamp"]).any()
    assert set(rebuilt["dataset"]) == {str(tiny_dataset_dir)}
    assert month_range(tiny_dataset_dir)[0] <= key


@pytest.mark.parametrize("name, content, reason", [
    ("wrong.csv", "user,item,stars,when\n1,2,4,5\n", "missing column"),
    ("empty.csv", "", "empty"),
    ("garbage.parquet", "this is not parquet", "cannot read"),
])
def test_an_unusable_file_is_rejected_with_a_reason(defs, home, instance, name, content, reason):
    (home.landing / name).write_text(content)
    [request] = tick(instance, home).run_requests
    result = ingest_run(defs, request, instance)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert reason in failure.step_failure_data.error.message or reason in str(failure.step_failure_data.user_failure_data)
    rejected = home.landing / "rejected" / name
    assert rejected.exists() and not (home.landing / name).exists()
    assert reason in (home.landing / "rejected" / f"{name}.reason.txt").read_text()
    assert not Warehouse(home.warehouse).has_table("ratings")


def test_domain_rules_without_dagster(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "sub").mkdir()
    (landing / "x.CSV").write_text(GOOD_CSV)
    assert [f.name for f in pending_files(landing)] == ["x.CSV"]
    raw, rejected = read_ratings_file(landing / "x.CSV")
    assert raw["_row"].iloc[0] == 2 and list(raw.columns[:4]) == ["user_id", "item_id", "rating", "timestamp"]
    assert rejected.empty
    store = Warehouse(tmp_path / "w.duckdb")
    result = ingest_landed_file(landing / "x.CSV", store, "ml-test", (0, 2_000_000_000), error_budget=1.0)
    # Without a partition range, the 1970 row is valid.
    assert (result.status, result.loaded, result.quarantined) == ("processed", 4, 4)
    with pytest.raises(FileNotFoundError, match="already ingested"):
        ingest_landed_file(landing / "x.CSV", store, "ml-test")


def test_one_malformed_row_no_longer_rejects_the_file(defs, home, instance):
    """A BOM, a five-field row, bytes that are not UTF-8 and an item the catalogue lacks: each of those rows
    is quarantined with its line and reason, the other rows load (the default budget is 5%)."""
    lines = ["user_id,item_id,rating,timestamp"] + [f"{u},{1 + u % 9},4,{NOV_1997 + u}" for u in range(1, 41)]
    lines.insert(5, f"1,2,4,{NOV_1997},extra")  # line 6
    body = ("\n".join(lines) + "\n").encode() + f"2,9\xff,4,{NOV_1997}\n".encode("latin-1")  # line 43
    (home.landing / "m.csv").write_bytes(codecs.BOM_UTF8 + body)
    [request] = tick(instance, home).run_requests
    assert ingest_run(defs, request, instance).success
    store = Warehouse(home.warehouse)
    assert len(store.read("ratings")) == 40
    assert store.query("SELECT count(*) AS n FROM ratings WHERE user_id LIKE '%' || chr(65279) || '%'")["n"][0] == 0
    quarantine = store.read("quarantine").sort_values("row_number")
    assert quarantine["row_number"].tolist() == [6, 43]
    assert quarantine["reason"].tolist()[0] == "wrong number of fields: expected 4, found 5"
    assert quarantine["reason"].tolist()[1] == "bytes not valid in utf-8"
    # The file is fixed and dropped again: none of its old quarantine rows stay.
    del lines[5]
    (home.landing / "m.csv").write_text("\n".join(lines) + "\n")
    [again] = tick(instance, home).run_requests
    assert ingest_run(defs, again, instance).success
    assert len(store.read("quarantine")) == 0 and len(store.read("ratings")) == 40


def test_a_file_above_the_error_budget_is_rejected_with_every_bad_row_listed(defs, home, instance):
    (home.landing / "a.csv").write_text(GOOD_CSV)  # 5 bad rows of 8
    [request] = tick(instance, home).run_requests
    result = ingest_run(defs, request, instance)
    assert not result.success
    reason = (home.landing / "rejected" / "a.csv.reason.txt").read_text()
    assert "5 of 8 rows are bad (62.5%), above the error budget of 5.0%" in reason
    assert "row 5, rating: rating outside [0.5, 5]" in reason and "row 9, timestamp" in reason
    assert not Warehouse(home.warehouse).has_table("ratings")


def test_landed_items_the_catalogue_lacks_are_quarantined(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    store = Warehouse(tmp_path / "w.duckdb")
    store.replace("items", pd.DataFrame({"item_id": ["1", "2"], "title": ["a", "b"]}))
    (landing / "x.csv").write_text(f"user_id,item_id,rating,timestamp\n1,1,4,{NOV_1997}\n1,3,4,{NOV_1997}\n")
    result = ingest_landed_file(landing / "x.csv", store, "ml-test", error_budget=1.0)
    assert (result.loaded, result.quarantined) == (1, 1)
    [row] = store.read("quarantine").itertuples()
    assert (row.row_number, row.field, row.reason) == (3, "item_id", "item not in the warehouse's items")
