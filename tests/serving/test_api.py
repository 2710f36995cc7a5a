"""The HTTP API on a real server (a child process on a free loopback port) over a tiny published bundle."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from llmrec_platform.live.online import ImpressionLog
from llmrec_platform.serving.app import create_app
from llmrec_platform.settings import Settings
from llmrec_platform.testing import GROUPS, two_group_split
from tests.serving.conftest import InProcessServer, Server, log_frame, publish_tiny_bundle


def history_items(user: str) -> set[str]:
    split = two_group_split()
    return set(split.loc[split["user_id"] == user, "item_id"])


def test_known_user_gets_a_list_without_their_history(server):
    body = httpx.get(f"{server.url}/users/a03/recommendations", params={"k": 5}).json()
    assert body["user_id"] == "a03" and body["cold_start"] is False and body["ranker"] == "ease"
    assert len(body["items"]) == 5 and len(body["request_id"]) == 32
    assert not {i["item_id"] for i in body["items"]} & history_items("a03")
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(i["title"] == "Film " + i["item_id"] for i in body["items"])


def test_unknown_user_gets_a_cold_start_not_an_error(server):
    body = httpx.get(f"{server.url}/users/nobody/recommendations", params={"k": 3}).json()
    assert body["cold_start"] is True and len(body["items"]) == 3


def test_an_event_changes_the_next_list_at_once(server):
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/users/new-user/recommendations").json()["cold_start"] is True
        response = client.post("/events", json={"user_id": "new-user", "item_id": "i7", "type": "click"})
        assert response.status_code == 202
        body = client.get("/users/new-user/recommendations", params={"k": 4}).json()
    assert body["cold_start"] is False
    ids = [i["item_id"] for i in body["items"]]
    assert "i7" not in ids and set(ids) <= set(GROUPS["b"])  # the clicked film's group, never the film itself
    logged = log_frame(server.home)
    assert logged[["user_id", "item_id", "event_type"]].values.tolist() == [["new-user", "i7", "click"]]


def test_history_lists_bundle_interactions_then_live_events(server):
    httpx.post(f"{server.url}/events", json={"user_id": "a01", "item_id": "i9", "type": "rate", "value": 2,
                                             "timestamp": "2026-01-02T03:04:05Z"})
    items = httpx.get(f"{server.url}/users/a01/history").json()["items"]
    assert {i["item_id"] for i in items[:-1]} == history_items("a01")
    assert items[-1] == {"item_id": "i9", "rating": 2.0, "timestamp": 1767323045.0, "event": "rate"}


@pytest.mark.parametrize(("method", "path", "payload", "status", "message"), [
    ("post", "/events", {"user_id": "u", "item_id": "i1", "type": "jump"}, 422, "type: Input should be"),
    ("post", "/events", {"user_id": "u", "item_id": "i1", "type": "click", "colour": "red"}, 422, "colour: Extra inputs"),
    ("post", "/events", {"user_id": "u", "item_id": "i1", "type": "click", "timestamp": "yesterday"}, 422,
     "neither epoch seconds nor ISO 8601"),
    ("post", "/events", {"user_id": "u", "item_id": "i1", "type": "rate"}, 422, "value: a `rate` event needs"),
    ("post", "/events", {"user_id": "u", "item_id": "i1", "type": "click", "value": "lots"}, 422, "value:"),
    ("post", "/events", {"user_id": "u", "item_id": "nope", "type": "click"}, 404, "unknown item 'nope'"),
    ("post", "/query", {"text": "x" * 2001}, 422, "text: String should have at most 2000 characters"),
    ("post", "/query", {"text": "films", "k": 0}, 422, "k: Input should be greater than or equal to 1"),
    ("get", "/users/a00/recommendations?k=1001", None, 422, "k: Input should be less than or equal to 1000"),
    ("get", "/users/a00/recommendations?k=ten", None, 422, "k: Input should be a valid integer"),
    ("get", "/items/nope/similar", None, 404, "unknown item 'nope'"),
])
def test_bad_input_gets_a_4xx_with_a_message(server, method, path, payload, status, message):
    response = getattr(httpx, method)(server.url + path, **({"json": payload} if payload is not None else {}))
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert "Traceback" not in response.text


def test_oversized_bodies_are_refused(server):
    response = httpx.post(f"{server.url}/events", content=b"{" + b" " * 70_000 + b"}",
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "over 65536 bytes" in response.json()["detail"]
    assert len(log_frame(server.home)) == 0


def test_posts_need_the_token_when_one_is_set(tiny_home):
    running = Server(tiny_home, LLMREC_API_TOKEN="s3cret").start()
    try:
        event = {"user_id": "u", "item_id": "i1", "type": "click"}
        missing = httpx.post(f"{running.url}/events", json=event)
        wrong = httpx.post(f"{running.url}/events", json=event, headers={"Authorization": "Bearer nope"})
        right = httpx.post(f"{running.url}/events", json=event, headers={"Authorization": "Bearer s3cret"})
        assert (missing.status_code, wrong.status_code, right.status_code) == (401, 401, 202)
        assert "LLMREC_API_TOKEN" in missing.json()["detail"]
        # Once a token is set, recommendations are private too unless LLMREC_PUBLIC_RECOMMENDATIONS (test_access.py).
        assert httpx.get(f"{running.url}/users/u/recommendations").status_code == 401
        assert httpx.get(f"{running.url}/users/u/recommendations", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    finally:
        running.stop()
    assert len(log_frame(tiny_home)) == 1


def test_every_because_item_is_in_the_users_history(server):
    httpx.post(f"{server.url}/events", json={"user_id": "b02", "item_id": "i1", "type": "favorite"})
    body = httpx.get(f"{server.url}/users/b02/recommendations", params={"k": 8, "explain": "true"}).json()
    history = history_items("b02") | {"i1"}
    assert body["items"]
    for item in body["items"]:
        because = item["because"]
        cited = {link["item_id"] for link in because["closest"]}
        if because["collaborative"]:
            cited.add(because["collaborative"]["item_id"])
        assert cited and cited <= history and item["item_id"] not in cited
        assert because["text"].startswith("Because")
        genres = {"Comedy"} if item["item_id"] in GROUPS["a"] else {"Horror", "Thriller"}
        assert set(because["shared_genres"]) <= genres


def test_similar_items_and_version(server):
    similar = httpx.get(f"{server.url}/items/i2/similar", params={"k": 3}).json()["items"]
    assert [i["item_id"] for i in similar] != [] and "i2" not in [i["item_id"] for i in similar]
    assert {i["item_id"] for i in similar} <= set(GROUPS["a"])
    version = httpx.get(f"{server.url}/version").json()
    assert version["champion"] == "ease" and version["data_fingerprint"] == "tiny"


def test_metrics_count_events_and_fsync_batches(server):
    for item in ("i1", "i2", "i3"):
        assert httpx.post(f"{server.url}/events", json={"user_id": "m", "item_id": item, "type": "view"}).status_code == 202
    text = httpx.get(f"{server.url}/metrics").text
    assert "llmrec_events_appended_total 3.0" in text
    assert "llmrec_fsync_batch_events_sum 3.0" in text
    assert 'llmrec_request_seconds_count{method="POST",route="/events"} 3.0' in text
    assert "llmrec_bundle_info{" in text


def test_every_list_is_logged_as_an_impression(server):
    body = httpx.get(f"{server.url}/users/a05/recommendations", params={"k": 3}).json()
    impressions = ImpressionLog(server.home.events).read()
    row = impressions[impressions["request_id"] == body["request_id"]].iloc[0]
    assert row["user_id"] == "a05" and row["model_version"] == body["model_version"]
    assert list(row["items"]) == [i["item_id"] for i in body["items"]]


def test_a_new_bundle_is_served_without_a_failed_request(server):
    failures, seen_versions, done = [], set(), threading.Event()

    def stream():
        with httpx.Client(base_url=server.url) as client:
            while not done.is_set():
                try:
                    response = client.get("/users/a01/recommendations", params={"k": 3})
                    if response.status_code != 200:
                        failures.append(response.status_code)
                    else:
                        seen_versions.add(response.json()["model_version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    threads = [threading.Thread(target=stream) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    new = publish_tiny_bundle(server.home, reg_weight=20.0)
    deadline = time.monotonic() + 15
    while new.name not in seen_versions and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    done.set()
    for t in threads:
        t.join()
    assert failures == []
    assert new.name in seen_versions and len(seen_versions) == 2
    assert httpx.get(f"{server.url}/version").json()["version"] == new.name


def test_read_your_writes_across_workers(tiny_home):
    running = Server(tiny_home, workers=2).start()
    try:
        for n in range(12):
            item = GROUPS["b"][n % 6]
            # A fresh connection per request: the kernel spreads them over both workers.
            assert httpx.post(f"{running.url}/events", json={"user_id": "w", "item_id": item, "type": "click"}).status_code == 202
            history = httpx.get(f"{running.url}/users/w/history").json()["items"]
            assert len(history) == n + 1 and history[-1]["item_id"] == item
    finally:
        running.stop()


class NamesAnotherFilm:
    def __call__(self, evidence):
        return f"You will love {evidence.title}, just like Film i11 which you never saw."


def test_a_generated_explanation_naming_a_title_outside_the_evidence_is_rejected(tiny_home):
    settings = Settings(home=tiny_home.home)
    with InProcessServer(create_app(settings, writer=NamesAnotherFilm())) as running:
        body = httpx.get(f"{running.url}/users/a00/explanations/i3").json()
        metrics = httpx.get(f"{running.url}/metrics").text
    assert body["writer"] == "template" and body["text"].startswith("Because")
    assert "Film i11" not in body["text"]
    assert 'llmrec_explanations_rejected_total{reason="names_unsupported_title"} 1.0' in metrics


def test_a_grounded_explanation_is_served_and_a_slow_one_times_out(tiny_home):
    def grounded(evidence):
        return f"{evidence.title} is close to {evidence.closest[0].title}, which you rated."

    def slow(evidence):
        time.sleep(2)
        return "too late"

    with InProcessServer(create_app(Settings(home=tiny_home.home, explainer="openai"), writer=grounded)) as running:
        body = httpx.get(f"{running.url}/users/a00/explanations/i3").json()
    assert body["writer"] == "openai" and body["text"].startswith("Film i3 is close to Film i")
    with InProcessServer(create_app(Settings(home=tiny_home.home, explain_timeout=0.2), writer=slow)) as running:
        body = httpx.get(f"{running.url}/users/a00/explanations/i3").json()
        metrics = httpx.get(f"{running.url}/metrics").text
    assert body["writer"] == "template"
    assert 'llmrec_explanations_rejected_total{reason="timeout"} 1.0' in metrics


def test_serve_without_a_bundle_says_what_to_run(tmp_path):
    import subprocess
    import sys

    from llmrec_platform.paths import Paths
    from tests.serving.conftest import REPO, free_port, server_env

    home = Paths(tmp_path / "empty").ensure()
    result = subprocess.run([sys.executable, "-m", "llmrec_platform.cli", "serve", "--port", str(free_port())], cwd=REPO,
                            env=server_env(home), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "no serving bundle" in result.stderr and "llmrec demo" in result.stderr
    assert "Traceback" not in result.stderr
