"""Who may call what: bearer tokens with scopes, and rate limits per token and per client address.

Tokens come from LLMREC_API_TOKEN (the admin token, named `LLMREC_API_TOKEN` in the audit log) and from
the token file LLMREC_API_TOKENS_FILE (YAML or JSON, see `load_token_file`). With no token configured the
API is open, as it always was. Once any token is configured:
  - a route that needs a scope answers 401 without a well-formed, known token and 403 when the token lacks
    the scope (the message names it); `admin` holds every scope;
  - recommendations (and free-text queries) are public only if LLMREC_PUBLIC_RECOMMENDATIONS says so.
A malformed or unknown token is a 401 on every route that checks access, public ones included.
Only a SHA-256 digest of each token is kept; a presented token's digest is compared with every configured one
by `hmac.compare_digest` (no early exit), and no token is ever logged or echoed.

Rate limits (the `limits` package, moving window, in memory per server process): LLMREC_RATE_LIMIT_TOKEN per
token (a token file entry's `rate_limit` overrides it), LLMREC_RATE_LIMIT_ADDRESS per client address. Over a
limit: 429 with `Retry-After` (seconds).

`require(scope)` is the FastAPI dependency a route declares (`None`: public, rate-limited only); it returns the
caller's `Principal`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPBearer
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from llmrec_platform.settings import Settings, SettingsError

READ_RECOMMENDATIONS = "read:recommendations"
READ_HISTORY = "read:history"
WRITE_EVENTS = "write:events"
WRITE_ITEMS = "write:items"
ADMIN = "admin"
SCOPES = (READ_RECOMMENDATIONS, READ_HISTORY, WRITE_EVENTS, WRITE_ITEMS, ADMIN)
ENV_TOKEN_NAME = "LLMREC_API_TOKEN"
ANONYMOUS = "anonymous"
MAX_TOKEN_CHARS = 512
TOKEN_SOURCES = "a token from LLMREC_API_TOKEN or LLMREC_API_TOKENS_FILE"


class TokenFileError(SettingsError):
    """The token file is malformed; the message names the file, the entry and the field."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and scopes (`anonymous` without a token)."""
    name: str
    scopes: frozenset[str]
    rate_limits: tuple[RateLimitItem, ...] | None = None  # None: LLMREC_RATE_LIMIT_TOKEN

    def holds(self, scope: str) -> bool:
        return ADMIN in self.scopes or scope in self.scopes


OPEN = Principal(ANONYMOUS, frozenset(SCOPES))  # every caller, on a server without tokens
ANONYMOUS_CALLER = Principal(ANONYMOUS, frozenset())


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def rate_limits(text: str, where: str, error: type[SettingsError] = SettingsError) -> tuple[RateLimitItem, ...]:
    """`10/second;600/minute` -> limit items; `where` names the setting in the error."""
    try:
        return tuple(parse_many(text))
    except ValueError:
        raise error(f"{where}={text!r}: expected limits such as 10/second;600/minute") from None


def load_token_file(path: Path) -> list[tuple[bytes, Principal]]:
    """(digest, principal) per entry of a token file: a mapping of names to entries such as

        web-frontend:
          token: "a long random string"        # or sha256: "<hex digest of the token>"
          scopes: [read:recommendations]
          rate_limit: "20/second"               # optional; overrides LLMREC_RATE_LIMIT_TOKEN
    """
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TokenFileError(f"token file {path}: cannot be read as YAML or JSON ({str(exc).splitlines()[0]})") from None
    if not isinstance(document, dict) or not document:
        raise TokenFileError(f"token file {path}: expected a mapping of token names to entries with `token` and `scopes`")
    entries = []
    for name, entry in document.items():
        where = f"token file {path}, entry {name!r}"
        if not isinstance(name, str) or not name.strip() or name in (ENV_TOKEN_NAME, ANONYMOUS):
            raise TokenFileError(f"{where}: the name must be a non-empty string other than {ENV_TOKEN_NAME} and {ANONYMOUS}")
        if not isinstance(entry, dict) or set(entry) - {"token", "sha256", "scopes", "rate_limit"}:
            raise TokenFileError(f"{where}: expected the fields token (or sha256), scopes and optionally rate_limit")
        token, digest = entry.get("token"), entry.get("sha256")
        if (token is None) == (digest is None):
            raise TokenFileError(f"{where}: give exactly one of `token` and `sha256`")
        if token is not None and not (isinstance(token, str) and well_formed(token)):
            raise TokenFileError(f"{where}, field token: 1-{MAX_TOKEN_CHARS} printable characters without spaces")
        if digest is not None:
            try:
                raw = bytes.fromhex(str(digest))
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise TokenFileError(f"{where}, field sha256: expected 64 hex digits (the SHA-256 of the token)")
        scopes = entry.get("scopes")
        if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
            raise TokenFileError(f"{where}, field scopes: a list of one or more of {', '.join(SCOPES)}")
        limit = entry.get("rate_limit")
        limits = None if limit is None else rate_limits(str(limit), f"{where}, field rate_limit", TokenFileError)
        entries.append((token_digest(token) if token is not None else raw, Principal(name, frozenset(scopes), limits)))
    if len({d for d, _ in entries}) != len(entries):
        raise TokenFileError(f"token file {path}: two entries hold the same token")
    return entries


def well_formed(token: str) -> bool:
    return 0 < len(token) <= MAX_TOKEN_CHARS and token.isprintable() and not any(c.isspace() for c in token)


class AccessPolicy:
    def __init__(self, tokens: list[tuple[bytes, Principal]], public_recommendations: bool = False,
                 token_limits: tuple[RateLimitItem, ...] = (), address_limits: tuple[RateLimitItem, ...] = ()):
        self.tokens = tokens
        self.public_scopes = frozenset({READ_RECOMMENDATIONS} if public_recommendations else ())
        self.token_limits = token_limits
        self.address_limits = address_limits
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.on_throttle: Callable[[str], None] | None = None  # called with "token" or "address" (the 429 metric)

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        tokens = [] if settings.api_tokens_file is None else load_token_file(settings.api_tokens_file)
        if settings.api_token is not None:
            tokens.append((token_digest(settings.api_token), Principal(ENV_TOKEN_NAME, frozenset({ADMIN}))))
        return cls(tokens, settings.public_recommendations,
                   rate_limits(settings.rate_limit_token, "LLMREC_RATE_LIMIT_TOKEN") if settings.rate_limit_token else (),
                   rate_limits(settings.rate_limit_address, "LLMREC_RATE_LIMIT_ADDRESS") if settings.rate_limit_address
                   else ())

    @property
    def enforced(self) -> bool:
        return bool(self.tokens)

    def identify(self, authorization: str | None) -> Principal:
        """The caller an `Authorization` header names; 401 for a malformed or unknown token."""
        if not self.enforced:
            return OPEN
        if authorization is None:
            return ANONYMOUS_CALLER
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not well_formed(token):
            raise unauthorized("malformed Authorization header: send `Authorization: Bearer <token>`")
        digest = token_digest(token)
        found = None
        for known, principal in self.tokens:  # every comparison runs: the time does not say which one matched
            if hmac.compare_digest(digest, known):
                found = principal
        if found is None:
            raise unauthorized(f"unknown token: send {TOKEN_SOURCES}")
        return found

    def authorize(self, principal: Principal, scope: str | None) -> None:
        if scope is None or scope in self.public_scopes or principal.holds(scope):
            return
        if principal is ANONYMOUS_CALLER:
            raise unauthorized(f"this route needs the scope {scope}: send `Authorization: Bearer <token>` with {TOKEN_SOURCES}")
        raise HTTPException(403, f"token {principal.name!r} lacks the scope {scope} that this route needs",
                            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})

    def throttle_address(self, address: str) -> None:
        """429 with Retry-After once the client address is over its limit (checked before the token, so a
        client guessing tokens is limited too)."""
        self._hit("address", address, self.address_limits)

    def throttle_token(self, principal: Principal) -> None:
        """429 with Retry-After once the caller's token is over its limit."""
        if principal.name != ANONYMOUS:
            self._hit("token", principal.name, self.token_limits if principal.rate_limits is None else principal.rate_limits)

    def _hit(self, kind: str, key: str, limits: tuple[RateLimitItem, ...]) -> None:
        for limit in limits:
            if not self.limiter.hit(limit, kind, key):
                if self.on_throttle is not None:
                    self.on_throttle(kind)
                reset = self.limiter.get_window_stats(limit, kind, key).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                who = f"token {key!r}" if kind == "token" else "this client address"
                raise HTTPException(429, f"rate limit {limit} for {who} exceeded; retry after {wait} s",
                                    headers={"Retry-After": str(wait)})


def unauthorized(message: str) -> HTTPException:
    return HTTPException(401, message, headers={"WWW-Authenticate": "Bearer"})


bearer = HTTPBearer(auto_error=False, description=f"`Authorization: Bearer <token>`, {TOKEN_SOURCES}")


def require(scope: str | None) -> Callable[..., Awaitable[Principal]]:
    """The dependency that checks access for a route: the caller's token must hold `scope` (None: any caller,
    public), and the caller must be within the rate limits. Returns the caller."""
    if scope is not None and scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}: one of {', '.join(SCOPES)}")

    async def access(request: Request) -> Principal:
        policy: AccessPolicy = request.app.state.serving.access
        policy.throttle_address(request.client.host if request.client else "unknown")
        principal = policy.identify(request.headers.get("authorization"))
        policy.authorize(principal, scope)
        policy.throttle_token(principal)
        return principal

    if scope is None:
        return access

    async def scoped(request: Request, _: Annotated[object, Depends(bearer)]) -> Principal:  # `bearer`: OpenAPI's security scheme
        return await access(request)

    return scoped
