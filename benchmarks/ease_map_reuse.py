"""`llm_ease_map` fitted from `ease_ranker`'s B against fitted alone: CPU seconds and wall time of each fit, the
process's peak RSS after each, and whether the stored weights are identical.

    nice -n 10 .venv/bin/python benchmarks/ease_map_reuse.py                       # ML-1M (RecBole protocol)
    nice -n 10 .venv/bin/python benchmarks/ease_map_reuse.py --synthetic 1000000   # the 1M-interaction shop

The item vectors are seeded random 384-d ones (what the map needs from an encoder); they only matter for cold
items, which neither split has. The fits run in one process in this order (EASE, the map from its B, the map
alone), so each peak is the process's so far: the map from B adds nothing to EASE's, the map alone its own.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import resource
import time

import numpy as np
import pandas as pd
from ml1m_multvae_bpr import load_chosen

from llmrec_platform.rankers.collab_map import CollabMapRanker
from llmrec_platform.rankers.ease import EASERanker


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(label: str, fit):
    cpu, wall = time.process_time(), time.perf_counter()
    fitted = fit()
    print(f"| {label} | {time.process_time() - cpu:.1f} | {time.perf_counter() - wall:.1f} | {peak_gib():.2f} |", flush=True)
    return fitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--synthetic", type=int, metavar="INTERACTIONS", help="the synthetic shop of this size instead")
    parser.add_argument("--reg-weight", type=float, default=750.0)
    args = parser.parse_args()
    data = load_chosen(args)
    vectors = np.random.default_rng(0).normal(size=(data.n_items, 384)).astype(np.float32)
    embeddings = pd.DataFrame({"item_id": list(data.item_ids), "embedding": list(vectors)})
    print(
        f"{args.dataset}: {data.n_users:,} users x {data.n_items:,} items, {int(data.cold_item_mask().sum())} cold items; "
        f"load average {load_average()}; peak after loading {peak_gib():.2f} GiB"
    )
    print("| fit | CPU s | wall s | process peak GiB |\n|---|---:|---:|---:|")
    ease = timed("ease_ranker", lambda: EASERanker(args.reg_weight).fit(data))
    reused = timed("llm_ease_map from ease_ranker's B", lambda: CollabMapRanker(embeddings, args.reg_weight, ease=ease).fit(data))
    alone = timed("llm_ease_map alone", lambda: CollabMapRanker(embeddings, args.reg_weight).fit(data))
    print(
        f"B from: {reused.ease_source_}; weights identical: {np.array_equal(reused.weights_, alone.weights_)}; "
        f"load average {load_average()}"
    )


if __name__ == "__main__":
    main()
