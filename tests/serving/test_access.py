"""Scoped tokens, rate limits and the audit log, on real servers (child processes on loopback ports)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from llmrec_platform.data.privacy import Pseudonymizer
from llmrec_platform.paths import Paths
from llmrec_platform.serving.app import create_app
from llmrec_platform.serving.audit import AuditLog, AuditRecord
from llmrec_platform.serving.auth import SCOPES, TokenFileError, load_token_file, token_digest
from llmrec_platform.settings import Settings, SettingsError
from tests.serving.conftest import REPO, InProcessServer, Server, free_port, publish_tiny_bundle, server_env

ENV_ADMIN = "env-admin-token-0123456789"
# One token per scope (named after it), and one more admin from the file.
TOKENS = {scope: f"tok-{scope.replace(':', '-')}-0123456789abcdef" for scope in SCOPES}
EVENT = {"user_id": "table-user", "item_id": "i1", "type": "click"}

# Every route of the API and the scopes it needs, in the order it checks them (None: public; "open": no check).
ROUTES = {
    "GET /users/a01/recommendations": ("read:recommendations",),
    "GET /users/a01/recommendations?explain=true": ("read:recommendations", "read:history"),
    "GET /users/a01/history": ("read:history",),
    "GET /users/a00/explanations/i3": ("read:history",),
    "POST /events": ("write:events",),
    "POST /query": ("read:recommendations",),
    "GET /items/i2/similar": None,
    "GET /health": "open",
    "GET /version": "open",
    "GET /metrics": "open",
    "GET /": "open",
}
# What each route answers once access is granted (the tiny bundle has no encoder: /query says so, 503).
GRANTED = {"POST /events": 202, "POST /query": 503}
CALLERS = ["none", "malformed", "unknown", *SCOPES, "env-admin"]


def write_token_file(folder: Path, extra: dict | None = None) -> Path:
    path = folder / "tokens.yaml"
    entries = {scope: {"token": token, "scopes": [scope]} for scope, token in TOKENS.items()}
    path.write_text(json.dumps({**entries, **(extra or {})}))  # JSON is YAML
    return path


def header(caller: str) -> dict[str, str]:
    token = {"none": None, "malformed": None, "unknown": "no-such-token-0123456789", "env-admin": ENV_ADMIN}.get(
        caller, TOKENS.get(caller))
    if caller == "malformed":
        return {"Authorization": "Basic dXNlcjpwYXNz"}
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def expected(route: str, caller: str) -> tuple[int, str | None]:
    """(status, a phrase of the message) that the access rule gives `caller` on `route`."""
    needs, granted = ROUTES[route], GRANTED.get(route, 200)
    if needs == "open":
        return granted, None
    if caller == "malformed":
        return 401, "malformed Authorization header"
    if caller == "unknown":
        return 401, "unknown token"
    if needs is None or caller in ("admin", "env-admin"):
        return granted, None
    if caller == "none":
        return 401, "needs the scope"
    missing = [scope for scope in needs if scope != caller]
    return (403, f"lacks the scope {missing[0]}") if missing else (granted, None)


def call(client: httpx.Client, route: str, headers: dict) -> httpx.Response:
    method, path = route.split(" ")
    if method == "POST":
        payload = EVENT if path == "/events" else {"text": "a funny film"}
        return client.post(path, json=payload, headers=headers)
    return client.get(path, headers=headers)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """One server with the token file and LLMREC_API_TOKEN, recommendations private (the default)."""
    folder = tmp_path_factory.mktemp("access")
    home = Paths(folder / "home").ensure()
    publish_tiny_bundle(home)
    running = Server(home, LLMREC_API_TOKEN=ENV_ADMIN, LLMREC_API_TOKENS_FILE=str(write_token_file(folder))).start()
    yield running
    output = running.stop()
    assert not any(token in output for token in [*TOKENS.values(), ENV_ADMIN])  # never logged


@pytest.mark.parametrize("caller", CALLERS)
def test_every_route_times_every_caller_gets_what_its_scopes_allow(guarded, caller):
    with httpx.Client(base_url=guarded.url) as client:
        for route in ROUTES:
            status, phrase = expected(route, caller)
            response = call(client, route, header(caller))
            assert response.status_code == status, (route, caller, response.text)
            if phrase is not None:
                assert phrase in response.json()["detail"], (route, caller)
                assert "WWW-Authenticate" in response.headers
            for token in [*TOKENS.values(), ENV_ADMIN]:
                assert token not in response.text


def test_the_openapi_document_declares_the_access_errors(guarded):
    spec = httpx.get(guarded.url + "/openapi.json").json()
    for route, needs in ROUTES.items():
        method, path = route.split(" ")
        operation = spec["paths"].get(path.split("?")[0], {}).get(method.lower())
        if needs == "open" or operation is None:  # the web page is not in the schema
            continue
        declared = set(operation["responses"])
        assert {"401", "429"} <= declared, route
        assert ("403" in declared) == (needs is not None), route
        assert operation["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    assert "HTTPBearer" in spec["components"]["securitySchemes"]


def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(guarded):
    def chunks():  # no Content-Length: the limit has to count the bytes as they arrive
        yield b'{"user_id": "chunked", "item_id": "i1", "type": "click", "request_id": "'
        for _ in range(80):
            yield b"x" * 1024
        yield b'"}'

    admin = {"Authorization": f"Bearer {ENV_ADMIN}", "Content-Type": "application/json"}
    response = httpx.post(guarded.url + "/events", content=chunks(), headers=admin)
    assert response.status_code == 413 and "over 65536 bytes" in response.json()["detail"]
    history = httpx.get(guarded.url + "/users/chunked/history", headers=admin).json()["items"]
    assert history == []


def test_public_recommendations_open_lists_but_not_histories(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    publish_tiny_bundle(home)
    running = Server(home, LLMREC_API_TOKEN=ENV_ADMIN, LLMREC_PUBLIC_RECOMMENDATIONS="1").start()
    try:
        with httpx.Client(base_url=running.url) as client:
            assert client.get("/users/a01/recommendations").status_code == 200
            assert client.post("/query", json={"text": "films"}).status_code == 503  # past access; no encoder here
            assert client.get("/users/a01/recommendations", params={"explain": "true"}).status_code == 401
            assert client.get("/users/a01/history").status_code == 401
            assert client.post("/events", json=EVENT).status_code == 401
    finally:
        running.stop()


def from_address(url: str, address: str, **headers: str) -> httpx.Client:
    """A client whose requests come from `address` (any 127.x.y.z reaches the loopback server)."""
    return httpx.Client(base_url=url, headers=headers, transport=httpx.HTTPTransport(local_address=address))


def test_rate_limits_answer_429_with_retry_after_per_address_and_per_token(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    publish_tiny_bundle(home)
    tokens = write_token_file(tmp_path, {"slow": {"token": "slow-token-0123456789", "scopes": ["read:recommendations"],
                                                  "rate_limit": "3/minute"}})
    running = Server(home, LLMREC_API_TOKENS_FILE=str(tokens), LLMREC_PUBLIC_RECOMMENDATIONS="1",
                     LLMREC_RATE_LIMIT_ADDRESS="8/minute", LLMREC_RATE_LIMIT_TOKEN="100/minute").start()
    try:
        with from_address(running.url, "127.0.0.2") as client:
            burst = [client.get("/items/i2/similar") for _ in range(10)]
            assert [r.status_code for r in burst] == [200] * 8 + [429] * 2
            assert all(1 <= int(r.headers["Retry-After"]) <= 60 for r in burst[8:])
            guesses = [client.get("/users/a01/history", headers={"Authorization": f"Bearer guess-{n}"}) for n in range(3)]
            assert {r.status_code for r in guesses} == {429}  # token guessing counts against the address too
            assert "this client address exceeded" in burst[-1].json()["detail"]
            assert client.get("/health").status_code == 200  # probes are never limited
        with from_address(running.url, "127.0.0.3") as other:
            assert other.get("/items/i2/similar").status_code == 200  # another address has its own window
        with from_address(running.url, "127.0.0.4", Authorization="Bearer slow-token-0123456789") as slow:
            statuses = [slow.get("/users/a01/recommendations").status_code for _ in range(5)]
            assert statuses == [200] * 3 + [429] * 2
            throttled = slow.get("/users/a01/recommendations")
            assert "token 'slow'" in throttled.json()["detail"] and int(throttled.headers["Retry-After"]) >= 1
            # 127.0.0.4 has made 6 requests of its 8: a token refused still counts against its address.
        reader = {"Authorization": f"Bearer {TOKENS['read:recommendations']}"}
        with from_address(running.url, "127.0.0.4", **reader) as fast:
            assert fast.get("/users/a01/recommendations").status_code == 200  # the token's own window, same address
        metrics = httpx.get(running.url + "/metrics").text
        assert 'llmrec_requests_throttled_total{limit="address"} 5.0' in metrics
        assert 'llmrec_requests_throttled_total{limit="token"} 3.0' in metrics
    finally:
        running.stop()


def test_the_audit_log_records_who_wrote_what_with_the_pseudonym_never_the_token(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    publish_tiny_bundle(home)
    key = "audit-test-pseudonym-key-0123456789"
    settings = Settings(home=home.home, pseudonymize=True, pseudonym_key=key, api_tokens_file=write_token_file(tmp_path))
    writer = {"Authorization": f"Bearer {TOKENS['write:events']}"}
    with InProcessServer(create_app(settings)) as running:
        for user in ("Raw-Person-1", "Raw-Person-2"):
            assert httpx.post(running.url + "/events", json={**EVENT, "user_id": user}, headers=writer).status_code == 202
        refused = httpx.post(running.url + "/events", json=EVENT, headers={"Authorization": f"Bearer {TOKENS['admin']}x"})
        assert refused.status_code == 401
    records = AuditLog(home.audit).read()
    assert [(r["who"], r["action"], r["user_id"]) for r in records] == [
        ("write:events", "POST /events", Pseudonymizer(key)(user)) for user in ("Raw-Person-1", "Raw-Person-2")]
    assert all(r["detail"]["event_id"] and r["time"].endswith("+00:00") for r in records)
    text = (home.audit / "access.jsonl").read_text()
    assert "Raw-Person" not in text and not any(token in text for token in TOKENS.values())


@pytest.mark.parametrize(("content", "message"), [
    ("[1, 2]", "expected a mapping of token names"),
    ('{"web": {"token": "abc", "scopes": ["read:everything"]}}', "entry 'web', field scopes"),
    ('{"web": {"scopes": ["admin"]}}', "entry 'web': give exactly one of `token` and `sha256`"),
    ('{"web": {"token": "has space", "scopes": ["admin"]}}', "entry 'web', field token"),
    ('{"web": {"sha256": "beef", "scopes": ["admin"]}}', "entry 'web', field sha256"),
    ('{"web": {"token": "abc", "scopes": ["admin"], "rate_limit": "lots"}}', "entry 'web', field rate_limit"),
    ('{"a": {"token": "abc", "scopes": ["admin"]}, "b": {"token": "abc", "scopes": ["admin"]}}', "the same token"),
    ('{"LLMREC_API_TOKEN": {"token": "abc", "scopes": ["admin"]}}', "entry 'LLMREC_API_TOKEN': the name"),
    ("web: [unclosed", "cannot be read as YAML or JSON"),
])
def test_a_malformed_token_file_names_the_file_entry_and_field(tmp_path, content, message):
    path = tmp_path / "tokens.yaml"
    path.write_text(content)
    with pytest.raises(TokenFileError, match="token file") as raised:
        load_token_file(path)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_a_token_file_may_hold_digests_instead_of_tokens(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text(f"web:\n  sha256: {token_digest('the-real-token').hex()}\n  scopes: [read:history]\n")
    [(digest, principal)] = load_token_file(path)
    assert digest == token_digest("the-real-token") and principal.name == "web" and principal.holds("read:history")
    assert not principal.holds("write:events")


@pytest.mark.parametrize(("env", "message"), [
    ({"LLMREC_API_TOKENS_FILE": "/no/such/tokens.yaml"}, "LLMREC_API_TOKENS_FILE='/no/such/tokens.yaml': no such file"),
    ({"LLMREC_RATE_LIMIT_TOKEN": "fast"}, "LLMREC_RATE_LIMIT_TOKEN='fast': expected limits such as"),
    ({"LLMREC_RATE_LIMIT_ADDRESS": "10/fortnight"}, "LLMREC_RATE_LIMIT_ADDRESS='10/fortnight'"),
    ({"LLMREC_PUBLIC_RECOMMENDATIONS": "maybe"}, "LLMREC_PUBLIC_RECOMMENDATIONS='maybe'"),
])
def test_access_settings_refuse_bad_values_in_one_line(env, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_serve_with_a_malformed_token_file_stops_with_one_line(tmp_path):
    home = Paths(tmp_path / "home").ensure()
    publish_tiny_bundle(home)
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text('{"web": {"token": "abc", "scopes": ["write:everything"]}}')
    result = subprocess.run([sys.executable, "-m", "llmrec_platform.cli", "serve", "--port", str(free_port())], cwd=REPO,
                            env=server_env(home, LLMREC_API_TOKENS_FILE=str(tokens)), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "entry 'web', field scopes" in result.stderr and "Traceback" not in result.stderr


def test_redacting_an_erased_user_keeps_every_record_and_loses_none_appended_meanwhile(tmp_path):
    audit = AuditLog(tmp_path / "audit")
    audit.append([AuditRecord("writer", "POST /events", user, {"event_id": str(n)})
                  for n, user in enumerate(["u-gone", "u-kept", "u-gone"])])

    def append_many(worker: int):
        for n in range(40):
            audit.append([AuditRecord(f"worker{worker}", "POST /events", "u-gone" if n % 2 else "u-kept")])

    workers = [threading.Thread(target=append_many, args=(w,)) for w in range(3)]
    for worker in workers:
        worker.start()
    redacted = 0
    while any(worker.is_alive() for worker in workers):
        redacted += audit.redact("u-gone", "erased:abc123")
    for worker in workers:
        worker.join()
    redacted += audit.redact("u-gone", "erased:abc123")
    records = audit.read()
    assert len(records) == 3 + 3 * 40  # nothing appended during a rewrite was lost
    assert redacted == 2 + 3 * 20 and sum(r["user_id"] == "erased:abc123" for r in records) == redacted
    assert "u-gone" not in audit.path.read_text() and sum(r["user_id"] == "u-kept" for r in records) == 1 + 3 * 20
    assert audit.redact("nobody", "erased:x") == 0
