"""Each flavor answers with its real API's documented shapes: success, auth, errors, limits."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import aiohttp
import pytest

from providers.fake.flavors.openai import duration

BEARER = {"type": "bearer", "token": "tok-123"}
AUTH = {"Authorization": "Bearer tok-123"}
SLOW_LIMIT = {"rate_per_s": 0.01, "burst": 2}  # refill is negligible during a test


async def call(
    session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, Any, dict[str, str]]:
    async with session.request(method, url, **kwargs) as response:
        return response.status, await response.json(content_type=None), dict(response.headers)


# flavor, auth, request that succeeds (method, path, kwargs), check of its body
CASES = [
    (
        "github",
        BEARER,
        ("GET", "/repos/octo/hello", {"headers": AUTH}),
        lambda body: body["full_name"] == "octo/hello",
    ),
    (
        "stripe",
        BEARER,
        (
            "POST",
            "/v1/payment_intents",
            {"headers": AUTH, "data": {"amount": "100", "currency": "usd"}},
        ),
        lambda body: body["id"].startswith("pi_") and body["amount"] == 100,
    ),
    (
        "openai",
        BEARER,
        (
            "POST",
            "/v1/chat/completions",
            {
                "headers": AUTH,
                "json": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "hello there"}],
                },
            },
        ),
        lambda body: body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0,
    ),
    (
        "open_meteo",
        {"type": "none"},
        ("GET", "/v1/forecast?latitude=52.52&longitude=13.41&current=temperature_2m", {}),
        lambda body: isinstance(body["current"]["temperature_2m"], float),
    ),
    (
        "slack",
        BEARER,
        (
            "POST",
            "/api/chat.postMessage",
            {"headers": AUTH, "json": {"channel": "C0000001", "text": "hi"}},
        ),
        lambda body: body["ok"] is True and body["channel"] == "C0000001",
    ),
    (
        "openweathermap",
        {"type": "api_key", "in": "query", "name": "appid", "key": "tok-123"},
        ("GET", "/data/2.5/weather?q=London&units=metric&appid=tok-123", {}),
        lambda body: body["name"] == "London" and body["cod"] == 200,
    ),
]


@pytest.mark.parametrize(
    ("flavor", "auth", "request_", "check"), CASES, ids=[case[0] for case in CASES]
)
async def test_main_operation_succeeds(fake_server_factory, session, flavor, auth, request_, check):
    server = await fake_server_factory(flavor=flavor, auth=auth)
    method, path, kwargs = request_
    status, body, _ = await call(session, method, server.url + path, **kwargs)
    assert status == 200, body
    assert check(body)
    # The generic routes are served by every flavor.
    status, _, _ = await call(
        session,
        "GET",
        f"{server.url}/v1/items/1",
        **{k: v for k, v in kwargs.items() if k == "headers"},
    )
    assert status in (200, 401)  # openweathermap's key travels in the query


# flavor, (status, check) without credentials, (status, check) over the rate limit
SHAPES = [
    (
        "github",
        BEARER,
        (401, lambda b: b["message"] == "Requires authentication" and "documentation_url" in b),
        (403, lambda b: "rate limit" in b["message"]),
    ),
    (
        "stripe",
        BEARER,
        (401, lambda b: b["error"]["type"] == "invalid_request_error"),
        (429, lambda b: b["error"]["code"] == "rate_limit"),
    ),
    (
        "openai",
        BEARER,
        (401, lambda b: b["error"]["type"] == "invalid_request_error"),
        (429, lambda b: b["error"]["code"] == "rate_limit_exceeded"),
    ),
    (
        "open_meteo",
        {"type": "none"},
        None,
        (429, lambda b: b["error"] is True and "limit" in b["reason"]),
    ),
    (
        "slack",
        BEARER,
        (200, lambda b: b == {"ok": False, "error": "not_authed"}),
        (429, lambda b: b == {"ok": False, "error": "ratelimited"}),
    ),
    (
        "openweathermap",
        {"type": "api_key", "in": "query", "name": "appid", "key": "tok-123"},
        (401, lambda b: b["cod"] == 401 and "Invalid API key" in b["message"]),
        (429, lambda b: b["cod"] == 429),
    ),
]
PATHS = {
    "github": "/user",
    "stripe": "/v1/balance",
    "openai": "/v1/models",
    "open_meteo": "/v1/forecast?latitude=1&longitude=2",
    "slack": "/api/conversations.list",
    "openweathermap": "/data/2.5/weather?q=Paris",
}
CREDENTIALS = {"openweathermap": {"params": {"appid": "tok-123"}}}


@pytest.mark.parametrize(
    ("flavor", "auth", "unauthorized", "limited"), SHAPES, ids=[case[0] for case in SHAPES]
)
async def test_auth_and_limit_shapes(
    fake_server_factory, session, flavor, auth, unauthorized, limited
):
    server = await fake_server_factory(flavor=flavor, auth=auth, rate_limit=SLOW_LIMIT)
    url = server.url + PATHS[flavor]
    if unauthorized is not None:
        status, body, _ = await call(session, "GET", url)
        assert status == unauthorized[0]
        assert unauthorized[1](body), body
    good = CREDENTIALS.get(flavor, {"headers": AUTH})
    statuses = [(await call(session, "GET", url, **good))[0] for _ in range(3)]
    assert statuses[-1] == limited[0], statuses
    _, body, _ = await call(session, "GET", url, **good)
    assert limited[1](body), body
    assert server.stats.rate_limited >= 2


async def test_github_limit_headers(fake_server_factory, session):
    server = await fake_server_factory(flavor="github", auth=BEARER, rate_limit=SLOW_LIMIT)
    _, _, ok = await call(session, "GET", f"{server.url}/user", headers=AUTH)
    assert (
        ok["X-RateLimit-Limit"],
        ok["X-RateLimit-Remaining"],
        ok["X-RateLimit-Used"],
        ok["X-RateLimit-Resource"],
    ) == ("2", "1", "1", "core")
    assert int(ok["X-RateLimit-Reset"]) > time.time()
    _, _, limit_free = await call(session, "GET", f"{server.url}/rate_limit", headers=AUTH)
    assert limit_free["X-RateLimit-Remaining"] == "1", "/rate_limit spends nothing"
    await call(session, "GET", f"{server.url}/user", headers=AUTH)
    status, _, over = await call(session, "GET", f"{server.url}/user", headers=AUTH)
    assert (status, over["X-RateLimit-Remaining"]) == (403, "0")
    assert "Retry-After" not in over
    status, body, secondary = await call(
        session,
        "GET",
        f"{server.url}/rate_limit?fake_status=429&fake_retry_after_s=9",
        headers=AUTH,
    )
    assert (status, secondary["Retry-After"]) == (429, "9")
    assert "secondary rate limit" in body["message"]
    # The limit applies before credentials are checked, as on arrival at GitHub's edge.
    status, body, _ = await call(
        session, "GET", f"{server.url}/user", headers={"Authorization": "Bearer wrong"}
    )
    assert status == 403
    unlimited = await fake_server_factory(flavor="github", auth=BEARER)
    status, body, _ = await call(
        session, "GET", f"{unlimited.url}/user", headers={"Authorization": "Bearer wrong"}
    )
    assert (status, body["message"]) == (401, "Bad credentials")


async def test_stripe_basic_auth_objects_and_idempotent_replay(fake_server_factory, session):
    server = await fake_server_factory(flavor="stripe", auth=BEARER)
    basic = {"Authorization": "Basic " + base64.b64encode(b"tok-123:").decode()}
    url = f"{server.url}/v1/payment_intents"
    headers = {**basic, "Idempotency-Key": "order-1"}
    form = {"amount": "250", "currency": "eur"}
    status, created, first = await call(session, "POST", url, headers=headers, data=form)
    assert status == 200
    assert first["Request-Id"].startswith("req_")
    status, replay, again = await call(session, "POST", url, headers=headers, data=form)
    assert (status, replay, again["Idempotent-Replayed"]) == (200, created, "true")
    status, body, _ = await call(
        session, "POST", url, headers=headers, data={"amount": "999", "currency": "eur"}
    )
    assert (status, body["error"]["type"]) == (400, "idempotency_error")
    status, fetched, _ = await call(session, "GET", f"{url}/{created['id']}", headers=basic)
    assert (status, fetched["id"]) == (200, created["id"])
    status, body, headers_404 = await call(session, "GET", f"{url}/pi_nope", headers=basic)
    assert (status, body["error"]["code"], headers_404["Stripe-Should-Retry"]) == (
        404,
        "resource_missing",
        "false",
    )
    status, body, _ = await call(session, "POST", url, headers=basic, data={"currency": "eur"})
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "parameter_missing",
        "amount",
    )
    status, body, _ = await call(
        session, "GET", f"{server.url}/v1/balance?fake_status=500", headers=basic
    )
    assert (status, body["error"]["type"]) == (500, "api_error")


async def test_openai_headers_and_token_budget(fake_server_factory, session):
    server = await fake_server_factory(
        flavor="openai", auth=BEARER, tokens_per_min=40, rate_limit={"rate_per_s": 1, "burst": 60}
    )
    payload = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 80}]}
    url = f"{server.url}/v1/chat/completions"
    status, body, headers = await call(session, "POST", url, headers=AUTH, json=payload)
    assert status == 200
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    for name in ("limit", "remaining", "reset"):
        assert f"x-ratelimit-{name}-requests" in {h.lower() for h in headers}
        assert f"x-ratelimit-{name}-tokens" in {h.lower() for h in headers}
    status, body, headers = await call(session, "POST", url, headers=AUTH, json=payload)
    assert (status, body["error"]["code"], body["error"]["type"]) == (
        429,
        "rate_limit_exceeded",
        "tokens",
    )
    status, body, _ = await call(session, "POST", url, headers=AUTH, json={"model": "m"})
    assert (status, body["error"]["param"]) == (400, "messages")
    status, body, _ = await call(
        session, "GET", f"{server.url}/v1/models", headers={"Authorization": "Bearer nope"}
    )
    assert (status, body["error"]["code"]) == (401, "invalid_api_key")


CHAT = "/v1/chat/completions"


def chat(content: str = "hi", **fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **fields}


async def test_openai_counts_the_prompt_by_a_fixed_rule(fake_server_factory, session):
    server = await fake_server_factory(flavor="openai", auth=BEARER)
    messages = [
        {"role": "system", "content": "x" * 80},  # 20 tokens
        {"role": "user", "content": [{"type": "text", "text": "y" * 5}]},  # 2, rounded up
        {"role": "assistant", "content": None},  # a tool call: no text
    ]
    payload = {"model": "gpt-4o-mini", "messages": messages}
    status, body, _ = await call(session, "POST", server.url + CHAT, headers=AUTH, json=payload)
    assert status == 200, body
    # 3 to prime the reply, 4 per message, a token per four characters.
    assert body["usage"]["prompt_tokens"] == 3 + (4 + 20) + (4 + 2) + 4
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_openai_completes_max_tokens_and_takes_prompt_tokens_from_a_directive(
    fake_server_factory, session
):
    server = await fake_server_factory(flavor="openai", auth=BEARER)
    url = server.url + CHAT
    headers = {**AUTH, "X-Fake-Prompt-Tokens": "1234"}
    status, body, _ = await call(session, "POST", url, headers=headers, json=chat(max_tokens=321))
    assert status == 200, body
    assert body["usage"] == {"prompt_tokens": 1234, "completion_tokens": 321, "total_tokens": 1555}
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert len(choice["message"]["content"]) == 4 * 321  # four characters a token
    # The query form; max_completion_tokens wins over max_tokens, as in OpenAI's API.
    status, body, _ = await call(
        session,
        "POST",
        f"{url}?fake_prompt_tokens=10",
        headers=AUTH,
        json=chat(max_tokens=5, max_completion_tokens=7),
    )
    assert status == 200, body
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"max_tokens": 0}, "integer_below_min_value"),
        ({"max_tokens": "12"}, "invalid_type"),
        ({"max_completion_tokens": True}, "invalid_type"),
        ({"max_tokens": 1.5}, "invalid_type"),
    ],
)
async def test_openai_refuses_a_bad_max_tokens(fake_server_factory, session, fields, code):
    server = await fake_server_factory(flavor="openai", auth=BEARER)
    status, body, _ = await call(
        session, "POST", server.url + CHAT, headers=AUTH, json=chat(**fields)
    )
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        code,
        next(iter(fields)),
    )


async def test_openai_refuses_a_bad_prompt_tokens_directive(fake_server_factory, session):
    server = await fake_server_factory(flavor="openai", auth=BEARER)
    headers = {**AUTH, "X-Fake-Prompt-Tokens": "lots"}
    status, body, _ = await call(session, "POST", server.url + CHAT, headers=headers, json=chat())
    assert status == 400
    assert "fake_prompt_tokens" in body["fake_directive_error"]


async def test_openai_spends_the_usage_it_reports_and_refuses_what_does_not_fit(
    fake_server_factory, session
):
    # 600 tokens a minute: 10 a second, refill negligible against the sizes below.
    server = await fake_server_factory(flavor="openai", auth=BEARER, tokens_per_min=600)
    url = server.url + CHAT

    async def spend(prompt: int, completion: int) -> tuple[int, Any, dict[str, str]]:
        headers = {**AUTH, "X-Fake-Prompt-Tokens": str(prompt)}
        return await call(session, "POST", url, headers=headers, json=chat(max_tokens=completion))

    status, body, headers = await spend(300, 200)
    assert status == 200, body
    assert headers["x-ratelimit-limit-tokens"] == "600"
    assert 100 <= int(headers["x-ratelimit-remaining-tokens"]) <= 105  # 600 - 500, refilling
    # 200 does not fit in the ~100 left: a 429 naming tokens, and a Retry-After that suffices.
    status, body, headers = await spend(150, 50)
    assert status == 429
    assert (body["error"]["type"], body["error"]["code"]) == ("tokens", "rate_limit_exceeded")
    assert "Limit 600" in body["error"]["message"]
    assert "Requested 200" in body["error"]["message"]
    assert 8 <= int(headers["Retry-After"]) <= 11  # (200 - ~100) / 10 per second, rounded up
    assert int(headers["x-ratelimit-remaining-tokens"]) < 200
    assert server.stats.rate_limited == 0  # the request bucket's count: this was the tokens'
    assert server.stats.status_counts[429] == 1
    # A refused call spends nothing: a smaller one still fits.
    status, body, _ = await spend(40, 40)
    assert status == 200, body
    # More than the whole budget never fits; OpenAI says so in its 429.
    status, body, _ = await spend(500, 500)
    assert status == 429
    assert body["error"]["message"].startswith("Request too large for gpt-4o-mini")


async def test_openai_charges_tokens_before_generating_the_completion(fake_server_factory, session):
    server = await fake_server_factory(
        flavor="openai", auth=BEARER, tokens_per_min=600, completion_ms_per_token=5
    )
    url = server.url + CHAT
    headers = {**AUTH, "X-Fake-Prompt-Tokens": "300"}
    started = time.monotonic()
    first = asyncio.create_task(
        call(session, "POST", url, headers=headers, json=chat(max_tokens=200))
    )
    await asyncio.sleep(0.3)  # the first is generating its 200 tokens (1 s)
    status, body, _ = await call(session, "POST", url, headers=headers, json=chat(max_tokens=1))
    assert (status, body["error"]["type"]) == (429, "tokens")  # its 500 were spent on arrival
    status, body, _ = await first
    assert status == 200, body
    assert time.monotonic() - started >= 1.0


async def test_openai_keeps_its_spent_tokens_across_config_changes(fake_server_factory, session):
    server = await fake_server_factory(flavor="openai", auth=BEARER, tokens_per_min=600)
    url = server.url + CHAT
    headers = {**AUTH, "X-Fake-Prompt-Tokens": "500"}
    status, _, _ = await call(session, "POST", url, headers=headers, json=chat(max_tokens=1))
    assert status == 200

    async def remaining() -> int:
        _, _, headers = await call(session, "GET", server.url + "/v1/models", headers=AUTH)
        return int(headers["x-ratelimit-remaining-tokens"])

    server.update(latency_ms=1)  # another field: the budget spent stays spent
    assert await remaining() < 200
    server.update(tokens_per_min=6000)  # a new budget starts full
    assert await remaining() >= 5999


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3723, "1h2m3s")]
)
def test_openai_durations(seconds, text):
    assert duration(seconds) == text


async def test_open_meteo_errors(fake_server_factory, session):
    server = await fake_server_factory(flavor="open_meteo")
    status, body, _ = await call(session, "GET", f"{server.url}/v1/forecast?longitude=1")
    assert (status, body["error"]) == (400, True)
    assert "latitude" in body["reason"]
    status, body, _ = await call(
        session, "GET", f"{server.url}/v1/forecast?latitude=91&longitude=1"
    )
    assert status == 400
    assert "range" in body["reason"]


async def test_slack_app_errors_are_http_200(fake_server_factory, session):
    server = await fake_server_factory(flavor="slack", auth=BEARER)
    url = f"{server.url}/api/chat.postMessage"
    cases = [({"channel": "C9"}, "channel_not_found"), ({"channel": "C0000001"}, "no_text")]
    for args, code in cases:
        status, body, _ = await call(session, "POST", url, headers=AUTH, json=args)
        assert (status, body) == (200, {"ok": False, "error": code})
    status, body, _ = await call(
        session, "POST", url, headers={"Authorization": "Bearer x"}, json={}
    )
    assert (status, body["error"]) == (200, "invalid_auth")
    status, body, headers = await call(
        session, "POST", f"{url}?fake_status=429&fake_retry_after_s=30", headers=AUTH, json={}
    )
    assert (status, headers["Retry-After"], body["error"]) == (429, "30", "ratelimited")


async def test_openweathermap_errors(fake_server_factory, session):
    server = await fake_server_factory(
        flavor="openweathermap",
        auth={"type": "api_key", "in": "query", "name": "appid", "key": "k"},
    )
    base = f"{server.url}/data/2.5/weather"
    status, body, _ = await call(session, "GET", f"{base}?q=Atlantis&appid=k")
    assert (status, body) == (404, {"cod": "404", "message": "city not found"})
    status, body, _ = await call(session, "GET", f"{base}?appid=k")
    assert (status, body["cod"]) == (400, "400")
    status, body, _ = await call(session, "GET", f"{base}?q=London&appid=wrong")
    assert (status, body["cod"]) == (401, 401)
    status, body, _ = await call(session, "GET", f"{server.url}/geo/1.0/direct?q=Berlin&appid=k")
    assert (status, body[0]["country"]) == (200, "DE")
