"""Ingestion throughput and memory on a synthetic shop (no MovieLens needed).

`--path bulk` (the default): `data.synthetic` writes N interactions (Parquet, string ids, power-law item
popularity and user activity, epoch timestamps, 0.1% planted bad rows) and M items (Parquet, with text);
then, in a fresh process per size, `data.bulk` reads, validates (bad rows to `quarantine`), inserts into
`ratings`, splits (RecBole protocol) and counts popularity inside DuckDB, under a DuckDB memory_limit, on
`--threads` threads. Reports each stage's seconds, rows/s and the process's peak RSS (DuckDB included).

    nice -n 5 .venv/bin/python benchmarks/ingest.py --interactions 1000000 20000000 --items 100000

`--path pandas` loads the same files through `load_dataset` (every row in pandas): the path the Dagster
assets take, about 0.6 GiB per million rows. `--layout grouplens` (pandas path) exercises the CSV reader
with store_rejects. Data goes to a temporary folder (`--tmp`, default the system's).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic


def generate_grouplens(folder: Path, n: int, n_items: int, seed: int = 7) -> str:
    """A GroupLens-layout folder (u.data, u.item) with power-law popularity and 0.1% bad rows."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, size=n, p=popularity / popularity.sum())
    users = rng.integers(0, max(1, n // 50), size=n)
    stamps = rng.integers(1_577_836_800, 1_704_067_200, size=n)  # 2020 .. 2023
    stars = rng.integers(1, 6, size=n)
    bad = rng.choice(n, size=max(1, n // 1000), replace=False)
    lines = np.char.add(np.char.add(np.char.add(np.char.add(users.astype(str), "\t"), (items + 1).astype(str)),
                                    "\t"), np.char.add(np.char.add(stars.astype(str), "\t"), stamps.astype(str)))
    lines = lines.astype(object)
    lines[bad] = [f"{u}\t{i + 1}\t9\t{t}" for u, i, t in zip(users[bad], items[bad], stamps[bad], strict=True)]
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    flags = "|".join(["0"] * 19)
    (folder / "u.item").write_text("\n".join(f"{i + 1}|Item {i + 1} (2020)|01-Jan-2020||http://x|{flags}"
                                             for i in range(n_items)) + "\n", encoding="latin-1")
    return str(folder)


def _bulk(source: str, workdir: str, memory_limit: str, threads: int, queue) -> None:
    from llmrec_platform.data.bulk import bulk_load, bulk_split
    from llmrec_platform.data.config import load_config
    from llmrec_platform.data.datasets import partition_range
    from llmrec_platform.data.split import SplitConfig
    from llmrec_platform.storage.warehouse import Warehouse

    store = Warehouse(Path(workdir) / "warehouse.duckdb")
    start = time.perf_counter()
    report = bulk_load(load_config(source), store, partition_range(), memory_limit=memory_limit, threads=threads)
    report = bulk_split(store, SplitConfig(), report, memory_limit=memory_limit, threads=threads)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    queue.put((seconds, report.loaded, report.quarantined, peak, report.seconds, report.split_rows,
               store.path.stat().st_size / 1024**3))


def _load(source: str, queue) -> None:
    from llmrec_platform.data.datasets import load_dataset

    start = time.perf_counter()
    dataset = load_dataset(source)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    queue.put((seconds, len(dataset.ratings), len(dataset.quarantine), peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--layout", choices=["config", "grouplens"], default="config")
    parser.add_argument("--path", choices=["bulk", "pandas"], default="bulk")
    parser.add_argument("--memory-limit", default="4GB", help="DuckDB's memory_limit (bulk path)")
    parser.add_argument("--threads", type=int, default=2, help="DuckDB threads (bulk path)")
    parser.add_argument("--tmp", default=None, help="folder for the generated data and the warehouse")
    args = parser.parse_args()
    if args.path == "bulk" and args.layout == "grouplens":
        parser.error("the bulk path reads Parquet: use --path pandas with --layout grouplens")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GiB; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    if args.path == "bulk":
        return bulk_main(args)
    print("| layout | interactions | load s | rows/s | loaded | quarantined | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.interactions:
            if args.layout == "config":
                source = str(write_synthetic(Path(tmp) / f"n{n}", SyntheticSpec(n, args.items, bad_fraction=0.001)))
            else:
                source = generate_grouplens(Path(tmp) / f"n{n}", n, args.items)
            context = multiprocessing.get_context("spawn")  # a fresh process: its own peak RSS
            queue = context.Queue()
            process = context.Process(target=_load, args=(source, queue))
            process.start()
            seconds, loaded, quarantined, peak = queue.get()
            process.join()
            print(f"| {args.layout} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} | {loaded:,} | {quarantined:,} | "
                  f"{peak:.2f} |")



def bulk_main(args) -> None:
    stages = ["read + row checks", "repeated keys", "unknown items + insert ratings, quarantine", "filter + k-core",
              "split", "popularity"]
    print(f"\nbulk path (DuckDB memory_limit {args.memory_limit}, {args.threads} threads)\n")
    print("| interactions | items | generate s | " + " | ".join(f"{s} s" for s in stages)
          + " | total s | rows/s | loaded | quarantined | split rows | warehouse GiB | peak RSS GiB |")
    print("|---:|---:|---:|" + "---:|" * (len(stages) + 7))
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in args.interactions:
            folder = Path(tmp) / f"n{n}"
            start = time.perf_counter()
            source = write_synthetic(folder / "data", SyntheticSpec(n, args.items, bad_fraction=0.001))
            generated = time.perf_counter() - start
            context = multiprocessing.get_context("spawn")  # a fresh process: its own peak RSS
            queue = context.Queue()
            process = context.Process(target=_bulk, args=(str(source), str(folder), args.memory_limit, args.threads,
                                                           queue))
            process.start()
            seconds, loaded, quarantined, peak, per_stage, split_rows, size = queue.get()
            process.join()
            cells = " | ".join(f"{per_stage.get(s, 0.0):.1f}" for s in stages)
            print(f"| {n:,} | {args.items:,} | {generated:.1f} | {cells} | {seconds:.1f} | {n / seconds:,.0f} | "
                  f"{loaded:,} | {quarantined:,} | {split_rows:,} | {size:.2f} | {peak:.2f} |", flush=True)
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
