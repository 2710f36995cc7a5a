"""Catalogue routes: similar items (public: they say nothing about a person) and new items (`POST /items`,
behind the write:items scope)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from llmrec_platform.live.catalogue import CatalogueItem, clean_categories, encode_items
from llmrec_platform.serving.auth import WRITE_ITEMS, Principal, require
from llmrec_platform.serving.schemas import ItemId, ItemIn, K, error_responses
from llmrec_platform.serving.state import State

router = APIRouter(tags=["items"], responses=error_responses(401, 404, 422, 429))
# One POST /items at a time in a process, so two posts of one id cannot both pass the check. Across processes
# the items log's first line of an id wins (`CatalogueFollower`).
_adding = asyncio.Lock()


@router.get("/items/{item_id}/similar", dependencies=[Depends(require(None))])
async def similar(state: State, item_id: ItemId, k: K = 10):
    """The champion's similar items; for an item outside its item space (filtered, cold or added live), the
    catalogue items nearest in the language model's text space."""
    live = state.service
    live.catch_up()  # an item another process added a moment ago
    return {"item_id": item_id, "items": live.similar(item_id, k)}


@router.post("/items", status_code=201, responses=error_responses(400, 403, 409, 413, 503))
async def add_item(state: State, caller: Annotated[Principal, Depends(require(WRITE_ITEMS))], body: ItemIn):
    """Add an item to the catalogue without a retrain: encoded with the query encoder, appended durably to the
    items log (fsync before the 201), then recommendable, queryable and similar-searchable at once on every
    server process, and after a restart. An id the catalogue already holds answers 409 (items are not updated)."""
    try:
        encoder = await state.encoder
    except Exception as exc:
        raise HTTPException(503, f"new items are unavailable: {exc}") from None
    async with _adding:
        live = state.service
        live.catch_up()
        if body.item_id in live.item_position:
            raise HTTPException(409, f"item_id: {body.item_id!r} is already in the catalogue (an item is added once)")
        [item] = await asyncio.to_thread(encode_items, [CatalogueItem(
            body.item_id, body.title, body.text, clean_categories(body.categories))], encoder)
        await asyncio.to_thread(live.catalogue.log.append, [item])
        await state.audit(caller, "POST /items", None, item_id=item.item_id)
        live.catch_up()
    return {"item_id": item.item_id, "status": "added", "categories": list(item.categories),
            "encoder": item.encoder, "position": live.item_position[item.item_id]}
