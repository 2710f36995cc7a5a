"""A real server on a free loopback port, over a bundle published into a temporary LLMREC_HOME."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from llmrec_platform.data.interactions import InteractionData
from llmrec_platform.paths import Paths
from llmrec_platform.rankers.ease import EASERanker
from llmrec_platform.serving.bundle import publish_bundle
from llmrec_platform.testing import item_genres, two_group_split, unit_embeddings

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def publish_tiny_bundle(home: Paths, reg_weight: float = 10.0, event_offset: int = 0) -> Path:
    """Two taste groups (users a00.. like i0-i5 "Comedy", b00.. like i6-i11 "Horror, Thriller"), EASE."""
    split = two_group_split()
    ease = EASERanker(reg_weight=reg_weight).fit(InteractionData.from_split(split))
    items = item_genres().assign(title=lambda f: "Film " + f["item_id"], text=lambda f: "text of " + f["item_id"])
    vectors = unit_embeddings(items["item_id"].tolist(), "item_id", seed=0)
    return publish_bundle(home.bundles, ease, items, vectors, split, {"event_offset": event_offset,
                          "data_fingerprint": "tiny", "encoder": None}, collab=ease)


@pytest.fixture
def tiny_home(tmp_path: Path) -> Paths:
    home = Paths(tmp_path / "home").ensure()
    publish_tiny_bundle(home)
    return home


def server_env(home: Paths, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMREC_")}
    return {**env, "LLMREC_HOME": str(home.home), **extra}


class Server:
    """`llmrec serve` in a child process (a real granian, or uvicorn, on 127.0.0.1)."""

    def __init__(self, home: Paths, workers: int = 1, port: int | None = None, server: str = "granian", **env: str):
        self.home, self.workers, self.server, self.env = home, workers, server, env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> Server:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "llmrec_platform.cli", "serve", "--port", str(self.port), "--workers", str(self.workers),
             "--server", self.server],
            cwd=REPO, env=server_env(self.home, **self.env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}: {self.process.stdout.read().decode()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not answer /health in time")

    def kill(self) -> None:
        os.killpg(self.process.pid, 9)
        self.process.wait()

    def stop(self) -> str:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.stdout.read().decode() if self.process is not None else ""


@pytest.fixture
def server(tiny_home: Paths):
    running = Server(tiny_home).start()
    yield running
    running.stop()


class InProcessServer:
    """uvicorn in a thread of the test process, for an app the test builds (e.g. with a test-only writer)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def log_frame(home: Paths) -> pd.DataFrame:
    from llmrec_platform.live.events import EventLog

    return EventLog(home.events).read(0).frame()
