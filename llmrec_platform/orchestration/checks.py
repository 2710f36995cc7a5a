"""Asset checks. Each takes the asset's value and applies a rule from `llmrec_platform.data.quality` or
`llmrec_platform.evaluation.champion`; `champion_not_regressed` is blocking: it guards the publication of
`recommendations`."""

import dagster as dg
import pandas as pd
import pyarrow as pa

from llmrec_platform.data.quality import (
    CheckOutcome,
    embeddings_valid,
    expected_dim,
    ratings_ranges,
    ratings_schema,
    ratings_unique_keys,
    split_without_leakage,
)
from llmrec_platform.evaluation.champion import champion_gate, last_publication
from llmrec_platform.evaluation.suite import CHAMPION_METRIC
from llmrec_platform.resources import DatasetResource, EncoderResource, ExperimentResource, WarehouseResource


def _result(outcome: CheckOutcome, severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=outcome.passed, description=outcome.description, metadata=outcome.metadata,
                               severity=severity)


@dg.asset_check(asset="raw_ratings", description="Columns user_id, item_id (strings), rating (float), timestamp (int), no nulls.")
def ratings_schema_check(raw_ratings: pa.Table) -> dg.AssetCheckResult:
    return _result(ratings_schema(raw_ratings))


@dg.asset_check(asset="raw_ratings", description="Ratings within [0.5, 5] and non-negative epoch-second timestamps.")
def ratings_range_check(raw_ratings: pa.Table) -> dg.AssetCheckResult:
    return _result(ratings_ranges(raw_ratings))


@dg.asset_check(asset="raw_ratings", description="(user_id, item_id, timestamp) is unique.")
def ratings_unique_key_check(raw_ratings: pa.Table) -> dg.AssetCheckResult:
    return _result(ratings_unique_keys(raw_ratings))


@dg.asset_check(asset="item_embeddings", description="Finite, unit-norm vectors with the encoder's dimension, one per item.")
def item_embeddings_check(item_embeddings: pd.DataFrame, encoder: EncoderResource) -> dg.AssetCheckResult:
    return _result(embeddings_valid(item_embeddings, expected_dim(encoder.model)))


@dg.asset_check(asset="split", description="No user-item pair in two folds; every valid/test user has training history.")
def split_leakage_check(split: pa.Table) -> dg.AssetCheckResult:
    return _result(split_without_leakage(split))


class ChampionGateConfig(dg.Config):
    tolerance: float | None = None  # None: the experiment resource's (LLMREC_CHAMPION_TOLERANCE, default 0.02)


@dg.asset_check(
    asset="evaluation_report", blocking=True,
    description="Blocks publication when the champion's validation NDCG@10 falls more than the tolerance below "
                "the last published champion of the same dataset / protocol / cold-item fraction.",
)
def champion_not_regressed(
    config: ChampionGateConfig,
    evaluation_report: dict,
    warehouse: WarehouseResource,
    dataset: DatasetResource,
    experiment: ExperimentResource,
) -> dg.AssetCheckResult:
    tolerance = config.tolerance if config.tolerance is not None else experiment.champion_tolerance
    champion = evaluation_report["champion"]
    last = last_publication(warehouse.warehouse(), dataset.label(), experiment.protocol, experiment.cold_items)
    decision = champion_gate(champion, float(evaluation_report["valid_scores"][champion]), last, tolerance,
                             CHAMPION_METRIC)
    return dg.AssetCheckResult(passed=decision.passed, description=decision.description, metadata=decision.metadata,
                               severity=dg.AssetCheckSeverity.ERROR)


ASSET_CHECKS = [
    ratings_schema_check, ratings_range_check, ratings_unique_key_check, item_embeddings_check, split_leakage_check,
    champion_not_regressed,
]
