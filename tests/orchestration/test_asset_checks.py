"""Asset checks: the data-quality rules, the checks in a run, and the blocking champion gate."""

from datetime import UTC, datetime

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.quality import (
    embeddings_valid,
    expected_dim,
    ratings_ranges,
    ratings_schema,
    ratings_unique_keys,
    split_without_leakage,
)
from llmrec_platform.definitions import ALL_ASSETS, build_definitions, build_resources
from llmrec_platform.encoders.models import DEFAULT_MODEL
from llmrec_platform.evaluation.champion import HISTORY_TABLE, Publication, champion_gate, record_publication
from llmrec_platform.storage.warehouse import Warehouse

RATINGS = pd.DataFrame({"user_id": ["1", "1", "2"], "item_id": ["5", "6", "5"], "rating": [4.0, 3.5, 5.0],
                        "timestamp": np.array([10, 11, 12], dtype="int64")})


def check_names(defs: dg.Definitions) -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().asset_check_keys}


def test_every_check_is_defined(defs):
    assert check_names(defs) == {
        "raw_ratings:ratings_schema_check", "raw_ratings:ratings_range_check", "raw_ratings:ratings_unique_key_check",
        "item_embeddings:item_embeddings_check", "split:split_leakage_check", "evaluation_report:champion_not_regressed",
    }
    blocking = {k.to_user_string() for k, spec in
                ((key, defs.resolve_asset_graph().get_check_spec(key)) for key in defs.resolve_asset_graph().asset_check_keys)
                if spec.blocking}
    assert blocking == {"evaluation_report:champion_not_regressed"}


def test_ratings_rules():
    assert ratings_schema(RATINGS.assign(dataset="x")).passed
    assert not ratings_schema(RATINGS.astype({"timestamp": "float64"})).passed
    assert not ratings_schema(RATINGS[["item_id", "user_id", "rating", "timestamp"]]).passed
    assert ratings_ranges(RATINGS).passed
    assert not ratings_ranges(RATINGS.assign(rating=[4.0, 0.0, 5.0])).passed
    assert not ratings_ranges(RATINGS, window=(11, 20)).passed
    assert ratings_unique_keys(RATINGS).passed
    twice = ratings_unique_keys(pd.concat([RATINGS, RATINGS.iloc[[0]]]))
    assert not twice.passed and twice.metadata["duplicated_keys"] == 1


def test_embedding_rules():
    vectors = np.eye(3, 4, dtype=np.float32)
    frame = pd.DataFrame({"item_id": ["a", "b", "c"], "embedding": list(vectors)})
    assert embeddings_valid(frame, 4).passed
    assert "dimension" in embeddings_valid(frame, 384).description
    assert "norm" in embeddings_valid(frame.assign(embedding=list(vectors * 2)), 4).description
    broken = vectors.copy()
    broken[1, 0] = np.nan
    assert "NaN" in embeddings_valid(frame.assign(embedding=list(broken)), 4).description
    assert expected_dim(DEFAULT_MODEL) == 384


def test_split_rules():
    split = pd.DataFrame({"user_id": ["1", "1", "1", "2"], "item_id": ["a", "b", "c", "a"],
                          "fold": ["train", "valid", "test", "train"]})
    assert split_without_leakage(split).passed
    leaked = pd.concat([split, pd.DataFrame({"user_id": ["1"], "item_id": ["a"], "fold": ["test"]})])
    assert "more than one fold" in split_without_leakage(leaked).description
    cold_user = pd.concat([split, pd.DataFrame({"user_id": ["3"], "item_id": ["a"], "fold": ["test"]})])
    assert "no training" in split_without_leakage(cold_user).description


def test_champion_gate_rule():
    assert champion_gate("ease", 0.30, None, 0.02).passed
    last = {"valid_score": 0.31, "ranker": "ease", "run_id": "r1"}
    assert champion_gate("ease", 0.295, last, 0.02).passed
    decision = champion_gate("ease", 0.25, last, 0.02)
    assert not decision.passed and "LLMREC_CHAMPION_TOLERANCE" in decision.description


def test_a_failing_ratings_check_is_reported(home, tmp_path, instance, monkeypatch):
    dataset = tmp_path / "dup-ml"
    dataset.mkdir()
    (dataset / "u.data").write_text("1\t1\t4\t880000000\n1\t1\t4\t880000000\n2\t1\t3\t880000100\n")
    (dataset / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 19) + "\n")
    # The loader quarantines a repeated key (issue 11); let it slip through to show the check reports it.
    from llmrec_platform.data import datasets

    monkeypatch.setattr(datasets, "check_ratings", lambda ratings, *a, **k: (
        ratings.select(datasets.RATINGS_COLUMNS), datasets.empty_quarantine()))
    datasets._load_memo.cache_clear()
    result = dg.materialize(
        ALL_ASSETS, selection=dg.AssetSelection.assets("raw_ratings"), instance=instance, partition_key="1997-11-01",
        resources=build_resources(home, dataset=str(dataset)),
    )
    assert result.success  # non-blocking checks report, they do not fail the run
    outcomes = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert outcomes == {"ratings_schema_check": True, "ratings_range_check": True, "ratings_unique_key_check": False}


def _publish_fake(store: Warehouse, dataset: str, score: float) -> None:
    record_publication(store, Publication(
        run_id="earlier-run", ranker="popularity", ranker_asset="popularity_ranker", metric="ndcg@10",
        valid_score=score, dataset=dataset, protocol="recbole", cold_items=0.0,
        published_at=datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)))


def test_a_regressing_champion_is_not_published(trained_home, pipeline_run, instance):
    store = Warehouse(trained_home.warehouse)
    history = store.read(HISTORY_TABLE)
    recommendations = store.read("recommendations")
    # Pretend an earlier publication scored far higher than anything the tiny data allows.
    store.replace(HISTORY_TABLE, history.iloc[0:0])
    _publish_fake(store, str(pipeline_run.dataset), 0.99)
    defs = build_definitions(build_resources(trained_home, dataset=str(pipeline_run.dataset), device="cpu"))
    selection = dg.AssetSelection.assets("evaluation_report", "recommendations")
    blocked = dg.materialize(ALL_ASSETS, selection=selection, instance=instance, raise_on_error=False,
                             resources=defs.resources)
    assert not blocked.success
    [gate] = blocked.get_asset_check_evaluations()
    assert gate.check_name == "champion_not_regressed" and not gate.passed
    assert gate.metadata["last_published_score"].value == pytest.approx(0.99)
    assert blocked.asset_materializations_for_node("evaluation_report")
    assert not blocked.asset_materializations_for_node("recommendations")
    assert len(store.read(HISTORY_TABLE)) == 1  # nothing new was published
    pd.testing.assert_frame_equal(store.read("recommendations"), recommendations)
    # Accepting the regression for one run: the check's tolerance config.
    accepted = dg.materialize(
        ALL_ASSETS, selection=selection, instance=instance, resources=defs.resources,
        run_config={"ops": {"evaluation_report_champion_not_regressed": {"config": {"tolerance": 1.0}}}})
    assert accepted.success and accepted.asset_materializations_for_node("recommendations")
    assert len(store.read(HISTORY_TABLE)) == 2


def test_the_nightly_retrain_runs_the_gate(defs):
    checks = defs.resolve_job_def("nightly_retrain").asset_layer.asset_graph.asset_check_keys
    assert dg.AssetCheckKey(dg.AssetKey("evaluation_report"), "champion_not_regressed") in checks


def test_ratings_rules_read_arrow_as_the_warehouse_hands_it():
    import pyarrow as pa

    table = pa.Table.from_pandas(RATINGS, preserve_index=False)
    for rule in (ratings_schema, ratings_ranges, ratings_unique_keys):
        assert rule(table) == rule(RATINGS) and rule(table).passed
    floats = table.set_column(3, "timestamp", table["timestamp"].cast(pa.float64()))
    assert "timestamp is double" in ratings_schema(floats).description
    nulls = table.set_column(2, "rating", pa.array([4.0, None, 5.0]))
    assert "null values {'rating': 1}" in ratings_schema(nulls).description
    assert ratings_ranges(nulls).metadata["ratings_out_of_range"] == 1  # a missing rating is not in range
    rows = pa.table({"user_id": ["u1", "u2", "u2", "u1", "u2"], "item_id": ["a", "b", "b", "a", "b"],
                     "rating": [4.0] * 5, "timestamp": [1, 5, 5, 1, 5]})
    twice = ratings_unique_keys(rows)
    assert twice.metadata["duplicated_keys"] == 2 and "e.g. u1/a/1" in twice.description  # first in row order
    split = pa.table({"user_id": ["1", "1", "2"], "item_id": ["a", "a", "b"], "fold": ["train", "test", "valid"]})
    outcome = split_without_leakage(split)
    assert not outcome.passed and outcome.metadata["pairs_in_several_folds"] == 1
    assert outcome.metadata["eval_users_without_train"] == 1 and "['2']" in outcome.description


def test_split_reaches_the_checks_the_popularity_table_and_a_ranker_in_arrow(defs, home, tiny_dataset_dir, monkeypatch):
    import pyarrow as pa

    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.storage.tracking import data_fingerprint
    from tests.orchestration.conftest import month_range, range_tags

    inputs, from_split = [], InteractionData.from_split.__func__
    monkeypatch.setattr(InteractionData, "from_split", classmethod(
        lambda cls, split, **kw: inputs.append(type(split)) or from_split(cls, split, **kw)))

    job = dg.define_asset_job("to_popularity", selection=dg.AssetSelection.assets(
        "raw_ratings", "raw_items", "interactions", "split", "item_popularity", "popularity_ranker"))
    result = dg.Definitions.merge(defs, dg.Definitions(jobs=[job])).resolve_job_def("to_popularity").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), tags=range_tags(*month_range(tiny_dataset_dir)))
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"ratings_schema_check": True, "ratings_range_check": True, "ratings_unique_key_check": True,
                      "split_leakage_check": True}
    store = Warehouse(home.warehouse)
    split = store.read("split")
    ranker = result.output_for_node("popularity_ranker")
    assert inputs == [pa.Table]  # the ranker's matrices come from Arrow, not from a DataFrame of strings
    assert ranker.data_fingerprint == data_fingerprint(split)  # the Arrow input hashes as its pandas form did
    popularity = store.read("item_popularity").set_index("item_id")["interactions"]
    assert popularity.loc[ranker.ranker.item_ids_].tolist() == ranker.ranker.popularity_.astype(int).tolist()
