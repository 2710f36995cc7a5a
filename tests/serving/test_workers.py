"""`llmrec serve --workers 2` (uvicorn and granian): both workers answer, and /metrics counts every worker's
requests, whichever worker answers the scrape (prometheus multiprocess mode in a fresh folder under the home)."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.serving.conftest import Server

RECOMMENDATIONS = 'llmrec_request_seconds_count{method="GET",route="/users/{user_id}/recommendations"}'


def metric(text: str, name: str) -> float:
    found = re.search("^" + re.escape(name) + r" ([0-9.e+]+)$", text, re.MULTILINE)
    assert found, f"{name} is not in /metrics"
    return float(found.group(1))


@pytest.mark.slow
@pytest.mark.parametrize("server", ["uvicorn", "granian"])
def test_metrics_sum_both_workers(tiny_home, server):
    running = Server(tiny_home, workers=2, server=server).start()
    try:
        folders = list((tiny_home.home / "metrics").glob("serve-*"))
        assert len(folders) == 1, "llmrec serve makes one fresh metrics folder"
        sent, deadline = 0, time.monotonic() + 60
        # a new connection per request, so the kernel hands them to both workers; go on until both have counted
        while sent < 20 or len({p.stem for p in folders[0].glob("histogram_*.db")}) < 2:
            assert time.monotonic() < deadline, "only one worker answered in 60 s"
            assert httpx.get(f"{running.url}/users/a00/recommendations", params={"k": 3}).status_code == 200
            sent += 1
        for n in range(3):
            event = {"user_id": "a01", "item_id": f"i{7 + n}", "type": "click"}
            assert httpx.post(f"{running.url}/events", json=event).status_code == 202
        for _ in range(6):  # whichever worker answers the scrape, it reports both workers' counts
            text = httpx.get(f"{running.url}/metrics").text
            assert metric(text, RECOMMENDATIONS) == sent
            assert metric(text, "llmrec_events_appended_total") == 3
            assert metric(text, 'llmrec_bundle_info{champion="ease",version="' + running_version(running) + '"}') == 1
    finally:
        running.stop()
    assert not folders[0].exists(), "the metrics folder is removed when the server stops"


def running_version(running: Server) -> str:
    return httpx.get(f"{running.url}/version").json()["version"]
