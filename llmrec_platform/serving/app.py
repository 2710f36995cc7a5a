"""The HTTP API (FastAPI): recommendations, live events, free-text queries, explanations, similar items.

`create_app(settings)` serves the bundle that `<LLMREC_HOME>/bundles/current` points at and follows it when
a new one is published (checked twice a second; the swap happens between requests, so none fails). Every
answer first catches up on the shared event log (`LiveService.catch_up`), so a client reads its own writes
through any worker. With pseudonymization on (LLMREC_PSEUDONYMIZE or the dataset config's `privacy`), every
user id a request names is mapped to its keyed pseudonym (`data.privacy`, the training data's key) before
the event log, the impression log, the audit log or the live histories see it; answers echo the id the client
sent. Access (scoped tokens, rate limits) is `auth.py`; the routes live in `routes/`, what they share in
`state.py`. OpenAPI is at /docs; the web page at /.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmrec_platform.serving.explain import Writer
from llmrec_platform.serving.metrics import BodyLimitAndLatency
from llmrec_platform.serving.routes import ROUTERS
from llmrec_platform.serving.schemas import FastJSONResponse
from llmrec_platform.serving.service import UnknownItemError
from llmrec_platform.serving.state import ServingState
from llmrec_platform.settings import Settings

log = logging.getLogger("llmrec.serving")


def create_app(settings: Settings | None = None, writer: Writer | None = None) -> FastAPI:
    """The app for `settings.home` (default: from the environment). `writer` overrides the explanation writer
    that settings choose (tests inject one)."""
    state = ServingState(settings or Settings.from_env(), writer)
    # FastAPI's native OpenTelemetry is off: the server's metrics are Prometheus's (/metrics), and asking the
    # OpenTelemetry providers whether they are configured cost 2 % of every request (py-spy).
    app = FastAPI(title="llmrec-platform", version="1", lifespan=state.running, default_response_class=FastJSONResponse,
                  telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
                  description="Live recommendations: events change the next list at once.")
    app.state.serving = state
    app.add_middleware(BodyLimitAndLatency, metrics=state.metrics)
    add_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app


def add_error_handlers(app: FastAPI) -> None:
    """Every error answers `{"detail": "<one message>"}`: never a stack trace."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return FastJSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return FastJSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(UnknownItemError)
    async def unknown_item(request: Request, exc: UnknownItemError):
        return FastJSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return FastJSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)
