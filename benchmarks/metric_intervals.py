"""Each published ranker's test NDCG@10 with its 95 % bootstrap interval, and the tolerance check of a change.

    python benchmarks/metric_intervals.py --home .llmrec                      # one run's table
    python benchmarks/metric_intervals.py --home after/home --before before/home

With `--before`, each row gives the change and whether it is within the tolerance for speed changes: a quarter
of the width of the ranker's own 95 % interval (the `--before` run's), and 0.002 for the hybrid. The split comes
from each home's warehouse and the rankers from its artifacts, so two runs of the graph are compared as published.
Prints a Markdown table.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

METRIC = "ndcg@10"
HYBRID_TOLERANCE = 0.002


def per_user_ndcg(home: Path) -> dict[str, pd.DataFrame]:
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.evaluation.evaluate import evaluate
    from llmrec_platform.paths import Paths
    from llmrec_platform.rankers.published import load_ranker, published_rankers
    from llmrec_platform.storage.warehouse import Warehouse

    split = Warehouse(Paths(home).warehouse).query("SELECT * FROM split")
    data = InteractionData.from_split(split)
    return {name: evaluate(load_ranker(home, name), data, "test", ks=(10,)).per_user[["user_id", METRIC]]
            for name in sorted(published_rankers(home))}


def interval(values: np.ndarray, n_resamples: int = 2000, seed: int = 2020) -> tuple[float, float]:
    """Percentile bootstrap interval (95 %) of the mean over users."""
    rng = np.random.default_rng(seed)
    means = np.concatenate([values[rng.integers(0, len(values), size=(256, len(values)))].mean(axis=1)
                            for _ in range(0, n_resamples, 256)])[:n_resamples]
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True, help="LLMREC_HOME of the run to report (after)")
    parser.add_argument("--before", type=Path, help="LLMREC_HOME of the run to compare against")
    args = parser.parse_args()
    after = per_user_ndcg(args.home)
    before = per_user_ndcg(args.before) if args.before else {}
    if before:
        print(f"| ranker | before {METRIC} [95 % CI] | after {METRIC} [95 % CI] | change | tolerance | within |")
        print("|---|---|---|---:|---:|---|")
    else:
        print(f"| ranker | {METRIC} | 95 % CI |")
        print("|---|---:|---|")
    for name, frame in after.items():
        values = frame[METRIC].to_numpy(np.float64)
        low, high = interval(values)
        if name not in before:
            print(f"| {name} | {values.mean():.4f} | [{low:.4f}, {high:.4f}] |" if not before else
                  f"| {name} | (absent) | {values.mean():.4f} [{low:.4f}, {high:.4f}] | | | |")
            continue
        old = before[name][METRIC].to_numpy(np.float64)
        old_low, old_high = interval(old)
        tolerance = HYBRID_TOLERANCE if name == "hybrid" else (old_high - old_low) / 4
        change = values.mean() - old.mean()
        print(f"| {name} | {old.mean():.4f} [{old_low:.4f}, {old_high:.4f}] | {values.mean():.4f} [{low:.4f}, {high:.4f}] "
              f"| {change:+.4f} | {tolerance:.4f} | {'yes' if abs(change) <= tolerance else '**no**'} |")


if __name__ == "__main__":
    main()
