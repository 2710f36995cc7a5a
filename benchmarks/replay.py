"""Replay evaluation of the live loop: the champion alone against the live ranking (channels, one score).

Each test user's held-out interactions are replayed in time order as events; before each one the list is
computed from the history so far and the next item looked up (hit@10, NDCG@10; llmrec_platform.evaluation.replay).
A grid of settings is ranked on the valid fold; on the test fold the shipped default and the best on valid are
compared with the champion alone, paired per user (95 % bootstrap interval of the mean difference).

    python benchmarks/replay.py --dataset ml-100k --protocol temporal            # EASE fitted here
    python benchmarks/replay.py --dataset ml-100k --protocol recbole             # the random 8:1:1 split
    python benchmarks/replay.py --home .llmrec --ranker hybrid                    # a published ranker, its split
    python benchmarks/replay.py --home .llmrec --ranker hybrid --protocol temporal --ranker-cache /tmp/h.pkl

With --home and --protocol, the home's interactions are split again under that protocol and a copy of the published
ranker (the same settings and item vectors) is fitted on it (`Ranker.refit_elsewhere`: a hybrid's base rankers
first, its content and genre rankers from the home's embeddings and items). --ranker-cache keeps that fit for the next run.

Prints Markdown tables.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import itertools
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.evaluation.replay import per_user, replay_per_step, replay_steps
from llmrec_platform.evaluation.significance import comparisons_markdown, paired_bootstrap
from llmrec_platform.live.channels import LiveRanking


def inputs(args) -> tuple:
    if args.home:
        from llmrec_platform.data.interactions import InteractionData
        from llmrec_platform.data.split import SplitConfig, split_interactions
        from llmrec_platform.paths import Paths
        from llmrec_platform.rankers.base import ItemInputs
        from llmrec_platform.rankers.published import load_ranker
        from llmrec_platform.storage.warehouse import Warehouse

        store = Warehouse(Paths(Path(args.home)).warehouse)
        embeddings = store.query("SELECT item_id, embedding FROM item_embeddings")
        if args.protocol is None:
            split = store.query("SELECT user_id, item_id, rating, timestamp, fold FROM split")
            return load_ranker(args.home, args.ranker), split, embeddings
        interactions = store.query("SELECT user_id, item_id, rating, timestamp FROM interactions")
        split = split_interactions(interactions, SplitConfig(protocol=args.protocol, seed=args.seed))
        cache = Path(args.ranker_cache) if args.ranker_cache else None
        if cache is not None and cache.is_file():
            with open(cache, "rb") as handle:
                ranker = pickle.load(handle)
        else:
            items = ItemInputs(embeddings,
                               store.query("SELECT user_id, profile_embedding AS embedding FROM user_embeddings"),
                               store.query("SELECT * FROM items"))
            ranker = load_ranker(args.home, args.ranker).refit_elsewhere(InteractionData.from_split(split), items)
            if cache is not None:
                with open(cache, "wb") as handle:
                    pickle.dump(ranker, handle, protocol=pickle.HIGHEST_PROTOCOL)
        return ranker, split, embeddings
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
    parser.add_argument("--protocol", choices=["temporal", "recbole"],
                        help="the split (default temporal); with --home: refit --ranker on the home's interactions "
                             "split this way (default: the home's own split and fitted ranker)")
    parser.add_argument("--home", help="read the split, embeddings and --ranker from a home a run published")
    parser.add_argument("--ranker-cache", help="with --home and --protocol: a pickle of the refitted ranker, "
                                               "written on the first run and read on the next (one file per home and protocol)")
    parser.add_argument("--ranker", default="ease")
    parser.add_argument("--max-users", type=int, default=None, help="replay a seeded sample of this many users per fold")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--no-grid", action="store_true", help="skip the valid-fold grid: the default against the champion")
    args = parser.parse_args()
    if not args.home:
        args.protocol = args.protocol or "temporal"
    start = time.perf_counter()
    ranker, split, embeddings = inputs(args)
    order = pd.Index(ranker.item_ids_)
    vectors = np.zeros((len(order), len(embeddings["embedding"].iloc[0])), dtype=np.float32)
    positions = order.get_indexer(embeddings["item_id"].astype(str))
    vectors[positions[positions >= 0]] = np.stack(embeddings["embedding"].to_numpy())[positions >= 0]
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    champion = "champion alone"
    grid = {champion: LiveRanking(weight=0)}
    for scale, weight, shift, share in itertools.product(("rank", "z"), (0.5, 1.0, 2.0), (0.0, 2.0, 5.0), (0.5, 1.0)):
        grid[f"{scale} w={weight} shift={shift} llm_share={share}"] = LiveRanking(weight, 5, 0.5, share, shift,
                                                                                   scale=scale)
    default = LiveRanking()
    shipped = (f"default: {default.scale} w={default.weight} shift={default.shift_weight} recent={default.recent} "
               f"llm_share={default.llm_share}")
    chosen = {champion: grid[champion], shipped: default}
    split_name = args.protocol or "its"
    print(f"# {ranker.name}, {args.home or args.dataset}, {split_name} split, max users {args.max_users}\n")
    if not args.no_grid:
        valid_steps = replay_steps(ranker, split, "valid", args.max_users, args.seed)
        valid = replay_per_step(ranker, valid_steps, vectors, grid)
        table = valid.groupby("variant", sort=False)[["hit@10", "ndcg@10"]].mean().reset_index()
        table = table.sort_values("ndcg@10", ascending=False, kind="stable")
        print(f"## Valid fold ({len(valid_steps)} steps)\n")
        print(table.head(10).to_markdown(index=False, floatfmt=".4f"))
        best = next(v for v in table["variant"] if v != champion)
        chosen[f"best on valid: {best}"] = grid[best]
    test_steps = replay_steps(ranker, split, "test", args.max_users, args.seed)
    test = replay_per_step(ranker, test_steps, vectors, chosen)
    summary = test.groupby("variant", sort=False)[["hit@10", "ndcg@10"]].mean().reset_index()
    print(f"\n## Test fold ({len(test_steps)} steps, {test['user_id'].nunique()} users)\n")
    print(summary.to_markdown(index=False, floatfmt=".4f"))
    comparisons = [paired_bootstrap(per_user(test, name, metric), per_user(test, champion, metric), metric, name,
                                    champion, seed=args.seed)
                   for name in list(chosen)[1:] for metric in ("ndcg@10", "hit@10")]
    print("\n" + comparisons_markdown(comparisons))
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
