"""The flavor seam: routes and the error, auth and rate-limit shapes of one imitated API.

The base class is the ``generic`` flavor; every flavor also serves its generic routes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from aiohttp import web

from providers.fake.conditional import http_date, not_modified, validators
from providers.fake.config import FakeProviderConfig
from providers.fake.directives import DirectiveError, read_cache_control

Handler = Callable[[web.Request], Awaitable[web.Response]]
Verdict = Literal["missing", "invalid"]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    # False for endpoints that real APIs exempt from their limit (GitHub's /rate_limit).
    limited: bool = True


@dataclass(frozen=True, slots=True)
class RateState:
    """The request bucket as headers describe it."""

    limit: int
    remaining: int
    # Seconds until the bucket is full again.
    reset_s: float
    # Seconds until the next request would pass (0 when one passes now).
    retry_after_s: int


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def respond(status: int, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON response from prebuilt bytes (the hot path never re-serialises constant bodies)."""
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class Flavor:
    """The ``generic`` flavor: ``/v1/items/{item_id}``, ``/v1/echo`` and plain JSON errors.

    An item answer carries a strong ``ETag`` and a ``Last-Modified`` derived from its id and
    ``content_version`` (also in its body), and ``Cache-Control`` when configured; a matching
    ``If-None-Match`` (else ``If-Modified-Since``) gets a 304 without a body (issue 23).

    Errors: ``{"error": {"status": 404, "message": "Not Found"}}``. 429 carries ``Retry-After``
    (delay-seconds) and ``X-RateLimit-Limit`` (bucket size), ``X-RateLimit-Remaining``,
    ``X-RateLimit-Reset`` (seconds until the bucket is full), also sent on every response.
    """

    name = "generic"
    # Stripe takes the secret key as a Basic username too.
    basic_for_bearer = False

    def __init__(self, config: FakeProviderConfig) -> None:
        self.config = config
        self._errors: dict[int, bytes] = {}

    def configure(self, config: FakeProviderConfig) -> None:
        """Take a changed config while running (flavor state such as stored objects stays)."""
        self.config = config

    # -- routes ---------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/v1/items/{item_id}", self.get_item),
            Route("POST", "/v1/echo", self.echo),
            *self.extra_routes(),
        ]

    def extra_routes(self) -> list[Route]:
        return []

    async def get_item(self, request: web.Request) -> web.Response:
        item_id = request.match_info["item_id"]
        version = self.config.content_version
        etag, last_modified_s = validators(item_id, version)
        headers = {"ETag": etag, "Last-Modified": http_date(last_modified_s)}
        try:
            cache_control = read_cache_control(request) or self.config.cache_control
        except DirectiveError as error:
            return respond(400, dumps({"fake_directive_error": str(error)}))
        if cache_control is not None:
            headers["Cache-Control"] = cache_control
        request_headers = request.headers
        if not_modified(
            request_headers.get("If-None-Match"),
            request_headers.get("If-Modified-Since"),
            etag,
            last_modified_s,
        ):
            return web.Response(status=304, headers=headers)
        payload: dict[str, Any] = {"id": item_id, "name": f"Item {item_id}", "version": version}
        if request.query_string:
            payload["query"] = dict(request.query)
        return respond(200, dumps(payload), headers)

    async def echo(self, request: web.Request) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "application/octet-stream")
        return web.Response(status=200, body=body, headers={"Content-Type": content_type})

    # -- shapes ---------------------------------------------------------------------------

    def error(self, status: int, *, retry_after_s: int | None = None) -> web.Response:
        """An injected or natural error with this API's body shape."""
        body = self._errors.get(status)
        if body is None:
            body = self._errors[status] = self.error_body(status)
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
        return respond(status, body, headers)

    def error_body(self, status: int) -> bytes:
        return dumps({"error": {"status": status, "message": reason(status)}})

    def unauthorized(self, verdict: Verdict) -> web.Response:
        return respond(401, dumps({"error": {"status": 401, "message": f"credentials {verdict}"}}))

    def rate_limited(self, state: RateState | None, *, retry_after_s: int) -> web.Response:
        """A request over the limit (``state`` is None for an injected 429 without a bucket)."""
        headers = {"Retry-After": str(retry_after_s)}
        if state is not None:
            headers.update(self.rate_headers(state))
        body = dumps({"error": {"status": 429, "message": "rate limit exceeded"}})
        return respond(429, body, headers)

    def rate_headers(self, state: RateState) -> dict[str, str]:
        """Headers describing the bucket, added to every response while a limit is set."""
        return {
            "X-RateLimit-Limit": str(state.limit),
            "X-RateLimit-Remaining": str(state.remaining),
            "X-RateLimit-Reset": str(math.ceil(state.reset_s)),
        }

    def idempotency_conflict(self) -> web.Response:
        body = dumps(
            {"error": {"status": 422, "message": "Idempotency-Key reused with other parameters"}}
        )
        return respond(422, body)

    def replay_headers(self) -> dict[str, str]:
        return {"Idempotent-Replayed": "true"}
