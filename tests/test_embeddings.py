"""Embedding cache and user interest vectors."""

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.cache import CACHE_COLUMNS, embed_texts
from llmrec_platform.encoders.models import EncoderError, TextEncoder, model_path, resolve_device
from llmrec_platform.encoders.vectors import align, user_interest_vectors


class CountingEncoder:
    def __init__(self):
        self.calls = []

    def __call__(self, texts):
        self.calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32), 0.1


def test_cache_encodes_only_new_texts():
    texts = pd.DataFrame({"text": ["a", "bb", "a"], "text_hash": ["h1", "h2", "h1"]})
    encoder = CountingEncoder()
    matrix, new_rows, report = embed_texts(texts, "m", pd.DataFrame(columns=CACHE_COLUMNS), encoder)
    assert encoder.calls == [["a", "bb"]]  # duplicates encoded once
    assert matrix.shape == (3, 2) and matrix[0].tolist() == matrix[2].tolist()
    assert (report.encoded, report.cached) == (2, 0)
    # Second pass with the cache: nothing to encode, same vectors.
    matrix2, new2, report2 = embed_texts(texts, "m", new_rows, encoder)
    assert len(encoder.calls) == 1 and new2.empty and report2.encoded == 0 and report2.cached == 2
    np.testing.assert_array_equal(matrix, matrix2)
    # Another model does not reuse this model's cache.
    embed_texts(texts, "other", new_rows, encoder)
    assert len(encoder.calls) == 2


def test_align_fails_loudly_on_missing_ids():
    frame = pd.DataFrame({"item_id": ["a"], "embedding": [np.ones(2, np.float32)]})
    with pytest.raises(KeyError, match="1 items have no embedding"):
        align(np.array(["a", "b"]), frame, "item_id", "items")


def test_interest_vectors_weight_ratings_and_recency():
    split = pd.DataFrame({
        "user_id": ["u", "u", "v"], "item_id": ["x", "y", "x"], "rating": [5.0, 3.0, 4.0],
        "timestamp": [0, 86400 * 365, 0], "fold": ["train"] * 3,
    })
    data = InteractionData.from_split(split)
    items = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)  # x, y
    vectors = user_interest_vectors(data.train, data.train_timestamps, items, half_life_days=365.0, rating_offset=2.0)
    # u: x weight (5-2) * 0.5 (one half-life old) = 1.5, y weight (3-2) * 1 = 1 -> direction (1.5, 1).
    expected = np.array([1.5, 1.0]) / np.hypot(1.5, 1.0)
    np.testing.assert_allclose(vectors[0], expected, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
    # Profile blending moves the vector towards the profile.
    blended = user_interest_vectors(data.train, data.train_timestamps, items, np.array([[0, 1], [0, 1]], np.float32),
                                    profile_weight=0.5)
    assert blended[1, 1] > vectors[1, 1]


def test_device_resolution_order():
    """auto takes CUDA exactly when torch sees it; an explicit device wins (the LLMREC_DEVICE step of the order,
    settings into DeviceResource, is tested in test_definitions)."""
    import torch

    cuda = torch.cuda.is_available()
    assert resolve_device("auto") == ("cuda" if cuda else "cpu", None)
    assert resolve_device("cpu") == ("cpu", None)
    device, warning = resolve_device("cuda")
    if cuda:
        assert device == "cuda" and warning is None
    else:
        assert device == "cpu" and "falling back to the CPU" in warning
    with pytest.raises(EncoderError, match="unknown device"):
        resolve_device("tpu")


def test_packaged_minilm_encodes_offline():
    assert (model_path("all-MiniLM-L6-v2") / "modules.json").exists()
    encoder = TextEncoder(device="cpu")
    vectors, stats = encoder.encode(["Toy Story (1995). Genres: Animation.", "Heat (1995). Genres: Crime."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert stats.encoded == 2
    with pytest.raises(EncoderError, match="neither a packaged model"):
        model_path("sentence-transformers/all-mpnet-base-v2")
