"""Rating prediction on ML-1M under Surprise's protocol: 5 random folds over all 1,000,209 ratings (seeded),
mean ± std RMSE / MAE per model beside Surprise's published table (SVD 0.873, SVD++ 0.862, BaselineOnly 0.909),
and the ablation of the LightGBM stacker's LLM features (the same stacker without them).

The LLM features use frozen MiniLM embeddings of the platform's item texts and user profile texts (what the
`item_embeddings` asset and the rating job encode); `--embeddings` keeps them in a file between runs.

    python benchmarks/rating_ml1m.py                                  # ML-1M, 5 folds, seed 2020
    python benchmarks/rating_ml1m.py --embeddings /tmp/ml1m_minilm.npz --folds 5
    python benchmarks/rating_ml1m.py --dataset ml-100k                # quicker
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from llmrec_platform.data.datasets import load_dataset_cached
from llmrec_platform.data.text import build_item_texts, build_user_texts
from llmrec_platform.rating.protocol import RatingProtocol, cross_validate
from llmrec_platform.rating.report import summary_markdown

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cold_start_ml1m import cached_minilm_vectors  # noqa: E402 (the same cached encoding)


def embeddings(dataset: str, cache: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(item frame, profile frame, encode seconds) of frozen MiniLM vectors; read from `cache` when it exists."""
    loaded = load_dataset_cached(dataset)
    items, _ = build_item_texts(loaded.items)
    users = build_user_texts(loaded.users)
    return cached_minilm_vectors(items.assign(item_id=items["item_id"].astype(str)),
                                 users.assign(user_id=users["user_id"].astype(str)), cache)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--embeddings", type=Path, help="npz cache of the MiniLM item and profile vectors")
    parser.add_argument("--factors", type=int, default=RatingProtocol.factors)
    parser.add_argument("--epochs", type=int, default=RatingProtocol.epochs)
    parser.add_argument("--no-refit", action="store_true", help="keep the base models fitted without the stacker's slice")
    args = parser.parse_args()

    start = time.perf_counter()
    ratings = load_dataset_cached(args.dataset).ratings
    item_frame, profile_frame, encode_seconds = embeddings(args.dataset, args.embeddings)
    protocol = RatingProtocol(n_folds=args.folds, seed=args.seed, factors=args.factors, epochs=args.epochs,
                              refit=not args.no_refit)
    print(f"{args.dataset}: {len(ratings):,} ratings, {args.folds} folds, seed {args.seed}; "
          f"MiniLM encode {encode_seconds:.1f} s; protocol {protocol.params()}", flush=True)
    result = cross_validate(ratings, protocol, item_frame, profile_frame, log=lambda line: print(line, flush=True))
    print()
    print(summary_markdown(result))
    seconds = result.metrics.groupby("model")["fit_seconds"].sum()
    print("\nfit seconds over all folds: " + ", ".join(f"{m} {s:.0f}" for m, s in seconds.items()))
    print(f"wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
