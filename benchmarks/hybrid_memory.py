"""Where the hybrid's fit holds its memory on a synthetic shop: peak RSS of each phase of `HybridRanker.fit`.

    nice -n 10 .venv/bin/python benchmarks/hybrid_memory.py [--interactions 300000] [--items 12000] [--no-multvae]

Writes a seeded synthetic shop (`llmrec_platform.data.synthetic`) under /tmp/h2/shop, splits it under the RecBole
protocol (ratings >= 3, 10-core, random 8:1:1), fits the hybrid's base rankers (EASE, ItemKNN, ALS, Adam-BPR,
Mult-VAE, genre match; pickled next to the shop, so a second run fits only the hybrid) and a content ranker on
seeded random unit item vectors (memory does not depend on what the vectors say; encoding thousands of texts would
cost minutes), then fits the hybrid while a thread samples the process RSS every 20 ms. Prints each phase's wall and
CPU seconds and its peak RSS above the RSS before the fit (the base rankers and the data are loaded by then).
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import os
import pickle
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.implicit_models import AdamBPRRanker, ALSRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.multvae import MultVAERanker
from llmrec_platform.settings import Settings
from llmrec_platform.threads import pin_blas_threads

GIB = 2**30


class PeakSampler:
    """The process RSS, sampled every `interval` seconds in a thread; `peak` since the last `reset`."""

    def __init__(self, interval: float = 0.02):
        self.process, self.interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def reset(self) -> int:
        self.peak = self.process.memory_info().rss
        return self.peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=300_000)
    parser.add_argument("--items", type=int, default=12_000)
    parser.add_argument("--no-multvae", action="store_true")
    parser.add_argument("--root", type=Path, default=Path("/tmp/h2/shop"))
    args = parser.parse_args()
    pin_blas_threads(Settings.from_env().num_threads)
    root = args.root / f"{args.interactions}x{args.items}"
    config = root / "synthetic.yaml"
    if not config.exists():
        write_synthetic(root, SyntheticSpec(args.interactions, args.items))
    dataset = load_dataset(config)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=2020))
    data = InteractionData.from_split(split)
    print(f"shop: {data.n_users:,} users x {data.n_items:,} items, {data.train.nnz:,} training interactions; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    bases_path = root / f"bases{'_nomultvae' if args.no_multvae else ''}.pkl"
    if bases_path.exists():
        candidates, content, features = pickle.loads(bases_path.read_bytes())
    else:
        candidates = {}
        rankers = {"ease": EASERanker(), "itemknn": ItemKNNRanker(), "als": ALSRanker(), "bpr_adam": AdamBPRRanker()}
        if not args.no_multvae:
            rankers["multvae"] = MultVAERanker()
        for name, ranker in rankers.items():
            start = time.perf_counter()
            candidates[ranker.name] = ranker.fit(data)
            print(f"fitted {name} in {time.perf_counter() - start:.1f} s", flush=True)
        vectors = np.random.default_rng(0).standard_normal((data.n_items, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        content = LLMContentRanker(pd.DataFrame({"item_id": data.item_ids, "embedding": list(vectors)})).fit(data)
        features = {"genre_match": GenreMatchRanker(dataset.items).fit(data)}
        bases_path.write_bytes(pickle.dumps((candidates, content, features), protocol=pickle.HIGHEST_PROTOCOL))
    hybrid = HybridRanker(candidates, content, features, HybridConfig(seed=2020))
    sampler = PeakSampler()
    phases: list[tuple[str, float, float, int]] = []
    base = sampler.reset()

    @contextmanager
    def phase(name: str):
        before_peak = sampler.peak
        sampler.peak = sampler.process.memory_info().rss
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            phases.append((name, time.perf_counter() - wall, time.process_time() - cpu, sampler.peak))
            sampler.peak = max(before_peak, sampler.peak)

    def wrapped(method_name: str, label):
        method = getattr(HybridRanker, method_name)

        def call(self, *a, **k):
            with phase(label(*a, **k)):
                return method(self, *a, **k)

        setattr(HybridRanker, method_name, call)

    wrapped("prepare", lambda data: "prepare (own rankers, feature context)")
    wrapped("_ranking_set", lambda context, users, labels: f"features of {len(users):,} users")
    wrapped("_pseudo_refit", lambda name, ranker, inner, fingerprint: f"pseudo-label refit of {name}")
    wrapped("train_model", lambda matrices: "LambdaRank models")
    wall, cpu = time.perf_counter(), time.process_time()
    hybrid.fit(data)
    total = (time.perf_counter() - wall, time.process_time() - cpu, sampler.peak)
    sampler.stop()
    print(f"\nRSS before the fit {base / GIB:.2f} GiB\n\n| phase | wall s | CPU s | peak RSS GiB | above start GiB |\n"
          "|---|---:|---:|---:|---:|")
    for name, seconds, cpu_seconds, peak in [*phases, ("**the whole fit**", *total)]:
        print(f"| {name} | {seconds:.1f} | {cpu_seconds:.1f} | {peak / GIB:.2f} | {(peak - base) / GIB:+.2f} |")
    print(f"\nload average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}; holdout NDCG@10 "
          f"{hybrid.training_log_.extra['holdout_full_ranking_ndcg@10']!r}")


if __name__ == "__main__":
    main()
