"""Collaborative-filtering baselines on ML-1M under RecBole's "general" protocol.

ratings >= 3, 10-core on users and items, random 8:1:1 split per user (seed 2020), full ranking over all
items the user has not seen before the fold. Each ranker is fitted and evaluated in its own forked
process, so the peak RSS column is that process's high-water mark (it includes the loaded data set,
reported on its own as the baseline).

    .venv/bin/python benchmarks/ml1m_protocol.py            # defaults, valid + test table
    .venv/bin/python benchmarks/ml1m_protocol.py --tune     # hyper-parameter grids, valid fold only

Published RecBole test NDCG@10 under this protocol: EASE 0.2865 (Recall@10 0.2139, MRR@10 0.4808,
Hit@10 0.7837, P@10 0.2082), ItemKNN 0.2389, BPR 0.2407.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import multiprocessing
import resource
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import pandas as pd

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.rankers.base import Ranker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.implicit_models import AdamBPRRanker, ALSRanker, BPRRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.simple import PopularityRanker, RandomRanker

METRICS = ("ndcg", "recall", "mrr", "hit", "precision")
PUBLISHED_TEST_NDCG10 = {"ease": 0.2865, "itemknn": 0.2389, "bpr / bpr_adam": 0.2407}

# Set in main() before forking; the children inherit them (factories are lambdas, which do not pickle).
DATA: InteractionData | None = None
ITEMS: pd.DataFrame | None = None
MODELS: dict[str, Callable[[], Ranker]] = {}


def load() -> tuple[InteractionData, pd.DataFrame]:
    dataset = load_dataset("ml-1m")
    interactions = prepare_interactions(dataset.ratings, dataset.items, 3.0, 10)
    split = split_interactions(interactions, SplitConfig(protocol="recbole", seed=2020))
    return InteractionData.from_split(split), dataset.items


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_one(label: str, folds: tuple[str, ...]) -> list[dict]:
    """Fit and evaluate one ranker (runs in a forked child that inherits DATA and MODELS)."""
    start = time.perf_counter()
    ranker = MODELS[label]().fit(DATA)
    fit_seconds = time.perf_counter() - start
    rows = []
    for fold in folds:
        start = time.perf_counter()
        result = evaluate(ranker, DATA, fold=fold, ks=(10, 20))
        eval_seconds = time.perf_counter() - start
        row = {"model": label, "fold": fold}
        row.update({f"{m}@10": result.summary[f"{m}@10"] for m in METRICS})
        row.update({"ndcg@20": result.summary["ndcg@20"], "users": result.n_users,
                    "fit_s": fit_seconds, "eval_s": eval_seconds})
        rows.append(row)
    for row in rows:
        row["peak_rss_mib"] = peak_rss_mib()
    return rows


def run_isolated(label: str, folds: tuple[str, ...]) -> list[dict]:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        rows = pool.submit(run_one, label, folds).result()
    print(pd.DataFrame(rows).to_string(index=False, header=False, float_format="%.4f"), file=sys.stderr)
    return rows


def baselines() -> dict[str, Callable[[], Ranker]]:
    return {
        "random": RandomRanker,
        "popularity": PopularityRanker,
        "genre_match": lambda: GenreMatchRanker(ITEMS),
        "itemknn": ItemKNNRanker,
        "ease": EASERanker,
        "als": ALSRanker,
        "bpr": BPRRanker,
        "bpr_adam": AdamBPRRanker,
    }


def grids() -> dict[str, Callable[[], Ranker]]:
    """The grids behind the classes' defaults (their docstrings quote the valid NDCG@10 seen here)."""
    grid: dict[str, Callable[[], Ranker]] = {}
    for reg in (100, 250, 500, 750, 1000, 2000):
        grid[f"ease reg_weight={reg}"] = lambda reg=reg: EASERanker(reg_weight=reg)
    for k, shrink in [(50, 0), (100, 0), (200, 0), (250, 0), (300, 0), (400, 0), (800, 0),
                      (100, 10), (100, 50), (100, 100), (400, 10), (400, 100)]:
        grid[f"itemknn k={k} shrink={shrink}"] = lambda k=k, s=shrink: ItemKNNRanker(k=k, shrink=s)
    for factors, reg, alpha in [(32, 1, 10), (64, 1, 10), (128, 1, 10), (64, 30, 10), (64, 1, 5), (64, 1, 20),
                                (64, 30, 5), (64, 30, 3), (64, 50, 3), (96, 50, 3), (128, 50, 3), (128, 50, 4),
                                (128, 80, 3), (64, 100, 10)]:
        grid[f"als f={factors} reg={reg} alpha={alpha}"] = (
            lambda f=factors, r=reg, a=alpha: ALSRanker(factors=f, regularization=r, alpha=a))
    for factors, lr, reg, iters in [(64, 0.05, 0.01, 100), (64, 0.01, 0.01, 100), (64, 0.003, 0.01, 100),
                                    (64, 0.003, 0.05, 100), (64, 0.003, 0.003, 100), (64, 0.003, 0.001, 100),
                                    (64, 0.003, 0.0, 100), (64, 0.002, 0.001, 150), (128, 0.003, 0.001, 100)]:
        grid[f"bpr f={factors} lr={lr} reg={reg} it={iters}"] = (
            lambda f=factors, lr=lr, r=reg, i=iters: BPRRanker(factors=f, learning_rate=lr, regularization=r,
                                                               iterations=i))
    for factors, lr, epochs in [(64, 1e-3, 30), (64, 1e-3, 40), (128, 1e-3, 20), (128, 1e-3, 25), (128, 1e-3, 30),
                                (64, 2e-3, 15)]:
        grid[f"bpr_adam f={factors} lr={lr} epochs={epochs}"] = (
            lambda f=factors, lr=lr, e=epochs: AdamBPRRanker(factors=f, learning_rate=lr, epochs=e))
    return grid


def main() -> None:
    global DATA, ITEMS, MODELS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tune", action="store_true", help="run the hyper-parameter grids on the valid fold")
    parser.add_argument("--only", nargs="*", help="model labels (or label prefixes) to run")
    args = parser.parse_args()

    start = time.perf_counter()
    DATA, ITEMS = load()
    print(f"ML-1M (RecBole protocol): {DATA.n_users} users, {DATA.n_items} items, "
          f"train/valid/test {DATA.train.nnz}/{DATA.valid.nnz}/{DATA.test.nnz}; "
          f"load+split {time.perf_counter() - start:.1f}s, baseline RSS {peak_rss_mib():.0f} MiB")

    models = grids() if args.tune else baselines()
    folds = ("valid",) if args.tune else ("valid", "test")
    if args.only:
        models = {k: v for k, v in models.items() if any(k.startswith(p) for p in args.only)}
    MODELS = models
    rows = [row for label in models for row in run_isolated(label, folds)]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        for fold in folds:
            print(f"\n== {fold} ==")
            print(table[table["fold"] == fold].drop(columns="fold").to_string(index=False, float_format="%.4f"))
    if not args.tune:
        print("\npublished RecBole test NDCG@10:",
              ", ".join(f"{name} {value}" for name, value in PUBLISHED_TEST_NDCG10.items()))


if __name__ == "__main__":
    main()
