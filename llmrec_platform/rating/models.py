"""Rating predictors: the biased baseline, biased matrix factorisation and SVD++ (no Dagster).

Every model has `fit(ratings) -> self` and `predict(users, items) -> float64 ratings`, clipped to the
training ratings' range (as Surprise clips to the rating scale). Users and items are positions in the
shared index of `Ratings`; one with no training rating gets the global mean plus what is known (its bias
and factors stay zero). Every random choice comes from `seed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmrec_platform.rating.data import Ratings


class RatingModel:
    name = "rating_model"

    def fit(self, ratings: Ratings) -> RatingModel:
        raise NotImplementedError

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def params(self) -> dict:
        return {}


def _counts(index: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(index, minlength=size).astype(np.float64)


@dataclass
class BaselineModel(RatingModel):
    """r̂ = μ + b_u + b_i, fitted like Surprise's BaselineOnly (ALS): alternating closed-form updates
    b_u = Σ(r - μ - b_i) / (reg_user + n_u), then b_i = Σ(r - μ - b_u) / (reg_item + n_i)."""

    reg_user: float = 15.0
    reg_item: float = 10.0
    epochs: int = 10
    name: str = "baseline"
    mu_: float = field(default=0.0, init=False, repr=False)

    def fit(self, ratings: Ratings) -> BaselineModel:
        u, i, r = ratings.users, ratings.items, ratings.values
        self.mu_ = float(r.mean())
        self.range_ = (float(r.min()), float(r.max()))
        n_u, n_i = _counts(u, ratings.n_users), _counts(i, ratings.n_items)
        self.user_bias_ = np.zeros(ratings.n_users)
        self.item_bias_ = np.zeros(ratings.n_items)
        for _ in range(self.epochs):
            self.user_bias_ = np.bincount(u, r - self.mu_ - self.item_bias_[i], ratings.n_users) / (self.reg_user + n_u)
            self.item_bias_ = np.bincount(i, r - self.mu_ - self.user_bias_[u], ratings.n_items) / (self.reg_item + n_i)
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.clip(self.mu_ + self.user_bias_[users] + self.item_bias_[items], *self.range_)

    def params(self) -> dict:
        return {"reg_user": self.reg_user, "reg_item": self.reg_item, "epochs": self.epochs}


class _Groups:
    """Rating rows grouped by one index (users or items): `order` lists the rows group by group."""

    def __init__(self, index: np.ndarray, size: int):
        self.order = np.argsort(index, kind="stable")
        self.counts = np.bincount(index, minlength=size)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])

    def solve(self, design: np.ndarray, target: np.ndarray, ridge: np.ndarray) -> np.ndarray:
        """Per group g, the ridge solution of design[rows of g] @ w = target[rows of g] with penalty
        diag(ridge) * count_g (weighted-λ, as in ALS-WR); an empty group gets zeros."""
        x, t = design[self.order], target[self.order]
        dim = design.shape[1]
        gram = np.zeros((len(self.counts), dim, dim))
        rhs = np.zeros((len(self.counts), dim))
        for g in np.flatnonzero(self.counts):
            rows = slice(self.starts[g], self.starts[g + 1])
            gram[g] = x[rows].T @ x[rows]
            rhs[g] = x[rows].T @ t[rows]
        gram += np.maximum(self.counts, 1)[:, None, None] * np.diag(ridge)[None]
        return np.linalg.solve(gram, rhs[..., None])[..., 0]


@dataclass
class FactorModel(RatingModel):
    """Biased MF (r̂ = μ + b_u + b_i + q_i·p_u, the model of Surprise's SVD) or, with `implicit`, SVD++
    (q_i·(p_u + z_u), z_u = |N(u)|^-½ Σ_{j∈N(u)} y_j, N(u) = the user's training items), fitted by
    alternating least squares: each step solves one block exactly (users' [p_u, b_u], then items' [q_i, b_i],
    then for SVD++ all of Y by conjugate gradients), so a fit is deterministic for a seed and needs no
    learning rate. The penalty is weighted-λ (ALS-WR): λ·n on a user's or item's factors and bias, with n its
    training ratings; Y has a plain λ_y·|Y|²."""

    factors: int = 32
    epochs: int = 12
    reg: float = 0.06
    reg_bias: float = 0.01
    reg_implicit: float = 20.0
    cg_steps: int = 4
    implicit: bool = False
    init_std: float = 0.1
    seed: int = 2020
    name: str = "biased_mf"

    def params(self) -> dict:
        keys = ("factors", "epochs", "reg", "reg_bias", "implicit", "init_std", "seed")
        extra = {"reg_implicit": self.reg_implicit, "cg_steps": self.cg_steps} if self.implicit else {}
        return {k: getattr(self, k) for k in keys} | extra

    def fit(self, ratings: Ratings) -> FactorModel:
        import scipy.sparse as sp

        rng = np.random.default_rng(self.seed)
        u, i, r = ratings.users, ratings.items, ratings.values
        n_users, n_items, k = ratings.n_users, ratings.n_items, self.factors
        self.mu_ = float(r.mean())
        self.range_ = (float(r.min()), float(r.max()))
        by_user, by_item = _Groups(u, n_users), _Groups(i, n_items)
        user_f, user_b = np.zeros((n_users, k)), np.zeros(n_users)
        item_f, item_b = rng.normal(0.0, self.init_std, (n_items, k)), np.zeros(n_items)
        item_f[by_item.counts == 0] = 0.0
        implicit_f = np.zeros((n_items, k))
        neighbourhood = None
        if self.implicit:
            weights = 1.0 / np.sqrt(np.maximum(by_user.counts, 1))
            neighbourhood = sp.csr_matrix((weights[u], (u, i)), shape=(n_users, n_items))
        ridge = np.array([self.reg] * k + [self.reg_bias])
        ones = np.ones((len(r), 1))
        self.train_rmse_ = []
        for _ in range(self.epochs):
            implicit_sum = neighbourhood @ implicit_f if self.implicit else np.zeros((n_users, k))
            offset = np.einsum("ij,ij->i", item_f[i], implicit_sum[u])
            solved = by_user.solve(np.hstack([item_f[i], ones]), r - self.mu_ - item_b[i] - offset, ridge)
            user_f, user_b = solved[:, :k], solved[:, k]
            user_vectors = user_f + implicit_sum
            solved = by_item.solve(np.hstack([user_vectors[u], ones]), r - self.mu_ - user_b[u], ridge)
            item_f, item_b = solved[:, :k], solved[:, k]
            if self.implicit:
                implicit_f = self._solve_implicit(ratings, by_user, neighbourhood, user_f, user_b, item_f, item_b,
                                                  implicit_f)
            self.user_bias_, self.item_bias_ = user_b, item_b
            self.user_factors_ = user_f + (neighbourhood @ implicit_f if self.implicit else 0.0)
            self.item_factors_ = item_f
            self.train_rmse_.append(float(np.sqrt(np.mean((self.predict(u, i) - r) ** 2))))
        return self

    def _solve_implicit(self, ratings, by_user, neighbourhood, user_f, user_b, item_f, item_b, start):
        """Y minimising Σ(e_ui - q_i·z_u)² + λ_y|Y|², e = r - μ - b_u - b_i - q_i·p_u, z = N·Y: the normal
        equations Nᵀ C_u N Y + λ_y Y = Nᵀ (Σ_i e_ui q_i), C_u = Σ_{i∈R(u)} q_i q_iᵀ, by conjugate gradients."""
        import scipy.sparse as sp

        u, i, r = ratings.users, ratings.items, ratings.values
        q = item_f[i]
        residual = r - self.mu_ - user_b[u] - item_b[i] - np.einsum("ij,ij->i", q, user_f[u])
        per_user = sp.csr_matrix((residual, (u, i)), shape=neighbourhood.shape) @ item_f
        rhs = neighbourhood.T @ per_user
        qq = np.zeros((len(by_user.counts), item_f.shape[1], item_f.shape[1]))
        qs = q[by_user.order]
        for g in np.flatnonzero(by_user.counts):
            rows = slice(by_user.starts[g], by_user.starts[g + 1])
            qq[g] = qs[rows].T @ qs[rows]

        def apply(y: np.ndarray) -> np.ndarray:
            z = neighbourhood @ y
            return neighbourhood.T @ np.einsum("ukl,ul->uk", qq, z) + self.reg_implicit * y

        y = start.copy()
        res = rhs - apply(y)
        direction = res.copy()
        norm = float(np.sum(res * res))
        for _ in range(self.cg_steps):
            if norm <= 1e-12:
                break
            a_dir = apply(direction)
            step = norm / float(np.sum(direction * a_dir))
            y += step * direction
            res -= step * a_dir
            new_norm = float(np.sum(res * res))
            direction = res + (new_norm / norm) * direction
            norm = new_norm
        return y

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dot = np.einsum("ij,ij->i", self.user_factors_[users], self.item_factors_[items])
        return np.clip(self.mu_ + self.user_bias_[users] + self.item_bias_[items] + dot, *self.range_)
