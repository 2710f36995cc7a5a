from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from llmrec_platform.data.config import ConfigError, config_error_budget, config_pseudonymize, load_config
from llmrec_platform.data.datasets import (
    Dataset,
    DatasetError,
    InlineConfig,
    Source,
    load_dataset_cached,
    load_pseudonymized,
)
from llmrec_platform.data.privacy import Pseudonymizer, pseudonymizer_for
from llmrec_platform.data.split import SplitConfig
from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder, resolve_device
from llmrec_platform.encoders.vectors import DEFAULT_TEXT_WEIGHT
from llmrec_platform.erasure.ledger import Tombstones
from llmrec_platform.live.events import DEFAULT_EVENT_WEIGHTS, EventLog
from llmrec_platform.paths import Paths
from llmrec_platform.privacy.dp import DEFAULT_DELTA, CountRelease
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.retrieval import DEFAULT_ANN_MIN_ITEMS
from llmrec_platform.settings import DEFAULT_DENSE_MAX_ITEMS, DEFAULT_EVENTS_BATCH, DEFAULT_TOLERANCE
from llmrec_platform.storage.tracking import Tracker
from llmrec_platform.storage.warehouse import Warehouse

# Every path comes from a field that `build_resources(home)` sets: nothing here falls back to the environment.


class HomeResource(dg.ConfigurableResource):
    """The platform's home folder (LLMREC_HOME): landing folder, fine-tuned models and the other state."""

    path: str = Field(description="absolute path of the home folder")

    def paths(self) -> Paths:
        return Paths(Path(self.path)).ensure()


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file."""

    path: str = Field(description="the DuckDB file, e.g. <home>/warehouse.duckdb")

    def warehouse(self) -> Warehouse:
        return Warehouse(self.path)


class EventLogResource(dg.ConfigurableResource):
    """The interaction-event log that the events sensor reads and the refresh job replays."""

    folder: str = Field(description="folder of events.jsonl, e.g. <home>/events")
    max_batch: int = Field(default=DEFAULT_EVENTS_BATCH, description="most events one refresh run takes")
    event_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
                                            description="the rating each implicit event type counts as")

    def log(self) -> EventLog:
        # The tombstones of the same home (<home>/events -> <home>/erasure): erased users' events are left out.
        return EventLog(self.folder, erased=Tombstones(Paths(Path(self.folder).parent).erasure))


INLINE = "inline"
INLINE_WHERE = "resources.dataset.config.inline"  # how errors in an inline config name it


class DatasetResource(dg.ConfigurableResource):
    """Where ratings, items and users come from: `ml-100k`, `ml-1m`, a GroupLens folder path, a dataset
    config file (`.yaml`, see llmrec_platform.data.config), or `inline`: the same config as a mapping in
    `inline` (run config), its relative paths resolved against `base_dir` (default: the working directory)."""

    source: str = Field(default="ml-100k", description="ml-100k, ml-1m, a GroupLens folder, a dataset config "
                                                       "(.yaml), or `inline` (the config given in `inline`)")
    inline: dict[str, Any] | None = Field(
        default=None, description="with source `inline`: the dataset config mapping (the keys of a config file)")
    base_dir: str | None = Field(
        default=None, description="folder an inline config's relative paths resolve against; empty: the working "
                                  "directory of the process that loads it")
    error_budget: float | None = Field(
        default=None, description="share of rejected rows per file above which a run fails; empty: the config's "
                                  "error_budget, else 0.05")
    pseudonymize: bool = Field(default=False, description="replace user ids by keyed pseudonyms (a dataset config "
                                                          "can also ask for it: privacy.pseudonymize)")
    # Give it as dg.EnvVar(...): a plain value would be stored in the run storage's job snapshot.
    pseudonym_key: str | None = Field(default=None, description="the pseudonyms' secret HMAC key")

    def dataset_source(self) -> Source:
        """`source`, or for `inline` the inline config (a memo key: canonical JSON + base folder)."""
        if self.source != INLINE:
            if self.inline is not None or self.base_dir is not None:
                raise DatasetError(f"resources.dataset.config: inline / base_dir are set but source is "
                                   f"{self.source!r}: set source: {INLINE} to use the inline config")
            return self.source
        if not self.inline:
            raise DatasetError(f"resources.dataset.config.source is {INLINE!r} but {INLINE_WHERE} is empty: give the "
                               "dataset config mapping there (name, interactions, items, ...)")
        source = InlineConfig.of(self.inline, self.base_dir, INLINE_WHERE)
        config = load_config(source)
        # A config file's encoder and user_texts.weight configure other resources when the code location is
        # built; a run's inline config comes too late for that, so say where they go rather than drop them.
        for key, value, instead in (("encoder", config.encoder, "resources.encoder.config.model"),
                                    ("user_texts.weight", config.user_text_weight,
                                     "resources.experiment.config.user_text_weight")):
            if value is not None:
                raise ConfigError(f"{INLINE_WHERE}.{key}: an inline config cannot set it (it configures another "
                                  f"resource); set {instead} in the same run config instead")
        return source

    def label(self) -> str:
        """How the warehouse, MLflow and the reports name the dataset: `source`, or `inline:<name>` for an inline
        config (so two inline datasets are told apart)."""
        if self.source == INLINE and self.inline:
            return f"{INLINE}:{self.inline.get('name') or 'unnamed'}"
        return self.source

    def _key(self) -> str | None:
        key = self.pseudonym_key
        if isinstance(key, dg.EnvVar):  # used outside a run: Dagster has not resolved it (else: its name)
            key = key.get_value()
        return key

    def load(self) -> Dataset:
        source = self.dataset_source()
        loaded = load_dataset_cached(source)
        if self.pseudonymize or loaded.pseudonymize:
            loaded = load_pseudonymized(source, self._key())
        if self.error_budget is not None:
            loaded = dataclasses.replace(loaded, error_budget=self.error_budget)
        return loaded

    def pseudonymizer(self) -> Pseudonymizer | None:
        """The dataset's Pseudonymizer (None with pseudonymization off), for rows that arrive another way
        (landed files); on without a key refuses."""
        source = self.dataset_source()
        where = "resources.dataset.config.pseudonymize" if self.pseudonymize else f"privacy.pseudonymize in {source}"
        return pseudonymizer_for(self.pseudonymize or config_pseudonymize(source), self._key(), where)

    def budget(self) -> float:
        """The error budget: this resource's, else the dataset config's, else the default (0.05)."""
        return self.error_budget if self.error_budget is not None else config_error_budget(self.dataset_source())


class ExperimentResource(dg.ConfigurableResource):
    """Run-wide experiment settings; every random choice is seeded from `seed`."""

    protocol: str = Field(default="recbole", description="recbole (random 8:1:1 per user) or temporal")
    seed: int = 2020
    min_rating: float = 3.0
    core: int = 10
    cold_items: float = Field(default=0.0, description="fraction of items held out of training (cold-start slice)")
    top_k: int = 20
    champion_tolerance: float = Field(
        default=DEFAULT_TOLERANCE,
        description="how far (validation NDCG@10) a champion may fall below the last published one")
    fit_cache: str | None = Field(
        default=None, description="folder of fitted rankers keyed by their inputs, reused on unchanged data (none: off)")
    dense_max_items: int = Field(
        default=DEFAULT_DENSE_MAX_ITEMS,
        description="most items a dense item-item ranker (EASE, llm_ease_map) is fitted on; above it a sparse "
                    "RP3beta stands in")
    ann_min_items: int = Field(
        default=DEFAULT_ANN_MIN_ITEMS, ge=1,
        description="from this many items, nearest-item search (the content ranker) uses a faiss HNSW index")
    user_text_weight: float = Field(
        default=DEFAULT_TEXT_WEIGHT, ge=0.0, le=1.0,
        description="weight of a user's own text (profile, reviews, queries) in the interest vector")
    dp_epsilon: float | None = Field(
        default=None, gt=0, description="epsilon of each released aggregate (popularity, online CTR, the report's "
                                        "counts); empty: exact (LLMREC_DP_EPSILON)")
    dp_mechanism: str = Field(default="laplace", description="their noise: laplace or gaussian (LLMREC_DP_MECHANISM)")
    dp_delta: float = Field(default=DEFAULT_DELTA, description="the Gaussian mechanism's delta (LLMREC_DP_DELTA)")
    # Give it as dg.EnvVar(...): a plain value would be stored in the run storage's job snapshot.
    dp_seed: str | None = Field(default=None, description="secret seed of the noise (LLMREC_DP_SEED); empty: the "
                                                          "OS's secure generator")

    def count_release(self) -> CountRelease:
        """How the run's aggregates leave the platform (see llmrec_platform.privacy.dp)."""
        seed = self.dp_seed.get_value() if isinstance(self.dp_seed, dg.EnvVar) else self.dp_seed
        return CountRelease(math.inf if self.dp_epsilon is None else self.dp_epsilon, self.dp_mechanism,
                            self.dp_delta, int(seed) if seed else None)

    def split_config(self) -> SplitConfig:
        return SplitConfig(protocol=self.protocol, min_rating=self.min_rating, core=self.core,
                           seed=self.seed, cold_item_fraction=self.cold_items)

    def fit_cache_store(self) -> FitCache:
        return FitCache(Path(self.fit_cache) if self.fit_cache else None)


class DeviceResource(dg.ConfigurableResource):
    """Where the language model runs: auto | cpu | cuda | cuda:N (build_resources fills in LLMREC_DEVICE)."""

    device: str = "auto"
    precision: str = Field(default="fp32", description="fp32, bf16 (CPU or CUDA; LLMREC_ENCODER_DTYPE) or fp16 on CUDA")
    batch_size: int = 128

    def resolve(self, log: logging.Logger | None = None) -> str:
        device, warning = resolve_device(self.device)
        if warning and log is not None:
            log.warning(warning)
        return device


@functools.lru_cache(maxsize=4)
def _cached_encoder(model: str, device: str, precision: str, batch_size: int, backend: str = "torch",
                    cache_dir: str = "") -> TextEncoder:
    return TextEncoder(model, device=device, precision=precision, batch_size=batch_size, backend=backend,
                       cache_dir=cache_dir or None)


class EncoderResource(dg.ConfigurableResource):
    """The sentence encoder: a packaged model name or a saved model folder (never a hub download)."""

    model: str = DEFAULT_MODEL
    backend: str = Field(default="torch", description="torch (same vectors on any CPU) or onnx (LLMREC_ENCODER_BACKEND)")
    cache_dir: str = Field(default="", description="where the onnx backend keeps its exported model "
                                                   "(<home>/cache/encoders); empty: a temporary folder")

    def load(self, device: str, precision: str, batch_size: int) -> TextEncoder:
        return _cached_encoder(self.model, device, precision, batch_size, self.backend, self.cache_dir)


class TrackingResource(dg.ConfigurableResource):
    """MLflow tracking and the evaluation reports, under the home folder."""

    home: str = Field(description="the home folder: MLflow store and artifacts in mlflow/, reports in reports/")
    tracking_uri: str = Field(default="", description="MLflow tracking URI; empty: the SQLite store under home")
    experiment: str = "llmrec"

    def tracker(self) -> Tracker:
        paths = Paths(Path(self.home)).ensure()
        return Tracker(self.tracking_uri or paths.mlflow_uri, paths.mlflow_artifacts, self.experiment)

    def reports(self) -> Path:
        """The folder the Markdown reports and plots are written to."""
        return Paths(Path(self.home)).ensure().reports
