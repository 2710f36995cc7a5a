"""Per-user routes (/users/{user_id}/...): recommendations, history, explanations; every route that reads or
changes one person's data joins here (e.g. an erasure, `DELETE /users/{user_id}` with `require(ADMIN)`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from llmrec_platform.serving.auth import ADMIN, READ_HISTORY, READ_RECOMMENDATIONS, Principal, require
from llmrec_platform.serving.explain import guard, template_text
from llmrec_platform.serving.schemas import FastJSONResponse, ItemId, K, RecommendationsOut, UserId, error_responses
from llmrec_platform.serving.state import State

log = logging.getLogger("llmrec.serving")
router = APIRouter(tags=["users"], responses=error_responses(401, 403, 422, 429))


@router.get("/users/{user_id}/recommendations", response_model=RecommendationsOut)
async def recommendations(state: State, caller: Annotated[Principal, Depends(require(READ_RECOMMENDATIONS))],
                          user_id: UserId, k: K = 10, explain: bool = False):
    """Top-k from the champion over the user's history and live events; unknown users get a cold start.
    `explain=true` cites history items, so it needs read:history as well."""
    if explain:
        state.access.authorize(caller, READ_HISTORY)
    result = state.service.recommend(state.stored_id(user_id), k, explain)
    state.impressions.append(result.request_id, result.user_id, result.model_version, result.ranker, result.arm,
                             [item["item_id"] for item in result.items])
    return FastJSONResponse({"user_id": user_id, "model_version": result.model_version, "request_id": result.request_id,
                             "ranker": result.ranker, "arm": result.arm, "cold_start": result.cold_start,
                             "items": result.items})


@router.get("/users/{user_id}/history", dependencies=[Depends(require(READ_HISTORY))])
async def history(state: State, user_id: UserId):
    """The history the next list is computed from: the bundle's interactions, then live events."""
    live = state.service
    live.catch_up()
    return {"user_id": user_id, "items": [
        {"item_id": h.item_id, "rating": h.rating, "timestamp": h.timestamp, "event": h.event}
        for h in live.history(state.stored_id(user_id))]}


@router.get("/users/{user_id}/explanations/{item_id}", dependencies=[Depends(require(READ_HISTORY))],
            responses=error_responses(404))
async def explanation(state: State, user_id: UserId, item_id: ItemId):
    """One or two sentences on why `item_id` suits the user, from evidence only (never in the recommend path).
    The evidence cites the user's history, so this needs read:history."""
    live = state.service
    found = live.explain(state.stored_id(user_id), item_id)
    if found is None:
        return {"user_id": user_id, "item_id": item_id, "writer": "template", "text": "Popular with people like you.",
                "evidence": None}
    text, used = template_text(found), "template"
    if state.writer is not None:
        try:
            written = await asyncio.wait_for(asyncio.to_thread(state.writer, found), state.settings.explain_timeout)
        except TimeoutError:
            state.metrics.rejected.labels("timeout").inc()
        except Exception:
            log.exception("explanation writer failed")
            state.metrics.rejected.labels("error").inc()
        else:
            if guard(written, found, live.titles):
                text, used = written, state.settings.explainer
            else:
                state.metrics.rejected.labels("names_unsupported_title").inc()
    return {"user_id": user_id, "item_id": item_id, "writer": used, "text": text, "evidence": found.as_dict()}


@router.delete("/users/{user_id}", responses=error_responses(409))
async def erase(state: State, caller: Annotated[Principal, Depends(require(ADMIN))], user_id: UserId):
    """Erase the user everywhere the platform put them (what `llmrec forget` does: the warehouse, the logs, the
    bundles, the rankers, the caches, MLflow, Dagster); this server stops serving them at once. Idempotent: an
    id held nowhere answers `erased: false`. The audit log records the erasure by its tombstone, never the id."""
    from llmrec_platform.cli import CliError, home_lock
    from llmrec_platform.erasure import forget

    if not state.access.enforced:  # an open API (no token configured) erases no one
        raise HTTPException(403, "erasing a user needs an admin token: set LLMREC_API_TOKEN (or a token file entry "
                                 "with the admin scope) and send it as `Authorization: Bearer <token>`")

    def run():
        with home_lock(state.paths, "DELETE /users/{user_id}"):
            return forget(state.paths, [user_id], state.pseudonymizer)[0][user_id]

    try:
        report = await asyncio.to_thread(run)
    except CliError as exc:  # a pipeline run holds the home
        raise HTTPException(409, f"{exc}; the erasure did not start: try again when it has finished") from None
    state.service.drop_erased()
    await state.audit(caller, "DELETE /users/{user_id}", None, tombstone=report.tombstone)
    return {"user_id": user_id, "erased": report.held, "tombstone": report.tombstone, "refit": report.refit,
            "stores": report.stores}
