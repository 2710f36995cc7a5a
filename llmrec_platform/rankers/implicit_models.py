"""Matrix-factorisation baselines for implicit feedback: ALS and BPR from the `implicit` library (CPU),
and BPR trained with RecBole's mini-batch Adam recipe in torch (`AdamBPRRanker`).

All fit on the binarized user x item training matrix (implicit >= 0.7 takes user_items) and keep only
the learned factor matrices, so a pickled ranker does not depend on implicit's or torch's classes.
Scores are user_factors[users] @ item_factors.T (implicit BPR's last factor column carries the item bias). A
history the ranker has not seen gets its user factor by `fold_in_factors` against the fixed item factors.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from llmrec_platform.data.interactions import InteractionData, binarize
from llmrec_platform.progress import report as report_progress
from llmrec_platform.rankers.base import Histories, Ranker
from llmrec_platform.rankers.early_stopping import EarlyStopping, check_early_stopping


def fold_in_factors(item_factors: np.ndarray, history: sp.csr_matrix, confidence: float,
                    regularization: float) -> np.ndarray:
    """User factors for binarized histories against fixed item factors Y, as implicit's ALS solves them
    (`recalculate_user`): x = (Y'Y + reg I + (c - 1) Y_h'Y_h)^-1 c Y_h'1, where Y_h are the history's items and
    c the confidence of an observed item (every other item is a zero with confidence 1). Float64 solves."""
    y = np.asarray(item_factors, dtype=np.float64)
    gram = y.T @ y + regularization * np.eye(y.shape[1])
    factors = np.zeros((history.shape[0], y.shape[1]), dtype=np.float64)
    for row in range(history.shape[0]):
        items = history.indices[history.indptr[row]:history.indptr[row + 1]]
        if len(items):
            seen = y[items]
            factors[row] = np.linalg.solve(gram + (confidence - 1.0) * seen.T @ seen, confidence * seen.sum(axis=0))
    return factors.astype(np.float32)


class _FactorRanker(Ranker):
    """Scores by stored user factors for training users; folds a new history in by `fold_in_factors` with
    `fold_in_confidence` and `fold_in_regularization` (ALS: its own alpha and regularization)."""

    user_factors_: np.ndarray
    item_factors_: np.ndarray
    fold_in_confidence: float
    fold_in_regularization: float

    def _store(self, model) -> None:
        self.user_factors_ = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(model.item_factors, dtype=np.float32)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T

    def _score_histories(self, histories: Histories) -> np.ndarray:
        factors = fold_in_factors(self.item_factors_, histories.binary(), self.fold_in_confidence,
                                  self.fold_in_regularization)
        return factors @ self.item_factors_.T

    def _similar_item_scores(self, position: int) -> np.ndarray:
        norms = np.linalg.norm(self.item_factors_, axis=1)
        return self.item_factors_ @ self.item_factors_[position] / np.maximum(norms * norms[position], 1e-12)


class ALSRanker(_FactorRanker):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008) with confidence 1 + alpha on observed items.

    Each ALS half-step solves users (items) independently, so results do not depend on num_threads.

    Defaults tuned on the ML-1M valid fold (RecBole protocol, seed 2020; benchmarks/ml1m_protocol.py
    --tune), NDCG@10 on valid, 15 iterations, (factors, regularization, alpha):
      (64, 1, 10) 0.1943 | (32, 1, 10) 0.1966 | (128, 1, 10) 0.1816 | (64, 30, 10) 0.2050 | (64, 1, 5) 0.2088
      (64, 1, 20) 0.1706 | (64, 30, 5) 0.2175 | (64, 30, 3) 0.2211 | (64, 50, 3) 0.2244 | (96, 50, 3) 0.2256
      (128, 50, 3) 0.2258 | (128, 50, 4) 0.2232 | (128, 80, 3) 0.2054 | (64, 100, 10) 0.2194 | 30 iterations of
      (128, 50, 3) 0.2259
    """

    name = "als"

    def __init__(self, factors: int = 128, regularization: float = 50.0, alpha: float = 3.0,
                 iterations: int = 15, seed: int = 2020, num_threads: int = 0):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.num_threads = num_threads

    @property
    def fold_in_confidence(self) -> float:
        return self.alpha

    @property
    def fold_in_regularization(self) -> float:
        return self.regularization

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
    for a seed need num_threads=1 (the default; ML-1M takes 10-20 s on one thread; 0 = all cores).

    Defaults tuned on the ML-1M valid fold (RecBole protocol, seed 2020; benchmarks/ml1m_protocol.py
    --tune), NDCG@10 on valid, (factors, learning_rate, regularization, iterations):
      (64, 0.05, 0.01, 100) 0.1019 | (64, 0.01, 0.01, 100) 0.1272 | (64, 0.003, 0.01, 100) 0.1505
      (64, 0.001, 0.01, 250) 0.1512 | (128, 0.001, 0.01, 250) 0.1506 | (64, 0.003, 0.05, 100) 0.1358
      (64, 0.003, 0.003, 100) 0.1586 | (64, 0.003, 0.001, 100) 0.1614 | (64, 0.003, 0.0003, 100) 0.1624
      (64, 0.003, 0, 100) 0.1632 | (64, 0.002, 0.001, 150) 0.1621 | (128, 0.003, 0.001, 100) 0.1613
    The curve over iterations peaks and then falls (overfitting; lr 0.003, reg 0.01: 0.149 at 100, 0.116 at
    800). It plateaus near 0.16, well below mini-batch Adam BPR (`AdamBPRRanker`, 0.195): use that one to
    compare with RecBole's published BPR. A small regularization is kept (0.001 vs 0 is within noise).

    Fold-in settings: those closest to the stored factors on the ML-100K valid fold (NDCG@10 by id 0.1730;
    fold-in by (confidence, regularization): (3, 0.01) 0.1683 (kept) | (3, 1) 0.2199 | (10, 1) 0.2125 | (10, 10)
    0.2143). Stronger regularisation beats the stored factors: BPR's SGD user factors are under-fit.
    """

    name = "bpr"

    def __init__(self, factors: int = 64, learning_rate: float = 0.003, regularization: float = 0.001,
                 iterations: int = 100, seed: int = 2020, num_threads: int = 1, fold_in_confidence: float = 3.0,
                 fold_in_regularization: float = 0.01):
        self.fold_in_confidence = fold_in_confidence
        self.fold_in_regularization = fold_in_regularization
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


def sample_negatives(rng: np.random.Generator, users: np.ndarray, positive_keys: np.ndarray, n_items: int,
                     max_rounds: int = 100) -> np.ndarray:
    """One uniformly drawn item per user that the user has not interacted with (rejection sampling).

    `positive_keys` is the sorted array user * n_items + item of the training interactions.
    """
    negatives = rng.integers(0, n_items, size=len(users))
    todo = np.arange(len(users))
    for _ in range(max_rounds):
        keys = users[todo] * n_items + negatives[todo]
        found = np.searchsorted(positive_keys, keys)
        found = np.minimum(found, len(positive_keys) - 1)
        todo = todo[positive_keys[found] == keys]
        if not len(todo):
            break
        negatives[todo] = rng.integers(0, n_items, size=len(todo))
    return negatives


def train_bpr_adam(x, factors: int, learning_rate: float, epochs: int, batch_size: int, weight_decay: float,
                   seed: int, callback=None, stopping: EarlyStopping | None = None) -> tuple[np.ndarray, np.ndarray]:
    """RecBole's BPR recipe: Xavier-normal embeddings, one uniform unseen negative per training pair per epoch,
    mini-batch Adam (torch's fused kernel) on -log sigmoid(x_ui - x_uj). Returns (user_factors, item_factors) as
    float32: the last epoch's, or with `stopping` the best validated epoch's.

    `callback(epoch, user_factors, item_factors)` is called after every epoch (for learning curves).
    """
    import torch

    x = binarize(x).tocoo()
    order = np.lexsort((x.col, x.row))
    users, items = x.row[order].astype(np.int64), x.col[order].astype(np.int64)
    n_users, n_items = x.shape
    positive_keys = users * n_items + items
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    user_emb = torch.empty(n_users, factors)
    item_emb = torch.empty(n_items, factors)
    torch.nn.init.xavier_normal_(user_emb, generator=generator)
    torch.nn.init.xavier_normal_(item_emb, generator=generator)
    user_emb.requires_grad_(True)
    item_emb.requires_grad_(True)
    optimizer = torch.optim.Adam([user_emb, item_emb], lr=learning_rate, weight_decay=weight_decay, fused=True)

    def factors_now() -> tuple[np.ndarray, np.ndarray]:
        return user_emb.detach().numpy().astype(np.float32), item_emb.detach().numpy().astype(np.float32)  # copies

    for epoch in range(1, epochs + 1):
        permutation = rng.permutation(len(users))
        negatives = torch.from_numpy(sample_negatives(rng, users[permutation], positive_keys, n_items))
        batch_users = torch.from_numpy(users[permutation])
        batch_items = torch.from_numpy(items[permutation])
        for start in range(0, len(users), batch_size):
            u = user_emb[batch_users[start:start + batch_size]]
            pos = item_emb[batch_items[start:start + batch_size]]
            neg = item_emb[negatives[start:start + batch_size]]
            loss = -torch.nn.functional.logsigmoid((u * (pos - neg)).sum(dim=1)).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        report_progress(epoch, epochs, "epochs")
        if callback is not None:
            callback(epoch, user_emb.detach().numpy(), item_emb.detach().numpy())
        if stopping is not None and stopping.due(epoch, epochs):
            current = factors_now()
            if stopping.update(epoch, lambda rows, f=current: f[0][rows] @ f[1].T, lambda f=current: f):
                break
    return stopping.best_state if stopping is not None else factors_now()


class AdamBPRRanker(_FactorRanker):
    """BPR trained as RecBole trains it (mini-batch Adam, unseen negatives), in torch on the CPU.

    implicit's Hogwild-SGD BPR (`BPRRanker`) tops out well below RecBole's published BPR on ML-1M; this
    recipe reaches it. With `num_threads` torch threads (default 1: the mini-batches are small, and more
    threads mostly add contention) results are bit-identical for a seed.

    Defaults tuned on the ML-1M valid fold (RecBole protocol, seed 2020; benchmarks/ml1m_protocol.py
    --tune), NDCG@10 on valid, batch 2048 (the number of epochs plays the part of RecBole's early stopping):
      factors 64, lr 1e-3: 5 epochs 0.1377 | 10 0.1617 | 20 0.1825 | 30 0.1905 | 40 0.1932 | 50 0.1905 | 60 0.1875
      factors 128, lr 1e-3: 15 0.1876 | 20 0.1936 | 25 0.1948 | 30 0.1943 | 40 0.1911
      factors 64, lr 2e-3: 10 0.1799 | 15 0.1862 | 25 0.1825;  lr 5e-3, batch 4096: 10 0.1792 | 30 0.1561
    Fold-in settings: those closest to the stored factors on the ML-100K valid fold (NDCG@10 by id 0.2050;
    fold-in by (confidence, regularization): (10, 1) 0.1295 | (10, 10) 0.1675 | (10, 100) 0.2072 (kept) | (10, 300)
    0.2148 | (1.5, 300) 0.2171).
    Early stopping as Mult-VAE's (`patience` > 0, the default; `rankers/early_stopping.py`): the validation
    NDCG@10 of a seeded sample of `eval_users` users every `eval_every` epochs, the best epoch's factors kept
    (`best_epoch_`, `validation_curve_`); `epochs` is the maximum. The fit reads `data.valid` for this only.
    """

    name = "bpr_adam"
    patience: int = 0  # class defaults: rankers pickled before the option still refit
    eval_every: int = 5
    eval_users: int = 2000
    best_epoch_: int | None = None
    validation_curve_: list[tuple[int, float]] | None = None

    def __init__(self, factors: int = 128, learning_rate: float = 1e-3, epochs: int = 25, batch_size: int = 2048,
                 weight_decay: float = 0.0, seed: int = 2020, num_threads: int = 1, fold_in_confidence: float = 10.0,
                 fold_in_regularization: float = 100.0, patience: int = 2, eval_every: int = 5,
                 eval_users: int = 2000):
        check_early_stopping(patience, eval_every, eval_users)
        self.fold_in_confidence = fold_in_confidence
        self.fold_in_regularization = fold_in_regularization
        self.factors = factors
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.seed = seed
        self.num_threads = num_threads
        self.patience = patience
        self.eval_every = eval_every
        self.eval_users = eval_users

    def _fit(self, data: InteractionData) -> None:
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        stopping = EarlyStopping.for_data(data, self.patience, self.eval_every, self.eval_users, self.seed)
        try:
            self.user_factors_, self.item_factors_ = train_bpr_adam(
                data.train, self.factors, self.learning_rate, self.epochs, self.batch_size, self.weight_decay,
                self.seed, stopping=stopping,
            )
            self.best_epoch_ = None if stopping is None else stopping.best_epoch
            self.validation_curve_ = None if stopping is None else stopping.curve
        finally:
            torch.set_num_threads(previous_threads)
