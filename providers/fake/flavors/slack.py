"""Slack Web API flavor: Bearer auth, app errors as HTTP 200 ``{"ok": false, "error": code}``.

Auth failures are 200 ``not_authed`` / ``invalid_auth``; an injected 400 is 200
``invalid_arguments`` and 404 is ``unknown_method``; rate limits are 429 with Retry-After.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from providers.fake.flavors.base import Flavor, RateState, Route, Verdict, dumps, respond

_CODES = {
    400: "invalid_arguments",
    404: "unknown_method",
    429: "ratelimited",
    500: "internal_error",
    503: "service_unavailable",
    504: "request_timeout",
}
# Slack reports argument errors with HTTP 200; only these keep their real status.
_HTTP_STATUS = {404, 429, 500, 503, 504}
_CHANNELS = [{"id": "C0000001", "name": "general"}, {"id": "C0000002", "name": "random"}]


def _fail(code: str, status: int = 200) -> web.Response:
    return respond(status, dumps({"ok": False, "error": code}))


def _ok(**fields: Any) -> web.Response:
    return respond(200, dumps({"ok": True, **fields}))


class SlackFlavor(Flavor):
    name = "slack"

    def extra_routes(self) -> list[Route]:
        return [
            Route("POST", "/api/auth.test", self.auth_test),
            Route("POST", "/api/chat.postMessage", self.post_message),
            Route("GET", "/api/conversations.list", self.conversations_list),
            Route("GET", "/api/conversations.history", self.conversations_history),
            Route("GET", "/api/users.info", self.users_info),
        ]

    async def auth_test(self, request: web.Request) -> web.Response:
        return _ok(
            url="https://fake.slack.com/",
            team="Fake",
            user="bot",
            team_id="T0000001",
            user_id="U0000001",
            bot_id="B0000001",
        )

    async def post_message(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            try:
                args: Any = json.loads(await request.read())
            except ValueError:
                return _fail("invalid_json")
            if not isinstance(args, dict):
                return _fail("invalid_arguments")
        else:
            args = dict(await request.post())
        channel, text = args.get("channel"), args.get("text") or args.get("blocks")
        if not channel or not any(channel in (c["id"], c["name"]) for c in _CHANNELS):
            return _fail("channel_not_found")
        if not text:
            return _fail("no_text")
        ts = f"{time.time():.6f}"
        message = {"type": "message", "user": "U0000001", "text": str(text), "ts": ts}
        return _ok(channel=channel, ts=ts, message=message)

    async def conversations_list(self, request: web.Request) -> web.Response:
        return _ok(channels=_CHANNELS, response_metadata={"next_cursor": ""})

    async def conversations_history(self, request: web.Request) -> web.Response:
        channel = request.query.get("channel")
        if not any(channel == c["id"] for c in _CHANNELS):
            return _fail("channel_not_found")
        messages = [{"type": "message", "user": "U0000001", "text": "hello", "ts": "1.000100"}]
        return _ok(messages=messages, has_more=False)

    async def users_info(self, request: web.Request) -> web.Response:
        user = request.query.get("user")
        if user != "U0000001":
            return _fail("user_not_found")
        return _ok(user={"id": user, "name": "bot", "is_bot": True})

    # -- shapes ---------------------------------------------------------------------------

    def error(self, status: int, *, retry_after_s: int | None = None) -> web.Response:
        response = _fail(
            _CODES.get(status, "fatal_error"), status if status in _HTTP_STATUS else 200
        )
        if retry_after_s is not None:
            response.headers["Retry-After"] = str(retry_after_s)
        return response

    def unauthorized(self, verdict: Verdict) -> web.Response:
        return _fail("not_authed" if verdict == "missing" else "invalid_auth")

    def rate_limited(self, state: RateState | None, *, retry_after_s: int) -> web.Response:
        response = _fail("ratelimited", 429)
        response.headers["Retry-After"] = str(retry_after_s)
        return response

    def rate_headers(self, state: RateState) -> dict[str, str]:
        return {}
