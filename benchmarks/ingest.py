"""Ingestion throughput and memory of the validating loaders on a synthetic shop (no MovieLens needed).

Writes a dataset config with N interactions (Parquet, string ids, power-law item popularity, ISO-8601-free
epoch timestamps, 0.1% planted bad rows), M items (JSON Lines with text) — then, in a fresh process per
size, loads it through `load_dataset` (DuckDB readers, row validation, quarantine) and reports wall time,
rows/s and the process's peak RSS.

    .venv/bin/python benchmarks/ingest.py --interactions 1000000 2000000 --items 20000

The same sizes as a GroupLens-layout CSV (`--layout grouplens`) exercise the CSV path with store_rejects.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def generate(folder: Path, n: int, n_items: int, layout: str, seed: int = 7) -> str:
    """Synthetic interactions with power-law popularity; returns the dataset source (config path or folder)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    items = rng.choice(n_items, size=n, p=popularity / popularity.sum())
    users = rng.integers(0, max(1, n // 50), size=n)
    stamps = rng.integers(1_577_836_800, 1_704_067_200, size=n)  # 2020 .. 2023
    stars = rng.integers(1, 6, size=n)
    bad = rng.choice(n, size=max(1, n // 1000), replace=False)
    if layout == "grouplens":
        lines = np.char.add(np.char.add(np.char.add(np.char.add(users.astype(str), "\t"), (items + 1).astype(str)),
                                        "\t"), np.char.add(np.char.add(stars.astype(str), "\t"), stamps.astype(str)))
        lines = lines.astype(object)
        lines[bad] = [f"{u}\t{i + 1}\t9\t{t}" for u, i, t in zip(users[bad], items[bad], stamps[bad], strict=True)]
        (folder / "u.data").write_text("\n".join(lines) + "\n")
        flags = "|".join(["0"] * 19)
        (folder / "u.item").write_text("\n".join(f"{i + 1}|Item {i + 1} (2020)|01-Jan-2020||http://x|{flags}"
                                                 for i in range(n_items)) + "\n", encoding="latin-1")
        return str(folder)
    frame = pd.DataFrame({"customer": [f"U{u}" for u in users], "sku": [f"SKU-{i}" for i in items],
                          "stars": stars.astype(float), "ts": stamps})
    frame.loc[bad, "stars"] = 9.0  # outside rating_range: quarantined
    frame.to_parquet(folder / "events.parquet", index=False)
    with open(folder / "catalog.jsonl", "w") as f:
        for i in range(n_items):
            f.write(json.dumps({"sku": f"SKU-{i}", "name": f"Item {i}", "description": f"A thing of kind {i % 97}"}) + "\n")
    (folder / "shop.yaml").write_text(
        "interactions: {path: events.parquet, user: customer, item: sku, rating: stars, rating_range: [1, 5], "
        "timestamp: ts}\nitems: {path: catalog.jsonl, id: sku, text: [name, description]}\n")
    return str(folder / "shop.yaml")


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
    args = parser.parse_args()
    print("| layout | interactions | load s | rows/s | loaded | quarantined | peak RSS GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.interactions:
            source = generate(Path(tmp) / f"n{n}", n, args.items, args.layout)
            context = multiprocessing.get_context("spawn")  # a fresh process: its own peak RSS
            queue = context.Queue()
            process = context.Process(target=_load, args=(source, queue))
            process.start()
            seconds, loaded, quarantined, peak = queue.get()
            process.join()
            print(f"| {args.layout} | {n:,} | {seconds:.1f} | {n / seconds:,.0f} | {loaded:,} | {quarantined:,} | "
                  f"{peak:.2f} |")


if __name__ == "__main__":
    main()
