"""Catalogue routes: similar items (public: they say nothing about a person)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from llmrec_platform.serving.auth import require
from llmrec_platform.serving.schemas import ItemId, K, error_responses
from llmrec_platform.serving.state import State

router = APIRouter(tags=["items"], responses=error_responses(401, 404, 422, 429))


@router.get("/items/{item_id}/similar", dependencies=[Depends(require(None))])
async def similar(state: State, item_id: ItemId, k: K = 10):
    return {"item_id": item_id, "items": state.service.similar(item_id, k)}
