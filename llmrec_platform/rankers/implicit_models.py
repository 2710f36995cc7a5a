"""Matrix factorisation baselines from the `implicit` library (CPU): ALS and BPR.

Both fit on the binarized user x item training matrix (implicit >= 0.7 takes user_items) and keep only
the learned factor matrices, so a pickled ranker does not depend on implicit's model classes.
Scores are user_factors[users] @ item_factors.T (BPR's last factor column carries the item bias).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from llmrec_platform.interactions import InteractionData
from llmrec_platform.rankers.base import Ranker
from llmrec_platform.rankers.itemknn import binarize


class _FactorRanker(Ranker):
    user_factors_: np.ndarray
    item_factors_: np.ndarray

    def _store(self, model) -> None:
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T


class ALSRanker(_FactorRanker):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with confidence 1 + alpha on observed items.

    Each ALS half-step solves users (items) independently, so results do not depend on num_threads.

    Defaults tuned on the ML-1M valid fold (RecBole protocol, seed 2020): see benchmarks/ml1m_protocol.py.
    """

    name = "als"

    def __init__(self, factors: int = 128, regularization: float = 1.0, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 2020, num_threads: int = 0):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def _fit(self, data: InteractionData) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        with threadpool_limits(1, "blas"):  # implicit parallelises itself; a BLAS thread pool only hurts
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                iterations=self.iterations, random_state=self.seed, num_threads=self.num_threads,
            )
            model.fit(binarize(data.train), show_progress=False)
        self._store(model)


class BPRRanker(_FactorRanker):
    """Bayesian Personalized Ranking (Rendle et al. 2009) trained by SGD on sampled (user, pos, neg) triples.

    implicit's BPR runs Hogwild SGD: with num_threads > 1 the threads race, so bit-identical results
    for a seed need num_threads=1 (the default; on ML-1M a single thread takes a few seconds).

    Defaults tuned on the ML-1M valid fold (RecBole protocol, seed 2020): see benchmarks/ml1m_protocol.py.
    """

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.05, regularization: float = 0.01,
                 iterations: int = 100, seed: int = 2020, num_threads: int = 1):
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    def _fit(self, data: InteractionData) -> None:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        with threadpool_limits(1, "blas"):
            model = BayesianPersonalizedRanking(
                factors=self.factors, learning_rate=self.learning_rate, regularization=self.regularization,
                iterations=self.iterations, random_state=self.seed, num_threads=self.num_threads,
            )
            model.fit(binarize(data.train), show_progress=False)
        self._store(model)
