"""Mult-VAE and Adam-BPR alone on ML-1M (RecBole protocol, as benchmarks/ml1m_protocol.py loads it): fit time in
wall and CPU seconds, the epoch early stopping kept, and valid/test NDCG@10 with each one's 95 % bootstrap interval
(percentile, 2,000 resamples of the evaluated users, seed 2020).

    nice -n 10 .venv/bin/python benchmarks/ml1m_multvae_bpr.py                  # both rankers, their defaults
    nice -n 10 .venv/bin/python benchmarks/ml1m_multvae_bpr.py --only multvae   # one of them
    nice -n 10 .venv/bin/python benchmarks/ml1m_multvae_bpr.py --dataset ml-100k
    nice -n 10 .venv/bin/python benchmarks/ml1m_multvae_bpr.py --synthetic 1000000 --only multvae --epochs 2

`--synthetic N` writes the seeded synthetic shop of benchmarks/scale.py (N interactions, 20,000 items) to a
temporary folder and loads it the same way; `--epochs` overrides the rankers' (maximum) number of epochs.

The CPU seconds (user + system of this process, every thread) are the figure to compare on a shared machine.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import tempfile
import time

import pandas as pd

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.data.synthetic import SyntheticSpec, write_synthetic
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.rankers.implicit_models import AdamBPRRanker
from llmrec_platform.rankers.multvae import MultVAERanker

RANKERS = {"multvae": MultVAERanker, "bpr_adam": AdamBPRRanker}


def load_chosen(args: argparse.Namespace) -> InteractionData:
    """`--synthetic N`'s seeded shop (20,000 items; `args.dataset` becomes its label), else `--dataset`."""
    if not args.synthetic:
        return load(args.dataset)
    with tempfile.TemporaryDirectory() as folder:
        data = load(write_synthetic(folder, SyntheticSpec(args.synthetic, 20_000)))
    args.dataset = f"synthetic shop ({args.synthetic:,} interactions)"
    return data


def load(dataset) -> InteractionData:
    """The RecBole "general" protocol: ratings >= 3, 10-core, random 8:1:1 per user, seed 2020."""
    loaded = load_dataset(dataset)
    interactions = prepare_interactions(loaded.ratings, loaded.items, 3.0, 10)
    return InteractionData.from_split(split_interactions(interactions, SplitConfig(protocol="recbole", seed=2020)))


def mean_with_interval(per_user: pd.DataFrame, metric: str) -> tuple[float, float, float]:
    """The mean of `metric` over users and its 95 % percentile bootstrap interval (the paired bootstrap against 0)."""
    zero = per_user[["user_id"]].assign(**{metric: 0.0})
    comparison = paired_bootstrap(per_user, zero, metric, "ranker", "zero")
    return comparison.mean_ranker, comparison.ci_low, comparison.ci_high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--synthetic", type=int, metavar="INTERACTIONS", help="the synthetic shop of this size instead")
    parser.add_argument("--only", nargs="*", choices=sorted(RANKERS), default=sorted(RANKERS))
    parser.add_argument("--epochs", type=int, help="override the rankers' (maximum) number of epochs")
    args = parser.parse_args()
    data = load_chosen(args)
    print(f"{args.dataset}: {data.n_users} users, {data.n_items} items, {data.train.nnz} training interactions")
    print("| ranker | fit wall s | fit CPU s | best epoch / max | valid NDCG@10 [95 % CI] | test NDCG@10 [95 % CI] | CI width |")
    print("|---|---:|---:|---:|---|---|---:|")
    for name in args.only:
        ranker = RANKERS[name](**({} if args.epochs is None else {"epochs": args.epochs}))
        wall, cpu = time.perf_counter(), time.process_time()
        ranker.fit(data)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        cells = []
        for fold in ("valid", "test"):
            mean, low, high = mean_with_interval(evaluate(ranker, data, fold).per_user, "ndcg@10")
            cells.append(f"{mean:.4f} [{low:.4f}, {high:.4f}]")
        best = getattr(ranker, "best_epoch_", None)
        epochs = f"{best if best is not None else '-'} / {ranker.epochs}"
        print(f"| {name} | {wall:.1f} | {cpu:.1f} | {epochs} | {cells[0]} | {cells[1]} | {high - low:.4f} |", flush=True)
        curve = getattr(ranker, "validation_curve_", None)
        if curve:
            print("  sampled-valid NDCG@10 by epoch: " + " | ".join(f"{e} {v:.4f}" for e, v in curve))


if __name__ == "__main__":
    main()
