"""POST /events: live events, appended durably; the user's next list reflects them."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException

from llmrec_platform.live.events import Event
from llmrec_platform.serving.auth import WRITE_EVENTS, Principal, require
from llmrec_platform.serving.commit import wait_inline
from llmrec_platform.serving.schemas import EventIn, error_responses
from llmrec_platform.serving.service import UnknownItemError
from llmrec_platform.serving.state import State

router = APIRouter(tags=["events"], responses=error_responses(400, 401, 403, 404, 413, 422, 429))


@router.post("/events", status_code=202)
async def events(state: State, caller: Annotated[Principal, Depends(require(WRITE_EVENTS))], event: EventIn):
    """Append an event durably (fsync of the event log and the audit log before the 202); the user's next list
    reflects it."""
    live = state.service
    try:
        live.check_item(event.item_id)
    except UnknownItemError:  # perhaps an item another process added a moment ago: read the items log, then decide
        live.catch_up()
        live.check_item(event.item_id)
    if event.type == "rate" and event.value is None:
        raise HTTPException(422, "value: a `rate` event needs the rating as `value`")
    stored = Event(user_id=state.stored_id(event.user_id), item_id=event.item_id, event_type=event.type,
                   value=1.0 if event.value is None else float(event.value),
                   timestamp=event.timestamp if event.timestamp is not None else int(time.time()),
                   request_id=event.request_id)
    # The two fsyncs run side by side (a 202 means both are on disk): in sequence they would double the latency.
    # On a fast disk both settle within this request's turn of the event loop (`wait_inline`), not turns later.
    written = state.commit.submit(stored)
    audited = state.audit_later(caller, "POST /events", stored.user_id, event_id=stored.event_id)
    wait_inline([(state.commit, written), (state.audit_commit, audited)])
    try:
        await written
    finally:
        await audited
    state.metrics.events.inc()
    live.catch_up()
    return {"event_id": stored.event_id, "status": "accepted"}
