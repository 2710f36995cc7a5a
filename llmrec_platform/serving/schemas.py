"""What the HTTP API accepts and the shape of its errors (pydantic models, path and query types)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 2000
UserId = Annotated[str, Path(min_length=1, max_length=200)]
ItemId = Annotated[str, Path(min_length=1, max_length=200)]
K = Annotated[int, Query(ge=1, le=1000)]


MAX_EPOCH = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second a date can name


def parse_timestamp(value: int | str) -> int:
    """Epoch seconds from an int or an ISO 8601 string (a zone-less one is UTC), within 1970..9999: one event
    outside them (a 400-digit number, a date before 1970) would break every later read of the event log."""
    if isinstance(value, int):
        seconds = value
    elif (text := value.strip()).isascii() and text.isdigit():
        seconds = int(text) if len(text) <= 20 else MAX_EPOCH + 1
    else:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"timestamp {value!r} is neither epoch seconds nor ISO 8601") from None
        seconds = int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp())
    if not 0 <= seconds <= MAX_EPOCH:
        raise ValueError(f"timestamp must be epoch seconds from 0 to {MAX_EPOCH} (1970 to 9999)")
    return seconds


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


class ErrorOut(BaseModel):
    """Every 4xx/5xx body: one message that says what was wrong (never a stack trace)."""
    detail: str


ERROR_MEANINGS = {
    400: "a body that cannot be parsed at all (e.g. bytes that are not UTF-8 under `application/json`)",
    401: "no token, a malformed `Authorization` header, or a token the server does not know",
    403: "the token lacks the scope this route needs (the message names it)",
    404: "an item the served catalogue does not hold",
    413: f"a request body over {MAX_BODY_BYTES} bytes",
    422: "a parameter or body field is invalid (the message names it)",
    409: "the home is in use by a pipeline run (an erasure waits for it to finish)",
    429: "over a rate limit; `Retry-After` says how many seconds to wait",
    503: "the feature is unavailable on this server (the message says why)",
}


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for the error codes a route can answer, all with the `ErrorOut` body."""
    return {code: {"model": ErrorOut, "description": ERROR_MEANINGS[code]} for code in codes}
