"""The live loop on the ML-100K demo's own bundle (what `llmrec demo` publishes): clicks move the list in any
genre, in process for 100 users and over a real server for a few of the same (user, genre) pairs."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from llmrec_platform.evaluation.genre_shift import genre_shift, per_genre
from llmrec_platform.live.events import EventLog
from llmrec_platform.serving.bundle import current_bundle, load_bundle
from llmrec_platform.serving.service import LiveService
from tests.serving.conftest import Server

pytestmark = pytest.mark.slow
KIDS = {"Animation", "Children's"}


@pytest.fixture(scope="module")
def demo(ml100k_demo, tmp_path_factory):
    """The session's `llmrec demo` bundle, a live service on it (its events in a folder of their own), and the
    genre-shift pairs of 100 users."""
    settings = ml100k_demo.settings
    bundle = load_bundle(current_bundle(ml100k_demo.paths.bundles))
    service = LiveService(bundle, EventLog(tmp_path_factory.mktemp("events")), dict(settings.event_weights),
                          settings.short_term)
    pairs = genre_shift(service, n_users=100, seed=2020)
    print(per_genre(pairs).to_markdown(index=False, floatfmt=".2f"))  # the spread per genre, in the test log
    return ml100k_demo.paths, service, pairs


def test_three_clicks_in_any_genre_rarely_lose_share_and_are_never_listed(demo):
    _, service, pairs = demo
    assert pairs["user_id"].nunique() >= 100 and pairs["genre"].nunique() >= 12
    lost = (pairs["after"] < pairs["before"]).mean()
    assert lost <= 0.05, f"the clicked genre's share fell in {lost:.1%} of {len(pairs)} pairs"
    assert not pairs["clicked_listed"].any()
    assert not service.live  # every pair started from the user's own history and left none of its clicks behind


def test_three_clicks_raise_any_genre_share_for_80_percent_of_pairs(demo):
    _, _, pairs = demo
    rose = (pairs["after"] > pairs["before"]).mean()
    assert rose >= 0.8, f"the clicked genre's share rose in {rose:.1%} of {len(pairs)} pairs"


@pytest.fixture(scope="module")
def demo_server(demo):
    # The in-process pairs fold a changed history in on the next request; so does this server (its default, the
    # background refresher, may answer the next list from the older fold-in: tests/live/test_long_term.py).
    server = Server(demo[0], LLMREC_LONG_TERM_REFRESH="request").start()
    yield server
    server.stop()


def test_the_same_pairs_over_a_real_server(demo, demo_server):
    """Three pairs whose share rose in process rise over HTTP too (the server runs the same code; its clicks are
    durable events with the server's clock)."""
    _, service, pairs = demo
    chosen = pairs[pairs["after"] > pairs["before"]].drop_duplicates("user_id").head(3)
    popularity = service.bundle.items["popularity"].to_numpy()
    with httpx.Client(base_url=demo_server.url, timeout=60) as client:
        for user, genre, before, _, _ in chosen.itertuples(index=False):
            listed = [i["item_id"] for i in client.get(f"/users/{user}/recommendations", params={"k": 20}).json()["items"]]
            assert sum(genre in service.genres[service.item_position[i]] for i in listed) == before
            seen = set(service.history_arrays(user)[0].tolist()) | {service.item_position[i] for i in listed}
            order = np.lexsort((np.arange(len(popularity)), -popularity))
            clicks = [str(service.item_ids[p]) for p in order if genre in service.genres[p] and p not in seen][:3]
            for item in clicks:
                assert client.post("/events", json={"user_id": user, "item_id": item, "type": "click"}).status_code == 202
            now = [i["item_id"] for i in client.get(f"/users/{user}/recommendations", params={"k": 20}).json()["items"]]
            assert sum(genre in service.genres[service.item_position[i]] for i in now) > before
            assert not set(now) & set(clicks)


def test_free_text_query_finds_animated_childrens_films(demo, demo_server):
    _, service, _ = demo
    body = httpx.post(f"{demo_server.url}/query", json={"text": "animated film for children", "k": 10}, timeout=60).json()
    ids = [i["item_id"] for i in body["items"]]
    assert len(ids) == 10 and body["personalised"] is False
    assert sum(bool(set(service.genres[service.item_position[i]]) & KIDS) for i in ids) >= 6, [i["title"] for i in body["items"]]
    personal = httpx.post(f"{demo_server.url}/query", json={"text": "animated film for children", "user_id": "1", "k": 10},
                          timeout=60).json()
    assert personal["personalised"] is True and [i["item_id"] for i in personal["items"]] != ids
    assert np.isfinite([i["score"] for i in personal["items"]]).all()


def test_a_user_known_only_from_events_gets_a_personal_list(demo):
    _, service, _ = demo
    popularity = service.bundle.items["popularity"].to_numpy()
    order = np.lexsort((np.arange(len(popularity)), -popularity))
    kids = [p for p in order if set(service.genres[p]) >= KIDS][:5]
    from llmrec_platform.live.events import Event

    cold = service.recommend("newcomer", 10)
    for j, position in enumerate(kids):
        service.apply(Event("newcomer", str(service.item_ids[position]), "favorite", timestamp=2_000_000_000 + j))
    warm = service.recommend("newcomer", 10, explain=True)
    service.live.pop("newcomer")
    assert cold.cold_start and not warm.cold_start
    ids = [i["item_id"] for i in warm.items]
    assert not {service.item_position[i] for i in ids} & set(kids) and ids != [i["item_id"] for i in cold.items]
    assert sum(bool(set(service.genres[service.item_position[i]]) & KIDS) for i in ids) >= 5
    kid_ids = {str(service.item_ids[p]) for p in kids}
    assert all({link["item_id"] for link in i["because"]["closest"]} <= kid_ids for i in warm.items)
