"""Where state lives under a home folder (LLMREC_HOME, read by `settings.py`; this module never reads
the environment: whoever builds the resources passes the home in)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def warehouse(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.mlflow / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow / "artifacts"

    @property
    def artifacts(self) -> Path:
        return self.home / "artifacts"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def lock(self) -> Path:
        """Held (flock) by a CLI run that writes to this home, so a second one refuses."""
        return self.home / "llmrec.lock"

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def events(self) -> Path:
        return self.home / "events"

    @property
    def bundles(self) -> Path:
        return self.home / "bundles"

    @property
    def fit_cache(self) -> Path:
        """Fitted rankers by the hash of their inputs (`rankers/fit_cache.py`): re-runs on unchanged data load them."""
        return self.home / "cache" / "fits"

    @property
    def encoder_cache(self) -> Path:
        """Encoders exported for another backend (`encoders/onnx_backend.py`), by model id: exported once."""
        return self.home / "cache" / "encoders"

    @property
    def audit(self) -> Path:
        """The server's append-only audit log of writes and erasures (`serving/audit.py`): holds stored user ids."""
        return self.home / "audit"

    @property
    def erasure(self) -> Path:
        """The erasure ledger, its key and the journal of erasures under way (`llmrec_platform/erasure/`)."""
        return self.home / "erasure"

    def ensure(self) -> Paths:
        for path in (self.home, self.mlflow, self.artifacts, self.reports, self.dagster_home, self.landing):
            path.mkdir(parents=True, exist_ok=True)
        dagster_yaml = self.dagster_home / "dagster.yaml"
        if not dagster_yaml.exists():
            # One GPU step at a time across runs (the `gpu` pool the encoding assets join); the platform
            # runs offline, so no telemetry and no "join the community" modal (nux) in the UI.
            dagster_yaml.write_text("concurrency:\n  pools:\n    default_limit: 1\ntelemetry:\n  enabled: false\n"
                                    "nux:\n  enabled: false\n")
        elif "\nnux:" not in "\n" + dagster_yaml.read_text():  # a home made before the nux setting
            with dagster_yaml.open("a") as handle:
                handle.write("nux:\n  enabled: false\n")
        return self

