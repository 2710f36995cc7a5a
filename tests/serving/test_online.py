"""Online evaluation: impressions joined with events that carry their request id, CTR per arm and position."""

from __future__ import annotations

import httpx
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.live.events import EventLog
from llmrec_platform.live.online import ImpressionLog, online_ctr, refresh_online_metrics, wilson_interval
from llmrec_platform.live.refresh import record_events
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.rankers.simple import PopularityRanker
from llmrec_platform.serving.bundle import publish_bundle
from llmrec_platform.storage.warehouse import Warehouse
from llmrec_platform.testing import item_genres, two_group_split, unit_embeddings
from tests.serving.conftest import Server


def test_wilson_interval_matches_hand_computed_values():
    # p = 0.5, n = 10, z = 1.96: centre 0.5, half-width 1.96 * sqrt(0.025 + 0.009604) / 1.384146 = 0.26340
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.23659, abs=1e-4) and high == pytest.approx(0.76341, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 0.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and high == pytest.approx(0.16113, abs=1e-4)  # z^2/(n+z^2) = 3.8415/23.8415


def test_online_ctr_counts_clicks_per_position_and_arm():
    impressions = pd.DataFrame([
        {"request_id": "r1", "user_id": "u1", "model_version": "v1", "ranker": "ease", "arm": "champion", "items": ["a", "b"]},
        {"request_id": "r2", "user_id": "u2", "model_version": "v1", "ranker": "ease", "arm": "champion", "items": ["b", "c"]},
        {"request_id": "r3", "user_id": "u3", "model_version": "v1", "ranker": "pop", "arm": "challenger", "items": ["a", "c"]},
    ])
    events = pd.DataFrame({"request_id": ["r1", "r1", "r2", None, "r9"], "item_id": ["b", "b", "b", "a", "a"]})
    frame = online_ctr(impressions, events).set_index(["arm", "position"])
    assert frame.loc[("champion", 0), ["impressions", "clicks"]].tolist() == [4, 2]  # r1/b counted once
    assert frame.loc[("champion", 1), "ctr"] == 0.5  # r2 clicked b at position 1
    assert frame.loc[("champion", 2), "ctr"] == 0.5  # r1 clicked b at position 2
    assert frame.loc[("challenger", 0), ["impressions", "clicks", "ctr"]].tolist() == [2, 0, 0.0]


@pytest.fixture
def ab_home(tmp_path) -> Paths:
    home = Paths(tmp_path / "home").ensure()
    split = two_group_split()
    data = InteractionData.from_split(split)
    items = item_genres().assign(title=lambda f: "Film " + f["item_id"], text="")
    publish_bundle(home.bundles, EASERanker(reg_weight=10.0).fit(data), items,
                   unit_embeddings(items["item_id"].tolist(), "item_id", 0), split, {"event_offset": 0},
                   challenger=PopularityRanker().fit(data))
    return home


def test_challenger_share_and_online_metrics_end_to_end(ab_home):
    server = Server(ab_home, LLMREC_CHALLENGER_SHARE="0.5").start()
    try:
        arms = {}
        with httpx.Client(base_url=server.url) as client:
            for n in range(40):
                body = client.get(f"/users/visitor{n}/recommendations", params={"k": 3}).json()
                again = client.get(f"/users/visitor{n}/recommendations", params={"k": 3}).json()
                assert again["arm"] == body["arm"]  # a stable hash: a user stays in their arm
                arms[f"visitor{n}"] = body
            clicked = next(b for b in arms.values() if b["arm"] == "champion")
            client.post("/events", json={"user_id": clicked["user_id"], "item_id": clicked["items"][1]["item_id"],
                                         "type": "click", "request_id": clicked["request_id"]}).raise_for_status()
    finally:
        server.stop()
    counts = pd.Series([b["arm"] for b in arms.values()]).value_counts()
    assert 10 <= counts["challenger"] <= 30 and 10 <= counts["champion"] <= 30
    assert {b["ranker"] for b in arms.values() if b["arm"] == "challenger"} == {"popularity"}

    store = Warehouse(ab_home.warehouse)
    record_events(store, EventLog(ab_home.events).read(0))
    frame = refresh_online_metrics(store, ImpressionLog(ab_home.events)).set_index(["arm", "position"])
    champion_impressions = 2 * 3 * counts["champion"]
    assert frame.loc[("champion", 0), ["impressions", "clicks"]].tolist() == [champion_impressions, 1]
    assert frame.loc[("champion", 2), "clicks"] == 1 and frame.loc[("challenger", 0), "clicks"] == 0
    assert store.query("SELECT count(*) AS n FROM online_metrics")["n"][0] == len(frame)
