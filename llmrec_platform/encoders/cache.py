"""Text embeddings with a (model, text hash) cache: a re-run encodes only texts it has not seen."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

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
