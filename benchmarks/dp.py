"""The measured cost of differential privacy where aggregates leave the platform.

1. Popularity: test NDCG@10 of the popularity ranker fitted on released item counts (one interaction changes one
   count), per epsilon, mean and spread over noise seeds.
2. Online CTR: a replay of served lists (each test user gets one top-10 list from each arm; a click is a list item in
   the user's test fold), turned into `online_metrics` rows by the platform's own `online_ctr`, then released with
   `private_online_ctr`; the mean width of the 95 % interval per arm (all positions) and per (arm, position).
3. Mult-VAE trained with DP-SGD (opacus) per epsilon, test NDCG@10 (optional: --multvae).

    .venv/bin/python benchmarks/dp.py --dataset ml-1m                          # 1 and 2
    .venv/bin/python benchmarks/dp.py --dataset ml-100k --multvae --no-counts  # 3

All on RecBole's protocol (ratings >= 3, 10-core, random 8:1:1 per user, seed 2020).
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import math
import time
import warnings

import numpy as np
import pandas as pd

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.live.online import online_ctr, private_online_ctr
from llmrec_platform.privacy.dp import CountRelease
from llmrec_platform.rankers.base import excluded_items, top_k_positions
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.multvae import MultVAERanker
from llmrec_platform.rankers.simple import PopularityRanker


def load(name: str) -> InteractionData:
    dataset = load_dataset(name)
    interactions = prepare_interactions(dataset.ratings, dataset.items, 3.0, 10)
    return InteractionData.from_split(split_interactions(interactions, SplitConfig(protocol="recbole", seed=2020)))


def epsilon_label(epsilon: float) -> str:
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


def popularity_table(data: InteractionData, epsilons: list[float], seeds: int, mechanism: str) -> pd.DataFrame:
    """Per epsilon: the platform's release (one interaction protected, sensitivity 1) and, for comparison, a
    user-level one: removing a user changes as many counts (by 1 each) as their history is long, so the bound is
    the longest training history m (L1 m for Laplace, L2 sqrt(m) for Gaussian; m is read off the data here, which
    itself leaks a little: a real release fixes a cap)."""
    longest = int(data.train.getnnz(axis=1).max())
    exact_top = np.argsort(-PopularityRanker().fit(data).popularity_, kind="stable")[:100]
    rows = []
    for epsilon in epsilons:
        scores, user_level, moved = [], [], []
        for seed in range(1, (1 if math.isinf(epsilon) else seeds) + 1):
            release = CountRelease(epsilon, mechanism, seed=seed)
            ranker = PopularityRanker(release).fit(data)
            scores.append(evaluate(ranker, data, "test", ks=(10,)).summary["ndcg@10"])
            released = ranker.popularity_ if ranker.released_popularity_ is None else ranker.released_popularity_
            moved.append(int((np.argsort(-released, kind="stable")[:100] != exact_top).sum()))
            ranker.released_popularity_ = release.release(ranker.popularity_, cells=longest, stream="popularity")
            user_level.append(evaluate(ranker, data, "test", ks=(10,)).summary["ndcg@10"])
        rows.append({"epsilon": epsilon_label(epsilon), "NDCG@10, per interaction": np.mean(scores),
                     "sd": np.std(scores), "top-100 places changed": np.mean(moved),
                     f"NDCG@10, per user (history <= {longest})": np.mean(user_level),
                     "sd ": np.std(user_level), "seeds": len(scores)})
    return pd.DataFrame(rows)


def replayed_online_metrics(data: InteractionData, arms: dict, users: np.ndarray, k: int = 10) -> pd.DataFrame:
    """`online_ctr` over one top-k list per (arm, test user); a shown item in the user's test fold is a click."""
    excluded = excluded_items(*data.seen_before("test"))[users]
    relevant = data.relevant("test")[users]
    impressions, clicks = [], []
    for arm, ranker in arms.items():
        lists = top_k_positions(ranker.score(users), excluded, k)
        for row, (user, positions) in enumerate(zip(users, lists, strict=True)):
            request = f"{arm}-{user}"
            items = [str(data.item_ids[p]) for p in positions]
            impressions.append({"request_id": request, "user_id": str(data.user_ids[user]), "model_version": "replay",
                                "ranker": ranker.name, "arm": arm, "items": items, "timestamp": 0})
            hit = set(relevant[row].indices)
            clicks += [{"request_id": request, "item_id": str(data.item_ids[p])} for p in positions if p in hit]
    return online_ctr(pd.DataFrame(impressions), pd.DataFrame(clicks, columns=["request_id", "item_id"]))


def ctr_table(frame: pd.DataFrame, epsilons: list[float], seeds: int, mechanism: str) -> pd.DataFrame:
    rows = []
    overall = frame["position"] == 0
    for epsilon in epsilons:
        widths = {"arm": [], "position": [], "ctr_error": []}
        for seed in range(1, (1 if math.isinf(epsilon) else seeds) + 1):
            released = private_online_ctr(frame, CountRelease(epsilon, mechanism, seed=seed))
            width = released["ci_high"] - released["ci_low"]
            widths["arm"].append(width[overall].mean())
            widths["position"].append(width[~overall].mean())
            widths["ctr_error"].append((released["ctr"] - frame["ctr"]).abs()[~overall].mean())
        rows.append({"epsilon": epsilon_label(epsilon), "CI width, per arm": np.mean(widths["arm"]),
                     "CI width, per (arm, position)": np.mean(widths["position"]),
                     "mean abs CTR error, per position": np.mean(widths["ctr_error"])})
    return pd.DataFrame(rows)


def multvae_table(data: InteractionData, epsilons: list[float], epochs: int, batch_size: int, clip: float,
                  learning_rate: float, hidden: int, latent: int) -> pd.DataFrame:
    rows = []
    for epsilon in epsilons:
        private = not math.isinf(epsilon)
        ranker = MultVAERanker(hidden=hidden, latent=latent, epochs=epochs, batch_size=batch_size,
                               learning_rate=learning_rate, dp_epsilon=epsilon if private else None,
                               dp_max_grad_norm=clip)
        start = time.perf_counter()
        with warnings.catch_warnings():  # opacus's notes on its seeded (not secure) noise and its hooks
            warnings.simplefilter("ignore", UserWarning)
            ranker.fit(data)
        fit_seconds = time.perf_counter() - start
        rows.append({"epsilon": epsilon_label(epsilon), "Mult-VAE NDCG@10": evaluate(ranker, data, "test", ks=(10,))
                     .summary["ndcg@10"], "spent epsilon": ranker.dp_spent_epsilon_, "fit s": fit_seconds})
        print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--epsilons", type=float, nargs="+", default=[0.5, 1.0, 4.0, math.inf])
    parser.add_argument("--mechanism", default="laplace", choices=["laplace", "gaussian"])
    parser.add_argument("--seeds", type=int, default=5, help="noise seeds per finite epsilon")
    parser.add_argument("--no-counts", action="store_true", help="skip the popularity and CTR tables")
    parser.add_argument("--multvae", action="store_true", help="also train Mult-VAE with DP-SGD per epsilon")
    parser.add_argument("--epochs", type=int, default=20, help="Mult-VAE epochs (the same for every epsilon)")
    parser.add_argument("--batch-size", type=int, default=100, help="Mult-VAE expected batch (Poisson sampling)")
    parser.add_argument("--clip", type=float, default=1.0, help="DP-SGD per-user gradient norm bound")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=600, help="Mult-VAE hidden layer (600: Liang et al.)")
    parser.add_argument("--latent", type=int, default=200)
    args = parser.parse_args()

    start = time.perf_counter()
    data = load(args.dataset)
    print(f"{args.dataset}: {data.n_users} users, {data.n_items} items, {data.train.nnz} training interactions "
          f"(loaded in {time.perf_counter() - start:.1f} s)\n")
    if not args.no_counts:
        print(f"## Popularity ranker, test NDCG@10 ({args.mechanism}, {args.seeds} noise seeds)\n")
        print(popularity_table(data, args.epsilons, args.seeds, args.mechanism).to_markdown(index=False,
                                                                                           floatfmt=".4f"))
        users = np.flatnonzero(data.relevant("test").getnnz(axis=1) > 0)
        arms = {"popularity": PopularityRanker().fit(data), "itemknn": ItemKNNRanker().fit(data)}
        for n_users in (len(users), 500):
            frame = replayed_online_metrics(data, arms, users[:n_users])
            shown = int(frame.loc[frame["position"] == 0, "impressions"].iloc[0])
            print(f"\n## Online CTR 95 % interval, replay of {n_users} lists per arm ({shown} impressions per arm, "
                  f"{shown // 10} per position; {args.mechanism})\n")
            print(ctr_table(frame, args.epsilons, args.seeds, args.mechanism).to_markdown(index=False, floatfmt=".4f"))
    if args.multvae:
        print(f"\n## Mult-VAE with DP-SGD, test NDCG@10 ([{data.n_items} -> {args.hidden} -> {args.latent}], "
              f"{args.epochs} epochs, batch {args.batch_size}, lr {args.learning_rate:g}, clip {args.clip}, delta 1e-6)\n")
        print(multvae_table(data, args.epsilons, args.epochs, args.batch_size, args.clip, args.learning_rate,
                            args.hidden, args.latent).to_markdown(index=False, floatfmt=".4f"))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
