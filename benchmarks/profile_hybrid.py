"""Where the hybrid's fit spends its time: refit it from a home's trained base rankers, optionally profiled, and
compare LambdaRank settings on the same feature matrices.

    .venv/bin/python benchmarks/profile_hybrid.py --home .llmrec [--threads 1] [--profile] [--dataset ml-100k]
        [--set n_models=3 ...] [--test] [--sweep "early_stopping_rounds=50" "n_models=3,early_stopping_rounds=50" ...]

Needs a home where `llmrec demo` has run on the same dataset with the default protocol and seed (the base
rankers are read from <home>/artifacts, the split is rebuilt the way the `split` asset builds it). Prints
wall and CPU seconds, the held-out validation NDCG@10 (the hybrid's champion score; compare it across
--threads to check that the thread count does not change the model) and, with --profile, the top of a
cProfile listing by cumulative time. `--set` overrides HybridConfig fields of the fitted hybrid. `--test` also
prints its test NDCG@10 with a 95 % bootstrap interval over users (what the demo's metric table shows for
`hybrid`). Each `--sweep` spec trains only the LambdaRank models again, with those fields changed, on the
fitted hybrid's own training matrices (candidates, features and pseudo-label refits are not recomputed), and
prints its trees, CPU seconds, validation and test NDCG@10 and its paired test difference from the fitted one
(`pseudo_label_share=0` leaves the pseudo-labelled groups out). `--ablation` runs what the hybrid_ablation asset
computes (with the home's tfidf_content_ranker) and prints its seconds and table. `--stored-refits` loads the
pseudo-label refits from the home's fit cache (so the timings leave the refits out; they are what that run fitted).
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before pandas loads numpy
# isort: on

import argparse
import copy
import cProfile
import dataclasses
import os
import pickle
import pstats
import time
from pathlib import Path

import pandas as pd

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.evaluation.ablation import ablate, ablation_markdown, hybrid_variants
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.settings import Settings
from llmrec_platform.threads import pin_blas_threads

CANDIDATES = ["ease_ranker", "itemknn_ranker", "als_ranker", "bpr_adam_ranker", "multvae_ranker"]
KEY = "ndcg@10"


class StoredRefits(FitCache):
    """The pseudo-label refits a home's run stored (one per ranker: its fit cache keys them by the package source
    too, which has changed since), loaded by name; anything else is fitted, not stored."""

    def get_or_fit(self, name: str, unfitted, data_fingerprint: str, fit):
        stored = sorted((self.folder / name).glob("*.pkl"))
        if name.startswith("hybrid_pseudo_") and len(stored) == 1:
            return pickle.loads(stored[0].read_bytes()), True
        return fit(), False

    def get_or_compute(self, name: str, key: str, compute):
        return compute(), False


def overrides(spec: list[str]) -> dict:
    """["n_models=3", "early_stopping_rounds=50"] -> HybridConfig fields with their types."""
    fields = {f.name: f.type for f in dataclasses.fields(HybridConfig)}
    result = {}
    for item in spec:
        name, _, value = item.partition("=")
        if name not in fields:
            raise SystemExit(f"--set/--sweep: HybridConfig has no field {name!r}")
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes"), "str": str}[fields[name]]
        result[name] = kind(value)
    return result


def test_ndcg(hybrid: HybridRanker, data: InteractionData, reference: pd.DataFrame | None = None) -> tuple[str, pd.DataFrame]:
    """'mean [95 % interval]' of the test NDCG@10 (and ', paired difference [interval]' from `reference`)."""
    per_user = evaluate(hybrid, data, "test").per_user
    zero = per_user.assign(**{KEY: 0.0})
    alone = paired_bootstrap(per_user, zero, KEY, hybrid.name, "zero")
    text = f"{alone.mean_ranker:.4f} [{alone.ci_low:.4f}, {alone.ci_high:.4f}]"
    if reference is not None:
        diff = paired_bootstrap(per_user, reference, KEY, "sweep", "fitted")
        text += f", diff {diff.mean_difference:+.4f} [{diff.ci_low:+.4f}, {diff.ci_high:+.4f}]"
    return text, per_user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--threads", type=int, default=HybridConfig.num_threads)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--test", action="store_true")
    parser.add_argument("--sweep", nargs="*", default=[], metavar="FIELD=VALUE,...")
    parser.add_argument("--ablation", action="store_true", help="time the hybrid_ablation asset's work and print it")
    parser.add_argument("--stored-refits", action="store_true",
                        help="load the pseudo-label refits the home's run stored in its fit cache instead of refitting")
    args = parser.parse_args()
    # The pipeline's BLAS threads: OpenBLAS's sums depend on its thread count, and so do the hybrid's features.
    pin_blas_threads(Settings.from_env().num_threads)
    dataset = load_dataset(args.dataset)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=2020))
    data = InteractionData.from_split(split)
    trained = {name: pickle.loads((args.home / "artifacts" / name).read_bytes())
               for name in [*CANDIDATES, "llm_content_ranker", "genre_match_ranker"]}
    hybrid = HybridRanker({trained[n].ranker.name: trained[n].ranker for n in CANDIDATES},
                          trained["llm_content_ranker"].ranker, {"genre_match": trained["genre_match_ranker"].ranker},
                          HybridConfig(**{"seed": 2020, "num_threads": args.threads, **overrides(args.set)}),
                          refit_cache=StoredRefits(args.home / "cache" / "fits") if args.stored_refits else None)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    profiler = cProfile.Profile() if args.profile else None
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    hybrid.fit(data)
    valid = evaluate(hybrid, data, "valid", users=hybrid.validation_users_).summary[KEY]
    if profiler:
        profiler.disable()
    print(f"threads {args.threads}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} CPU s, "
          f"held-out validation NDCG@10 {valid!r}, trees {hybrid.training_log_.best_iteration} x {hybrid.config.n_models}"
          f"; load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    if args.ablation:
        tfidf = pickle.loads((args.home / "artifacts" / "tfidf_content_ranker").read_bytes()).ranker
        wall, cpu = time.perf_counter(), time.process_time()
        table = ablate(hybrid_variants(hybrid, data, tfidf, refit_cache=hybrid.refit_cache), data, seed=2020)
        print(f"ablation: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} CPU s")
        print(ablation_markdown(table))
    if not (args.test or args.sweep):
        return
    hybrid.feature_memo_ = {}  # the sweep's copies share it: one candidate and feature pass per batch of users
    fitted_text, fitted = test_ndcg(hybrid, data)
    print(f"fitted ({' '.join(args.set) or 'defaults'}): test NDCG@10 {fitted_text}")
    for spec in args.sweep:
        variant = copy.copy(hybrid)  # shares the fitted parts; train_model replaces only the LambdaRank models
        variant.feature_memo_ = hybrid.feature_memo_  # (a copy leaves the hybrid's transient state behind)
        variant.config = dataclasses.replace(hybrid.config, **overrides(spec.split(",")))
        parts = hybrid.training_parts_
        if variant.config.pseudo_label_share == 0:  # without pseudo-labels: no refit, no pseudo groups
            parts = {name: part for name, part in parts.items() if not name.startswith("pseudo")}
        wall, cpu = time.perf_counter(), time.process_time()
        variant.train_model(parts)
        seconds, wall = time.process_time() - cpu, time.perf_counter() - wall
        valid = evaluate(variant, data, "valid", users=variant.validation_users_).summary[KEY]
        text, _ = test_ndcg(variant, data, fitted)
        print(f"{spec}: trees {variant.training_log_.best_iteration} x {variant.config.n_models}, LambdaRank {wall:.1f} s "
              f"wall, {seconds:.1f} CPU s, "
              f"validation {valid:.4f}, test NDCG@10 {text}")


if __name__ == "__main__":
    main()
