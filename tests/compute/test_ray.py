"""The heavy steps on a real local Ray cluster (head + 2 worker nodes on loopback): they run on both nodes, give
the in-process results, and fail fast and loudly when the cluster is unreachable or a worker dies."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from llmrec_platform.compute import cut, rows_by_node
from llmrec_platform.compute.cluster import RayUnreachable
from llmrec_platform.rankers.hybrid.model import TRAINING_SETS
from llmrec_platform.resources import ComputeResource
from llmrec_platform.settings import Settings, SettingsError

pytestmark = pytest.mark.slow


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

    def kill_first_worker():  # once every block runs (4: two per node), so the others are there to be cancelled
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(list(started.iterdir())) < 4:
            time.sleep(0.2)
        os.kill(int(min(started.iterdir()).name), signal.SIGKILL)
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
    # The step's other blocks were cancelled: none is left sleeping on a node's CPU (nor holding it from the next step).
    others = [int(path.name) for path in started.iterdir()]
    assert len(others) == 4, others
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(map(running, others)):
        time.sleep(0.2)
    assert not any(map(running, others)), [pid for pid in others if running(pid)]


def running(pid: int) -> bool:
    psutil = pytest.importorskip("psutil")
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_encoding_uses_every_worker_node_and_gives_the_in_process_vectors_bit_for_bit(ray_cluster):
    """The actor pool puts one encoder on each worker node, each gets whole batches of the in-process plan, so the
    vectors are those of one in-process `TextEncoder.encode` to the last bit. Eight short texts in four batches are
    enough: the cost is the actors' start, not the texts, and one batch of all eight changes half of the vectors
    (padding), so the comparison can fail."""
    from llmrec_platform.compute.cluster import connect
    from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder

    rng = np.random.default_rng(5)
    words = ["space", "western", "comedy", "noir", "heist", "romance", "war", "robot", "musical", "island"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(8)]  # padding varies
    blocks = connect(ray_cluster.address)
    vectors = blocks.encode("encode", texts, DEFAULT_MODEL, "cpu", "fp32", batch_size=2)  # 4 planned batches
    by_node = rows_by_node(blocks.placements, "encode")
    assert set(by_node) == ray_cluster.worker_node_ids and sum(by_node.values()) == len(texts), by_node
    expected, _ = TextEncoder(DEFAULT_MODEL, device="cpu", batch_size=2).encode(texts)
    np.testing.assert_array_equal(vectors, expected)
    one_batch, _ = TextEncoder(DEFAULT_MODEL, device="cpu", batch_size=len(texts)).encode(texts)
    assert (one_batch != expected).any(axis=1).sum() >= 2  # the plan matters: the test would see a wrong one


def metadata_of(result, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


# What the Ray run must compute again, on the cluster, rather than copy from the in-process run's fit cache: the
# results computed by scoring every user, and the hybrid's fit with the feature matrices it is trained on.
ON_THE_CLUSTER = ("evaluation_suite", "hybrid_ablation", "hybrid_ranker", TRAINING_SETS)


def test_the_ml100k_graph_on_ray_runs_on_both_nodes_and_equals_in_process(ml100k_demo, ray_cluster, tmp_path):
    """`llmrec demo`'s default graph on ML-100K with LLMREC_RAY_ADDRESS set: the encoding, the hybrid's feature
    building and every all-user scoring pass ran on both worker nodes (never the driver), and the item vectors, the
    hybrid's feature matrices, the metrics table and the published recommendations are those of the in-process run
    (`ml100k_demo`). The base rankers' fits come from that run's fit cache (their keys hash the embeddings, so every
    hit also says the vectors matched); the hybrid's fit and the scoring results do not."""
    from llmrec_platform.cli import run_pipeline

    settings = Settings.from_env({"LLMREC_HOME": str(tmp_path / "home"), "LLMREC_DEVICE": "cpu",
                                  "LLMREC_RAY_ADDRESS": ray_cluster.address})
    shutil.copytree(ml100k_demo.paths.fit_cache, settings.paths.fit_cache,
                    ignore=lambda folder, names: [n for n in names if n in ON_THE_CLUSTER])
    paths, result = run_pipeline("ml-100k", "recbole", device="cpu", settings=settings)
    assert result.success
    for asset, key in (("item_embeddings", "encoded_rows_by_node"), ("user_embeddings", "encoded_rows_by_node"),
                       ("hybrid_ranker", "featurised_rows_by_node"), ("evaluation_report", "scored_rows_by_node"),
                       ("hybrid_ablation", "scored_rows_by_node")):
        metadata = metadata_of(result, asset)
        assert metadata.get("fit_cache", "miss") == "miss", asset  # scored now, not loaded
        by_node = metadata[key]
        assert set(by_node) == ray_cluster.worker_node_ids and all(rows > 0 for rows in by_node.values()), (asset, by_node)

    def tables(home: Path) -> dict[str, pd.DataFrame]:
        with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
            return {
                "item_embeddings": conn.execute("SELECT item_id, embedding FROM item_embeddings ORDER BY item_id").df(),
                "metrics": conn.execute(  # the latest evaluation's, should a test have run another one there
                    "SELECT ranker, slice, fold, metric, k, value FROM evaluation_metrics WHERE run_id = (SELECT run_id "
                    "FROM evaluation_metrics ORDER BY created_at DESC LIMIT 1) ORDER BY ranker, slice, fold, metric, k").df(),
                "recommendations": conn.execute("SELECT user_id, rank, item_id, score FROM recommendations "
                                                "ORDER BY user_id, rank").df(),
            }

    on_ray, local = tables(paths.home), tables(ml100k_demo.home)
    assert len(on_ray["metrics"]) > 0 and len(on_ray["recommendations"]) > 0
    np.testing.assert_array_equal(np.stack(on_ray["item_embeddings"]["embedding"]),
                                  np.stack(local["item_embeddings"]["embedding"]))  # bit for bit
    pd.testing.assert_frame_equal(on_ray["metrics"], local["metrics"], check_exact=False, atol=1e-4, rtol=0)
    pd.testing.assert_frame_equal(on_ray["recommendations"], local["recommendations"])
    # The hybrid's training matrices, built on the nodes, are the in-process ones bit for bit (stored under the key
    # of the fit's first model, so the same key also says the same trees).
    built = sorted((settings.paths.fit_cache / TRAINING_SETS).glob("*.pkl"))
    assert built and all((ml100k_demo.paths.fit_cache / TRAINING_SETS / path.name).exists() for path in built), built
    for path in built:
        parts, expected = (pickle.loads((folder / TRAINING_SETS / path.name).read_bytes())
                           for folder in (settings.paths.fit_cache, ml100k_demo.paths.fit_cache))
        assert list(parts) == list(expected) and "valid_train" in parts
        for name, part in expected.items():
            for attribute in ("X", "y", "groups", "users", "items"):
                np.testing.assert_array_equal(getattr(parts[name], attribute), getattr(part, attribute))
