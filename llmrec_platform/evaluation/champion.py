"""Champion publications and the promotion gate (no Dagster).

Every time `recommendations` publishes a champion's lists it appends a row to `champion_history`.
Before the next publication, the gate compares the new champion's validation NDCG@10 with the last
publication *of the same experiment track* (dataset, protocol, cold-item fraction): a drop of more than
the tolerance blocks publication.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from llmrec_platform.storage.warehouse import Warehouse

HISTORY_TABLE = "champion_history"
HISTORY_COLUMNS = ["published_at", "run_id", "ranker", "ranker_asset", "metric", "valid_score", "dataset", "protocol",
                   "cold_items", "mlflow_run_id", "data_fingerprint"]


@dataclass(frozen=True)
class Publication:
    run_id: str
    ranker: str
    ranker_asset: str
    metric: str
    valid_score: float
    dataset: str
    protocol: str
    cold_items: float
    mlflow_run_id: str = ""
    data_fingerprint: str = ""
    published_at: datetime | None = None

    def row(self) -> pd.DataFrame:
        published_at = self.published_at or datetime.now(UTC).replace(tzinfo=None)
        values = {**self.__dict__, "published_at": published_at}
        return pd.DataFrame([{c: values[c] for c in HISTORY_COLUMNS}]).astype(
            {"valid_score": "float64", "cold_items": "float64"})


def record_publication(store: Warehouse, publication: Publication) -> None:
    store.append(HISTORY_TABLE, publication.row())


def last_publication(store: Warehouse, dataset: str, protocol: str, cold_items: float) -> dict | None:
    """The latest publication of this experiment track, or None."""
    if not store.has_table(HISTORY_TABLE):
        return None
    frame = store.query(
        f"SELECT * FROM {HISTORY_TABLE} WHERE dataset = ? AND protocol = ? AND abs(cold_items - ?) < 1e-9 "
        "ORDER BY published_at DESC LIMIT 1", [dataset, protocol, float(cold_items)])
    return None if frame.empty else frame.iloc[0].to_dict()


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    description: str
    metadata: dict


def champion_gate(champion: str, score: float, last: dict | None, tolerance: float, metric: str = "ndcg@10") -> GateDecision:
    """Pass unless `score` is more than `tolerance` below the last published score."""
    if last is None:
        return GateDecision(True, f"first publication on this track: {champion} valid {metric} {score:.4f}",
                            {"champion": champion, "valid_score": score, "tolerance": tolerance})
    previous = float(last["valid_score"])
    drop = previous - score
    metadata = {"champion": champion, "valid_score": score, "last_published_ranker": str(last["ranker"]),
                "last_published_score": previous, "last_published_run": str(last["run_id"]), "drop": drop,
                "tolerance": tolerance}
    if drop > tolerance:
        return GateDecision(False, (
            f"{champion} valid {metric} {score:.4f} is {drop:.4f} below the last published {previous:.4f} "
            f"({last['ranker']}, run {str(last['run_id'])[:8]}), more than the tolerance {tolerance}: recommendations "
            "are not published. Investigate the regression, or accept it by raising LLMREC_CHAMPION_TOLERANCE "
            "(or the check's `tolerance` config) for one run."), metadata)
    return GateDecision(True, f"{champion} valid {metric} {score:.4f} vs last published {previous:.4f} "
                              f"(drop {drop:.4f} <= tolerance {tolerance})", metadata)


def latest_publication(store: Warehouse) -> dict | None:
    """The publication whose lists are live now (the most recent on any track), or None."""
    if not store.has_table(HISTORY_TABLE):
        return None
    frame = store.query(f"SELECT * FROM {HISTORY_TABLE} ORDER BY published_at DESC LIMIT 1")
    return None if frame.empty else frame.iloc[0].to_dict()
