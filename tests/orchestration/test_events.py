"""The event log, the events sensor and the refresh job that re-embeds and re-ranks affected users."""

import json
import multiprocessing

import dagster as dg
import numpy as np
import pytest

from llmrec_platform import load_ranker
from llmrec_platform.definitions import build_definitions, build_resources
from llmrec_platform.evaluation.champion import Publication, latest_publication, record_publication
from llmrec_platform.live.events import Event, EventError, EventLog
from llmrec_platform.orchestration.sensors import events_sensor
from llmrec_platform.rankers import Interaction, Query
from llmrec_platform.resources import EventLogResource
from llmrec_platform.storage.warehouse import Warehouse


def tick(instance, home, cursor=None) -> dg.SensorResult:
    resources = {"events": build_resources(home)["events"]}
    return events_sensor(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))


def test_append_and_read_by_offset(tmp_path):
    log = EventLog(tmp_path / "events")
    start, end = log.append([Event("1", "10", "rating", 5.0, 100), Event("2", "11", "click", 1.0, 101)])
    assert start == 0 and end == log.size()
    batch = log.read(0)
    assert [(e.user_id, e.item_id, e.event_type) for e in batch.events] == [("1", "10", "rating"), ("2", "11", "click")]
    assert (batch.start, batch.end) == (0, end)
    assert log.read(end).events == []
    more_start, more_end = log.append([Event("3", "12")])
    assert more_start == end and [e.user_id for e in log.read(end).events] == ["3"]
    assert [e.user_id for e in log.read(0, max_events=1).events] == ["1"]
    assert [e.user_id for e in log.read(0, until=end).events] == ["1", "2"]
    # Every line is a JSON object with the documented fields.
    first = json.loads(log.path.read_text().splitlines()[0])
    assert set(first) == {"event_id", "user_id", "item_id", "event_type", "value", "timestamp"}


def test_partial_and_malformed_lines(tmp_path):
    log = EventLog(tmp_path)
    _, end = log.append([Event("1", "10")])
    with open(log.path, "ab") as handle:
        handle.write(b'{"user_id": "2", "item')  # a writer died mid-line
    batch = log.read(0)
    assert len(batch.events) == 1 and batch.end == end  # the torn line is not consumed ...
    log.append([Event("3", "12")])  # ... and the next append terminates it, so it reads as malformed
    batch = log.read(end)
    assert [e.user_id for e in batch.events] == ["3"] and len(batch.malformed) == 1
    with pytest.raises(EventError, match="truncated"):
        log.read(log.size() + 10)
    with pytest.raises(EventError):
        Event("", "1")


def _append_many(folder, worker):
    EventLog(folder).append([Event(f"u{worker}", str(i), "view", 1.0, 1000 + i) for i in range(100)])


def test_concurrent_appends_never_interleave(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(tmp_path, w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    batch = EventLog(tmp_path).read(0)
    assert len(batch.events) == 400 and not batch.malformed


def test_one_request_per_new_batch_and_none_on_the_next_tick(home, instance):
    log = EventLog(home.events)
    assert tick(instance, home).run_requests == []
    _, end = log.append([Event("1", "10"), Event("2", "11"), Event("1", "12")])
    first = tick(instance, home)
    [request] = first.run_requests
    assert request.run_key == f"events:0-{end}"
    config = request.run_config["ops"]["refresh_users_from_events"]["config"]
    assert config == {"start_offset": 0, "end_offset": end, "user_ids": ["1", "2"]}
    assert tick(instance, home, first.cursor).run_requests == []
    _, end2 = log.append([Event("3", "13")])
    [next_request] = tick(instance, home, first.cursor).run_requests
    assert next_request.run_key == f"events:{end}-{end2}"


def test_the_sensor_reads_the_log_and_batch_size_of_its_resource(tmp_path, instance):
    events = EventLogResource(folder=str(tmp_path / "events"), max_batch=2)
    _, end = events.log().append([Event("1", "10"), Event("2", "11"), Event("3", "12")])
    context = dg.build_sensor_context(instance=instance, resources={"events": events})
    [request] = events_sensor(context).run_requests
    assert request.run_config["ops"]["refresh_users_from_events"]["config"]["user_ids"] == ["1", "2"]
    assert request.run_key != f"events:0-{end}"


def _lists(store: Warehouse, user: str) -> list[str]:
    recs = store.query("SELECT item_id FROM recommendations WHERE user_id = ? ORDER BY rank", [user])
    return recs["item_id"].tolist()


def _vector(store: Warehouse, user: str) -> np.ndarray:
    return np.asarray(store.query("SELECT embedding FROM user_embeddings WHERE user_id = ?", [user])["embedding"][0])


def test_refresh_job_updates_the_affected_users_only(trained_home, instance, pipeline_run):
    store = Warehouse(trained_home.warehouse)
    defs = build_definitions(build_resources(trained_home, dataset=str(pipeline_run.dataset), device="cpu"))
    job = defs.resolve_job_def("events_refresh")
    user, other = "1", "2"
    top = _lists(store, user)[:2]
    before_user, before_other = _vector(store, user), _vector(store, other)
    other_lists = _lists(store, other)
    log = EventLog(trained_home.events)
    log.append([Event(user, top[0], "rating", 5.0, 890_000_000), Event(user, top[1], "click", 1.0, 890_000_100)])
    first_tick = tick(instance, trained_home)
    [request] = first_tick.run_requests
    result = job.execute_in_process(run_config=request.run_config, instance=instance)
    assert result.success
    assert len(store.read("events")) == 2
    assert not np.allclose(_vector(store, user), before_user)
    assert np.isclose(np.linalg.norm(_vector(store, user)), 1.0, atol=1e-4)
    np.testing.assert_allclose(_vector(store, other), before_other)
    assert not set(top) & set(_lists(store, user))  # the items just interacted with are no longer recommended
    assert _lists(store, other) == other_lists
    keys = {m.asset_key.to_user_string() for m in result.asset_materializations_for_node("refresh_users_from_events")}
    assert keys == {"user_embeddings", "recommendations"}
    # Replaying the same batch changes nothing.
    snapshot = store.read("recommendations").sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert job.execute_in_process(run_config=request.run_config, instance=instance).success
    assert len(store.read("events")) == 2
    again = store.read("recommendations").sort_values(["user_id", "rank"]).reset_index(drop=True)
    assert again.equals(snapshot)
    # A user who exists only in events is ranked by the champion, whichever ranker it is, from the events alone
    # (fold-in through score_query): first the published champion, then the content ranker.
    newbie = [Event("newbie", top[0], "rating", 5.0, 890_000_000), Event("newbie", top[1], "click", 1.0, 890_000_100)]
    log.append(newbie)
    [request] = tick(instance, trained_home, cursor=first_tick.cursor).run_requests
    query = Query("newbie", tuple(Interaction(e.item_id, e.value if e.event_type == "rating" else None, e.timestamp)
                                  for e in newbie))
    for champion in (latest_publication(store)["ranker"], "llm_content"):
        if champion == "llm_content":
            record_publication(store, Publication("manual", "llm_content", "llm_content_ranker", "ndcg@10", 0.3,
                                                  str(pipeline_run.dataset), "recbole", 0.0))
        assert job.execute_in_process(run_config=request.run_config, instance=instance).success
        listed = store.query("SELECT ranker, item_id FROM recommendations WHERE user_id = 'newbie' ORDER BY rank")
        expected = load_ranker(trained_home.home, champion).recommend(query, k=len(listed))
        assert set(listed["ranker"]) == {champion} and len(listed) > 0
        assert listed["item_id"].tolist() == expected["item_id"].tolist()
        assert not set(top) & set(listed["item_id"])
