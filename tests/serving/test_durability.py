"""kill -9 during a stream of events: nothing acknowledged is lost, nothing is duplicated, and the live
histories come back as they were (a real server process, 8 concurrent clients)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from llmrec_platform.live.events import EventLog
from llmrec_platform.live.refresh import record_events
from llmrec_platform.storage.warehouse import Warehouse
from llmrec_platform.testing import GROUPS
from tests.serving.conftest import Server

pytestmark = pytest.mark.slow


def test_kill_9_loses_no_acknowledged_event(tiny_home):
    server = Server(tiny_home).start()
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int):
        items = GROUPS["a"] + GROUPS["b"]
        with httpx.Client(base_url=server.url, timeout=5) as session:
            for j in range(10_000):
                if stop.is_set():
                    return
                try:
                    response = session.post("/events", json={"user_id": f"d{n}", "item_id": items[j % 12], "type": "click"})
                except httpx.HTTPError:
                    return  # the server is gone
                if response.status_code == 202:
                    with lock:
                        acknowledged.append(response.json()["event_id"])

    clients = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for c in clients:
        c.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()  # SIGKILL mid-stream
    stop.set()
    for c in clients:
        c.join()
    assert len(acknowledged) >= 200

    log = EventLog(tiny_home.events)
    logged = log.read(0)
    assert logged.malformed == []
    counts = logged.frame()["event_id"].value_counts()
    assert set(acknowledged) <= set(counts.index)
    assert counts.max() == 1  # every event in the log exactly once

    # The events sensor's path into the warehouse: batches by offset, and a batch replayed after a crash.
    store = Warehouse(tiny_home.warehouse)
    middle = log.read(0, max_events=len(counts) // 2)
    record_events(store, middle)
    record_events(store, log.read(middle.end))
    record_events(store, middle)
    stored = store.query("SELECT event_id, count(*) AS n FROM events GROUP BY event_id")
    assert len(stored) == len(counts) and stored["n"].max() == 1

    restarted = Server(tiny_home).start()
    try:
        frame = logged.frame()
        for n in range(8):
            expected = frame.loc[frame["user_id"] == f"d{n}", "item_id"].tolist()
            items = httpx.get(f"{restarted.url}/users/d{n}/history").json()["items"]
            assert [i["item_id"] for i in items] == expected
    finally:
        restarted.stop()
