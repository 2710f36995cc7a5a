"""Train/valid/test protocols.

recbole:  ratings >= 3, iterative 10-core on users and items, random 8:1:1 per user (seeded) — RecBole's
          ML-1M "general" protocol, so results compare with its published tables.
temporal: one global time cut (the leak-free choice for production): the latest interactions form
          valid and test; users and items first seen after the training cut are dropped from those folds,
          so every evaluated user has training history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

FOLDS = ("train", "valid", "test")
PROTOCOLS = ("recbole", "temporal")
SPLIT_COLUMNS = ["user_id", "item_id", "rating", "timestamp", "fold"]


@dataclass(frozen=True)
class SplitConfig:
    protocol: str = "recbole"
    min_rating: float = 3.0
    core: int = 10
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 2020
    cold_item_fraction: float = 0.0

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"unknown protocol {self.protocol!r}: use one of {', '.join(PROTOCOLS)}")
        if not np.isclose(sum(self.ratios), 1.0):
            raise ValueError(f"split ratios {self.ratios} must sum to 1")


def prepare_interactions(ratings: pd.DataFrame, items: pd.DataFrame, min_rating: float, core: int) -> pd.DataFrame:
    """Keep ratings >= min_rating of known items (one row per user-item: the latest), then k-core filter."""
    frame = ratings[ratings["rating"] >= min_rating]
    frame = frame[frame["item_id"].isin(items["item_id"])]
    frame = frame.sort_values("timestamp", kind="stable").drop_duplicates(["user_id", "item_id"], keep="last")
    return k_core(frame, core).reset_index(drop=True)


def k_core(frame: pd.DataFrame, core: int) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than `core` interactions until both sides comply."""
    while core > 1:
        user_counts = frame["user_id"].map(frame["user_id"].value_counts())
        item_counts = frame["item_id"].map(frame["item_id"].value_counts())
        keep = (user_counts >= core) & (item_counts >= core)
        if keep.all():
            break
        frame = frame[keep]
    return frame


def split_interactions(interactions: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    if interactions.empty:
        raise ValueError("no interactions left to split: check the rating threshold and k-core settings")
    split = _random_per_user(interactions, config) if config.protocol == "recbole" else _temporal(interactions, config)
    if config.cold_item_fraction > 0:
        split = hold_out_cold_items(split, config.cold_item_fraction, config.seed)
    return split[SPLIT_COLUMNS].reset_index(drop=True)


def _random_per_user(interactions: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    """RecBole's RS split: shuffle each user's interactions, then cut them 8:1:1."""
    rng = np.random.default_rng(config.seed)
    frame = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
    frame = frame.iloc[rng.permutation(len(frame))]
    frame = frame.sort_values("user_id", kind="stable")
    position = frame.groupby("user_id").cumcount().to_numpy()
    count = frame["user_id"].map(frame["user_id"].value_counts()).to_numpy()
    # As RecBole's _calcu_split_ids: valid and test get floor(ratio * n) (at least 1), train the rest.
    n_valid = np.maximum(np.floor(count * config.ratios[1]), 1 if config.ratios[1] > 0 else 0).astype(int)
    n_test = np.maximum(np.floor(count * config.ratios[2]), 1 if config.ratios[2] > 0 else 0).astype(int)
    train_end = count - n_valid - n_test
    valid_end = count - n_test
    fold = np.where(position < train_end, "train", np.where(position < valid_end, "valid", "test"))
    return frame.assign(fold=fold)


def _temporal(interactions: pd.DataFrame, config: SplitConfig) -> pd.DataFrame:
    times = interactions["timestamp"].to_numpy()
    train_cut = np.quantile(times, config.ratios[0], method="lower")
    valid_cut = np.quantile(times, config.ratios[0] + config.ratios[1], method="lower")
    fold = np.where(times <= train_cut, "train", np.where(times <= valid_cut, "valid", "test"))
    frame = interactions.assign(fold=fold)
    train = frame[frame["fold"] == "train"]
    known = frame["user_id"].isin(train["user_id"]) & frame["item_id"].isin(train["item_id"])
    return frame[(frame["fold"] == "train") | known]


def hold_out_cold_items(split: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Remove a seeded fraction of items from training entirely: all their interactions become test rows,
    evaluated as the cold-item slice (valid keeps warm items only, so tuning never sees a cold item)."""
    items = np.sort(split["item_id"].unique())
    rng = np.random.default_rng(seed + 1)
    cold = rng.choice(items, size=max(1, int(round(fraction * len(items)))), replace=False)
    split = split.copy()
    split.loc[split["item_id"].isin(cold), "fold"] = "test"
    # Users whose only training rows were cold items have no history left: drop them from evaluation.
    users_with_train = split.loc[split["fold"] == "train", "user_id"].unique()
    return split[split["user_id"].isin(users_with_train)]


def cold_items(split: pd.DataFrame) -> np.ndarray:
    """Items that appear in valid/test but never in train."""
    train_items = set(split.loc[split["fold"] == "train", "item_id"])
    return np.array(sorted(set(split["item_id"]) - train_items))
