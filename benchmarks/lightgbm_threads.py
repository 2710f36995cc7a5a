"""Does the hybrid's LightGBM need 2 threads? Same LambdaRank settings as HybridConfig, 1 vs 2 threads, and two
models one after the other (2 threads each) against side by side (1 thread each, as `parallel_models` trains them).

    .venv/bin/python benchmarks/lightgbm_threads.py [--groups 1600] [--trees 120]

A synthetic ranking set the size of ML-100K's hybrid training set (1,600 groups of 30 candidates, 45
features). Prints whether the two models' predictions are bit-identical (deterministic=True,
force_row_wise=True, as the hybrid sets them) and the wall and CPU seconds of each fit, with the load; then the
wall and CPU seconds of the seeds' two models in turn and side by side, and whether they are bit-identical.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import os
import time
from concurrent.futures import ThreadPoolExecutor

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
    wall, cpu = time.perf_counter(), time.process_time()
    in_turn = [fit(X, y, groups, 2, seed, args.trees)[0] for seed in (2020, 2021)]
    turn_wall, turn_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(2) as pool:
        side = [f.result()[0] for f in [pool.submit(fit, X, y, groups, 1, seed, args.trees) for seed in (2020, 2021)]]
    side_wall, side_cpu = time.perf_counter() - wall, time.process_time() - cpu
    identical = all(np.array_equal(a, b) for a, b in zip(in_turn, side, strict=True))
    print(f"\ntwo models in turn (2 threads each): {turn_wall:.1f} s wall, {turn_cpu:.1f} CPU s; side by side (1 thread "
          f"each): {side_wall:.1f} s wall, {side_cpu:.1f} CPU s; identical {identical}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
