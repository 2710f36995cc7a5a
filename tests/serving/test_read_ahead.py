"""The body read ahead (`serving.metrics.ReadAhead`): a POST's body is asked for as the request arrives, and a body
complete by its Content-Length ends the app's reading without a wait for the server's empty closing message."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import json
import threading

import pytest

from llmrec_platform.serving.metrics import BodyLimitAndLatency, Metrics


class ServerFuture(asyncio.Future):
    """What granian's `receive()` returns: a future another thread settles (here a timer thread, ~1 ms later)."""


class FakeServer:
    """A server's `receive`: each call returns the next message, settled from another thread as granian's are;
    it records what was asked for."""

    def __init__(self, loop: asyncio.AbstractEventLoop, messages: list[dict]):
        self.loop, self.messages, self.asked = loop, list(messages), 0

    def receive(self):
        self.asked += 1
        future = ServerFuture(loop=self.loop)
        message = self.messages.pop(0) if self.messages else {"type": "http.disconnect"}
        threading.Timer(0.001, lambda: self.loop.call_soon_threadsafe(future.set_result, message)).start()
        return future


def scope(body_length: int | None) -> dict:
    headers = [(b"host", b"x"), (b"content-type", b"application/json")]
    if body_length is not None:
        headers.append((b"content-length", str(body_length).encode()))
    return {"type": "http", "method": "POST", "path": "/events", "headers": headers}


def run(coroutine_function):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_function())).result()


async def nothing(message):
    return None


def reading_app(seen: list):
    """An app that reads the body the way Starlette does: until `more_body` is false."""

    async def app(scope, receive, send):
        while True:
            message = await receive()
            seen.append(message)
            if not message.get("more_body", False):
                return

    return app


@pytest.mark.parametrize("chunks", [[b'{"a": 1}'], [b'{"a"', b": 1}"]])
def test_a_body_complete_by_its_length_ends_without_the_servers_closing_message(chunks):
    body = b"".join(chunks)

    async def go():
        loop = asyncio.get_running_loop()
        messages = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
        server = FakeServer(loop, messages + [{"type": "http.request", "body": b"", "more_body": False}])
        seen: list = []
        await BodyLimitAndLatency(reading_app(seen), Metrics())(scope(len(body)), server.receive, nothing)
        return seen, server.asked

    seen, asked = run(go)
    assert b"".join(m["body"] for m in seen) == body and json.loads(body) == {"a": 1}
    assert [m["more_body"] for m in seen] == [True] * (len(chunks) - 1) + [False]
    assert asked == len(chunks)  # granian's empty `more_body: False` message is never waited for


def test_the_body_is_asked_for_before_the_app_runs():
    async def go():
        loop = asyncio.get_running_loop()
        server = FakeServer(loop, [{"type": "http.request", "body": b"{}", "more_body": True}])
        asked_before = []

        async def app(scope, receive, send):
            asked_before.append(server.asked)
            await receive()

        await BodyLimitAndLatency(app, Metrics())(scope(2), server.receive, nothing)
        return asked_before, server.asked

    # The first message was asked for as the request arrived, before the app ran (granian's thread settles it
    # while the request waits, GIL released, up to READ_AHEAD_SECONDS), and it is the only one asked for.
    assert run(go) == ([1], 1)


@pytest.mark.filterwarnings("error")  # an unawaited coroutine's RuntimeWarning fails the test
def test_a_body_the_app_never_reads_leaves_no_unawaited_coroutine():
    """uvicorn's and Starlette's test client's `receive` are coroutine functions: one called ahead and never awaited
    (the app answered without reading, e.g. 404) is closed, not left to warn at garbage collection."""

    async def go():
        asked = []

        async def receive():
            asked.append(1)
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def app(scope, receive, send):
            return None

        await BodyLimitAndLatency(app, Metrics())(scope(2), receive, nothing)
        gc.collect()
        return asked

    assert run(go) == []  # created, closed, never run
