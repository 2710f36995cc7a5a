"""Where the hybrid's fit spends its time: refit it from a home's trained base rankers, optionally profiled.

    .venv/bin/python benchmarks/profile_hybrid.py --home .llmrec [--threads 1] [--profile] [--dataset ml-100k]

Needs a home where `llmrec demo` has run on the same dataset with the default protocol and seed (the base
rankers are read from <home>/artifacts, the split is rebuilt the way the `split` asset builds it). Prints
wall and CPU seconds, the held-out validation NDCG@10 (the hybrid's champion score; compare it across
--threads to check that the thread count does not change the model) and, with --profile, the top of a
cProfile listing by cumulative time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pickle
import pstats
import time
from pathlib import Path

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker

CANDIDATES = ["ease_ranker", "itemknn_ranker", "als_ranker", "bpr_adam_ranker", "multvae_ranker"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--threads", type=int, default=HybridConfig.num_threads)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=2020))
    data = InteractionData.from_split(split)
    trained = {name: pickle.loads((args.home / "artifacts" / name).read_bytes())
               for name in [*CANDIDATES, "llm_content_ranker", "genre_match_ranker"]}
    hybrid = HybridRanker({trained[n].ranker.name: trained[n].ranker for n in CANDIDATES},
                          trained["llm_content_ranker"].ranker, {"genre_match": trained["genre_match_ranker"].ranker},
                          HybridConfig(seed=2020, num_threads=args.threads))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    profiler = cProfile.Profile() if args.profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    hybrid.fit(data)
    valid = evaluate(hybrid, data, "valid", users=hybrid.validation_users_).summary["ndcg@10"]
    if profiler:
        profiler.disable()
    print(f"threads {args.threads}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} CPU s, "
          f"held-out validation NDCG@10 {valid!r}; load average after: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)


if __name__ == "__main__":
    main()
