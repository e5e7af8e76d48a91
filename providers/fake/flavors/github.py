"""GitHub REST flavor: Bearer auth, ``X-RateLimit-*`` headers, ``{message, documentation_url}``.

Over the bucket it answers like GitHub's *primary* limit: 403, ``X-RateLimit-Remaining: 0`` and
``X-RateLimit-Reset`` (epoch seconds), no Retry-After. ``fake_status=429`` gives the *secondary*
limit shape: 429 with Retry-After. ``/rate_limit`` does not count against the limit.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from typing import Any

from aiohttp import web

from providers.fake.flavors.base import (
    Flavor,
    RateState,
    Route,
    Verdict,
    dumps,
    reason,
    respond,
)

DOCS = "https://docs.github.com/rest"
_RATE_DOCS = f"{DOCS}/using-the-rest-api/rate-limits-for-the-rest-api"


def _error(message: str, docs: str = DOCS) -> bytes:
    return dumps({"message": message, "documentation_url": docs})


class GitHubFlavor(Flavor):
    name = "github"

    def extra_routes(self) -> list[Route]:
        repo = "/repos/{owner}/{repo}"
        return [
            Route("GET", "/rate_limit", self.rate_limit, limited=False),
            Route("GET", "/user", self.user),
            Route("GET", "/users/{username}", self.user),
            Route("GET", repo, self.get_repo),
            Route("GET", f"{repo}/issues", self.list_issues),
            Route("POST", f"{repo}/issues", self.create_issue),
            Route("GET", f"{repo}/issues/{{issue_number}}", self.get_issue),
            Route("GET", "/search/repositories", self.search),
        ]

    async def rate_limit(self, request: web.Request) -> web.Response:
        limit = self.config.rate_limit
        burst = limit.burst if limit else 5000
        core = {"limit": burst, "remaining": burst, "reset": int(time.time()) + 3600, "used": 0}
        return respond(200, dumps({"resources": {"core": core}, "rate": core}))

    async def user(self, request: web.Request) -> web.Response:
        login = request.match_info.get("username", "fake-user")
        return respond(200, dumps({"login": login, "id": _id(login), "type": "User"}))

    async def get_repo(self, request: web.Request) -> web.Response:
        owner, repo = request.match_info["owner"], request.match_info["repo"]
        full_name = f"{owner}/{repo}"
        payload = {
            "id": _id(full_name),
            "name": repo,
            "full_name": full_name,
            "owner": {"login": owner},
            "private": False,
            "stargazers_count": 42,
        }
        return respond(200, dumps(payload))

    async def list_issues(self, request: web.Request) -> web.Response:
        issues = [_issue(n, f"Issue {n}") for n in (1, 2, 3)]
        return respond(200, dumps(issues))

    async def get_issue(self, request: web.Request) -> web.Response:
        number = request.match_info["issue_number"]
        if not number.isdigit():
            return self.error(404)
        return respond(200, dumps(_issue(int(number), f"Issue {number}")))

    async def create_issue(self, request: web.Request) -> web.Response:
        try:
            payload: Any = json.loads(await request.read())
        except ValueError:
            return respond(400, _error("Problems parsing JSON"))
        title = payload.get("title") if isinstance(payload, dict) else None
        if not isinstance(title, str) or not title:
            missing = {"resource": "Issue", "code": "missing_field", "field": "title"}
            body = {"message": "Validation Failed", "documentation_url": DOCS, "errors": [missing]}
            return respond(422, dumps(body))
        return respond(201, dumps(_issue(_id(title) % 10_000, title)))

    async def search(self, request: web.Request) -> web.Response:
        query = request.query.get("q")
        if not query:
            return respond(422, _error("Validation Failed"))
        items = [{"id": _id(query), "full_name": f"fake/{query[:40]}"}]
        return respond(200, dumps({"total_count": 1, "incomplete_results": False, "items": items}))

    def error_body(self, status: int) -> bytes:
        if status == 403:
            return _error("API rate limit exceeded for user ID 1.", _RATE_DOCS)
        return _error(reason(status))

    def error(self, status: int, *, retry_after_s: int | None = None) -> web.Response:
        response = super().error(status, retry_after_s=retry_after_s)
        if status == 403:  # the primary-limit shape: remaining 0 tells clients to wait for reset
            response.headers["X-RateLimit-Remaining"] = "0"
        return response

    def unauthorized(self, verdict: Verdict) -> web.Response:
        message = "Requires authentication" if verdict == "missing" else "Bad credentials"
        return respond(401, _error(message))

    def rate_limited(self, state: RateState | None, *, retry_after_s: int) -> web.Response:
        if state is None:  # injected 429: GitHub's secondary limit, with Retry-After
            body = _error("You have exceeded a secondary rate limit.", _RATE_DOCS)
            return respond(429, body, {"Retry-After": str(retry_after_s)})
        headers = self.rate_headers(state)
        headers["X-RateLimit-Remaining"] = "0"
        return respond(403, self.error_body(403), headers)

    def rate_headers(self, state: RateState) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(state.limit),
            "X-RateLimit-Remaining": str(state.remaining),
            "X-RateLimit-Used": str(state.limit - state.remaining),
            "X-RateLimit-Reset": str(math.ceil(time.time() + state.reset_s)),
            "X-RateLimit-Resource": "core",
        }


def _id(text: str) -> int:
    return zlib.crc32(text.encode()) or 1


def _issue(number: int, title: str) -> dict[str, Any]:
    return {"id": _id(f"issue-{number}"), "number": number, "title": title, "state": "open"}
