"""The whole asset graph, materialized for real (Dagster, DuckDB, MiniLM, MLflow) on a tiny dataset."""

import duckdb
import mlflow
import pytest

from llmrec_platform.assets.rankers import RANKER_ASSETS
from llmrec_platform.cli import run_pipeline
from llmrec_platform.storage.warehouse import CONTRACT_TABLES


def materialization_metadata(result, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


@pytest.fixture
def first_run(llmrec_home, tiny_dataset_dir):
    paths, result = run_pipeline(str(tiny_dataset_dir), "recbole")
    return paths, result, tiny_dataset_dir


def test_graph_writes_the_warehouse_contract(first_run):
    paths, result, _ = first_run
    assert result.success
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert set(CONTRACT_TABLES) <= tables
        ndcg = dict(conn.execute(
            "SELECT ranker, value FROM evaluation_metrics WHERE fold='test' AND metric='ndcg' AND k=10 AND slice='all'"
        ).fetchall())
        assert {"popularity", "llm_content", "random"} <= set(ndcg)
        assert all(0.0 <= v <= 1.0 for v in ndcg.values())
        dims = conn.execute("SELECT DISTINCT len(embedding) FROM item_embeddings").fetchall()
        assert dims == [(384,)]
        n_users = conn.execute("SELECT count(DISTINCT user_id) FROM split").fetchone()[0]
        recs = conn.execute("SELECT count(*), count(DISTINCT user_id), max(rank) FROM recommendations").fetchone()
        assert recs[1] == n_users and recs[2] <= 20
        # Published lists never contain an item the user already interacted with.
        leaked = conn.execute(
            "SELECT count(*) FROM recommendations r JOIN split s USING (user_id, item_id)").fetchone()[0]
        assert leaked == 0
        fold_counts = dict(conn.execute("SELECT fold, count(*) FROM split GROUP BY fold").fetchall())
        assert set(fold_counts) == {"train", "valid", "test"}
    report = result.output_for_node("evaluation_report")
    assert report["champion"] in set(ndcg) - {"random"}
    assert report["valid_scores"][report["champion"]] == max(report["valid_scores"].values())
    assert (paths.reports / "latest.md").read_text().startswith("# Evaluation report")


def test_metadata_and_mlflow_runs(first_run):
    paths, result, _ = first_run
    meta = materialization_metadata(result, "item_embeddings")
    assert meta["device"] == "cpu" and meta["dim"] == 384 and meta["encoded"] > 0 and meta["cached"] == 0
    assert meta["items_per_second"] > 0
    assert 0.0 <= materialization_metadata(result, "item_texts")["omdb_match_rate"] <= 1.0
    run_id = materialization_metadata(result, "llm_content_ranker")["mlflow_run_id"]
    run = mlflow.tracking.MlflowClient(paths.mlflow_uri).get_run(run_id)
    assert run.data.params["data_fingerprint"] == materialization_metadata(result, "llm_content_ranker")["data_fingerprint"]
    assert "valid_ndcg_at_10" in run.data.metrics and "test_all_ndcg_at_10" in run.data.metrics
    assert "report" in materialization_metadata(result, "evaluation_report")


def test_second_run_encodes_nothing_and_is_reproducible(first_run):
    paths, result, dataset_dir = first_run
    _, again = run_pipeline(str(dataset_dir), "recbole")
    meta = materialization_metadata(again, "item_embeddings")
    assert meta["encoded"] == 0 and meta["cached"] > 0
    # Unchanged inputs: every ranker, the evaluation suite and the ablation table come from the fit cache.
    cached_assets = [*RANKER_ASSETS, "evaluation_report", "hybrid_ablation"]
    assert {name: materialization_metadata(again, name)["fit_cache"] for name in cached_assets} == \
        dict.fromkeys(cached_assets, "hit")
    assert {p.parent.name for p in (paths.fit_cache).glob("*/*.pkl")} >= {
        "hybrid_ablation", "evaluation_suite", "hybrid_pseudo_multvae"}
    first = result.output_for_node("evaluation_report")["metrics"]
    second = again.output_for_node("evaluation_report")["metrics"]
    assert first.sort_values(["ranker", "slice", "metric", "k"]).reset_index(drop=True)["value"].tolist() == \
        pytest.approx(second.sort_values(["ranker", "slice", "metric", "k"]).reset_index(drop=True)["value"].tolist())
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        # Partitioned re-run replaced the ratings instead of duplicating them.
        n, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT (user_id, item_id, timestamp)) FROM ratings").fetchone()
        assert n == distinct
        runs = conn.execute("SELECT count(DISTINCT run_id) FROM evaluation_metrics").fetchone()[0]
        assert runs == 2


def test_cold_items_and_finetuned_encoder(llmrec_home, tiny_dataset_dir):
    paths, result = run_pipeline(str(tiny_dataset_dir), "recbole", cold_items=0.2, finetune=True)
    metrics = result.output_for_node("evaluation_report")["metrics"]
    test = metrics[(metrics["fold"] == "test") & (metrics["metric"] == "ndcg") & (metrics["k"] == 10)]
    assert set(test["slice"]) == {"warm", "cold"}
    cold_rankers = set(test.loc[test["slice"] == "cold", "ranker"])
    # Content-based rankers score cold items; collaborative ones report nothing there (not zero).
    assert {"llm_content", "genre_match", "random"} <= cold_rankers
    assert not cold_rankers & {"ease", "itemknn", "als", "bpr", "popularity", "hybrid"}
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        cold_in_train = conn.execute("""
            SELECT count(*) FROM split WHERE fold = 'train' AND item_id IN (
                SELECT item_id FROM split GROUP BY item_id HAVING bool_and(fold <> 'train'))""").fetchone()[0]
        assert cold_in_train == 0
        compared = {r[0] for r in conn.execute(
            "SELECT DISTINCT ranker FROM evaluation_metrics WHERE slice = 'cold'").fetchall()}
        assert {"llm_content", "llm_content_finetuned"} <= compared
        warm = {r[0] for r in conn.execute(
            "SELECT DISTINCT ranker FROM evaluation_metrics WHERE slice = 'warm' AND run_id = ?",
            [result.results[1].run_id]).fetchall()}
        assert {"hybrid", "hybrid_finetuned", "llm_content", "llm_content_finetuned"} <= warm
    # The fine-tuned hybrid: its own MLflow run, and compared with the frozen one per user on the warm slice only.
    hybrid_meta = materialization_metadata(result, "hybrid_finetuned_ranker")
    run = mlflow.tracking.MlflowClient(paths.mlflow_uri).get_run(hybrid_meta["mlflow_run_id"])
    assert run.data.params["encoder"] == "llm_content_finetuned" and run.data.tags["ranker"] == "hybrid_finetuned"
    assert "vs_hybrid_warm_ndcg10_diff" in run.data.metrics
    comparison = result.output_for_node("encoder_comparison")
    assert {(c["slice"], c["ranker"], c["baseline"]) for c in comparison["comparisons"]} == {
        ("warm", "hybrid_finetuned", "hybrid"), ("warm", "llm_content_finetuned", "llm_content"),
        ("cold", "llm_content_finetuned", "llm_content")}
    assert "| hybrid_finetuned | hybrid | ndcg@10 |" in materialization_metadata(result, "encoder_comparison")["comparison"]
    meta = materialization_metadata(result, "finetuned_encoder")
    assert meta["n_pairs"] > 0 and meta["device"] == "cpu"
    finetuned = materialization_metadata(result, "item_embeddings_finetuned")
    frozen = materialization_metadata(result, "item_embeddings")
    assert finetuned["model"] != frozen["model"] and finetuned["encoded"] > 0


def test_load_ranker_scores_a_made_up_history(first_run):
    from llmrec_platform import load_ranker
    from llmrec_platform.rankers import Interaction, Query
    from llmrec_platform.rankers.published import published_rankers

    paths, _, _ = first_run
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        names = {r[0] for r in conn.execute("SELECT DISTINCT ranker FROM evaluation_metrics").fetchall()} - {"random"}
    assert names == set(published_rankers(paths.home))
    for name in sorted(names):
        ranker = load_ranker(paths.home, name)
        assert ranker.name == name
        history = tuple(Interaction(str(item), 5.0, 1e9 + t) for t, item in enumerate(ranker.item_ids_[:3]))
        top = ranker.recommend(Query(user_id="made-up", history=history), k=5)
        assert len(top) == 5 and not set(top["item_id"]) & set(ranker.item_ids_[:3])
    with pytest.raises(KeyError, match="available: "):
        load_ranker(paths.home, "no-such-ranker")


def test_serving_bundle_serves_what_the_champion_ranks(first_run):
    """The demo publishes a bundle; the server's list for a user is the champion's own `recommend` on that
    user's whole history (the short-term blend off), so what was evaluated is what is served."""
    import httpx
    import numpy as np

    from llmrec_platform import load_ranker
    from llmrec_platform.rankers.base import Interaction, Query
    from llmrec_platform.serving.bundle import current_bundle, load_bundle
    from tests.serving.conftest import Server

    paths, result, _ = first_run
    report = result.output_for_node("evaluation_report")
    bundle = load_bundle(current_bundle(paths.bundles))
    split = duckdb.connect(str(paths.warehouse), read_only=True).sql("SELECT * FROM split").df()
    assert bundle.manifest["champion"] == report["champion"] and bundle.event_offset == 0
    assert len(bundle.histories) == len(split) and bundle.manifest["encoder"] == "all-MiniLM-L6-v2"
    assert (abs(bundle.item_vectors).sum(axis=1) > 0).all()

    champion = load_ranker(paths.home, report["champion"])
    user = str(split["user_id"].iloc[0])
    rows = split[split["user_id"] == user]
    expected = champion.recommend(Query(user_id=user, history=tuple(
        Interaction(i, float(r), float(t)) for i, r, t in rows[["item_id", "rating", "timestamp"]].itertuples(index=False))), 5)
    server = Server(paths, LLMREC_SHORT_TERM_WEIGHT="0").start()
    try:
        served = httpx.get(f"{server.url}/users/{user}/recommendations", params={"k": 5}).json()
    finally:
        server.stop()
    assert served["model_version"] == bundle.version
    assert [i["item_id"] for i in served["items"]] == expected["item_id"].tolist()
    assert np.allclose([i["score"] for i in served["items"]], expected["score"], atol=1e-4)
