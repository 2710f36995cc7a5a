"""LLM embeddings of items and users. These assets ask for a GPU (CPU fallback)."""

import time

import dagster as dg
import numpy as np
import pandas as pd

from llmrec_platform import progress
from llmrec_platform.compute import InProcess, rows_by_node
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.cache import embed_texts
from llmrec_platform.encoders.models import effective_precision, encoder_key, path_suffix, runs_on_gpu
from llmrec_platform.encoders.vectors import DEFAULT_TEXT_WEIGHT, align, user_interest_vectors
from llmrec_platform.resources import (
    ComputeResource,
    DeviceResource,
    EncoderResource,
    ExperimentResource,
    WarehouseResource,
)

# What a Kubernetes executor (dagster-k8s) turns into a GPU request; the `gpu` pool runs one GPU step at a time.
GPU_OP_TAGS = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}}
    }
}
GPU_POOL = "gpu"
CACHE_TABLE = "embedding_cache"


def encode_with_cache(
    context: dg.AssetExecutionContext,
    texts: pd.DataFrame,
    device: DeviceResource,
    encoder: EncoderResource,
    warehouse: WarehouseResource,
    compute: ComputeResource | None = None,
) -> tuple[np.ndarray, str, dict]:
    """Embed texts, encoding only what the warehouse cache lacks for this model; returns metadata too. With a
    Ray `compute`, the texts are encoded by an actor pool over the cluster's nodes (one GPU each on CUDA)."""
    blocks = compute.blocks() if compute is not None else InProcess()  # an unreachable cluster fails before any work
    store = warehouse.warehouse()
    precision = "fp32"
    if device.precision != "fp32" and runs_on_gpu(encoder.model):  # it depends on the device: resolve that now
        precision = effective_precision(device.resolve(context.log), device.precision)
    # The cache key names the path (backend, precision) as well as the model: vectors of two paths never mix.
    model = encoder_key(encoder.model, encoder.backend, precision)
    cache = store.read(CACHE_TABLE, "model = ?", [model]) if store.has_table(CACHE_TABLE) else pd.DataFrame(
        columns=["model", "text_hash", "embedding"])
    # Resolved only when something is to be encoded: a run with every text cached never imports torch.
    used_device = "none (all cached)"

    def encode(batch: list[str]) -> tuple[np.ndarray, float]:
        nonlocal used_device
        if encoder.backend == "onnx" and runs_on_gpu(encoder.model):
            # ONNX Runtime runs on the CPU here: resolving the device would import torch for nothing.
            if device.device not in ("auto", "cpu"):
                context.log.warning(f"the onnx encoder backend runs on the CPU, not on {device.device}")
            used_device = "cpu"
        else:
            used_device = device.resolve(context.log)
        if used_device != "cpu" and not runs_on_gpu(encoder.model):
            context.log.warning(f"encoder {encoder.model} is numpy only: it runs on the CPU, not on {used_device}")
            used_device = "cpu"
        if not isinstance(blocks, InProcess):
            start = time.perf_counter()
            on_path = encoder.model + path_suffix(encoder.backend, precision) if runs_on_gpu(encoder.model) else encoder.model
            vectors = blocks.encode("encode", batch, on_path, used_device, device.precision, device.batch_size)
            return vectors, time.perf_counter() - start
        vectors, stats = encoder.load(used_device, device.precision, device.batch_size).encode(batch)
        return vectors, stats.seconds

    with progress.listening(progress.throttled(context.log.debug)):
        matrix, new_rows, report = embed_texts(texts, model, cache, encode)
    store.append(CACHE_TABLE, new_rows)
    metadata = {
        "model": model,
        "device": used_device,
        "precision": precision,
        "backend": encoder.backend if runs_on_gpu(encoder.model) else "numpy",
        "dim": int(matrix.shape[1]) if matrix.size else 0,
        "encoded": report.encoded,
        "cached": report.cached,
        "texts_per_second": round(report.per_second, 1),
        "compute": blocks.name, "encoded_rows_by_node": dg.MetadataValue.json(rows_by_node(blocks.placements)),
    }
    return matrix, model, metadata


def item_embedding_frame(context, item_texts: pd.DataFrame, device: DeviceResource, encoder: EncoderResource,
                         warehouse: WarehouseResource, compute: ComputeResource | None = None) -> pd.DataFrame:
    matrix, model, metadata = encode_with_cache(context, item_texts, device, encoder, warehouse, compute)
    context.add_output_metadata({**metadata, "items_per_second": metadata.pop("texts_per_second")})
    return pd.DataFrame({
        "item_id": item_texts["item_id"].to_numpy(), "model": model,
        "text_hash": item_texts["text_hash"].to_numpy(), "embedding": list(matrix),
    })


@dg.asset(
    metadata={"table": "item_embeddings"}, group_name="embeddings", kinds={"pytorch", "duckdb"},
    op_tags=GPU_OP_TAGS, pool=GPU_POOL,
)
def item_embeddings(
    context: dg.AssetExecutionContext,
    item_texts: pd.DataFrame,
    device: DeviceResource,
    encoder: EncoderResource,
    warehouse: WarehouseResource,
    compute: ComputeResource,
) -> pd.DataFrame:
    """Unit-norm text embeddings of every item, cached by (model, text hash)."""
    return item_embedding_frame(context, item_texts, device, encoder, warehouse, compute)


class UserEmbeddingsConfig(dg.Config):
    # None: the experiment's user_text_weight (a dataset config's user_texts.weight, else LLMREC_USER_TEXT_WEIGHT)
    profile_weight: float | None = None
    half_life_days: float = 365.0


@dg.asset(
    metadata={"table": "user_embeddings"}, group_name="embeddings", kinds={"pytorch", "duckdb"},
    op_tags=GPU_OP_TAGS, pool=GPU_POOL,
)
def user_embeddings(
    context: dg.AssetExecutionContext,
    config: UserEmbeddingsConfig,
    split: pd.DataFrame,
    item_embeddings: pd.DataFrame,
    user_texts: pd.DataFrame,
    device: DeviceResource,
    encoder: EncoderResource,
    warehouse: WarehouseResource,
    experiment: ExperimentResource,
    compute: ComputeResource,
) -> pd.DataFrame:
    """Interest vectors: rating- and recency-weighted mean of training items, blended with the user's own text
    (profile, reviews, queries) with weight user_text_weight."""
    return user_embedding_frame(context, config, split, item_embeddings, user_texts, device, encoder, warehouse,
                                text_weight=experiment.user_text_weight, compute=compute)


def user_embedding_frame(context, config: UserEmbeddingsConfig, split: pd.DataFrame, item_embeddings: pd.DataFrame,
                         user_texts: pd.DataFrame, device: DeviceResource, encoder: EncoderResource,
                         warehouse: WarehouseResource, text_weight: float = DEFAULT_TEXT_WEIGHT,
                         compute: ComputeResource | None = None) -> pd.DataFrame:
    """The `profile_weight` column records the text weight used, so the content ranker folds histories in alike."""
    weight = text_weight if config.profile_weight is None else config.profile_weight
    data = InteractionData.from_split(split)
    profiles = user_texts[user_texts["user_id"].isin(data.user_ids)].reset_index(drop=True)
    profile_matrix, model, metadata = encode_with_cache(context, profiles, device, encoder, warehouse, compute)
    profile_vectors = np.zeros((data.n_users, item_embeddings["embedding"].iloc[0].shape[0]), dtype=np.float32)
    if len(profiles):
        positions = pd.Index(data.user_ids).get_indexer(profiles["user_id"])
        profile_vectors[positions] = profile_matrix
    vectors = user_interest_vectors(
        data.train, data.train_timestamps, align(data.item_ids, item_embeddings, "item_id", "items"), profile_vectors,
        profile_weight=weight, half_life_days=config.half_life_days,
    )
    context.add_output_metadata({**metadata, "users": data.n_users, "with_profile": len(profiles),
                                 "user_text_weight": weight})
    return pd.DataFrame({"user_id": data.user_ids, "model": model, "embedding": list(vectors),
                         "profile_embedding": list(profile_vectors), "profile_weight": weight})
