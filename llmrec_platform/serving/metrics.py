"""Prometheus metrics of the server, and the one ASGI middleware: the body-size limit, the body read ahead and
request latency.

A pure ASGI middleware rather than `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware` runs every
request through an extra task and memory stream pair, which a py-spy profile of the server found costly.

Why the body is read ahead (`ReadAhead`): on granian every `await receive()` is a future settled from a Rust
thread, so a POST waited two extra turns of the event loop for its body (one for the chunk, one for the empty
`more_body=False` message after it). Under the 80/20 load a turn is every queued request's scoring (16 clients x
~1 ms): measured in the server, each wait took 9 ms at p50 and a POST /events spent 23.5 ms in the app against a
GET's 1.1 ms. The middleware now asks for the body as soon as the request arrives and lets the Rust thread settle it
(the GIL released for at most `READ_AHEAD_SECONDS`); a body complete by its Content-Length ends there, without
waiting for the empty message.
"""

from __future__ import annotations

import inspect
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llmrec_platform.serving.schemas import MAX_BODY_BYTES


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Histogram("llmrec_request_seconds", "request latency", ["route", "method"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.events = Counter("llmrec_events_appended", "events appended to the log", registry=self.registry)
        self.fsync_batch = Histogram("llmrec_fsync_batch_events", "events written per fsync (group commit)",
                                     registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        # With several workers (multiprocess mode) the highest value over the live workers: 1 while any serves it.
        self.bundle = BundleGauge("llmrec_bundle_info", "the served bundle", ["version", "champion"], registry=self.registry,
                            multiprocess_mode="livemax")
        self.rejected = Counter("llmrec_explanations_rejected", "generated explanations replaced by the template",
                                ["reason"], registry=self.registry)
        self.long_term_refreshed = Counter("llmrec_long_term_refreshed_users",
                                           "users whose long-term fold-in was recomputed after their history changed",
                                           registry=self.registry)
        self.throttled = Counter("llmrec_requests_throttled", "requests answered 429 (over a rate limit)", ["limit"],
                                 registry=self.registry)


def use_multiprocess_values() -> None:
    """Metrics created from now on in this process write to the multiprocess folder (PROMETHEUS_MULTIPROC_DIR).
    prometheus_client picks its value class when it is imported: a worker forked from a parent that imported it
    before `llmrec serve` set the folder (granian's workers) would otherwise keep counting only for itself."""
    from prometheus_client import values

    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


class BundleGauge(Gauge):
    """A gauge whose `clear()` first sets every series to 0: in multiprocess mode the series live on in the
    worker's file after `clear()`, and the version served before would stay at 1."""

    def clear(self) -> None:
        with self._lock:
            children = list(self._metrics.values())
        for child in children:
            child.set(0)
        super().clear()


def body_too_large() -> HTTPException:
    return HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")


class BodyLimitAndLatency:
    """Refuses a body over `MAX_BODY_BYTES` (by its Content-Length, or while a chunked one streams in) and
    records each request's latency under its route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            error = body_too_large()
            await JSONResponse({"detail": error.detail}, status_code=error.status_code)(scope, receive, send)
            return
        start = time.perf_counter()
        if length is None:
            receive = counting_receive(receive)
        elif int(length) > 0:
            receive = ReadAhead(receive, int(length))
        try:
            await self.app(scope, receive, send)
        finally:
            if isinstance(receive, ReadAhead):
                receive.close()
            route = scope.get("route")
            self.metrics.latency.labels(getattr(route, "path", "unmatched"), scope["method"]).observe(
                time.perf_counter() - start)


READ_AHEAD_SECONDS = 0.001  # the longest a request blocks its event loop for its body to arrive (it takes ~0.1 ms)
READ_AHEAD_POLL_SECONDS = 0.00005


class ReadAhead:
    """`receive` for a request with a body of `length` bytes: the first message is asked for now (see the module's
    note) and the request waits up to `READ_AHEAD_SECONDS` for it, releasing the GIL; once `length` bytes have come,
    the message that carries the last of them says `more_body: False`, so the app does not wait a turn for the
    server's empty closing message. Any later call goes to the server's `receive` (e.g. for `http.disconnect`)."""

    def __init__(self, receive: Receive, length: int):
        self.receive = receive
        self.remaining = length
        self.pending = receive()
        done = getattr(self.pending, "done", None)  # granian's future; uvicorn's receive is a plain coroutine
        if done is not None:
            deadline = time.perf_counter() + READ_AHEAD_SECONDS
            while not done() and time.perf_counter() < deadline:
                time.sleep(READ_AHEAD_POLL_SECONDS)

    async def __call__(self) -> Message:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            message = await pending
        else:
            message = await self.receive()
        if message["type"] == "http.request" and self.remaining > 0:
            self.remaining -= len(message.get("body", b""))
            if self.remaining <= 0 and message.get("more_body", False):
                message = {**message, "more_body": False}
        return message

    def close(self) -> None:
        """Drop a first message the app never asked for (a coroutine left unawaited would warn)."""
        if self.pending is not None and inspect.iscoroutine(self.pending):
            self.pending.close()
        self.pending = None


def counting_receive(receive: Receive) -> Receive:
    """`receive` that raises 413 once a streamed (chunked) body passes the limit; FastAPI lets an
    HTTPException raised while it reads the body through to the error handler."""
    received = 0

    async def limited() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                raise body_too_large()
        return message

    return limited
