"""The hybrid's settings (chosen by cross-validation on the ML-1M valid fold) and its training log."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HybridConfig:
    # Chosen on the valid fold of ML-1M (recbole protocol, seed 2020) by 5-fold cross-validation over all 6,033
    # validation users (benchmarks/hybrid_ml1m.py --sweep cv cv-pseudo cv-combined): full-ranking NDCG@10 at the
    # best number of trees; EASE scores 0.2285. From n_candidates 50, lr 0.02, 15 leaves, min 200, truncation 30,
    # no pseudo-labels: as is 0.2362 (600 trees) | truncation 10 0.2356, 20 0.2363, 60 0.2365 | 31 leaves/min 100
    # 0.2350 | 7 leaves/min 500 0.2358 | lr 0.05 0.2356 (150) | feature/bagging fraction 0.7/0.8 0.2370 (400).
    # Pseudo-labels: share 0.125 0.2372 (500) | 0.125 with valid labels 0.2374 (400) | 0.25 with valid labels 0.2365;
    # share 0.125 + fractions 0.7/0.8 0.2371 (600) | + truncation 60 0.2368 | + n_candidates 30 0.2374 (500, kept)
    # | + n_candidates 100 0.2360. Differences under ~0.001 are noise; ties went to the cheaper setting. The number
    # of trees is fixed (early_stopping_rounds 0): early stopping on 20% of the users stopped after ~10 trees.
    # Then (--sweep cv-extra), from the config above (0.2374 at 500 trees): more candidate rankers: + RP3beta 0.2376
    # | + sequence neighbours window 5 0.2370 | + Mult-VAE 0.2386 (kept); pseudo_draws 2 0.2376 | rank_xendcg 0.2369 |
    # seed averages n_models 3 0.2379, 5 0.2381 (kept: averaging only removes seed variance; each fold's first
    # model alone scores 0.2374) | + RP3beta, pseudo_draws 2, n_models 3, 800 trees 0.2377 (first model 0.2382).
    # Both kept changes together (Mult-VAE candidates in the pipeline's hybrid_ranker, n_models 5): 0.2393 at 500
    # trees (300: 0.2397, 400: 0.2395; 500 kept, the difference is noise), first model alone 0.2386.
    # Re-measured on ML-100K (7 Dec, benchmarks/profile_hybrid.py --stored-refits --test --sweep, the same feature
    # matrices): early_stopping_rounds 100 stops at 14 trees, test NDCG@10 -0.0003 [-0.0062, +0.0053] against 500
    # trees (its five models 6.6 CPU s); n_models 3 +0.0003 [-0.0017, +0.0024] (31.5 CPU s). No pseudo-labels (no
    # refits): -0.0037, kept. Again on this tree (7 Dec evening, benchmarks/profile_hybrid.py --prefix: the fit's
    # own models cut, the same trees; docs/performance.md): n_models 3 0.2960 -> 0.2962, +0.0001 [-0.0019, +0.0021],
    # LambdaRank 54.3 -> about 32.6 CPU s. ML-1M (profile_hybrid.py --dataset ml-1m --fitted --test --prefix
    # n_models=3): 0.3010 -> 0.3006, -0.0003 [-0.0010, +0.0003], validation 0.2384 -> 0.2376; 500 trees there take
    # about 107 CPU s a model. So three models are the default.
    # Fewer trees (300, 200, 100) and early stopping (10 trees) score 0.0025-0.0054 higher on ML-100K's test fold:
    # outside the 0.002 a speed change may move the hybrid, so a model change to decide with the tables, not here.
    n_candidates: int = 30
    n_estimators: int = 500
    learning_rate: float = 0.02
    num_leaves: int = 15
    min_child_samples: int = 200
    early_stopping_rounds: int = 0  # > 0: stop when the holdout users' NDCG@10 has not improved for this many trees
    feature_fraction: float = 0.7
    holdout_users: float = 0.2
    liked_threshold: float = 4.0
    batch_size: int = 512
    seed: int = 2020
    num_threads: int = 2  # LightGBM threads: fixed, so models and metrics do not depend on the machine
    bagging_fraction: float = 0.8
    truncation_level: int = 30  # lambdarank_truncation_level
    pseudo_label_share: float = 0.125  # share of each user's training items held out as pseudo-labels (0: off)
    pseudo_users: float = 1.0  # share of users that get a pseudo-labelled group
    pseudo_with_valid: bool = False  # also label the validation items in the training users' pseudo groups
    pseudo_draws: int = 1  # independent pseudo-label draws (each refits the base rankers once)
    sequence_window: int = 3  # the hybrid's own SequenceNeighbourRanker feature (0: off)
    n_models: int = 3  # LambdaRank models with seeds seed, seed + 1, ...; the hybrid scores their mean
    parallel_models: bool = True  # train the models after the first side by side, one LightGBM thread each
    objective: str = "lambdarank"  # or "rank_xendcg"


@dataclass
class HybridTrainingLog:
    feature_names: list[str]
    importances: dict[str, float]
    validation_curve: list[float]
    best_iteration: int
    train_rows: int
    train_users: int
    holdout_users: int
    candidate_recall: float  # share of validation items that the candidate stage retrieved
    extra: dict = field(default_factory=dict)


