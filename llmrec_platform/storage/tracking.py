"""MLflow tracking (no Dagster): one run per trained ranker; evaluation adds test metrics to the same run."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)
# The MLflow UI opens an experiment of this kind in its model-training view, not the GenAI (traces) one.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def data_fingerprint(frame: pd.DataFrame | pa.Table, batch_rows: int = 1_000_000) -> str:
    """Stable content hash of a frame (row order included), e.g. the split a ranker was trained on. An Arrow table
    is hashed a batch of rows at a time, to the same digest as its pandas form (a row's hash is its own)."""
    if isinstance(frame, pa.Table):
        batches = [pd.util.hash_pandas_object(batch.to_pandas(), index=False).to_numpy()
                   for batch in frame.to_batches(batch_rows)]
        row_hashes = np.concatenate(batches) if batches else np.zeros(0, dtype=np.uint64)
    else:
        row_hashes = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy()
    return hashlib.sha256(row_hashes.tobytes()).hexdigest()[:16]


def _metric_key(key: str) -> str:
    return key.replace("@", "_at_")


class Tracker:
    def __init__(self, tracking_uri: str, artifact_root: Path, experiment: str):
        import mlflow

        self.mlflow = mlflow
        artifact_root.mkdir(parents=True, exist_ok=True)
        # Parallel steps (multiprocess executor) must not both create the store and run its migrations:
        # the client sets up its store's schema on first use, so it is built under the lock too.
        with open(artifact_root.parent / ".tracking.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.client = mlflow.tracking.MlflowClient(tracking_uri)
            existing = self.client.get_experiment_by_name(experiment)
            if existing is None:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root.as_uri(),
                                                                   tags=EXPERIMENT_KIND)
            else:
                self.experiment_id = existing.experiment_id
                if existing.tags.get("mlflow.experimentKind") is None:
                    self.client.set_experiment_tag(self.experiment_id, *next(iter(EXPERIMENT_KIND.items())))

    def start_run(self, run_name: str, params: dict, tags: dict | None = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags or {})
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        for key, value in params.items():
            self.client.log_param(run_id, key, str(value)[:6000])

    def log_metrics(self, run_id: str, metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(f"{prefix}{_metric_key(k)}", float(v), now, step or 0)
            for k, v in metrics.items() if v == v  # skip NaN
        ]
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def log_metric_history(self, run_id: str, key: str, values: list[float]) -> None:
        """One metric over steps (e.g. a validation curve), shown as a chart in the MLflow UI."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_metric_key(key), float(v), now, step) for step, v in enumerate(values)]
        for start in range(0, len(metrics), 1000):  # MLflow caps a batch at 1000 metrics
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def set_tags(self, run_id: str, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))

    def end_run(self, run_id: str) -> None:
        self.client.set_terminated(run_id)
