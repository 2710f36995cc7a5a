"""Prometheus metrics of the server, and the one ASGI middleware: the body-size limit and request latency.

A pure ASGI middleware rather than `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware` runs every
request through an extra task and memory stream pair, which a py-spy profile of the server found costly.
"""

from __future__ import annotations

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
        if length is None:
            receive = counting_receive(receive)
        start = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            self.metrics.latency.labels(getattr(route, "path", "unmatched"), scope["method"]).observe(
                time.perf_counter() - start)


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
