"""The code location loads, validates and holds the whole graph."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from llmrec_platform.definitions import build_resources, defs
from llmrec_platform.paths import Paths
from llmrec_platform.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_stage_is_an_asset():
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    expected = {"raw_ratings", "raw_items", "raw_users", "item_texts", "user_texts", "interactions", "split",
                "item_embeddings", "user_embeddings", "popularity_ranker", "llm_content_ranker",
                "evaluation_report", "recommendations"}
    assert expected <= keys


def test_raw_ratings_is_monthly_partitioned():
    spec = defs.resolve_assets_def("raw_ratings")
    assert isinstance(spec.partitions_def, dg.MonthlyPartitionsDefinition)
    assert spec.partitions_def.get_first_partition_key() == "1995-01-01"


def test_dagster_definitions_validate(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"DAGSTER_HOME": str(tmp_path), "LLMREC_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_resources_puts_every_path_under_the_home_it_is_given(tmp_path):
    settings = Settings(home=tmp_path / "not-this-one", dataset="ml-1m", protocol="temporal", device="cuda",
                        champion_tolerance=0.1, events_batch=7)
    resources = build_resources(Paths(tmp_path / "home"), settings=settings)
    fields = {(key, name): value for key, resource in resources.items()
              for name, value in resource.model_dump().items() if isinstance(value, str) and "/" in value}
    assert {key for key, _ in fields} == {"io_manager", "artifacts_io", "warehouse", "tracking", "home", "events", "experiment",
                                          "encoder"}  # the encoder's export cache (onnx backend)
    assert all(Path(value).is_relative_to(tmp_path / "home") for value in fields.values()), fields
    # What is not passed comes from the settings.
    assert resources["dataset"].source == "ml-1m" and resources["experiment"].protocol == "temporal"
    assert resources["device"].device == "cuda" and resources["experiment"].champion_tolerance == 0.1
    assert resources["events"].max_batch == 7
    # An explicit device wins over LLMREC_DEVICE.
    assert build_resources(Paths(tmp_path), device="cpu", settings=settings)["device"].device == "cpu"


def test_fast_pipeline_is_the_full_graph_without_the_ablation():
    from llmrec_platform.definitions import defs

    def assets(job_name: str) -> set[str]:
        return {key.to_user_string() for key in defs.resolve_job_def(job_name).asset_layer.selected_asset_keys}

    full, fast = assets("full_pipeline"), assets("fast_pipeline")
    assert full - fast == {"hybrid_ablation"}
    assert {"serving_bundle", "hybrid_ranker", "evaluation_report"} <= fast
