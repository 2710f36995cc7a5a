"""The long-term channel's cache (`live.long_term`): the bundle's stored fold-ins, lazy and background refresh."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest

from llmrec_platform.live.events import Event, EventLog
from llmrec_platform.live.long_term import INDEX_FILE, fold_in, read_long_term
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.base import Histories
from llmrec_platform.serving import service as service_module
from llmrec_platform.serving.bundle import current_bundle, load_bundle, write_bundle_long_term
from llmrec_platform.serving.service import LiveService
from tests.serving.conftest import Server, publish_tiny_bundle


@pytest.fixture
def tiny_home(tmp_path) -> Paths:
    home = Paths(tmp_path / "home").ensure()
    publish_tiny_bundle(home)
    return home


def test_a_published_bundle_stores_every_users_fold_in_as_one_user_scoring_gives_it(tiny_home):
    bundle = load_bundle(current_bundle(tiny_home.bundles))
    stored, rows = read_long_term(bundle.path, bundle.champion)
    service = LiveService(bundle, None, {})
    assert sorted(rows) == sorted(service.bundle_users()) and stored.shape == (len(rows), len(bundle.champion.item_ids_))
    for user, row in rows.items():
        position, items, ratings, stamps = service.champion_row(user, bundle.champion)
        single = bundle.champion.score_histories(Histories.single(items, ratings, stamps, position, stored.shape[1]))
        assert np.array_equal(stored[row], single[0]), user  # the batch path, bit for bit the one-user path
    both = [service.champion_row(u, bundle.champion) for u in ("a00", "b01")]
    assert np.array_equal(fold_in(bundle.champion, both), stored[[rows["a00"], rows["b01"]]])


def test_lists_from_the_cache_are_the_lists_computed_per_request(tiny_home, tmp_path):
    bundle = load_bundle(current_bundle(tiny_home.bundles))
    log = EventLog(tmp_path / "events")
    cached, plain = LiveService(bundle, log, {"click": 4.0}), LiveService(bundle, log, {"click": 4.0})
    plain._stored = None  # what a bundle without the file gives: every fold-in computed on request
    assert cached._stored is not None
    users = cached.bundle_users()
    for step in range(3):  # before any event, then with one and two clicks of everyone (newer than training)
        for user in users:
            a, b = cached.recommend(user, k=8), plain.recommend(user, k=8)
            assert [(i["item_id"], i["score"]) for i in a.items] == [(i["item_id"], i["score"]) for i in b.items], user
        log.append([Event(u, f"i{(n + step) % 12}", "click", timestamp=2_000_000_000 + step) for n, u in enumerate(users)])


def test_background_refresh_serves_the_older_fold_in_until_the_refresher_catches_up(tiny_home, tmp_path):
    bundle = load_bundle(current_bundle(tiny_home.bundles))
    log = EventLog(tmp_path / "events")
    background = LiveService(bundle, log, {"click": 4.0}, refresh="background")
    exact = LiveService(bundle, log, {"click": 4.0})
    before = background.scores("a00")[0]
    log.append([Event("a00", "i7", "click", timestamp=2_000_000_000), Event("a00", "i8", "click", timestamp=2_000_000_001)])
    listed = [i["item_id"] for i in background.recommend("a00", k=11).items]
    assert "i7" not in listed and "i8" not in listed  # read-your-writes: a clicked item is never listed
    assert list(background.stale) == ["a00"]
    stored, rows = background._stored
    assert np.array_equal(background.long_term("a00", "champion", bundle.champion, background.live["a00"]),
                          stored[rows["a00"]])  # still the bundle history's fold-in
    assert not np.array_equal(background.scores("a00")[0], before)  # the short-term channel moved at once
    assert background.take_stale(10) == ["a00"] and not background.stale
    background.refresh_stale(["a00"])
    assert [i["item_id"] for i in background.recommend("a00", k=11).items] == \
        [i["item_id"] for i in exact.recommend("a00", k=11).items]
    assert not background.stale
    background.forget("a00")
    assert "a00" not in background._folded["champion"] and "a00" not in background._stored[1]


def test_a_copy_serving_another_champion_ignores_the_old_fold_ins(tiny_home):
    path = current_bundle(tiny_home.bundles)
    index = json.loads((path / INDEX_FILE).read_text())
    (path / INDEX_FILE).write_text(json.dumps({**index, "ranker": "hybrid"}))
    bundle = load_bundle(path)
    assert read_long_term(path, bundle.champion) is None and LiveService(bundle, None, {})._stored is None
    assert write_bundle_long_term(path) == len(index["users"])
    assert read_long_term(path, bundle.champion) is not None


def test_the_server_refreshes_a_clicked_users_long_term_channel_off_the_request_path(tiny_home):
    server = Server(tiny_home).start()
    try:
        httpx.get(f"{server.url}/users/b02/recommendations").raise_for_status()
        assert httpx.post(f"{server.url}/events", json={"user_id": "b02", "item_id": "i1", "type": "click"}).status_code == 202
        first = httpx.get(f"{server.url}/users/b02/recommendations", params={"k": 11}).json()
        assert "i1" not in [i["item_id"] for i in first["items"]]
        deadline = time.monotonic() + 10
        while "llmrec_long_term_refreshed_users_total 1.0" not in httpx.get(f"{server.url}/metrics").text:
            assert time.monotonic() < deadline, "the refresher did not recompute the clicked user's fold-in"
            time.sleep(0.05)
        after = httpx.get(f"{server.url}/users/b02/recommendations", params={"k": 11}).json()
        assert "i1" not in [i["item_id"] for i in after["items"]]
    finally:
        server.stop()


def test_a_republish_of_the_same_champion_and_histories_copies_the_fold_ins(tiny_home, monkeypatch):
    import llmrec_platform.live.long_term as long_term

    first = current_bundle(tiny_home.bundles)
    written = []
    original = long_term.write_long_term
    monkeypatch.setattr(long_term, "write_long_term", lambda folder, service: written.append(folder) or original(folder, service))
    second = publish_tiny_bundle(tiny_home)  # the same data and ranker: nothing to fold in again
    assert second != first and written == []
    assert (second / "long_term.npy").read_bytes() == (first / "long_term.npy").read_bytes()
    third = publish_tiny_bundle(tiny_home, reg_weight=20.0)  # another champion: computed
    assert len(written) == 1 and read_long_term(third, load_bundle(third).champion) is not None


def test_prepared_lists_are_the_lists_computed_without_the_memo(tiny_home, tmp_path):
    """`prepare_lists` keeps each user's long-term rank order and content channel (`LiveRanking.scores`' memo);
    the lists and scores stay those of a service that computes every pass per request, through live events (the
    memo of a changed history is rebuilt), the background refresher and an item added live."""
    bundle = load_bundle(current_bundle(tiny_home.bundles))
    log = EventLog(tmp_path / "events")
    memo, plain = (LiveService(bundle, log, {"click": 4.0}, refresh="background") for _ in range(2))
    plain._memo = lambda *args: None  # every pass computed per request
    plain._live_arrays = Forgetful()  # and the history arrays with live events too
    users = memo.bundle_users()
    for service in (memo, plain):  # an item beyond the champion's: the content channel covers it
        service.add_items(["added"], ["Added film"], [["Horror"]], service.vectors[6:7] - 0.1)
    assert memo.prepare_lists() == len(users) and plain.prepare_lists() == len(users)
    assert len(memo._memos) == len(users) and not plain._memos
    assert all({"order", "content", "top"} <= set(held[1]) for held in memo._memos.values())  # items beyond the champion's

    def same_lists():
        for user in users:
            a, b = memo.recommend(user, k=8), plain.recommend(user, k=8)
            assert [(i["item_id"], i["score"]) for i in a.items] == [(i["item_id"], i["score"]) for i in b.items], user
            assert np.array_equal(memo.scores(user)[0], plain.scores(user)[0]), user

    same_lists()
    kept = memo._memos["a00"][1]
    for step in range(2):
        log.append([Event(u, f"i{(n + step) % 12}", "click", timestamp=2_000_000_000 + step) for n, u in enumerate(users)])
        same_lists()
        assert memo._memos["a00"][1] is not kept  # the history changed: a new memo
        kept = memo._memos["a00"][1]
        for service in (memo, plain):
            service.refresh_stale(service.take_stale(len(users)))
        same_lists()
    for service in (memo, plain):  # as `genre_shift` does: the same number of other events, the memo is rebuilt
        clicks = service.live.pop("a00")
        for n, click in enumerate(clicks):
            service.apply(Event("a00", f"i{(n + 5) % 12}", "click", timestamp=int(click.timestamp)))
    same_lists()
    for service in (memo, plain):
        service.add_items(["new"], ["New film"], [["Comedy"]], service.vectors[:1] + 0.1)
    assert not memo._memos  # the content channel now covers one more item
    same_lists()


def test_a_kept_top_serves_repeated_lists_of_any_length_as_computed(tiny_home, tmp_path, monkeypatch):
    """The memo keeps the top of each list (`TOP_MEMO`; 3 here, so that longer lists go past it): a repeated list,
    shorter or longer than the kept top, is the list computed without the memo, and a click on an item of the kept
    top makes the next list drop it (the history changed: a new memo)."""
    monkeypatch.setattr(service_module, "TOP_MEMO", 3)
    bundle = load_bundle(current_bundle(tiny_home.bundles))
    log = EventLog(tmp_path / "events")
    memo, plain = (LiveService(bundle, log, {"click": 4.0}, refresh="background") for _ in range(2))
    plain._memo = lambda *args: None
    memo.prepare_lists()
    for user in memo.bundle_users():
        assert len(memo._memos[user][1]["top"][0]) == 3
        candidates = len(memo.item_ids) - len(memo.history_arrays(user)[0])
        for k in (2, 3, 1, 8, 5, 8):
            a, b = memo.recommend(user, k=k), plain.recommend(user, k=k)
            assert [(i["item_id"], i["score"]) for i in a.items] == [(i["item_id"], i["score"]) for i in b.items], (user, k)
            assert len(a.items) == min(k, candidates)
        assert len(memo._memos[user][1]["top"][0]) == min(8, candidates)  # the longest list asked for is kept
    first = memo.recommend("a00", k=3).items[0]["item_id"]
    log.append([Event("a00", first, "click", timestamp=2_000_000_000)])
    after = [i["item_id"] for i in memo.recommend("a00", k=3).items]
    assert first not in after and after == [i["item_id"] for i in plain.recommend("a00", k=3).items]


class Forgetful(dict):
    """A cache that keeps nothing."""

    def __setitem__(self, key, value) -> None:
        pass
