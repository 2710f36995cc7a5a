"""What the LLM features add: the hybrid against copies with its LLM columns removed or replaced (no Dagster).

The variants share the candidate rankers, the feature rankers, the config and the seeds; only the content ranker
behind the four LLM columns changes (`HybridRanker(content=...)`):

  with_llm        the hybrid as trained (frozen-encoder interest vectors and item embeddings), first model only
  without_llm     a content ranker whose item vectors are all one unit vector: the LLM columns become constants,
                  which LightGBM cannot split on (the same as dropping them; the feature matrix keeps its shape)
  tfidf           the LLM columns computed from `TfidfContentRanker` instead (the non-LLM text baseline)

Every variant is one LambdaRank model with the config's first seed and the first model's number of trees (no early
stopping of its own): the hybrid averages `n_models` seeds, but the question here is what the columns are worth, and
one model per variant costs a fraction of the mean. So `with_llm` scores with the hybrid's first model alone, the
model each variant's training mirrors.

Nothing the hybrid computed is computed again (`HybridRanker.content_variant`): a variant is trained on the
hybrid's own feature matrices (its candidates, base-ranker features and pseudo-label refits) with only the four
LLM columns recomputed from its content, and at test time the variants share one candidate retrieval and feature
pass per batch of users (`feature_memo_`). A constant column is one LightGBM never splits on, so `without_llm` is
the hybrid's matrices with those columns dropped.

Each variant is scored per user on every slice; each variant's difference from `with_llm` (variant - with_llm)
gets a 95 % paired bootstrap interval and a Wilcoxon p (`paired_bootstrap`).
"""

from __future__ import annotations

import contextvars
import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from llmrec_platform.compute import BlockMap
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.evaluation.evaluate import evaluate_slices
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.rankers.base import Ranker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.rankers.hybrid import HybridRanker

ABLATION_COLUMNS = ["variant", "slice", "metric", "k", "value", "diff", "ci_low", "ci_high", "p_value"]
REFERENCE = "with_llm"
SPARSE_USER_MAX = 5  # training interactions of a "sparse" user
HEAD_SHARE = 0.2  # the most popular 20 % of the items are the head; the rest is the long tail


def constant_content(content: LLMContentRanker) -> LLMContentRanker:
    """A copy of a fitted content ranker whose every item (and so every interest) vector is e0: its similarities are
    all 1, so the hybrid's LLM columns carry no information."""
    blank = object.__new__(type(content))
    blank.__dict__.update(content.__dict__)
    vectors = np.zeros_like(content.item_vectors_)
    vectors[:, 0] = 1.0
    blank.item_vectors_ = vectors
    blank.profile_vectors_ = np.zeros_like(content.profile_vectors_)
    if hasattr(content, "item_similarity_"):
        blank.item_similarity_ = vectors @ vectors.T
    blank.user_vectors_ = blank.interest_vectors(blank.training_histories(np.arange(len(content.user_ids_))))
    blank.name = "no_content"
    return blank


def hybrid_variants(hybrid: HybridRanker, data: InteractionData, tfidf_content: LLMContentRanker | None = None,
                    refit_cache: FitCache | None = None) -> dict[str, Ranker]:
    """The fitted hybrid's first model (`with_llm`) and one-model copies trained on the hybrid's feature matrices
    (`data` must be what it was fitted on) with the same config and first seed, the LLM columns blanked
    (`without_llm`) or taken from `tfidf_content` (`tfidf`). The matrices are the hybrid's own when it was
    fitted in this process; else they are loaded from the `refit_cache` the hybrid was fitted with (or built again,
    with its pseudo-label refits loaded from that cache). The variants share one feature memo for scoring."""
    parts = hybrid.training_parts_for(data, refit_cache)
    first_model = copy.copy(hybrid)  # shallow: shares the fitted parts, drops the other seeds' models
    first_model.extra_models_ = []
    first_model.refit_cache = refit_cache
    variants: dict[str, HybridRanker] = {REFERENCE: first_model}
    contents = {"without_llm": constant_content(hybrid.content)}
    if tfidf_content is not None:
        contents["tfidf"] = tfidf_content
    # The variants train side by side, one LightGBM thread each (the same trees as with more threads), with the
    # trees `with_llm` scores with: no early stopping of their own, so only the columns differ.
    workers = max(1, min(len(contents), hybrid.config.num_threads))
    settings = {"n_estimators": hybrid.training_log_.best_iteration, "early_stopping_rounds": 0,
                **({"num_threads": 1} if workers > 1 else {})}
    with ThreadPoolExecutor(workers) as pool:
        futures = {name: pool.submit(contextvars.copy_context().run, first_model.content_variant, content, data,
                                     f"hybrid_{name}", parts, **settings) for name, content in contents.items()}
        variants.update({name: future.result() for name, future in futures.items()})
    memo: dict = {}
    for variant in variants.values():
        variant.feature_memo_ = memo
    return variants


def ablation_slices(data: InteractionData) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """slice -> (users to evaluate (positions) or None for all, candidate item mask or None for all items)."""
    activity = np.asarray(data.train.getnnz(axis=1))
    popularity = np.asarray(data.train.getnnz(axis=0))
    warm = popularity > 0
    order = np.argsort(-popularity, kind="stable")
    head = np.zeros(data.n_items, dtype=bool)
    head[order[: int(np.ceil(HEAD_SHARE * warm.sum()))]] = True
    cold = ~warm
    main = warm if cold.any() else None  # with cold items, the main slices rank the warm items (as the report does)
    result = {"all": (None, main), f"sparse_users_le{SPARSE_USER_MAX}": (np.flatnonzero(activity <= SPARSE_USER_MAX), main),
              "long_tail_items": (None, warm & ~head)}
    if cold.any():
        result["cold"] = (None, cold)
    return result


def ablate(variants: dict[str, Ranker], data: InteractionData, fold: str = "test", metric: str = "ndcg", k: int = 10,
           seed: int = 2020, blocks: BlockMap | None = None) -> pd.DataFrame:
    """One row per (variant, slice): the mean `metric@k`, and for variants other than `with_llm` the paired
    difference from it with its 95 % bootstrap interval and Wilcoxon p. A slice no user falls in, or that a
    variant cannot score (cold items for a ranker without `scores_cold_items`), is left out, not zero."""
    if REFERENCE not in variants:
        raise ValueError(f"the ablation needs the reference variant {REFERENCE!r}; got {sorted(variants)}")
    key = f"{metric}@{k}"
    slices = {name: s for name, s in ablation_slices(data).items() if s[0] is None or len(s[0])}
    results = {name: evaluate_slices(ranker, data, {n: s for n, s in slices.items()
                                                    if n != "cold" or ranker.scores_cold_items}, fold, (k,),
                                             blocks=blocks)  # the user blocks: in-process or on a Ray cluster
               for name, ranker in variants.items()}
    rows = []
    for slice_name in slices:
        per_user = {name: by_slice[slice_name].per_user for name, by_slice in results.items()
                    if slice_name in by_slice and by_slice[slice_name].n_users}
        if REFERENCE not in per_user:
            continue
        for name, frame in per_user.items():
            row = {"variant": name, "slice": slice_name, "metric": metric, "k": k, "value": float(frame[key].mean()),
                   "diff": np.nan, "ci_low": np.nan, "ci_high": np.nan, "p_value": np.nan}
            if name != REFERENCE:
                c = paired_bootstrap(frame, per_user[REFERENCE], key, name, REFERENCE, seed=seed)
                row.update({"diff": c.mean_difference, "ci_low": c.ci_low, "ci_high": c.ci_high, "p_value": c.wilcoxon_p})
            rows.append(row)
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def ablation_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return ""
    lines = ["## What the LLM features add (hybrid ablation, test fold, paired per user, 95% bootstrap interval)", "",
             "| slice | variant | NDCG@10 | difference vs with_llm | 95% CI | Wilcoxon p |", "|---|---|---:|---:|---|---:|"]
    for r in table.itertuples():
        diff = "" if np.isnan(r.diff) else f"{r.diff:+.4f}"
        ci = "" if np.isnan(r.ci_low) else f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}]"
        p = "" if np.isnan(r.p_value) else f"{r.p_value:.3g}"
        lines.append(f"| {r.slice} | {r.variant} | {r.value:.4f} | {diff} | {ci} | {p} |")
    return "\n".join(lines)
