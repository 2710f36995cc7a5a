"""Ingestion and split throughput and memory, as the assets run them: the one data path.

The input is a synthetic shop (no MovieLens needed) or a dataset by name (`--dataset ml-1m`). `data.synthetic`
writes N interactions (string ids, power-law item popularity and user activity, epoch timestamps, 0.1% planted bad
rows) and M items; `--format` picks how the interactions are stored: `parquet` (as written), `csv` (one CSV file, read
by DuckDB's CSV reader with store_rejects) or `grouplens` (a `u.data` / `u.item` folder). Then, in a fresh process per
input, what `raw_ratings` -> `interactions` -> `split` do, each stage reading its input from a DuckDB warehouse and
writing its output there in Arrow, as the warehouse IO manager does: `load_dataset` (DuckDB reads, the row checks and
the quarantine run in SQL) and the `ratings` table, `interactions_table` and `split_table` (SQL, RecBole protocol).
Reports each stage's CPU seconds (user + system, all threads: comparable on a busy machine, unlike wall time), the
wall time and the process's peak RSS (DuckDB included).

    nice -n 5 .venv/bin/python benchmarks/ingest.py --interactions 1000000 5000000 --format csv
    nice -n 5 .venv/bin/python benchmarks/ingest.py --dataset ml-1m

Data goes to a temporary folder (`--tmp`, default the system's).
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

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


def write_source(folder: Path, n: int, n_items: int, fmt: str) -> str:
    """The synthetic shop in `fmt`; returns what `load_dataset` takes."""
    if fmt == "grouplens":
        return generate_grouplens(folder, n, n_items)
    config = write_synthetic(folder, SyntheticSpec(n, n_items, bad_fraction=0.001))
    if fmt == "csv":
        import duckdb

        with duckdb.connect() as conn:
            conn.execute(f"COPY (SELECT * FROM read_parquet('{folder}/events/*.parquet')) TO '{folder}/events.csv' "
                         "(HEADER)")
        shutil.rmtree(folder / "events")
        config.write_text(config.read_text().replace("events/*.parquet", "events.csv"))
    return str(config)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(source: str, warehouse: str, queue) -> None:
    import pyarrow as pa

    from llmrec_platform.data.datasets import load_dataset
    from llmrec_platform.data.split import SplitConfig, interactions_table, split_table
    from llmrec_platform.storage.warehouse import Warehouse

    store = Warehouse(warehouse)
    wall, cpu = time.perf_counter(), [_cpu()]
    dataset = load_dataset(source)
    ratings = dataset.ratings_table
    store.replace("ratings", ratings.append_column("dataset", pa.repeat(pa.scalar(source, pa.string()), len(ratings))))
    cpu.append(_cpu())
    store.replace("interactions", interactions_table(store.read_arrow("ratings"), dataset.items, 3.0, 10))
    cpu.append(_cpu())
    split = split_table(store.read_arrow("interactions"), SplitConfig())
    store.replace("split", split)
    cpu.append(_cpu())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    queue.put(([b - a for a, b in zip(cpu, cpu[1:], strict=False)], time.perf_counter() - wall, len(ratings),
               len(dataset.quarantine), len(split), peak))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--format", choices=["parquet", "csv", "grouplens"], default="csv")
    parser.add_argument("--dataset", default=None, help="a dataset by name or path (e.g. ml-1m) instead of the shop")
    parser.add_argument("--tmp", default=None, help="folder for the generated data and the warehouse")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GiB; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    print("| format | interactions | load CPU s | interactions CPU s | split CPU s | wall s | loaded | quarantined "
          "| split rows | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        for n in [None] if args.dataset else args.interactions:
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            source = args.dataset or write_source(folder, n, args.items, args.format)
            context = multiprocessing.get_context("spawn")  # a fresh process: its own peak RSS
            queue = context.Queue()
            process = context.Process(target=_run, args=(source, str(folder / "warehouse.duckdb"), queue))
            process.start()
            cpu, wall, loaded, quarantined, split_rows, peak = queue.get()
            process.join()
            cells = " | ".join(f"{c:.1f}" for c in cpu)
            print(f"| {args.dataset or args.format} | {n or loaded + quarantined:,} | {cells} | {wall:.1f} | {loaded:,} | "
                  f"{quarantined:,} | {split_rows:,} | {peak:.2f} |", flush=True)
            shutil.rmtree(folder, ignore_errors=True)

if __name__ == "__main__":
    main()
