"""The encoding assets ask for a GPU (Kubernetes op tags, the `gpu` pool) and fall back to the CPU."""

import json

import dagster as dg
import numpy as np
import pytest
import torch

from llmrec_platform.definitions import ALL_ASSETS, build_resources
from llmrec_platform.encoders.models import TextEncoder

ENCODING_ASSETS = ["item_embeddings", "user_embeddings"]


@pytest.mark.parametrize("asset", ENCODING_ASSETS)
def test_encoding_assets_request_a_gpu_and_join_the_gpu_pool(defs, asset):
    op = defs.resolve_assets_def(asset).op
    k8s = json.loads(op.tags["dagster-k8s/config"])
    resources = k8s["container_config"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1" and resources["requests"]["nvidia.com/gpu"] == "1"
    assert op.pool == "gpu"
    # The tags reach the step in the jobs that run it (what dagster-k8s reads).
    node = defs.resolve_job_def("full_pipeline").graph.node_dict[asset]
    assert json.loads(node.tags["dagster-k8s/config"]) == k8s


def test_other_assets_do_not_ask_for_a_gpu(defs):
    for asset in ("raw_ratings", "split", "popularity_ranker", "evaluation_report"):
        op = defs.resolve_assets_def(asset).op
        assert "dagster-k8s/config" not in op.tags and op.pool is None


def test_the_instance_runs_one_gpu_step_at_a_time(home):
    assert "default_limit: 1" in (home.dagster_home / "dagster.yaml").read_text()


def _embed_items(home, tiny_dataset_dir, instance, device: str = "auto"):
    return dg.materialize(
        ALL_ASSETS, selection=dg.AssetSelection.assets("raw_items", "item_texts", "item_embeddings"),
        instance=instance, resources=build_resources(home, dataset=str(tiny_dataset_dir), device=device),
    )


def test_cuda_requested_without_cuda_falls_back_to_the_cpu(home, tiny_dataset_dir, instance, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LLMREC_DEVICE", "cuda")
    result = _embed_items(home, tiny_dataset_dir, instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("item_embeddings")
    assert materialization.metadata["device"].value == "cpu"
    assert materialization.metadata["precision"].value == "fp32"
    warnings = [entry.user_message for entry in instance.all_logs(result.run_id)
                if entry.level == 30 and "CUDA is not available" in entry.user_message]
    assert warnings and "falling back to the CPU" in warnings[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_embeddings_on_the_gpu_match_the_cpu(home, tiny_dataset_dir, instance, monkeypatch):
    monkeypatch.setenv("LLMREC_DEVICE", "cuda")
    result = _embed_items(home, tiny_dataset_dir, instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("item_embeddings")
    assert materialization.metadata["device"].value.startswith("cuda")
    frame = result.output_for_node("item_embeddings")
    texts = result.output_for_node("item_texts")["text"].tolist()[:8]
    cpu, _ = TextEncoder(device="cpu").encode(texts)
    gpu = np.stack(frame["embedding"].to_numpy()[:8])
    assert (np.sum(cpu * gpu, axis=1) > 0.999).all()


def test_a_run_with_every_text_cached_resolves_no_device(home, tiny_dataset_dir, instance, monkeypatch):
    """Nothing to encode: no device is resolved (so torch is not imported for it) and the metadata says so."""
    assert _embed_items(home, tiny_dataset_dir, instance).success
    import llmrec_platform.assets.embeddings as embeddings

    def no_resolution(*_args, **_kwargs):
        raise AssertionError("resolved a device with nothing to encode")

    monkeypatch.setattr(embeddings.DeviceResource, "resolve", no_resolution)
    result = _embed_items(home, tiny_dataset_dir, instance)
    assert result.success
    [materialization] = result.asset_materializations_for_node("item_embeddings")
    assert materialization.metadata["encoded"].value == 0 and materialization.metadata["cached"].value > 0
    assert materialization.metadata["device"].value == "none (all cached)"
