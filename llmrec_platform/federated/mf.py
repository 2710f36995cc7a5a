"""BPR matrix factorisation in numpy, written so that central and federated training run the same update.

The model: a user's interest vector u (factors,), item factors V (items, factors) and item biases b (items,);
score(u, i) = u . V[i] + b[i]. One local update (`local_update`) is one full-batch step of the BPR loss over a
user's own training items, each paired with one sampled negative: the user vector takes the mean gradient (its
own step size, `user_lr`), the item rows the summed gradient. Negatives come from a generator seeded by
(seed, epoch, user), so central training and a federated client draw the same negatives for the same epoch.

Central training (`train_central`) applies the users' updates one after another to one shared V and b, every
epoch in a seeded order. Federated training (`llmrec_platform.federated.flower`) lets every client start from
the same global V and b and adds up their updates on the server.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from llmrec_platform.data.interactions import InteractionData, binarize
from llmrec_platform.rankers.base import Histories, Ranker

FOLD_IN_KEY = 2**32 - 1  # the generator key of fold-in users (a training position is always smaller)


@dataclass(frozen=True)
class BPRMFConfig:
    factors: int = 32
    lr: float = 0.05  # item factors and biases: summed gradient
    user_lr: float = 1.0  # user vector: mean gradient over the user's pairs
    reg: float = 0.01
    init_scale: float = 0.1
    fold_in_steps: int = 50  # user-only steps that fit a vector for a history the model was not trained on
    seed: int = 2020

    def __post_init__(self):
        for name in ("factors", "fold_in_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"BPRMFConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "user_lr", "init_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BPRMFConfig.{name} must be positive, got {getattr(self, name)}")
        if self.reg < 0:
            raise ValueError(f"BPRMFConfig.reg must be >= 0, got {self.reg}")


def initial_item_model(n_items: int, config: BPRMFConfig) -> tuple[np.ndarray, np.ndarray]:
    """(item factors, item biases): the global model every training starts from."""
    rng = np.random.default_rng([config.seed, 0])
    factors = rng.normal(0.0, config.init_scale, (n_items, config.factors)).astype(np.float32)
    return factors, np.zeros(n_items, dtype=np.float32)


def initial_user_vector(config: BPRMFConfig, user_key: int) -> np.ndarray:
    """The interest vector a user (or a device) starts from, seeded by its key (a training position)."""
    return np.random.default_rng([config.seed, 1, user_key]).normal(0.0, config.init_scale, config.factors).astype(np.float32)


def step_generator(config: BPRMFConfig, epoch: int, user_key: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, 2, epoch, user_key])


def sample_negatives(rng: np.random.Generator, positives: np.ndarray, n_items: int) -> np.ndarray:
    """One uniformly drawn item per positive that is not among the positives."""
    if len(positives) >= n_items:
        raise ValueError(f"a user holds all {n_items} items: no negative item to sample")
    negatives = rng.integers(0, n_items, len(positives))
    bad = np.isin(negatives, positives)
    while bad.any():
        negatives[bad] = rng.integers(0, n_items, int(bad.sum()))
        bad = np.isin(negatives, positives)
    return negatives


def local_update(item_factors: np.ndarray, item_bias: np.ndarray, user_vector: np.ndarray, positives: np.ndarray,
                 rng: np.random.Generator, config: BPRMFConfig, update_items: bool = True) -> float:
    """One BPR step on one user's items, in place (the item model too unless `update_items` is False).
    Returns the mean BPR loss of the step's pairs before the step."""
    negatives = sample_negatives(rng, positives, len(item_bias))
    pos_factors, neg_factors = item_factors[positives], item_factors[negatives]
    difference = pos_factors - neg_factors
    margin = difference @ user_vector + item_bias[positives] - item_bias[negatives]
    weight = (1.0 / (1.0 + np.exp(margin))).astype(np.float32)  # sigmoid(-margin): d log sigmoid(margin) / d margin
    user_gradient = (weight[:, None] * difference).mean(axis=0) - config.reg * user_vector
    if update_items:
        item_step = weight[:, None] * user_vector[None, :]
        np.add.at(item_factors, positives, config.lr * (item_step - config.reg * pos_factors))
        np.add.at(item_factors, negatives, config.lr * (-item_step - config.reg * neg_factors))
        pos_bias, neg_bias = item_bias[positives], item_bias[negatives]
        np.add.at(item_bias, positives, config.lr * (weight - config.reg * pos_bias))
        np.add.at(item_bias, negatives, config.lr * (-weight - config.reg * neg_bias))
    user_vector += config.user_lr * user_gradient.astype(np.float32)
    return float(np.mean(np.logaddexp(0.0, -margin)))


def user_positives(train: sp.csr_matrix) -> list[np.ndarray]:
    """Each user's training items (positions), from a users x items matrix."""
    train = binarize(train)
    return [train.indices[train.indptr[u]:train.indptr[u + 1]].copy() for u in range(train.shape[0])]


def train_central(train: sp.csr_matrix, config: BPRMFConfig, epochs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user vectors, item factors, item biases) after `epochs` passes; each pass updates every user once, in a
    seeded order, on the one shared item model."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    positives = user_positives(train)
    item_factors, item_bias = initial_item_model(train.shape[1], config)
    user_vectors = np.stack([initial_user_vector(config, u) for u in range(train.shape[0])]) if positives \
        else np.zeros((0, config.factors), dtype=np.float32)
    for epoch in range(epochs):
        for user in np.random.default_rng([config.seed, 3, epoch]).permutation(len(positives)):
            if len(positives[user]):
                local_update(item_factors, item_bias, user_vectors[user], positives[user],
                             step_generator(config, epoch, int(user)), config)
    return user_vectors, item_factors, item_bias


def fold_in(item_factors: np.ndarray, item_bias: np.ndarray, positives: np.ndarray, config: BPRMFConfig) -> np.ndarray:
    """An interest vector for a history, fitted against fixed item factors: what a new device computes."""
    vector = initial_user_vector(config, FOLD_IN_KEY)
    for step in range(config.fold_in_steps):
        local_update(item_factors, item_bias, vector, positives, step_generator(config, step, FOLD_IN_KEY), config,
                     update_items=False)
    return vector


class BPRMFRanker(Ranker):
    """BPR matrix factorisation trained centrally for `epochs` passes. Training users are scored with their
    learned vectors; any other history is folded in (`fold_in`), so the fold-in of a training user's own history
    is close to, not equal to, scoring that user by id."""

    name = "bpr_mf_central"

    def __init__(self, config: BPRMFConfig | None = None, epochs: int = 20):
        self.config = config or BPRMFConfig()
        self.epochs = epochs

    def _fit(self, data: InteractionData) -> None:
        self.user_factors_, self.item_factors_, self.item_bias_ = train_central(data.train, self.config, self.epochs)

    def _score(self, users: np.ndarray) -> np.ndarray:
        return self.user_factors_[users] @ self.item_factors_.T + self.item_bias_

    def _score_histories(self, histories: Histories) -> np.ndarray:
        binary = histories.binary()
        vectors = np.zeros((len(histories), self.config.factors), dtype=np.float32)
        for row in range(len(histories)):
            positives = binary.indices[binary.indptr[row]:binary.indptr[row + 1]]
            if len(positives):
                vectors[row] = fold_in(self.item_factors_, self.item_bias_, positives, self.config)
        return vectors @ self.item_factors_.T + self.item_bias_
