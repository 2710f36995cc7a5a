"""Data-quality rules behind the asset checks (no Dagster): each returns a `CheckOutcome`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from llmrec_platform.data.specs import RATING_KEY, RATING_RANGE, RATINGS_COLUMNS
from llmrec_platform.encoders.models import encoder_dim, model_path

NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _outcome(problems: list[str], metadata: dict, passed: str) -> CheckOutcome:
    """Failed with the problems joined, or passed with `passed` as the description."""
    if problems:
        return CheckOutcome(False, "; ".join(problems), metadata)
    return CheckOutcome(True, passed, metadata)


def ratings_schema(frame: pd.DataFrame) -> CheckOutcome:
    """The canonical columns first (string ids, float rating, integer epoch-seconds timestamp), no nulls.
    Tag columns may follow (the warehouse adds `dataset`)."""
    problems = []
    if list(frame.columns[:len(RATINGS_COLUMNS)]) != RATINGS_COLUMNS:
        problems.append(f"columns {list(frame.columns)} do not start with {RATINGS_COLUMNS}")
    else:
        for column in ("user_id", "item_id"):
            if not (pd.api.types.is_string_dtype(frame[column]) or pd.api.types.is_object_dtype(frame[column])):
                problems.append(f"{column} is {frame[column].dtype}, expected strings")
        if not pd.api.types.is_float_dtype(frame["rating"]):
            problems.append(f"rating is {frame['rating'].dtype}, expected float")
        if not pd.api.types.is_integer_dtype(frame["timestamp"]):
            problems.append(f"timestamp is {frame['timestamp'].dtype}, expected integer epoch seconds")
        nulls = {c: int(n) for c, n in frame.isna().sum().items() if n}
        if nulls:
            problems.append(f"null values {nulls}")
    metadata = {"rows": len(frame), "dtypes": json.dumps({c: str(t) for c, t in frame.dtypes.items()})}
    return _outcome(problems, metadata, f"{len(frame)} rows with the canonical schema")


def ratings_ranges(frame: pd.DataFrame, window: tuple[int, int] | None = None) -> CheckOutcome:
    """Ratings within [0.5, 5]; timestamps non-negative and, given a window, inside [start, end)."""
    low, high = RATING_RANGE
    bad_rating = int((~frame["rating"].between(low, high)).sum())
    bad_time = int((frame["timestamp"] < 0).sum())
    outside = int((~frame["timestamp"].between(window[0], window[1] - 1)).sum()) if window else 0
    metadata = {
        "rows": len(frame), "ratings_out_of_range": bad_rating, "negative_timestamps": bad_time,
        "timestamps_outside_window": outside,
        "min_rating": float(frame["rating"].min()) if len(frame) else 0.0,
        "max_rating": float(frame["rating"].max()) if len(frame) else 0.0,
    }
    if bad_rating or bad_time or outside:
        return CheckOutcome(False, f"{bad_rating} ratings outside [{low}, {high}], {bad_time} negative timestamps, "
                                   f"{outside} timestamps outside the partition window", metadata)
    return CheckOutcome(True, f"all {len(frame)} ratings in [{low}, {high}] with valid timestamps", metadata)


def ratings_unique_keys(frame: pd.DataFrame) -> CheckOutcome:
    """(user_id, item_id, timestamp) identifies a rating: no key may appear twice."""
    duplicated = frame.duplicated(RATING_KEY, keep=False)
    n = int(frame[duplicated][RATING_KEY].drop_duplicates().shape[0])
    metadata = {"rows": len(frame), "duplicated_keys": n}
    if n:
        example = frame[duplicated].iloc[0]
        return CheckOutcome(False, f"{n} (user_id, item_id, timestamp) keys appear more than once, e.g. "
                                   f"{example['user_id']}/{example['item_id']}/{example['timestamp']}", metadata)
    return CheckOutcome(True, f"{len(frame)} unique (user_id, item_id, timestamp) keys", metadata)


def expected_dim(model: str) -> int:
    """Output dimension of a registry encoder or a sentence-transformers folder, read from its config (the
    model is not loaded)."""
    if (registered := encoder_dim(model)) is not None:
        return registered
    folder = model_path(model)
    dim = None
    modules_file = folder / "modules.json"
    if modules_file.exists():
        for module in json.loads(modules_file.read_text()):
            config = folder / module.get("path", "") / "config.json"
            kind = module.get("type", "")
            if kind.endswith("Pooling") and config.exists():
                dim = json.loads(config.read_text())["word_embedding_dimension"]
            elif kind.endswith("Dense") and config.exists():
                dim = json.loads(config.read_text())["out_features"]
    if dim is None:
        dim = json.loads((folder / "config.json").read_text())["hidden_size"]
    return int(dim)


def embeddings_valid(frame: pd.DataFrame, dim: int, id_column: str = "item_id") -> CheckOutcome:
    """Every vector has the model's dimension, finite values and unit norm; ids are unique."""
    lengths = frame["embedding"].map(len).to_numpy() if len(frame) else np.zeros(0, int)
    wrong_dim = int((lengths != dim).sum())
    metadata = {"rows": len(frame), "expected_dim": dim, "wrong_dim": wrong_dim}
    if len(frame) == 0:
        return CheckOutcome(False, "no embeddings", metadata)
    if wrong_dim:
        found = sorted(set(lengths.tolist()) - {dim})
        return CheckOutcome(False, f"{wrong_dim} vectors do not have the model's dimension {dim} (found {found})", metadata)
    matrix = np.stack(frame["embedding"].to_numpy()).astype(np.float64)
    finite = np.isfinite(matrix).all(axis=1)
    norms = np.linalg.norm(np.where(np.isfinite(matrix), matrix, 0.0), axis=1)
    off_norm = int((np.abs(norms - 1.0) > NORM_TOLERANCE)[finite].sum())
    duplicate_ids = int(frame[id_column].duplicated().sum())
    metadata.update({"non_finite": int((~finite).sum()), "not_unit_norm": off_norm,
                     "max_norm_error": float(np.abs(norms[finite] - 1.0).max()) if finite.any() else 0.0,
                     "duplicate_ids": duplicate_ids})
    problems = [f"{metadata['non_finite']} vectors with NaN/inf"] if metadata["non_finite"] else []
    if off_norm:
        problems.append(f"{off_norm} vectors whose norm differs from 1 by more than {NORM_TOLERANCE}")
    if duplicate_ids:
        problems.append(f"{duplicate_ids} repeated {id_column}s")
    return _outcome(problems, metadata, f"{len(frame)} finite unit-norm vectors of dimension {dim}")


def split_without_leakage(split: pd.DataFrame) -> CheckOutcome:
    """No user-item pair in two folds, and every user evaluated in valid/test has training history."""
    pairs_in_many = int(split.groupby(["user_id", "item_id"])["fold"].nunique().gt(1).sum())
    train_users = set(split.loc[split["fold"] == "train", "user_id"])
    evaluated = set(split.loc[split["fold"].isin(["valid", "test"]), "user_id"])
    no_history = sorted(evaluated - train_users)
    metadata = {"rows": len(split), "pairs_in_several_folds": pairs_in_many, "eval_users_without_train": len(no_history),
                **{f"{fold}_rows": int((split["fold"] == fold).sum()) for fold in ("train", "valid", "test")}}
    problems = []
    if pairs_in_many:
        problems.append(f"{pairs_in_many} user-item pairs appear in more than one fold")
    if no_history:
        problems.append(f"{len(no_history)} valid/test users have no training interactions (e.g. {no_history[:3]})")
    return _outcome(problems, metadata, "folds are disjoint and every evaluated user has training history")
