"""The evaluation report and the published recommendations."""

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from llmrec_platform.assets.rankers import ARTIFACTS_IO, RANKER_ASSETS
from llmrec_platform.compute import rows_by_node
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.champion import Publication, record_publication
from llmrec_platform.evaluation.report import metrics_table, plot_metrics, released_counts, render_report
from llmrec_platform.evaluation.significance import comparisons_markdown
from llmrec_platform.evaluation.suite import CHAMPION_METRIC, evaluate_suite
from llmrec_platform.live.online import online_markdown
from llmrec_platform.memory import PeakMark
from llmrec_platform.privacy.dp import CountRelease
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.rankers.fit_cache import derived_key
from llmrec_platform.resources import DatasetResource, ExperimentResource, TrackingResource, WarehouseResource
from llmrec_platform.resources.ray import ComputeResource


def ranker_asset_of(evaluation_report: dict, ranker_name: str) -> str:
    """The asset that holds the ranker named `ranker_name` in this evaluation."""
    asset = (evaluation_report.get("ranker_assets") or {}).get(ranker_name)
    if asset is None and f"{ranker_name}_ranker" in RANKER_ASSETS:  # a report written before it kept the names
        asset = f"{ranker_name}_ranker"
    if asset is None:
        raise dg.Failure(f"no ranker asset holds {ranker_name!r} in this evaluation_report: materialize "
                         "evaluation_report again")
    return asset


def load_ranker(artifacts_io: dg.IOManager, asset_name: str, context: dg.AssetExecutionContext | None = None) -> TrainedRanker:
    """One ranker asset, read by name through the rankers' own IO manager: the other rankers' files are never
    opened (an asset that takes them all as inputs loads every one, 12 GiB on a 1M-interaction shop). With the
    step's `context`, the IO manager logs to the run, not to the console."""
    if asset_name not in RANKER_ASSETS:
        raise dg.Failure(f"{asset_name!r} is not a ranker asset of this code location ({', '.join(RANKER_ASSETS)})")
    input_context = dg.build_input_context(asset_key=dg.AssetKey(asset_name))
    if context is not None:
        input_context._log = context.log  # build_input_context (dagster 1.13) always logs to a console of its own
    stored = artifacts_io.load_input(input_context)
    return TrainedRanker.checked(stored, asset_name)


def online_section(store, release: CountRelease | None = None) -> list[str]:
    """CTR of the served lists so far (the events sensor keeps `online_metrics`), when there are any; from noisy
    counts when `release` has a finite epsilon."""
    return [online_markdown(store.read("online_metrics"), release)] if store.has_table("online_metrics") else []


class RankerFiles(Mapping[str, TrainedRanker]):
    """Ranker name -> its fit, read from its asset's file on every access and never kept, so that a reader that
    takes one at a time (`evaluate_suite`) holds one ranker in memory."""

    def __init__(self, artifacts_io: dg.IOManager, assets: dict[str, str], context: dg.AssetExecutionContext):
        self.artifacts_io, self.assets, self.context = artifacts_io, assets, context

    def __getitem__(self, name: str) -> TrainedRanker:
        return load_ranker(self.artifacts_io, self.assets[name], self.context)

    def __iter__(self) -> Iterator[str]:
        return iter(self.assets)

    def __len__(self) -> int:
        return len(self.assets)


# The rankers are dependencies (lineage), not inputs: inputs are all loaded before the step starts, and the
# evaluation reads one ranker at a time (`RankerFiles`).
@dg.asset(deps=RANKER_ASSETS, group_name="evaluation", io_manager_key=ARTIFACTS_IO, kinds={"duckdb", "mlflow"})
def evaluation_report(
    context: dg.AssetExecutionContext,
    split: pd.DataFrame,
    warehouse: WarehouseResource,
    tracking: TrackingResource,
    dataset: DatasetResource,
    experiment: ExperimentResource,
    compute: ComputeResource,
    artifacts_io: dg.ResourceParam[dg.IOManager],
) -> dict:
    """Full-ranking test metrics of every ranker (and a seeded random floor), written to
    `evaluation_metrics`, to each ranker's MLflow run and to a Markdown report with a plot. The user blocks are
    scored where `compute` says (in-process, or spread over a Ray cluster's nodes). The rankers are read one at a
    time: once for their provenance (name, validation score, fit key, MLflow run), then, unless the fit cache
    holds the result, once more each while it is evaluated."""
    mark = PeakMark()
    blocks = compute.blocks()  # an unreachable cluster fails here, before any work
    data = InteractionData.from_split(split)
    assets: dict[str, str] = {}  # ranker name -> the asset that holds it
    valid_scores: dict[str, float] = {}
    fit_keys: dict[str, str] = {}
    run_ids: dict[str, str] = {}
    fingerprints: dict[str, str] = {}
    for asset in sorted(RANKER_ASSETS):  # the order Dagster passed them in as inputs: rows and champion ties keep it
        t = load_ranker(artifacts_io, asset, context)
        name = t.ranker.name
        assets[name], valid_scores[name], fit_keys[name], run_ids[name], fingerprints[name] = (
            asset, t.valid_metrics[CHAMPION_METRIC], t.fit_key, t.mlflow_run_id, t.data_fingerprint)
        del t  # before the next file is read
    names = sorted(assets)
    # The suite follows from the fits and the seed: a re-run on unchanged inputs loads it.
    key = derived_key(experiment.seed, experiment.top_k, *names, *(fit_keys[name] for name in names))
    suite, cached = experiment.fit_cache_store().get_or_compute(
        "evaluation_suite", key,
        lambda: evaluate_suite(RankerFiles(artifacts_io, assets, context), data, seed=experiment.seed, progress=None,
                               top_k=experiment.top_k, blocks=blocks, valid_scores=valid_scores))
    if cached:
        context.log.info("evaluation_report: inputs unchanged, the metrics are loaded from the fit cache")
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = suite.metrics.assign(run_id=context.run_id, created_at=now)
    warehouse.warehouse().append(
        "evaluation_metrics", rows[["run_id", "ranker", "slice", "fold", "metric", "k", "value", "created_at"]])

    tracker = tracking.tracker()
    for name, run_id in run_ids.items():
        for slice_name in rows.loc[rows["ranker"] == name, "slice"].unique():
            chosen = rows[(rows["ranker"] == name) & (rows["slice"] == slice_name)]
            tracker.log_metrics(run_id, dict(zip(chosen["metric"] + "@" + chosen["k"].astype(str),
                                                 chosen["value"], strict=True)), prefix=f"test_{slice_name}_")
        tracker.set_tags(run_id, {"champion": name == suite.champion})
    for c in suite.comparisons:
        prefix = f"vs_{c.baseline}_"
        tracker.log_metrics(run_ids[c.ranker], {
            f"{prefix}ndcg10_diff": c.mean_difference, f"{prefix}ndcg10_ci_low": c.ci_low,
            f"{prefix}ndcg10_ci_high": c.ci_high, f"{prefix}wilcoxon_p": c.wilcoxon_p})

    reports = tracking.reports()
    stem = f"evaluation_{now:%Y%m%dT%H%M%S}_{context.run_id[:8]}"
    main_slice = "all" if "all" in set(rows["slice"]) else "warm"
    table = metrics_table(suite.metrics, "test", main_slice)
    plot_path = plot_metrics(table, reports / f"{stem}.png", f"{dataset.label()} / {experiment.protocol}: test ({main_slice})")
    release = experiment.count_release()  # the report's counts and online CTR leave the platform
    markdown = render_report(suite.metrics, suite.champion, {
        "dataset": dataset.label(), "protocol": experiment.protocol, "seed": str(experiment.seed),
        **released_counts(int(suite.per_user(suite.champion, "test", main_slice).shape[0]), release),
        "dagster run": context.run_id,
    }, plot_path, extra_sections=[comparisons_markdown(suite.comparisons)] + online_section(warehouse.warehouse(), release))
    # Tags, not params: a report re-run on the same ranker runs may use another budget, and params never change.
    tracker.set_tags(run_ids[suite.champion], {f"report_{k}": v for k, v in release.params().items()})
    report_path = reports / f"{stem}.md"
    report_path.write_text(markdown)
    (reports / "latest.md").write_text(markdown)
    tracker.log_artifact(run_ids[suite.champion], report_path, "report")
    context.add_output_metadata({
        "report": dg.MetadataValue.md(markdown),
        "report_path": dg.MetadataValue.path(str(report_path)),
        "champion": suite.champion,
        "fit_cache": "hit" if cached else "miss",
        # which node scored how many user rows (all rankers and folds together): `local` when in-process
        "compute": blocks.name, "scored_rows_by_node": dg.MetadataValue.json(rows_by_node(blocks.placements)),
        f"champion_valid_{CHAMPION_METRIC}": dg.MetadataValue.float(round(suite.valid_scores[suite.champion], 5)),
        **{f"test_ndcg@10/{r}": dg.MetadataValue.float(round(float(v), 5)) for r, v in table["ndcg@10"].items()},
        **mark.metadata(),
    })
    return {
        "champion": suite.champion,
        "valid_scores": suite.valid_scores,
        "metrics": suite.metrics,
        "comparisons": [c.as_dict() for c in suite.comparisons],
        "report_path": str(report_path),
        "recommendations": suite.recommendations,  # the champion's top-k, published by `recommendations`
        "ranker_assets": assets,  # what loads the champion alone
        # what `recommendations` records of the champion, so that it reads no ranker file
        "champion_provenance": {"mlflow_run_id": run_ids[suite.champion],
                                "data_fingerprint": fingerprints[suite.champion]},
    }


# The rankers are dependencies (lineage), not inputs: an input is loaded before the step starts, all twelve of them.
@dg.asset(deps=RANKER_ASSETS, metadata={"table": "recommendations"}, group_name="serving", kinds={"duckdb"})
def recommendations(
    context: dg.AssetExecutionContext,
    evaluation_report: dict,
    experiment: ExperimentResource,
    dataset: DatasetResource,
    warehouse: WarehouseResource,
) -> pd.DataFrame:
    """Top-k per user from the champion, excluding everything the user already interacted with (computed by the
    evaluation from the champion's test scores, `evaluate_suite(top_k=...)`). Each publication is appended to
    `champion_history` (the blocking `champion_not_regressed` check compares the next champion with it). No ranker
    file is read: the report carries the lists and the champion's provenance."""
    mark = PeakMark()
    name = evaluation_report["champion"]
    asset_name = ranker_asset_of(evaluation_report, name)
    provenance = evaluation_report.get("champion_provenance")
    if provenance is None:
        raise dg.Failure("this evaluation_report does not carry the champion's provenance (written by an older "
                         "version): materialize evaluation_report again")
    frame = evaluation_report["recommendations"]
    record_publication(warehouse.warehouse(), Publication(
        run_id=context.run_id, ranker=name, ranker_asset=asset_name, metric=CHAMPION_METRIC,
        valid_score=float(evaluation_report["valid_scores"][name]), dataset=dataset.label(),
        protocol=experiment.protocol, cold_items=experiment.cold_items, mlflow_run_id=provenance["mlflow_run_id"],
        data_fingerprint=provenance["data_fingerprint"],
    ))
    context.add_output_metadata({"ranker": name, "users": int(frame["user_id"].nunique()),
                                 "mlflow_run_id": provenance["mlflow_run_id"], "rankers_loaded": "",
                                 **mark.metadata()})
    return frame.assign(ranker=name)[["ranker", "user_id", "rank", "item_id", "score"]]
