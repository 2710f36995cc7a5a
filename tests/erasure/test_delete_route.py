"""`DELETE /users/{user_id}` on a real server (loopback port): admin only, the user gone from the next answer and
from the logs, idempotent, the audit log recording the erasure without the id; a person who comes back later
starts afresh (what they do after the erasure counts, nothing before it)."""

from __future__ import annotations

import httpx

from llmrec_platform.erasure.ledger import read_ledger
from llmrec_platform.serving.audit import AuditLog
from tests.serving.conftest import Server

TOKEN = "erasure-admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def history(url: str, user: str) -> list[str]:
    return [h["item_id"] for h in httpx.get(f"{url}/users/{user}/history", headers=ADMIN).json()["items"]]


def test_delete_erases_a_user_for_an_admin_only(tiny_home):
    server = Server(tiny_home, LLMREC_API_TOKEN=TOKEN).start()
    try:
        url = server.url
        posted = httpx.post(f"{url}/events", json={"user_id": "a00", "item_id": "i7", "type": "click"}, headers=ADMIN)
        assert posted.status_code == 202, posted.text
        assert httpx.get(f"{url}/users/a00/recommendations", headers=ADMIN).status_code == 200  # an impression
        assert "i7" in history(url, "a00")
        assert httpx.delete(f"{url}/users/a00").status_code == 401  # no token
        erased = httpx.delete(f"{url}/users/a00", headers=ADMIN, timeout=60)
        assert erased.status_code == 200, erased.text
        body = erased.json()
        assert body["erased"] and body["refit"] == ["ease"] and body["stores"]["log_lines"] == 2  # event, impression
        assert history(url, "a00") == []  # the next answer
        assert history(url, "a01")  # everyone else stays
        for log in ("events.jsonl", "impressions.jsonl"):
            assert b'"a00"' not in (tiny_home.events / log).read_bytes()
        records = AuditLog(tiny_home.audit).read()
        assert records and all(r["user_id"] != "a00" for r in records)  # the event's audit line no longer names them
        again = httpx.delete(f"{url}/users/a00", headers=ADMIN, timeout=60)
        assert again.status_code == 200 and not again.json()["erased"]  # idempotent
        # They come back: what they do now counts, nothing from before the erasure does.
        posted = httpx.post(f"{url}/events", json={"user_id": "a00", "item_id": "i8", "type": "click"}, headers=ADMIN)
        assert posted.status_code == 202 and history(url, "a00") == ["i8"]
    finally:
        server.stop()
    deletes = [r for r in AuditLog(tiny_home.audit).read() if r["action"] == "DELETE /users/{user_id}"]
    assert len(deletes) == 2 and all(r["user_id"] is None for r in deletes)
    assert deletes[0]["detail"]["tombstone"] == read_ledger(tiny_home.erasure)[0]["tombstone"]


def test_delete_is_refused_on_an_open_api(server):
    refused = httpx.delete(f"{server.url}/users/a00")
    assert refused.status_code == 403 and "admin token" in refused.json()["detail"]
    assert history(server.url, "a00")  # nothing erased
