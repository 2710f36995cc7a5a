"""The memory of the hybrid's feature building on a shop-sized catalogue: peak RSS of one feature context and its
first blocks of users.

    nice -n 10 .venv/bin/python benchmarks/hybrid_feature_memory.py [--interactions 1000000] [--items 20000] [--blocks 3]

Writes the seeded synthetic shop of issue 20 (1M interactions, 20,000 catalogue items: 16,686 users x 13,738 items
after the RecBole protocol's 10-core filter) under /tmp/h2/shop, fits cheap candidate rankers on its train fold
(ItemKNN: a sparse item-item W; popularity; ALS with 32 factors, 3 iterations; pickled next to the shop) and a
content ranker on seeded random unit item vectors (it keeps its dense items x items similarity below
LLMREC_DENSE_MAX_ITEMS, as the pipeline's does), then builds a FeatureContext and the candidates and features of
the first `--blocks` blocks of 512 training users (the hybrid's `batch_size`), the way `labelled_features` does.
A thread samples the RSS every 10 ms; the figure is the peak above the RSS before the context was built (the data
and the rankers are loaded by then). EASE is left out: its W is dense already, so the hybrid adds no copy of it.
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
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.implicit_models import ALSRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.settings import Settings
from llmrec_platform.threads import pin_blas_threads

GIB = 2**30
BLOCK_USERS = 512


def shop(interactions: int, items: int, root: Path) -> tuple[InteractionData, dict, LLMContentRanker]:
    """The shop's split, its candidate rankers and content ranker (fitted once, then loaded)."""
    folder = root / f"{interactions}x{items}"
    config = folder / "synthetic.yaml"
    if not config.exists():
        write_synthetic(folder, SyntheticSpec(interactions, items))
    dataset = load_dataset(config)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=2020))
    data = InteractionData.from_split(split)
    fitted = folder / "feature_memory_rankers.pkl"
    if fitted.exists():
        rankers, vectors = pickle.loads(fitted.read_bytes())
    else:
        rankers = {"itemknn": ItemKNNRanker().fit(data), "popularity": PopularityRanker().fit(data),
                   "als": ALSRanker(factors=32, iterations=3).fit(data)}
        vectors = np.random.default_rng(0).standard_normal((data.n_items, 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        fitted.write_bytes(pickle.dumps((rankers, vectors), protocol=pickle.HIGHEST_PROTOCOL))
    content = LLMContentRanker(pd.DataFrame({"item_id": data.item_ids, "embedding": list(vectors)})).fit(data)
    return data, rankers, content


def measure(feature_context, data: InteractionData, rankers: dict, content: LLMContentRanker, blocks: int,
            share_similarity: bool) -> None:
    """Build `feature_context` (the class) and the features of `blocks` blocks; print seconds and peak RSS."""
    process = psutil.Process()
    peak, stop = [process.memory_info().rss], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    start_rss = process.memory_info().rss
    sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    extra = (content.item_similarity_,) if share_similarity else ()
    context = feature_context(rankers, lambda batch: content.user_vectors_[batch.histories.users], content.item_vectors_,
                              {}, data.train, data.train_timestamps, 4.0, *extra)
    rows = 0
    for block in range(blocks):
        users = np.arange(block * BLOCK_USERS, min((block + 1) * BLOCK_USERS, data.n_users))
        candidates, features = context.candidates_and_features(context.batch(users), 30)
        rows += len(features)
        del candidates, features
    seconds, cpu = time.perf_counter() - wall, time.process_time() - cpu
    stop.set()
    sampler.join()
    print(f"{data.n_users:,} users x {data.n_items:,} items; {blocks} blocks of {BLOCK_USERS} users, {rows:,} feature rows: "
          f"{seconds:.1f} s wall, {cpu:.1f} CPU s, peak RSS {peak[0] / GIB:.2f} GiB, "
          f"{(peak[0] - start_rss) / GIB:+.2f} GiB above the start ({start_rss / GIB:.2f}); "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--root", type=Path, default=Path("/tmp/h2/shop"))
    args = parser.parse_args()
    pin_blas_threads(Settings.from_env().num_threads)
    from llmrec_platform.rankers.hybrid import FeatureContext

    data, rankers, content = shop(args.interactions, args.items, args.root)
    measure(FeatureContext, data, rankers, content, args.blocks, share_similarity=True)


if __name__ == "__main__":
    main()
