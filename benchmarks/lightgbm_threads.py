"""Does the hybrid's LightGBM need 2 threads? Same LambdaRank settings as HybridConfig, 1 vs 2 threads.

    .venv/bin/python benchmarks/lightgbm_threads.py [--groups 1600] [--trees 120]

A synthetic ranking set the size of ML-100K's hybrid training set (1,600 groups of 30 candidates, 45
features). Prints whether the two models' predictions are bit-identical (deterministic=True,
force_row_wise=True, as the hybrid sets them) and the wall and CPU seconds of each fit, with the load.
"""

from __future__ import annotations

import argparse
import os
import time

import lightgbm as lgb
import numpy as np

from llmrec_platform.rankers.hybrid import HybridConfig


def fit(X, y, groups, threads: int, seed: int, trees: int):
    cfg = HybridConfig()
    model = lgb.LGBMRanker(
        objective=cfg.objective, n_estimators=trees, learning_rate=cfg.learning_rate, num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples, colsample_bytree=cfg.feature_fraction, subsample=cfg.bagging_fraction,
        subsample_freq=1, lambdarank_truncation_level=cfg.truncation_level, metric="None", random_state=seed,
        n_jobs=threads, deterministic=True, force_row_wise=True, verbose=-1)
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(X, y, group=groups)
    return model.booster_.predict(X), time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", type=int, default=1600)
    parser.add_argument("--trees", type=int, default=120)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    groups = np.full(args.groups, 30)
    X = rng.normal(size=(groups.sum(), 45)).astype(np.float32)
    y = (rng.random(groups.sum()) < 0.08).astype(int)
    X[:, 0] += 0.8 * y
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| seed | identical | 2 threads wall s | CPU s | 1 thread wall s | CPU s |\n|---|---|---:|---:|---:|---:|")
    for seed in (2020, 2021):
        two, wall2, cpu2 = fit(X, y, groups, 2, seed, args.trees)
        one, wall1, cpu1 = fit(X, y, groups, 1, seed, args.trees)
        print(f"| {seed} | {np.array_equal(one, two)} | {wall2:.1f} | {cpu2:.1f} | {wall1:.1f} | {cpu1:.1f} |")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
