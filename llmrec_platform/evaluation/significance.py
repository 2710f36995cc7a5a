"""Paired comparison of two rankers on the same users: bootstrap interval and Wilcoxon test."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass(frozen=True)
class PairedComparison:
    ranker: str
    baseline: str
    metric: str
    users: int
    mean_ranker: float
    mean_baseline: float
    mean_difference: float
    ci_low: float
    ci_high: float
    wilcoxon_p: float

    @property
    def excludes_zero(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def as_dict(self) -> dict:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def paired_bootstrap(
    per_user_a: pd.DataFrame, per_user_b: pd.DataFrame, metric: str, name_a: str, name_b: str,
    n_resamples: int = 2000, confidence: float = 0.95, seed: int = 2020,
) -> PairedComparison:
    """Mean per-user difference (a - b) of `metric` with a percentile bootstrap interval over users."""
    joined = per_user_a[["user_id", metric]].merge(per_user_b[["user_id", metric]], on="user_id", suffixes=("_a", "_b"))
    if joined.empty:
        raise ValueError(f"{name_a} and {name_b} share no evaluated users")
    a = joined[f"{metric}_a"].to_numpy(dtype=np.float64)
    b = joined[f"{metric}_b"].to_numpy(dtype=np.float64)
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, 256):  # chunks bound memory for large user counts
        stop = min(start + 256, n_resamples)
        means[start:stop] = diff[rng.integers(0, len(diff), size=(stop - start, len(diff)))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    p_value = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    return PairedComparison(name_a, name_b, metric, len(diff), float(a.mean()), float(b.mean()),
                            float(diff.mean()), float(low), float(high), p_value)


def comparisons_markdown(comparisons: list[PairedComparison]) -> str:
    if not comparisons:
        return ""
    lines = ["## Paired comparison (test fold, per-user, 95% bootstrap interval)", "",
             "| ranker | baseline | metric | users | ranker mean | baseline mean | difference | 95% CI | Wilcoxon p |",
             "|---|---|---|---:|---:|---:|---:|---|---:|"]
    for c in comparisons:
        lines.append(f"| {c.ranker} | {c.baseline} | {c.metric} | {c.users} | {c.mean_ranker:.4f} | {c.mean_baseline:.4f} "
                     f"| {c.mean_difference:+.4f} | [{c.ci_low:+.4f}, {c.ci_high:+.4f}] | {c.wilcoxon_p:.2g} |")
    return "\n".join(lines) + "\n"
