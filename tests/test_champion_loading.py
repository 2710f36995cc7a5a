"""`recommendations` reads no ranker file (the evaluation report carries its lists and the champion's provenance);
`serving_bundle` reads the rankers it publishes (the champion, EASE for explanations, a configured challenger),
never all twelve; both report their memory."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from llmrec_platform.assets.evaluation import recommendations
from llmrec_platform.assets.rankers import RANKER_ASSETS
from llmrec_platform.assets.serving import serving_bundle
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.definitions import build_resources
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.settings import Settings
from llmrec_platform.storage.warehouse import Warehouse
from llmrec_platform.testing import item_genres, two_group_split, unit_embeddings


class CountingStore(dg.IOManager):
    """Assets by key in memory, recording every load (a stand-in for the pickle files, to keep the test small)."""

    def __init__(self, stored: dict):
        self.stored = stored
        self.loaded: list[str] = []

    def handle_output(self, context, obj) -> None:
        self.stored[context.asset_key.to_user_string()] = obj

    def load_input(self, context):
        key = context.asset_key.to_user_string()
        self.loaded.append(key)
        return self.stored[key]


@pytest.fixture(scope="module")
def run_inputs():
    split = two_group_split()
    data = InteractionData.from_split(split)
    embeddings = unit_embeddings(list(data.item_ids), "item_id", seed=1)
    fitted = {"popularity_ranker": PopularityRanker().fit(data), "ease_ranker": EASERanker().fit(data),
              "llm_content_ranker": LLMContentRanker(embeddings).fit(data)}
    rankers = {}
    for asset in RANKER_ASSETS:
        ranker = fitted.get(asset) or PopularityRanker().fit(data)
        if asset not in fitted:
            ranker.name = asset.removesuffix("_ranker")
        rankers[asset] = TrainedRanker(ranker, f"run-{asset}", "fingerprint", {"ndcg@10": 0.1}, 0.1)
    names = [t.ranker.name for t in rankers.values()]
    champion = "llm_content"
    top = rankers["llm_content_ranker"].ranker.recommend(str(data.user_ids[0]), 3)
    report = {
        "champion": champion, "valid_scores": {n: 0.5 if n == champion else 0.1 for n in names},
        "metrics": pd.DataFrame({"ranker": [champion], "slice": ["all"], "fold": ["test"], "metric": ["ndcg"],
                                 "k": [10], "value": [0.4]}),
        "recommendations": top.assign(user_id=str(data.user_ids[0]))[["user_id", "rank", "item_id", "score"]],
        "ranker_assets": {t.ranker.name: asset for asset, t in rankers.items()},
        "champion_provenance": {"mlflow_run_id": "run-llm_content_ranker", "data_fingerprint": "fingerprint"},
    }
    items = item_genres().assign(title=lambda f: "Title " + f["item_id"])
    tables = {"split": split, "raw_items": items, "item_texts": items[["item_id"]].assign(text=items["title"]),
              "item_embeddings": embeddings.assign(model="test-encoder")}
    return rankers, report, tables


def materialize(tmp_path, run_inputs, asset, run_config=None, artifacts=None):
    rankers, report, tables = run_inputs
    artifacts = artifacts or CountingStore({**rankers, "evaluation_report": report})
    resources = {**build_resources(Paths(tmp_path / "home"), dataset="test-shop", settings=Settings.from_env({})),
                 "artifacts_io": artifacts, "io_manager": CountingStore(dict(tables))}
    upstream = [dg.SourceAsset(key, io_manager_key="artifacts_io") for key in [*RANKER_ASSETS, "evaluation_report"]]
    upstream += [dg.SourceAsset(key) for key in [*tables, "recommendations"] if key != asset.key.path[-1]]
    result = dg.materialize([asset, *upstream], resources=resources, run_config=run_config,
                            selection=[asset.key])
    assert result.success
    [event] = result.asset_materializations_for_node(asset.key.path[-1])
    return artifacts.loaded, {k: v.value for k, v in event.metadata.items()}


def test_recommendations_read_no_ranker_file(tmp_path, run_inputs):
    loaded, metadata = materialize(tmp_path, run_inputs, recommendations)
    assert loaded == ["evaluation_report"]  # the report carries the lists and the champion's provenance
    assert metadata["ranker"] == "llm_content" and metadata["rankers_loaded"] == ""
    assert metadata["mlflow_run_id"] == "run-llm_content_ranker"
    assert metadata["process_peak_rss_gib"] > 0 and metadata["step_raised_peak_by_gib"] >= 0
    assert 0 < metadata["process_rss_now_gib"] <= metadata["process_peak_rss_gib"]
    history = Warehouse(tmp_path / "home" / "warehouse.duckdb").read("champion_history")
    assert history["ranker_asset"].tolist() == ["llm_content_ranker"]
    assert history[["mlflow_run_id", "data_fingerprint"]].values.tolist() == [["run-llm_content_ranker", "fingerprint"]]


@pytest.mark.parametrize("challenger, expected", [
    ("", ["ease_ranker", "evaluation_report", "llm_content_ranker"]),
    ("popularity", ["ease_ranker", "evaluation_report", "llm_content_ranker", "popularity_ranker"]),
])
def test_the_bundle_reads_the_champion_ease_and_the_challenger_only(tmp_path, run_inputs, challenger, expected):
    config = {"ops": {"serving_bundle": {"config": {"challenger": challenger}}}}
    loaded, metadata = materialize(tmp_path, run_inputs, serving_bundle, config)
    assert sorted(loaded) == expected
    assert metadata["champion"] == "llm_content" and metadata["process_peak_rss_gib"] > 0
    assert sorted(metadata["rankers_loaded"].split(", ")) == [a for a in expected if a != "evaluation_report"]


def test_an_unknown_challenger_is_refused_before_any_ranker_is_read(tmp_path, run_inputs):
    config = {"ops": {"serving_bundle": {"config": {"challenger": "nope"}}}}
    rankers, report, _ = run_inputs
    artifacts = CountingStore({**rankers, "evaluation_report": report})
    with pytest.raises(dg.Failure, match="challenger 'nope' is not a ranker of this run"):
        materialize(tmp_path, run_inputs, serving_bundle, config, artifacts)
    assert artifacts.loaded == ["evaluation_report"]


def test_the_console_line_gives_each_steps_peak_memory_and_the_rss_after_it():
    import io
    import os

    import numpy as np

    from llmrec_platform.memory import GIB, peak_rss_bytes
    from llmrec_platform.orchestration.console import RunConsole, console_logger

    @dg.asset
    def grows() -> int:
        with open("/proc/self/statm") as statm:
            resident = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        # Enough to lift the process's high-water mark by at least 64 MiB, wherever it stood.
        block = np.ones((peak_rss_bytes() - resident + 64 * 1024**2) // 8)
        return int(block[-1])

    stream = io.StringIO()
    console = RunConsole(stream=stream, live=False)
    job = dg.Definitions(assets=[grows], jobs=[dg.define_asset_job("grow")]).resolve_job_def("grow")
    result = job.with_logger_defs({"llmrec_console": console_logger(console)}).execute_in_process(
        run_config={"loggers": {"llmrec_console": {}}})
    assert result.success
    peak, raised, now = console.step_memory["grows"]
    assert 64 / 1024 - 0.01 <= raised <= peak and peak == pytest.approx(peak_rss_bytes() / GIB, abs=0.01)
    assert now <= peak - 60 / 1024  # the step's block was freed when it returned: the RSS after it fell back
    [line] = [line for line in stream.getvalue().splitlines() if line.strip().startswith("grows")]
    assert line.endswith(f"peak RSS {peak:5.2f} GiB (+{raised:.2f})  RSS after {now:5.2f} GiB")
