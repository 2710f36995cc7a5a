"""Cold start on a CPU: the LLM rankers against the non-LLM text baseline (TF-IDF) and the genre-match floor.

RecBole protocol with --cold-items (default 0.1): a seeded share of the items is held out of training entirely
and the cold slice ranks among the cold items (test fold), as `llmrec demo --cold-items 0.1` reports it.

Every hyper-parameter is chosen on the **valid** fold only: `pseudo_cold_split` drops the test fold and the
real cold items, holds out a seeded 10 % of the warm items as pseudo-cold ones, and each grid point is scored
on that pseudo-cold slice. The test fold is scored once per variant, and the table marks the valid choice
of each family (`*`). Variants:

  genre_match, random              the floors
  llm_content                      frozen MiniLM, the platform's ranker (centroid + nearest history item)
  tfidf_content[...]               TF-IDF (+ TruncatedSVD) on the same item text, scored like llm_content
  llm_ease_map[alpha]              ridge map MiniLM -> EASE columns over warm items, cold items scored x·B̂
  tfidf_ease_map[...]              the same map from TF-IDF vectors (SVD 384, or raw unigrams)
  llm_tfidf_ease_map[alpha]        the same map from MiniLM and TF-IDF + SVD side by side

    python benchmarks/cold_start_ml1m.py                          # ML-1M, --cold-items 0.1, seed 2020
    python benchmarks/cold_start_ml1m.py --inputs bundle          # a finetune_encoder.py --export folder
    python benchmarks/cold_start_ml1m.py --embeddings minilm.npz  # reuse (or write) the MiniLM vectors
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.evaluation.suite import slices
from llmrec_platform.rankers.collab_map import CollabMapRanker, pseudo_cold_split
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.simple import RandomRanker
from llmrec_platform.rankers.tfidf import TextVectorizer, TfidfContentRanker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_encoder import build_inputs, read_inputs  # noqa: E402 (the same inputs as the fine-tune benchmark)

# (svd_dims, ngram_max, history_weight, plain); 0 dims = raw TF-IDF (unigrams: its dense vectors stay small);
# plain = scikit-learn's TfidfVectorizer defaults (no stop words, raw tf, min_df 1).
TFIDF_GRID = [
    (384, 2, 0.0, False), (384, 2, 0.5, False), (384, 2, 0.8, False), (384, 1, 0.8, False), (128, 2, 0.8, False),
    (0, 1, 0.0, False), (0, 1, 0.5, False), (0, 1, 0.8, False),
    (384, 1, 0.0, True), (384, 1, 0.5, True), (384, 1, 0.8, True), (0, 1, 0.0, True), (0, 1, 0.5, True),
    (0, 1, 0.8, True),
]
ALPHAS = [0.1, 0.3, 1.0, 3.0, 10.0]
RAW_ALPHAS = [0.3, 1.0, 3.0, 10.0, 30.0]  # raw TF-IDF has ~5k dimensions: it needs a stronger penalty
EASE_REG = 750.0  # EASERanker's default, tuned on valid for the warm ranking


def minilm_vectors(inputs: dict, data: InteractionData, cache: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """Frozen MiniLM vectors of the split's item texts and user profiles, (item frame, profile frame, seconds)."""
    items = inputs["item_texts"].assign(item_id=inputs["item_texts"]["item_id"].astype(str))
    users = inputs["user_texts"].assign(user_id=inputs["user_texts"]["user_id"].astype(str))
    return cached_minilm_vectors(items[items["item_id"].isin(set(data.item_ids))],
                                 users[users["user_id"].isin(set(data.user_ids))], cache)


def cached_minilm_vectors(items: pd.DataFrame, users: pd.DataFrame, cache: Path | None
                          ) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(item frame, profile frame, encode seconds) of frozen MiniLM vectors of `items` / `users` texts (string
    ids); read from the `cache` .npz when it holds every id, else encoded and written there."""
    if cache and cache.exists():
        stored = np.load(cache, allow_pickle=True)
        if set(stored["item_ids"]) >= set(items["item_id"]) and set(stored["user_ids"]) >= set(users["user_id"]):
            return (pd.DataFrame({"item_id": stored["item_ids"], "embedding": list(stored["items"])}),
                    pd.DataFrame({"user_id": stored["user_ids"], "embedding": list(stored["profiles"])}), 0.0)
    encoder = TextEncoder(DEFAULT_MODEL, device="cpu")
    start = time.perf_counter()
    item_vectors, _ = encoder.encode(items["text"].tolist())
    profile_vectors, _ = encoder.encode(users["text"].tolist())
    seconds = time.perf_counter() - start
    if cache:
        np.savez(cache, item_ids=items["item_id"].to_numpy(), user_ids=users["user_id"].to_numpy(),
                 items=item_vectors, profiles=profile_vectors)
    return (pd.DataFrame({"item_id": items["item_id"].to_numpy(), "embedding": list(item_vectors)}),
            pd.DataFrame({"user_id": users["user_id"].to_numpy(), "embedding": list(profile_vectors)}), seconds)


def cold_ndcg(ranker, data: InteractionData) -> float:
    return evaluate(ranker, data, "test", slice_name="cold", candidate_items=slices(data)["cold"]).summary["ndcg@10"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--cold-items", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--inputs", type=Path, help="read split and texts from a finetune_encoder.py --export folder")
    parser.add_argument("--embeddings", type=Path, help="MiniLM vectors: read if present, else encode and write here")
    parser.add_argument("--warm", action="store_true", help="also score the valid choices on the warm slice")
    parser.add_argument("--families", default="", help="comma-separated subset of the families (floor is always run)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    inputs = read_inputs(args.inputs) if args.inputs else build_inputs(args.dataset, args.cold_items, args.seed)
    split = inputs["split"]
    data = InteractionData.from_split(split)
    pseudo = InteractionData.from_split(pseudo_cold_split(split, 0.1, args.seed))
    item_frame, profile_frame, encode_seconds = minilm_vectors(inputs, data, args.embeddings)
    print(f"{args.inputs or args.dataset}: {data.n_users} users, {data.n_items} items ({int(data.cold_item_mask().sum())} "
          f"cold); pseudo-cold valid split: {int(pseudo.cold_item_mask().sum())} items; MiniLM encode "
          f"{encode_seconds:.0f} s; load average {os.getloadavg()[0]:.2f}", flush=True)

    # Each family: label -> factory(data) of an unfitted ranker. Tuned on `pseudo`, every variant tested on `data`.
    def tfidf_vectors(dims: int, ngram: int, plain: bool = False):
        texts = inputs["item_texts"].assign(item_id=inputs["item_texts"]["item_id"].astype(str)).set_index("item_id")
        texts = texts.loc[data.item_ids]  # the split's items, as TfidfContentRanker fits them
        vectors = TextVectorizer(dims, ngram, seed=args.seed, plain=plain).fit_transform(texts["text"].tolist())
        return pd.DataFrame({"item_id": texts.index.to_numpy(), "embedding": list(vectors)})

    tfidf_384, tfidf_raw, tfidf_plain = tfidf_vectors(384, 2), tfidf_vectors(0, 1), tfidf_vectors(0, 1, plain=True)
    # Both views side by side (each block unit-norm): does the bag of words add to the LLM's map?
    minilm = item_frame.set_index("item_id")["embedding"]
    both = pd.DataFrame({"item_id": tfidf_384["item_id"], "embedding": [
        np.concatenate([minilm[i], v]) / np.sqrt(2.0)
        for i, v in zip(tfidf_384["item_id"], tfidf_384["embedding"], strict=True)]})
    families = {
        "floor": {"genre_match": lambda d: GenreMatchRanker(inputs["items"]),
                  "random": lambda d: RandomRanker(seed=args.seed)},
        "llm_content": {"llm_content (frozen MiniLM)": lambda d: LLMContentRanker(item_frame, profile_frame)},
        "tfidf_content": {
            f"tfidf_content[svd {dims or 'none'}, {ngram}-gram, w {w}{', plain' if plain else ''}]":
                (lambda d, dims=dims, ngram=ngram, w=w, plain=plain: TfidfContentRanker(
                    inputs["item_texts"], inputs["user_texts"], svd_dims=dims, ngram_max=ngram, history_weight=w,
                    seed=args.seed, plain=plain))
            for dims, ngram, w, plain in TFIDF_GRID},
        "tfidf_ease_map": {f"tfidf_ease_map[svd 384, alpha {a}]": (lambda d, a=a: CollabMapRanker(
            tfidf_384, EASE_REG, alpha=a, name="tfidf_ease_map")) for a in ALPHAS}
        | {f"tfidf_ease_map[svd none, 1-gram, alpha {a}]": (lambda d, a=a: CollabMapRanker(
            tfidf_raw, EASE_REG, alpha=a, name="tfidf_ease_map")) for a in RAW_ALPHAS}
        | {f"tfidf_ease_map[svd none, 1-gram, plain, alpha {a}]": (lambda d, a=a: CollabMapRanker(
            tfidf_plain, EASE_REG, alpha=a, name="tfidf_ease_map")) for a in RAW_ALPHAS},
        "llm_ease_map": {f"llm_ease_map[MiniLM, alpha {a}]": (lambda d, a=a: CollabMapRanker(
            item_frame, EASE_REG, alpha=a)) for a in ALPHAS},
        "llm_tfidf_ease_map": {f"llm_tfidf_ease_map[MiniLM + TF-IDF svd 384, alpha {a}]": (lambda d, a=a: CollabMapRanker(
            both, EASE_REG, alpha=a, name="llm_tfidf_ease_map")) for a in ALPHAS},
    }
    if args.families:
        keep = {"floor", *args.families.split(",")}
        families = {name: variants for name, variants in families.items() if name in keep}
    rows, chosen, per_user = [], {}, {}
    for family, variants in families.items():
        best = None
        for label, make in variants.items():
            t = time.perf_counter()
            valid = cold_ndcg(make(pseudo).fit(pseudo), pseudo) if family != "floor" else float("nan")
            ranker = make(data).fit(data)
            result = evaluate(ranker, data, "test", slice_name="cold", candidate_items=slices(data)["cold"])
            test, per_user[label] = result.summary["ndcg@10"], result.per_user
            rows.append({"family": family, "variant": label, "valid pseudo-cold": valid, "test cold": test,
                         "seconds": time.perf_counter() - t})
            if family != "floor" and (best is None or valid > best[1]):
                best = (label, valid, ranker)
            print(f"  {label}: valid pseudo-cold {valid:.4f}, test cold {test:.4f} ({rows[-1]['seconds']:.0f} s)",
                  flush=True)
        if best:
            chosen[best[0]] = best[2]
    table = pd.DataFrame(rows)
    genre = float(table.loc[table["variant"] == "genre_match", "test cold"].iloc[0])
    table["x genre"] = table["test cold"] / genre
    table["valid choice"] = np.where(table["variant"].isin(chosen), "*", "")
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 200, "display.max_colwidth", 60):
        print(table.to_string(index=False))
    if args.warm:
        warm = slices(data)["warm"]
        for label, ranker in chosen.items():
            result = evaluate(ranker, data, "test", slice_name="warm", candidate_items=warm)
            print(f"warm slice NDCG@10, {label}: {result.summary['ndcg@10']:.4f}")
    # The best LLM ranker (valid choice) against the test-best TF-IDF variant, per user on the cold slice.
    llm_rows = table[table["family"].isin(["llm_content", "llm_ease_map"]) & (table["valid choice"] == "*")]
    tfidf_rows = table[table["family"].isin(["tfidf_content", "tfidf_ease_map"])]
    a = llm_rows.loc[llm_rows["test cold"].idxmax(), "variant"] if len(llm_rows) else None
    b = tfidf_rows.loc[tfidf_rows["test cold"].idxmax(), "variant"] if len(tfidf_rows) else None
    for baseline in filter(None, (b, "genre_match")):
        if a:
            c = paired_bootstrap(per_user[a], per_user[baseline], "ndcg@10", a, baseline, seed=args.seed)
            print(f"paired, cold slice, {c.users} users: {a} - {baseline} = {c.mean_difference:+.4f} NDCG@10 "
                  f"(95% CI {c.ci_low:+.4f} .. {c.ci_high:+.4f}, Wilcoxon p {c.wilcoxon_p:.2g})")
    best_llm = table[table["family"].isin(["llm_content", "llm_ease_map"]) & (table["valid choice"] == "*")]["test cold"].max()
    best_tfidf = table[table["family"].isin(["tfidf_content", "tfidf_ease_map"])]["test cold"].max()
    print(f"best LLM ranker (valid choice) {best_llm:.4f} = {best_llm / genre:.2f}x genre match {genre:.4f}; "
          f"best TF-IDF variant (any, even chosen on test) {best_tfidf:.4f}; {time.perf_counter() - start:.0f} s",
          file=sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
