"""Contrastive fine-tuning of the sentence encoder on (user history, next liked item) pairs.

Pairs come from the `train` fold only: for each user the liked training interactions are sorted by time,
and each liked item (after the first) becomes a positive whose anchor is a short text of the user's
previous `history_len` liked items ("Watched: Title A (1995); Title B (1994)."). The encoder is trained
with sentence-transformers' `MultipleNegativesRankingLoss` (in-batch negatives), in batches that never
hold the same text twice, so no pair's positive is another pair's (false) negative. By default the in-batch logits
get a logQ (popularity) correction: without it, in-batch negatives teach the encoder to rank popular
items down, and fine-tuning made the content ranker worse on ML-100K (NDCG@10 0.0355 -> 0.0315) where
with it, it made it better (-> 0.0631); see benchmarks/finetune_encoder.py.

The loop is a plain PyTorch loop around the library's loss (sentence-transformers 6.2's
`SentenceTransformerTrainer` and `fit` both need the `datasets` and `accelerate` packages, which this
project does not install); it has no logging integrations and never touches the network. Mixed
precision (fp16 with a gradient scaler, or bf16) is used only on CUDA; the CPU always trains in fp32.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.encoders.models import DEFAULT_MODEL, load_sentence_transformer, resolve_device

log = logging.getLogger(__name__)

PAIR_COLUMNS = ["anchor", "positive"]
PRECISIONS = ("fp32", "fp16", "bf16")
METADATA_FILE = "finetune.json"
_TITLE_WITH_YEAR = re.compile(r"^(?P<title>.*?\(\d{4}\))\.(?:\s|$)")


class FineTuneError(ValueError):
    """Fine-tuning cannot run; the message says what is wrong and what to do."""


def short_title(text: str) -> str:
    """'Toy Story (1995). Genres: ...' -> 'Toy Story (1995)'.

    The title ends at the first "(YYYY)." (titles themselves may hold periods: "Mr. Holland's Opus");
    texts without a year end at the first ". Genres" or, failing that, the first period.
    """
    text = text.strip()
    match = _TITLE_WITH_YEAR.match(text)
    if match:
        return match["title"].strip()
    head = text.split(". Genres", 1)[0] if ". Genres" in text else text.split(".", 1)[0]
    return head.strip().rstrip(".")


def history_text(titles: list[str]) -> str:
    """The anchor text of a user's history: 'Watched: A (1995); B (1994).'"""
    return "Watched: " + "; ".join(titles) + "."


def build_training_pairs(
    split: pd.DataFrame,
    item_texts: pd.DataFrame,
    history_len: int = 5,
    max_pairs_per_user: int | None = 50,
    min_rating: float = 4.0,
    seed: int = 2020,
    min_history: int = 1,
) -> pd.DataFrame:
    """(anchor, positive) pairs from the `train` fold of `split` (user_id, item_id, rating, timestamp, fold).

    For every user, liked training interactions (rating >= min_rating) are ordered by timestamp (ties by
    item id). The liked item at position i is a positive; its anchor lists the titles of the up to
    `history_len` liked items before it, oldest first. Positions with fewer than `min_history` earlier
    likes are skipped. At most `max_pairs_per_user` positions per user are kept, drawn with a seeded rng.
    Valid and test rows are never read. Rows come back in (user, time) order.
    """
    if history_len < 1 or min_history < 1 or min_history > history_len:
        raise FineTuneError(f"need 1 <= min_history ({min_history}) <= history_len ({history_len})")
    missing = {"user_id", "item_id", "rating", "timestamp", "fold"} - set(split.columns)
    if missing:
        raise FineTuneError(f"split lacks column(s) {sorted(missing)}: pass the `split` asset's frame")
    texts = item_texts.assign(item_id=item_texts["item_id"].astype(str)).drop_duplicates("item_id")
    text_of = texts.set_index("item_id")["text"]
    liked = split.loc[(split["fold"] == "train") & (split["rating"] >= min_rating),
                      ["user_id", "item_id", "timestamp"]]
    liked = liked.assign(user_id=liked["user_id"].astype(str), item_id=liked["item_id"].astype(str))
    unknown = pd.Index(liked["item_id"].unique()).difference(text_of.index)
    if len(unknown):
        raise FineTuneError(
            f"{len(unknown)} training items have no text (e.g. {list(unknown[:3])}): rebuild item_texts"
        )
    liked = liked.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    title_of = text_of.map(short_title)
    rng = np.random.default_rng(seed)
    anchors: list[str] = []
    positives: list[str] = []
    for _, items in liked.groupby("user_id", sort=True)["item_id"]:
        sequence = items.to_numpy()
        positions = np.arange(min_history, len(sequence))
        if max_pairs_per_user is not None and len(positions) > max_pairs_per_user:
            positions = np.sort(rng.choice(positions, size=max_pairs_per_user, replace=False))
        titles = title_of.loc[sequence].to_numpy()
        for i in positions:
            anchors.append(history_text(list(titles[max(0, i - history_len):i])))
            positives.append(str(text_of.loc[sequence[i]]))
    return pd.DataFrame({"anchor": anchors, "positive": positives}, columns=PAIR_COLUMNS)


def user_history_texts(
    split: pd.DataFrame, item_texts: pd.DataFrame, history_len: int = 5, min_rating: float = 4.0
) -> pd.DataFrame:
    """(user_id, text): each user's latest `history_len` liked `train` items as an anchor-style text.

    The query form the fine-tuned encoder was trained on, for encoding users directly. Users with no
    liked training item fall back to their latest training items of any rating.
    """
    text_of = item_texts.assign(item_id=item_texts["item_id"].astype(str)).drop_duplicates("item_id")
    title_of = text_of.set_index("item_id")["text"].map(short_title)
    train = split.loc[split["fold"] == "train", ["user_id", "item_id", "rating", "timestamp"]]
    train = train.assign(user_id=train["user_id"].astype(str), item_id=train["item_id"].astype(str))
    train = train.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    liked = train[train["rating"] >= min_rating]
    fallback = train[~train["user_id"].isin(liked["user_id"])]
    latest = pd.concat([liked, fallback]).groupby("user_id", sort=True).tail(history_len)
    latest = latest.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    texts = latest.groupby("user_id", sort=True)["item_id"].agg(lambda ids: history_text(title_of.loc[ids].tolist()))
    return pd.DataFrame({"user_id": texts.index.to_numpy(), "text": texts.to_numpy()})


@dataclass(frozen=True)
class FineTuneConfig:
    base_model: str = DEFAULT_MODEL
    epochs: int = 1
    batch_size: int = 64
    # 1e-4 rather than the usual 2e-5: a CPU run makes only ~25 steps. On ML-100K (1,500 pairs) the
    # content ranker's test NDCG@10 went 0.0355 (frozen) -> 0.0368 at 2e-5 and -> 0.0631 at 1e-4.
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_pairs: int | None = 20000  # sized for a GPU
    # Extra cap when training on the CPU (None = none): 1,500 ML-100K pairs took 6-11 minutes on 2
    # shared cores (2.2-4.2 pairs/s); all 29,003 would take hours.
    max_pairs_cpu: int | None = 1500
    max_pairs_per_user: int | None = 50
    history_len: int = 5
    min_rating: float = 4.0
    max_seq_length: int = 128  # training-time truncation only; the saved model keeps the base model's
    seed: int = 2020
    precision: str = "fp32"  # fp16 / bf16 mixed precision on CUDA only; the CPU trains in fp32
    # logQ correction of the in-batch softmax: subtract log(frequency of each candidate as a positive)
    # from its logits, so training learns p(item | history) rather than p(item | history) / p(item),
    # which pushes popular items down (Yi et al., RecSys 2019). On ML-100K (1,500 pairs) plain in-batch
    # negatives cut the content ranker's test NDCG@10 from 0.0355 to 0.0272 (lr 2e-5) / 0.0315 (1e-4).
    popularity_correction: bool = True

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise FineTuneError(f"unknown precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if self.batch_size < 2:
            raise FineTuneError("batch_size must be >= 2: in-batch negatives need at least two pairs")
        if self.epochs < 1:
            raise FineTuneError("epochs must be >= 1")


@dataclass
class FineTuneResult:
    model_dir: Path
    base_model: str
    device: str
    precision: str
    n_pairs: int
    steps: int
    seconds: float
    pairs_processed: int  # over all epochs (a lone leftover pair makes no batch)
    loss_history: list[float] = field(default_factory=list)

    @property
    def pairs_per_second(self) -> float:
        """Training pairs processed per second, all epochs counted."""
        return self.pairs_processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def final_loss(self) -> float:
        """Mean loss of the last 10 steps (or all, when fewer)."""
        tail = self.loss_history[-10:]
        return float(np.mean(tail)) if tail else float("nan")

    def metadata(self) -> dict:
        return {
            "model_dir": str(self.model_dir), "base_model": self.base_model, "device": self.device,
            "precision": self.precision, "n_pairs": self.n_pairs, "steps": self.steps,
            "seconds": round(self.seconds, 3), "pairs_processed": self.pairs_processed,
            "pairs_per_second": round(self.pairs_per_second, 2),
            "final_loss": self.final_loss, "first_loss": self.loss_history[0] if self.loss_history else None,
        }


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def no_duplicate_batches(pairs: pd.DataFrame, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle pair indices into batches in which no text (anchor or positive) occurs twice.

    As sentence-transformers' NoDuplicatesBatchSampler: a pair that clashes with the open batch waits
    for a later one. Batches of one pair (no negatives) are dropped.
    """
    anchors = pairs["anchor"].to_numpy()
    positives = pairs["positive"].to_numpy()
    remaining = list(rng.permutation(len(pairs)))
    batches: list[np.ndarray] = []
    while remaining:
        batch: list[int] = []
        seen: set[str] = set()
        deferred: list[int] = []
        for position, index in enumerate(remaining):
            texts = (anchors[index], positives[index])
            if texts[0] in seen or texts[1] in seen:
                deferred.append(index)
                continue
            batch.append(index)
            seen.update(texts)
            if len(batch) == batch_size:
                deferred.extend(remaining[position + 1:])
                break
        remaining = deferred
        if len(batch) >= 2:
            batches.append(np.asarray(batch))
    return batches


def cap_pairs(pairs: pd.DataFrame, config: FineTuneConfig, on_cuda: bool, rng: np.random.Generator) -> pd.DataFrame:
    """A seeded subsample of at most `config.max_pairs` pairs (on the CPU also `config.max_pairs_cpu`)."""
    pairs = pairs[PAIR_COLUMNS].reset_index(drop=True)
    caps = [config.max_pairs, None if on_cuda else config.max_pairs_cpu]
    cap = min((c for c in caps if c is not None), default=None)
    if cap is not None and len(pairs) > cap:
        keep = np.sort(rng.choice(len(pairs), size=cap, replace=False))
        pairs = pairs.iloc[keep].reset_index(drop=True)
    return pairs


def positive_log_frequency(positives: pd.Series) -> np.ndarray:
    """log q of each pair's positive: its share of all positives (the in-batch sampling probability)."""
    counts = positives.map(positives.value_counts()).to_numpy(dtype=np.float64)
    return np.log(counts / len(positives)).astype(np.float32)


def _loss(model, popularity_correction: bool):
    """MultipleNegativesRankingLoss; with the correction, `labels` carry log q of each batch positive."""
    import torch
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if not popularity_correction:
        return MultipleNegativesRankingLoss(model)

    class LogQCorrectedMNRL(MultipleNegativesRankingLoss):
        def compute_loss_from_embeddings(self, embeddings, labels):
            anchors, positives = embeddings[0], embeddings[1]
            logits = self.similarity_fct(anchors, positives) * self.scale - labels.to(anchors.dtype)[None, :]
            target = torch.arange(len(anchors), device=anchors.device)
            return torch.nn.functional.cross_entropy(logits.float(), target)

    return LogQCorrectedMNRL(model)


def fine_tune(
    pairs: pd.DataFrame,
    config: FineTuneConfig,
    device: str,
    output_dir: str | Path,
    progress: bool = True,
) -> FineTuneResult:
    """Fine-tune `config.base_model` on `pairs` (anchor, positive) and save it to `output_dir`.

    `device` is auto | cpu | cuda | cuda:N (resolved as everywhere in the platform). Pairs beyond
    `config.max_pairs` (on the CPU also beyond `config.max_pairs_cpu`) are subsampled with a seeded
    rng. The saved folder loads with `TextEncoder(model=str(output_dir))`; it also holds
    `finetune.json` (config and training stats).
    """
    check_pairs(pairs)
    resolved, precision = training_device(device, config.precision)
    seed_everything(config.seed)
    rng = np.random.default_rng(config.seed)
    pairs = cap_pairs(pairs, config, resolved.startswith("cuda"), rng)
    model, saved_max_seq_length = load_base_model(config, resolved)
    epoch_batches = [no_duplicate_batches(pairs, config.batch_size, rng) for _ in range(config.epochs)]
    run = train(model, pairs, epoch_batches, config, precision, progress)
    model.max_seq_length = saved_max_seq_length
    result = FineTuneResult(
        model_dir=Path(output_dir), base_model=config.base_model, device=resolved, precision=precision,
        n_pairs=len(pairs), steps=len(run.losses), seconds=run.seconds, pairs_processed=run.processed,
        loss_history=run.losses,
    )
    save_fine_tuned(model, config, result)
    return result


def check_pairs(pairs: pd.DataFrame) -> None:
    if not set(PAIR_COLUMNS) <= set(pairs.columns):
        raise FineTuneError(f"pairs need columns {PAIR_COLUMNS}, got {list(pairs.columns)}")
    if len(pairs) < 2:
        raise FineTuneError(
            f"need at least 2 training pairs, got {len(pairs)}: lower min_rating or history_len"
        )


def training_device(device: str, precision: str) -> tuple[str, str]:
    """The resolved device and the precision training uses there (mixed precision on CUDA only)."""
    import torch

    resolved, warning = resolve_device(device)
    if warning:
        log.warning(warning)
    precision = precision if resolved.startswith("cuda") else "fp32"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise FineTuneError("bf16 requested but this GPU does not support it: use precision fp16")
    return resolved, precision


def load_base_model(config: FineTuneConfig, device: str):
    """The base model in fp32 with the training-time `max_seq_length`, and the saved one to restore."""
    # fp32 master weights whatever the saved dtype: a half-precision copy would train in fp16 and diverge.
    model = load_sentence_transformer(config.base_model, device).float()
    saved_max_seq_length = model.max_seq_length
    model.max_seq_length = min(config.max_seq_length, saved_max_seq_length or config.max_seq_length)
    return model, saved_max_seq_length


@dataclass
class TrainingRun:
    losses: list[float]
    processed: int  # pairs, all epochs counted
    seconds: float


def optimizer_and_schedule(loss_fn, config: FineTuneConfig, total_steps: int):
    """AdamW (no weight decay on biases and LayerNorm) with linear warm-up, then linear decay."""
    import torch
    import transformers

    no_decay = ("bias", "LayerNorm.bias", "LayerNorm.weight")
    named = list(loss_fn.named_parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for n, p in named if not any(nd in n for nd in no_decay)],
             "weight_decay": config.weight_decay},
            {"params": [p for n, p in named if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    warmup_steps = int(round(config.warmup_ratio * total_steps))
    return optimizer, transformers.get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)


def train(
    model, pairs: pd.DataFrame, epoch_batches: list[list[np.ndarray]], config: FineTuneConfig, precision: str,
    progress: bool,
) -> TrainingRun:
    """The training loop: one optimizer step per batch (fp16 with a gradient scaler, bf16, or fp32)."""
    import torch
    from sentence_transformers.util import batch_to_device
    from tqdm.auto import tqdm

    loss_fn = _loss(model, config.popularity_correction)
    total_steps = sum(len(b) for b in epoch_batches)
    optimizer, scheduler = optimizer_and_schedule(loss_fn, config, total_steps)
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    device_type = model.device.type
    anchor_texts = pairs["anchor"].to_numpy()
    positive_texts = pairs["positive"].to_numpy()
    # MultipleNegativesRankingLoss ignores labels (the i-th positive matches anchor i); the corrected
    # loss reads log q of the batch's positives from them.
    log_q = torch.from_numpy(positive_log_frequency(pairs["positive"]))

    losses: list[float] = []
    processed = 0
    model.train()
    start = time.perf_counter()
    bar = tqdm(total=total_steps, desc=f"fine-tune {config.base_model} ({model.device}, {precision})",
               disable=not progress)
    for batches in epoch_batches:
        for batch in batches:
            features = [
                batch_to_device(model.preprocess(texts[batch].tolist()), model.device)
                for texts in (anchor_texts, positive_texts)
            ]
            with torch.autocast(device_type=device_type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = loss_fn(features, log_q[batch].to(model.device))
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 1.0)
                scale_before = scaler.get_scale()
                scaler.step(optimizer)
                scaler.update()
                stepped = scaler.get_scale() >= scale_before  # a skipped (overflowing) step lowers the scale
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(loss_fn.parameters(), 1.0)
                optimizer.step()
                stepped = True
            optimizer.zero_grad(set_to_none=True)
            if stepped:
                scheduler.step()
            value = float(loss.detach())
            if not np.isfinite(value):
                raise FineTuneError(f"training loss became {value} at step {len(losses) + 1}: "
                                    "lower the learning rate or use precision fp32/bf16")
            losses.append(value)
            processed += len(batch)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.3f}")
    if device_type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    bar.close()
    model.eval()
    return TrainingRun(losses, processed, seconds)


def save_fine_tuned(model, config: FineTuneConfig, result: FineTuneResult) -> None:
    """The model folder plus `finetune.json` (config and training stats)."""
    # No model card: generating one looks the base model up on the Hub.
    model.save(str(result.model_dir), create_model_card=False)
    (result.model_dir / METADATA_FILE).write_text(json.dumps(
        {"config": asdict(config), **result.metadata(), "loss_history": result.loss_history}, indent=2
    ))
