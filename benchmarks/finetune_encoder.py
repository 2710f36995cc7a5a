"""Does contrastive fine-tuning of MiniLM help the LLM content ranker? RecBole protocol, warm and cold slices.

Split: ratings >= 3, 10-core, random 8:1:1 per user (seed 2020); with --cold-items F a seeded share F of
the items is held out of training entirely (the platform's cold-start protocol). Training pairs come from
the train fold only: (the user's previous 5 liked titles, the next liked item's full text),
MultipleNegativesRanking loss with in-batch negatives and the logQ correction. The content ranker
(`LLMContentRanker`, the platform's defaults) is evaluated on the test fold, on every slice, with the
frozen and the fine-tuned encoder, against genre match and random:

  interest  user vector = rating- and recency-weighted mean of the training items' embeddings blended
            with the profile text (the platform's `user_embeddings`);
  history   user vector = the encoding of the user's latest liked titles, in the anchor form the
            encoder was fine-tuned on ("Watched: A (1995); B (1994); ...").

A GPU machine need not hold the dataset carriers: `--export DIR` writes the split and the texts where
they are installed, and `--inputs DIR` reads them back there (with `--base-model` a copy of the model).

    python benchmarks/finetune_encoder.py                                   # ML-100K, device auto
    python benchmarks/finetune_encoder.py cpu --dataset ml-1m --cold-items 0.1 --max-pairs 1500
    python benchmarks/finetune_encoder.py --dataset ml-1m --cold-items 0.1 --export bundle
    python benchmarks/finetune_encoder.py cuda --inputs bundle --base-model model --max-pairs 0 --precision bf16
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.encoders.finetune import FineTuneConfig, build_training_pairs, fine_tune, user_history_texts
from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder, resolve_device
from llmrec_platform.encoders.vectors import user_interest_vectors
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.suite import slices
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.simple import RandomRanker

PROFILE_WEIGHT = 0.05  # UserEmbeddingsConfig's default


def build_inputs(dataset_name: str, cold_items: float, seed: int) -> dict[str, pd.DataFrame]:
    from llmrec_platform.data.datasets import load_dataset
    from llmrec_platform.data.text import build_item_texts, build_user_texts

    dataset = load_dataset(dataset_name)
    config = SplitConfig(cold_item_fraction=cold_items, seed=seed)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, config.min_rating, config.core), config)
    return {"split": split, "item_texts": build_item_texts(dataset.items)[0], "user_texts": build_user_texts(dataset.users),
            "items": dataset.items.assign(item_id=dataset.items["item_id"].astype(str))[["item_id", "genres"]]}


def read_inputs(folder: Path) -> dict[str, pd.DataFrame]:
    frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("split", "item_texts", "user_texts", "items")}
    frames["items"]["genres"] = frames["items"]["genres"].map(list)
    return frames


def encoder_rows(label: str, encoder: TextEncoder, data: InteractionData, inputs: dict, history: pd.DataFrame,
                 save: Path | None) -> list[dict]:
    """Evaluate the content ranker with `encoder`, once per user-vector kind and slice."""
    item_vectors, item_stats = encoder.encode(inputs["item_texts"].set_index("item_id").loc[data.item_ids, "text"].tolist())
    profiles = inputs["user_texts"].set_index("user_id")["text"].reindex(data.user_ids, fill_value="")
    profile_vectors, _ = encoder.encode(profiles.tolist())
    history_vectors, _ = encoder.encode(history.set_index("user_id").loc[data.user_ids, "text"].tolist())
    if save:  # float16 keeps the files small enough to fetch from a GPU machine
        save.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(save / f"{label}.npz", item_ids=data.item_ids, user_ids=data.user_ids,
                            **{name: m.astype(np.float16) for name, m in
                               {"items": item_vectors, "profiles": profile_vectors, "history": history_vectors}.items()})
    item_frame = pd.DataFrame({"item_id": data.item_ids, "embedding": list(item_vectors)})
    users = {"interest": user_interest_vectors(data.train, data.train_timestamps, item_vectors, profile_vectors,
                                               profile_weight=PROFILE_WEIGHT),
             "history": history_vectors}
    rows = []
    for kind, user_vectors in users.items():
        user_frame = pd.DataFrame({"user_id": data.user_ids, "embedding": list(user_vectors)})
        ranker = LLMContentRanker(item_frame, user_frame).fit(data)
        rows += slice_rows(ranker, data, encoder=label, user_vector=kind,
                           **{"items/s encoded": round(item_stats.per_second, 1)})
    return rows


def slice_rows(ranker, data: InteractionData, **labels) -> list[dict]:
    rows = []
    for slice_name, candidates in slices(data).items():
        result = evaluate(ranker, data, fold="test", slice_name=slice_name, candidate_items=candidates)
        rows.append({**labels, "slice": slice_name, "NDCG@10": result.summary["ndcg@10"],
                     "Recall@10": result.summary["recall@10"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("device", nargs="?", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--cold-items", type=float, default=0.0, help="share of items held out of training")
    parser.add_argument("--export", type=Path, help="write the split and texts to this folder and stop")
    parser.add_argument("--inputs", type=Path, help="read the split and texts from an --export folder")
    parser.add_argument("--base-model", default=DEFAULT_MODEL, help="packaged model name or saved model folder")
    parser.add_argument("--save-embeddings", type=Path,
                        help="save each encoder's item/profile/history vectors here (LABEL.npz, float16)")
    parser.add_argument("--skip-frozen", action="store_true", help="evaluate only the fine-tuned encoder")
    parser.add_argument("--max-pairs", type=int, default=None,
                        help="training pairs (0 = all); default FineTuneConfig's: 20000, on the CPU 1500")
    defaults = FineTuneConfig()
    parser.add_argument("--max-pairs-per-user", type=int, default=defaults.max_pairs_per_user)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="CUDA only")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--popularity-correction", action=argparse.BooleanOptionalAction,
                        default=defaults.popularity_correction, help="logQ-corrected in-batch softmax")
    parser.add_argument("--label", default="fine-tuned", help="the fine-tuned encoder's name in the table and files")
    parser.add_argument("--output-dir", default=None, help="where to save the fine-tuned encoder (default: temp)")
    args = parser.parse_args(argv)

    inputs = read_inputs(args.inputs) if args.inputs else build_inputs(args.dataset, args.cold_items, args.seed)
    if args.export:
        args.export.mkdir(parents=True, exist_ok=True)
        for name, frame in inputs.items():
            frame.to_parquet(args.export / f"{name}.parquet", index=False)
        print(f"wrote {', '.join(inputs)} to {args.export}")
        return 0
    device, warning = resolve_device(args.device)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    caps = {}
    if args.max_pairs is not None:  # an explicit size replaces both defaults
        caps = {"max_pairs": args.max_pairs or None, "max_pairs_cpu": args.max_pairs or None}

    split, item_texts = inputs["split"], inputs["item_texts"]
    data = InteractionData.from_split(split)
    config = FineTuneConfig(
        base_model=args.base_model, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        max_pairs_per_user=args.max_pairs_per_user, precision=args.precision, seed=args.seed,
        popularity_correction=args.popularity_correction, **caps,
    )
    pairs = build_training_pairs(split, item_texts, history_len=config.history_len,
                                 max_pairs_per_user=config.max_pairs_per_user, min_rating=config.min_rating,
                                 seed=config.seed)
    history = user_history_texts(split, item_texts, config.history_len, config.min_rating)
    print(f"{args.inputs or args.dataset}: {data.n_users} users, {data.n_items} items "
          f"({int(data.cold_item_mask().sum())} cold); {len(pairs)} training pairs from the train fold "
          f"(max {config.max_pairs_per_user}/user); device {device}; load average {os.getloadavg()[0]:.2f}", flush=True)

    rows = []
    for name, ranker in {"genre_match": GenreMatchRanker(inputs["items"]), "random": RandomRanker(seed=args.seed)}.items():
        rows += slice_rows(ranker.fit(data), data, encoder=name, user_vector="-")
    if not args.skip_frozen:
        frozen = TextEncoder(model=args.base_model, device=device, precision=args.precision)
        rows += encoder_rows("frozen", frozen, data, inputs, history, args.save_embeddings)
    with tempfile.TemporaryDirectory() as tmp:
        output_dir = Path(args.output_dir) if args.output_dir else Path(tmp) / "minilm-finetuned"
        start = time.perf_counter()
        result = fine_tune(pairs, config, device=device, output_dir=output_dir, progress=True)
        print(f"fine-tune: {result.n_pairs} pairs x {config.epochs} epoch(s), {result.steps} steps of "
              f"<= {config.batch_size}, {result.seconds:.1f} s training ({time.perf_counter() - start:.1f} s with "
              f"load/save), {result.pairs_per_second:.1f} pairs/s, {result.precision}, lr {config.learning_rate:g}; "
              f"loss {result.loss_history[0]:.3f} -> {result.final_loss:.3f} (mean of last 10 steps)", flush=True)
        tuned = TextEncoder(model=str(output_dir), device=device, precision=args.precision)
        rows += encoder_rows(args.label, tuned, data, inputs, history, args.save_embeddings)

    table = pd.DataFrame(rows)
    with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 160):
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
