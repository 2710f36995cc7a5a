"""Replay evaluation of the live loop: the champion alone against the short-term blend.

Each test user's held-out interactions are replayed in time order as events; before each one the list is
computed from the history so far and the next item looked up (hit@10, NDCG@10; llmrec_platform.evaluation.replay).
The blend settings are chosen on the valid fold and reported on the test fold.

    python benchmarks/replay.py --dataset ml-100k --protocol temporal            # EASE fitted here
    python benchmarks/replay.py --home .llmrec --ranker hybrid                    # a published ranker

Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
import pandas as pd

from llmrec_platform.evaluation.replay import replay, replay_steps
from llmrec_platform.live.short_term import ShortTermBlend


def inputs(args) -> tuple:
    if args.home:
        from llmrec_platform.paths import Paths
        from llmrec_platform.rankers.published import load_ranker
        from llmrec_platform.storage.warehouse import Warehouse

        store = Warehouse(Paths(__import__("pathlib").Path(args.home)).warehouse)
        split = store.query("SELECT user_id, item_id, rating, timestamp, fold FROM split")
        embeddings = store.query("SELECT item_id, embedding FROM item_embeddings")
        return load_ranker(args.home, args.ranker), split, embeddings
    from llmrec_platform.data.datasets import load_dataset
    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
    from llmrec_platform.data.text import build_item_texts
    from llmrec_platform.encoders.models import TextEncoder
    from llmrec_platform.rankers.ease import EASERanker

    dataset = load_dataset(args.dataset)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol=args.protocol, seed=args.seed))
    texts, _ = build_item_texts(dataset.items)
    vectors, _ = TextEncoder().encode(texts["text"].tolist())
    return (EASERanker().fit(InteractionData.from_split(split)), split,
            pd.DataFrame({"item_id": texts["item_id"], "embedding": list(vectors)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--protocol", default="temporal", choices=["temporal", "recbole"])
    parser.add_argument("--home", help="read the split, embeddings and --ranker from a home a run published")
    parser.add_argument("--ranker", default="ease")
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--seed", type=int, default=2020)
    args = parser.parse_args()
    start = time.perf_counter()
    ranker, split, embeddings = inputs(args)
    order = pd.Index(ranker.item_ids_)
    vectors = np.zeros((len(order), len(embeddings["embedding"].iloc[0])), dtype=np.float32)
    positions = order.get_indexer(embeddings["item_id"].astype(str))
    vectors[positions[positions >= 0]] = np.stack(embeddings["embedding"].to_numpy())[positions >= 0]
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    grid = {"champion alone": ShortTermBlend(weight=0)}
    for weight, recent, share in itertools.product((0.5, 1.0, 2.0), (1, 3, 5), (0.0, 0.5, 1.0)):
        grid[f"w={weight} recent={recent} llm_share={share}"] = ShortTermBlend(weight, recent, 0.5, share)
    valid = replay(ranker, replay_steps(ranker, split, "valid", args.max_users, args.seed), vectors, grid)
    valid = valid.sort_values("ndcg@10", ascending=False, kind="stable")
    print(f"## Valid fold ({ranker.name}, {args.home or args.dataset}, {args.protocol if not args.home else 'its'} split)\n")
    print(valid.head(8).to_markdown(index=False, floatfmt=".4f"))
    best = valid.iloc[0]["variant"] if valid.iloc[0]["variant"] != "champion alone" else valid.iloc[1]["variant"]
    default = ShortTermBlend()
    chosen = {"champion alone": grid["champion alone"], f"best on valid: {best}": grid[best],
              f"default: w={default.weight} recent={default.recent} llm_share={default.llm_share}": default}
    test = replay(ranker, replay_steps(ranker, split, "test", args.max_users, args.seed), vectors, chosen)
    print("\n## Test fold\n")
    print(test.to_markdown(index=False, floatfmt=".4f"))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
