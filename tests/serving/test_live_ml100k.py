"""The live loop on real data: ML-100K, EASE as champion, the real MiniLM item embeddings, a real server."""

from __future__ import annotations

import httpx
import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.datasets import load_dataset
from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.data.split import SplitConfig, prepare_interactions, split_interactions
from llmrec_platform.data.text import build_item_texts
from llmrec_platform.encoders.models import DEFAULT_MODEL, TextEncoder
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.serving.bundle import publish_bundle
from tests.serving.conftest import Server

pytestmark = pytest.mark.slow
KIDS = {"Animation", "Children's"}


@pytest.fixture(scope="module")
def ml100k_server(tmp_path_factory):
    dataset = load_dataset("ml-100k")
    split = split_interactions(prepare_interactions(dataset.ratings, dataset.items, 3.0, 10),
                               SplitConfig(protocol="recbole", seed=2020))
    ease = EASERanker().fit(InteractionData.from_split(split))
    texts, _ = build_item_texts(dataset.items)
    vectors, _ = TextEncoder().encode(texts["text"].tolist())
    home = Paths(tmp_path_factory.mktemp("ml100k") / "home").ensure()
    publish_bundle(home.bundles, ease, dataset.items.merge(texts[["item_id", "text"]], on="item_id"),
                   pd.DataFrame({"item_id": texts["item_id"], "embedding": list(vectors)}), split,
                   {"event_offset": 0, "encoder": DEFAULT_MODEL, "data_fingerprint": "ml100k"}, collab=ease)
    server = Server(home).start()
    yield server, split, dataset.items.set_index("item_id")["genres"].map(set).to_dict()
    server.stop()


def test_three_clicks_raise_the_least_present_genre_for_most_users(ml100k_server):
    server, split, genres = ml100k_server
    counts = split.groupby("user_id").size()
    popularity = split.groupby("item_id").size().sort_values(ascending=False, kind="stable")
    all_genres = sorted({g for gs in genres.values() for g in gs} - {"unknown"})
    rose, tried = 0, 0
    with httpx.Client(base_url=server.url) as client:
        for user in sorted(counts[(counts >= 20) & (counts <= 40)].index, key=int):
            seen = set(split.loc[split["user_id"] == user, "item_id"])
            before = [i["item_id"] for i in client.get(f"/users/{user}/recommendations", params={"k": 20}).json()["items"]]
            share = {g: sum(g in genres[i] for i in before) for g in all_genres}
            candidates = {g: [i for i in popularity.index if g in genres[i] and i not in seen and i not in before][:3]
                          for g in all_genres}
            genre = min((g for g in all_genres if len(candidates[g]) == 3), key=lambda g: (share[g], g))
            for item in candidates[genre]:
                assert client.post("/events", json={"user_id": user, "item_id": item, "type": "click"}).status_code == 202
            after = [i["item_id"] for i in client.get(f"/users/{user}/recommendations", params={"k": 20}).json()["items"]]
            rose += sum(genre in genres[i] for i in after) > share[genre]
            tried += 1
            if tried == 10:
                break
    assert tried == 10 and rose >= 7, f"the genre's share rose for {rose} of {tried} users"


def test_a_user_known_only_from_events_gets_a_personal_list(ml100k_server):
    server, split, genres = ml100k_server
    popular = split.groupby("item_id").size().sort_values(ascending=False, kind="stable").index
    kids = [i for i in popular if genres[i] >= {"Animation", "Children's"}][:5]
    with httpx.Client(base_url=server.url) as client:
        cold = client.get("/users/newcomer/recommendations", params={"k": 10}).json()
        for item in kids:
            client.post("/events", json={"user_id": "newcomer", "item_id": item, "type": "favorite"})
        warm = client.get("/users/newcomer/recommendations", params={"k": 10, "explain": "true"}).json()
    assert cold["cold_start"] is True and warm["cold_start"] is False
    ids = [i["item_id"] for i in warm["items"]]
    assert not set(ids) & set(kids) and ids != [i["item_id"] for i in cold["items"]]
    assert sum(bool(genres[i] & KIDS) for i in ids) >= 5
    assert all({link["item_id"] for link in i["because"]["closest"]} <= set(kids) for i in warm["items"])


def test_free_text_query_finds_animated_childrens_films(ml100k_server):
    server, _, genres = ml100k_server
    body = httpx.post(f"{server.url}/query", json={"text": "animated film for children", "k": 10}, timeout=60).json()
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 10 and body["personalised"] is False
    assert sum(bool(genres[i] & KIDS) for i in ids) >= 6, [i["title"] for i in body["items"]]
    personal = httpx.post(f"{server.url}/query", json={"text": "animated film for children", "user_id": "1", "k": 10},
                          timeout=60).json()
    assert personal["personalised"] is True and [i["item_id"] for i in personal["items"]] != ids
    assert np.isfinite([i["score"] for i in personal["items"]]).all()
