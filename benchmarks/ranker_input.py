"""What every ranker asset does with its `split` before fitting, as `train_ranker` does it: read the table from the
warehouse, build the matrices (`InteractionData.from_split`), fingerprint it (`data_fingerprint`).

`--input arrow` reads it as the ranker assets do now (`Warehouse.read_arrow`); `--input pandas` as they did before
(`Warehouse.read`). Each measurement runs in a fresh process (its own peak RSS) and prints CPU seconds (user + system,
all threads: comparable on a busy machine), wall time, peak RSS, the fingerprint and a digest of every matrix array,
so two code versions can be compared (run the previous commit's package with PYTHONPATH pointing at its checkout).
The split comes from a warehouse (`--warehouse`, e.g. an ML-1M demo home's `warehouse.duckdb`) or from a synthetic
shop of `--interactions` rows, made by `benchmarks/ingest.py`'s stages (RecBole protocol) in a temporary folder.

    nice -n 10 .venv/bin/python benchmarks/ranker_input.py --warehouse ~/.llmrec/warehouse.duckdb --input pandas arrow
    nice -n 10 .venv/bin/python benchmarks/ranker_input.py --interactions 5000000 --input arrow
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import hashlib
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import _cpu  # noqa: E402  (the process's user + system seconds)


def _measure(warehouse: str, kind: str, queue) -> None:
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.storage.tracking import data_fingerprint
    from llmrec_platform.storage.warehouse import Warehouse

    store = Warehouse(warehouse)
    wall, cpu = time.perf_counter(), [_cpu()]
    split = store.read_arrow("split") if kind == "arrow" else store.read("split")
    cpu.append(_cpu())
    data = InteractionData.from_split(split)
    cpu.append(_cpu())
    fingerprint = data_fingerprint(split)
    cpu.append(_cpu())
    digest = hashlib.sha256("\n".join(data.user_ids.astype(str)).encode() + "\n".join(data.item_ids.astype(str)).encode())
    for matrix in (data.train, data.train_timestamps, data.valid, data.test):
        for part in (matrix.indptr, matrix.indices, matrix.data):
            digest.update(part.dtype.str.encode() + part.tobytes())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB -> GiB
    queue.put(([b - a for a, b in zip(cpu, cpu[1:], strict=False)], time.perf_counter() - wall, len(data.user_ids),
               data.train.nnz, peak, fingerprint, digest.hexdigest()[:12]))


def synthetic_split(folder: Path, n: int, n_items: int) -> str:
    """A warehouse holding the split of a synthetic shop of `n` interactions (ingest.py's data and stages)."""
    from ingest import write_source  # benchmarks/ingest.py, beside this script

    from llmrec_platform.data.datasets import load_dataset
    from llmrec_platform.data.split import SplitConfig, interactions_table, split_table
    from llmrec_platform.storage.warehouse import Warehouse

    dataset = load_dataset(write_source(folder / "data", n, n_items, "parquet"))
    store = Warehouse(folder / "warehouse.duckdb")
    store.replace("split", split_table(interactions_table(dataset.ratings_table, dataset.items, 3.0, 10), SplitConfig()))
    return str(folder / "warehouse.duckdb")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--warehouse", help="a DuckDB warehouse with a `split` table")
    source.add_argument("--interactions", type=int, help="rows of a synthetic shop to split first")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--input", nargs="+", choices=["arrow", "pandas"], default=["arrow"])
    parser.add_argument("--repeat", type=int, default=1, help="measurements per input, alternating")
    args = parser.parse_args()
    print(f"package: {Path(llmrec_platform.__file__).parent}; load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()), flush=True)
    print("| input | read CPU s | matrices CPU s | fingerprint CPU s | total CPU s | wall s | users | train nnz "
          "| peak RSS GiB | fingerprint | matrices digest |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = args.warehouse or synthetic_split(Path(tmp), args.interactions, args.items)
        context = multiprocessing.get_context("spawn")  # a fresh process per measurement: its own peak RSS
        for _ in range(args.repeat):
            for kind in args.input:
                queue = context.Queue()
                process = context.Process(target=_measure, args=(warehouse, kind, queue))
                process.start()
                cpu, wall, users, nnz, peak, fingerprint, digest = queue.get()
                process.join()
                print(f"| {kind} | {' | '.join(f'{c:.2f}' for c in cpu)} | {sum(cpu):.2f} | {wall:.1f} | {users:,} | "
                      f"{nnz:,} | {peak:.2f} | {fingerprint} | {digest} |", flush=True)


if __name__ == "__main__":
    main()
