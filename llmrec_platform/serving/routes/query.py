"""POST /query: items for a free-text need, personalised when a user is named."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException

from llmrec_platform.serving.auth import READ_RECOMMENDATIONS, require
from llmrec_platform.serving.schemas import FastJSONResponse, QueryIn, QueryOut, error_responses
from llmrec_platform.serving.state import State

router = APIRouter(tags=["query"], responses=error_responses(400, 401, 403, 413, 422, 429, 503))


@router.post("/query", dependencies=[Depends(require(READ_RECOMMENDATIONS))], response_model=QueryOut)
async def query(state: State, body: QueryIn):
    """Items for a free-text need (any language the encoder reads), personalised when a user is named."""
    try:
        encoder = await state.encoder
    except Exception as exc:
        raise HTTPException(503, f"free-text queries are unavailable: {exc}") from None
    vectors, _ = await asyncio.to_thread(encoder.encode, [body.text])
    user = None if body.user_id is None else state.stored_id(body.user_id)
    items, personal = state.service.query(vectors[0], user, body.k)
    return FastJSONResponse({"text": body.text, "user_id": body.user_id, "personalised": personal,
                             "model_version": state.service.bundle.version, "items": items})
