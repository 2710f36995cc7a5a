"""Operations: health, the served version, Prometheus metrics and the web page (open, not rate-limited:
probes and scrapers call them, and they say nothing about a person)."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from llmrec_platform.serving.state import State

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health(state: State):
    return {"status": "ok", "events_applied": state.service.events_applied, "event_offset": state.service.offset}


@router.get("/version")
async def version(state: State):
    manifest = state.service.bundle.manifest
    return {key: manifest.get(key) for key in ("version", "champion", "challenger", "created_at", "data_fingerprint",
                                                "encoder", "test_metrics")}


@router.get("/metrics", response_class=PlainTextResponse)  # OpenAPI: text/plain (the Prometheus format), not JSON
async def prometheus(state: State):
    """This process's metrics; with `--workers N` (`llmrec serve` sets PROMETHEUS_MULTIPROC_DIR) every worker's,
    summed, whichever worker answers."""
    if state.settings.metrics_dir is None:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
    every_worker = CollectorRegistry()
    MultiProcessCollector(every_worker, path=str(state.settings.metrics_dir))
    return Response(generate_latest(every_worker), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page():
    return resources.files("llmrec_platform.serving").joinpath("page.html").read_text(encoding="utf-8")
