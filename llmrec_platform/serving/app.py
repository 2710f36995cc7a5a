"""The HTTP API (FastAPI): recommendations, live events, free-text queries, explanations, similar items.

`create_app(settings)` serves the bundle that `<LLMREC_HOME>/bundles/current` points at and follows it when
a new one is published (checked twice a second; the swap happens between requests, so none fails). Every
answer first catches up on the shared event log (`LiveService.catch_up`), so a client reads its own writes
through any worker. With pseudonymization on (LLMREC_PSEUDONYMIZE or the dataset config's `privacy`), every
user id a request names is mapped to its keyed pseudonym (`data.privacy`, the training data's key) before
the event log, the impression log or the live histories see it; answers echo the id the client sent.
OpenAPI is at /docs; the web page at /.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from llmrec_platform.data.config import config_pseudonymize
from llmrec_platform.data.privacy import pseudonymizer_for
from llmrec_platform.live.events import Event, EventLog
from llmrec_platform.live.online import ImpressionLog
from llmrec_platform.serving.bundle import BundleError, current_bundle, current_version, load_bundle
from llmrec_platform.serving.commit import GroupCommitLog
from llmrec_platform.serving.explain import Writer, guard, local_writer, openai_writer, template_text
from llmrec_platform.serving.service import LiveService, UnknownItemError
from llmrec_platform.settings import Settings

log = logging.getLogger("llmrec.serving")
MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 2000
RELOAD_SECONDS = 0.5
UserId = Annotated[str, Path(min_length=1, max_length=200)]
ItemId = Annotated[str, Path(min_length=1, max_length=200)]
K = Annotated[int, Query(ge=1, le=1000)]


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=200)
    item_id: str = Field(min_length=1, max_length=200)
    type: Literal["view", "click", "favorite", "rate"]
    value: float | None = Field(default=None, description="the rating, for type=rate")
    timestamp: int | str | None = Field(default=None, description="epoch seconds or ISO 8601; default: now")
    request_id: str | None = Field(default=None, max_length=64, description="the recommendation response it answers")

    @field_validator("value")
    @classmethod
    def _finite(cls, value):
        if value is not None and not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value

    @field_validator("timestamp")
    @classmethod
    def _epoch(cls, value):
        return None if value is None else parse_timestamp(value)


class QueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    user_id: str | None = Field(default=None, min_length=1, max_length=200)
    k: int = Field(default=10, ge=1, le=1000)


def parse_timestamp(value: int | str) -> int:
    """Epoch seconds from an int or an ISO 8601 string (a zone-less one is UTC)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("timestamp must be non-negative epoch seconds")
        return value
    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {value!r} is neither epoch seconds nor ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp())


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.latency = Histogram("llmrec_request_seconds", "request latency", ["route", "method"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
        self.events = Counter("llmrec_events_appended", "events appended to the log", registry=self.registry)
        self.fsync_batch = Histogram("llmrec_fsync_batch_events", "events written per fsync (group commit)",
                                     registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.bundle = Gauge("llmrec_bundle_info", "the served bundle", ["version", "champion"], registry=self.registry)
        self.rejected = Counter("llmrec_explanations_rejected", "generated explanations replaced by the template",
                                ["reason"], registry=self.registry)


def build_writer(settings: Settings) -> Writer | None:
    if settings.explainer == "openai":
        return openai_writer(settings.openai_base_url, settings.openai_model, settings.openai_api_key or "",
                             settings.explain_timeout)
    if settings.explainer == "local":
        # Loaded on first use, off the event loop: until it is ready, requests time out to the template.
        load = functools.cache(lambda: local_writer(settings.explainer_model))
        return lambda evidence: load()(evidence)
    return None


def create_app(settings: Settings | None = None, writer: Writer | None = None) -> FastAPI:
    """The app for `settings.home` (default: from the environment). `writer` overrides the explanation writer
    that settings choose (tests inject one)."""
    settings = settings or Settings.from_env()
    paths = settings.paths
    metrics = Metrics()
    state: dict = {}
    # The bundle's histories hold the training pseudonyms: a raw id must map onto the same one (same key).
    pseudonymizer = pseudonymizer_for(settings.pseudonymize or config_pseudonymize(settings.dataset),
                                      settings.pseudonym_key, f"privacy.pseudonymize in {settings.dataset}")

    def stored_id(user_id: str) -> str:
        """The id the platform stores for a user id a client sends."""
        return user_id if pseudonymizer is None else pseudonymizer(user_id)

    def new_service(version_path) -> LiveService:
        bundle = load_bundle(version_path)
        return LiveService(bundle, EventLog(paths.events), dict(settings.event_weights), settings.short_term,
                           settings.challenger_share, settings.query_user_weight)

    def install(service: LiveService) -> None:
        state["service"] = service
        metrics.bundle.clear()
        metrics.bundle.labels(service.bundle.version, service.bundle.manifest["champion"]).set(1)

    async def follow_bundles():
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            version = current_version(paths.bundles)
            if version is None or version == state["service"].bundle.version:
                continue
            try:
                install(await asyncio.to_thread(new_service, current_bundle(paths.bundles)))
                log.info("now serving bundle %s", version)
            except Exception:  # a broken bundle never takes the server down: keep serving the old one
                log.exception("could not load bundle %s; still serving %s", version, state["service"].bundle.version)

    def load_encoder():
        name = state["service"].bundle.manifest.get("encoder")
        if not name:
            raise BundleError("this bundle has no item embeddings, so it cannot answer free-text queries")
        import torch

        from llmrec_platform.encoders.models import TextEncoder

        torch.set_num_threads(1)  # one short text per request: more threads only contend with the other requests
        return TextEncoder(name, device="cpu", batch_size=1)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        install(new_service(current_bundle(paths.bundles)))
        state["commit"] = GroupCommitLog(state["service"].log, on_flush=metrics.fsync_batch.observe)
        state["impressions"] = ImpressionLog(paths.events)
        state["writer"] = writer if writer is not None else build_writer(settings)
        state["encoder"] = asyncio.get_running_loop().run_in_executor(None, load_encoder)  # warm in the background
        follower = asyncio.create_task(follow_bundles())
        yield
        follower.cancel()

    app = FastAPI(title="llmrec-platform", version="1", lifespan=lifespan,
                  description="Live recommendations: events change the next list at once.")

    @app.middleware("http")
    async def limits_and_latency(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse({"detail": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.latency.labels(getattr(route, "path", "unmatched"), request.method).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
            message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
            problems.append(f"{where}: {message}" if where else message)
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(UnknownItemError)
    async def unknown_item(request: Request, exc: UnknownItemError):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)

    def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.api_token and authorization != f"Bearer {settings.api_token}":
            raise HTTPException(401, "this server requires `Authorization: Bearer <LLMREC_API_TOKEN>` on POST requests",
                                headers={"WWW-Authenticate": "Bearer"})

    def service() -> LiveService:
        return state["service"]

    @app.get("/users/{user_id}/recommendations")
    async def recommendations(user_id: UserId, k: K = 10, explain: bool = False):
        """Top-k from the champion over the user's history and live events; unknown users get a cold start."""
        live = service()
        result = live.recommend(stored_id(user_id), k, explain)
        state["impressions"].append(result.request_id, result.user_id, result.model_version, result.ranker, result.arm,
                                    [item["item_id"] for item in result.items])
        return {"user_id": user_id, "model_version": result.model_version, "request_id": result.request_id,
                "ranker": result.ranker, "arm": result.arm, "cold_start": result.cold_start, "items": result.items}

    @app.get("/users/{user_id}/history")
    async def history(user_id: UserId):
        """The history the next list is computed from: the bundle's interactions, then live events."""
        live = service()
        live.catch_up()
        return {"user_id": user_id, "items": [
            {"item_id": h.item_id, "rating": h.rating, "timestamp": h.timestamp, "event": h.event}
            for h in live.history(stored_id(user_id))]}

    @app.post("/events", status_code=202, dependencies=[Depends(authorized)])
    async def events(event: EventIn):
        """Append an event durably (fsync before the 202); the user's next list reflects it."""
        live = service()
        live.check_item(event.item_id)
        if event.type == "rate" and event.value is None:
            raise HTTPException(422, "value: a `rate` event needs the rating as `value`")
        stored = Event(user_id=stored_id(event.user_id), item_id=event.item_id, event_type=event.type,
                       value=1.0 if event.value is None else float(event.value),
                       timestamp=event.timestamp if event.timestamp is not None else int(time.time()),
                       request_id=event.request_id)
        await state["commit"].append(stored)
        metrics.events.inc()
        live.catch_up()
        return {"event_id": stored.event_id, "status": "accepted"}

    @app.post("/query", dependencies=[Depends(authorized)])
    async def query(body: QueryIn):
        """Items for a free-text need (any language the encoder reads), personalised when a user is named."""
        try:
            encoder = await state["encoder"]
        except Exception as exc:
            raise HTTPException(503, f"free-text queries are unavailable: {exc}") from None
        vectors, _ = await asyncio.to_thread(encoder.encode, [body.text])
        user = None if body.user_id is None else stored_id(body.user_id)
        items, personal = service().query(vectors[0], user, body.k)
        return {"text": body.text, "user_id": body.user_id, "personalised": personal,
                "model_version": service().bundle.version, "items": items}

    @app.get("/items/{item_id}/similar")
    async def similar(item_id: ItemId, k: K = 10):
        return {"item_id": item_id, "items": service().similar(item_id, k)}

    @app.get("/users/{user_id}/explanations/{item_id}")
    async def explanation(user_id: UserId, item_id: ItemId):
        """One or two sentences on why `item_id` suits the user, from evidence only (never in the recommend path)."""
        live = service()
        found = live.explain(stored_id(user_id), item_id)
        if found is None:
            return {"user_id": user_id, "item_id": item_id, "writer": "template", "text": "Popular with people like you.",
                    "evidence": None}
        text, used = template_text(found), "template"
        if state["writer"] is not None:
            try:
                written = await asyncio.wait_for(asyncio.to_thread(state["writer"], found), settings.explain_timeout)
            except TimeoutError:
                metrics.rejected.labels("timeout").inc()
            except Exception:
                log.exception("explanation writer failed")
                metrics.rejected.labels("error").inc()
            else:
                if guard(written, found, live.titles):
                    text, used = written, settings.explainer
                else:
                    metrics.rejected.labels("names_unsupported_title").inc()
        return {"user_id": user_id, "item_id": item_id, "writer": used, "text": text, "evidence": found.as_dict()}

    @app.get("/health")
    async def health():
        return {"status": "ok", "events_applied": service().events_applied, "event_offset": service().offset}

    @app.get("/version")
    async def version():
        manifest = service().bundle.manifest
        return {key: manifest.get(key) for key in ("version", "champion", "challenger", "created_at", "data_fingerprint",
                                                    "encoder", "test_metrics")}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return resources.files("llmrec_platform.serving").joinpath("page.html").read_text(encoding="utf-8")

    return app


def app_from_env() -> FastAPI:
    """The uvicorn factory (`--workers N` imports it in each worker process)."""
    from llmrec_platform.serving.server import limit_threads

    limit_threads()
    return create_app(Settings.from_env())

