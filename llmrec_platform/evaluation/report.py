"""The evaluation report: a metrics table, a plot and the champion, as Markdown (no Dagster)."""

from __future__ import annotations

import base64
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from llmrec_platform.privacy.dp import CountRelease  # noqa: E402

TABLE_METRICS = ["ndcg@10", "recall@10", "precision@10", "f1@10", "map@10", "mrr@10", "hit@10", "ndcg@20", "recall@20",
                 "coverage@10", "novelty@10", "personalization@10"]


def metrics_table(metrics: pd.DataFrame, fold: str = "test", slice_name: str = "all") -> pd.DataFrame:
    """Wide table (ranker x metric@k) from long rows, best NDCG@10 first."""
    rows = metrics[(metrics["fold"] == fold) & (metrics["slice"] == slice_name)]
    if rows.empty:
        return pd.DataFrame()
    wide = rows.assign(key=rows["metric"] + "@" + rows["k"].astype(str)).pivot_table(
        index="ranker", columns="key", values="value", aggfunc="first")
    columns = [c for c in TABLE_METRICS if c in wide.columns]
    return wide[columns].sort_values("ndcg@10", ascending=False)


def format_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "_no rows_"
    header = "| ranker | " + " | ".join(table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    lines = [header, rule]
    for ranker, row in table.iterrows():
        lines.append(f"| {ranker} | " + " | ".join("" if pd.isna(v) else f"{v:.4f}" for v in row) + " |")
    return "\n".join(lines)


def released_counts(users_evaluated: int, release: CountRelease) -> dict[str, str]:
    """The report's context lines that count people, and the budget they were released under: the number of users
    evaluated is exact, or noisy when `release` has a finite epsilon (one user changes it by 1)."""
    users = release.release([users_evaluated], stream="report_users")[0]
    return {"users evaluated": str(max(0, round(float(users)))), "differential privacy": release.describe()}


def plot_metrics(table: pd.DataFrame, path: Path, title: str) -> Path:
    metrics = [m for m in ("ndcg@10", "recall@10", "mrr@10", "hit@10") if m in table.columns]
    fig, ax = plt.subplots(figsize=(8, 4))
    table[metrics].plot.bar(ax=ax)
    ax.set_title(title)
    ax.set_ylabel("value")
    ax.set_xlabel("")
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_report(
    metrics: pd.DataFrame, champion: str, context: dict[str, str], plot_path: Path, extra_sections: list[str] = (),
) -> str:
    """Markdown with every slice's table, the plot (inline, so the Dagster UI shows it) and the champion."""
    lines = ["# Evaluation report", ""]
    lines += [f"- **{key}**: {value}" for key, value in context.items()]
    lines += [f"- **champion** (best validation NDCG@10): `{champion}`", ""]
    for fold in ("test", "valid"):
        for slice_name in sorted(metrics.loc[metrics["fold"] == fold, "slice"].unique()):
            lines += [f"## {fold} fold, {slice_name} items", "", format_table(metrics_table(metrics, fold, slice_name)), ""]
    lines += list(extra_sections)
    encoded = base64.b64encode(plot_path.read_bytes()).decode()
    lines += ["## Plot", "", f"![metrics](data:image/png;base64,{encoded})", ""]
    return "\n".join(lines)
