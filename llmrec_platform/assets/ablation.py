"""What the LLM features are worth: the hybrid ablation, after every evaluation."""

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd

from llmrec_platform import progress
from llmrec_platform.assets.rankers import ARTIFACTS_IO
from llmrec_platform.compute import rows_by_node
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.ablation import ABLATION_COLUMNS, ablate, ablation_markdown, hybrid_variants
from llmrec_platform.rankers.base import TrainedRanker
from llmrec_platform.rankers.fit_cache import derived_key
from llmrec_platform.resources import ComputeResource, ExperimentResource, TrackingResource, WarehouseResource


@dg.asset(group_name="evaluation", io_manager_key=ARTIFACTS_IO, kinds={"duckdb", "mlflow"})
def hybrid_ablation(
    context: dg.AssetExecutionContext, evaluation_report: dict, split: pd.DataFrame, hybrid_ranker: TrainedRanker,
    tfidf_content_ranker: TrainedRanker, warehouse: WarehouseResource, tracking: TrackingResource,
    experiment: ExperimentResource, compute: ComputeResource,
) -> pd.DataFrame:
    """The hybrid with its LLM features, without them, and with TF-IDF ones instead (same candidates, config and
    seeds): test NDCG@10 per slice with paired per-user differences (95% bootstrap interval, Wilcoxon p), written
    to the `ablation` table, to the hybrid's MLflow run and as a section of the evaluation report."""
    blocks = compute.blocks()  # where the variants' user blocks are scored; an unreachable cluster fails here
    data = InteractionData.from_split(split)
    cache = experiment.fit_cache_store()

    def compute_table() -> pd.DataFrame:
        variants = hybrid_variants(hybrid_ranker.ranker, data, tfidf_content_ranker.ranker, refit_cache=cache)
        return ablate(variants, data, seed=experiment.seed, blocks=blocks)

    # The table follows from the two fits and the seed: a re-run on unchanged inputs loads it.
    key = derived_key(hybrid_ranker.fit_key, tfidf_content_ranker.fit_key, experiment.seed)
    with progress.listening(progress.throttled(context.log.debug)):
        table, cached = cache.get_or_compute("hybrid_ablation", key, compute_table)
    if cached:
        context.log.info("hybrid_ablation: inputs unchanged, the table is loaded from the fit cache")
    rows = table.assign(run_id=context.run_id, created_at=datetime.now(UTC).replace(tzinfo=None))
    # One run's rows replace that run's rows only: the table keeps every run's ablation, re-runs do not duplicate.
    warehouse.warehouse().replace_where("ablation", rows[["run_id", *ABLATION_COLUMNS, "created_at"]], "run_id = ?",
                                        [context.run_id])
    tracker = tracking.tracker()
    for r in table[table["variant"] != "with_llm"].itertuples():
        prefix = f"ablation_{r.variant}_{r.slice}_"
        tracker.log_metrics(hybrid_ranker.mlflow_run_id, {f"{prefix}ndcg10": r.value, f"{prefix}diff": r.diff,
                                                          f"{prefix}ci_low": r.ci_low, f"{prefix}ci_high": r.ci_high,
                                                          f"{prefix}wilcoxon_p": r.p_value})
    markdown = ablation_markdown(table)
    report = Path(evaluation_report["report_path"])
    for path in (report, report.parent / "latest.md"):  # the report this evaluation wrote, and the latest copy
        if path.exists():
            path.write_text(path.read_text().rstrip("\n") + "\n\n" + markdown + "\n")
    tracker.log_artifact(hybrid_ranker.mlflow_run_id, report, "report")
    context.add_output_metadata({"ablation": dg.MetadataValue.md(markdown), "rows": len(rows),
                                 "fit_cache": "hit" if cached else "miss", "compute": blocks.name,
                                 "scored_rows_by_node": dg.MetadataValue.json(rows_by_node(blocks.placements))})
    return rows
