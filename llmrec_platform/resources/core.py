from __future__ import annotations

import functools
import logging

import dagster as dg
from pydantic import Field

from llmrec_platform.config import Paths
from llmrec_platform.data.datasets import Dataset, load_dataset_cached
from llmrec_platform.encoders import DEFAULT_MODEL, TextEncoder, resolve_device
from llmrec_platform.split import SplitConfig
from llmrec_platform.tracking import Tracker
from llmrec_platform.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file; empty path means LLMREC_HOME/warehouse.duckdb."""

    path: str = ""

    def warehouse(self) -> Warehouse:
        return Warehouse(self.path or Paths.from_env().warehouse)


class DatasetResource(dg.ConfigurableResource):
    """Where ratings, items and users come from: `ml-100k`, `ml-1m` or a GroupLens folder path."""

    source: str = "ml-100k"

    def load(self) -> Dataset:
        return load_dataset_cached(self.source)


class ExperimentResource(dg.ConfigurableResource):
    """Run-wide experiment settings; every random choice is seeded from `seed`."""

    protocol: str = Field(default="recbole", description="recbole (random 8:1:1 per user) or temporal")
    seed: int = 2020
    min_rating: float = 3.0
    core: int = 10
    cold_items: float = Field(default=0.0, description="fraction of items held out of training (cold-start slice)")
    top_k: int = 20

    def split_config(self) -> SplitConfig:
        return SplitConfig(protocol=self.protocol, min_rating=self.min_rating, core=self.core,
                           seed=self.seed, cold_item_fraction=self.cold_items)


class DeviceResource(dg.ConfigurableResource):
    """Where the language model runs: auto | cpu | cuda | cuda:N (LLMREC_DEVICE overrides auto)."""

    device: str = "auto"
    precision: str = Field(default="fp32", description="fp32, or fp16 / bf16 on CUDA")
    batch_size: int = 128

    def resolve(self, log: logging.Logger | None = None) -> str:
        device, warning = resolve_device(self.device)
        if warning and log is not None:
            log.warning(warning)
        return device


@functools.lru_cache(maxsize=4)
def _cached_encoder(model: str, device: str, precision: str, batch_size: int) -> TextEncoder:
    return TextEncoder(model, device=device, precision=precision, batch_size=batch_size)


class EncoderResource(dg.ConfigurableResource):
    """The sentence encoder: a packaged model name or a saved model folder (never a hub download)."""

    model: str = DEFAULT_MODEL

    def load(self, device: str, precision: str, batch_size: int) -> TextEncoder:
        return _cached_encoder(self.model, device, precision, batch_size)


class TrackingResource(dg.ConfigurableResource):
    """MLflow tracking; empty URI means a SQLite store under LLMREC_HOME/mlflow."""

    tracking_uri: str = ""
    experiment: str = "llmrec"

    def tracker(self) -> Tracker:
        paths = Paths.from_env().ensure()
        return Tracker(self.tracking_uri or paths.mlflow_uri, paths.mlflow_artifacts, self.experiment)
