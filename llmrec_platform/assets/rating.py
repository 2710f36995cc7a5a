"""Rating prediction (`llmrec demo --task rating`, job `rating_pipeline`): Surprise's k-fold protocol on all
ratings, with the LLM features from the item and profile embeddings. Thin: the work is in llmrec_platform.rating."""

from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pyarrow as pa
from pydantic import Field

from llmrec_platform.assets.embeddings import GPU_OP_TAGS, GPU_POOL, encode_with_cache
from llmrec_platform.assets.rankers import ARTIFACTS_IO
from llmrec_platform.rating.protocol import RatingProtocol, cross_validate
from llmrec_platform.rating.report import summary_markdown
from llmrec_platform.resources import (
    DatasetResource,
    DeviceResource,
    EncoderResource,
    ExperimentResource,
    TrackingResource,
    WarehouseResource,
)
from llmrec_platform.storage.warehouse import RATING_METRICS_COLUMNS, RATING_METRICS_TABLE

RATING_GROUP = "rating"


@dg.asset(metadata={"table": "user_profile_embeddings"}, group_name=RATING_GROUP, kinds={"pytorch", "duckdb"},
          op_tags=GPU_OP_TAGS, pool=GPU_POOL)
def user_profile_embeddings(
    context: dg.AssetExecutionContext, user_texts: pd.DataFrame, device: DeviceResource, encoder: EncoderResource,
    warehouse: WarehouseResource,
) -> pd.DataFrame:
    """Unit-norm embeddings of every user's profile text (same encoder and cache as item_embeddings)."""
    matrix, model, metadata = encode_with_cache(context, user_texts, device, encoder, warehouse)
    context.add_output_metadata({**metadata, "users": len(user_texts)})
    return pd.DataFrame({"user_id": user_texts["user_id"].to_numpy(), "model": model, "embedding": list(matrix)})


class RatingConfig(dg.Config):
    n_folds: int = Field(default=RatingProtocol.n_folds, description="random folds over all ratings (Surprise: 5)")
    holdout: float = Field(default=RatingProtocol.holdout,
                           description="share of each training fold the stacker learns on (unseen by its base models)")
    refit: bool = Field(default=RatingProtocol.refit, description="refit the base models on the whole training fold")
    factors: int = RatingProtocol.factors
    epochs: int = RatingProtocol.epochs

    def protocol(self, seed: int) -> RatingProtocol:
        return RatingProtocol(n_folds=self.n_folds, seed=seed, holdout=self.holdout, refit=self.refit,
                              factors=self.factors, epochs=self.epochs)


@dg.asset(group_name=RATING_GROUP, io_manager_key=ARTIFACTS_IO, kinds={"lightgbm", "duckdb", "mlflow"})
def rating_report(
    context: dg.AssetExecutionContext, config: RatingConfig, raw_ratings: pa.Table, item_embeddings: pd.DataFrame,
    user_profile_embeddings: pd.DataFrame, warehouse: WarehouseResource, tracking: TrackingResource,
    dataset: DatasetResource, experiment: ExperimentResource,
) -> dict:
    """RMSE and MAE of every rating model per fold (seeded from the experiment seed), written to the
    `rating_metrics` table, to one MLflow run per model and to a Markdown report."""
    protocol = config.protocol(experiment.seed)
    # Arrow from the warehouse; pandas only for the three columns the protocol reads
    result = cross_validate(raw_ratings.select(["user_id", "item_id", "rating"]).to_pandas(), protocol, item_embeddings,
                            user_profile_embeddings, log=context.log.info)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = result.metrics.assign(run_id=context.run_id)
    # One run's rows replace that run's rows only: the table keeps every run.
    warehouse.warehouse().replace_where(RATING_METRICS_TABLE, rows[list(RATING_METRICS_COLUMNS)].assign(created_at=now),
                                        "run_id = ?", [context.run_id])
    summary = result.summary()
    markdown = "\n".join(["# Rating prediction report", "", f"- **dataset**: {dataset.label()}",
                          f"- **ratings**: {raw_ratings.num_rows}", f"- **seed**: {experiment.seed}",
                          f"- **dagster run**: {context.run_id}", "", summary_markdown(result), ""])
    reports = tracking.reports()
    report_path = reports / f"rating_{now:%Y%m%dT%H%M%S}_{context.run_id[:8]}.md"
    report_path.write_text(markdown)
    (reports / "rating_latest.md").write_text(markdown)
    tracker = tracking.tracker()
    run_ids = {}
    for model, frame in rows.groupby("model", sort=False):
        run_id = tracker.start_run(f"rating_{model}", {**result.params, "dataset": dataset.label(), "task": "rating"},
                                   tags={"dagster_run_id": context.run_id, "task": "rating", "model": model})
        for r in frame.itertuples():
            tracker.log_metrics(run_id, {"rmse": r.rmse, "mae": r.mae, "fit_seconds": r.fit_seconds}, step=int(r.fold))
        tracker.log_metrics(run_id, {"mean_rmse": summary.loc[model, "rmse_mean"],
                                     "mean_mae": summary.loc[model, "mae_mean"]})
        run_ids[model] = run_id
    best = str(summary.index[0])
    tracker.log_artifact(run_ids[best], report_path, "report")
    for run_id in run_ids.values():
        tracker.end_run(run_id)
    ablation = result.ablation()
    context.add_output_metadata({
        "report": dg.MetadataValue.md(markdown),
        "report_path": dg.MetadataValue.path(str(report_path)),
        "best_model": best,
        **{f"mean_rmse/{m}": dg.MetadataValue.float(round(float(v), 5)) for m, v in summary["rmse_mean"].items()},
        **({"llm_features_rmse_diff": dg.MetadataValue.float(round(ablation["diff"], 5))} if ablation else {}),
    })
    return {"metrics": rows, "summary": summary, "ablation": ablation, "best_model": best,
            "report_path": str(report_path), "markdown": markdown}
