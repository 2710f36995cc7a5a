"""The erasure, end to end: the graph run, a live server and its logs, an events refresh, then `llmrec forget`.

A planted user (pseudonymization on) with a unique marker in their profile text is served and posts events;
a control search finds their pseudonym and the marker in every kind of store. After `llmrec forget` a search of
every file under the home (DuckDB values and bytes, SQLite values, Parquet, logs, pickles, MLflow, Dagster)
finds neither, nor the raw id; the running server stopped serving them at once; a restart, an events refresh
and a replay of an old copy of the event log do not bring them back. A second test kills `llmrec forget` with
SIGKILL half-way and checks that the next run finishes the erasure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmrec_platform.data.privacy import Pseudonymizer
from llmrec_platform.erasure.ledger import read_journal, read_ledger
from llmrec_platform.live.events import Event, EventLog
from llmrec_platform.paths import Paths
from llmrec_platform.settings import Settings
from tests.serving.conftest import REPO, Server
from tests.test_privacy import KEY, RAW_IDS, find_leaks, write_private_shop

PLANTED = RAW_IDS[6]
MARKER = "Quokkamarker zebrine"  # letters only: the PII scrub keeps it
PRIVATE_ENV = {"LLMREC_PSEUDONYMIZE": "1", "LLMREC_PSEUDONYM_KEY": KEY}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def graph_home(tmp_path_factory) -> tuple[Paths, Path]:
    """The fast pipeline run once on the private shop (30 users), the planted user's profile holding the marker."""
    from llmrec_platform.cli import run_pipeline

    root = tmp_path_factory.mktemp("erasure")
    config = write_private_shop(root / "shop")
    users = config.parent / "users.csv"
    users.write_text(users.read_text().replace(f"{PLANTED},Likes red things", f"{PLANTED},Likes red things. {MARKER}"))
    assert MARKER in users.read_text()
    env = {"LLMREC_HOME": str(root / "home"), "LLMREC_DEVICE": "cpu", **PRIVATE_ENV}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        paths, result = run_pipeline(str(config), "recbole", device="cpu", fast=True, settings=Settings.from_env(env))
    assert result.success
    return paths, config


def copy_home(graph_home, tmp_path: Path) -> Paths:
    source, _ = graph_home
    shutil.copytree(source.home, tmp_path / "home", symlinks=True)
    return Paths(tmp_path / "home")


def cli(home: Paths, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMREC_")}
    return subprocess.run([sys.executable, "-m", "llmrec_platform.cli", *args], cwd=REPO, capture_output=True, text=True,
                          env={**env, "LLMREC_HOME": str(home.home), **PRIVATE_ENV}, timeout=300)


def refresh_events(home: Paths, config: Path, users: list[str] | None = None) -> None:
    """An events refresh run over the whole log on the platform's Dagster instance (what the events sensor
    launches; `users` empty: every user with an event in the log)."""
    import dagster as dg

    from llmrec_platform.definitions import build_definitions, build_resources

    settings = Settings.from_env({"LLMREC_HOME": str(home.home), **PRIVATE_ENV})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLMREC_PSEUDONYM_KEY", KEY)
        defs = build_definitions(build_resources(home, dataset=str(config), device="cpu", settings=settings), settings)
        job = defs.resolve_job_def("events_refresh")
        config_ = {"start_offset": 0, "end_offset": EventLog(home.events).size(), "user_ids": users or []}
        result = job.execute_in_process(run_config={"ops": {"refresh_users_from_events": {"config": config_}}},
                                        instance=dg.DagsterInstance.from_config(str(home.dagster_home)))
    assert result.success


def history(server: Server, user: str) -> list[str]:
    response = httpx.get(f"{server.url}/users/{user}/history", timeout=10)
    assert response.status_code == 200, response.text
    return [h["item_id"] for h in response.json()["items"]]


def test_forget_erases_a_served_user_everywhere_and_they_stay_gone(graph_home, tmp_path):
    home, config = copy_home(graph_home, tmp_path), graph_home[1]
    pseudonym = Pseudonymizer(KEY)(PLANTED)
    server = Server(home, **PRIVATE_ENV).start()
    try:
        for item in ("SKU-022", "SKU-023"):
            posted = httpx.post(f"{server.url}/events", json={"user_id": PLANTED, "item_id": item, "type": "click"},
                                timeout=10)
            assert posted.status_code == 202, posted.text
        listed = httpx.get(f"{server.url}/users/{PLANTED}/recommendations", timeout=10)
        assert listed.status_code == 200 and listed.json()["items"]
        assert {"SKU-022", "SKU-023"} <= set(history(server, PLANTED))
        refresh_events(home, config, [pseudonym])
        old_log = (home.events / "events.jsonl").read_bytes()

        # The control: the same search finds the user in every kind of store before the erasure.
        found = {leak.split(" in ")[1].split("/")[0] for leak in find_leaks(home.home, [pseudonym, MARKER])}
        assert {"warehouse.duckdb", "events", "bundles", "artifacts", "cache", "dagster"} <= found, found
        assert find_leaks(home.home, [PLANTED]) == []  # pseudonymization: the raw id was never stored

        erased = cli(home, "forget", PLANTED)
        assert erased.returncode == 0, erased.stderr
        assert f"{PLANTED}: erased" in erased.stdout and "refit needed" in erased.stdout
        assert history(server, PLANTED) == []  # the running server's next answer
        assert history(server, RAW_IDS[7])  # everyone else is still served
        assert find_leaks(home.home, [PLANTED, pseudonym, MARKER]) == []
    finally:
        server.stop()

    ledger = read_ledger(home.erasure)
    assert [e["status"] for e in ledger] == ["requested", "completed"] and ledger[1]["held"]
    assert PLANTED not in json.dumps(ledger) and pseudonym not in json.dumps(ledger)
    # A restart and a refresh keep them gone, even from an old copy of the event log.
    server = Server(home, **PRIVATE_ENV).start()
    try:
        assert history(server, PLANTED) == []
        refresh_events(home, config)
        assert find_leaks(home.home, [PLANTED, pseudonym, MARKER]) == []
        (home.events / "events.jsonl").write_bytes(old_log)  # restored from a backup taken before the erasure
        server.stop()
        server = Server(home, **PRIVATE_ENV).start()
        assert history(server, PLANTED) == []
        refresh_events(home, config)
        with_old_log = find_leaks(home.home, [pseudonym, MARKER])
        assert with_old_log == [f"{pseudonym!r} in events/events.jsonl"]  # only the restored file itself
    finally:
        server.stop()
    again = cli(home, "forget", PLANTED)
    assert again.returncode == 0 and find_leaks(home.home, [PLANTED, pseudonym, MARKER]) == []


def test_forget_killed_half_way_is_finished_by_the_next_run(graph_home, tmp_path):
    home = copy_home(graph_home, tmp_path)
    pseudonym = Pseudonymizer(KEY)(PLANTED)
    EventLog(home.events).append([Event(pseudonym, "SKU-021", "click"), Event(Pseudonymizer(KEY)(RAW_IDS[7]), "SKU-1", "view")])
    assert find_leaks(home.home, [pseudonym, MARKER])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMREC_")}
    process = subprocess.Popen([sys.executable, "-m", "llmrec_platform.cli", "forget", PLANTED], cwd=REPO,
                               env={**env, "LLMREC_HOME": str(home.home), **PRIVATE_ENV},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = home.erasure / "pending.json"
    deadline = time.monotonic() + 120
    while not journal.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert journal.exists() and process.returncode == -signal.SIGKILL  # killed while the erasure was under way
    assert [e["status"] for e in read_ledger(home.erasure)] in ([], ["requested"])
    assert find_leaks(home.home, [pseudonym, MARKER])  # half done at most

    finished = cli(home, "forget", PLANTED)
    assert finished.returncode == 0, finished.stderr
    assert read_journal(home.erasure) == [] and find_leaks(home.home, [PLANTED, pseudonym, MARKER]) == []
    assert [e["status"] for e in read_ledger(home.erasure)] == ["requested", "completed"]
    assert "ease" in json.loads((home.erasure / "refit.json").read_text())["models"]  # the refit was not lost
