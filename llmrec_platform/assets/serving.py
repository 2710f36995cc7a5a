"""The serving bundle: the files `llmrec serve` answers from (see llmrec_platform.serving.bundle)."""

import dagster as dg
import pandas as pd
from pydantic import Field

from llmrec_platform.assets.evaluation import load_ranker, ranker_asset_of
from llmrec_platform.assets.rankers import RANKER_ASSETS
from llmrec_platform.evaluation.suite import CHAMPION_METRIC
from llmrec_platform.live.events import event_rating
from llmrec_platform.memory import PeakMark
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.resources import EventLogResource, ExperimentResource, HomeResource
from llmrec_platform.serving.bundle import publish_bundle


class ServingBundleConfig(dg.Config):
    challenger: str = Field(default="", description="a second ranker (e.g. ease) for an online A/B split; empty: none")


# The rankers are dependencies (lineage), not inputs: the step reads only the ones it publishes (`load_ranker`).
@dg.asset(ins={"items": dg.AssetIn("raw_items")}, deps=["recommendations", *RANKER_ASSETS], group_name="serving",
          kinds={"files"})
def serving_bundle(
    context: dg.AssetExecutionContext,
    config: ServingBundleConfig,
    evaluation_report: dict,
    split: pd.DataFrame,
    items: pd.DataFrame,
    item_texts: pd.DataFrame,
    item_embeddings: pd.DataFrame,
    home: HomeResource,
    events: EventLogResource,
    experiment: ExperimentResource,
    artifacts_io: dg.ResourceParam[dg.IOManager],
) -> dg.MaterializeResult:
    """Publish the champion, the catalogue, the item embeddings, every user's history (all folds, plus the
    event log up to now) and popularity under LLMREC_HOME/bundles/, and point `current` at it. Reads the files of
    the champion, EASE (the explanations' collaborative evidence) and the challenger, if any: no other ranker."""
    mark = PeakMark()
    evaluated = sorted(evaluation_report["valid_scores"])  # every ranker of the run, by name
    if config.challenger and config.challenger not in evaluated:
        raise dg.Failure(f"challenger {config.challenger!r} is not a ranker of this run: {', '.join(evaluated)}")
    loaded: dict[str, TrainedRanker] = {}

    def ranker(name: str) -> TrainedRanker:
        if name not in loaded:
            loaded[name] = load_ranker(artifacts_io, ranker_asset_of(evaluation_report, name), context)
        return loaded[name]

    champion = ranker(evaluation_report["champion"])
    log = events.log()
    batch = log.read(0)
    logged = batch.frame()
    histories = split[["user_id", "item_id", "rating", "timestamp"]].assign(event="rating")
    if len(logged):
        histories = pd.concat([histories, pd.DataFrame({
            "user_id": logged["user_id"], "item_id": logged["item_id"], "timestamp": logged["timestamp"],
            "event": logged["event_type"],
            "rating": [event_rating(t, v) for t, v in zip(logged["event_type"], logged["value"], strict=True)],
        })], ignore_index=True)
    metrics = evaluation_report["metrics"]
    champion_test = metrics[(metrics["ranker"] == champion.ranker.name) & (metrics["fold"] == "test")]
    path = publish_bundle(
        home.paths().bundles, champion.ranker,
        items.merge(item_texts[["item_id", "text"]], on="item_id", how="left"),
        item_embeddings[["item_id", "embedding"]], histories,
        manifest={
            "event_offset": batch.end, "data_fingerprint": champion.data_fingerprint, "dagster_run_id": context.run_id,
            "mlflow_run_id": champion.mlflow_run_id,
            "popularity_privacy": experiment.count_release().params(),  # its column leaves with the bundle
            "encoder": str(item_embeddings["model"].iloc[0]) if len(item_embeddings) else None,
            f"valid_{CHAMPION_METRIC}": float(evaluation_report["valid_scores"][champion.ranker.name]),
            "test_metrics": {f"{m}@{k}/{s}": float(v) for m, k, s, v in champion_test[["metric", "k", "slice", "value"]]
                             .itertuples(index=False, name=None)},
        },
        collab=ranker("ease").ranker if "ease" in evaluated else None,
        challenger=ranker(config.challenger).ranker if config.challenger else None,
        popularity_release=experiment.count_release(),
    )
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(path)), "version": path.name, "champion": champion.ranker.name,
        "users": int(histories["user_id"].nunique()), "event_offset": batch.end,
        # The whole catalogue is served: the champion's items, then the others on their text vectors.
        "catalogue_items": int(items["item_id"].nunique()), "champion_items": len(champion.ranker.item_ids_),
        "items_without_vector": int((~items["item_id"].astype(str).isin(
            item_embeddings["item_id"].astype(str))).sum()),
        "rankers_loaded": ", ".join(ranker_asset_of(evaluation_report, name) for name in loaded), **mark.metadata(),
    })
