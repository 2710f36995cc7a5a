"""Where the hybrid's fit spends its time: refit it from a home's trained base rankers, optionally profiled, and
compare LambdaRank settings on the same feature matrices.

    .venv/bin/python benchmarks/profile_hybrid.py --home .llmrec [--threads 1] [--profile] [--dataset ml-100k]
        [--set n_models=3 ...] [--test] [--sweep "early_stopping_rounds=50" "n_models=3,early_stopping_rounds=50" ...]
        [--prefix "n_models=3,n_estimators=300" ...] [--ablation ["n_estimators=300" ...]]

Needs a home where `llmrec demo` has run on the same dataset with the default protocol and seed (the base
rankers are read from <home>/artifacts, the split is rebuilt the way the `split` asset builds it). Prints
wall and CPU seconds, the held-out validation NDCG@10 (the hybrid's champion score; compare it across
--threads to check that the thread count does not change the model) and, with --profile, the top of a
cProfile listing by cumulative time. `--set` overrides HybridConfig fields of the fitted hybrid. `--test` also
prints its test NDCG@10 with a 95 % bootstrap interval over users (what the demo's metric table shows for
`hybrid`). Each `--sweep` spec trains only the LambdaRank models again, with those fields changed, on the
fitted hybrid's own training matrices (candidates, features and pseudo-label refits are not recomputed), and
prints its trees, CPU seconds, validation and test NDCG@10 and its paired test difference from the fitted one
(`pseudo_label_share=0` leaves the pseudo-labelled groups out). Each `--prefix` spec ("n_models=3,n_estimators=300")
trains nothing: it scores with the fitted models' first ones cut to their first trees (`HybridRanker.with_models`,
the same models those fields would train) and prints the same columns, its LambdaRank CPU seconds estimated from the
fit's per tree. `--ablation` runs what the hybrid_ablation asset computes (with the home's tfidf_content_ranker) and
prints its seconds and table: for the fitted hybrid, or for it cut to each spec given. `--stored-refits` loads the
pseudo-label refits from the home's fit cache (so the timings leave the refits out; they are what that run fitted).
`--fitted` takes the home's own hybrid_ranker instead of fitting one (its matrices, for --sweep and --ablation,
come from the home's fit cache where its run stored them).
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

import numpy as np
import pandas as pd

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.evaluation.ablation import ablate, ablation_markdown, hybrid_variants
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.rankers.fit_cache import FitCache
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.hybrid.model import TRAINING_SETS
from llmrec_platform.settings import Settings
from llmrec_platform.threads import pin_blas_threads

CANDIDATES = ["ease_ranker", "itemknn_ranker", "als_ranker", "bpr_adam_ranker", "multvae_ranker"]
KEY = "ndcg@10"


class StoredRefits(FitCache):
    """The pseudo-label refits a home's run stored (one per ranker: its fit cache keys them by the package source
    too, which has changed since), loaded by name, and a hybrid's training matrices stored under its own key (the
    hash of its trees); anything else is fitted, not stored."""

    def get_or_fit(self, name: str, unfitted, data_fingerprint: str, fit):
        stored = sorted((self.folder / name).glob("*.pkl"))
        if name.startswith("hybrid_pseudo_") and len(stored) == 1:
            return pickle.loads(stored[0].read_bytes()), True
        return fit(), False

    def get_or_compute(self, name: str, key: str, compute):
        stored = self.folder / name / f"{key}.pkl"
        if name == TRAINING_SETS and key and stored.exists():
            return pickle.loads(stored.read_bytes()), True
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
    parser.add_argument("--prefix", nargs="*", default=[], metavar="n_models=M,n_estimators=N",
                        help="score with the fitted models' first M cut to N trees (nothing trained)")
    parser.add_argument("--ablation", nargs="*", default=None, metavar="n_models=M,n_estimators=N",
                        help="time the hybrid_ablation asset's work and print it: for the fitted hybrid, or for it cut "
                             "to each spec given (as --prefix)")
    parser.add_argument("--fitted", action="store_true",
                        help="take the home's hybrid_ranker as it is instead of fitting one (--set, --profile: no effect)")
    parser.add_argument("--stored-refits", action="store_true",
                        help="load the pseudo-label refits the home's run stored in its fit cache instead of refitting")
    args = parser.parse_args()
    # The pipeline's BLAS threads: OpenBLAS's sums depend on its thread count, and so do the hybrid's features.
    pin_blas_threads(Settings.from_env().num_threads)
    dataset = load_dataset(args.dataset)
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=2020))
    data = InteractionData.from_split(split)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    profiler = cProfile.Profile() if args.profile else None
    cpu_per_tree = float("nan")  # of the fit's LambdaRank models: what --prefix estimates its own CPU seconds from
    if args.fitted:
        hybrid = pickle.loads((args.home / "artifacts" / "hybrid_ranker").read_bytes()).ranker
        hybrid.refit_cache = StoredRefits(args.home / "cache" / "fits")  # where its run stored its matrices
        print(f"the home's hybrid_ranker: trees {hybrid.training_log_.best_iteration} x {hybrid.config.n_models}")
    else:
        hybrid, cpu_per_tree = fit_timed(args, data, profiler)
    log = hybrid.training_log_
    print(f"holdout curve of the first model (argmax "
          f"{1 + max(range(len(log.validation_curve)), key=log.validation_curve.__getitem__, default=-1)}): "
          + ", ".join(f"{n} {log.validation_curve[n - 1]:.4f}" for n in (10, 25, 50, 100, 150, 200, 250, 300, 400, 500)
                      if n <= len(log.validation_curve)))
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    prefixes = {spec: prefix_of(hybrid, spec) for spec in args.prefix}
    if args.ablation is not None:
        tfidf = pickle.loads((args.home / "artifacts" / "tfidf_content_ranker").read_bytes()).ranker
        for spec, ranker in ({spec: prefix_of(hybrid, spec) for spec in args.ablation} or {"fitted": hybrid}).items():
            wall, cpu = time.perf_counter(), time.process_time()
            table = ablate(hybrid_variants(ranker, data, tfidf, refit_cache=hybrid.refit_cache), data, seed=2020)
            print(f"ablation ({spec}, {ranker.training_log_.best_iteration} trees): {time.perf_counter() - wall:.1f} s "
                  f"wall, {time.process_time() - cpu:.1f} CPU s")
            print(ablation_markdown(table))
    if not (args.test or args.sweep or args.prefix):
        return
    hybrid.feature_memo_ = {}  # the sweep's copies share it: one candidate and feature pass per batch of users
    fitted_text, fitted = test_ndcg(hybrid, data)
    print(f"fitted ({' '.join(args.set) or 'defaults'}): test NDCG@10 {fitted_text}")
    for spec in args.sweep:
        variant = copy.copy(hybrid)  # shares the fitted parts; train_model replaces only the LambdaRank models
        variant.feature_memo_ = hybrid.feature_memo_  # (a copy leaves the hybrid's transient state behind)
        variant.config = dataclasses.replace(hybrid.config, **overrides(spec.split(",")))
        parts = hybrid.training_parts_for(data)
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
    for spec, variant in prefixes.items():
        variant.feature_memo_ = hybrid.feature_memo_
        valid = evaluate(variant, data, "valid", users=variant.validation_users_).summary[KEY]
        text, _ = test_ndcg(variant, data, fitted)
        trees = variant.training_log_.best_iteration * variant.config.n_models
        estimate = "" if np.isnan(cpu_per_tree) else f", LambdaRank about {trees * cpu_per_tree:.1f} CPU s (estimated)"
        print(f"prefix {spec}: trees {variant.training_log_.best_iteration} x {variant.config.n_models}{estimate}, "
              f"validation {valid:.4f}, test NDCG@10 {text}")


def fit_timed(args: argparse.Namespace, data: InteractionData, profiler: cProfile.Profile | None) -> tuple[HybridRanker, float]:
    """The hybrid fitted on the home's base rankers, its seconds printed; also its LambdaRank CPU seconds a tree."""
    trained = {name: pickle.loads((args.home / "artifacts" / name).read_bytes())
               for name in [*CANDIDATES, "llm_content_ranker", "genre_match_ranker"]}
    hybrid = HybridRanker({trained[n].ranker.name: trained[n].ranker for n in CANDIDATES},
                          trained["llm_content_ranker"].ranker, {"genre_match": trained["genre_match_ranker"].ranker},
                          HybridConfig(**{"seed": 2020, "num_threads": args.threads, **overrides(args.set)}),
                          refit_cache=StoredRefits(args.home / "cache" / "fits") if args.stored_refits else None)
    wall, cpu = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    lambdarank_cpu = []

    def timed_train_model(parts):
        start = time.process_time()
        HybridRanker.train_model(hybrid, parts)
        lambdarank_cpu.append(time.process_time() - start)

    hybrid.train_model = timed_train_model
    hybrid.fit(data)
    del hybrid.train_model
    valid = evaluate(hybrid, data, "valid", users=hybrid.validation_users_).summary[KEY]
    if profiler:
        profiler.disable()
    print(f"threads {args.threads}: {time.perf_counter() - wall:.1f} s wall, {time.process_time() - cpu:.1f} CPU s, "
          f"held-out validation NDCG@10 {valid!r}, trees {hybrid.training_log_.best_iteration} x {hybrid.config.n_models}"
          f"; load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    trees = hybrid.model_.booster_.current_iteration() + hybrid.training_log_.best_iteration * len(hybrid.extra_models_)
    print(f"LambdaRank models: {lambdarank_cpu[0]:.1f} CPU s ({lambdarank_cpu[0] / trees:.3f} a tree)")
    return hybrid, lambdarank_cpu[0] / trees


def prefix_of(hybrid: HybridRanker, spec: str) -> HybridRanker:
    """The fitted hybrid cut to a --prefix spec's n_models and n_estimators (either may be left out)."""
    fields = overrides(spec.split(","))
    if set(fields) - {"n_models", "n_estimators"}:
        raise SystemExit(f"--prefix {spec!r}: only n_models and n_estimators can be cut from a fit")
    return hybrid.with_models(fields.get("n_models", hybrid.config.n_models),
                              fields.get("n_estimators", hybrid.training_log_.best_iteration))


if __name__ == "__main__":
    main()
