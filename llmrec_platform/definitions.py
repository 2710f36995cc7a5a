"""The Dagster code location: assets, jobs and resources (`dagster dev -w workspace.yaml`)."""

import os

import dagster as dg

from llmrec_platform.assets import embeddings, evaluation, ingest, rankers, split, text
from llmrec_platform.config import Paths
from llmrec_platform.resources import (
    DatasetResource,
    DeviceResource,
    EncoderResource,
    ExperimentResource,
    TrackingResource,
    WarehouseIOManager,
    WarehouseResource,
)

ALL_ASSETS = dg.load_assets_from_modules([ingest, text, split, embeddings, rankers, evaluation])


def build_resources(
    home: Paths | None = None,
    dataset: str | None = None,
    protocol: str | None = None,
    cold_items: float = 0.0,
    device: str = "auto",
    seed: int = 2020,
) -> dict:
    """Resources for a home folder; defaults come from LLMREC_DATASET / LLMREC_PROTOCOL / LLMREC_DEVICE."""
    home = home or Paths.from_env()
    warehouse_path = str(home.warehouse)
    return {
        "io_manager": WarehouseIOManager(path=warehouse_path),
        "artifacts_io": dg.FilesystemIOManager(base_dir=str(home.artifacts)),
        "warehouse": WarehouseResource(path=warehouse_path),
        "dataset": DatasetResource(source=dataset or os.environ.get("LLMREC_DATASET", "ml-100k")),
        "experiment": ExperimentResource(
            protocol=protocol or os.environ.get("LLMREC_PROTOCOL", "recbole"), cold_items=cold_items, seed=seed),
        "device": DeviceResource(device=device),
        "encoder": EncoderResource(),
        "tracking": TrackingResource(tracking_uri=home.mlflow_uri),
    }


full_pipeline_job = dg.define_asset_job(
    "full_pipeline", selection=dg.AssetSelection.all(),
    description="Ingest, embed, train, evaluate and publish recommendations (all ratings partitions in one run).",
)

defs = dg.Definitions(assets=ALL_ASSETS, jobs=[full_pipeline_job], resources=build_resources())
