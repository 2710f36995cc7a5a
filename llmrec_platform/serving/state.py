"""What every route shares: the live service over the served bundle, the logs, the explanation writer, the
query encoder, the access policy and the metrics. `create_app` builds one `ServingState`; a route takes it with
`Annotated[ServingState, Depends(serving_state)]` (the `State` alias).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
from typing import Annotated

from fastapi import Depends, Request

from llmrec_platform.data.config import config_pseudonymize
from llmrec_platform.data.privacy import pseudonymizer_for
from llmrec_platform.erasure.ledger import Tombstones
from llmrec_platform.live.catalogue import CatalogueFollower, ItemLog
from llmrec_platform.live.events import EventLog
from llmrec_platform.live.online import ImpressionLog
from llmrec_platform.serving.audit import AuditLog, AuditRecord
from llmrec_platform.serving.auth import AccessPolicy, Principal
from llmrec_platform.serving.bundle import BundleError, current_bundle, current_version, load_bundle
from llmrec_platform.serving.commit import Flush, GroupCommitLog
from llmrec_platform.serving.explain import Writer, local_writer, openai_writer
from llmrec_platform.serving.metrics import Metrics
from llmrec_platform.serving.service import LiveService
from llmrec_platform.settings import Settings

log = logging.getLogger("llmrec.serving")
RELOAD_SECONDS = 0.5
# The long-term refresher (`LiveService.refresh_stale`): users per batch, and the share of one core it may take
# (it sleeps 1/share - 1 times what a batch took), so that under load the requests keep the cores.
REFRESH_BATCH = 32
REFRESH_SHARE = 0.25
REFRESH_IDLE_SECONDS = 0.02


def build_writer(settings: Settings) -> Writer | None:
    if settings.explainer == "openai":
        return openai_writer(settings.openai_base_url, settings.openai_model, settings.openai_api_key or "",
                             settings.explain_timeout)
    if settings.explainer == "local":
        # Loaded on first use, off the event loop: until it is ready, requests time out to the template.
        load = functools.cache(lambda: local_writer(settings.explainer_model))
        return lambda evidence: load()(evidence)
    return None


class ServingState:
    def __init__(self, settings: Settings, writer: Writer | None = None):
        self.settings = settings
        self.paths = settings.paths
        self.metrics = Metrics()
        self.access = AccessPolicy.from_settings(settings)
        self.access.on_throttle = lambda kind: self.metrics.throttled.labels(kind).inc()
        self.audit_log = AuditLog(self.paths.audit)
        # The bundle's histories hold the training pseudonyms: a raw id must map onto the same one (same key).
        self.pseudonymizer = pseudonymizer_for(settings.pseudonymize or config_pseudonymize(settings.dataset),
                                               settings.pseudonym_key, f"privacy.pseudonymize in {settings.dataset}")
        self.writer = writer if writer is not None else build_writer(settings)
        self.service: LiveService
        self.commit: GroupCommitLog
        self.audit_commit = GroupCommitLog(self.audit_log)
        self.impressions: ImpressionLog
        self.encoder: asyncio.Future

    def stored_id(self, user_id: str) -> str:
        """The id the platform stores for a user id a client sends."""
        return user_id if self.pseudonymizer is None else self.pseudonymizer(user_id)

    async def audit(self, principal: Principal, action: str, user_id: str | None, **detail) -> None:
        """Append an audit record durably (group-committed like events); `user_id` as stored. An erasure passes
        None and the keyed hash of the id in `detail`, so the log never names whom it erased."""
        await self.audit_later(principal, action, user_id, **detail)

    def audit_later(self, principal: Principal, action: str, user_id: str | None, **detail) -> Flush:
        """`audit`, returning the flush that puts the record on disk (`GroupCommitLog.submit`: await it)."""
        return self.audit_commit.submit(AuditRecord(principal.name, action, user_id, detail))

    def new_service(self, version_path) -> LiveService:
        bundle = load_bundle(version_path)
        settings = self.settings
        # Erased users' events are left out of the log, and their live state is dropped at the next answer.
        log = EventLog(self.paths.events, erased=Tombstones(self.paths.erasure))
        service = LiveService(bundle, log, dict(settings.event_weights), settings.short_term,
                              settings.challenger_share, settings.query_user_weight, refresh=settings.long_term_refresh,
                              ann_min_items=settings.ann_min_items)
        # Items added live (POST /items, landed item files) join every service, replayed from the items log.
        service.catalogue = CatalogueFollower(ItemLog(self.paths.events))
        service.catch_up()
        service.prepare_lists()
        return service

    def install(self, service: LiveService) -> None:
        self.service = service
        freeze_heap()
        self.metrics.bundle.clear()
        self.metrics.bundle.labels(service.bundle.version, service.bundle.manifest["champion"]).set(1)

    async def follow_bundles(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            version = current_version(self.paths.bundles)
            if version is None or version == self.service.bundle.version:
                continue
            try:
                self.install(await asyncio.to_thread(self.new_service, current_bundle(self.paths.bundles)))
                log.info("now serving bundle %s", version)
            except Exception:  # a broken bundle never takes the server down: keep serving the old one
                log.exception("could not load bundle %s; still serving %s", version, self.service.bundle.version)

    def load_encoder(self):
        name = self.service.bundle.manifest.get("encoder")
        if not name:
            raise BundleError("this bundle has no item embeddings, so it cannot answer free-text queries")
        import torch

        from llmrec_platform.encoders.models import TextEncoder

        torch.set_num_threads(1)  # one short text per request: more threads only contend with the other requests
        return TextEncoder(name, device="cpu", batch_size=1)

    async def refresh_long_term(self) -> None:
        """Recompute stale users' long-term fold-ins in a worker thread, within `REFRESH_SHARE` of one core."""
        while True:
            service = self.service
            users = service.take_stale(REFRESH_BATCH)
            if not users:
                await asyncio.sleep(REFRESH_IDLE_SECONDS)
                continue
            try:
                took = await asyncio.to_thread(service.refresh_stale, users)
            except Exception:  # the older fold-in keeps serving; the user's next list marks them stale again
                log.exception("could not refresh the long-term channel of %d users", len(users))
                took = REFRESH_IDLE_SECONDS
            else:
                self.metrics.long_term_refreshed.inc(len(users))
            await asyncio.sleep(took * (1 / REFRESH_SHARE - 1))

    @contextlib.asynccontextmanager
    async def running(self, app=None):
        """The app's lifespan: load the current bundle, warm the encoder, follow new bundles until shutdown."""
        self.install(self.new_service(current_bundle(self.paths.bundles)))
        self.commit = GroupCommitLog(self.service.log, on_flush=self.metrics.fsync_batch.observe)
        self.impressions = ImpressionLog(self.paths.events)
        self.encoder = asyncio.get_running_loop().run_in_executor(None, self.load_encoder)  # warm in the background
        # A failure is answered by /query (503); retrieving it here keeps asyncio from warning at exit.
        self.encoder.add_done_callback(lambda done: done.cancelled() or done.exception())
        freeze_heap()
        self.encoder.add_done_callback(lambda _: freeze_heap())  # torch and the encoder: a million more objects
        tasks = [asyncio.create_task(self.follow_bundles()), asyncio.create_task(self.refresh_long_term())]
        yield
        for task in tasks:
            task.cancel()


def freeze_heap() -> None:
    """Move every object alive now (the libraries, the bundle, the encoder) out of the garbage collector's reach:
    a full collection otherwise walks them all, a pause of tens of milliseconds in the middle of a request (the
    p99). What a request allocates is collected as usual; frozen objects are still freed by reference counting
    (only cycles among a replaced bundle's objects stay)."""
    gc.collect()
    gc.freeze()


async def serving_state(request: Request) -> ServingState:  # async: a plain def would run in the thread pool
    return request.app.state.serving


State = Annotated[ServingState, Depends(serving_state)]
