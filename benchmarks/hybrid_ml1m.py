"""The LLM-enhanced hybrid on ML-1M under RecBole's protocol: validation sweeps, then one test comparison.

    .venv/bin/python -u benchmarks/hybrid_ml1m.py --prepare     # encode items, fit and cache base rankers
    .venv/bin/python -u benchmarks/hybrid_ml1m.py --sweep       # variants, scored on validation only
    .venv/bin/python -u benchmarks/hybrid_ml1m.py --test        # the default config: test EASE vs hybrid

ratings >= 3, 10-core, random 8:1:1 per user (seed 2020), full ranking. Base rankers (EASE, ItemKNN, ALS,
Adam-BPR with their defaults, the frozen-MiniLM content ranker and genre match) are fitted on the train
fold and pickled to /tmp, keyed by a fingerprint of the split and the item texts. Every variant is chosen
by the hybrid's held-out validation users (full-ranking NDCG@10 on the valid fold, compared with EASE on the
same users); the test fold is read only by --test, for the configuration that HybridConfig's defaults hold.
"""

from __future__ import annotations

# isort: off
import llmrec_platform  # noqa: F401 - first: its CPU-kernel pins must be set before numpy loads
# isort: on

import argparse
import dataclasses
import hashlib
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.data.text import build_item_texts
from llmrec_platform.encoders.vectors import align, user_interest_vectors
from llmrec_platform.evaluation.evaluate import evaluate
from llmrec_platform.evaluation.significance import paired_bootstrap
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker, concat_sets
from llmrec_platform.rankers.implicit_models import AdamBPRRanker, ALSRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.multvae import MultVAERanker
from llmrec_platform.rankers.rp3beta import RP3betaRanker
from llmrec_platform.rankers.sequence import SequenceNeighbourRanker
from llmrec_platform.settings import Settings
from llmrec_platform.threads import pin_blas_threads

CACHE = Path(os.environ.get("HYBRID_BENCH_CACHE", "/tmp"))


def load() -> tuple[InteractionData, pd.DataFrame, pd.DataFrame, str]:
    """(data, items, item_texts, fingerprint of split + texts)."""
    dataset = load_dataset("ml-1m")
    interactions = prepare_interactions(dataset.ratings, dataset.items, 3.0, 10)
    split = split_interactions(interactions, SplitConfig(protocol="recbole", seed=2020))
    texts, _ = build_item_texts(dataset.items)
    digest = hashlib.sha1()
    digest.update(pd.util.hash_pandas_object(split, index=False).to_numpy().tobytes())
    digest.update("".join(texts["text_hash"]).encode())
    for module in ("content", "ease", "genre", "implicit_models", "itemknn"):  # base rankers' code changes refit
        digest.update((Path(__file__).resolve().parents[1] / "llmrec_platform" / "rankers" / f"{module}.py").read_bytes())
    return InteractionData.from_split(split), dataset.items, texts, digest.hexdigest()[:12]


def item_embeddings(texts: pd.DataFrame) -> pd.DataFrame:
    """Frozen MiniLM embeddings of the item texts, cached as .npy by a hash of all texts."""
    path = CACHE / f"hybrid_ml1m_items_{hashlib.sha1(''.join(texts['text_hash']).encode()).hexdigest()[:12]}.npy"
    if path.exists():
        matrix = np.load(path)
    else:
        from llmrec_platform.encoders.models import TextEncoder

        start = time.perf_counter()
        matrix, _ = TextEncoder().encode(texts["text"].tolist())
        np.save(path, matrix)
        print(f"encoded {len(texts)} item texts in {time.perf_counter() - start:.0f}s -> {path}")
    return pd.DataFrame({"item_id": texts["item_id"].to_numpy(), "embedding": list(matrix.astype(np.float32))})


def base_rankers(data: InteractionData, items: pd.DataFrame, texts: pd.DataFrame, fingerprint: str):
    """(candidate rankers, content ranker, feature rankers), fitted on train and pickled to CACHE."""
    path = CACHE / f"hybrid_ml1m_bases_{fingerprint}.pkl"
    if path.exists():
        with open(path, "rb") as handle:
            return pickle.load(handle)
    embeddings = item_embeddings(texts)
    item_vectors = align(data.item_ids, embeddings, "item_id", "items")
    interests = user_interest_vectors(data.train, data.train_timestamps, item_vectors)
    users = pd.DataFrame({"user_id": data.user_ids, "embedding": list(interests)})
    bases = {}
    for name, ranker in {"ease": EASERanker(), "itemknn": ItemKNNRanker(), "als": ALSRanker(),
                         "bpr_adam": AdamBPRRanker()}.items():
        start = time.perf_counter()
        bases[name] = ranker.fit(data)
        print(f"fitted {name} in {time.perf_counter() - start:.1f}s")
    content = LLMContentRanker(embeddings, users).fit(data)
    features = {"genre_match": GenreMatchRanker(items).fit(data)}
    with open(path, "wb") as handle:
        pickle.dump((bases, content, features), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return bases, content, features


def attach(hybrid: HybridRanker, data: InteractionData) -> HybridRanker:
    """Set the fitted attributes the way `Ranker.fit` does, and build the feature context (no training)."""
    hybrid.user_ids_, hybrid.item_ids_, hybrid.train_ = data.user_ids, data.item_ids, data.train
    hybrid._user_position = {u: i for i, u in enumerate(data.user_ids)}
    hybrid.prepare(data)
    return hybrid


def cached_matrices(hybrid: HybridRanker, data: InteractionData, fingerprint: str) -> dict:
    """`training_matrices`, cached by the split, the feature code and the config fields features depend on."""
    cfg = hybrid.config
    source = Path(__file__).resolve().parents[1] / "llmrec_platform" / "rankers" / "hybrid.py"
    key = hashlib.sha1(repr((fingerprint, source.read_bytes(), cfg.n_candidates, cfg.holdout_users, cfg.seed,
                             cfg.liked_threshold, cfg.batch_size, cfg.pseudo_label_share, cfg.pseudo_users,
                             cfg.pseudo_with_valid, cfg.sequence_window, cfg.pseudo_draws)
                            ).encode()).hexdigest()[:12]
    path = CACHE / f"hybrid_ml1m_matrices_{key}.pkl"
    if path.exists():
        with open(path, "rb") as handle:
            matrices, hybrid.validation_users_, hybrid.candidate_recall_, pseudo_recall = pickle.load(handle)
        hybrid.pseudo_recall_ = pseudo_recall
        return matrices
    start = time.perf_counter()
    matrices = hybrid.training_matrices(data)
    print(f"  features for n_candidates={cfg.n_candidates} pseudo={cfg.pseudo_label_share}/{cfg.pseudo_users}: "
          f"{time.perf_counter() - start:.0f}s, rows " + ", ".join(f"{k} {len(v.y)}" for k, v in matrices.items())
          + f", valid recall {hybrid.candidate_recall_:.3f}, pseudo recall {getattr(hybrid, 'pseudo_recall_', None)}")
    with open(path, "wb") as handle:
        pickle.dump((matrices, hybrid.validation_users_, hybrid.candidate_recall_,
                     getattr(hybrid, "pseudo_recall_", None)), handle, protocol=pickle.HIGHEST_PROTOCOL)
    return matrices


def report(label: str, hybrid: HybridRanker, ease_holdout: float, seconds: float) -> float:
    log = hybrid.training_log_
    score = log.extra["holdout_full_ranking_ndcg@10"]
    print(f"  {label:<60} holdout NDCG@10 {score:.4f} (EASE {ease_holdout:.4f}, {score - ease_holdout:+.4f}) "
          f"best_it {log.best_iteration:>4} train {seconds:5.0f}s", flush=True)
    return score


ITERATIONS = (25, 50, 100, 150, 200, 300, 400, 500, 600, 700, 800)


def cross_validate(label: str, hybrid: HybridRanker, matrices: dict, data: InteractionData, ease_valid: float,
                   folds: int = 5) -> tuple[float, int]:
    """Mean full-ranking valid NDCG@10 over all validation users, each scored by a LambdaRank model trained on the
    other folds' validation users (plus the pseudo groups of those users), by number of trees. With n_models > 1
    each fold averages the predictions of models with seeds seed, seed + 1, ... (as the hybrid scores)."""
    cfg = hybrid.config
    valid_users = np.flatnonzero(np.asarray(data.valid.getnnz(axis=1)) > 0)
    fold_of = np.full(data.n_users, -1)
    fold_of[np.random.default_rng(cfg.seed).permutation(valid_users)] = np.arange(len(valid_users)) % folds
    labelled = concat_sets([matrices["valid_train"], matrices["holdout"]])
    iterations = [t for t in ITERATIONS if t <= cfg.n_estimators]
    totals, single = np.zeros(len(iterations)), np.zeros(len(iterations))
    start = time.perf_counter()
    for fold in range(folds):
        scored = fold_of[labelled.users] == fold
        train = [labelled.subset(~scored, 0)]
        if "pseudo" in matrices:
            pseudo = matrices["pseudo"]
            train.append(pseudo.subset(fold_of[pseudo.users] != fold, 0))
        train = concat_sets(train)
        evaluated = labelled.subset(scored, int((fold_of == fold).sum()))
        predictions = np.zeros((len(iterations), len(evaluated.y)))
        for offset in range(cfg.n_models):
            model = hybrid.make_model(offset)
            model.fit(train.X, train.y, group=train.groups)
            member = np.array([model.booster_.predict(evaluated.X, num_iteration=t) for t in iterations])
            if offset == 0:
                single += [evaluated.full_ranking_ndcg(p) * evaluated.n_users for p in member]
            predictions += member
        totals += [evaluated.full_ranking_ndcg(p) * evaluated.n_users for p in predictions]
    curve, single = totals / len(valid_users), single / len(valid_users)
    best = int(np.argmax(curve))
    print(f"  {label:<64} CV NDCG@10 {curve[best]:.4f} at {iterations[best]:>3} trees (EASE {ease_valid:.4f}, "
          f"{curve[best] - ease_valid:+.4f}); " + " ".join(f"{t}:{v:.4f}" for t, v in zip(iterations, curve, strict=True))
          + (f" | first model alone {single.max():.4f}" if cfg.n_models > 1 else "")
          + f"  [{time.perf_counter() - start:.0f}s]", flush=True)
    return float(curve[best]), iterations[best]


# Where the sweeps started (HybridConfig's defaults before this tuning), so the recorded tables can be re-run.
SWEEP_START = HybridConfig(n_candidates=50, n_estimators=600, early_stopping_rounds=50, feature_fraction=1.0,
                           bagging_fraction=1.0, pseudo_label_share=0.0)


def sweep(data, bases, content, features, fingerprint, stages: list[str]) -> None:
    base = SWEEP_START
    ease = bases["ease"]

    def run(label: str, config: HybridConfig, matrices: dict | None = None, hybrid: HybridRanker | None = None):
        hybrid = hybrid or attach(HybridRanker(bases, content, features, config), data)
        hybrid.config = config
        matrices = matrices if matrices is not None else cached_matrices(hybrid, data, fingerprint)
        ease_holdout = evaluate(ease, data, "valid", users=hybrid.validation_users_).summary["ndcg@10"]
        start = time.perf_counter()
        hybrid.train_model(matrices)
        return report(label, hybrid, ease_holdout, time.perf_counter() - start), hybrid, matrices

    if "check" in stages:  # the fast holdout metric equals evaluate() on the held-out users
        _, hybrid, _ = run("defaults", base)
        full = evaluate(hybrid, data, "valid", users=hybrid.validation_users_).summary["ndcg@10"]
        print(f"  evaluate() on the held-out users: {full:.4f}")
        print("  importances: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(
            hybrid.training_log_.importances.items(), key=lambda x: -x[1])[:15]))
    if "lgbm" in stages:
        hybrid = matrices = None
        for changes in [{}, dict(feature_fraction=0.7, bagging_fraction=0.8), dict(num_leaves=7, min_child_samples=500),
                        dict(num_leaves=31, min_child_samples=100), dict(num_leaves=63, min_child_samples=50),
                        dict(learning_rate=0.05), dict(truncation_level=10), dict(truncation_level=60),
                        dict(min_child_samples=1000)]:
            _, hybrid, matrices = run(f"lgbm {changes}", dataclasses.replace(base, **changes), matrices, hybrid)
    if "cv" in stages:  # LightGBM settings by 5-fold cross-validation over all validation users
        ease_valid = evaluate(ease, data, "valid").summary["ndcg@10"]
        hybrid = attach(HybridRanker(bases, content, features, base), data)
        matrices = cached_matrices(hybrid, data, fingerprint)
        for changes in [{}, dict(truncation_level=10), dict(truncation_level=20), dict(truncation_level=60),
                        dict(num_leaves=31, min_child_samples=100), dict(num_leaves=7, min_child_samples=500),
                        dict(feature_fraction=0.7, bagging_fraction=0.8), dict(learning_rate=0.05)]:
            hybrid.config = dataclasses.replace(base, **changes)
            cross_validate(f"lgbm {changes}", hybrid, matrices, data, ease_valid)
    if "cv-pseudo" in stages:  # more LambdaRank groups from the training fold
        ease_valid = evaluate(ease, data, "valid").summary["ndcg@10"]
        for changes in [dict(pseudo_label_share=0.125), dict(pseudo_label_share=0.125, pseudo_with_valid=True),
                        dict(pseudo_label_share=0.25, pseudo_with_valid=True)]:
            config = dataclasses.replace(base, **changes)
            hybrid = attach(HybridRanker(bases, content, features, config), data)
            cross_validate(f"{changes}", hybrid, cached_matrices(hybrid, data, fingerprint), data, ease_valid)
    if "cv-combined" in stages:
        ease_valid = evaluate(ease, data, "valid").summary["ndcg@10"]
        for changes in [dict(pseudo_label_share=0.125, feature_fraction=0.7, bagging_fraction=0.8),
                        dict(pseudo_label_share=0.125, feature_fraction=0.7, bagging_fraction=0.8, truncation_level=60),
                        dict(pseudo_label_share=0.125, feature_fraction=0.7, bagging_fraction=0.8, n_candidates=30),
                        dict(pseudo_label_share=0.125, feature_fraction=0.7, bagging_fraction=0.8, n_candidates=100)]:
            config = dataclasses.replace(base, **changes)
            hybrid = attach(HybridRanker(bases, content, features, config), data)
            cross_validate(f"{changes}", hybrid, cached_matrices(hybrid, data, fingerprint), data, ease_valid)
    if "cv-extra" in stages:  # more candidate rankers, pseudo draws, objectives, seed averages (from one model)
        ease_valid = evaluate(ease, data, "valid").summary["ndcg@10"]
        extra = {"rp3beta": RP3betaRanker(), "seq5": SequenceNeighbourRanker(5), "multvae": MultVAERanker()}
        for names, changes in [(["rp3beta"], {}), (["seq5"], {}), (["multvae"], {}), ([], dict(pseudo_draws=2)),
                               ([], dict(objective="rank_xendcg")), ([], dict(n_models=3)), ([], dict(n_models=5)),
                               (["rp3beta"], dict(n_models=3, pseudo_draws=2, n_estimators=800)),
                               (["multvae"], dict(n_models=5))]:
            candidates = {**bases, **{name: extra[name].fit(data) if extra[name].item_ids_ is None else extra[name]
                                      for name in names}}
            config = dataclasses.replace(HybridConfig(), **{"n_models": 1, **changes})
            hybrid = attach(HybridRanker(candidates, content, features, config), data)
            matrices = cached_matrices(hybrid, data, fingerprint + "|" + ",".join(names))
            cross_validate(f"candidates +{names} {changes}", hybrid, matrices, data, ease_valid)
    if "candidates" in stages:
        for n in (30, 50, 100):
            run(f"n_candidates={n}", dataclasses.replace(base, n_candidates=n))
    if "pseudo" in stages:
        for share, users in ((0.125, 0.5), (0.125, 1.0), (0.25, 1.0)):
            run(f"pseudo_label_share={share} pseudo_users={users}",
                dataclasses.replace(base, pseudo_label_share=share, pseudo_users=users))


def test(data, bases, content, features) -> None:
    config = HybridConfig()
    print(f"final config: {config}")
    start = time.perf_counter()
    candidates = {**bases, "multvae": MultVAERanker().fit(data)}  # the pipeline's candidate rankers
    print(f"fitted multvae in {time.perf_counter() - start:.0f}s")
    start = time.perf_counter()
    hybrid = HybridRanker(candidates, content, features, config).fit(data)
    fit_seconds = time.perf_counter() - start
    log = hybrid.training_log_
    ease_holdout = evaluate(bases["ease"], data, "valid", users=hybrid.validation_users_).summary["ndcg@10"]
    report("final (validation)", hybrid, ease_holdout, fit_seconds)
    print("  importances: " + ", ".join(f"{k} {v:.3f}" for k, v in sorted(
        log.importances.items(), key=lambda x: -x[1])[:15]))
    start = time.perf_counter()
    result = evaluate(hybrid, data, "test")
    predict_seconds = time.perf_counter() - start
    ease = evaluate(bases["ease"], data, "test")
    c = paired_bootstrap(result.per_user, ease.per_user, "ndcg@10", "hybrid", "ease")
    print(f"hybrid fit {fit_seconds:.0f}s, test scoring of {result.n_users} users {predict_seconds:.0f}s")
    print(f"TEST NDCG@10: EASE {ease.summary['ndcg@10']:.4f}  hybrid {result.summary['ndcg@10']:.4f}  "
          f"difference {c.mean_difference:+.4f}, 95% CI [{c.ci_low:+.4f}, {c.ci_high:+.4f}], "
          f"Wilcoxon p {c.wilcoxon_p:.2g}, excludes zero: {c.excludes_zero}")
    for metric in ("recall@10", "mrr@10", "hit@10"):
        print(f"  {metric}: EASE {ease.summary[metric]:.4f}  hybrid {result.summary[metric]:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prepare", action="store_true", help="only encode items and fit the base rankers")
    parser.add_argument("--sweep", nargs="*",
                        help="validation stages: check lgbm candidates pseudo cv cv-pseudo cv-combined cv-extra")
    parser.add_argument("--test", action="store_true", help="fit the default config and compare on test")
    args = parser.parse_args()
    pin_blas_threads(Settings.from_env().num_threads)  # as every pipeline process does
    start = time.perf_counter()
    data, items, texts, fingerprint = load()
    print(f"ML-1M: {data.n_users} users, {data.n_items} items; split {fingerprint}; {time.perf_counter() - start:.1f}s")
    bases, content, features = base_rankers(data, items, texts, fingerprint)
    if args.sweep is not None:
        sweep(data, bases, content, features, fingerprint, args.sweep or ["check", "lgbm", "candidates", "pseudo"])
    if args.test:
        test(data, bases, content, features)


if __name__ == "__main__":
    main()
