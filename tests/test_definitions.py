"""The code location loads, validates and holds the whole graph."""

import subprocess
import sys
from pathlib import Path

import dagster as dg

from llmrec_platform.definitions import defs

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
