"""The HNSW index against exact search: recall@100, build time, query time, and the same answers twice.

    nice -n 10 .venv/bin/python benchmarks/retrieval.py --warehouse /tmp/runs/ml1m/home/warehouse.duckdb
    nice -n 10 .venv/bin/python benchmarks/retrieval.py --synthetic-items 200000

`--warehouse`: the real item vectors of a finished run (its `item_embeddings` table, e.g. ML-1M's MiniLM vectors;
the file is opened read-only). `--synthetic-items N`: N unit vectors of 384 dimensions around 2,000 seeded centres
(a catalogue's texts cluster by category). The index is built with the threshold at 1 (so it is used whatever the
size), the platform's HNSW parameters (`retrieval.HNSWParams`), and queried with `--queries` item vectors.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import os
import platform
import sys
import time

import numpy as np

from llmrec_platform.retrieval import VectorIndex


def warehouse_vectors(path: str) -> tuple[np.ndarray, str]:
    import duckdb

    with duckdb.connect(path, read_only=True) as conn:
        rows = conn.execute("SELECT embedding, model FROM item_embeddings ORDER BY item_id").fetchall()
    vectors = np.asarray([r[0] for r in rows], dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), f"{len(rows):,} item vectors of {rows[0][1]}"


def synthetic_vectors(n: int, dim: int = 384, centres: int = 2000, seed: int = 0) -> tuple[np.ndarray, str]:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dim)).astype(np.float32)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: the noise of 1M x 384 at once would be 3 GB of float64
        size = min(100_000, n - start)
        vectors[start:start + size] = middle[rng.integers(0, centres, size)] + 0.8 * rng.normal(size=(size, dim))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), f"{n:,} synthetic vectors (384-d, {centres:,} centres)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--warehouse", help="a run's warehouse.duckdb (read-only): its item_embeddings")
    source.add_argument("--synthetic-items", type=int)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=100)
    args = parser.parse_args()
    vectors, what = warehouse_vectors(args.warehouse) if args.warehouse else synthetic_vectors(args.synthetic_items)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {what}")
    start = time.perf_counter()
    index = VectorIndex(vectors, ann_min_items=1)
    build = time.perf_counter() - start
    print(f"index: {index.describe()}; built in {build:.1f} s (one thread)", flush=True)
    rng = np.random.default_rng(0)
    queries = vectors[np.sort(rng.choice(len(vectors), size=min(args.queries, len(vectors)), replace=False))]
    start = time.perf_counter()
    found, _ = index.search(queries, args.k)
    ann_ms = (time.perf_counter() - start) * 1000 / len(queries)
    start = time.perf_counter()
    truth, _ = index.search(queries, args.k, exact=True)
    exact_ms = (time.perf_counter() - start) * 1000 / len(queries)
    recall = np.mean([len(np.intersect1d(f, t)) / args.k for f, t in zip(found, truth, strict=True)])
    print(f"recall@{args.k} against exact search: {recall:.4f} ({len(queries):,} item vectors as queries)")
    print(f"per query: HNSW {ann_ms:.2f} ms, exact {exact_ms:.2f} ms (batch of {len(queries):,})", flush=True)
    again, _ = VectorIndex(vectors, ann_min_items=1).search(queries, args.k)  # a second build: as long as the first
    print(f"rebuilt from the same vectors: {'the same' if np.array_equal(found, again) else 'DIFFERENT'} top-{args.k} ids")
    return 0 if recall >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
