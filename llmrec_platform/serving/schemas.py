"""What the HTTP API accepts and answers: pydantic models, path and query types, the shape of its errors, and the
JSON response class (orjson).

The hot routes build their answer as plain dicts and return a `FastJSONResponse` themselves: FastAPI then skips
validating and re-encoding it (`jsonable_encoder`, 5 % of a request in a py-spy profile), while the route's
`response_model` still documents the body in OpenAPI (and the schemathesis fuzz tests check answers against it).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Literal

import orjson
from fastapi import Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.responses import JSONResponse

MAX_BODY_BYTES = 64 * 1024
MAX_TEXT_CHARS = 2000
MAX_TITLE_CHARS = 300
MAX_CATEGORIES = 20
ITEM_ID_PATTERN = r"^[^/\s\x00-\x1f\x7f-\x9f]+$"
NOT_BLANK = r"\S"
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
    # strict: a JSON number only (lax mode would take `false` as 0.0, which the OpenAPI schema says is invalid)
    value: float | None = Field(default=None, strict=True, description="the rating, for type=rate")
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


class ItemIn(BaseModel):
    """A catalogue item added live (`POST /items`): encoded on arrival and recommendable at once. The OpenAPI
    patterns say what the validators check (a fuzzer generates from them)."""
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, max_length=200, json_schema_extra={"pattern": ITEM_ID_PATTERN},
                         description="no '/', whitespace or control characters: it is a path segment of /items/{item_id}")
    title: str = Field(min_length=1, max_length=MAX_TITLE_CHARS, json_schema_extra={"pattern": NOT_BLANK})
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS, json_schema_extra={"pattern": NOT_BLANK},
                      description="what the item is about (it is encoded)")
    categories: list[str] = Field(default_factory=list, max_length=MAX_CATEGORIES, description="e.g. genres")

    @field_validator("title", "text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not re.search(NOT_BLANK, value):
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("item_id")
    @classmethod
    def _addressable(cls, value: str) -> str:
        if not re.fullmatch(ITEM_ID_PATTERN, value):
            raise ValueError("must not hold '/', whitespace or control characters (it is a path segment of "
                             "/items/{item_id})")
        return value

    @field_validator("categories")
    @classmethod
    def _categories(cls, values: list[str]) -> list[str]:
        if any(len(v) > MAX_TITLE_CHARS for v in values):
            raise ValueError(f"a category may hold at most {MAX_TITLE_CHARS} characters")
        return values


class FastJSONResponse(JSONResponse):
    """A JSON body encoded by orjson (faster than the standard library's `json` for these bodies)."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


class ScoredItemOut(BaseModel):
    item_id: str
    title: str
    score: float
    because: dict | None = Field(default=None, description="the evidence, with `explain=true`")


class RecommendationsOut(BaseModel):
    user_id: str
    model_version: str
    request_id: str
    ranker: str
    arm: str
    cold_start: bool
    items: list[ScoredItemOut]


class QueryOut(BaseModel):
    text: str
    user_id: str | None
    personalised: bool
    model_version: str
    items: list[ScoredItemOut]


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
    409: "a conflict: the home is in use by a pipeline run (an erasure waits for it to finish), or the item id is "
         "already in the catalogue (POST /items)",
    429: "over a rate limit; `Retry-After` says how many seconds to wait",
    503: "the feature is unavailable on this server (the message says why)",
}


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for the error codes a route can answer, all with the `ErrorOut` body."""
    return {code: {"model": ErrorOut, "description": ERROR_MEANINGS[code]} for code in codes}
