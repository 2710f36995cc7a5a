"""The hybrid's feature building (its training matrices) in-process and on a local 2-node Ray cluster.

    nice -n 10 .venv/bin/python benchmarks/ray_hybrid_features.py --home <LLMREC_HOME of a finished `llmrec demo`>

Takes the demo's fitted rankers (`artifacts/`) and its split, builds the pipeline hybrid's training parts (training,
held-out and pseudo-labelled users; the pseudo-label refits from the home's fit cache, fitted there first when it
lacks them) once in-process, then twice
on a cluster this script starts on 127.0.0.1 (fresh workers, then warm ones). Prints wall and CPU seconds (the
driver's, and the cluster's processes'), the rows each node built, whether the matrices are bit-identical (exit 1
when not), and the size of the pickled `FeatureContext` that each map ships once.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import os
import pickle
import sys
import time
from pathlib import Path

from llmrec_platform.compute.cluster import LOOPBACK_ENV, connect, start_local_cluster

os.environ.update(LOOPBACK_ENV)  # before anything imports Ray: this process starts the cluster on 127.0.0.1

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from llmrec_platform.compute import InProcess, rows_by_node  # noqa: E402
from llmrec_platform.data.interactions import InteractionData  # noqa: E402
from llmrec_platform.paths import Paths  # noqa: E402
from llmrec_platform.rankers.fit_cache import FitCache  # noqa: E402
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker  # noqa: E402
from llmrec_platform.threads import pin_blas_threads  # noqa: E402

CANDIDATES = ("ease_ranker", "itemknn_ranker", "als_ranker", "bpr_adam_ranker", "multvae_ranker")  # hybrid_ranker's


def cluster_cpu_seconds() -> float:
    """CPU seconds of this process's live descendants (the cluster's raylets, workers and actors)."""
    return sum(sum(child.cpu_times()[:4]) for child in psutil.Process().children(recursive=True) if child.is_running())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="LLMREC_HOME of a finished `llmrec demo`")
    args = parser.parse_args()
    pin_blas_threads(2)
    paths = Paths(args.home)

    def fitted(name: str):
        return pickle.loads((paths.artifacts / name).read_bytes()).ranker

    with duckdb.connect(str(paths.home / "warehouse.duckdb"), read_only=True) as conn:
        data = InteractionData.from_split(conn.execute("SELECT * FROM split").df())
    candidates = {ranker.name: ranker for ranker in map(fitted, CANDIDATES)}
    content, genre = fitted("llm_content_ranker"), fitted("genre_match_ranker")

    def build(blocks):
        hybrid = HybridRanker(candidates, content, {"genre_match": genre}, HybridConfig(),
                              refit_cache=FitCache(paths.fit_cache), blocks=blocks)
        hybrid.prepare(data)
        wall, cpu, cluster = time.perf_counter(), time.process_time(), cluster_cpu_seconds()
        parts = hybrid.training_parts(data)
        return hybrid, parts, time.perf_counter() - wall, time.process_time() - cpu, cluster_cpu_seconds() - cluster

    build(InProcess())  # untimed: fits the pseudo-label refits into the fit cache when it lacks them
    hybrid, local, wall, cpu, _ = build(InProcess())
    size = len(pickle.dumps(hybrid.context_, protocol=pickle.HIGHEST_PROTOCOL)) / 2 ** 20
    print(f"{sum(p.n_users for p in local.values())} users, rows {[len(p.y) for p in local.values()]}; "
          f"the FeatureContext pickles to {size:.1f} MB")
    print(f"in-process: {wall:.1f} s wall, {cpu:.1f} CPU s")
    same = True
    cluster = start_local_cluster()
    try:
        for workers in ("fresh", "warm"):
            blocks = connect(cluster.address)
            _, parts, wall, cpu, extra = build(blocks)
            equal = all(np.array_equal(getattr(parts[name], field), getattr(part, field))
                        for name, part in local.items() for field in ("X", "y", "groups", "users", "items"))
            same &= equal
            print(f"ray ({workers} workers): {wall:.1f} s wall, {cpu:.1f} CPU s in the driver + {extra:.1f} in the "
                  f"cluster; bit-identical: {equal}; users by node {rows_by_node(blocks.placements)}")
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
