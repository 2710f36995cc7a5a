"""The evaluation report and the published recommendations."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd

from llmrec_platform.assets.rankers import ARTIFACTS_IO, RANKER_ASSETS
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.champion import Publication, record_publication
from llmrec_platform.evaluation.report import metrics_table, plot_metrics, released_counts, render_report
from llmrec_platform.evaluation.significance import comparisons_markdown
from llmrec_platform.evaluation.suite import CHAMPION_METRIC, evaluate_suite
from llmrec_platform.live.online import online_markdown
from llmrec_platform.privacy.dp import CountRelease
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.rankers.fit_cache import derived_key
from llmrec_platform.resources import DatasetResource, ExperimentResource, TrackingResource, WarehouseResource

RANKER_INS = {name: dg.AssetIn(name) for name in RANKER_ASSETS}


def online_section(store, release: CountRelease | None = None) -> list[str]:
    """CTR of the served lists so far (the events sensor keeps `online_metrics`), when there are any; from noisy
    counts when `release` has a finite epsilon."""
    return [online_markdown(store.read("online_metrics"), release)] if store.has_table("online_metrics") else []


@dg.asset(ins=RANKER_INS, group_name="evaluation", io_manager_key=ARTIFACTS_IO, kinds={"duckdb", "mlflow"})
def evaluation_report(
    context: dg.AssetExecutionContext,
    split: pd.DataFrame,
    warehouse: WarehouseResource,
    tracking: TrackingResource,
    dataset: DatasetResource,
    experiment: ExperimentResource,
    **rankers: TrainedRanker,
) -> dict:
    """Full-ranking test metrics of every ranker (and a seeded random floor), written to
    `evaluation_metrics`, to each ranker's MLflow run and to a Markdown report with a plot."""
    data = InteractionData.from_split(split)
    trained = {t.ranker.name: t for t in rankers.values()}
    names = sorted(trained)
    # The suite follows from the fits and the seed: a re-run on unchanged inputs loads it.
    key = derived_key(experiment.seed, experiment.top_k, *names, *(trained[name].fit_key for name in names))
    suite, cached = experiment.fit_cache_store().get_or_compute(
        "evaluation_suite", key,
        lambda: evaluate_suite(trained, data, seed=experiment.seed, progress=None, top_k=experiment.top_k))
    if cached:
        context.log.info("evaluation_report: inputs unchanged, the metrics are loaded from the fit cache")
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = suite.metrics.assign(run_id=context.run_id, created_at=now)
    warehouse.warehouse().append(
        "evaluation_metrics", rows[["run_id", "ranker", "slice", "fold", "metric", "k", "value", "created_at"]])

    tracker = tracking.tracker()
    for name, t in trained.items():
        for slice_name in rows.loc[rows["ranker"] == name, "slice"].unique():
            chosen = rows[(rows["ranker"] == name) & (rows["slice"] == slice_name)]
            tracker.log_metrics(t.mlflow_run_id, dict(zip(chosen["metric"] + "@" + chosen["k"].astype(str),
                                                          chosen["value"], strict=True)), prefix=f"test_{slice_name}_")
        tracker.set_tags(t.mlflow_run_id, {"champion": name == suite.champion})
    for c in suite.comparisons:
        prefix = f"vs_{c.baseline}_"
        tracker.log_metrics(trained[c.ranker].mlflow_run_id, {
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
    tracker.set_tags(trained[suite.champion].mlflow_run_id, {f"report_{k}": v for k, v in release.params().items()})
    report_path = reports / f"{stem}.md"
    report_path.write_text(markdown)
    (reports / "latest.md").write_text(markdown)
    tracker.log_artifact(trained[suite.champion].mlflow_run_id, report_path, "report")
    context.add_output_metadata({
        "report": dg.MetadataValue.md(markdown),
        "report_path": dg.MetadataValue.path(str(report_path)),
        "champion": suite.champion,
        "fit_cache": "hit" if cached else "miss",
        f"champion_valid_{CHAMPION_METRIC}": dg.MetadataValue.float(round(suite.valid_scores[suite.champion], 5)),
        **{f"test_ndcg@10/{r}": dg.MetadataValue.float(round(float(v), 5)) for r, v in table["ndcg@10"].items()},
    })
    return {
        "champion": suite.champion,
        "valid_scores": suite.valid_scores,
        "metrics": suite.metrics,
        "comparisons": [c.as_dict() for c in suite.comparisons],
        "report_path": str(report_path),
        "recommendations": suite.recommendations,  # the champion's top-k, published by `recommendations`
    }


@dg.asset(ins=RANKER_INS, metadata={"table": "recommendations"}, group_name="serving", kinds={"duckdb"})
def recommendations(
    context: dg.AssetExecutionContext,
    evaluation_report: dict,
    experiment: ExperimentResource,
    dataset: DatasetResource,
    warehouse: WarehouseResource,
    **rankers: TrainedRanker,
) -> pd.DataFrame:
    """Top-k per user from the champion, excluding everything the user already interacted with (computed by the
    evaluation from the champion's test scores, `evaluate_suite(top_k=...)`). Each publication is appended to
    `champion_history` (the blocking `champion_not_regressed` check compares the next champion with it)."""
    asset_name, champion = next((name, t) for name, t in rankers.items()
                                if t.ranker.name == evaluation_report["champion"])
    frame = evaluation_report["recommendations"]
    record_publication(warehouse.warehouse(), Publication(
        run_id=context.run_id, ranker=champion.ranker.name, ranker_asset=asset_name, metric=CHAMPION_METRIC,
        valid_score=float(evaluation_report["valid_scores"][champion.ranker.name]), dataset=dataset.label(),
        protocol=experiment.protocol, cold_items=experiment.cold_items, mlflow_run_id=champion.mlflow_run_id,
        data_fingerprint=champion.data_fingerprint,
    ))
    context.add_output_metadata({"ranker": champion.ranker.name, "users": int(frame["user_id"].nunique()),
                                 "mlflow_run_id": champion.mlflow_run_id})
    return frame.assign(ranker=champion.ranker.name)[["ranker", "user_id", "rank", "item_id", "score"]]
