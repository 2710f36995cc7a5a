"""Contrastive fine-tuning: leak-free, time-ordered training pairs and a real (tiny) MiniLM fine-tune."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.encoders.finetune import (
    METADATA_FILE,
    FineTuneConfig,
    FineTuneError,
    build_training_pairs,
    cap_pairs,
    fine_tune,
    history_text,
    no_duplicate_batches,
    positive_log_frequency,
    short_title,
    user_history_texts,
)


def _item_texts(n_items: int = 12) -> pd.DataFrame:
    rows = [{"item_id": str(i), "text": f"Movie {i} (19{80 + i}). Genres: Drama. Directed by Person {i}."}
            for i in range(n_items)]
    rows += [
        {"item_id": "v1", "text": "Validleak Picture (1999). Genres: Horror."},
        {"item_id": "t1", "text": "Testleak Picture (1998). Genres: Comedy."},
        {"item_id": "t2", "text": "Testleak Sequel (1997). Genres: Comedy."},
    ]
    return pd.DataFrame(rows)


def _split() -> pd.DataFrame:
    """Two users; rows deliberately out of time order; valid/test rows interleave in time with train."""
    rows = []
    # user a: liked train items 0..5 at times 10, 20, ..., 60; item 6 is disliked (rating 2).
    for item in ["3", "0", "5", "1", "4", "2"]:
        rows.append(("a", item, 5.0, 10 + 10 * int(item), "train"))
    rows.append(("a", "6", 2.0, 35, "train"))
    rows.append(("a", "v1", 5.0, 25, "valid"))
    rows.append(("a", "t1", 5.0, 45, "test"))
    # user b: liked train items 7..11 in time order, test items in between.
    for k, item in enumerate(["7", "8", "9", "10", "11"]):
        rows.append(("b", item, 4.0, 100 + 10 * k, "train"))
    rows.append(("b", "t2", 5.0, 115, "test"))
    rows.append(("b", "v1", 4.0, 125, "valid"))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp", "fold"])


def test_short_title_handles_periods_in_titles_and_missing_years():
    assert short_title("Toy Story (1995). Genres: Animation.") == "Toy Story (1995)"
    assert short_title("Mr. Holland's Opus (1995). Genres: Drama. Directed by X.") == "Mr. Holland's Opus (1995)"
    assert short_title("Haunted World of Edward D. Wood Jr., The (1995). Genres: Documentary.") == (
        "Haunted World of Edward D. Wood Jr., The (1995)"
    )
    assert short_title("No Year Movie. Genres: Drama.") == "No Year Movie"
    assert short_title("unkonwn.") == "unkonwn"
    assert history_text(["A (1990)", "B (1991)"]) == "Watched: A (1990); B (1991)."


def test_pairs_come_only_from_liked_train_interactions():
    pairs = build_training_pairs(_split(), _item_texts(), history_len=3, max_pairs_per_user=None)
    assert list(pairs.columns) == ["anchor", "positive"]
    everything = " ".join(pairs["anchor"]) + " " + " ".join(pairs["positive"])
    assert "Validleak" not in everything and "Testleak" not in everything
    assert "Movie 6 " not in everything  # disliked (rating 2 < min_rating 4)
    # user a: 6 liked -> 5 pairs; user b: 5 liked -> 4 pairs.
    assert len(pairs) == 9


def test_histories_follow_time_order():
    texts = _item_texts()
    pairs = build_training_pairs(_split(), texts, history_len=3, max_pairs_per_user=None)
    full = texts.set_index("item_id")["text"]
    title = {i: short_title(full[i]) for i in full.index}
    # user a liked 0, 1, 2, 3, 4, 5 in time order (rows were shuffled).
    user_a = pairs.iloc[:5]
    assert user_a["positive"].tolist() == [full[i] for i in ["1", "2", "3", "4", "5"]]
    assert user_a["anchor"].iloc[0] == history_text([title["0"]])
    assert user_a["anchor"].iloc[1] == history_text([title["0"], title["1"]])
    assert user_a["anchor"].iloc[4] == history_text([title["2"], title["3"], title["4"]])  # last 3 only
    user_b = pairs.iloc[5:]
    assert user_b["positive"].iloc[-1] == full["11"]
    assert user_b["anchor"].iloc[-1] == history_text([title["8"], title["9"], title["10"]])


def test_user_history_texts_hold_the_latest_liked_train_titles():
    split = pd.concat([_split(), pd.DataFrame(
        [("c", "0", 3.0, 5, "train"), ("c", "1", 2.0, 6, "train"), ("c", "t1", 5.0, 7, "test")],
        columns=["user_id", "item_id", "rating", "timestamp", "fold"],
    )])
    texts = _item_texts()
    title = texts.set_index("item_id")["text"].map(short_title)
    history = user_history_texts(split, texts, history_len=2).set_index("user_id")["text"]
    assert history["a"] == history_text([title["4"], title["5"]])
    assert history["b"] == history_text([title["10"], title["11"]])
    assert history["c"] == history_text([title["0"], title["1"]])  # no like in train: latest of any rating


def test_pairs_are_seeded_and_capped_per_user():
    split, texts = _split(), _item_texts()
    first = build_training_pairs(split, texts, max_pairs_per_user=2, seed=7)
    again = build_training_pairs(split, texts, max_pairs_per_user=2, seed=7)
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == 4  # 2 per user
    draws = {tuple(build_training_pairs(split, texts, max_pairs_per_user=2, seed=s)["positive"]) for s in range(8)}
    assert len(draws) > 1


def test_pairs_fail_loudly_on_items_without_text():
    with pytest.raises(FineTuneError, match="no text"):
        build_training_pairs(_split(), _item_texts().iloc[2:])


def test_batches_never_repeat_a_text():
    pairs = pd.DataFrame({"anchor": [f"h{i}" for i in range(40)], "positive": [f"p{i % 5}" for i in range(40)]})
    batches = no_duplicate_batches(pairs, 8, np.random.default_rng(0))
    assert sum(len(b) for b in batches) == 40
    for batch in batches:
        assert len(batch) <= 5 and len(set(pairs["positive"].iloc[batch])) == len(batch)


def test_positive_log_frequency_is_the_share_of_positives():
    log_q = positive_log_frequency(pd.Series(["a", "b", "a", "c"]))
    np.testing.assert_allclose(np.exp(log_q), [0.5, 0.25, 0.5, 0.25], rtol=1e-6)


def test_logq_correction_with_uniform_popularity_is_plain_mnrl():
    import torch

    from llmrec_platform.encoders.finetune import _loss

    model = torch.nn.Linear(1, 1)  # the loss only embeds through the model in forward(); not used here
    generator = torch.Generator().manual_seed(0)
    embeddings = [torch.randn(6, 384, generator=generator), torch.randn(6, 384, generator=generator)]
    plain = _loss(model, popularity_correction=False).compute_loss_from_embeddings(embeddings, torch.empty(0))
    uniform = torch.full((6,), float(np.log(1 / 6)))
    corrected = _loss(model, popularity_correction=True).compute_loss_from_embeddings(embeddings, uniform)
    torch.testing.assert_close(corrected, plain)
    popular_first = torch.tensor([np.log(0.5)] + [np.log(0.1)] * 5, dtype=torch.float32)
    assert not torch.isclose(_loss(model, True).compute_loss_from_embeddings(embeddings, popular_first), plain)


def test_config_validates_precision():
    with pytest.raises(FineTuneError, match="precision"):
        FineTuneConfig(precision="int8")


def _tiny_pairs(n: int = 32) -> pd.DataFrame:
    genres = ["Comedy", "Horror", "Western", "Musical", "Documentary", "War", "Romance", "Sci-Fi"]
    return pd.DataFrame({
        "anchor": [f"Watched: Film {i} (19{70 + i % 30}); Film {i + 1} (1990)." for i in range(n)],
        "positive": [f"Film {i + 2} (1991). Genres: {genres[i % len(genres)]}." for i in range(n)],
    })


def _fine_tune_and_compare(tmp_path, device: str, precision: str):
    from llmrec_platform.encoders.models import TextEncoder

    config = FineTuneConfig(batch_size=8, epochs=1, learning_rate=1e-4, seed=3, precision=precision)
    out = tmp_path / f"minilm-ft-{device}"
    result = fine_tune(_tiny_pairs(), config, device=device, output_dir=out, progress=False)
    assert result.model_dir == out and (out / "modules.json").exists()
    assert result.n_pairs == 32 and result.steps == 4 and result.pairs_processed == 32
    assert len(result.loss_history) == 4 and np.isfinite(result.final_loss)
    assert result.seconds > 0 and result.pairs_per_second > 0
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["n_pairs"] == 32 and meta["config"]["batch_size"] == 8
    probe = ["Toy Story (1995). Genres: Animation.", "Watched: Heat (1995); Casino (1995)."]
    tuned, _ = TextEncoder(model=str(out), device=device).encode(probe)
    base, _ = TextEncoder(device=device).encode(probe)
    assert tuned.shape == (2, 384) and tuned.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-4)
    assert np.abs(tuned - base).max() > 1e-3
    return result


def test_tiny_fine_tune_on_cpu_writes_a_loadable_encoder(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError(f"fine-tuning tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    result = _fine_tune_and_compare(tmp_path, "cpu", precision="fp16")
    assert result.device == "cpu" and result.precision == "fp32"  # mixed precision is CUDA-only


def test_the_cpu_pair_cap_applies_on_the_cpu_only():
    config = FineTuneConfig(max_pairs=24, max_pairs_cpu=16)
    pairs = _tiny_pairs()
    cpu = cap_pairs(pairs, config, on_cuda=False, rng=np.random.default_rng(0))
    assert len(cpu) == 16 and cpu.merge(pairs).shape == (16, 2)  # a subset of the pairs
    assert len(cap_pairs(pairs, config, on_cuda=True, rng=np.random.default_rng(0))) == 24
    uncapped = FineTuneConfig(max_pairs=None, max_pairs_cpu=None)
    assert len(cap_pairs(pairs, uncapped, on_cuda=False, rng=np.random.default_rng(0))) == 32


def test_fine_tune_rejects_pairs_without_the_pair_columns(tmp_path):
    with pytest.raises(FineTuneError, match="columns"):
        fine_tune(pd.DataFrame({"query": ["a", "b"]}), FineTuneConfig(), "cpu", tmp_path / "x", progress=False)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda_available(), reason="needs CUDA")
def test_tiny_fine_tune_on_cuda_with_fp16(tmp_path):
    result = _fine_tune_and_compare(tmp_path, "cuda", precision="fp16")
    assert result.device == "cuda" and result.precision == "fp16"


def test_fine_tuning_a_half_precision_copy_trains_fp32_weights(tmp_path):
    """A model saved in fp16 (e.g. copied to a GPU machine at half the size) must not train in fp16 on the CPU,
    where its loss turns NaN within two steps."""
    import torch
    from sentence_transformers import SentenceTransformer

    from llmrec_platform.encoders.models import model_path

    half = tmp_path / "minilm-fp16"
    SentenceTransformer(str(model_path("all-MiniLM-L6-v2")), device="cpu").half().save(str(half))
    config = FineTuneConfig(base_model=str(half), batch_size=8, learning_rate=1e-4, seed=3)
    result = fine_tune(_tiny_pairs(), config, device="cpu", output_dir=tmp_path / "tuned", progress=False)
    assert np.isfinite(result.loss_history).all() and result.steps == 4
    tuned = SentenceTransformer(str(tmp_path / "tuned"), device="cpu")
    assert {p.dtype for p in tuned.parameters()} == {torch.float32}
