"""Item embeddings with a (model, text hash) cache, and user interest vectors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmrec_platform.interactions import InteractionData

CACHE_COLUMNS = ["model", "text_hash", "embedding"]


@dataclass
class EncodeReport:
    encoded: int
    cached: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


def embed_texts(
    texts: pd.DataFrame,
    model: str,
    cache: pd.DataFrame,
    encode: Callable[[list[str]], tuple[np.ndarray, float]],
) -> tuple[np.ndarray, pd.DataFrame, EncodeReport]:
    """Embed `texts` (text, text_hash) reusing `cache` (model, text_hash, embedding).

    `encode` is only called for texts whose hash is not cached for `model`, so a re-run with unchanged
    texts encodes nothing (and never loads the model). Returns the matrix aligned with `texts`, the new
    cache rows, and counts.
    """
    cached = cache[cache["model"] == model].drop_duplicates("text_hash").set_index("text_hash")["embedding"]
    missing = texts.loc[~texts["text_hash"].isin(cached.index)].drop_duplicates("text_hash")
    seconds = 0.0
    if len(missing):
        vectors, seconds = encode(missing["text"].tolist())
        new_rows = pd.DataFrame({"model": model, "text_hash": missing["text_hash"].to_numpy(), "embedding": list(vectors)})
        cached = pd.concat([cached, new_rows.set_index("text_hash")["embedding"]])
    else:
        new_rows = pd.DataFrame(columns=CACHE_COLUMNS)
    if len(texts):
        matrix = np.stack(cached.loc[texts["text_hash"]].to_numpy()).astype(np.float32)
    else:
        matrix = np.zeros((0, 0), np.float32)
    report = EncodeReport(encoded=len(missing), cached=int(texts["text_hash"].nunique() - len(missing)), seconds=seconds)
    return matrix, new_rows, report


def align(ids: np.ndarray, frame: pd.DataFrame, id_column: str, what: str) -> np.ndarray:
    """Rows of frame['embedding'] in the order of `ids`; fails loudly on missing ids."""
    indexed = frame.set_index(id_column)["embedding"]
    missing = pd.Index(ids).difference(indexed.index)
    if len(missing):
        raise KeyError(f"{len(missing)} {what} have no embedding (e.g. {list(missing[:3])}): re-materialize the embeddings")
    return np.stack(indexed.loc[ids].to_numpy()).astype(np.float32)


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def user_interest_vectors(
    data: InteractionData,
    item_vectors: np.ndarray,
    profile_vectors: np.ndarray | None = None,
    profile_weight: float = 0.1,
    half_life_days: float = 365.0,
    rating_offset: float = 2.0,
) -> np.ndarray:
    """Unit-norm user vectors: rating- and recency-weighted mean of the training items' embeddings,
    blended with the profile-text embedding (weight `profile_weight`).

    Interaction weight = (rating - rating_offset) * 0.5 ** (age / half_life), where age is measured from
    the user's latest training interaction, so each user's newest tastes count most.
    """
    ratings = data.train.tocsr()
    times = data.train_timestamps.tocsr()
    ratings.sort_indices()
    times.sort_indices()
    if not (np.array_equal(ratings.indptr, times.indptr) and np.array_equal(ratings.indices, times.indices)):
        raise ValueError("train ratings and timestamps must share one sparsity pattern")
    rows = np.repeat(np.arange(ratings.shape[0]), np.diff(ratings.indptr))
    latest = np.asarray(times.max(axis=1).todense()).ravel()
    age_days = (latest[rows] - times.data) / 86400.0
    weights = np.maximum(ratings.data - rating_offset, 0.5) * 0.5 ** (age_days / half_life_days)
    weighted = sp.csr_matrix((weights.astype(np.float32), ratings.indices, ratings.indptr), shape=ratings.shape)
    interest = normalize_rows(weighted @ item_vectors)
    if profile_vectors is None or profile_weight <= 0:
        return interest
    return normalize_rows((1.0 - profile_weight) * interest + profile_weight * normalize_rows(profile_vectors))
