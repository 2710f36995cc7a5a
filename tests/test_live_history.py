"""Live histories move the list: a new user who watched ten animated children's films gets animation and
children's films back, from every ranker that folds a history in (ML-100K, the real rankers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.rankers.base import Interaction, Query, Ranker
from llmrec_platform.rankers.content import LLMContentRanker
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.genre import GenreMatchRanker
from llmrec_platform.rankers.hybrid import HybridConfig, HybridRanker
from llmrec_platform.rankers.implicit_models import AdamBPRRanker, ALSRanker, BPRRanker
from llmrec_platform.rankers.itemknn import ItemKNNRanker
from llmrec_platform.rankers.multvae import MultVAERanker
from llmrec_platform.rankers.rp3beta import RP3betaRanker

pytestmark = pytest.mark.slow
KIDS = {"Animation", "Children's"}


@pytest.fixture(scope="module")
def ml100k():
    dataset = load_dataset("ml-100k")
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=2020))
    return InteractionData.from_split(split), dataset.items


@pytest.fixture(scope="module")
def rankers(ml100k) -> dict[str, Ranker]:
    from llmrec_platform.encoders.models import TextEncoder

    data, items = ml100k
    fitted = {r.name: r.fit(data) for r in (
        EASERanker(), ItemKNNRanker(), RP3betaRanker(), ALSRanker(), BPRRanker(), AdamBPRRanker(),
        MultVAERanker(epochs=40, num_threads=1), GenreMatchRanker(items))}
    texts = items.assign(text=items["title"] + ". " + items["genres"].map(", ".join))
    vectors, _ = TextEncoder().encode(texts["text"].tolist())
    content = LLMContentRanker(pd.DataFrame({"item_id": items["item_id"].astype(str), "embedding": list(vectors)}))
    fitted["llm_content"] = content.fit(data)
    config = HybridConfig(n_estimators=100, n_models=1, pseudo_label_share=0.0, num_threads=1)
    candidates = {name: fitted[name] for name in ("ease", "itemknn", "als")}
    fitted["hybrid"] = HybridRanker(candidates, content, {"genre_match": fitted["genre_match"]}, config).fit(data)
    return fitted


# Measured trade-offs (this history; ML-100K valid NDCG@10 by id): ItemKNN with
# k 50 instead of 250 returns 7 kids' films but scores 0.2082 instead of 0.2163; ALS with regularization 5 instead
# of 50 returns 8 but scores 0.1602 instead of 0.2086 (a stronger fold-in confidence alone stays at 1). The defaults,
# tuned on ML-1M, are kept: the metrics must not move.
def short_of_target(name: str, measured: int):
    """Rankers whose fold-in does not move this far with their defaults (strict: a fix shows as XPASS)."""
    return pytest.param(name, marks=pytest.mark.xfail(
        strict=True, reason=f"{name}'s top 10 holds {measured} Animation or Children's films, not 4: popular films dominate"))


@pytest.mark.parametrize("name", ["ease", short_of_target("itemknn", 3), "rp3beta", short_of_target("als", 1), "bpr",
                                  "bpr_adam", short_of_target("multvae", 1), "genre_match", "llm_content", "hybrid"])
def test_ten_animated_films_bring_animation_back(ml100k, rankers, name):
    data, items = ml100k
    genres = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")["genres"].map(set)
    kids = genres[genres.map(lambda g: g >= KIDS)].index
    popularity = pd.Series(np.asarray(data.train.getnnz(axis=0)), index=data.item_ids)
    history = popularity[popularity.index.isin(kids)].sort_values(ascending=False, kind="stable").index[:10]
    share = genres.reindex(data.item_ids).map(lambda g: bool(KIDS & g) if isinstance(g, set) else False).mean()
    assert share < 0.1  # the catalogue's share of Animation or Children's films
    query = Query(user_id="new-parent", history=tuple(Interaction(i, 5.0, 1e9 + t) for t, i in enumerate(history)))
    top = rankers[name].recommend(query, k=10)
    assert not set(top["item_id"]) & set(history)
    hits = int(top["item_id"].map(lambda i: bool(KIDS & genres.get(i, set()))).sum())
    assert hits >= 4, f"{name}: {hits} of 10 are Animation or Children's: {top['item_id'].tolist()}"
