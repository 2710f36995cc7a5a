"""The heavy steps on a real local Ray cluster (head + 2 worker nodes on loopback): they run on both nodes, give
the in-process results, and fail fast and loudly when the cluster is unreachable or a worker dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from llmrec_platform.compute import cut
from llmrec_platform.compute.cluster import RayUnreachable
from llmrec_platform.resources import ComputeResource
from llmrec_platform.settings import Settings, SettingsError

pytestmark = pytest.mark.slow
BLOCK_USERS = 4


def test_an_unreachable_address_fails_in_one_line_before_any_work(tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    with pytest.raises(RayUnreachable) as caught:
        ComputeResource(ray_address="127.0.0.1:9").blocks()
    message = str(caught.value)
    assert "LLMREC_RAY_ADDRESS='127.0.0.1:9'" in message and "\n" not in message
    result = dg.materialize([block_writer_asset(started)], resources={
        "compute": ComputeResource(ray_address="ray://127.0.0.1:9")}, raise_on_error=False)
    assert not result.success and not list(started.iterdir())  # no block ever started
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "ray://127.0.0.1:9" in failure.step_failure_data.error.cause.message
    with pytest.raises(SettingsError, match="LLMREC_RAY_ADDRESS"):
        Settings.from_env({"LLMREC_RAY_ADDRESS": "not an address"})


def _sleeping_block(block: np.ndarray, started: str) -> int:
    Path(started, str(os.getpid())).touch()
    time.sleep(120)
    return len(block)


def block_writer_asset(started: Path):
    @dg.asset(name="slow_scores")
    def slow_scores(compute: ComputeResource) -> int:
        blocks = compute.blocks()
        return sum(blocks.map("slow", _sleeping_block, cut(np.arange(8), 1024, blocks.min_blocks), str(started)))

    return slow_scores


def test_a_worker_killed_mid_step_fails_the_step_with_the_ray_error(ray_cluster, tmp_path):
    started = tmp_path / "started"
    started.mkdir()

    killed_at = []

    def kill_first_worker():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(started.iterdir()):
            time.sleep(0.2)
        os.kill(int(next(started.iterdir()).name), signal.SIGKILL)
        killed_at.append(time.monotonic())

    killer = threading.Thread(target=kill_first_worker, daemon=True)
    killer.start()
    result = dg.materialize([block_writer_asset(started)], resources={
        "compute": ComputeResource(ray_address=ray_cluster.address)}, raise_on_error=False)
    killer.join(timeout=5)
    assert not result.success and killed_at
    # It failed when the worker died, not once the other blocks' 120 s sleep was over (nor never).
    assert time.monotonic() - killed_at[0] < 90
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "WorkerCrashedError" in failure.step_failure_data.error.cause.cls_name or \
        "WorkerCrashedError" in str(failure.step_failure_data.error.to_string())


def metadata_of(result, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def test_the_graph_on_ray_runs_on_both_nodes_and_equals_in_process(ray_cluster, llmrec_home, tiny_dataset_dir,
                                                                   monkeypatch, tmp_path):
    """The real graph (`llmrec demo --fast`'s job) on the tiny GroupLens-format dataset, with LLMREC_RAY_ADDRESS
    set: encoding and all-user scoring ran on both worker nodes, and the published metrics and lists are what the
    in-process path computes from the same fitted rankers and the same texts."""
    from llmrec_platform.cli import run_pipeline

    monkeypatch.setenv("LLMREC_RAY_ADDRESS", ray_cluster.address)
    monkeypatch.setenv("LLMREC_BLOCK_USERS", str(BLOCK_USERS))  # several blocks of the 24 users, for both nodes
    paths, result = run_pipeline(str(tiny_dataset_dir), "recbole", device="cpu", fast=True, settings=Settings.from_env())
    assert result.success
    for asset, key in (("item_embeddings", "encoded_rows_by_node"), ("user_embeddings", "encoded_rows_by_node"),
                       ("evaluation_report", "scored_rows_by_node")):
        by_node = metadata_of(result, asset)[key]
        # Never the driver. Both workers for the scoring; the encoder's actor pool can still hand a small input to
        # one actor (seen once in 3 CI runs: 30 item texts on one node), so there only at least one worker is required.
        assert by_node and set(by_node) <= ray_cluster.worker_node_ids, (asset, by_node)
        if asset == "evaluation_report":
            assert set(by_node) == ray_cluster.worker_node_ids, (asset, by_node)
        assert all(rows > 0 for rows in by_node.values())

    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        metrics = conn.execute("SELECT ranker, slice, fold, metric, k, value FROM evaluation_metrics").df()
        published = conn.execute("SELECT user_id, rank, item_id FROM recommendations ORDER BY user_id, rank").df()
        vectors = np.stack(conn.execute("SELECT embedding FROM item_embeddings ORDER BY item_id").df()["embedding"])
    reference = tmp_path / "in-process"
    reference.mkdir()
    subprocess.run([sys.executable, "-m", "tests.compute.reference", str(paths.home), str(reference), str(BLOCK_USERS)],
                   check=True, cwd=Path(__file__).parents[2], timeout=600)
    # Encoding: what the cluster's actors wrote is what the in-process encoder gives (float32 rounding apart:
    # the actors batch the texts differently).
    np.testing.assert_allclose(vectors, np.load(reference / "item_vectors.npy"), atol=1e-6)
    # Scoring: the same fitted rankers, evaluated in-process, give the same metrics and the same lists.
    local = pd.read_parquet(reference / "metrics.parquet")
    keys = ["ranker", "slice", "fold", "metric", "k"]
    both = metrics.merge(local, on=keys, suffixes=("_ray", "_local"), validate="one_to_one")
    assert len(both) == len(local) == len(metrics) > 0
    np.testing.assert_allclose(both["value_ray"], both["value_local"], atol=1e-4)
    local_lists = pd.read_parquet(reference / "recommendations.parquet").sort_values(["user_id", "rank"])
    pd.testing.assert_frame_equal(published.reset_index(drop=True),
                                  local_lists[["user_id", "rank", "item_id"]].reset_index(drop=True), check_dtype=False)
